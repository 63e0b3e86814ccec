package atlastest

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// bulkToken obtains a token of the bulk service.
func bulkToken(t *testing.T, srv *Server) string {
	t.Helper()
	r := do(t, srv, http.MethodPost, "/v1/bulk/authtoken", "", "Client-Id", DefaultClientID, "Client-Secret", DefaultClientSecret)
	if r.status != http.StatusOK {
		t.Fatalf("bulk authtoken: %d %s", r.status, r.body)
	}
	tok, _ := r.jsonMap(t)["access_token"].(string)
	if tok == "" || r.jsonMap(t)["expires_in"] != float64(3600) {
		t.Fatalf("bulk authtoken: %s", r.body)
	}
	return tok
}

func bulkUpload(t *testing.T, srv *Server, tok string, ids ...string) response {
	t.Helper()
	files := []map[string]string{}
	for _, id := range ids {
		files = append(files, map[string]string{"file_url": "https://bucket.example/" + id, "document_id": id})
	}
	b, _ := json.Marshal(map[string]any{"product_type": "LOAN_APP", "file_urls": files})
	return do(t, srv, http.MethodPost, "/v1/bulk/multiupload", string(b), "Token", tok, "Content-Type", "application/json")
}

func bulkExtracts(t *testing.T, srv *Server, tok, query string) (response, page) {
	t.Helper()
	r := do(t, srv, http.MethodGet, "/v1/bulk/extracts?"+query, "", "Token", tok)
	var p page
	if r.status == http.StatusOK {
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatalf("bulk extracts body %s: %v", r.body, err)
		}
	}
	return r, p
}

func TestBulkService(t *testing.T) {
	srv := NewServer(t, Options{})
	tok := bulkToken(t, srv)
	ids := make([]string, 60)
	for i := range ids {
		ids[i] = "bulk-pan-" + string(rune('A'+i%26)) + string(rune('a'+i/26))
	}
	r := bulkUpload(t, srv, tok, ids...)
	if r.status != http.StatusCreated {
		t.Fatalf("bulk multiupload: %d %s", r.status, r.body)
	}
	var up []uploadResult
	if err := json.Unmarshal(r.body, &up); err != nil || len(up) != 60 || up[0].FileUUID == "" || up[59].DocumentID != ids[59] {
		t.Fatalf("bulk multiupload answer %s: %v", r.body, err)
	}
	batch := up[0].BatchID

	r, p := bulkExtracts(t, srv, tok, "batch_id="+batch+"&per_page=80")
	if r.status != http.StatusOK || len(p.Data) != 50 || p.PerPage != 50 || p.TotalPages != 2 || p.TotalItems != 60 || !p.HasNext {
		t.Fatalf("bulk extracts, per_page 80: %d, %d items, %+v", r.status, len(p.Data), p)
	}
	var fd map[string]json.RawMessage
	_ = json.Unmarshal(srv.FileData(ids[0]), &fd)
	if diff := cmp.Diff(fd, p.Data[0].FileData); p.Data[0].DocumentID != ids[0] || diff != "" {
		t.Errorf("bulk file_data differs from FileData:\n%s", diff)
	}
	if r, p := bulkExtracts(t, srv, tok, "batch_id="+batch+"&page=2"); r.status != http.StatusOK || len(p.Data) != 10 || !p.HasPrev {
		t.Errorf("page 2: %d %+v", r.status, p)
	}

	// The same errors as docstream's.
	for _, tt := range []struct {
		method, path string
		headers      []string
		status       int
	}{
		{http.MethodPost, "/v1/bulk/authtoken", nil, 400},
		{http.MethodPost, "/v1/bulk/authtoken", []string{"Client-Id", "x", "Client-Secret", "y"}, 401},
		{http.MethodGet, "/v1/bulk/authtoken", nil, 405},
		{http.MethodPost, "/v1/bulk/extracts", nil, 405},
		{http.MethodGet, "/v1/bulk/extracts", []string{"Token", tok}, 400},
		{http.MethodGet, "/v1/bulk/extracts?batch_id=BATCH-nope", []string{"Token", tok}, 404},
		{http.MethodGet, "/v1/bulk/extracts?batch_id=" + batch, nil, 401},
		{http.MethodGet, "/v1/bulk/nope", nil, 404},
		{http.MethodGet, "/v1/bulk/", nil, 404},
	} {
		if r := do(t, srv, tt.method, tt.path, "", tt.headers...); r.status != tt.status || r.jsonMap(t) == nil {
			t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, r.status, r.body, tt.status)
		}
	}
}

// TestBulkSeparateFromDocstream: tokens and batches of one service are
// unknown to the other.
func TestBulkSeparateFromDocstream(t *testing.T) {
	srv := NewServer(t, Options{OneLiveToken: true})
	docTok := token(t, srv)
	bulkTok := bulkToken(t, srv) // with one live token per client, per service
	docBatch := srv.CreateBatch("a")
	bulkBatch := srv.CreateBulkBatch("b")

	if r, _ := extracts(t, srv, docTok, "batch_id="+docBatch); r.status != http.StatusOK {
		t.Errorf("docstream token after a bulk token: %d", r.status)
	}
	if r, _ := bulkExtracts(t, srv, bulkTok, "batch_id="+bulkBatch); r.status != http.StatusOK {
		t.Errorf("bulk token at bulk: %d", r.status)
	}
	if r, _ := bulkExtracts(t, srv, docTok, "batch_id="+bulkBatch); r.status != http.StatusUnauthorized {
		t.Errorf("docstream token at bulk: %d, want 401", r.status)
	}
	if r, _ := extracts(t, srv, bulkTok, "batch_id="+docBatch); r.status != http.StatusUnauthorized {
		t.Errorf("bulk token at docstream: %d, want 401", r.status)
	}
	if r := upload(t, srv, bulkTok, "c"); r.status != http.StatusUnauthorized {
		t.Errorf("bulk token at docstream multiupload: %d, want 401", r.status)
	}
	if r, _ := bulkExtracts(t, srv, bulkTok, "batch_id="+docBatch); r.status != http.StatusNotFound {
		t.Errorf("docstream batch at bulk: %d, want 404", r.status)
	}
	if r, _ := extracts(t, srv, docTok, "batch_id="+bulkBatch); r.status != http.StatusNotFound {
		t.Errorf("bulk batch at docstream: %d, want 404", r.status)
	}
	srv.RevokeAll()
	if r, _ := bulkExtracts(t, srv, bulkTok, "batch_id="+bulkBatch); r.status != http.StatusUnauthorized {
		t.Errorf("bulk token after RevokeAll: %d, want 401", r.status)
	}
}

func TestBulkNoCallbacksButProcessing(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	k := newSink(t)
	srv := NewServer(t, Options{Now: clock.Now, ProcessingDelay: time.Second, AutoCallback: &AutoCallback{Target: k.target()}})
	tok := bulkToken(t, srv)
	r := bulkUpload(t, srv, tok, "x-pan", "y-aadhaar")
	var up []uploadResult
	_ = json.Unmarshal(r.body, &up)
	srv.CreateBulkBatch("z")
	if c := srv.CallbackCounts(); c.Pending != 0 {
		t.Fatalf("bulk batches scheduled %d callbacks", c.Pending)
	}
	if r, _ := bulkExtracts(t, srv, tok, "batch_id="+up[0].BatchID); len(available(t, r)) != 0 {
		t.Errorf("bulk documents done before their delay: %s", r.body)
	}
	clock.Advance(time.Second)
	srv.FlushCallbacks()
	if r, _ := bulkExtracts(t, srv, tok, "batch_id="+up[0].BatchID); len(available(t, r)) != 2 {
		t.Errorf("bulk documents after their delay: %s", r.body)
	}
	if n := len(srv.Callbacks()); n != 0 || len(k.received()) != 0 {
		t.Errorf("%d callbacks for bulk batches", n)
	}
	srv.CreateBatch("docstream-gets-one")
	if c := srv.CallbackCounts(); c.Pending != 1 {
		t.Errorf("a docstream batch alongside: %d pending, want 1", c.Pending)
	}
}

func TestBulkKnobsAndCounters(t *testing.T) {
	srv := NewServer(t, Options{})
	tok := bulkToken(t, srv)
	batch := srv.CreateBulkBatch("a")
	srv.FailNext(EndpointBulkExtracts, 1, 503)
	srv.FailNext(EndpointBulkAuthToken, 1, 401)
	if r, _ := extracts(t, srv, token(t, srv), "batch_id="+srv.CreateBatch("d")); r.status != http.StatusOK {
		t.Errorf("docstream extracts under a bulk fault: %d", r.status)
	}
	if r, _ := bulkExtracts(t, srv, tok, "batch_id="+batch); r.status != 503 {
		t.Errorf("bulk extracts: %d, want 503", r.status)
	}
	r := do(t, srv, http.MethodPost, "/v1/bulk/authtoken", "", "Client-Id", DefaultClientID, "Client-Secret", DefaultClientSecret)
	if r.status != 401 || r.jsonMap(t)["error_code"] != "401" {
		t.Errorf("injected 401 on bulk authtoken: %d %s", r.status, r.body)
	}
	srv.SetRateLimit(EndpointBulkExtracts, 1)
	bulkExtracts(t, srv, tok, "batch_id="+batch)
	if r, _ := bulkExtracts(t, srv, tok, "batch_id="+batch); r.status != http.StatusTooManyRequests {
		t.Errorf("bulk extracts over the rate: %d", r.status)
	}
	if n := srv.PeakRate(EndpointBulkExtracts, DefaultClientID, time.Minute); n != 3 {
		t.Errorf("PeakRate(bulk/extracts) = %d, want 3", n)
	}
	if h := srv.LastHeaders(EndpointBulkExtracts); h.Get("Token") != tok {
		t.Errorf("LastHeaders(bulk/extracts) = %v", h)
	}

	want := map[string]int{"bulk/authtoken": 2, "bulk/multiupload": 0, "bulk/extracts": 3}
	for e, n := range want {
		if got := srv.Calls(e); got != n {
			t.Errorf("Calls(%s) = %d, want %d", e, got, n)
		}
	}
	if got := srv.Calls(""); got != 7 {
		t.Errorf("Calls(\"\") = %d, want 7 (bulk's 5 and docstream's 2)", got)
	}
	r = do(t, srv, http.MethodGet, "/_sim/counters?service=bulk", "")
	var m map[string]int
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("/_sim/counters?service=bulk (-want +got):\n%s", diff)
	}
	if r := do(t, srv, http.MethodGet, "/_sim/counters?service=other", ""); r.status != http.StatusBadRequest {
		t.Errorf("counters of an unknown service: %d", r.status)
	}
	if r := do(t, srv, http.MethodPost, "/_sim/fail?endpoint=bulk/multiupload&n=1&status=500", ""); r.status != http.StatusOK {
		t.Errorf("/_sim/fail on a bulk endpoint: %d %s", r.status, r.body)
	}
	if r := bulkUpload(t, srv, tok, "b"); r.status != 500 {
		t.Errorf("bulk multiupload after /_sim/fail: %d", r.status)
	}
}
