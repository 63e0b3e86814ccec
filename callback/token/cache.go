package token

import (
	"strings"
	"sync"
	"time"
)

// Bounds of the verified-token cache.
const (
	// CacheTTL is the longest a verified token is taken on trust
	// before its signature and claims are checked again.
	CacheTTL = time.Minute
	// MaxCached is the most tokens remembered at once.
	MaxCached = 1024
)

// Cache remembers the subjects of tokens that verified, keyed
// by the exact token, so that a sender that reuses its token for many
// callbacks (Atlas keeps one for its lifetime) costs one signature check
// and claims parse per CacheTTL instead of one per callback.
//
// An entry is used until the earlier of the token's expiry (exp plus the
// leeway, as the parser would allow) and CacheTTL after the check;
// nbf and iat, once passed, stay passed. A key dropped from the JWKS
// therefore stops being honoured within CacheTTL of the fetch that
// drops it, and a config reload, which provisions a new cache, at once.
// Only tokens that verified are stored, so a caller without a valid token
// cannot fill it; when it is full, expired entries are swept and, if none
// were, the one that would expire first is dropped, so that a long-lived
// token in steady use outlasts a burst of fresh ones.
type Cache struct {
	mu      sync.RWMutex
	entries map[string]verifiedToken
}

// verifiedToken is what the cache knows of a token.
type verifiedToken struct {
	subject string
	until   time.Time
}

func NewCache() *Cache {
	return &Cache{entries: make(map[string]verifiedToken)}
}

// Get returns the subject of a token that verified and may still be
// trusted at now.
func (tc *Cache) Get(raw string, now time.Time) (string, bool) {
	tc.mu.RLock()
	e, ok := tc.entries[raw]
	tc.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return "", false
	}
	return e.subject, true
}

// Put remembers a token that verified at now, until the earlier of expiry
// and now+CacheTTL.
func (tc *Cache) Put(raw, subject string, now, expiry time.Time) {
	until := now.Add(CacheTTL)
	if expiry.Before(until) {
		until = expiry
	}
	if !now.Before(until) {
		return
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if _, ok := tc.entries[raw]; !ok && len(tc.entries) >= MaxCached {
		for k, e := range tc.entries {
			if !now.Before(e.until) {
				delete(tc.entries, k)
			}
		}
		if len(tc.entries) >= MaxCached {
			var soonest string
			var first time.Time
			for k, e := range tc.entries {
				if first.IsZero() || e.until.Before(first) {
					soonest, first = k, e.until
				}
			}
			delete(tc.entries, soonest)
		}
	}
	// The token is usually a slice of a header value; a copy does not
	// keep the rest of that value alive.
	tc.entries[strings.Clone(raw)] = verifiedToken{subject: subject, until: until}
}

// Len returns the number of tokens remembered.
func (tc *Cache) Len() int {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	return len(tc.entries)
}
