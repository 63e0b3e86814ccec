package mask

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
)

func TestStyleApply(t *testing.T) {
	for _, tc := range []struct {
		style Style
		in    string
		want  string
	}{
		{Last4, "2345 6789 0123", "XXXXXXXX0123"},
		{Last4, "2345-6789-0123", "XXXXXXXX0123"},
		{Last4, "234567890123", "XXXXXXXX0123"},
		{Last4, " 2345\t6789\u00a00123 ", "XXXXXXXX0123"},
		{Last4, "2345\u20136789\u20140123", "XXXXXXXX0123"}, // en and em dashes
		{Last4, "ABCDE1234F", "XXXXXX234F"},
		{Last4, "MH12 20110012345", "XXXXXXXXXXX2345"},
		{Last4, "Priya Sharma", "XXXXXXXarma"},
		{Last4, "12345678", "XXXX5678"},
		{Last4, "1234567", "XXXXXXX"}, // too short to keep four
		{Last4, "1234", "XXXX"},
		{Last4, "", ""},
		{Last4, "- -", ""},
		{Last4, "अजय कुमार शर्मा", "XXXXXXXXXर्मा"},
		{Last4, "abc\"\\\n12345", "XXXXXX2345"},
		{Last4, "abcdef\"\\", "XXXXef\"\\"},
		{Redact, "2345 6789 0123", "REDACTED"},
		{Redact, "", "REDACTED"},
	} {
		if got := tc.style.Apply(tc.in); got != tc.want {
			t.Errorf("%s.Apply(%q) = %q, want %q", tc.style, tc.in, got, tc.want)
		}
	}
}

func TestParseStyle(t *testing.T) {
	for in, want := range map[string]Style{"": Last4, "last4": Last4, "redact": Redact} {
		got, err := ParseStyle(in)
		if err != nil || got != want {
			t.Errorf("ParseStyle(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"LAST4", "last3", "x", "full"} {
		if _, err := ParseStyle(in); err == nil || !strings.Contains(err.Error(), "unknown mask style") {
			t.Errorf("ParseStyle(%q): err %v, want an unknown style", in, err)
		}
	}
	if _, err := New(map[string]Style{"": Last4}); err == nil {
		t.Error("New accepted an empty field name")
	}
	if _, err := New(map[string]Style{"pan_number": "half"}); err == nil || !strings.Contains(err.Error(), `"pan_number"`) {
		t.Errorf("New with a bad style: %v, want an error naming the field", err)
	}
	if m, err := New(nil); m != nil || err != nil {
		t.Errorf("New(nil) = %v, %v; want nil, nil", m, err)
	}
}

func mustNew(t testing.TB, fields map[string]Style) *Masker {
	t.Helper()
	m, err := New(fields)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPayload(t *testing.T) {
	m := mustNew(t, map[string]Style{
		"aadhaar_number":    Last4,
		"pan_number":        Last4,
		"name":              Redact,
		"formatted_address": Redact,
	})
	for _, tc := range []struct {
		name, in, want string
		masked         int
	}{{
		name: "aadhaar, redact_url and score untouched",
		in: `{"data": [{"document_id": "a-1", "file_data": {"document_type": "AADHAAR",
  "aadhaar_number": {"value": "2345 6789 0123", "confidence_score": 0.97, "redact_url": "https://x/r.jpg"},
  "date_of_birth": {"value": "01/02/1990", "confidence_score": 0.9}}}], "page": 1}`,
		want: `{"data": [{"document_id": "a-1", "file_data": {"document_type": "AADHAAR",
  "aadhaar_number": {"value": "XXXXXXXX0123", "confidence_score": 0.97, "redact_url": "https://x/r.jpg"},
  "date_of_birth": {"value": "01/02/1990", "confidence_score": 0.9}}}], "page": 1}`,
		masked: 1,
	}, {
		name:   "every document, any type, unknown keys kept",
		in:     `{"x":{"name":{"value":"top"}},"data":[{"file_data":{"pan_number":{"value":"ABCPS1234K","k":[1,{"value":"z"}]}},"document_id":"p"},{"document_id":"q","file_data":{"document_type":"WHATEVER","name":{"confidence_score":0.5,"value":"Ravi"}}},7,null]}`,
		want:   `{"x":{"name":{"value":"top"}},"data":[{"file_data":{"pan_number":{"value":"XXXXXX234K","k":[1,{"value":"z"}]}},"document_id":"p"},{"document_id":"q","file_data":{"document_type":"WHATEVER","name":{"confidence_score":0.5,"value":"REDACTED"}}},7,null]}`,
		masked: 2,
	}, {
		name:   "object value keeps its shape",
		in:     `{"data":[{"file_data":{"formatted_address":{"value":{"city":"Pune","postcode":411001,"lines":["a",null,true]},"confidence_score":0.8}}}]}`,
		want:   `{"data":[{"file_data":{"formatted_address":{"value":{"city":"REDACTED","postcode":"REDACTED","lines":["REDACTED",null,true]},"confidence_score":0.8}}}]}`,
		masked: 3,
	}, {
		name:   "number value, flat field, null value",
		in:     `{"data":[{"file_data":{"aadhaar_number":{"value":234567890123},"pan_number":"ABCPS1234K","name":{"value":null}}}]}`,
		want:   `{"data":[{"file_data":{"aadhaar_number":{"value":"XXXXXXXX0123"},"pan_number":"XXXXXX234K","name":{"value":null}}}]}`,
		masked: 2,
	}, {
		name:   "escaped keys and duplicates are masked",
		in:     `{"d\u0061ta":[{"file_\u0064ata":{"aadhaar\u005fnumber":{"v\u0061lue":"2345\u00206789 0123"},"name":{"value":"A","value":"B"}}}]}`,
		want:   `{"d\u0061ta":[{"file_\u0064ata":{"aadhaar\u005fnumber":{"v\u0061lue":"XXXXXXXX0123"},"name":{"value":"REDACTED","value":"REDACTED"}}}]}`,
		masked: 3,
	}, {
		name:   "names outside file_data are not fields",
		in:     `{"data":[{"name":{"value":"x"},"file_data":{"other":{"name":{"value":"y"}}}}],"name":"z"}`,
		want:   `{"data":[{"name":{"value":"x"},"file_data":{"other":{"name":{"value":"y"}}}}],"name":"z"}`,
		masked: 0,
	}, {
		name: "not a payload", in: `[{"file_data":{"name":{"value":"x"}}}]`, want: `[{"file_data":{"name":{"value":"x"}}}]`,
	}, {
		name: "empty", in: " {} ", want: " {} ",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, n, err := m.Payload([]byte("prefix:"), []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "prefix:"+tc.want || n != tc.masked {
				t.Errorf("got %d masked\n%s\nwant %d\nprefix:%s", n, got, tc.masked, tc.want)
			}
			if !json.Valid(got[len("prefix:"):]) {
				t.Error("output is not valid JSON")
			}
		})
	}
}

func TestDocument(t *testing.T) {
	m := mustNew(t, map[string]Style{"aadhaar_number": Last4})
	in := `{"document_id":"a","file_data":{"aadhaar_number":{"value":"2345-6789-0123","confidence_score":1}}}`
	want := `{"document_id":"a","file_data":{"aadhaar_number":{"value":"XXXXXXXX0123","confidence_score":1}}}`
	got, n, err := m.Document(nil, []byte(in))
	if err != nil || string(got) != want || n != 1 {
		t.Fatalf("Document = %s, %d, %v; want %s", got, n, err, want)
	}
	// The same bytes as a payload are not a document: a `data` key is
	// what Payload looks for.
	if got, _, _ := m.Payload(nil, []byte(in)); string(got) != in {
		t.Errorf("Payload of a document changed it: %s", got)
	}
}

func TestInvalid(t *testing.T) {
	m := mustNew(t, map[string]Style{"aadhaar_number": Last4})
	for _, in := range []string{
		``, ` `, `{`, `{"data":[}`, `{"data":[{"file_data":{"aadhaar_number":{"value":"2345 6789 0123" "x"}}}]}`,
		`{"a":1}{}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":"\x"}`, `{"a":"\u12"}`, "{\"a\":\"\x01\"}",
		`{"a":tru}`, `{a:1}`, `{"a" 1}`, `{"a":1,}`, `[1,]`, `nul`, strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
	} {
		_, _, err := m.Payload(nil, []byte(in))
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Payload(%q): err %v, want a SyntaxError", in, err)
			continue
		}
		if json.Valid([]byte(in)) {
			t.Errorf("%q is valid for encoding/json", in)
		}
	}
	// The message never quotes the input.
	_, _, err := m.Payload(nil, []byte(`{"data":[{"file_data":{"aadhaar_number":{"value":"234567890123"x}}}]}`))
	if err == nil || strings.Contains(err.Error(), "2345") {
		t.Errorf("error %v", err)
	}
	deep := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
	if _, _, err := m.Payload(nil, []byte(deep)); err != nil {
		t.Errorf("nesting at the limit: %v", err)
	}
}

func TestNilMasker(t *testing.T) {
	var m *Masker
	in := []byte(`{"data":[{"file_data":{"aadhaar_number":{"value":"2345 6789 0123"}}}]}`)
	got, n, err := m.Payload(nil, in)
	if err != nil || !bytes.Equal(got, in) || n != 0 {
		t.Fatalf("nil masker: %s, %d, %v", got, n, err)
	}
	if _, _, err := m.Payload(nil, []byte(`{`)); err == nil {
		t.Error("nil masker accepted invalid JSON")
	}
}

// simulatedPayload is a callback body as the simulator sends it: every
// document of a batch of n, of every type.
func simulatedPayload(t testing.TB, n int) []byte {
	t.Helper()
	sim := atlastest.New(atlastest.Options{})
	kinds := []string{"aadhaar", "pan", "passport", "gst", "dl", "voter", "blurry"}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("loan-%d-%s", i, kinds[i%len(kinds)])
	}
	body, err := sim.BatchPayload(sim.CreateBatch(ids...))
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestSimulatedPayload masks what the simulator sends and checks, through
// an independent parser, that only the named values changed.
func TestSimulatedPayload(t *testing.T) {
	fields := map[string]Style{
		"aadhaar_number": Last4, "pan_number": Last4, "passport_number": Last4,
		"name": Redact, "name_as_per_pan": Redact, "formatted_address": Redact, "address": Redact,
	}
	m := mustNew(t, fields)
	body := simulatedPayload(t, 21)
	got, n, err := m.Payload(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("nothing masked")
	}
	checkAgainstReference(t, fields, ctxPayload, body, got)

	var page struct {
		Data []struct {
			FileData map[string]json.RawMessage `json:"file_data"`
		} `json:"data"`
	}
	if err := json.Unmarshal(got, &page); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range page.Data {
		for k, raw := range d.FileData {
			st, ok := fields[k]
			if !ok {
				continue
			}
			var f struct {
				Value     json.RawMessage `json:"value"`
				RedactURL string          `json:"redact_url"`
			}
			if err := json.Unmarshal(raw, &f); err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			seen[k] = true
			var s string
			if json.Unmarshal(f.Value, &s) == nil {
				if st == Redact && s != Redacted || st == Last4 && !strings.HasPrefix(s, "XXXX") {
					t.Errorf("%s: %q", k, s)
				}
			}
			if k == "aadhaar_number" && f.RedactURL == "" {
				t.Error("redact_url lost")
			}
		}
	}
	for k := range fields {
		if !seen[k] {
			t.Errorf("the simulated batch has no %s", k)
		}
	}
}

// Each document of a page, masked on its own (as the all=1 stream does),
// gives the same bytes as the page masked whole.
func TestDocumentsMatchPayload(t *testing.T) {
	m := mustNew(t, map[string]Style{"aadhaar_number": Last4, "name": Redact})
	body := simulatedPayload(t, 14)
	whole, _, err := m.Payload(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var page struct{ Data []json.RawMessage }
	if err := dec.Decode(&page); err != nil {
		t.Fatal(err)
	}
	for _, doc := range page.Data {
		masked, _, err := m.Document(nil, doc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(whole, masked) {
			t.Errorf("document masked alone is not in the page masked whole:\n%s", masked)
		}
	}
}

// span is a value the reference expects masked: src[start:end] is
// replaced by a JSON string that decodes to want.
type span struct {
	start, end int
	want       string
}

// referenceSpans finds, with encoding/json's tokenizer (not the masker's
// scanner), every value of src that fields asks to mask, with the masked
// text expected. ok is false when src is not valid JSON.
func referenceSpans(fields map[string]Style, top context, src []byte) (spans []span, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	start := func() int {
		i := int(dec.InputOffset())
		for i < len(src) && strings.IndexByte(" \t\r\n:,", src[i]) >= 0 {
			i++
		}
		return i
	}
	var walk func(c context, style Style) error
	walk = func(c context, style Style) error {
		at := start()
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		masking := c == ctxField || c == ctxValue
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' {
				for dec.More() {
					kt, err := dec.Token()
					if err != nil {
						return err
					}
					k := kt.(string)
					next, nextStyle := ctxOther, Style("")
					switch {
					case c == ctxPayload && k == "data":
						next = ctxData
					case c == ctxDocument && k == "file_data":
						next = ctxFileData
					case c == ctxFileData:
						if st, ok := fields[k]; ok {
							next, nextStyle = ctxField, st
						}
					case c == ctxField && k == "value":
						next, nextStyle = ctxValue, style
					case c == ctxValue:
						next, nextStyle = ctxValue, style
					}
					if err := walk(next, nextStyle); err != nil {
						return err
					}
				}
			} else {
				elem, elemStyle := ctxOther, Style("")
				switch c {
				case ctxData:
					elem = ctxDocument
				case ctxField, ctxValue:
					elem, elemStyle = ctxValue, style
				}
				for dec.More() {
					if err := walk(elem, elemStyle); err != nil {
						return err
					}
				}
			}
			_, err := dec.Token() // the closing delimiter
			return err
		case string:
			if masking {
				spans = append(spans, span{at, int(dec.InputOffset()), style.Apply(v)})
			}
		case json.Number:
			if masking {
				spans = append(spans, span{at, int(dec.InputOffset()), style.Apply(string(v))})
			}
		}
		return nil
	}
	if !json.Valid(src) {
		return nil, false
	}
	if err := walk(top, ""); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return spans, true
}

// checkAgainstReference checks that got is src with exactly the
// reference's spans replaced by their masked strings, every other byte
// identical, and that got is valid JSON.
func checkAgainstReference(t testing.TB, fields map[string]Style, top context, src, got []byte) {
	t.Helper()
	spans, ok := referenceSpans(fields, top, src)
	if !ok {
		t.Fatalf("the reference cannot read the input")
	}
	if !json.Valid(got) {
		t.Fatalf("output is not valid JSON: %q", got)
	}
	at, gi := 0, 0
	for _, sp := range spans {
		plain := src[at:sp.start]
		if !bytes.HasPrefix(got[gi:], plain) {
			t.Fatalf("bytes before offset %d differ:\n in %q\nout %q", sp.start, src, got)
		}
		gi += len(plain)
		end := jsonStringEnd(got, gi)
		if end < 0 {
			t.Fatalf("no masked string at output offset %d: %q", gi, got)
		}
		var v string
		if err := json.Unmarshal(got[gi:end], &v); err != nil || v != sp.want {
			t.Fatalf("masked value at %d = %q (%v), want %q", sp.start, got[gi:end], err, sp.want)
		}
		gi, at = end, sp.end
	}
	if !bytes.Equal(got[gi:], src[at:]) {
		t.Fatalf("bytes after the last masked value differ:\n in %q\nout %q", src, got)
	}
}

// jsonStringEnd returns the offset just past the JSON string starting at
// b[i], or -1.
func jsonStringEnd(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// FuzzMask checks the masker against encoding/json: it accepts exactly
// the valid JSON, its output is valid JSON, and it differs from the input
// only in the values the reference finds, each replaced by its masked
// string. Seeds: testdata/fuzz/FuzzMask, and simulated payloads.
func FuzzMask(f *testing.F) {
	f.Add(simulatedPayload(f, 2), false)
	f.Add([]byte(`{"data":[{"file_data":{"aadhaar_number":{"value":"2345 6789 0123","confidence_score":0.9,"redact_url":"u"}}}]}`), false)
	f.Add([]byte(`{"document_id":"x","file_data":{"name":{"value":{"a":["b",1e3]}},"pan_number":"ABCPS1234K"}}`), true)
	fields := map[string]Style{"aadhaar_number": Last4, "pan_number": Last4, "name": Redact, "value": Redact, "data": Last4}
	m := mustNew(f, fields)
	f.Fuzz(func(t *testing.T, src []byte, document bool) {
		top := ctxPayload
		run := m.Payload
		if document {
			top, run = ctxDocument, m.Document
		}
		got, _, err := run(nil, src)
		if !json.Valid(src) {
			if err == nil {
				t.Fatalf("accepted invalid JSON %q", src)
			}
			return
		}
		if err != nil {
			t.Fatalf("refused valid JSON %q: %v", src, err)
		}
		checkAgainstReference(t, fields, top, src, got)
	})
}

func benchmarkPayload(b *testing.B) []byte {
	for n := 30; ; n++ {
		if body := simulatedPayload(b, n); len(body) >= 16<<10 {
			return body
		}
	}
}

// benchmarkPayload is the smallest simulated callback body of at least
// 16 KiB, as bench/load.sh sends.

// BenchmarkMask masks a callback body of at least 16 KiB (the size
// bench/load.sh sends) for three fields; BenchmarkMaskCopy copies the
// same body, the cost of passing it on unmasked.
func BenchmarkMask(b *testing.B) {
	body := benchmarkPayload(b)
	m := mustNew(b, map[string]Style{"aadhaar_number": Last4, "pan_number": Last4, "name": Redact})
	dst := make([]byte, 0, 2*len(body))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, _, err = m.Payload(dst[:0], body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMaskNoMatch scans a body in which no field is named: the cost
// of the scan alone.
func BenchmarkMaskNoMatch(b *testing.B) {
	body := benchmarkPayload(b)
	m := mustNew(b, map[string]Style{"no_such_field": Last4})
	dst := make([]byte, 0, 2*len(body))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, _, err = m.Payload(dst[:0], body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMaskCopy(b *testing.B) {
	body := benchmarkPayload(b)
	dst := make([]byte, 0, 2*len(body))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		dst = append(dst[:0], body...)
	}
}
