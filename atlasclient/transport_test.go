package atlasclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// tokenLog records the Token header of each API request.
type tokenLog struct {
	mu     sync.Mutex
	tokens []string
}

func (l *tokenLog) add(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tokens = append(l.tokens, strings.Join(r.Header.Values("Token"), ","))
}

func (l *tokenLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.tokens...)
}

func unauthorized(w http.ResponseWriter) {
	w.WriteHeader(http.StatusUnauthorized)
	io.WriteString(w, `{"error": "Invalid or expired token"}`)
}

func TestTransportReplaysOnlyOnce(t *testing.T) {
	var log tokenLog
	fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		unauthorized(w)
	})
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)
	var replays atomic.Int64
	hc := &http.Client{Transport: &Transport{Source: s, OnReplay: func() { replays.Add(1) }}}

	resp, err := hc.Get(fa.URL + "/v1/docstream/extracts?batch_id=B")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "Invalid or expired token") {
		t.Errorf("response = %d %q, want the second 401 with its body", resp.StatusCode, body)
	}
	if got := strings.Join(log.get(), " "); got != "tok-1 tok-2" {
		t.Errorf("upstream requests carried %q, want tok-1 then tok-2", got)
	}
	if n := fa.authCalls.Load(); n != 2 {
		t.Errorf("authtoken calls = %d, want 2", n)
	}
	if n := replays.Load(); n != 1 {
		t.Errorf("OnReplay calls = %d, want 1", n)
	}
}

func TestTransportReplayWithBodySucceeds(t *testing.T) {
	var log tokenLog
	var mu sync.Mutex
	var bodies []string
	fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		if r.Header.Get("Token") == "tok-1" {
			unauthorized(w)
			return
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"batch_id":"BATCH-1"}`)
	})
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)
	c, err := NewClient(fa.URL, &http.Client{Transport: &Transport{Source: s}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Upload(context.Background(), "LOAN_APP", []FileURL{{FileURL: "https://s3/x?a=1&b=2", DocumentID: "d1"}})
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if res.BatchID != "BATCH-1" {
		t.Errorf("batch id = %q", res.BatchID)
	}
	if got := strings.Join(log.get(), " "); got != "tok-1 tok-2" {
		t.Errorf("upstream requests carried %q, want tok-1 then tok-2", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || bodies[0] != bodies[1] || bodies[1] == "" {
		t.Errorf("bodies = %q, want the same body twice", bodies)
	}
}

func TestTransportNonReplayableBody(t *testing.T) {
	fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		unauthorized(w)
	})
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)
	var replays atomic.Int64
	hc := &http.Client{Transport: &Transport{Source: s, OnReplay: func() { replays.Add(1) }}}

	// A body of unknown type gets no GetBody: it cannot be replayed.
	req, _ := http.NewRequest(http.MethodPost, fa.URL+"/v1/docstream/multiupload", io.NopCloser(strings.NewReader(`{}`)))
	if req.GetBody != nil {
		t.Fatal("test request has GetBody")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status = %d, want 401", resp.StatusCode)
	}
	if a, u, r := fa.apiCalls.Load(), fa.authCalls.Load(), replays.Load(); a != 1 || u != 1 || r != 0 {
		t.Errorf("api calls %d, authtoken calls %d, replays %d; want 1, 1, 0", a, u, r)
	}
}

func TestTransportNoReplayOnOtherStatus(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusInternalServerError, http.StatusBadRequest} {
		fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
		})
		s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)
		resp, err := (&http.Client{Transport: &Transport{Source: s}}).Get(fa.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != status || fa.apiCalls.Load() != 1 || fa.authCalls.Load() != 1 {
			t.Errorf("%d: got %d after %d api and %d authtoken calls; want 1 and 1",
				status, resp.StatusCode, fa.apiCalls.Load(), fa.authCalls.Load())
		}
	}
}

func TestTransportReplacesCallerCredentials(t *testing.T) {
	tests := []struct {
		name   string
		header string // Transport.Header
		sent   string // the header the server must see
	}{
		{"default", "", "Token"},
		{"custom", "x-atlas-token", "X-Atlas-Token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got http.Header
			fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				got = r.Header.Clone()
				mu.Unlock()
			})
			s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)
			hc := &http.Client{Transport: &Transport{Source: s, Header: tt.header}}

			req, _ := http.NewRequest(http.MethodGet, fa.URL+"/x", nil)
			req.Header.Set("Authorization", "Bearer smuggled")
			req.Header["authorization"] = []string{"Basic smuggled"}
			req.Header.Set(tt.sent, "smuggled")
			req.Header[strings.ToLower(tt.sent)] = []string{"smuggled"}
			req.Header[strings.ToUpper(tt.sent)] = []string{"smuggled"}
			req.Header.Set("X-Other", "kept")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()

			if v := got.Values(tt.sent); len(v) != 1 || v[0] != "tok-1" {
				t.Errorf("%s = %q, want exactly [tok-1]", tt.sent, v)
			}
			if v := got.Values("Authorization"); len(v) != 0 {
				t.Errorf("Authorization = %q, want none", v)
			}
			if got.Get("X-Other") != "kept" {
				t.Error("an unrelated header was dropped")
			}
			if req.Header.Get("Authorization") != "Bearer smuggled" {
				t.Error("the caller's request was modified")
			}
		})
	}
}

func TestTransportTokenError(t *testing.T) {
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		http.Error(w, "invalid credentials", http.StatusUnauthorized)
	}, func(w http.ResponseWriter, r *http.Request) {})
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)
	c, _ := NewClient(fa.URL, &http.Client{Transport: &Transport{Source: s}})

	_, err := c.Extracts(context.Background(), "B", 0, 0)
	var ce *CredentialsError
	if !errors.As(err, &ce) || ce.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Extracts: %v, want a *CredentialsError", err)
	}
	if strings.Contains(err.Error(), testSecret) {
		t.Errorf("error leaks the secret: %v", err)
	}
	if n := fa.apiCalls.Load(); n != 0 {
		t.Errorf("api calls = %d, want 0: nothing is sent without a token", n)
	}
}

func TestTransportConcurrent401sFetchOnce(t *testing.T) {
	fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Token") == "tok-1" {
			unauthorized(w)
		}
	})
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)
	getTokens(t, s, 1) // every request starts with tok-1
	hc := &http.Client{Transport: &Transport{Source: s}}

	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			resp, err := hc.Get(fa.URL + "/x")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if n := fa.authCalls.Load(); n != 2 {
		t.Errorf("authtoken calls = %d, want 2", n)
	}
}

func TestTransportWithoutSource(t *testing.T) {
	_, err := (&Transport{}).RoundTrip(httpRequest(t))
	if err == nil {
		t.Fatal("RoundTrip without a source succeeded")
	}
}

func httpRequest(t *testing.T) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestRedirectsAreNotFollowed: neither the credentials nor the token
// travel to wherever Atlas's redirect points.
func TestRedirectsAreNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	defer other.Close()
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirecting.Close()

	src, err := NewTokenSource(TokenOptions{Endpoint: redirecting.URL, ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Token(context.Background()); err == nil {
		t.Error("a redirect from authtoken gave a token")
	}
	c, err := NewClient(redirecting.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Extracts(context.Background(), "B", 0, 0); err == nil {
		t.Error("a redirect from extracts gave a page")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("%d requests followed the redirect", n)
	}
}
