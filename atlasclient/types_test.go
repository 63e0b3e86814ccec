package atlasclient

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// realisticPage has every document type and shape the contract mentions,
// with unknown keys at every level and numbers that a float64 would spoil.
const realisticPage = `{
  "data": [
    {
      "document_id": "doc-pan-1",
      "file_data": {
        "document_type": "PAN",
        "name_as_per_pan": {"value": "RAHUL KUMAR", "confidence_score": 0.97},
        "father_name": {"value": "SURESH KUMAR", "confidence_score": 0.9},
        "dob": {"value": "01/02/1990", "confidence_score": 0.950},
        "pan_number": {"value": "ABCDE1234E", "confidence_score": 1},
        "document_quality_flag": {"value": "xerox_copy", "confidence_score": 0.8, "reasons": ["low_contrast"]}
      }
    },
    {
      "document_id": "doc-aadhaar-1",
      "received_at": "2026-03-09T08:14:08Z",
      "file_data": {
        "document_type": {"value": "AADHAAR", "confidence_score": 0.99, "model": "v7"},
        "name": {"value": "Priya Sharma", "confidence_score": 0.96},
        "address": {"value": "12 MG Road, Bengaluru 560001 <Karnataka> & more", "confidence_score": 0.88},
        "formatted_address": {
          "value": {"state": "Karnataka", "postcode": "560001", "address_line_1": "12 MG Road", "address_line_2": "", "city": "Bengaluru", "geo": {"lat": 12.9716000000000001, "lon": 77.5946}},
          "confidence_score": 0.85
        },
        "aadhaar_number": {
          "value": "XXXX XXXX 1234",
          "confidence_score": 0.993,
          "redact_url": "https://s3.ap-south-1.amazonaws.com/atlas/redacted/a.png?X-Amz-Signature=abc&X-Amz-Expires=3600"
        },
        "date_of_birth": {"value": "15/08/1992", "confidence_score": 0.91},
        "page_count": 2
      }
    },
    {
      "document_id": "doc-passport-1",
      "file_data": {
        "document_type": {"value": "PASSPORT", "confidence_score": 0.94},
        "passport_number": {"value": "K1234567", "confidence_score": 0.98},
        "name": {"value": "ANITA DESAI", "confidence_score": 0.97},
        "date_of_birth": {"value": "23/11/1985", "confidence_score": 0.95},
        "place_of_birth": {"value": "MUMBAI", "confidence_score": 0.9},
        "gender": {"value": "F", "confidence_score": 0.99},
        "date_of_issue": {"value": "10/01/2018", "confidence_score": 0.93},
        "date_of_expiry": {"value": "09/01/2028", "confidence_score": 0.93},
        "place_of_issue": {"value": "MUMBAI", "confidence_score": 0.92},
        "mrz": {"value": null, "confidence_score": null}
      }
    },
    {
      "document_id": "doc-gst-1",
      "file_data": {
        "document_type": "GST_CERT",
        "gst_number": {"value": "29ABCDE1234F1Z5", "confidence_score": 0.97},
        "legal_name": {"value": "Acme Traders Pvt Ltd", "confidence_score": 0.95},
        "address": {"value": "4th Floor, Tower B, Whitefield, Bengaluru", "confidence_score": 0.9},
        "formatted_address": {"value": {"state": "Karnataka", "postcode": 560066, "address_line_1": "4th Floor, Tower B", "address_line_2": "Whitefield", "city": "Bengaluru"}, "confidence_score": 0.87},
        "date_of_issue": {"value": "01/07/2017", "confidence_score": 0.96},
        "turnover": {"value": 123456789012345678901234567890, "confidence_score": 0.5}
      }
    },
    {
      "document_id": "doc-unknown-1",
      "file_data": {
        "document_type": "UNKNOWN",
        "error_code": "UNRECOGNISED",
        "error_message": "could not classify the document"
      }
    },
    {
      "document_id": "doc-odd-1",
      "file_data": {
        "document_type": null,
        "error_code": 42,
        "bare_string": "just a string",
        "bare_number": 1e400,
        "bare_array": [1, "two", {"three": 3}],
        "score_as_text": {"value": "x", "confidence_score": "0.5"}
      }
    },
    {"document_id": "doc-empty-1", "file_data": {}}
  ],
  "page": 1,
  "per_page": 50,
  "total_pages": 1,
  "total_items": 7,
  "has_next": false,
  "has_prev": false,
  "batch_status": "COMPLETED",
  "meta": {"request_id": "r-1", "took_ms": 12}
}`

// generic decodes b keeping numbers as text, so that any change to a
// number shows.
func generic(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

func roundTrip[T any](t *testing.T, in string) (T, []byte) {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(in), &v); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if diff := cmp.Diff(generic(t, []byte(in)), generic(t, out)); diff != "" {
		t.Errorf("round trip changed the JSON (-in +out):\n%s", diff)
	}
	return v, out
}

func TestExtractsPageRoundTrip(t *testing.T) {
	p, out := roundTrip[ExtractsPage](t, realisticPage)

	if p.Page != 1 || p.PerPage != 50 || p.TotalPages != 1 || p.TotalItems != 7 || p.HasNext || p.HasPrev {
		t.Errorf("pagination = %+v", p)
	}
	if len(p.Data) != 7 {
		t.Fatalf("%d documents, want 7", len(p.Data))
	}
	if _, ok := p.Extra["batch_status"]; !ok {
		t.Error("unknown top-level key not in Extra")
	}

	pan := p.Data[0].FileData
	if pan.DocumentType.Value != "PAN" || pan.DocumentType.IsObject() {
		t.Errorf("PAN document_type = %+v, want the string form", pan.DocumentType)
	}
	if v, ok := pan.Fields["pan_number"].Text(); !ok || v != "ABCDE1234E" {
		t.Errorf("pan_number = %q, %v", v, ok)
	}
	if s := pan.Fields["name_as_per_pan"].ConfidenceScore; s == nil || *s != 0.97 {
		t.Errorf("name_as_per_pan score = %v", s)
	}

	aadhaar := p.Data[1]
	if aadhaar.DocumentID != "doc-aadhaar-1" || aadhaar.Extra["received_at"] == nil {
		t.Errorf("aadhaar document = %+v", aadhaar)
	}
	dt := aadhaar.FileData.DocumentType
	if dt.Value != "AADHAAR" || !dt.IsObject() || dt.ConfidenceScore == nil || *dt.ConfidenceScore != 0.99 || dt.Extra["model"] == nil {
		t.Errorf("AADHAAR document_type = %+v, want the object form", dt)
	}
	num := aadhaar.FileData.Fields["aadhaar_number"]
	if string(num.Extra["redact_url"]) == "" || num.ConfidenceScore == nil {
		t.Errorf("aadhaar_number = %+v, want redact_url in Extra", num)
	}
	var addr struct {
		State, Postcode, City string
		Line1                 string `json:"address_line_1"`
	}
	if err := aadhaar.FileData.Fields["formatted_address"].Decode(&addr); err != nil || addr.City != "Bengaluru" || addr.Line1 != "12 MG Road" {
		t.Errorf("formatted_address = %+v, %v", addr, err)
	}

	unknown := p.Data[4].FileData
	if unknown.ErrorCode != "UNRECOGNISED" || unknown.Fields["error_message"].Value == nil {
		t.Errorf("unrecognised document = %+v", unknown)
	}

	odd := p.Data[5].FileData
	if !odd.DocumentType.isZero() || odd.ErrorCode != "" {
		t.Errorf("odd document: document_type %+v, error_code %q; want both left in Fields", odd.DocumentType, odd.ErrorCode)
	}
	if odd.Fields["score_as_text"].ConfidenceScore != nil {
		t.Error("a string confidence_score was taken as a number")
	}

	// Exact number text survives, not just its float64 value.
	for _, s := range []string{"123456789012345678901234567890", "1e400", "12.9716000000000001", `"confidence_score":0.950`} {
		if !bytes.Contains(out, []byte(s)) {
			t.Errorf("output lost %s", s)
		}
	}
}

func TestExtractsPageEncodingKeepsURLs(t *testing.T) {
	var p ExtractsPage
	if err := json.Unmarshal([]byte(realisticPage), &p); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "X-Amz-Signature=abc&X-Amz-Expires=3600") {
		t.Errorf("redact_url was escaped: %s", buf.String())
	}
}

func TestRoundTripShapes(t *testing.T) {
	pages := map[string]string{
		"minimal":               `{}`,
		"no pagination":         `{"data": [{"document_id": "d", "file_data": {"document_type": "PAN"}}]}`,
		"null data":             `{"data": null, "page": 2}`,
		"empty data":            `{"data": [], "has_next": false}`,
		"odd pagination":        `{"data": [], "page": "1", "per_page": 50.5, "total_pages": null, "has_next": "no"}`,
		"doc without fields":    `{"data": [{"document_id": "d"}, {"file_data": null}, {"document_id": 7, "file_data": "x"}]}`,
		"empty strings":         `{"data": [{"document_id": "", "file_data": {"document_type": "", "error_code": ""}}]}`,
		"object type, empty":    `{"data": [{"document_id": "d", "file_data": {"document_type": {"value": ""}}}]}`,
		"object type, no value": `{"data": [{"document_id": "d", "file_data": {"document_type": {"confidence_score": 0.5}}}]}`,
		"field shapes": `{"data": [{"document_id": "d", "file_data": {
			"a": {}, "b": {"value": null}, "c": {"confidence_score": 0.5}, "d": null, "e": true,
			"f": {"value": 1.0, "confidence_score": 1.0e0}, "g": {"value": "x", "confidence_score": -0}}}]}`,
	}
	for name, in := range pages {
		t.Run(name, func(t *testing.T) {
			roundTrip[ExtractsPage](t, in)
		})
	}
}

func TestUnmarshalErrors(t *testing.T) {
	for _, in := range []string{`[]`, `"x"`, `{"data": {}}`, `{"data": ["x"]}`, `{"data": [1]}`} {
		var p ExtractsPage
		if err := json.Unmarshal([]byte(in), &p); err == nil {
			t.Errorf("Unmarshal(%s) succeeded", in)
		}
	}
}

func TestBuiltValuesMarshal(t *testing.T) {
	score := 0.9
	fd := FileData{
		DocumentType: DocumentType{Value: "VOTER_ID"},
		Fields: map[string]Field{
			"voter_id": {Value: json.RawMessage(`"ABC1234567"`), ConfidenceScore: &score},
		},
	}
	b, err := json.Marshal(Document{DocumentID: "d", FileData: fd})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"document_id":"d","file_data":{"document_type":"VOTER_ID","voter_id":{"confidence_score":0.9,"value":"ABC1234567"}}}`
	if diff := cmp.Diff(generic(t, []byte(want)), generic(t, b)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	fd.DocumentType.ConfidenceScore = &score
	b, _ = json.Marshal(fd)
	if !strings.Contains(string(b), `"document_type":{"confidence_score":0.9,"value":"VOTER_ID"}`) {
		t.Errorf("document type with a score did not become an object: %s", b)
	}

	// A changed score is written as changed, not as the original text.
	var f Field
	json.Unmarshal([]byte(`{"value": "x", "confidence_score": 0.950}`), &f)
	*f.ConfidenceScore = 0.5
	b, _ = json.Marshal(f)
	if string(b) != `{"confidence_score":0.5,"value":"x"}` {
		t.Errorf("changed field = %s", b)
	}
}
