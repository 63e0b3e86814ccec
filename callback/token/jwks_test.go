package token

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/callback/token/tokentest"
	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// jwksTestServer serves a JWKS the test can rotate, and counts fetches.
type jwksTestServer struct {
	*httptest.Server
	mu     sync.Mutex
	keys   []jwk
	status int
	delay  time.Duration
	hits   atomic.Int64
}

func newJWKSTestServer(t *testing.T, keys ...jwk) *jwksTestServer {
	t.Helper()
	s := &jwksTestServer{keys: keys, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		keys, status, delay := s.keys, s.status, s.delay
		s.mu.Unlock()
		time.Sleep(delay)
		if status != http.StatusOK {
			http.Error(w, "down", status)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksTestServer) set(status int, keys ...jwk) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = status
	if keys != nil {
		s.keys = keys
	}
}

// TestCallbackJWKSRotation checks that the route fetches a JWKS, picks up
// a rotated key on an unknown kid, and rate-limits refetches.
func TestCallbackJWKSRotation(t *testing.T) {
	k := tokentest.Keys(t)
	srv := newJWKSTestServer(t, callbackJWKOf(t, &k.EC.PublicKey, "key-1"), jwk{Kty: "oct", Kid: "ignored"})
	clock := new(offsetClock)
	hmac, err := ParseSigningKey(testHMACSecret)
	if err != nil {
		t.Fatal(err)
	}
	f := NewJWKS(srv.URL+"/.well-known/jwks.json", zap.NewNop(), nil)
	f.now = clock.now
	v := &Verifier{Issuer: "caddy-atlas", Audience: "atlas-callback", Leeway: time.Minute,
		Keys: []*Key{hmac}, JWKS: f, Now: clock.now}
	v.Init()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.Start(ctx)
	testutil.WaitFor(t, 5*time.Second, "the initial fetch", func() bool { return len(f.Snapshot()) == 1 })
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("%d fetches at start", got)
	}

	claims := func() jwt.MapClaims { return testMapClaims(clock.now()) }
	verify := func(tok string) error {
		_, err := v.Verify(context.Background(), tok)
		return err
	}
	if err := verify(tokentest.Mint(t, jwt.SigningMethodES256, k.EC, "key-1", claims())); err != nil {
		t.Fatalf("token of the JWKS key: %v", err)
	}
	if err := verify(tokentest.Mint(t, jwt.SigningMethodES256, k.EC, "", claims())); err != nil {
		t.Fatalf("token of the JWKS key without kid: %v", err)
	}

	// Rotation: key-2 replaces key-1. Within 30s of the last fetch, an
	// unknown kid does not refetch.
	srv.set(http.StatusOK, callbackJWKOf(t, &k.EC2.PublicKey, "key-2"), callbackJWKOf(t, k.Ed.Public(), "key-3"))
	rotated := tokentest.Mint(t, jwt.SigningMethodES256, k.EC2, "key-2", claims())
	if err := verify(rotated); err == nil {
		t.Fatal("a refetch was not rate-limited")
	}
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("%d fetches, want 1 (rate limit)", got)
	}
	clock.advance(31 * time.Second)
	if err := verify(tokentest.Mint(t, jwt.SigningMethodES256, k.EC2, "key-2", claims())); err != nil {
		t.Fatalf("rotated key not picked up: %v", err)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2", got)
	}
	// The new set serves EdDSA too; key-1 is gone.
	if err := verify(tokentest.Mint(t, jwt.SigningMethodEdDSA, k.Ed, "key-3", claims())); err != nil {
		t.Errorf("EdDSA key of the set: %v", err)
	}
	if err := verify(tokentest.Mint(t, jwt.SigningMethodES256, k.EC, "key-1", claims())); err == nil {
		t.Error("a key removed from the set still verifies")
	}
	// A kid naming a key of another type fails without a fetch.
	if err := verify(tokentest.Mint(t, jwt.SigningMethodEdDSA, k.Ed, "key-2", claims())); err == nil {
		t.Error("an EdDSA token verified against an ES256 key")
	}
	// The HMAC secret is still there, and HS256 cannot use JWKS keys.
	if err := verify(tokentest.Mint(t, jwt.SigningMethodHS256, []byte(testHMACSecret), "", claims())); err != nil {
		t.Errorf("own HMAC token: %v", err)
	}

	// A failing JWKS keeps the last good keys.
	srv.set(http.StatusInternalServerError)
	clock.advance(31 * time.Second)
	if err := verify(tokentest.Mint(t, jwt.SigningMethodES256, k.EC, "unknown", claims())); err == nil {
		t.Error("unknown kid verified")
	}
	if err := verify(tokentest.Mint(t, jwt.SigningMethodES256, k.EC2, "key-2", claims())); err != nil {
		t.Errorf("the keys were dropped after a failed fetch: %v", err)
	}
}

// TestCallbackJWKSSingleFlight checks that concurrent lookups of an
// unknown kid make one fetch.
func TestCallbackJWKSSingleFlight(t *testing.T) {
	k := tokentest.Keys(t)
	srv := newJWKSTestServer(t, callbackJWKOf(t, &k.EC.PublicKey, "key-1"))
	srv.delay = 100 * time.Millisecond
	f := NewJWKS(srv.URL, zap.NewNop(), nil)
	var wg sync.WaitGroup
	var found atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.Lookup(context.Background(), "key-1") != nil {
				found.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := srv.hits.Load(); got != 1 {
		t.Errorf("%d fetches for 20 concurrent lookups", got)
	}
	if found.Load() != 20 {
		t.Errorf("%d lookups found the key", found.Load())
	}
}

// TestCallbackJWKSRefreshStops checks the periodic refresh and that it
// ends with its context.
func TestCallbackJWKSRefreshStops(t *testing.T) {
	k := tokentest.Keys(t)
	srv := newJWKSTestServer(t, callbackJWKOf(t, &k.EC.PublicKey, "key-1"))
	f := NewJWKS(srv.URL, zap.NewNop(), nil)
	f.refreshEvery, f.retryEvery = 10*time.Millisecond, 10*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx)
	testutil.WaitFor(t, 5*time.Second, "three fetches", func() bool { return srv.hits.Load() >= 3 })
	cancel()
	time.Sleep(30 * time.Millisecond)
	stopped := srv.hits.Load()
	time.Sleep(60 * time.Millisecond)
	if got := srv.hits.Load(); got != stopped {
		t.Errorf("fetches went on after cancel: %d then %d", stopped, got)
	}
}

// TestCallbackJWKSBadSets checks sets that yield no key.
func TestCallbackJWKSBadSets(t *testing.T) {
	for name, body := range map[string]string{
		"not JSON":      "<html>",
		"no keys":       `{"keys":[]}`,
		"only unusable": `{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]}`,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(body))
		}))
		f := NewJWKS(srv.URL, zap.NewNop(), nil)
		if _, err := f.fetch(context.Background()); err == nil {
			t.Errorf("%s: no error", name)
		}
		srv.Close()
	}
}

// offsetClock is a clock the tests move forward.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *offsetClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// testMapClaims are the claims of a valid token at now.
func testMapClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": "caddy-atlas", "aud": "atlas-callback", "sub": "atlas-client",
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
	}
}
