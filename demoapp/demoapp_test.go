package demoapp

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-atlas/caddy-atlas/internal/demostory"
)

func TestAppRecordsAndListsCallbacks(t *testing.T) {
	a := &App{}
	if err := a.Provision(caddy.Context{}); err != nil || a.Path != "/callbacks" {
		t.Fatalf("Provision: %v, path %q", err, a.Path)
	}
	nextCalled := 0
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		nextCalled++
		w.WriteHeader(http.StatusTeapot)
		return nil
	})
	post := func(id string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/hooks/atlas", strings.NewReader(
			`{"data":[{"document_id":"pan-1","file_data":{}},{"document_id":"aadhaar-1","file_data":{}}]}`))
		r.Header.Set("X-Atlas-Callback-Id", id)
		r.Header.Set("X-Atlas-Subject", "atlas")
		r.Header.Set("X-Atlas-Document-Count", "2")
		r.Header.Set("X-Atlas-Attempt", "1")
		w := httptest.NewRecorder()
		if err := a.ServeHTTP(w, r, next); err != nil {
			t.Fatal(err)
		}
		return w
	}
	if w := post("id-one"); w.Code != 200 || !strings.Contains(w.Body.String(), `"id-one"`) {
		t.Fatalf("POST: %d %s", w.Code, w.Body)
	}
	post("id-one")

	w := httptest.NewRecorder()
	if err := a.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/callbacks?format=json", nil), next); err != nil {
		t.Fatal(err)
	}
	var got struct{ Callbacks []received }
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("listing: %v: %s", err, w.Body)
	}
	if len(got.Callbacks) < 2 {
		t.Fatalf("listing has %d callbacks, want 2: %s", len(got.Callbacks), w.Body)
	}
	newest, first := got.Callbacks[0], got.Callbacks[1]
	if newest.ID != "id-one" || !newest.Again || first.Again || newest.Subject != "atlas" || newest.Count != "2" ||
		strings.Join(newest.DocumentIDs, ",") != "pan-1,aadhaar-1" {
		t.Errorf("listing: %+v", got.Callbacks)
	}

	w = httptest.NewRecorder()
	if err := a.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/callbacks", nil), next); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.Body.String(), "pan-1, aadhaar-1 (again)") {
		t.Errorf("text listing:\n%s", w.Body)
	}

	// Anything else goes to the next handler, a POST without a callback
	// id too.
	for _, r := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/other", nil),
		httptest.NewRequest(http.MethodPost, "/hooks/atlas", strings.NewReader("{}")),
	} {
		w := httptest.NewRecorder()
		if err := a.ServeHTTP(w, r, next); err != nil || w.Code != http.StatusTeapot {
			t.Errorf("%s %s: %d, %v; want the next handler", r.Method, r.URL, w.Code, err)
		}
	}
	if nextCalled != 2 {
		t.Errorf("next handler called %d times, want 2", nextCalled)
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	for in, wantErr := range map[string]bool{
		"atlas_demo_app":            false,
		"atlas_demo_app /x":         true,
		"atlas_demo_app {\n a b\n}": true,
	} {
		err := new(App).UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if (err != nil) != wantErr {
			t.Errorf("%q: err %v, want error %v", in, err, wantErr)
		}
	}
}

// TestTell checks the story line of a delivery: the batch from the
// demo's record of the uploads, complete or not, and a repeat.
func TestTell(t *testing.T) {
	var told strings.Builder
	demostory.Output = &told
	t.Cleanup(func() { demostory.Output = nil })

	demostory.Uploaded("BATCH-1", []string{"pan-7", "aadhaar-7"})
	demostory.Uploaded("BATCH-2", []string{"pan-8", "aadhaar-8", "passport-8"})
	for _, c := range []received{
		{ID: "2b461a66a68d0db99304ee6aeba44da3", Attempt: "1", DocumentIDs: []string{"pan-7", "aadhaar-7"}},
		{ID: "2b461a66a68d0db99304ee6aeba44da3", Attempt: "1", DocumentIDs: []string{"pan-7", "aadhaar-7"}, Again: true},
		{ID: "5c", Attempt: "3", DocumentIDs: []string{"pan-8"}},
		{ID: "6d", DocumentIDs: []string{"unknown-1"}},
	} {
		tell(c)
	}
	want := "app: callback 2b461a66… delivered (attempt 1): batch BATCH-1 complete, 2 documents (pan-7, aadhaar-7)\n" +
		"app: callback 2b461a66… delivered again (attempt 1): batch BATCH-1 complete, 2 documents (pan-7, aadhaar-7); the app saw this id before: deduplicate on it\n" +
		"app: callback 5c delivered (attempt 3): batch BATCH-2, 1 of its 3 documents (pan-8)\n" +
		"app: callback 6d delivered: 1 document (unknown-1)\n"
	if told.String() != want {
		t.Errorf("told:\n%s\nwant:\n%s", told.String(), want)
	}
}
