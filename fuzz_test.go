package caddyatlas

import (
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzParseExtractsQuery checks that any query string is either rejected
// with a message or yields a query Atlas can be asked: a non-blank
// batch_id, positive page and per_page, per_page capped.
func FuzzParseExtractsQuery(f *testing.F) {
	for _, seed := range []string{
		"batch_id=BATCH-69469-BBRSS-20260309081408&page=1&per_page=50",
		"batch_id=B&per_page=500",
		"batch_id=B&all=1",
		"batch_id=B&all=1&page=2",
		"batch_id=&page=0",
		"batch_id=a&batch_id=b",
		"page=-1&per_page=abc",
		"batch_id=%zz",
		"batch_id=B&page=99999999999999999999",
		";;&&==",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := parseExtractsQuery(raw)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error message")
			}
			return
		}
		if strings.TrimSpace(q.batchID) == "" {
			t.Fatalf("accepted a blank batch_id from %q", raw)
		}
		if q.page < 0 || q.perPage < 0 || q.perPage > MaxPerPage {
			t.Fatalf("accepted page %d per_page %d from %q", q.page, q.perPage, raw)
		}
		if q.all && q.page != 0 {
			t.Fatalf("accepted all=1 with a page from %q", raw)
		}
	})
}

// FuzzValidateUpload checks that the upload validator never panics and
// that whatever it accepts is JSON with the fields Atlas requires.
func FuzzValidateUpload(f *testing.F) {
	for _, seed := range []string{
		`{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://f/a.pdf", "document_id": "pan-1"}]}`,
		`{"product_type": "", "file_urls": []}`,
		`{"product_type": 1, "file_urls": "x"}`,
		`{"file_urls": [null, 3, {"file_url": ""}]}`,
		`[]`,
		`null`,
		`{"product_type": "LOAN_APP", "file_urls": [{"file_url": "u", "document_id": "d"}], "extra": {"deep": [1, 2]}}`,
		`{"product_type": "LOAN_APP"`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		up, err := validateUpload(body)
		if err == nil && !strings.Contains(string(body), "product_type") {
			t.Fatalf("accepted a body without product_type: %q", body)
		}
		if err == nil && (up.ProductType == "" || len(up.DocumentIDs) == 0 || slices.Contains(up.DocumentIDs, "")) {
			t.Fatalf("accepted %q as %+v", body, up)
		}
	})
}

// FuzzUnmarshalCaddyfile checks that the parser never panics on any
// token stream and that every failure is a located parse error.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"atlas {\n endpoint https://x\n client_id a\n client_secret {env.S}\n timeout 5s\n}",
		"atlas {\n callback /hooks {\n client_id a\n client_secret b\n signing_key {env.K}\n max_body 1MiB\n }\n}",
		"atlas {\n callback\n}",
		"atlas {\n callback /a /b {\n}\n}",
		"atlas {\n max_upload_body 1TiB\n timeout -1s\n}",
		"atlas x y z",
		"atlas {\n{\n}\n}",
		"atlas {\n callback /h {\n verify_key a\n verify_key b\n jwks_url http://x\n leeway 1h\n }\n}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		if strings.ContainsRune(input, 0) {
			return
		}
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), ", at ") {
			t.Fatalf("error without a location: %v", err)
		}
	})
}
