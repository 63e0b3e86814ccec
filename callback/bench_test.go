package callback

import (
	"context"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"

	"github.com/caddy-atlas/caddy-atlas/callback/payload"

	"github.com/caddy-atlas/caddy-atlas/callback/token/tokentest"
)

// BenchmarkCallbackValidate measures what the callback route adds to a
// request: verifying the token (one sub-benchmark per algorithm, each
// verifying afresh; HS256-cached as the route does for a token it has
// verified within the minute) and validating a 16 KiB payload, with its
// id. MB/s is payload bytes.
func BenchmarkCallbackValidate(b *testing.B) {
	k := tokentest.Keys(b)
	body := payloadtest.Realistic(16 << 10)
	if n, err := payload.Validate(body); err != nil || n == 0 {
		b.Fatalf("the benchmark body is invalid: %d, %v", n, err)
	}
	for _, tc := range []struct {
		name, key string
	}{
		{"payload-only", ""},
		{"HS256", testHMACSecret},
		{"EdDSA", tokentest.PEMPrivate(b, k.Ed)},
		{"ES256", tokentest.PEMPrivate(b, k.EC)},
		{"RS256", tokentest.PEMPrivate(b, k.RSA)},
		{"HS256-cached", testHMACSecret},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := &Callback{SigningKey: tc.key}
			provisionTestCallback(b, c)
			tok := callbackAuthToken(b, c)
			ctx := context.Background()
			req := callbackTokenRequest(tok)
			b.SetBytes(int64(len(body)))
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
				if _, err := payload.Validate(body); err != nil {
					b.Fatal(err)
				}
				_ = ID(body)
			}
		})
	}
}

// BenchmarkCallbackPayloadParts splits body-only above into its two
// parts: the scan that validates the body, and the callback id (the
// SHA-256 of the body).
func BenchmarkCallbackPayloadParts(b *testing.B) {
	body := payloadtest.Realistic(16 << 10)
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := payload.Validate(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("id", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			_ = ID(body)
		}
	})
}
