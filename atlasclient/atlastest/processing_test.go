package atlastest

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// rawItems decodes the data of an extracts answer keeping each item's
// keys as they came.
func rawItems(t *testing.T, r response) []map[string]json.RawMessage {
	t.Helper()
	var p struct {
		Data []map[string]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("extracts body %s: %v", r.body, err)
	}
	return p.Data
}

// available returns the document ids of an extracts answer that carry
// file_data, in order.
func available(t *testing.T, r response) []string {
	t.Helper()
	var ids []string
	for _, it := range rawItems(t, r) {
		if fd, ok := it["file_data"]; ok && string(fd) != "{}" {
			var id string
			_ = json.Unmarshal(it["document_id"], &id)
			ids = append(ids, id)
		}
	}
	return ids
}

func batchOf(t *testing.T, r response) string {
	t.Helper()
	var out []uploadResult
	if err := json.Unmarshal(r.body, &out); err != nil || len(out) == 0 {
		t.Fatalf("multiupload answer %d %s: %v", r.status, r.body, err)
	}
	return out[0].BatchID
}

func TestProcessingDelayFixed(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now, ProcessingDelay: 10 * time.Second})
	tok := token(t, srv)
	ids := []string{"loan-1-pan", "loan-1-blurry", "loan-1-invalid"}
	batch := batchOf(t, upload(t, srv, tok, ids...))

	if at, err := srv.ReadyAt(batch); err != nil || !at.Equal(testutil.Epoch.Add(10*time.Second)) {
		t.Errorf("ReadyAt = %v, %v, want the upload + 10s", at, err)
	}
	for _, step := range []time.Duration{0, 9*time.Second + 999*time.Millisecond} {
		clock.Set(testutil.Epoch.Add(step))
		r, p := extracts(t, srv, tok, "batch_id="+batch)
		if r.status != http.StatusOK {
			t.Fatalf("at +%v: %d %s", step, r.status, r.body)
		}
		items := rawItems(t, r)
		if len(items) != 3 || p.TotalItems != 3 {
			t.Fatalf("at +%v: %d items, total %d, want every document listed", step, len(items), p.TotalItems)
		}
		for i, it := range items {
			if _, ok := it["file_data"]; ok || string(it["document_id"]) != `"`+ids[i]+`"` {
				t.Errorf("at +%v, pending item %d = %s, want only its document_id", step, i, r.body)
			}
		}
	}

	clock.Set(testutil.Epoch.Add(10 * time.Second))
	r, p := extracts(t, srv, tok, "batch_id="+batch)
	if got := available(t, r); !slices.Equal(got, ids) {
		t.Fatalf("at +10s available = %v, want %v", got, ids)
	}
	for i, id := range ids {
		var fd map[string]json.RawMessage
		_ = json.Unmarshal(srv.FileData(id), &fd)
		if diff := cmp.Diff(fd, p.Data[i].FileData); diff != "" {
			t.Errorf("%s: file_data differs from FileData (-want +got):\n%s", id, diff)
		}
	}
	// The unrecognisable documents end with their error_code.
	for i, want := range []string{"", `"UNRECOGNISED"`, `"INVALID_DOC"`} {
		if got := string(p.Data[i].FileData["error_code"]); got != want {
			t.Errorf("%s: error_code = %s, want %s", ids[i], got, want)
		}
	}
}

func TestProcessingDelayRange(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	lo, hi := time.Second, 10*time.Second
	srv := NewServer(t, Options{Now: clock.Now, ProcessingDelay: lo, ProcessingDelayMax: hi})
	other := New(Options{ProcessingDelay: lo, ProcessingDelayMax: hi})
	var ids []string
	delays := map[string]time.Duration{}
	for i := range 20 {
		id := "doc-" + string(rune('a'+i))
		ids = append(ids, id)
		d := srv.ProcessingDelayFor(id)
		if d < lo || d > hi {
			t.Errorf("%s: delay %v outside [%v, %v]", id, d, lo, hi)
		}
		if od := other.ProcessingDelayFor(id); od != d {
			t.Errorf("%s: delay %v in one simulator, %v in another", id, d, od)
		}
		delays[id] = d
	}
	if d := delays[ids[0]]; !slices.ContainsFunc(ids, func(id string) bool { return delays[id] != d }) {
		t.Error("every document got the same delay")
	}

	batch := srv.CreateBatch(ids...)
	tok := token(t, srv)
	var last time.Duration
	for _, step := range []time.Duration{0, 2 * time.Second, 5 * time.Second, 7 * time.Second, hi} {
		clock.Set(testutil.Epoch.Add(step))
		r, _ := extracts(t, srv, tok, "batch_id="+batch)
		var want []string
		for _, id := range ids {
			if delays[id] <= step {
				want = append(want, id)
			}
			last = max(last, delays[id])
		}
		if got := available(t, r); !slices.Equal(got, want) {
			t.Errorf("at +%v available = %v, want %v", step, got, want)
		}
	}
	if at, _ := srv.ReadyAt(batch); !at.Equal(testutil.Epoch.Add(last)) {
		t.Errorf("ReadyAt = %v, want the upload + %v", at, last)
	}
}

func TestPendingDocumentsForms(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now})
	tok := token(t, srv)
	ready := srv.CreateBatch("a-pan", "b-pan")
	srv.SetProcessingDelay(time.Minute, 0) // a max below the min means the min
	batch := srv.CreateBatch("c-pan", "d-pan", "e-pan")
	if d := srv.ProcessingDelayFor("x"); d != time.Minute {
		t.Fatalf("ProcessingDelayFor = %v, want 1m", d)
	}
	// Documents uploaded before keep their (zero) delay.
	if r, _ := extracts(t, srv, tok, "batch_id="+ready); len(available(t, r)) != 2 {
		t.Errorf("a batch uploaded before the delay is pending: %s", r.body)
	}

	tests := []struct {
		form, want string
	}{
		{PendingListed, `[{"document_id":"c-pan"},{"document_id":"d-pan"}]`},
		{PendingEmpty, `[{"document_id":"c-pan","file_data":{}},{"document_id":"d-pan","file_data":{}}]`},
		{PendingOmitted, `[]`},
		{"bogus", `[{"document_id":"c-pan"},{"document_id":"d-pan"}]`},
	}
	for _, tt := range tests {
		srv.SetPendingDocuments(tt.form)
		r, p := extracts(t, srv, tok, "batch_id="+batch+"&per_page=2")
		var raw struct {
			Data json.RawMessage `json:"data"`
		}
		_ = json.Unmarshal(r.body, &raw)
		if string(raw.Data) != tt.want {
			t.Errorf("%s: data = %s, want %s", tt.form, raw.Data, tt.want)
		}
		// Pagination counts every document, pending or not.
		if p.TotalItems != 3 || p.TotalPages != 2 || !p.HasNext || p.PerPage != 2 {
			t.Errorf("%s: page fields %+v", tt.form, p)
		}
	}
	clock.Advance(time.Minute)
	if r, _ := extracts(t, srv, tok, "batch_id="+batch+"&per_page=2"); len(available(t, r)) != 2 {
		t.Errorf("after the delay: %s", r.body)
	}
}

// TestProcessingDelayZeroByDefault: without the knob a batch is complete
// at once, as before it existed.
func TestProcessingDelayZeroByDefault(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now})
	batch := srv.CreateBatch("a", "b")
	if at, err := srv.ReadyAt(batch); err != nil || !at.Equal(testutil.Epoch) {
		t.Errorf("ReadyAt = %v, %v", at, err)
	}
	if _, err := srv.ReadyAt("BATCH-nope"); err != ErrUnknownBatch {
		t.Errorf("ReadyAt of an unknown batch: %v", err)
	}
	r, _ := extracts(t, srv, token(t, srv), "batch_id="+batch)
	if got := available(t, r); len(got) != 2 {
		t.Errorf("available = %v", got)
	}
}

func TestProcessingControlEndpoints(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now, PendingDocuments: PendingEmpty})
	for _, path := range []string{
		"/_sim/processing-delay",
		"/_sim/processing-delay?ms=-1",
		"/_sim/processing-delay?ms=x",
		"/_sim/processing-delay?ms=100&max_ms=50",
		"/_sim/processing-delay?ms=100&max_ms=y",
		"/_sim/pending-documents",
		"/_sim/pending-documents?form=hidden",
	} {
		if r := do(t, srv, http.MethodPost, path, ""); r.status != http.StatusBadRequest || r.jsonMap(t)["error"] == nil {
			t.Errorf("%s: %d %s, want 400 with an error", path, r.status, r.body)
		}
	}
	if r := do(t, srv, http.MethodGet, "/_sim/processing-delay?ms=1", ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", r.status)
	}

	ok := func(path string) {
		t.Helper()
		if r := do(t, srv, http.MethodPost, path, ""); r.status != http.StatusOK {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
	}
	ok("/_sim/processing-delay?ms=2000&max_ms=4000")
	if d := srv.ProcessingDelayFor("doc-1"); d < 2*time.Second || d > 4*time.Second {
		t.Errorf("after /_sim/processing-delay: %v", d)
	}
	ok("/_sim/processing-delay?ms=3000")
	if d := srv.ProcessingDelayFor("doc-1"); d != 3*time.Second {
		t.Errorf("max_ms omitted: %v, want 3s", d)
	}
	ok("/_sim/pending-documents?form=omitted")
	tok := token(t, srv)
	batch := srv.CreateBatch("a", "b")
	if r, p := extracts(t, srv, tok, "batch_id="+batch); len(p.Data) != 0 || p.TotalItems != 2 {
		t.Errorf("omitted: %s", r.body)
	}

	// Reset restores the configured knobs: no delay, pending as {}.
	ok("/_sim/reset")
	if d := srv.ProcessingDelayFor("doc-1"); d != 0 {
		t.Errorf("after reset: delay %v", d)
	}
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); string(rawItems(t, r)[0]["file_data"]) != "{}" {
		t.Errorf("after reset the batch still pending reads %s, want file_data {}", r.body)
	}
	clock.Advance(3 * time.Second)
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); len(available(t, r)) != 2 {
		t.Errorf("the batch kept its processing time across reset: %s", r.body)
	}
}
