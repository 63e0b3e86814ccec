package atlastest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func authStatus(t *testing.T, srv *Server) (int, map[string]any) {
	t.Helper()
	r := do(t, srv, http.MethodPost, "/v1/docstream/authtoken", "", "Client-Id", DefaultClientID, "Client-Secret", DefaultClientSecret)
	return r.status, r.jsonMap(t)
}

func TestFailAuth(t *testing.T) {
	srv := NewServer(t, Options{})
	srv.FailAuth(2, 503)
	for i := 0; i < 2; i++ {
		status, body := authStatus(t, srv)
		if status != 503 || body["error"] == nil {
			t.Fatalf("call %d: %d %v, want 503 with error", i, status, body)
		}
	}
	if status, _ := authStatus(t, srv); status != 200 {
		t.Fatalf("third call: %d, want 200", status)
	}
	if got := srv.Calls(EndpointAuthToken); got != 3 {
		t.Errorf("Calls(authtoken) = %d, want 3 (failed calls count)", got)
	}

	srv.FailAuth(1, 401)
	status, body := authStatus(t, srv)
	if diff := cmp.Diff(map[string]any{"error_code": "401", "error_message": "Invalid client credentials"}, body); status != 401 || diff != "" {
		t.Errorf("injected 401: %d, diff %s", status, diff)
	}

	srv.FailAuth(1, 0)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/docstream/authtoken", nil)
	req.Header.Set("Client-Id", DefaultClientID)
	req.Header.Set("Client-Secret", DefaultClientSecret)
	if resp, err := srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("status 0: got a %d response, want a connection error", resp.StatusCode)
	}
	if status, _ := authStatus(t, srv); status != 200 {
		t.Fatalf("after the reset: %d, want 200", status)
	}
}

func TestFailNext(t *testing.T) {
	srv := NewServer(t, Options{})
	tok := token(t, srv)
	batch := srv.CreateBatch("a")

	// Queued per endpoint, in order; the endpoint's own queue before "".
	srv.FailNext(EndpointExtracts, 1, 500)
	srv.FailNext(EndpointExtracts, 2, 429)
	srv.FailNext("", 1, 502)
	var got []int
	for i := 0; i < 5; i++ {
		r, _ := extracts(t, srv, tok, "batch_id="+batch)
		got = append(got, r.status)
	}
	if diff := cmp.Diff([]int{500, 429, 429, 502, 200}, got); diff != "" {
		t.Errorf("extracts statuses (-want +got):\n%s", diff)
	}

	// "" applies to any endpoint.
	srv.FailNext("", 1, 500)
	if r := upload(t, srv, tok, "x"); r.status != 500 {
		t.Errorf("multiupload under FailNext(\"\"): %d, want 500", r.status)
	}

	// 401 elsewhere than authtoken is the token error.
	srv.FailNext(EndpointMultiUpload, 1, 401)
	r := upload(t, srv, tok, "x")
	if diff := cmp.Diff(map[string]any{"error": "Invalid or expired token"}, r.jsonMap(t)); r.status != 401 || diff != "" {
		t.Errorf("injected 401 on multiupload: %d %s", r.status, r.body)
	}

	// n <= 0 clears.
	srv.FailNext(EndpointExtracts, 5, 500)
	srv.FailNext(EndpointExtracts, 0, 0)
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 200 {
		t.Errorf("after clearing: %d, want 200", r.status)
	}

	// Reset forgets pending faults.
	srv.FailNext("", 5, 500)
	srv.Reset()
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 200 {
		t.Errorf("after Reset: %d, want 200", r.status)
	}
}

func TestDelayNext(t *testing.T) {
	srv := NewServer(t, Options{})
	tok := token(t, srv)
	batch := srv.CreateBatch("a")

	srv.DelayNext(EndpointExtracts, 1, 150*time.Millisecond)
	start := time.Now()
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 200 {
		t.Fatalf("delayed call: %d", r.status)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("delayed call took %v, want >= 150ms", el)
	}
	srv.mu.Lock()
	pending := len(srv.delays[EndpointExtracts])
	srv.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d delays still pending after the delayed call", pending)
	}

	// A delayed fault: the wait comes first.
	srv.DelayNext(EndpointAuthToken, 1, 100*time.Millisecond)
	srv.FailAuth(1, 503)
	start = time.Now()
	if status, _ := authStatus(t, srv); status != 503 || time.Since(start) < 100*time.Millisecond {
		t.Errorf("delayed fault: %d after %v", status, time.Since(start))
	}

	// The client giving up ends the wait.
	srv.DelayNext("", 1, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/docstream/extracts?batch_id="+batch, nil)
	req.Header.Set("Token", tok)
	start = time.Now()
	_, err := srv.Client().Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled delayed call: err = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("cancelled call took %v", el)
	}
}

func TestCloseAbortsDelays(t *testing.T) {
	srv := NewServer(t, Options{})
	srv.DelayNext("", 1, time.Minute)
	done := make(chan int)
	go func() {
		resp, err := http.Post(srv.URL+"/v1/docstream/authtoken", "", nil)
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	for srv.Calls(EndpointAuthToken) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	srv.Close()
	if status := <-done; status != 503 {
		t.Errorf("pending delayed call answered %d, want 503", status)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Close took %v", el)
	}
}

func TestCountersAndHeaders(t *testing.T) {
	srv := NewServer(t, Options{})
	tok := token(t, srv)
	upload(t, srv, tok, "a")
	r := do(t, srv, http.MethodGet, "/v1/docstream/extracts", "", "Token", tok, "X-Request-Id", "req-7")
	if r.status != 400 {
		t.Fatalf("extracts without batch_id: %d", r.status)
	}
	do(t, srv, http.MethodGet, "/v1/docstream/extracts", "", "Token", tok, "X-Request-Id", "req-8")

	got := map[string]int{}
	for _, e := range []string{EndpointAuthToken, EndpointMultiUpload, EndpointExtracts, ""} {
		got[e] = srv.Calls(e)
	}
	if diff := cmp.Diff(map[string]int{"authtoken": 1, "multiupload": 1, "extracts": 2, "": 4}, got); diff != "" {
		t.Errorf("Calls (-want +got):\n%s", diff)
	}
	if h := srv.LastHeaders(EndpointExtracts); h.Get("X-Request-Id") != "req-8" || h.Get("Token") != tok {
		t.Errorf("LastHeaders(extracts) = %v", h)
	}
	if h := srv.LastHeaders(EndpointAuthToken); h.Get("Client-Secret") != DefaultClientSecret {
		t.Errorf("LastHeaders(authtoken) = %v", h)
	}
	h := srv.LastHeaders(EndpointExtracts)
	h.Set("X-Request-Id", "mutated")
	if srv.LastHeaders(EndpointExtracts).Get("X-Request-Id") != "req-8" {
		t.Error("LastHeaders returned the simulator's own map")
	}

	srv.ResetCounters()
	if n := srv.Calls(""); n != 0 {
		t.Errorf("after ResetCounters: Calls = %d", n)
	}
	if srv.LastHeaders(EndpointExtracts) == nil {
		t.Error("ResetCounters forgot headers; only Reset should")
	}
	srv.Reset()
	if srv.LastHeaders(EndpointExtracts) != nil {
		t.Error("Reset kept headers")
	}
}

// TestConcurrentUse is meant for -race.
func TestConcurrentUse(t *testing.T) {
	srv := NewServer(t, Options{})
	client := srv.Client()
	call := func(method, path, body string, headers ...string) (int, []byte, error) {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				status, body, err := call(http.MethodPost, "/v1/docstream/authtoken", "", "Client-Id", DefaultClientID, "Client-Secret", DefaultClientSecret)
				var tok struct {
					AccessToken string `json:"access_token"`
				}
				if err != nil || status != 200 || json.Unmarshal(body, &tok) != nil {
					t.Errorf("authtoken: %d %s %v", status, body, err)
					return
				}
				up := fmt.Sprintf(`{"product_type":"LOAN_APP","file_urls":[{"file_url":"u","document_id":"g%d-%d-pan"}]}`, g, i)
				if status, body, err := call(http.MethodPost, "/v1/docstream/multiupload", up, "Token", tok.AccessToken, "Content-Type", "application/json"); err != nil || status != 201 {
					t.Errorf("multiupload: %d %s %v", status, body, err)
					return
				}
				b := srv.CreateBatch("x", "y")
				if status, body, err := call(http.MethodGet, "/v1/docstream/extracts?batch_id="+b, "", "Token", tok.AccessToken); err != nil || status != 200 {
					t.Errorf("extracts: %d %s %v", status, body, err)
					return
				}
				srv.FailNext(EndpointExtracts, 0, 0)
				srv.DelayNext(EndpointExtracts, 0, 0)
				srv.SetTokenLifetime(time.Hour)
				srv.SetDocumentTypeForm(DocumentTypeObject)
				srv.SetUploadResponseShape(UploadResponseArray)
				_ = srv.Calls("")
				_ = srv.LastHeaders(EndpointMultiUpload)
				_ = srv.Deliveries()
				_, _ = srv.BatchPayload(b)
			}
		}()
	}
	wg.Wait()
}

func TestFailAfterAndLastQuery(t *testing.T) {
	srv := NewServer(t, Options{})
	batch := srv.CreateBatch("pan-1")
	tok := token(t, srv)
	srv.FailAfter(EndpointExtracts, 2, 1, http.StatusBadGateway)
	var got []int
	for i := range 4 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/docstream/extracts?batch_id="+batch+"&page="+strconv.Itoa(i+1), nil)
		req.Header.Set("Token", tok)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got = append(got, resp.StatusCode)
	}
	if want := []int{200, 200, 502, 200}; !slices.Equal(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	if q := srv.LastQuery(EndpointExtracts); q.Get("page") != "4" || q.Get("batch_id") != batch {
		t.Errorf("LastQuery = %v", q)
	}
}

// TestBatchesForgottenLeastRecentlyUsed: a batch still being read survives
// any number of newer uploads.
func TestBatchesForgottenLeastRecentlyUsed(t *testing.T) {
	s := New(Options{})
	kept := s.CreateBatch("pan-1")
	first := s.CreateBatch("pan-2")
	for i := range maxBatches {
		if i%1000 == 0 {
			if _, ok := s.batch(kept); !ok {
				t.Fatalf("the batch in use was forgotten after %d uploads", i)
			}
		}
		s.CreateBatch("doc")
	}
	if _, ok := s.batch(kept); !ok {
		t.Error("the batch in use was forgotten")
	}
	if _, ok := s.batch(first); ok {
		t.Error("the unused batch was kept past the limit")
	}
}
