package payload

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
)

func TestCallbackPayloadValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		docs int
	}{
		{"empty data", `{"data":[]}`, 0},
		{"sample", string(payloadtest.Sample(3)), 3},
		{"extra keys", `{"batch_id":"BATCH-1","data":[{"document_id":"a","file_data":{},"error_code":"UNRECOGNISED"}],"has_next":true}`, 1},
		{"document_type object", `{"data":[{"document_id":"a","file_data":{"document_type":{"value":"PAN","confidence_score":0.5}}}]}`, 1},
		{"nested scores", `{"data":[{"document_id":"a","file_data":{"formatted_address":{"state":{"value":"KA","confidence_score":0},"city":[{"confidence_score":1e-1}]}}}]}`, 1},
		{"score bounds", `{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":0},"y":{"confidence_score":1.0},"z":{"confidence_score":-0}}}]}`, 1},
		{"whitespace", " \n\t{ \"data\" : [ ] }\r\n ", 0},
		{"unicode", `{"data":[{"document_id":"दस्तावेज़","file_data":{"name":{"value":"ರವಿ \u0915","confidence_score":0.7}}}]}`, 1},
		{"odd keys", `{"data":[{"document_id":"a","file_data":{"a b":{"confidence_score":0.2},"":null}}]}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Validate([]byte(tc.body))
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if n != tc.docs {
				t.Errorf("documents = %d, want %d", n, tc.docs)
			}
		})
	}
}

func TestCallbackPayloadInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"not JSON", `hello`, `body: invalid JSON at byte 1: invalid character 'h' looking for the beginning of a value`},
		{"empty", ``, `body: empty; expected a JSON object`},
		{"array", `[{"data":[]}]`, `body: must be a JSON object, not an array`},
		{"string", `"x"`, `body: must be a JSON object, not a string`},
		{"truncated", `{"data":[{"document_id":"a","file_data":{"pan":{"value":"AB`, `data[0].file_data.pan.value: truncated JSON`},
		{"truncated between tokens", `{"data":[{"document_id":"a","file_data":{}},`, `data: truncated JSON: the body ends at byte 44`},
		{"truncated at the end", `{"data":[]`, `body: truncated JSON`},
		{"syntax error in a document", `{"data":[{"document_id":"a","file_data":{"x":tru}}]}`, `data[0].file_data.x: invalid JSON at byte`},
		{"trailing data", `{"data":[]} {"data":[]}`, `body: unexpected data after the JSON object`},
		{"trailing garbage", `{"data":[]}x`, `body: unexpected data after the JSON object`},
		{"missing data", `{"page":1}`, `data: missing; expected an array of documents`},
		{"data not an array", `{"data":{"document_id":"a"}}`, `data: must be an array of documents, not an object`},
		{"data null", `{"data":null}`, `data: must be an array of documents, not null`},
		{"duplicate data", `{"data":[],"data":[{"x":1}]}`, `data: duplicate key`},
		{"document not an object", `{"data":[{"document_id":"a","file_data":{}},"b"]}`, `data[1]: must be a document object, not a string`},
		{"missing document_id", `{"data":[{"document_id":"a","file_data":{}},{"file_data":{}}]}`, `data[1].document_id: missing`},
		{"empty document_id", `{"data":[{"document_id":"","file_data":{}}]}`, `data[0].document_id: must be a non-empty string`},
		{"numeric document_id", `{"data":[{"document_id":12,"file_data":{}}]}`, `data[0].document_id: must be a non-empty string, not a number`},
		{"duplicate document_id", `{"data":[{"document_id":"a","document_id":"b","file_data":{}}]}`, `data[0].document_id: duplicate key`},
		{"missing file_data", `{"data":[{"document_id":"a"}]}`, `data[0].file_data: missing`},
		{"file_data not an object", `{"data":[{"document_id":"a","file_data":[]}]}`, `data[0].file_data: must be an object, not an array`},
		{"duplicate file_data", `{"data":[{"document_id":"a","file_data":{},"file_data":{}}]}`, `data[0].file_data: duplicate key`},
		{"score 1.7", `{"data":[{"document_id":"a","file_data":{}},{"document_id":"b","file_data":{}},{"document_id":"c","file_data":{}},{"document_id":"d","file_data":{"pan_number":{"value":"X","confidence_score":1.7}}}]}`,
			`data[3].file_data.pan_number.confidence_score: 1.7 is outside [0, 1]`},
		{"score negative", `{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":-0.01}}}]}`, `data[0].file_data.x.confidence_score: -0.01 is outside [0, 1]`},
		{"score huge", `{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":1e400}}}]}`, `data[0].file_data.x.confidence_score: 1e400 is outside [0, 1]`},
		{"score high", `{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":"high"}}}]}`, `data[0].file_data.x.confidence_score: "high" is not a number`},
		{"score null", `{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":null}}}]}`, `data[0].file_data.x.confidence_score: null is not a number`},
		{"score object", `{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":{}}}}]}`, `data[0].file_data.x.confidence_score: an object is not a number`},
		{"duplicate score", `{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":0.5,"confidence_score":7}}}]}`, `data[0].file_data.x.confidence_score: duplicate key`},
		{"nested score", `{"data":[{"document_id":"a","file_data":{"addr":{"parts":[{"confidence_score":0.1},{"confidence_score":2}]}}}]}`, `data[0].file_data.addr.parts[1].confidence_score: 2 is outside [0, 1]`},
		{"odd key in path", `{"data":[{"document_id":"a","file_data":{"pan no.":{"confidence_score":3}}}]}`, `data[0].file_data["pan no."].confidence_score: 3 is outside [0, 1]`},
		{"nested too deep", `{"data":[],"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`, `x[0][0]`},
		{"invalid UTF-8", "{\"data\":[{\"document_id\":\"\xff\",\"file_data\":{}}]}", `body: not valid UTF-8`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Validate([]byte(tc.body))
			if err == nil {
				t.Fatal("accepted")
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not a payload error", err, err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error\n  %s\nwant it to start with\n  %s", err, tc.want)
			}
		})
	}
}

// TestCallbackPayloadNoTree checks that validation builds nothing of
// the payload: its allocations do not grow with the payload.
func TestCallbackPayloadNoTree(t *testing.T) {
	allocs := func(body []byte) float64 {
		return testing.AllocsPerRun(20, func() {
			if _, err := Validate(body); err != nil {
				t.Fatal(err)
			}
		})
	}
	small, large := allocs(payloadtest.Realistic(1<<10)), allocs(payloadtest.Realistic(256<<10))
	if large > small || large > 4 {
		t.Errorf("%v allocations for 1 KiB, %v for 256 KiB", small, large)
	}
}

// TestCallbackPayloadMatchesReference checks the scanner against the
// reference validator on the test bodies; FuzzCallbackPayload does the
// same on generated ones.
func TestCallbackPayloadMatchesReference(t *testing.T) {
	for _, body := range callbackPayloadSeeds() {
		comparePayloadValidators(t, []byte(body))
	}
	// Around the depth limit, in a document and beside data: the fast
	// path and value agree, and the limit holds (the reference, which
	// counts levels otherwise, is not asked).
	for _, n := range []int{maxPayloadDepth - 5, maxPayloadDepth - 4, maxPayloadDepth - 3} {
		nest := strings.Repeat("[", n) + strings.Repeat("]", n)
		for _, tc := range []struct {
			body  string
			depth int // of the deepest array
		}{
			{`{"data":[{"document_id":"a","file_data":{"x":` + nest + `}}]}`, 4 + n},
			{`{"data":[],"x":` + nest + `}`, 1 + n},
		} {
			compareFastPath(t, []byte(tc.body))
			_, err := Validate([]byte(tc.body))
			if (err == nil) != (tc.depth <= maxPayloadDepth) {
				t.Errorf("%d levels deep: %v", tc.depth, err)
			}
		}
	}
	deep := `{"a":` + strings.Repeat(`[{"confidence_score":0,"b":`, 4000) + "1" + strings.Repeat("}]", 4000) + `,"data":[]}`
	comparePayloadValidators(t, []byte(deep))
	comparePayloadValidators(t, []byte(strings.Replace(deep, "1}]", "2}]", 1)))
}

func FuzzCallbackPayload(f *testing.F) {
	for _, body := range callbackPayloadSeeds() {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		comparePayloadValidators(t, body)
	})
}

// comparePayloadValidators checks that the scanner and the reference
// accept the same bodies, count the same documents, and give the same
// message for the same schema error. Syntax errors may be worded
// differently.
func comparePayloadValidators(t *testing.T, body []byte) {
	t.Helper()
	compareFastPath(t, body)
	n, err := Validate(body)
	refN, refErr := refValidateCallbackPayload(body)
	if (err == nil) != (refErr == nil) {
		t.Fatalf("body %q:\n  scanner:   %d, %.300v\n  reference: %d, %.300v", truncate(string(body), 300), n, err, refN, refErr)
	}
	if err == nil {
		if n != refN {
			t.Fatalf("body %q: %d documents, reference %d", truncate(string(body), 300), n, refN)
		}
		if !json.Valid(body) {
			t.Fatalf("body %q accepted but not valid JSON", truncate(string(body), 300))
		}
		return
	}
	syntax := func(e error) bool {
		m := e.Error()
		return strings.Contains(m, "invalid JSON") || strings.Contains(m, "truncated JSON") || strings.Contains(m, "unexpected data after")
	}
	if !syntax(err) && !syntax(refErr) && err.Error() != refErr.Error() {
		t.Fatalf("body %q:\n  scanner:   %.300v\n  reference: %.300v", truncate(string(body), 300), err, refErr)
	}
}

// compareFastPath checks that skipPayloadValue and value give the same
// verdict on body taken as one value, as a confidence_score or not, and
// end at the same byte.
func compareFastPath(t *testing.T, body []byte) {
	t.Helper()
	for _, score := range []bool{false, true} {
		s := payloadScanner{buf: body}
		slowErr := s.value(score)
		end, ok := skipPayloadValue(body, 0, 0, score)
		if ok != (slowErr == nil) || (ok && end != s.pos) {
			t.Fatalf("body %q as a value (score %v): fast path %v ending at %d, value %v ending at %d",
				truncate(string(body), 300), score, ok, end, slowErr, s.pos)
		}
	}
}

// callbackPayloadSeeds are bodies for the comparison: valid, invalid, and
// edge cases of JSON syntax.
func callbackPayloadSeeds() []string {
	seeds := []string{
		`{"data":[]}`, ` {"data":[{"document_id":"a","file_data":{"x":{"confidence_score":0.5}}}]} `,
		`{"d\u0061ta":[]}`, `{"data":[],"d\u0061ta":[]}`, `{"data":[{"document_id":"\u0000","file_data":{}}]}`,
		`{"data":[{"document_id":"a","file_data":{"confidence_score":-0,"c":{"confidence_score":1e-400}}}]}`,
		`{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":1.00000}}}]}`,
		`{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":1.00001}}}]}`,
		`{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":0.5e1}}}]}`,
		`{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":01}}}]}`,
		`{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":true}}}]}`,
		`{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":"\u0068igh"}}}]}`,
		`{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":tru}}}]}`,
		`{"data":[1,]}`, `{"data":[,1]}`, `{"data":[{"document_id":"a","file_data":{}},]}`, `{,"data":[]}`,
		`{"data":[] "x":1}`, `{"data"::[]}`, `{"data":[]]`, `{"data":"\x"}`, `{"data":"\u12G4"}`, "{\"data\":\"a\tb\"}",
		`{"data":-}`, `{"data":1.}`, `{"data":1e}`, `{"data":1e+}`, `{"data":.5}`, `{"data":+1}`, `{"data":nul}`, `{"data":NaN}`,
		`{"data":[{"document_id":"a","file_data":{},"document_id":"b"}]}`, `{"x":{"confidence_score":2}}`,
		`{"data":[{"file_data":{},"document_id":""}]}`, `{"data":[{"document_id":"a","file_data":null}]}`,
		`{"data":[[]]}`, `{"data":[{"document_id":"a","file_data":{"a":[[[[{"confidence_score":[]}]]]]}}]}`,
		strings.Repeat("[", 20), `{"a":` + strings.Repeat("[", 50) + strings.Repeat("]", 50) + `,"data":[]}`,
		`{"data":[]}` + "\n", `{"data":[]}{}`, `{"data":[]} 1`, `null`, `true`, `1`, `"s"`, `[]`, ``, ` `,
		// Strings longer than eight bytes, with escapes, control
		// characters and multi-byte UTF-8 at several places.
		`{"data":[{"document_id":"0123456789\"abcdefghij","file_data":{"name":"Ravi Kumar \u0053harma, Bengaluru"}}]}`,
		"{\"data\":[{\"document_id\":\"0123456789abcdef\tx\",\"file_data\":{}}]}",
		`{"data":[{"document_id":"ನಮಸ್ಕಾರ नमस्ते 0123456789","file_data":{"confidence_score_long_key_name":{"confidence_score":0.25}}}]}`,
		`{"data":[{"document_id":"abcdefgh\\","file_data":{"abcdefghijklmnop\/q":"x"}}]}`,
	}
	for _, b := range [][]byte{payloadtest.Sample(2), payloadtest.Realistic(1 << 10)} {
		s := string(b)
		seeds = append(seeds, s, s[:len(s)/2], s[:len(s)-1], strings.Replace(s, "0.9", "1.9", 1))
	}
	return seeds
}

// TestPlainStringRun checks the eight-bytes-at-a-time scan against a byte
// loop: every byte value at every position of runs of every length up to
// 24, after plain bytes of each kind (ASCII, UTF-8 continuation bytes).
func TestPlainStringRun(t *testing.T) {
	naive := func(b []byte, i int) int {
		for i < len(b) && b[i] != '"' && b[i] != '\\' && b[i] >= 0x20 {
			i++
		}
		return i
	}
	for _, fill := range []byte{'a', ' ', '!', '~', 0x7f, 0x80, 0xa3, 0xff} {
		for n := 0; n <= 24; n++ {
			for pos := 0; pos < n; pos++ {
				for c := range 256 {
					b := bytes.Repeat([]byte{fill}, n)
					b[pos] = byte(c)
					for start := range min(n, 3) {
						if got, want := plainStringRun(b, start), naive(b, start); got != want {
							t.Fatalf("fill %#x, %d bytes, %#x at %d, from %d: %d, want %d", fill, n, c, pos, start, got, want)
						}
					}
				}
			}
		}
	}
	// Two specials: the first is found, whatever follows it.
	b := []byte("abc\x1f\"\\def")
	if got := plainStringRun(b, 0); got != 3 {
		t.Errorf("first of several specials at %d, want 3", got)
	}
}
