// Package payloadtest makes Atlas extraction payloads for tests and
// benchmarks.
package payloadtest

import (
	"fmt"
	"strings"
)

// Sample is a small valid extraction payload of n PAN documents.
func Sample(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"data":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"document_id":"doc-%d","file_data":{"document_type":"PAN",`+
			`"pan_number":{"value":"ABCDE1234F","confidence_score":0.98},`+
			`"name_as_per_pan":{"value":"RAVI KUMAR","confidence_score":0.9},`+
			`"dob":{"value":"01/02/1990","confidence_score":1}}}`, i)
	}
	b.WriteString(`],"page":1,"per_page":50,"total_pages":1,"total_items":`)
	fmt.Fprintf(&b, "%d", n)
	b.WriteString(`,"has_next":false,"has_prev":false}`)
	return []byte(b.String())
}

// Realistic returns an extraction payload of at least size
// bytes, in Atlas's shape: PAN and Aadhaar documents with scored fields,
// a formatted address and a redact URL, plus the pagination fields.
func Realistic(size int) []byte {
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
