package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/mask"
)

// maskE2EConfig is the mask configuration of the end-to-end tests.
const maskE2EConfig = `mask aadhaar_number
		mask pan_number
		mask name redact
		mask name_as_per_pan redact`

// maskE2EFields is maskE2EConfig as the mask package sees it.
var maskE2EFields = map[string]mask.Style{
	"aadhaar_number": mask.Last4, "pan_number": mask.Last4,
	"name": mask.Redact, "name_as_per_pan": mask.Redact,
}

// identityNumbers returns the values of the masked identity numbers of a
// document's file_data as Atlas extracts them, decoded: what must not
// reach the app anywhere. (Names are checked per document by
// checkMaskedFileData: the simulator's names recur, e.g. as another
// applicant's father in an address.)
func identityNumbers(t *testing.T, fileData map[string]json.RawMessage) []string {
	t.Helper()
	var out []string
	for _, name := range []string{"aadhaar_number", "pan_number"} {
		raw, ok := fileData[name]
		if !ok {
			continue
		}
		var f struct{ Value string }
		if err := json.Unmarshal(raw, &f); err != nil || f.Value == "" {
			t.Fatalf("%s: %s (%v)", name, raw, err)
		}
		out = append(out, f.Value)
	}
	return out
}

// checkMaskedFileData compares a document's file_data through the gateway
// with Atlas's own: the masked fields' values are masked, everything
// else (scores, redact_url, other fields) is equal.
func checkMaskedFileData(t *testing.T, id string, got, orig json.RawMessage) {
	t.Helper()
	var g, o map[string]json.RawMessage
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	if err := json.Unmarshal(orig, &o); err != nil {
		t.Fatal(err)
	}
	if len(g) != len(o) {
		t.Fatalf("%s: %d fields through the gateway, %d from Atlas", id, len(g), len(o))
	}
	for name, ov := range o {
		gv := g[name]
		style, masked := maskE2EFields[name]
		if !masked {
			if !bytes.Equal(gv, ov) {
				t.Errorf("%s: %s = %s through the gateway, %s from Atlas", id, name, gv, ov)
			}
			continue
		}
		var gf, of map[string]json.RawMessage
		_ = json.Unmarshal(gv, &gf)
		_ = json.Unmarshal(ov, &of)
		for k, v := range of {
			if k == "value" {
				var s string
				_ = json.Unmarshal(v, &s)
				var gs string
				if err := json.Unmarshal(gf[k], &gs); err != nil || gs != style.Apply(s) {
					t.Errorf("%s: %s.value = %s, want %q", id, name, gf[k], style.Apply(s))
				}
				continue
			}
			if !bytes.Equal(gf[k], v) {
				t.Errorf("%s: %s.%s = %s, want Atlas's %s", id, name, k, gf[k], v)
			}
		}
	}
}

// TestE2EMaskExtracts drives the extracts route with `mask`: a page and
// all=1 carry the masked values and every other byte of Atlas's
// documents; no identity value of a masked field reaches the client.
func TestE2EMaskExtracts(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	ids := make([]string, 0, 120)
	for _, kind := range []string{"aadhaar", "pan", "passport"} {
		ids = append(ids, docIDs(kind, 40)...)
	}
	batch := sim.CreateBatch(ids...)
	tester, _ := startGateway(t, sim.URL, maskE2EConfig)

	var secrets []string
	for _, id := range ids {
		var fd map[string]json.RawMessage
		if err := json.Unmarshal(sim.FileData(id), &fd); err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, identityNumbers(t, fd)...)
	}
	if len(secrets) != 80 {
		t.Fatalf("only %d identity values in the batch", len(secrets))
	}
	noSecrets := func(what string, body []byte) {
		t.Helper()
		for _, s := range secrets {
			if bytes.Contains(body, []byte(s)) {
				t.Fatalf("%s holds the identity value %q", what, s)
			}
		}
	}

	var pages []extractsPage
	for _, page := range []string{"1", "2", "3"} {
		resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch+"&page="+page)
		if resp.StatusCode != http.StatusOK || !json.Valid(body) {
			t.Fatalf("page %s: %d %s", page, resp.StatusCode, body)
		}
		if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(body)) {
			t.Errorf("page %s: Content-Length %s for %d bytes", page, cl, len(body))
		}
		noSecrets("page "+page, body)
		pages = append(pages, decodePage(t, body))
	}
	resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch+"&all=1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("all=1: %d %s", resp.StatusCode, body)
	}
	noSecrets("all=1", body)
	all := decodePage(t, body)
	if len(all.Data) != len(ids) {
		t.Fatalf("all=1: %d documents, want %d", len(all.Data), len(ids))
	}
	i := 0
	for _, p := range pages {
		for _, d := range p.Data {
			if d.DocumentID != ids[i] || !bytes.Equal(d.FileData, all.Data[i].FileData) {
				t.Fatalf("document %d differs between its page and all=1", i)
			}
			checkMaskedFileData(t, d.DocumentID, d.FileData, sim.FileData(d.DocumentID))
			i++
		}
	}
	if i != len(ids) {
		t.Fatalf("pages held %d documents, want %d", i, len(ids))
	}
	// An error of Atlas's is relayed as before.
	resp, _ = get(t, tester, "/atlas/extracts?batch_id=BATCH-00000-NOPE-20260101000000")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown batch: %d", resp.StatusCode)
	}
}

// TestE2EMaskRefusesUnreadablePage checks that a page the masker cannot
// read is never passed on: a 502, with no byte of it, on a page and as
// the first page of all=1.
func TestE2EMaskRefusesUnreadablePage(t *testing.T) {
	skipShort(t)
	const partial = `{"data":[{"document_id":"a","file_data":{"aadhaar_number":{"value":"2345 6789 0123"`
	atlas := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/authtoken") {
			_, _ = io.WriteString(w, `{"access_token":"t","expires_in":3600}`)
			return
		}
		_, _ = io.WriteString(w, partial)
	}))
	t.Cleanup(atlas.Close)
	tester, _ := startGateway(t, atlas.URL, "mask aadhaar_number")
	for _, q := range []string{"&page=1", "&all=1"} {
		resp, body := get(t, tester, "/atlas/extracts?batch_id=B"+q)
		wantError(t, resp, body, http.StatusBadGateway, "atlas sent an unreadable extracts page")
		if bytes.Contains(body, []byte("6789")) {
			t.Errorf("%s: the answer holds the identity number: %s", q, body)
		}
	}
}
