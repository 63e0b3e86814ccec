package payload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
)

// wantDoc is a Document as a test expects it, its range given by the
// element's text.
type wantDoc struct {
	raw, id, code        string
	extracted, available bool
}

func TestDocuments(t *testing.T) {
	const (
		pan       = `{"document_id":"a","file_data":{"document_type":"PAN","pan_number":{"value":"X","confidence_score":0.9}}}`
		pending   = `{"document_id":"p"}`
		unrecog   = `{"document_id":"u","error_code":"UNRECOGNISED"}`
		nested    = `{"document_id":"n","file_data":{"data":[{"document_id":"evil","file_data":{"x":1}}],"formatted_address":{"data":{"document_id":"evil2"}}}}`
		spacedDoc = "{ \"document_id\" : \"s\" ,\n\t\"file_data\" : { \"x\" : { \"value\" : 1 , \"confidence_score\" : 1 } } }"
	)
	for _, tc := range []struct {
		name, body string
		want       []wantDoc
	}{
		{"file_data with fields", `{"data":[` + pan + `]}`, []wantDoc{{pan, "a", "", true, true}}},
		{"no file_data: pending", `{"data":[` + pending + `]}`, []wantDoc{{pending, "p", "", false, false}}},
		{"error_code only", `{"data":[` + unrecog + `]}`, []wantDoc{{unrecog, "u", "UNRECOGNISED", false, true}}},
		{"error_code beside an empty file_data", `{"data":[{"document_id":"a","file_data":{},"error_code":"INVALID_DOC"}]}`,
			[]wantDoc{{`{"document_id":"a","file_data":{},"error_code":"INVALID_DOC"}`, "a", "INVALID_DOC", false, true}}},
		{"error_code in file_data", `{"data":[{"document_id":"a","file_data":{"document_type":"UNKNOWN","error_code":"UNRECOGNISED","error_message":"?"}}]}`,
			[]wantDoc{{`{"document_id":"a","file_data":{"document_type":"UNKNOWN","error_code":"UNRECOGNISED","error_message":"?"}}`, "a", "UNRECOGNISED", true, true}}},
		{"element's error_code first", `{"data":[{"document_id":"a","error_code":"A","file_data":{"error_code":"B"}},{"document_id":"b","error_code":"","file_data":{"error_code":"B"}}]}`,
			[]wantDoc{{`{"document_id":"a","error_code":"A","file_data":{"error_code":"B"}}`, "a", "A", true, true},
				{`{"document_id":"b","error_code":"","file_data":{"error_code":"B"}}`, "b", "B", true, true}}},
		{"empty file_data", `{"data":[{"document_id":"a","file_data":{}},{"document_id":"b","file_data":{ 	
 }}]}`,
			[]wantDoc{{`{"document_id":"a","file_data":{}}`, "a", "", false, false}, {"{\"document_id\":\"b\",\"file_data\":{ \t\n }}", "b", "", false, false}}},
		{"null file_data", `{"data":[{"file_data":null,"document_id":"a"}]}`, []wantDoc{{`{"file_data":null,"document_id":"a"}`, "a", "", false, false}}},
		{"error_code not a code", `{"data":[{"document_id":"a","error_code":null},{"document_id":"b","error_code":""},{"document_id":"c","error_code":401},{"document_id":"d","error_code":{"code":"X"}}]}`,
			[]wantDoc{{`{"document_id":"a","error_code":null}`, "a", "", false, false}, {`{"document_id":"b","error_code":""}`, "b", "", false, false},
				{`{"document_id":"c","error_code":401}`, "c", "", false, false}, {`{"document_id":"d","error_code":{"code":"X"}}`, "d", "", false, false}}},
		{"the last error_code counts", `{"data":[{"document_id":"a","error_code":"X","error_code":null},{"document_id":"b","error_code":null,"error_code":"Y"}]}`,
			[]wantDoc{{`{"document_id":"a","error_code":"X","error_code":null}`, "a", "", false, false},
				{`{"document_id":"b","error_code":null,"error_code":"Y"}`, "b", "Y", false, true}}},
		{"escaped keys and values", `{"d\u0061ta":[{"document_\u0069d":"a","err\u006fr_code":"UNRECOGNI\u0053ED","file_d\u0061ta":{"x":1}}]}`,
			[]wantDoc{{`{"document_\u0069d":"a","err\u006fr_code":"UNRECOGNI\u0053ED","file_d\u0061ta":{"x":1}}`, "a", "UNRECOGNISED", true, true}}},
		{"unicode and escapes in ids", `{"data":[{"document_id":"दस्तावेज़-१"},{"document_id":"doc\u002d1\"x\\y\/z"},{"document_id":"\ud83d\ude00\u0000"}]}`,
			[]wantDoc{{`{"document_id":"दस्तावेज़-१"}`, "दस्तावेज़-१", "", false, false},
				{`{"document_id":"doc\u002d1\"x\\y\/z"}`, `doc-1"x\y/z`, "", false, false},
				{`{"document_id":"\ud83d\ude00\u0000"}`, "😀\x00", "", false, false}}},
		{"whitespace everywhere", " \r\n{ \"page\" : 1 ,\n \"data\"\t:\t[\n  " + spacedDoc + "\n ,\n  " + pending + " ] , \"has_next\" : false }\n",
			[]wantDoc{{spacedDoc, "s", "", true, true}, {pending, "p", "", false, false}}},
		{"data inside file_data and beside", `{"meta":{"data":[{"document_id":"evil3"}]},"data":[` + nested + `],"more":[{"data":[]}]}`,
			[]wantDoc{{nested, "n", "", true, true}}},
		{"duplicate document ids", `{"data":[` + pan + `,` + pan + `]}`, []wantDoc{{pan, "a", "", true, true}, {pan, "a", "", true, true}}},
		{"empty data", `{"page":1,"data":[],"total_items":0}`, nil},
		{"empty data with space", `{"data":[ ]}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			docs, err := Documents(body)
			if err != nil {
				t.Fatal(err)
			}
			if len(docs) != len(tc.want) {
				t.Fatalf("%d documents, want %d: %+v", len(docs), len(tc.want), docs)
			}
			for i, d := range docs {
				w := tc.want[i]
				if got := string(body[d.Start:d.End]); got != w.raw {
					t.Errorf("[%d] element %q, want %q", i, got, w.raw)
				}
				if d.ID != w.id || d.ErrorCode != w.code || d.Extracted != w.extracted || d.Available != w.available {
					t.Errorf("[%d] = %q %q extracted %v available %v, want %q %q %v %v", i, d.ID, d.ErrorCode, d.Extracted, d.Available, w.id, w.code, w.extracted, w.available)
				}
			}
			checkDocumentsAgainstValidate(t, body)
		})
	}
}

func TestDocumentsInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"missing document_id", `{"data":[{"document_id":"a"},{"file_data":{"x":1}}]}`, `data[1].document_id: missing`},
		{"missing document_id, error_code only", `{"data":[{"error_code":"UNRECOGNISED"}]}`, `data[0].document_id: missing`},
		{"empty document_id", `{"data":[{"document_id":""}]}`, `data[0].document_id: must be a non-empty string`},
		{"null document_id", `{"data":[{"document_id":null}]}`, `data[0].document_id: must be a non-empty string, not null`},
		{"duplicate document_id", `{"data":[{"document_id":"a","document_id":"b"}]}`, `data[0].document_id: duplicate key`},
		{"duplicate file_data", `{"data":[{"document_id":"a","file_data":null,"file_data":{"x":1}}]}`, `data[0].file_data: duplicate key`},
		{"file_data an array", `{"data":[{"document_id":"a","file_data":[]}]}`, `data[0].file_data: must be an object or null, not an array`},
		{"file_data false", `{"data":[{"document_id":"a","file_data":false}]}`, `data[0].file_data: must be an object or null, not a boolean`},
		{"file_data nul", `{"data":[{"document_id":"a","file_data":nul}]}`, `data[0].file_data: invalid JSON at byte 44: invalid character '}' in literal null`},
		{"element not an object", `{"data":["a"]}`, `data[0]: must be a document object, not a string`},
		{"data not an array", `{"data":{}}`, `data: must be an array of documents, not an object`},
		{"missing data", `{"page":1}`, `data: missing; expected an array of documents`},
		{"score in file_data", `{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":1.5}}}]}`, `data[0].file_data.x.confidence_score: 1.5 is outside [0, 1]`},
		{"score in error_code", `{"data":[{"document_id":"a","error_code":{"confidence_score":2}}]}`, `data[0].error_code.confidence_score: 2 is outside [0, 1]`},
		{"error_code truncated", `{"data":[{"document_id":"a","error_code":"UNRE`, `data[0].error_code: truncated JSON`},
		{"error_code bad escape", `{"data":[{"document_id":"a","file_data":{"error_code":"\q"}}]}`, `data[0].file_data.error_code: invalid JSON`},
		{"invalid UTF-8", "{\"data\":[{\"document_id\":\"\xff\"}]}", `body: not valid UTF-8`},
		{"trailing data", `{"data":[]}{}`, `body: unexpected data after the JSON object`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := Documents([]byte(tc.body))
			if err == nil {
				t.Fatalf("accepted: %+v", docs)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error\n  %s\nwant it to start with\n  %s", err, tc.want)
			}
			checkDocumentsAgainstValidate(t, []byte(tc.body))
		})
	}
}

// TestDocumentsPendingFailValidate shows the one difference from
// Validate: a missing or null file_data.
func TestDocumentsPendingFailValidate(t *testing.T) {
	for _, body := range []string{
		`{"data":[{"document_id":"a"}]}`,
		`{"data":[{"document_id":"a","file_data":null}]}`,
		`{"data":[{"document_id":"a","file_data":{}},{"document_id":"b","error_code":"UNRECOGNISED"}]}`,
	} {
		if _, err := Documents([]byte(body)); err != nil {
			t.Errorf("%s: %v", body, err)
		}
		if _, err := Validate([]byte(body)); err == nil || !isFileDataError(err) {
			t.Errorf("%s: Validate: %v, want a file_data error", body, err)
		}
		checkDocumentsAgainstValidate(t, []byte(body))
	}
}

func TestDocumentsMatchValidate(t *testing.T) {
	for _, body := range documentsSeeds() {
		checkDocumentsAgainstValidate(t, []byte(body))
	}
}

// TestDocumentsAllocations checks that Documents allocates the ids and
// the slice, nothing else in proportion to the body.
func TestDocumentsAllocations(t *testing.T) {
	for _, size := range []int{1 << 10, 256 << 10} {
		body := payloadtest.Realistic(size)
		docs, err := Documents(body)
		if err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(10, func() {
			if _, err := Documents(body); err != nil {
				t.Fatal(err)
			}
		})
		// One id each, and the slice's growth.
		if limit := float64(len(docs) + 2*bitsLen(len(docs)) + 2); allocs > limit {
			t.Errorf("%d bytes, %d documents: %v allocations, want at most %v", len(body), len(docs), allocs, limit)
		}
	}
}

func bitsLen(n int) int {
	b := 0
	for ; n > 0; n >>= 1 {
		b++
	}
	return b
}

// isFileDataError reports whether err is Validate's for a file_data that
// is missing or not an object, the errors Documents does not share.
func isFileDataError(err error) bool {
	path, msg, ok := strings.Cut(err.Error(), ": ")
	return ok && strings.HasSuffix(path, ".file_data") &&
		(msg == "missing" || strings.HasPrefix(msg, "must be an object"))
}

// checkDocumentsAgainstValidate holds Documents to Validate and to
// encoding/json: it succeeds whenever Validate does, with as many
// documents; when Validate fails and Documents does not, Validate's
// error is about a file_data; when both fail, they agree but for the
// wording of a file_data's type; and each document is what
// encoding/json reads in the element's bytes.
func checkDocumentsAgainstValidate(t *testing.T, body []byte) []Document {
	t.Helper()
	docs, err := Documents(body)
	n, verr := Validate(body)
	switch {
	case verr == nil && err != nil:
		t.Fatalf("body %q: Validate accepts %d documents, Documents fails: %v", truncate(string(body), 300), n, err)
	case verr == nil && len(docs) != n:
		t.Fatalf("body %q: Validate counts %d documents, Documents %d", truncate(string(body), 300), n, len(docs))
	case verr != nil && err == nil && !isFileDataError(verr):
		t.Fatalf("body %q: Documents accepts, Validate fails: %v", truncate(string(body), 300), verr)
	case verr != nil && err != nil && !isFileDataError(verr) && !isFileDataError(err) && err.Error() != verr.Error():
		t.Fatalf("body %q:\n  Documents: %.300v\n  Validate:  %.300v", truncate(string(body), 300), err, verr)
	}
	if err != nil {
		return nil
	}
	if !json.Valid(body) {
		t.Fatalf("body %q accepted but not valid JSON", truncate(string(body), 300))
	}
	var top struct{ Data []json.RawMessage }
	if err := json.Unmarshal(body, &top); err != nil {
		t.Fatalf("body %q: encoding/json: %v", truncate(string(body), 300), err)
	}
	if len(top.Data) != len(docs) {
		t.Fatalf("body %q: %d documents, encoding/json %d", truncate(string(body), 300), len(docs), len(top.Data))
	}
	for i, d := range docs {
		raw := body[d.Start:d.End]
		if !bytes.Equal(raw, top.Data[i]) {
			t.Fatalf("body %q: element %d is %q, encoding/json %q", truncate(string(body), 300), i, raw, top.Data[i])
		}
		if want := refDocument(t, raw); d.ID != want.ID || d.ErrorCode != want.ErrorCode || d.Extracted != want.Extracted || d.Available != want.Available {
			t.Fatalf("element %q: %+v, encoding/json %+v", raw, d, want)
		}
	}
	return docs
}

// refDocument reads an element with encoding/json.
func refDocument(t *testing.T, raw []byte) Document {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("element %q: %v", raw, err)
	}
	code := func(raw json.RawMessage) string {
		var s string
		if raw != nil && json.Unmarshal(raw, &s) != nil {
			return ""
		}
		return s
	}
	var d Document
	if err := json.Unmarshal(m["document_id"], &d.ID); err != nil {
		t.Fatalf("element %q: document_id: %v", raw, err)
	}
	d.ErrorCode = code(m["error_code"])
	var fd map[string]json.RawMessage
	if fdRaw, ok := m["file_data"]; ok {
		if err := json.Unmarshal(fdRaw, &fd); err != nil {
			t.Fatalf("element %q: file_data: %v", raw, err)
		}
	}
	d.Extracted = len(fd) > 0
	if d.ErrorCode == "" {
		d.ErrorCode = code(fd["error_code"])
	}
	d.Available = d.Extracted || d.ErrorCode != ""
	return d
}

// documentsSeeds are the validator's seeds and bodies with pending and
// failed documents.
func documentsSeeds() []string {
	seeds := append(callbackPayloadSeeds(),
		`{"data":[{"document_id":"a"},{"document_id":"b","file_data":null},{"document_id":"c","file_data":{}},{"document_id":"d","error_code":"UNRECOGNISED"}],"total_items":9}`,
		`{"data":[{"document_id":"a","file_data":{"document_type":"UNKNOWN","error_code":"INVALID_DOC","error_message":"blurred"}}]}`,
		`{"data":[{"document_id":"a","error_code":"X","error_code":1,"file_data":{"error_code":"Y","error_code":"Z"}}]}`,
		`{"meta":{"data":[{"document_id":"x"}]},"data":[{"document_id":"a","file_data":{"data":[{"document_id":"y"}]}}],"z":{"data":null}}`,
		" { \"data\" : [ { \"document_id\" : \"a\" } , { \"document_id\" : \"a\" , \"file_data\" : { \"k\" : [ ] } } ] } ",
		`{"data":[{"document_id":"\ud800x","err\u006fr_code":"\u0041"}]}`,
		`{"data":[{"document_id":"a","file_data":nul}]}`, `{"data":[{"document_id":"a","file_data":"x"}]}`,
		`{"data":[{"document_id":"a"},{"file_data":{}}]}`, `{"data":[{"file_data":null}]}`,
		`{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":3}}},{"document_id":"b"}]}`,
		`{"data":[{"document_id":"a"},{"document_id":"b","file_data":{"x":{"confidence_score":3}}}]}`,
	)
	for _, n := range []int{0, 1, 5} {
		seeds = append(seeds, string(mixedPayload(n)))
	}
	return seeds
}

// mixedPayload is a payload of n documents, extracted, pending (three
// ways) and failed (two ways) in turn, with spaces between them.
func mixedPayload(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"page":1,"per_page":50,"data": [`)
	for i := range n {
		if i > 0 {
			b.WriteString(" ,\n ")
		}
		switch i % 6 {
		case 0:
			fmt.Fprintf(&b, `{"document_id":"doc-%d","file_data":{"document_type":"PAN","pan_number":{"value":"ABCDE1234F","confidence_score":0.98}}}`, i)
		case 1:
			fmt.Fprintf(&b, `{"document_id":"doc-%d"}`, i)
		case 2:
			fmt.Fprintf(&b, `{"document_id":"doc-%d","file_data":{}}`, i)
		case 3:
			fmt.Fprintf(&b, `{"document_id":"doc-%d","file_data":null}`, i)
		case 4:
			fmt.Fprintf(&b, `{"document_id":"doc-%d","error_code":"UNRECOGNISED"}`, i)
		case 5:
			fmt.Fprintf(&b, `{"document_id":"doc-%d","file_data":{"document_type":"UNKNOWN","error_code":"INVALID_DOC"}}`, i)
		}
	}
	fmt.Fprintf(&b, ` ] ,"total_pages":1,"total_items":%d,"has_next":false,"has_prev":false}`, n)
	return []byte(b.String())
}

// FuzzDocuments holds Documents to Validate and encoding/json (see
// checkDocumentsAgainstValidate). Seeds: testdata/fuzz/FuzzDocuments,
// and documentsSeeds.
func FuzzDocuments(f *testing.F) {
	for _, body := range documentsSeeds() {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkDocumentsAgainstValidate(t, body)
	})
}
