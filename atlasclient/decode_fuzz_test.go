package atlasclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The decoders of Atlas's answers read bytes from the network. These
// targets check that no input makes them panic, that what they accept
// satisfies their contract, and that the lossless types round-trip.

// FuzzParseAPIError checks that any status and body give an *APIError
// with that status, a non-empty message, and a message and code bounded
// in length, whatever the body holds.
func FuzzParseAPIError(f *testing.F) {
	for _, seed := range []struct {
		status int
		body   string
	}{
		{400, `{"error":"batch_id is required"}`},
		{401, `{"error_code":"401","error_message":"Invalid client credentials"}`},
		{403, `{"message":"forbidden","code":42}`},
		{500, `{"error":{"code":"E1","message":"nested"}}`},
		{502, `<html>bad gateway</html>`},
		{503, ``},
		{599, `   `},
		{0, `{}`},
		{429, `{"detail":null,"msg":1e400,"error":[]}`},
		{400, `{"error":"` + strings.Repeat("é", 400) + `"}`},
		{400, `{"code":` + strings.Repeat("9", 600) + `}`},
		{400, "\xff\xfe plain text"},
		{-1, `{"error":`},
	} {
		f.Add(seed.status, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := ParseAPIError(status, body)
		if e == nil {
			t.Fatal("nil error")
		}
		if e.StatusCode != status {
			t.Fatalf("status %d, want %d", e.StatusCode, status)
		}
		if e.Message == "" {
			t.Fatalf("empty message for %d %q", status, body)
		}
		// truncate appends "…" to a message cut at maxErrorMessage bytes.
		limit := maxErrorMessage + len("…")
		if len(e.Message) > limit || len(e.Code) > limit {
			t.Fatalf("message of %d bytes, code of %d: want at most %d", len(e.Message), len(e.Code), limit)
		}
		_ = e.Error()
		if errors.Is(e, ErrUnauthorized) != (status == 401) {
			t.Fatalf("errors.Is(ErrUnauthorized) wrong for status %d", status)
		}
	})
}

// FuzzParseToken checks the authtoken response parser: what it accepts
// has a value and expires after it was issued.
func FuzzParseToken(f *testing.F) {
	for _, seed := range []string{
		`{"access_token":"tok","expires_in":3600}`,
		`{"access_token":"tok","expires_in":"3600"}`,
		`{"access_token":"tok","expires_in":" 1.5 "}`,
		`{"access_token":"tok","expires_in":"NaN"}`,
		`{"access_token":"tok","expires_in":"Inf"}`,
		`{"access_token":"tok","expires_in":-1}`,
		`{"access_token":"tok","expires_in":1e10}`,
		`{"access_token":"tok","expires_in":0x1p3}`,
		`{"access_token":"tok","expires_in":"0x1p3"}`,
		`{"access_token":"tok","expires_in":null}`,
		`{"access_token":"","expires_in":10}`,
		`{"access_token":"eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2ln"}`,
		`{"access_token":"eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2ln","expires_in":0}`,
		`{"access_token":"a.b.c"}`,
		`{"access_token":7}`,
		`[]`, `null`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	issued := time.Date(2026, 3, 9, 8, 14, 8, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := parseToken(body, issued)
		if err != nil {
			if tok != (Token{}) {
				t.Fatalf("a token %+v with the error %v", tok, err)
			}
			return
		}
		if tok.Value == "" || !tok.IssuedAt.Equal(issued) || !tok.Expiry.After(issued) {
			t.Fatalf("accepted %q as %+v", body, tok)
		}
	})
}

// FuzzParseExpiresIn checks that expires_in is either refused or a
// lifetime between 0 and 1e9 seconds.
func FuzzParseExpiresIn(f *testing.F) {
	for _, seed := range []string{`3600`, `"3600"`, `0`, `null`, ``, `"NaN"`, `NaN`, `"-0"`, `"+Inf"`, `1e9`, `1e9.1`, `"0x1p3"`, `" 7 "`, `"1_000"`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := parseExpiresIn(raw)
		if err != nil {
			return
		}
		if d < 0 || d > 1e9*time.Second {
			t.Fatalf("expires_in %q gave the lifetime %v", raw, d)
		}
	})
}

// FuzzParseUploadResult checks that an accepted upload answer has a
// batch id.
func FuzzParseUploadResult(f *testing.F) {
	for _, seed := range []string{
		`{"batch_id":"BATCH-1"}`,
		`[{"batch_id":"B","document_id":"d","file_uuid":"u"}]`,
		`[]`, `[{}]`, `{}`, `{"batch_id":7}`, `[null]`, `"x"`, ``, `[{"batch_id":"B"},1]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := parseUploadResult(body)
		if err != nil {
			if res != nil {
				t.Fatal("a result with an error")
			}
			return
		}
		if res.BatchID == "" {
			t.Fatalf("accepted %q without a batch id", body)
		}
		if len(res.Files) > 0 && res.Files[0].BatchID != res.BatchID {
			t.Fatalf("batch id %q is not the first file's %q", res.BatchID, res.Files[0].BatchID)
		}
	})
}

// roundTripSeeds are payloads for the round-trip targets: the test pages
// and their pieces, with odd shapes.
func roundTripSeeds() []string {
	return []string{
		realisticPage,
		`{}`, `{"data":null,"page":2}`, `{"data":[],"page":-0,"per_page":1e0,"total_pages":1.0,"has_next":"no"}`,
		`{"data":[{"document_id":"d","file_data":{"document_type":"PAN"}}]}`,
		`{"data":[{"document_id":"d"},{"file_data":null},{"document_id":7,"file_data":"x"}]}`,
		`{"data":[{"document_id":"","file_data":{"document_type":"","error_code":""}}]}`,
		`{"data":[{"document_id":"d","file_data":{"document_type":{"value":""}}}]}`,
		`{"data":[{"document_id":"d","file_data":{"document_type":{"confidence_score":0.5}}}]}`,
		`{"data":[{"document_id":"d","file_data":{"a":{},"b":{"value":null},"c":{"confidence_score":0.5},"d":null,"e":true,` +
			`"f":{"value":1.0,"confidence_score":1.0e0},"g":{"value":"x","confidence_score":-0}}}]}`,
		`{"document_id":"d","file_data":{"x":{"value":"<&>","confidence_score":1e-400}},"document_id":"e"}`,
		`{"document_type":{"value":"PAN","confidence_score":0.90,"model":"v7"},"error_code":"UNRECOGNISED","n":12345678901234567890}`,
		`{"document_type":7,"error_code":null,"redact":{"value":"x","redact_url":"https://h/p?a=1&b=2"}}`,
		`{"k\u00e9y":"\ud800","x":"\u0000","":{"":""}}`,
		`{"page":99999999999999999999,"total_items":"3","has_prev":1}`,
	}
}

// FuzzExtractsPage checks the lossless contract of ExtractsPage: what
// decodes marshals to the same JSON value, and marshalling is stable.
func FuzzExtractsPage(f *testing.F) {
	for _, s := range roundTripSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkRoundTrip[ExtractsPage](t, in)
	})
}

// FuzzDocument is FuzzExtractsPage for one Document.
func FuzzDocument(f *testing.F) {
	for _, s := range roundTripSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkRoundTrip[Document](t, in)
	})
}

// FuzzFileData is FuzzExtractsPage for one FileData. A bare null decodes
// to the zero FileData, which marshals as {}; it is left out.
func FuzzFileData(f *testing.F) {
	for _, s := range roundTripSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if isNull(in) {
			return
		}
		checkRoundTrip[FileData](t, in)
	})
}

// checkRoundTrip decodes in as a T; when that succeeds, marshalling must
// give the same JSON value as in, and decoding and marshalling that again
// must give the same bytes.
func checkRoundTrip[T any](t *testing.T, in []byte) {
	t.Helper()
	var v T
	if err := json.Unmarshal(in, &v); err != nil {
		return
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("Marshal after decoding %q: %v", in, err)
	}
	want, err := fuzzGeneric(in)
	if err != nil {
		t.Fatalf("%q decoded as %T but not as JSON: %v", in, v, err)
	}
	got, err := fuzzGeneric(out)
	if err != nil {
		t.Fatalf("marshalled invalid JSON %q: %v", out, err)
	}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("round trip changed the JSON value:\n in:  %q\n out: %q", in, out)
	}
	var again T
	if err := json.Unmarshal(out, &again); err != nil {
		t.Fatalf("re-decoding %q: %v", out, err)
	}
	out2, err := json.Marshal(again)
	if err != nil {
		t.Fatalf("re-marshalling: %v", err)
	}
	if !bytes.Equal(out, out2) {
		t.Fatalf("marshalling is not stable:\n first:  %q\n second: %q", out, out2)
	}
}

// fuzzGeneric decodes b into plain Go values with every number replaced
// by its exact rational value, so that two encodings of one number (-0 and
// 0, 1.0 and 1.00) compare equal and two different numbers never do.
func fuzzGeneric(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return normalizeNumbers(v)
}

func normalizeNumbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		s := x.String()
		// A huge exponent would make big.Rat compute a huge power of
		// ten; such numbers are compared as text.
		if i := strings.IndexAny(s, "eE"); i >= 0 {
			if exp, err := strconv.Atoi(s[i+1:]); err != nil || exp > 1000 || exp < -1000 {
				return "number:" + s, nil
			}
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			return nil, fmt.Errorf("number %q", s)
		}
		return "number:" + r.RatString(), nil
	case []any:
		for i := range x {
			n, err := normalizeNumbers(x[i])
			if err != nil {
				return nil, err
			}
			x[i] = n
		}
	case map[string]any:
		for k := range x {
			n, err := normalizeNumbers(x[k])
			if err != nil {
				return nil, err
			}
			x[k] = n
		}
	}
	return v, nil
}
