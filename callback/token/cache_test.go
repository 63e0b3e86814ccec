package token

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// testHMACSecret signs the tokens of the cache tests.
const testHMACSecret = "a-test-hmac-secret-of-at-least-32-bytes"

// cachedTokenFixture returns a verifier of HMAC tokens whose clock stands
// at t0, its key, and a token valid from t0 for 5 minutes.
func cachedTokenFixture(t *testing.T) (v *Verifier, clock *testutil.Clock, key *Key, tok string, t0 time.Time) {
	t.Helper()
	key, err := ParseSigningKey(testHMACSecret)
	if err != nil {
		t.Fatal(err)
	}
	t0 = time.Now().Truncate(time.Second)
	clock = testutil.NewClock(t0)
	v = &Verifier{Issuer: "caddy-atlas", Audience: "atlas-callback", Leeway: time.Minute,
		Keys: []*Key{key}, Now: clock.Now}
	v.Init()
	tok, err = Issue(key, testClaims, t0)
	if err != nil {
		t.Fatal(err)
	}
	return v, clock, key, tok, t0
}

var testClaims = Claims{Issuer: "caddy-atlas", Subject: "atlas-client", Audience: "atlas-callback", TTL: 5 * time.Minute}

// TestVerifiedTokenCacheExpiry checks that a cached token is refused once
// it has expired beyond the leeway, as an uncached one would be.
func TestVerifiedTokenCacheExpiry(t *testing.T) {
	v, clock, _, tok, t0 := cachedTokenFixture(t)

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
		clock.Set(t0.Add(step.at))
		sub, err := v.Subject(context.Background(), tok)
		if (err == nil) != step.ok || (step.ok && sub != "atlas-client") {
			t.Errorf("at +%v: subject %q, error %v; want accepted=%v", step.at, sub, err, step.ok)
		}
		if n := v.Cache().Len(); n != step.cached {
			t.Errorf("at +%v: %d cached tokens, want %d", step.at, n, step.cached)
		}
	}
}

// TestVerifiedTokenCacheTTL checks that a verified token is taken on trust
// for CacheTTL, and checked again after: with its key gone, it is
// accepted from the cache, then refused.
func TestVerifiedTokenCacheTTL(t *testing.T) {
	v, clock, _, tok, t0 := cachedTokenFixture(t)
	ctx := context.Background()
	if _, err := v.Subject(ctx, tok); err != nil {
		t.Fatalf("first verification: %v", err)
	}

	v.Keys = nil // as if the key had been dropped from a JWKS
	clock.Set(t0.Add(CacheTTL - time.Second))
	if _, err := v.Subject(ctx, tok); err != nil {
		t.Errorf("within the TTL, the cached token was refused: %v", err)
	}
	clock.Set(t0.Add(CacheTTL))
	if _, err := v.Subject(ctx, tok); err == nil {
		t.Error("after the TTL, a token whose key is gone was accepted")
	}
}

// TestVerifiedTokenCacheOnlyValid checks that refused tokens are not
// remembered, and that only the exact cached token is taken on trust.
func TestVerifiedTokenCacheOnlyValid(t *testing.T) {
	v, _, key, good, t0 := cachedTokenFixture(t)
	ctx := context.Background()
	if _, err := v.Subject(ctx, good); err != nil {
		t.Fatal(err)
	}
	other, err := ParseSigningKey("another-secret-of-at-least-32-bytes")
	if err != nil {
		t.Fatal(err)
	}
	other.kid = key.kid // the same kid, another secret
	forged, err := Issue(other, testClaims, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{forged, good + "x", "x" + good} {
		if _, err := v.Subject(ctx, tok); err == nil {
			t.Errorf("a token differing from a cached one was accepted")
		}
	}
	if n := v.Cache().Len(); n != 1 {
		t.Errorf("%d cached tokens, want only the valid one", n)
	}
}

// TestVerifiedTokenCacheBound checks that the cache never holds more than
// MaxCached, and sweeps expired entries first.
func TestVerifiedTokenCacheBound(t *testing.T) {
	tc := NewCache()
	t0 := time.Now()
	for i := range MaxCached + 50 {
		tc.Put(fmt.Sprintf("token-%d", i), "s", t0, t0.Add(time.Second))
	}
	if n := tc.Len(); n != MaxCached {
		t.Fatalf("%d cached tokens, want the bound %d", n, MaxCached)
	}
	if _, ok := tc.Get(fmt.Sprintf("token-%d", MaxCached+49), t0); !ok {
		t.Error("the newest token was not kept")
	}
	later := t0.Add(2 * time.Second)
	tc.Put("fresh", "s", later, later.Add(time.Minute))
	if n := tc.Len(); n != 1 {
		t.Errorf("after the others expired, %d cached tokens, want 1", n)
	}
	if _, ok := tc.Get("token-0", later); ok {
		t.Error("an expired token was returned")
	}
	// Full of tokens that all still hold: the one that would expire
	// first goes, never the long-lived one in use.
	tc = NewCache()
	tc.Put("long-lived", "s", t0, t0.Add(time.Hour))
	for i := range MaxCached + 200 {
		tc.Put(fmt.Sprintf("short-%d", i), "s", t0, t0.Add(30*time.Second+time.Duration(i)*time.Millisecond))
	}
	if _, ok := tc.Get("long-lived", t0.Add(time.Second)); !ok {
		t.Error("the long-lived token was dropped before shorter ones")
	}
	if _, ok := tc.Get("short-0", t0.Add(time.Second)); ok {
		t.Error("the token expiring first was kept")
	}
	// A token already expired is not stored.
	tc.Put("stale", "s", later, later.Add(-time.Second))
	if _, ok := tc.Get("stale", later.Add(-2*time.Second)); ok {
		t.Error("a token put after its expiry was stored")
	}
}
