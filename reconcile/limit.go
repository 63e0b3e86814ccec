package reconcile

import (
	"context"
	"sync"
	"time"
)

// limiter spaces this instance's extracts requests at least interval
// apart on the clock, and pauses them all after a 429 (for its
// Retry-After) or after consecutive failures (exponentially).
type limiter struct {
	r        *Reconciler
	interval time.Duration

	mu       sync.Mutex
	next     time.Time // earliest next request
	paused   time.Time // no request before
	failures int       // consecutive 429s, 5xx and network errors
}

// wait returns when a request may be sent, having counted it.
func (l *limiter) wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		now := l.r.now()
		at := l.next
		if l.paused.After(at) {
			at = l.paused
		}
		if !now.Before(at) {
			l.next = now.Add(l.interval)
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		if err := l.r.sleepUntil(ctx, at); err != nil {
			return err
		}
	}
}

// ok records an answer from Atlas that was not a 429 or a 5xx.
func (l *limiter) ok() {
	l.mu.Lock()
	l.failures = 0
	l.mu.Unlock()
}

// fail records a 429 (throttled), a 5xx or a network error, and pauses
// every request for retryAfter, or, without one, for the exponential
// backoff of the consecutive failures. It returns the pause.
func (l *limiter) fail(retryAfter time.Duration) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures++
	d := retryAfter
	if d <= 0 {
		d = l.r.backoff(l.failures)
	}
	if until := l.r.now().Add(d); until.After(l.paused) {
		l.paused = until
	}
	return d
}

// backoff is BackoffMin doubled for each failure after the first,
// capped at BackoffMax.
func (r *Reconciler) backoff(failures int) time.Duration {
	d := r.opts.BackoffMin
	for i := 1; i < failures && d < r.opts.BackoffMax; i++ {
		d *= 2
	}
	return min(d, r.opts.BackoffMax)
}

// sleepUntil waits until the clock reads t or ctx is done, reading the
// clock at least every Tick of real time (so that a fake clock moved by
// a test is seen).
func (r *Reconciler) sleepUntil(ctx context.Context, t time.Time) error {
	for {
		now := r.now()
		if !now.Before(t) {
			return nil
		}
		timer := time.NewTimer(min(t.Sub(now), r.opts.Tick))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}
