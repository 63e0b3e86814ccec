package atlasclient

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// ctxRecorder is a transport that records a context value of each request
// and whether the request's context was already done when it was sent.
type ctxRecorder struct {
	key      any
	value    atomic.Value
	wasDone  atomic.Bool
	delegate http.RoundTripper
}

func (c *ctxRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	if v := r.Context().Value(c.key); v != nil {
		c.value.Store(v)
	}
	if r.Context().Err() != nil {
		c.wasDone.Store(true)
	}
	return c.delegate.RoundTrip(r)
}

// TestTokenFetchCarriesTriggerValues checks that the authtoken call of a
// refresh carries the values of the context of the call that started it
// (how a trace span reaches it), but not its cancellation: a caller that
// gives up does not spoil the refresh for the others.
func TestTokenFetchCarriesTriggerValues(t *testing.T) {
	type spanKey struct{}
	gate := newGate(t)
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		gate.wait(r)
		writeToken(w, "tok", 3600)
	}, nil)
	rec := &ctxRecorder{key: spanKey{}, delegate: http.DefaultTransport}
	s := newSource(t, fa, nil, func(o *TokenOptions) { o.HTTPClient = &http.Client{Transport: rec} })

	trigger, cancel := context.WithCancel(context.WithValue(context.Background(), spanKey{}, "request-span"))
	done := make(chan error, 1)
	go func() {
		_, err := s.Token(trigger)
		done <- err
	}()
	testutil.WaitFor(t, time.Second, "the authtoken call", func() bool { return fa.authCalls.Load() == 1 })
	cancel() // the first caller gives up
	if err := <-done; err == nil {
		t.Fatal("Token returned no error after its context was cancelled")
	}
	gate.open()
	tok, err := s.Token(context.Background())
	if err != nil || tok.Value != "tok" {
		t.Fatalf("the refresh did not survive its first caller: %v, %v", tok, err)
	}
	if got := rec.value.Load(); got != "request-span" {
		t.Errorf("the authtoken call carried %v, want the trigger's value", got)
	}
	if rec.wasDone.Load() {
		t.Error("the authtoken call was sent with a cancelled context")
	}
	if n := fa.authCalls.Load(); n != 1 {
		t.Errorf("%d authtoken calls, want 1", n)
	}
}

// TestInvalidateThenAtlasReissuesTheSameToken: an authtoken endpoint may
// answer the token it already issued while that token lives. After a 401
// and Invalidate, the fresh answer of authtoken is the token to use, even
// if it is the same value: only a token read from a shared store is
// refused for being the rejected one. (Refusing a fetched token left the
// gateway without a token until Atlas issued another one.)
func TestInvalidateThenAtlasReissuesTheSameToken(t *testing.T) {
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		writeToken(w, "same-token", 3600)
	}, nil)
	s := newSource(t, fa, nil, nil)
	tok, err := s.Token(context.Background())
	if err != nil || tok.Value != "same-token" {
		t.Fatalf("first token: %v, %v", tok, err)
	}
	s.Invalidate(tok.Value)
	tok, err = s.Token(context.Background())
	if err != nil || tok.Value != "same-token" {
		t.Fatalf("after Invalidate, authtoken answered the same token again: got %v, %v", tok, err)
	}
	if n := fa.authCalls.Load(); n != 2 {
		t.Errorf("%d authtoken calls, want 2", n)
	}
}
