package queue

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHTTPDeliverer(t *testing.T) {
	var got *http.Request
	var body []byte
	status := http.StatusAccepted
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, "/hook", http.StatusTemporaryRedirect)
			return
		case "/slow":
			io.ReadAll(r.Body) // then the server notices the client leave
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		got = r
		body, _ = io.ReadAll(r.Body)
		w.WriteHeader(status)
	}))
	defer srv.Close()

	h := &HTTPDeliverer{URL: srv.URL + "/hook", Client: srv.Client()}
	d := Delivery{
		ID:      "abc123",
		Header:  http.Header{"X-Atlas-Subject": {"client-1"}, "X-Atlas-Attempt": {"99"}, "Connection": {"close, X-Secret"}},
		Body:    []byte(`{"data":[]}`),
		Attempt: 3,
	}
	if err := h.Deliver(context.Background(), d); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if got.Method != http.MethodPost || string(body) != `{"data":[]}` {
		t.Errorf("request %s with body %q", got.Method, body)
	}
	for k, want := range map[string]string{
		"X-Atlas-Attempt": "3", "X-Atlas-Callback-Id": "abc123", "X-Atlas-Subject": "client-1",
		"Content-Type": "application/json",
	} {
		if v := got.Header.Values(k); len(v) != 1 || v[0] != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}

	if got.Header.Get("Connection") != "" || got.Close {
		t.Errorf("stored Connection header forwarded: %q", got.Header.Get("Connection"))
	}

	status = http.StatusInternalServerError
	var se *StatusError
	if err := h.Deliver(context.Background(), d); !errors.As(err, &se) || se.Code != 500 {
		t.Errorf("Deliver to a 500 = %v", err)
	}

	h.URL = srv.URL + "/redirect"
	if err := h.Deliver(context.Background(), d); !errors.As(err, &se) || se.Code != http.StatusTemporaryRedirect {
		t.Errorf("Deliver to a redirect = %v, want the 307 as an error", err)
	}

	h.URL = srv.URL + "/slow"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.Deliver(ctx, d); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Deliver past the deadline = %v", err)
	}
}

// TestHTTPDelivererHeaderHook checks that the Header hook runs for every
// attempt, sees the attempt, and its headers win over the stored ones.
func TestHTTPDelivererHeaderHook(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("X-Signed-At")+"/"+r.Header.Get("X-Attempt-Seen"))
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	calls := 0
	h := &HTTPDeliverer{URL: srv.URL, Client: srv.Client(), Header: func(hd http.Header, d Delivery) {
		calls++
		hd.Set("X-Signed-At", strconv.Itoa(calls))
		hd.Set("X-Attempt-Seen", hd.Get(HeaderAttempt))
	}}
	stored := http.Header{"X-Signed-At": {"stale"}}
	for attempt := 1; attempt <= 2; attempt++ {
		err := h.Deliver(context.Background(), Delivery{ID: "x", Header: stored, Body: []byte(`{}`), Attempt: attempt})
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
	}
	if len(seen) != 2 || seen[0] != "1/1" || seen[1] != "2/2" {
		t.Errorf("the receiver saw %q, want [1/1 2/2]", seen)
	}
	if stored.Get("X-Signed-At") != "stale" {
		t.Error("the hook changed the stored headers")
	}
}

// TestHTTPDelivererClients checks that the deliverer behaves the same
// whether it sends through the client's transport (a client without a
// jar or a timeout, or none) or through Client.Do (a client with a
// timeout): credentials in the URL are sent as Basic authentication,
// redirects are answers, not followed, and a failed request's error reads
// as Client.Do's, with the URL's password redacted.
func TestHTTPDelivererClients(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, "/hook", http.StatusFound)
			return
		case "/basic":
			if u, p, ok := r.BasicAuth(); !ok || u != "app" || p != "s3cret" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	refused := strings.Replace(closed.URL, "http://", "http://user:hunter2@", 1) + "/hook"
	closed.Close()

	d := Delivery{ID: "abc123", Body: []byte(`{"data":[]}`), Attempt: 1}
	for name, client := range map[string]*http.Client{
		"none":         nil,
		"transport":    {Transport: srv.Client().Transport},
		"with timeout": {Transport: srv.Client().Transport, Timeout: 5 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			h := &HTTPDeliverer{URL: srv.URL + "/hook", Client: client}
			if err := h.Deliver(context.Background(), d); err != nil {
				t.Errorf("Deliver: %v", err)
			}
			// Credentials in the URL are Basic authentication.
			h.URL = strings.Replace(srv.URL, "http://", "http://app:s3cret@", 1) + "/basic"
			if err := h.Deliver(context.Background(), d); err != nil {
				t.Errorf("Deliver with credentials in the URL: %v", err)
			}
			h.URL = srv.URL + "/redirect"
			var se *StatusError
			if err := h.Deliver(context.Background(), d); !errors.As(err, &se) || se.Code != http.StatusFound {
				t.Errorf("Deliver to a redirect = %v, want the 302 as an error", err)
			}
			h.URL = refused
			err := h.Deliver(context.Background(), d)
			var ue *url.Error
			if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), `Post "http://user:***@`) || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Deliver to a closed port = %v, want a *url.Error naming the redacted URL", err)
			}
		})
	}
}
