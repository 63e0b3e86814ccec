package caddyatlas

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// callbackRealisticPayload returns an extraction payload of at least size
// bytes, in Atlas's shape: PAN and Aadhaar documents with scored fields,
// a formatted address and a redact URL, plus the pagination fields.
func callbackRealisticPayload(size int) []byte {
	var b strings.Builder
	b.WriteString(`{"data":[`)
	for i := 0; b.Len() < size-120; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		if i%2 == 0 {
			fmt.Fprintf(&b, `{"document_id":"loan-app-%06d-pan","file_data":{"document_type":"PAN",`+
				`"name_as_per_pan":{"value":"RAVI KUMAR SHARMA","confidence_score":0.97},`+
				`"father_name":{"value":"MOHAN LAL SHARMA","confidence_score":0.93},`+
				`"dob":{"value":"14/08/1987","confidence_score":0.99},`+
				`"pan_number":{"value":"ABCPS%04dK","confidence_score":0.98},`+
				`"document_quality_flag":{"value":"original","confidence_score":0.88}}}`, i, i%10000)
			continue
		}
		fmt.Fprintf(&b, `{"document_id":"loan-app-%06d-aadhaar","file_data":{"document_type":{"value":"AADHAAR","confidence_score":0.99},`+
			`"name":{"value":"Ravi Kumar Sharma","confidence_score":0.96},`+
			`"address":{"value":"S/O Mohan Lal Sharma, 12 MG Road, Indiranagar, Bengaluru, Karnataka 560038","confidence_score":0.91},`+
			`"formatted_address":{"state":"Karnataka","postcode":"560038","address_line_1":"12 MG Road","address_line_2":"Indiranagar","city":"Bengaluru"},`+
			`"aadhaar_number":{"value":"XXXX XXXX %04d","confidence_score":0.97,"redact_url":"https://files.example.com/redacted/%06d.jpg?sig=abcdef0123456789"},`+
			`"date_of_birth":{"value":"14/08/1987","confidence_score":0.95}}}`, i, i%10000, i)
	}
	b.WriteString(`],"page":1,"per_page":50,"total_pages":1,"total_items":50,"has_next":false,"has_prev":false}`)
	return []byte(b.String())
}

// BenchmarkCallbackValidate measures what the callback route adds to a
// request: verifying the token (one sub-benchmark per algorithm, each
// verifying afresh; HS256-cached as the route does for a token it has
// verified within the minute) and validating a 16 KiB payload, with its
// id. MB/s is payload bytes.
func BenchmarkCallbackValidate(b *testing.B) {
	k := callbackTestKeys(b)
	payload := callbackRealisticPayload(16 << 10)
	if n, err := validateCallbackPayload(payload); err != nil || n == 0 {
		b.Fatalf("the benchmark payload is invalid: %d, %v", n, err)
	}
	for _, tc := range []struct {
		name, key string
	}{
		{"payload-only", ""},
		{"HS256", testHMACSecret},
		{"EdDSA", callbackPEMPrivate(b, k.ed)},
		{"ES256", callbackPEMPrivate(b, k.ec)},
		{"RS256", callbackPEMPrivate(b, k.rsa)},
		{"HS256-cached", testHMACSecret},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := &Callback{SigningKey: tc.key}
			provisionTestCallback(b, c)
			tok := callbackAuthToken(b, c)
			ctx := context.Background()
			req := callbackTokenRequest(tok)
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				switch {
				case tc.name == "HS256-cached":
					if _, err := c.verifyRequest(req); err != nil {
						b.Fatal(err)
					}
				case tc.key != "":
					if _, err := c.verifyToken(ctx, tok); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := validateCallbackPayload(payload); err != nil {
					b.Fatal(err)
				}
				_ = callbackID(payload)
			}
		})
	}
}

// BenchmarkCallbackPayloadParts splits payload-only above into its two
// parts: the scan that validates the payload, and the callback id (the
// SHA-256 of the body).
func BenchmarkCallbackPayloadParts(b *testing.B) {
	payload := callbackRealisticPayload(16 << 10)
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := validateCallbackPayload(payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("id", func(b *testing.B) {
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		for b.Loop() {
			_ = callbackID(payload)
		}
	})
}
