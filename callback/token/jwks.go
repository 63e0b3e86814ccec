package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Timing of the JWKS fetcher.
const (
	jwksTimeout      = 10 * time.Second
	jwksMinRefetch   = 30 * time.Second // between refetches on an unknown kid
	jwksRefreshEvery = time.Hour
	jwksRetryEvery   = time.Minute // after a failed fetch
	maxJWKSBytes     = 1 << 20
)

// errJWKSRateLimited is an on-demand refetch refused because the last
// fetch was too recent.
var errJWKSRateLimited = errors.New("JWKS refetch rate-limited")

// JWKS keeps the verification keys of a JWKS. It fetches the set
// in the background at start and every hour (every minute after a
// failure), and again when a token names a kid it does not know, at most
// once per 30 seconds. Concurrent fetches are collapsed into one. A failed
// fetch keeps the keys of the last good one.
type JWKS struct {
	url     string
	client  *http.Client
	logger  *zap.Logger
	onFetch func(result string)

	now          func() time.Time
	minRefetch   time.Duration
	refreshEvery time.Duration
	retryEvery   time.Duration

	mu          sync.Mutex
	keys        []*Key // replaced whole, never modified
	lastAttempt time.Time
	lastErr     error
	inflight    chan struct{}
	baseCtx     context.Context
}

// NewJWKS returns a fetcher of the JWKS at url. onFetch, if not nil, is
// called after each fetch with its result, "ok" or "error".
func NewJWKS(url string, logger *zap.Logger, onFetch func(result string)) *JWKS {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	return &JWKS{
		url:          url,
		client:       &http.Client{Transport: tr, Timeout: jwksTimeout},
		logger:       logger,
		onFetch:      onFetch,
		now:          time.Now,
		minRefetch:   jwksMinRefetch,
		refreshEvery: jwksRefreshEvery,
		retryEvery:   jwksRetryEvery,
		baseCtx:      context.Background(),
	}
}

// SetClock sets the clock the rate limit of refetches reads; call it
// before Start.
func (f *JWKS) SetClock(now func() time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
}

// Start fetches the set in the background and keeps it fresh until ctx
// is done. Fetches started on demand also end with ctx.
func (f *JWKS) Start(ctx context.Context) {
	f.mu.Lock()
	f.baseCtx = ctx
	f.mu.Unlock()
	go f.run(ctx)
}

func (f *JWKS) run(ctx context.Context) {
	for {
		wait := f.refreshEvery
		if err := f.refresh(ctx, false); err != nil {
			wait = f.retryEvery
			if ctx.Err() == nil {
				f.logger.Warn("fetching the JWKS failed; keeping the previous keys",
					zap.String("jwks_url", f.url), zap.Error(err), zap.Duration("retry_in", wait))
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Snapshot returns the current keys.
func (f *JWKS) Snapshot() []*Key {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys
}

// Lookup returns the key with that kid, refetching the set (subject to
// the rate limit) when it is unknown; nil if there is none.
func (f *JWKS) Lookup(ctx context.Context, kid string) *Key {
	if k := FindKey(f.Snapshot(), kid); k != nil {
		return k
	}
	if err := f.refresh(ctx, true); err != nil {
		if ce := f.logger.Check(zapcore.DebugLevel, "JWKS refetch for an unknown kid"); ce != nil {
			ce.Write(zap.String("kid", truncate(kid, 64)), zap.Error(err))
		}
	}
	return FindKey(f.Snapshot(), kid)
}

// All returns every key of the set, fetching it (subject to the rate
// limit) if no fetch has succeeded yet.
func (f *JWKS) All(ctx context.Context) []*Key {
	if keys := f.Snapshot(); len(keys) > 0 {
		return keys
	}
	_ = f.refresh(ctx, true)
	return f.Snapshot()
}

// refresh fetches the set, or waits for the fetch in flight. onDemand
// fetches are refused within minRefetch of the previous attempt.
func (f *JWKS) refresh(ctx context.Context, onDemand bool) error {
	f.mu.Lock()
	if ch := f.inflight; ch != nil {
		f.mu.Unlock()
		select {
		case <-ch:
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.lastErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	now := f.now()
	if onDemand && !f.lastAttempt.IsZero() && now.Sub(f.lastAttempt) < f.minRefetch {
		f.mu.Unlock()
		return errJWKSRateLimited
	}
	ch := make(chan struct{})
	f.inflight, f.lastAttempt = ch, now
	base := f.baseCtx
	f.mu.Unlock()

	// The fetch runs under the module's context, not the request's: a
	// caller that goes away does not spoil the fetch for the others.
	keys, err := f.fetch(base)
	result := "ok"
	if err != nil {
		result = "error"
	}
	if f.onFetch != nil {
		f.onFetch(result)
	}

	f.mu.Lock()
	if err == nil {
		f.keys = keys
	}
	f.lastErr = err
	f.inflight = nil
	close(ch)
	f.mu.Unlock()
	return err
}

// fetch downloads and parses the set. Entries that cannot serve (other
// key types, encryption keys, weak keys) are skipped; a set without a
// usable key is an error.
func (f *JWKS) fetch(ctx context.Context) ([]*Key, error) {
	ctx, cancel := context.WithTimeout(ctx, jwksTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("JWKS answered status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("JWKS is not a JSON key set: %w", err)
	}
	var keys []*Key
	for i, raw := range set.Keys {
		var j jwk
		err := json.Unmarshal(raw, &j)
		var k *Key
		if err == nil {
			k, err = parseJWK(j)
		}
		if err != nil {
			if ce := f.logger.Check(zapcore.DebugLevel, "skipping a JWKS key"); ce != nil {
				ce.Write(zap.Int("index", i), zap.String("kid", truncate(j.Kid, 64)), zap.Error(err))
			}
			continue
		}
		k.origin = "jwks"
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS holds no usable key among its %d", len(set.Keys))
	}
	return keys, nil
}
