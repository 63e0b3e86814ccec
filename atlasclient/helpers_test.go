package atlasclient

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

const (
	testClientID = "client-1"
	testSecret   = "s3cr3t-DO-NOT-LEAK"
	authPath     = "/v1/docstream/authtoken"
)

// gate blocks handlers until opened; opening is idempotent.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{ch: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// wait blocks until g is open or r is canceled (as when its client closes).
func (g *gate) wait(r *http.Request) {
	select {
	case <-g.ch:
	case <-r.Context().Done():
	}
}

// authFunc answers the n-th authtoken call (n starts at 1).
type authFunc func(w http.ResponseWriter, r *http.Request, n int64)

// fakeAtlas is an httptest server playing authtoken and, optionally, the
// rest of the API. It counts calls and the most authtoken calls ever in
// flight at once.
type fakeAtlas struct {
	*httptest.Server
	authCalls   atomic.Int64
	apiCalls    atomic.Int64
	inflight    atomic.Int64
	maxInflight atomic.Int64
}

func newFakeAtlas(t *testing.T, auth authFunc, api http.HandlerFunc) *fakeAtlas {
	t.Helper()
	if auth == nil {
		auth = okToken(3600)
	}
	fa := &fakeAtlas{}
	fa.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != authPath {
			fa.apiCalls.Add(1)
			if api == nil {
				http.NotFound(w, r)
				return
			}
			api(w, r)
			return
		}
		n := fa.authCalls.Add(1)
		cur := fa.inflight.Add(1)
		defer fa.inflight.Add(-1)
		for {
			m := fa.maxInflight.Load()
			if cur <= m || fa.maxInflight.CompareAndSwap(m, cur) {
				break
			}
		}
		auth(w, r, n)
	}))
	t.Cleanup(fa.Close)
	return fa
}

// okToken answers tok-<n> with the given expires_in.
func okToken(expiresIn int) authFunc {
	return func(w http.ResponseWriter, r *http.Request, n int64) {
		writeToken(w, fmt.Sprintf("tok-%d", n), expiresIn)
	}
}

func writeToken(w http.ResponseWriter, value string, expiresIn int) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d}`, value, expiresIn)
}

// newSource returns a source for fa with small backoffs; edit may change
// the options.
func newSource(t *testing.T, fa *fakeAtlas, clock *testutil.Clock, edit func(*TokenOptions)) *TokenSource {
	t.Helper()
	opts := TokenOptions{
		Endpoint:     fa.URL + "/",
		ClientID:     testClientID,
		ClientSecret: testSecret,
		MinBackoff:   time.Millisecond,
		MaxBackoff:   5 * time.Millisecond,
	}
	if clock != nil {
		opts.Now = clock.Now
	}
	if edit != nil {
		edit(&opts)
	}
	s, err := NewTokenSource(opts)
	if err != nil {
		t.Fatalf("NewTokenSource: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// waitRefresh waits for the refresh in flight, if any, to end.
func waitRefresh(t *testing.T, s *TokenSource) {
	t.Helper()
	s.mu.Lock()
	c := s.inflight
	s.mu.Unlock()
	if c == nil {
		return
	}
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("refresh did not end")
	}
}

func refreshing(s *TokenSource) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight != nil
}
