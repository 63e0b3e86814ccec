// Package testutil holds helpers for the module's tests: Clock, a fake
// clock that moves only when told to, and WaitFor and Poll, which poll a
// condition until it holds or a timeout passes. Only tests import it.
package testutil

import (
	"sync"
	"testing"
	"time"
)

// Epoch is where the fake clocks of the Atlas client's tests start: the
// time in the sample batch id BATCH-69469-BBRSS-20260309081408.
var Epoch = time.Date(2026, 3, 9, 8, 14, 8, 0, time.UTC)

// Clock is a fake clock: it stands still until Advance or Set moves it.
// Its Now method fits the Now func() time.Time options of the module's
// packages. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that reads start until it is moved.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// interval is how often WaitFor checks its condition.
const interval = 5 * time.Millisecond

// WaitFor calls cond until it returns true, failing the test with a
// message naming what if timeout passes first. It must be called from
// the goroutine running the test.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, interval, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Poll calls cond every interval until it returns true or timeout has
// passed, and reports whether cond held. If cond never holds, its last
// call comes after timeout has passed. Poll is WaitFor for the waits that
// fail with a message of their own, or must not fail at all.
func Poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}
