package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// testHMACSecret is the default signing key of the test callbacks.
const testHMACSecret = "0123456789abcdef0123456789abcdef-test-hmac"

// provisionTestCallback fills the unset required settings of c with test
// values, provisions and validates it, and returns the debug logs it
// provisionAndValidate provisions c with a nop logger, validates it if
// that succeeded, and cleans it up: it returns the first error of
// Provision and Validate, and Cleanup's.
func provisionAndValidate(c *Callback) (err, cleanupErr error) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err = c.Provision(ctx, zap.NewNop())
	if err == nil {
		err = c.Validate()
	}
	return err, c.Cleanup()
}

// writes.
func provisionTestCallback(t testing.TB, c *Callback) *observer.ObservedLogs {
	t.Helper()
	if c.Path == "" {
		c.Path = "/hooks/atlas"
	}
	if c.ClientID == "" {
		c.ClientID = "atlas-client"
	}
	if c.ClientSecret == "" {
		c.ClientSecret = "atlas-client-secret"
	}
	if c.SigningKey == "" {
		c.SigningKey = testHMACSecret
	}
	core, logs := observer.New(zapcore.DebugLevel)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(func() {
		_ = c.Cleanup()
		cancel()
	})
	if err := c.Provision(ctx, zap.New(core)); err != nil {
		t.Fatalf("provision: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if err := c.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	return logs
}

// testStore is st as the route's open queue.
func testStore(st queue.Store) *atomic.Pointer[storeRef] {
	p := new(atomic.Pointer[storeRef])
	p.Store(&storeRef{st})
	return p
}

// callbackClaims returns valid claims for c's tokens at now.
func callbackClaims(c *Callback, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": c.Issuer,
		"aud": c.Audience,
		"sub": "atlas-client",
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(5 * time.Minute).Unix(),
		"jti": "test",
	}
}

// callbackAuthToken obtains a token from c's auth route.
func callbackAuthToken(t testing.TB, c *Callback) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, c.AuthPath, nil)
	req.Header.Set("Client-Id", "atlas-client")
	req.Header.Set("Client-Secret", "atlas-client-secret")
	rec := httptest.NewRecorder()
	if err := c.ServeAuth(rec, req); err != nil {
		t.Fatalf("serveAuth: %v", err)
	}
	if rec.Code != http.StatusOK {
		t.Fatalf("auth status %d: %s", rec.Code, rec.Body)
	}
	var resp callbackAuthResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	return resp.AccessToken
}

// callbackApp is the next handler of the tests: it records what reaches
// it and answers 202.
type callbackApp struct {
	calls  int
	body   []byte
	header http.Header
	req    *http.Request
}

func (a *callbackApp) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	a.calls++
	a.req = r
	a.header = r.Header.Clone()
	var err error
	if a.body, err = io.ReadAll(r.Body); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

var _ caddyhttp.Handler = (*callbackApp)(nil)

// callbackTestRequest builds a callback with a token in the Token header.
func callbackTestRequest(path, token string, body []byte) *http.Request {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Token", token)
	}
	repl := caddy.NewReplacer()
	ctx := context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl)
	return req.WithContext(ctx)
}

// serveTestCallback runs a callback through c and returns the response and the app.
func serveTestCallback(t testing.TB, c *Callback, req *http.Request) (*httptest.ResponseRecorder, *callbackApp) {
	t.Helper()
	app := new(callbackApp)
	rec := httptest.NewRecorder()
	if err := c.ServeCallback(rec, req, app); err != nil {
		t.Fatalf("serveCallback returned an error: %v", err)
	}
	return rec, app
}

// callbackCounterValue returns the value of a counter.
func callbackCounterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// callbackCountingReader counts the bytes read through it.
type callbackCountingReader struct {
	r io.Reader
	n int
}

func (c *callbackCountingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// callbackTokenRequest returns a callback request carrying tok.
func callbackTokenRequest(tok string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/hooks/atlas", nil)
	r.Header.Set("Token", tok)
	return r
}
