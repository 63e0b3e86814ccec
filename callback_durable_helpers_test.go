package caddyatlas

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// dedupReceiver is the app behind a durable callback route: it answers
// with the status it is set to, and processes each X-Atlas-Callback-Id
// once, as a receiver must under at-least-once delivery. While gated, it
// holds every request until ungated.
type dedupReceiver struct {
	*httptest.Server

	mu       sync.Mutex
	status   int
	gate     chan struct{}
	requests int
	order    []string               // ids in the order they were first taken
	taken    map[string]int         // 2xx answers per id, duplicates included
	bodies   map[string][]byte      // first body taken per id
	headers  map[string]http.Header // headers of the first take per id
	attempts []string               // X-Atlas-Attempt of every request
}

func newDedupReceiver(t testing.TB) *dedupReceiver {
	t.Helper()
	rc := &dedupReceiver{
		status:  http.StatusOK,
		taken:   make(map[string]int),
		bodies:  make(map[string][]byte),
		headers: make(map[string]http.Header),
	}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		rc.setGate(false)
		rc.Close()
	})
	return rc
}

func (rc *dedupReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	rc.mu.Lock()
	gate := rc.gate
	rc.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	id := r.Header.Get("X-Atlas-Callback-Id")
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	rc.attempts = append(rc.attempts, r.Header.Get("X-Atlas-Attempt"))
	status := rc.status
	if status >= 200 && status < 300 {
		if rc.taken[id] == 0 {
			rc.order = append(rc.order, id)
			rc.bodies[id] = body
			rc.headers[id] = r.Header.Clone()
		}
		rc.taken[id]++
	}
	w.WriteHeader(status)
}

// setStatus sets the status of the next answers.
func (rc *dedupReceiver) setStatus(code int) {
	rc.mu.Lock()
	rc.status = code
	rc.mu.Unlock()
}

// setGate holds (true) or releases (false) the requests.
func (rc *dedupReceiver) setGate(hold bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case hold && rc.gate == nil:
		rc.gate = make(chan struct{})
	case !hold && rc.gate != nil:
		close(rc.gate)
		rc.gate = nil
	}
}

// delivered returns the ids taken, in the order they were first taken.
func (rc *dedupReceiver) delivered() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.order)
}

// takes returns how many times id was answered 2xx.
func (rc *dedupReceiver) takes(id string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.taken[id]
}

// requestCount returns the number of requests answered.
func (rc *dedupReceiver) requestCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests
}

// waitDelivered waits until n distinct ids are taken.
func (rc *dedupReceiver) waitDelivered(t testing.TB, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := rc.delivered()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d callbacks delivered after %s", len(got), n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
