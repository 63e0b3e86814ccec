package testutil

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	c := NewClock(Epoch)
	if got := c.Now(); !got.Equal(Epoch) {
		t.Fatalf("Now = %v, want %v", got, Epoch)
	}
	time.Sleep(time.Millisecond)
	if got := c.Now(); !got.Equal(Epoch) {
		t.Fatalf("the clock moved by itself: %v", got)
	}
	c.Advance(90 * time.Second)
	if got, want := c.Now(), Epoch.Add(90*time.Second); !got.Equal(want) {
		t.Fatalf("after Advance: %v, want %v", got, want)
	}
	later := Epoch.Add(24 * time.Hour)
	c.Set(later)
	if got := c.Now(); !got.Equal(later) {
		t.Fatalf("after Set: %v, want %v", got, later)
	}
	c.Set(Epoch) // backwards too
	if got := c.Now(); !got.Equal(Epoch) {
		t.Fatalf("after Set back: %v, want %v", got, Epoch)
	}
}

// TestClockConcurrent is for the race detector, and checks that no
// Advance is lost.
func TestClockConcurrent(t *testing.T) {
	c := NewClock(Epoch)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				c.Advance(time.Second)
				_ = c.Now()
			}
		})
	}
	wg.Wait()
	if got, want := c.Now(), Epoch.Add(800*time.Second); !got.Equal(want) {
		t.Fatalf("Now = %v, want %v", got, want)
	}
}

func TestPoll(t *testing.T) {
	var calls atomic.Int64
	if !Poll(5*time.Second, time.Millisecond, func() bool { return calls.Add(1) == 3 }) {
		t.Fatal("Poll = false for a condition that came to hold")
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}

	start := time.Now()
	var last time.Time
	if Poll(30*time.Millisecond, time.Millisecond, func() bool { last = time.Now(); return false }) {
		t.Fatal("Poll = true for a condition that never held")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Poll took %v for a 30ms timeout", el)
	}
	if d := last.Sub(start); d < 30*time.Millisecond {
		t.Errorf("the last check came %v after the start, before the 30ms timeout", d)
	}
}

// fakeTB records what a test helper reports; embedding testing.TB gives
// it the methods it does not define (calling one panics).
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestWaitFor(t *testing.T) {
	ft := &fakeTB{}
	var calls atomic.Int64
	WaitFor(ft, 5*time.Second, "the third call", func() bool { return calls.Add(1) == 3 })
	if ft.failed != "" {
		t.Fatalf("WaitFor failed for a condition that came to hold: %s", ft.failed)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}

	ft = &fakeTB{}
	WaitFor(ft, 20*time.Millisecond, "the impossible", func() bool { return false })
	if ft.failed == "" {
		t.Fatal("WaitFor did not fail for a condition that never held")
	}
	for _, want := range []string{"the impossible", "20ms"} {
		if !strings.Contains(ft.failed, want) {
			t.Errorf("failure %q does not name %q", ft.failed, want)
		}
	}
}
