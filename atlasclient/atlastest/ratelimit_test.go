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

func TestThrottleNext(t *testing.T) {
	srv := NewServer(t, Options{})
	tok := token(t, srv)
	batch := srv.CreateBatch("a")
	srv.ThrottleNext(EndpointExtracts, 2, 3*time.Second)
	srv.ThrottleNext(EndpointExtracts, 1, 1500*time.Millisecond)
	srv.ThrottleNext(EndpointExtracts, 1, 0)
	var got []string
	for range 5 {
		r, _ := extracts(t, srv, tok, "batch_id="+batch)
		got = append(got, http.StatusText(r.status)+" "+r.header.Get("Retry-After"))
		if r.status == http.StatusTooManyRequests && r.jsonMap(t)["error"] == nil {
			t.Errorf("429 without an error: %s", r.body)
		}
	}
	want := []string{"Too Many Requests 3", "Too Many Requests 3", "Too Many Requests 2", "Too Many Requests 1", "OK "}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}
	// Not for other endpoints.
	srv.ThrottleNext(EndpointExtracts, 1, time.Second)
	if r := upload(t, srv, tok, "b"); r.status != http.StatusCreated {
		t.Errorf("upload while extracts is throttled: %d", r.status)
	}
	// n <= 0 clears, as FailNext.
	srv.ThrottleNext(EndpointExtracts, 0, 0)
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != http.StatusOK {
		t.Errorf("after clearing: %d", r.status)
	}
}

func TestRateLimit(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now, RateLimits: map[string]int{EndpointExtracts: 2}})
	tok := token(t, srv)
	batch := srv.CreateBatch("a")
	status := func() (int, string) {
		r, _ := extracts(t, srv, tok, "batch_id="+batch)
		return r.status, r.header.Get("Retry-After")
	}
	for i := range 2 {
		if st, _ := status(); st != http.StatusOK {
			t.Fatalf("request %d within the limit: %d", i, st)
		}
	}
	clock.Advance(300 * time.Millisecond)
	if st, ra := status(); st != http.StatusTooManyRequests || ra != "1" {
		t.Fatalf("third request within a second: %d Retry-After %q, want 429 1", st, ra)
	}
	clock.Advance(699 * time.Millisecond)
	if st, _ := status(); st != http.StatusTooManyRequests {
		t.Errorf("999ms after the first: %d, want 429 (rejected requests do not count, the window is the admitted ones)", st)
	}
	clock.Advance(time.Millisecond)
	if st, _ := status(); st != http.StatusOK {
		t.Errorf("a second after the first: %d, want 200", st)
	}
	// Other endpoints are not limited.
	for range 3 {
		if r := upload(t, srv, tok, "b"); r.status != http.StatusCreated {
			t.Errorf("upload: %d", r.status)
		}
	}

	// Per client: requests of another client (here, without a token the
	// simulator signed) have their own window.
	if r, _ := extracts(t, srv, "not-a-token", "batch_id="+batch); r.status != http.StatusUnauthorized {
		t.Errorf("another client: %d, want 401 (admitted)", r.status)
	}

	// Lifted; Reset restores the configured limit.
	srv.SetRateLimit(EndpointExtracts, 0)
	for range 5 {
		if st, _ := status(); st != http.StatusOK {
			t.Fatalf("limit lifted: %d", st)
		}
	}
	srv.Reset()
	clock.Advance(time.Second)
	for i, want := range []int{200, 200, 429} {
		if st, _ := status(); st != want {
			t.Errorf("after Reset, request %d: %d, want %d", i, st, want)
		}
	}
}

func TestRateLimitAllEndpointsAndAuth(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now})
	srv.SetRateLimit("", 3)
	tok := token(t, srv)
	upload(t, srv, tok, "a")
	batch := srv.CreateBatch("b")
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != http.StatusOK {
		t.Fatalf("third request: %d", r.status)
	}
	if r := upload(t, srv, tok, "c"); r.status != http.StatusTooManyRequests {
		t.Errorf("fourth request, to any endpoint: %d, want 429", r.status)
	}
	if status, _ := authStatus(t, srv); status != http.StatusTooManyRequests {
		t.Errorf("authtoken of the same client: %d, want 429", status)
	}
	// authtoken's client is its Client-Id.
	r := do(t, srv, http.MethodPost, "/v1/docstream/authtoken", "", "Client-Id", "someone-else", "Client-Secret", "x")
	if r.status != http.StatusUnauthorized {
		t.Errorf("another Client-Id: %d, want 401", r.status)
	}
}

func TestRequestLogAndPeakRate(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now})
	tok := token(t, srv)
	batch := srv.CreateBatch("a")
	offsets := []time.Duration{0, 200 * time.Millisecond, 400 * time.Millisecond, 1500 * time.Millisecond, 1600 * time.Millisecond}
	for _, o := range offsets {
		clock.Set(testutil.Epoch.Add(time.Minute + o))
		extracts(t, srv, tok, "batch_id="+batch)
	}
	srv.FailNext(EndpointExtracts, 1, 503)
	clock.Set(testutil.Epoch.Add(time.Minute + 1700*time.Millisecond))
	extracts(t, srv, tok, "batch_id="+batch)
	offsets = append(offsets, 1700*time.Millisecond)

	log := srv.Requests(EndpointExtracts)
	var got []time.Duration
	for _, r := range log {
		got = append(got, r.Time.Sub(testutil.Epoch.Add(time.Minute)))
		if r.Client != DefaultClientID {
			t.Errorf("client = %q, want %q", r.Client, DefaultClientID)
		}
	}
	if !slices.Equal(got, offsets) {
		t.Errorf("request times %v, want %v (failed ones too)", got, offsets)
	}
	if n := srv.PeakRate(EndpointExtracts, "", time.Second); n != 3 {
		t.Errorf("PeakRate(1s) = %d, want 3", n)
	}
	if n := srv.PeakRate(EndpointExtracts, "", 0); n != 3 {
		t.Errorf("PeakRate(0) = %d, want 3 (a second)", n)
	}
	if n := srv.PeakRate(EndpointExtracts, "", 100*time.Millisecond); n != 1 {
		t.Errorf("PeakRate(100ms) = %d, want 1", n)
	}
	if n := srv.PeakRate(EndpointExtracts, "nobody", time.Second); n != 0 {
		t.Errorf("PeakRate of another client = %d", n)
	}
	if n := len(srv.Requests("")); n != 7 {
		t.Errorf("Requests(\"\") holds %d, want 7 (the token and six extracts)", n)
	}
	srv.Reset()
	if n := len(srv.Requests("")); n != 0 {
		t.Errorf("after Reset: %d requests", n)
	}
}

func TestRateControlEndpoints(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now})
	for _, path := range []string{
		"/_sim/throttle?endpoint=extracts",
		"/_sim/throttle?endpoint=bogus&n=1",
		"/_sim/throttle?endpoint=extracts&n=1&retry_after=0",
		"/_sim/rate-limit?endpoint=extracts",
		"/_sim/rate-limit?endpoint=extracts&per_second=-1",
		"/_sim/rate-limit?endpoint=bogus&per_second=1",
	} {
		if r := do(t, srv, http.MethodPost, path, ""); r.status != http.StatusBadRequest || r.jsonMap(t)["error"] == nil {
			t.Errorf("%s: %d %s, want 400", path, r.status, r.body)
		}
	}
	for _, path := range []string{"/_sim/requests?window_ms=0", "/_sim/requests?endpoint=bogus"} {
		if r := do(t, srv, http.MethodGet, path, ""); r.status != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", path, r.status)
		}
	}
	tok := token(t, srv)
	batch := srv.CreateBatch("a")

	if r := do(t, srv, http.MethodPost, "/_sim/throttle?endpoint=extracts&n=1&retry_after=7", ""); r.status != http.StatusOK {
		t.Fatal(r.status)
	}
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 429 || r.header.Get("Retry-After") != "7" {
		t.Errorf("after /_sim/throttle: %d %q", r.status, r.header.Get("Retry-After"))
	}
	if r := do(t, srv, http.MethodPost, "/_sim/rate-limit?endpoint=extracts&per_second=1", ""); r.status != http.StatusOK {
		t.Fatal(r.status)
	}
	for i, want := range []int{200, 429} {
		if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != want {
			t.Errorf("rate-limited request %d: %d, want %d", i, r.status, want)
		}
	}
	if r := do(t, srv, http.MethodPost, "/_sim/rate-limit?endpoint=extracts&per_second=0", ""); r.status != http.StatusOK {
		t.Fatal(r.status)
	}
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 200 {
		t.Errorf("limit lifted: %d", r.status)
	}

	r := do(t, srv, http.MethodGet, "/_sim/requests?endpoint=extracts&window_ms=1000", "")
	var got struct {
		Requests []RequestRecord `json:"requests"`
		Peak     int             `json:"peak"`
		WindowMS int64           `json:"window_ms"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("%s: %v", r.body, err)
	}
	if len(got.Requests) != 4 || got.Peak != 4 || got.WindowMS != 1000 || !got.Requests[0].Time.Equal(testutil.Epoch) || got.Requests[0].Client != DefaultClientID {
		t.Errorf("requests = %s", r.body)
	}
	if r := do(t, srv, http.MethodGet, "/_sim/requests?client=nobody", ""); string(r.body) != `{"peak":0,"requests":[],"window_ms":1000}`+"\n" {
		t.Errorf("another client's requests: %s", r.body)
	}
}
