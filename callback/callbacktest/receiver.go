// Package callbacktest holds what the tests of the callback route share:
// an app that receives callbacks the way a receiver must under
// at-least-once delivery, and polling helpers.
package callbacktest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// Receiver is the app behind a durable callback route: it answers
// with the status it is set to, and processes each X-Atlas-Callback-Id
// once, as a receiver must under at-least-once delivery. While gated, it
// holds every request until ungated.
type Receiver struct {
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

// NewReceiver starts a receiver answering 200, closed at the end of the
// test.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	rc := &Receiver{
		status:  http.StatusOK,
		taken:   make(map[string]int),
		bodies:  make(map[string][]byte),
		headers: make(map[string]http.Header),
	}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		rc.SetGate(false)
		rc.Close()
	})
	return rc
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
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

// SetStatus sets the status of the next answers.
func (rc *Receiver) SetStatus(code int) {
	rc.mu.Lock()
	rc.status = code
	rc.mu.Unlock()
}

// SetGate holds (true) or releases (false) the requests.
func (rc *Receiver) SetGate(hold bool) {
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

// Delivered returns the ids taken, in the order they were first taken.
func (rc *Receiver) Delivered() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.order)
}

// Takes returns how many times id was answered 2xx.
func (rc *Receiver) Takes(id string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.taken[id]
}

// RequestCount returns the number of requests answered.
func (rc *Receiver) RequestCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests
}

// WaitDelivered waits until n distinct ids are taken.
func (rc *Receiver) WaitDelivered(t testing.TB, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := rc.Delivered()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d callbacks delivered after %s", len(got), n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Eventually polls cond every 10ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Body returns the first body taken for id, nil if none was.
func (rc *Receiver) Body(id string) []byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.bodies[id]
}

// Header returns the headers of the first take of id, nil if none was.
func (rc *Receiver) Header(id string) http.Header {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.headers[id]
}
