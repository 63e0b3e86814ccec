package atlasclient

import (
	"context"
	"errors"
	"time"
)

// SharedTokenStore holds one token for several TokenSources, typically the
// instances of a fleet, so that they make one authtoken call between them
// per token lifetime instead of one each. This matters when Atlas keeps
// one live token per client: a token issued to one instance would revoke
// the others'.
//
// A source calls the store only from its refresh (at most one at a time
// per source), never on the hot path of Token. Implementations must be
// safe for concurrent use by several sources, and must keep the token
// secret at rest: whoever can read the store must not be able to use it.
type SharedTokenStore interface {
	// Lock takes the store's lock, blocking until it is held or ctx ends,
	// and returns the function that releases it. The source that holds
	// the lock is the one that calls authtoken.
	Lock(ctx context.Context) (unlock func(context.Context) error, err error)
	// Load returns the stored token, or a zero Token and a nil error when
	// there is none. A token that cannot be read (say, sealed with another
	// key) is reported as an error; the source then treats the store as
	// empty.
	Load(ctx context.Context) (Token, error)
	// Store replaces the stored token.
	Store(ctx context.Context, tok Token) error
}

// SharedTokenObserver is implemented by a TokenObserver that also wants to
// hear about a SharedTokenStore. Its methods may be called concurrently.
type SharedTokenObserver interface {
	// TokenLoaded is called when a refresh takes the shared token instead
	// of calling authtoken; issuedAt is when its fetcher requested it.
	TokenLoaded(issuedAt time.Time)
	// SharedStoreFailed is called when an operation of the store ("lock",
	// "load", "store" or "unlock") fails. The source carries on as if it
	// had no store: it fetches its own token.
	SharedStoreFailed(op string, err error)
}

// sharedLockWait bounds the wait for the store's lock. It is longer than
// the time after which a lock left by a crashed holder goes stale in
// certmagic's file storage (10s); past it, the source fetches without the
// lock. A variable for tests.
var sharedLockWait = 15 * time.Second

// Timing of the shared store.
const (
	// sharedPoll is how often the store is read while waiting for its
	// lock, so that a token stored by the holder is taken at once rather
	// than when the lock is free (a file storage polls its lock once a
	// second).
	sharedPoll = 50 * time.Millisecond
	// sharedOpTimeout bounds each Load, Store and unlock.
	sharedOpTimeout = 10 * time.Second
	// sharedAttempts bounds how often a refresh takes a shared token that
	// turns out to have been rejected while it was read.
	sharedAttempts = 2
)

// obtain returns the new token of a refresh. Without a shared store it
// calls authtoken. With one, it takes the stored token when that is
// usable; otherwise it takes the store's lock, reads the store again (the
// holder before it may have stored a token), and only then calls
// authtoken and stores the result. When the store fails, the source
// fetches its own token. stored reports that the token was read from the
// store rather than answered by authtoken.
func (s *TokenSource) obtain(ctx context.Context) (tok Token, retryAfter time.Duration, stored bool, err error) {
	if s.shared == nil {
		tok, retryAfter, err = s.fetchWithRetry(ctx)
		return tok, retryAfter, false, err
	}
	if tok, ok := s.loadShared(true); ok {
		return tok, 0, true, nil
	}
	tok, unlock, err := s.lockShared()
	switch {
	case tok.Value != "":
		return tok, 0, true, nil
	case err == nil:
		defer s.unlockShared(unlock)
		if tok, ok := s.loadShared(false); ok {
			return tok, 0, true, nil
		}
	case s.ctx.Err() != nil:
		return Token{}, 0, false, ErrClosed
	default:
		s.sharedFailed("lock", err)
	}
	tok, retryAfter, err = s.fetchWithRetry(ctx)
	if err == nil {
		sctx, cancel := context.WithTimeout(s.ctx, sharedOpTimeout)
		if err := s.shared.Store(sctx, tok); err != nil {
			s.sharedFailed("store", err)
		}
		cancel()
	}
	return tok, retryAfter, false, err
}

// lockShared takes the store's lock. While it waits, it keeps reading the
// store; when a usable token appears there it returns that token without
// the lock (a lock obtained later is released at once).
func (s *TokenSource) lockShared() (Token, func(context.Context) error, error) {
	ctx, cancel := context.WithTimeout(s.ctx, sharedLockWait)
	type result struct {
		unlock func(context.Context) error
		err    error
	}
	got := make(chan result, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		unlock, err := s.shared.Lock(ctx)
		got <- result{unlock, err}
	}()
	tick := time.NewTicker(sharedPoll)
	defer tick.Stop()
	for {
		select {
		case r := <-got:
			cancel()
			if r.err == nil && r.unlock == nil {
				r.err = errors.New("the shared token store's Lock returned no unlock function")
			}
			return Token{}, r.unlock, r.err
		case <-tick.C:
			tok, ok := s.loadShared(false)
			if !ok {
				continue
			}
			cancel()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				if r := <-got; r.err == nil && r.unlock != nil {
					s.unlockShared(r.unlock)
				}
			}()
			return tok, nil, nil
		}
	}
}

// unlockShared releases the store's lock, even after Close.
func (s *TokenSource) unlockShared(unlock func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), sharedOpTimeout)
	defer cancel()
	if err := unlock(ctx); err != nil {
		s.sharedFailed("unlock", err)
	}
}

// loadShared reads the store and reports whether its token is usable: valid,
// not yet in its refresh window, and not the value last rejected. A failure
// is reported when report is set: once per refresh, not at every poll.
func (s *TokenSource) loadShared(report bool) (Token, bool) {
	ctx, cancel := context.WithTimeout(s.ctx, sharedOpTimeout)
	tok, err := s.shared.Load(ctx)
	cancel()
	if err != nil {
		if report && s.ctx.Err() == nil {
			s.sharedFailed("load", err)
		}
		return Token{}, false
	}
	now := s.now()
	if !tok.validAt(now) || !now.Before(tok.refreshAt(s.refreshBefore)) || tok.Value == s.rejectedValue() {
		return Token{}, false
	}
	if s.sharedObs != nil {
		s.sharedObs.TokenLoaded(tok.IssuedAt)
	}
	return tok, true
}

func (s *TokenSource) rejectedValue() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rejected
}

func (s *TokenSource) sharedFailed(op string, err error) {
	if s.sharedObs != nil {
		s.sharedObs.SharedStoreFailed(op, err)
	}
}
