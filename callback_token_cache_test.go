package caddyatlas

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// callbackTokenRequest returns a callback request carrying tok.
func callbackTokenRequest(tok string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/hooks/atlas", nil)
	r.Header.Set("Token", tok)
	return r
}

// cachedTokenFixture returns a provisioned route whose clock stands at t0
// (see setTestNow), and a token of its own valid from t0 for 5 minutes.
func cachedTokenFixture(t *testing.T) (c *Callback, tok string, t0 time.Time) {
	c = &Callback{}
	provisionTestCallback(t, c)
	t0 = time.Now().Truncate(time.Second)
	setTestNow(c, t0)
	tok = mintTestToken(t, jwt.SigningMethodHS256, []byte(testHMACSecret), c.signer.kid, callbackClaims(c, t0))
	return c, tok, t0
}

// setTestNow sets the route's clock.
func setTestNow(c *Callback, now time.Time) { c.now = func() time.Time { return now } }

// TestVerifiedTokenCacheExpiry checks that a cached token is refused once
// it has expired beyond the leeway, as an uncached one would be.
func TestVerifiedTokenCacheExpiry(t *testing.T) {
	c, tok, t0 := cachedTokenFixture(t)

	for _, step := range []struct {
		at     time.Duration
		ok     bool
		cached int
	}{
		{0, true, 1},
		{30 * time.Second, true, 1},
		// exp is t0+5m, the leeway 60s: accepted to t0+6m.
		{6*time.Minute - time.Second, true, 1},
		{6*time.Minute + time.Second, false, 1},
	} {
		setTestNow(c, t0.Add(step.at))
		sub, err := c.verifyRequest(callbackTokenRequest(tok))
		if (err == nil) != step.ok || (step.ok && sub != "atlas-client") {
			t.Errorf("at +%v: subject %q, error %v; want accepted=%v", step.at, sub, err, step.ok)
		}
		if n := c.verified.len(); n != step.cached {
			t.Errorf("at +%v: %d cached tokens, want %d", step.at, n, step.cached)
		}
	}
}

// TestVerifiedTokenCacheTTL checks that a verified token is taken on trust
// for verifiedTokenTTL, and checked again after: with its key gone, it is
// accepted from the cache, then refused.
func TestVerifiedTokenCacheTTL(t *testing.T) {
	c, tok, t0 := cachedTokenFixture(t)
	if _, err := c.verifyRequest(callbackTokenRequest(tok)); err != nil {
		t.Fatalf("first verification: %v", err)
	}

	c.verifyKeys = nil // as if the key had been dropped from a JWKS
	setTestNow(c, t0.Add(verifiedTokenTTL-time.Second))
	if _, err := c.verifyRequest(callbackTokenRequest(tok)); err != nil {
		t.Errorf("within the TTL, the cached token was refused: %v", err)
	}
	setTestNow(c, t0.Add(verifiedTokenTTL))
	if _, err := c.verifyRequest(callbackTokenRequest(tok)); err == nil {
		t.Error("after the TTL, a token whose key is gone was accepted")
	}
}

// TestVerifiedTokenCacheOnlyValid checks that refused tokens are not
// remembered, and that only the exact cached token is taken on trust.
func TestVerifiedTokenCacheOnlyValid(t *testing.T) {
	c := &Callback{}
	provisionTestCallback(t, c)
	good := callbackAuthToken(t, c)
	if _, err := c.verifyRequest(callbackTokenRequest(good)); err != nil {
		t.Fatal(err)
	}
	forged := mintTestToken(t, jwt.SigningMethodHS256, []byte("another-secret-of-at-least-32-bytes"),
		c.signer.kid, callbackClaims(c, time.Now()))
	for _, tok := range []string{forged, good + "x", "x" + good} {
		if _, err := c.verifyRequest(callbackTokenRequest(tok)); err == nil {
			t.Errorf("a token differing from a cached one was accepted")
		}
	}
	if n := c.verified.len(); n != 1 {
		t.Errorf("%d cached tokens, want only the valid one", n)
	}
}

// TestVerifiedTokenCacheBound checks that the cache never holds more than
// maxVerifiedTokens, and sweeps expired entries first.
func TestVerifiedTokenCacheBound(t *testing.T) {
	tc := newVerifiedTokenCache()
	t0 := time.Now()
	for i := range maxVerifiedTokens + 50 {
		tc.put(fmt.Sprintf("token-%d", i), "s", t0, t0.Add(time.Second))
	}
	if n := tc.len(); n != maxVerifiedTokens {
		t.Fatalf("%d cached tokens, want the bound %d", n, maxVerifiedTokens)
	}
	if _, ok := tc.get(fmt.Sprintf("token-%d", maxVerifiedTokens+49), t0); !ok {
		t.Error("the newest token was not kept")
	}
	later := t0.Add(2 * time.Second)
	tc.put("fresh", "s", later, later.Add(time.Minute))
	if n := tc.len(); n != 1 {
		t.Errorf("after the others expired, %d cached tokens, want 1", n)
	}
	if _, ok := tc.get("token-0", later); ok {
		t.Error("an expired token was returned")
	}
	// Full of tokens that all still hold: the one that would expire
	// first goes, never the long-lived one in use.
	tc = newVerifiedTokenCache()
	tc.put("long-lived", "s", t0, t0.Add(time.Hour))
	for i := range maxVerifiedTokens + 200 {
		tc.put(fmt.Sprintf("short-%d", i), "s", t0, t0.Add(30*time.Second+time.Duration(i)*time.Millisecond))
	}
	if _, ok := tc.get("long-lived", t0.Add(time.Second)); !ok {
		t.Error("the long-lived token was dropped before shorter ones")
	}
	if _, ok := tc.get("short-0", t0.Add(time.Second)); ok {
		t.Error("the token expiring first was kept")
	}
	// A token already expired is not stored.
	tc.put("stale", "s", later, later.Add(-time.Second))
	if _, ok := tc.get("stale", later.Add(-2*time.Second)); ok {
		t.Error("a token put after its expiry was stored")
	}
}
