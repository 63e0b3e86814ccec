package callback

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// callbackTestClock is a clock the tests move forward.
type callbackTestClock struct{ offset atomic.Int64 }

func (c *callbackTestClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *callbackTestClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// callbackAuthTestRequest builds an auth request from addr with credentials given as
// via says.
func callbackAuthTestRequest(via, id, secret, addr string) *http.Request {
	var req *http.Request
	switch via {
	case "headers":
		req = httptest.NewRequest(http.MethodPost, "/hooks/atlas/auth", nil)
		req.Header.Set("Client-Id", id)
		req.Header.Set("Client-Secret", secret)
	case "basic":
		req = httptest.NewRequest(http.MethodPost, "/hooks/atlas/auth", nil)
		req.SetBasicAuth(id, secret)
	case "json":
		b, _ := json.Marshal(map[string]string{"client_id": id, "client_secret": secret})
		req = httptest.NewRequest(http.MethodPost, "/hooks/atlas/auth", strings.NewReader(string(b)))
		req.Header.Set("Content-Type", "application/json")
	case "form":
		form := url.Values{"client_id": {id}, "client_secret": {secret}}
		req = httptest.NewRequest(http.MethodPost, "/hooks/atlas/auth", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case "query":
		form := url.Values{"client_id": {id}, "client_secret": {secret}}
		req = httptest.NewRequest(http.MethodPost, "/hooks/atlas/auth?"+form.Encode(), strings.NewReader(""))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	default:
		req = httptest.NewRequest(http.MethodPost, "/hooks/atlas/auth", nil)
	}
	if addr != "" {
		req.RemoteAddr = addr
	}
	return req
}

func serveTestAuth(t *testing.T, c *Callback, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := c.ServeAuth(rec, req); err != nil {
		t.Fatalf("serveAuth returned an error: %v", err)
	}
	return rec
}

// TestCallbackAuthCredentials checks each way of presenting credentials
// and the response shape.
func TestCallbackAuthCredentials(t *testing.T) {
	c := &Callback{}
	provisionTestCallback(t, c)
	issued := callbackCounterValue(t, c.metrics.tokensIssued)
	for _, via := range []string{"headers", "basic", "json", "form"} {
		t.Run(via, func(t *testing.T) {
			rec := serveTestAuth(t, c, callbackAuthTestRequest(via, "atlas-client", "atlas-client-secret", ""))
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			for k, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"} {
				if got := rec.Header().Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			var resp map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if resp["token_type"] != "Bearer" || resp["expires_in"] != float64(900) || len(resp) != 3 {
				t.Errorf("response %v", resp)
			}
			tok, _ := resp["access_token"].(string)
			if _, err := c.verifyToken(context.Background(), tok); err != nil {
				t.Errorf("the issued token does not verify: %v", err)
			}
		})
	}
	if got := callbackCounterValue(t, c.metrics.tokensIssued) - issued; got != 4 {
		t.Errorf("tokens issued counter moved by %v, want 4", got)
	}
}

// TestCallbackAuthRefused checks the refusals: each answers 401 with the
// same body, whatever was wrong.
func TestCallbackAuthRefused(t *testing.T) {
	c := &Callback{}
	provisionTestCallback(t, c)
	failures := callbackCounterValue(t, c.metrics.authFailures.WithLabelValues("invalid_credentials"))
	var bodies []string
	for i, tc := range []struct{ via, id, secret string }{
		{"headers", "atlas-client", "wrong"},
		{"headers", "wrong", "atlas-client-secret"},
		{"headers", "", "atlas-client-secret"},
		{"headers", "atlas-client", ""},
		{"headers", "atlas-client-secret", "atlas-client"},
		{"basic", "atlas-client", "wrong"},
		{"json", "wrong", "atlas-client-secret"},
		{"form", "atlas-client", "atlas-client-secret-"},
		{"query", "atlas-client", "atlas-client-secret"},
		{"none", "", ""},
	} {
		// A distinct address each, so the limiter stays out of the way.
		addr := fmt.Sprintf("192.0.2.%d:1234", i+1)
		rec := serveTestAuth(t, c, callbackAuthTestRequest(tc.via, tc.id, tc.secret, addr))
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%v: status %d", tc, rec.Code)
		}
		bodies = append(bodies, rec.Body.String())
	}
	for _, b := range bodies {
		if b != `{"error":"invalid client credentials"}`+"\n" {
			t.Errorf("body %q", b)
		}
	}
	if got := callbackCounterValue(t, c.metrics.authFailures.WithLabelValues("invalid_credentials")) - failures; got != float64(len(bodies)) {
		t.Errorf("failures counter moved by %v", got)
	}

	rec := serveTestAuth(t, c, httptest.NewRequest(http.MethodGet, "/hooks/atlas/auth", nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "POST" {
		t.Errorf("GET: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

// TestCallbackAuthThrottled checks the slow-down of repeated failures
// from one address.
func TestCallbackAuthThrottled(t *testing.T) {
	clock := new(callbackTestClock)
	c := &Callback{now: clock.now}
	provisionTestCallback(t, c)
	const attacker, other = "198.51.100.7:5555", "198.51.100.8:5555"

	for i := range authFreeFailures {
		if rec := serveTestAuth(t, c, callbackAuthTestRequest("headers", "atlas-client", "guess", attacker)); rec.Code != 401 {
			t.Fatalf("failure %d: status %d", i+1, rec.Code)
		}
	}
	// The 6th failure starts the delay: 1s.
	if rec := serveTestAuth(t, c, callbackAuthTestRequest("headers", "atlas-client", "guess", attacker)); rec.Code != 401 {
		t.Fatalf("6th failure: status %d", rec.Code)
	}
	rec := serveTestAuth(t, c, callbackAuthTestRequest("headers", "atlas-client", "atlas-client-secret", attacker))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("while throttled: status %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	// Another address is not affected.
	if rec := serveTestAuth(t, c, callbackAuthTestRequest("headers", "atlas-client", "atlas-client-secret", other)); rec.Code != 200 {
		t.Fatalf("other address: status %d", rec.Code)
	}
	// The delay doubles with each failure.
	clock.advance(1100 * time.Millisecond)
	if rec := serveTestAuth(t, c, callbackAuthTestRequest("headers", "atlas-client", "guess", attacker)); rec.Code != 401 {
		t.Fatalf("7th failure: status %d", rec.Code)
	}
	if rec := serveTestAuth(t, c, callbackAuthTestRequest("headers", "atlas-client", "guess", attacker)); rec.Code != 429 || rec.Header().Get("Retry-After") != "2" {
		t.Fatalf("after the 7th: status %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	// After the delay, good credentials succeed and clear the count.
	clock.advance(2100 * time.Millisecond)
	if rec := serveTestAuth(t, c, callbackAuthTestRequest("headers", "atlas-client", "atlas-client-secret", attacker)); rec.Code != 200 {
		t.Fatalf("after the delay: status %d", rec.Code)
	}
	if rec := serveTestAuth(t, c, callbackAuthTestRequest("headers", "atlas-client", "guess", attacker)); rec.Code != 401 {
		t.Fatalf("after a success: status %d", rec.Code)
	}
}

// TestCallbackAuthLimiterBounds checks the limiter's delays, expiry, IPv6
// grouping and bounded memory.
func TestCallbackAuthLimiterBounds(t *testing.T) {
	l := newFailureLimiter()
	now := time.Now()
	for range authFreeFailures + 20 {
		l.fail("a", now)
	}
	if got := l.wait("a", now); got != authMaxDelay {
		t.Errorf("delay after many failures %v, want the cap %v", got, authMaxDelay)
	}
	if got := l.wait("a", now.Add(authFailureTTL+time.Second)); got != 0 {
		t.Errorf("delay after the TTL %v", got)
	}
	if l.len() != 0 {
		t.Errorf("expired entry kept")
	}

	l.max = 100
	for i := range 1000 {
		l.fail(fmt.Sprint(i), now)
	}
	if l.len() != 100 {
		t.Errorf("tracking %d addresses, want at most 100", l.len())
	}
	if l.wait("999", now) != 0 || l.entries["999"] == nil || l.entries["0"] != nil {
		t.Error("eviction did not drop the least recent")
	}

	for addr, want := range map[string]string{
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::/64",
		"[::ffff:192.0.2.1]:80":      "192.0.2.1",
		"192.0.2.1:80":               "192.0.2.1",
	} {
		req := httptest.NewRequest(http.MethodPost, "/", nil)
		req.RemoteAddr = addr
		if got := callbackClientKey(req); got != want {
			t.Errorf("key of %s = %s, want %s", addr, got, want)
		}
	}
	// Caddy's client_ip (trusted proxies applied) wins over the peer.
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	ctx := context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: "203.0.113.9"})
	if got := callbackClientKey(req.WithContext(ctx)); got != "203.0.113.9" {
		t.Errorf("key with client_ip = %s", got)
	}
}

// TestCallbackAuthConstantTimeShape checks that the credential check runs
// both comparisons whatever the input: same result type for a wrong id, a
// wrong secret, and an unprovisioned route.
func TestCallbackAuthConstantTimeShape(t *testing.T) {
	c := &Callback{}
	provisionTestCallback(t, c)
	for _, tc := range []struct {
		id, secret string
		want       bool
	}{
		{"atlas-client", "atlas-client-secret", true},
		{"atlas-client", "atlas-client-secreT", false},
		{"atlas-clienT", "atlas-client-secret", false},
		{"", "", false},
	} {
		if got := c.checkCredentials(tc.id, tc.secret); got != tc.want {
			t.Errorf("checkCredentials(%q, %q) = %v", tc.id, tc.secret, got)
		}
	}
	if new(Callback).checkCredentials("", "") {
		t.Error("an unprovisioned route accepts empty credentials")
	}
}
