package ledger

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// core is what both stores keep alike: the policy, the clock, and the
// lock that Close takes against the operations in flight.
type core struct {
	policy atomic.Pointer[Policy]
	now    func() time.Time

	mu     sync.RWMutex // held for reading by operations, for writing by Close
	closed bool
	done   chan struct{} // closed by Close
}

// init sets the clock (time.Now when now is nil) and the policy.
func (c *core) init(now func() time.Time, p Policy) {
	c.now = now
	if c.now == nil {
		c.now = time.Now
	}
	c.done = make(chan struct{})
	c.SetPolicy(p)
}

// Policy returns the store's policy, defaults applied.
func (c *core) Policy() Policy { return *c.policy.Load() }

// SetPolicy changes the store's policy (a config reload that changes
// the durations): it applies to the writes after it.
func (c *core) SetPolicy(p Policy) {
	p = p.WithDefaults()
	c.policy.Store(&p)
}

func (c *core) clock() time.Time { return c.now().Round(0) }

// enter starts an operation: ErrClosed once Close began, ctx's error
// once it is done. A nil error must be followed by leave.
func (c *core) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (c *core) leave() { c.mu.RUnlock() }

// updateFunc is a store's read-modify-write of one batch: fn changes b
// at now and reports whether it did.
type updateFunc func(ctx context.Context, id string, fn func(b *Batch, now time.Time) (bool, error)) (*Batch, error)

// claimWith implements Store.Claim on a store's update.
func claimWith(ctx context.Context, update updateFunc, id string, c Claim) (ClaimResult, error) {
	if err := CheckClaim(c); err != nil {
		return ClaimResult{}, err
	}
	var r ClaimResult
	b, err := update(ctx, id, func(b *Batch, now time.Time) (changed bool, _ error) {
		r, changed = b.ApplyClaim(c, now)
		return changed, nil
	})
	if err != nil {
		return ClaimResult{}, err
	}
	r.Batch = b
	return r, nil
}

// takeLeaseWith implements Store.TakeLease on a store's update.
func takeLeaseWith(ctx context.Context, update updateFunc, id, owner string, ttl time.Duration) (*Batch, error) {
	if owner == "" || ttl <= 0 {
		return nil, fmt.Errorf("%w: a lease needs an owner and a positive ttl", ErrInvalid)
	}
	return update(ctx, id, func(b *Batch, now time.Time) (bool, error) {
		return TakeLease(b, owner, ttl, now)
	})
}

// releaseLeaseWith implements Store.ReleaseLease on a store's update,
// under policy p.
func releaseLeaseWith(ctx context.Context, update updateFunc, id, owner string, p func() Policy) (*Batch, error) {
	return update(ctx, id, func(b *Batch, now time.Time) (bool, error) {
		return ReleaseLease(b, owner, now, p())
	})
}
