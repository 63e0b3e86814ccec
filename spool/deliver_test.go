package spool

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/queue"
)

func TestDeliveryOrderOldestFirst(t *testing.T) {
	rec := &recorder{}
	s := open(t, t.TempDir(), Options{Concurrency: 1})
	var want []string
	for i := range 20 {
		mustAppend(t, s, testEntry(i, 100))
		want = append(want, testID(i))
	}
	// Delivery starts only now, with everything queued.
	if err := s.Reconfigure(Options{Concurrency: 1, Deliver: rec.Deliver}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "deliveries", func() bool { return s.Stats().Delivered == 20 })
	if got := rec.ids(); !cmp.Equal(got, want) {
		t.Errorf("delivery order %v, want %v", got, want)
	}
	in, _ := s.Get(testID(0))
	if in.State != queue.StateDelivered || in.Attempts != 1 || in.Delivered.IsZero() {
		t.Errorf("Get after delivery = %+v", in)
	}
}

func TestBackoffAndDeadLetter(t *testing.T) {
	var times []time.Time
	rec := &recorder{}
	rec.setFail(func(d queue.Delivery) error {
		times = append(times, time.Now()) // serialized: one callback
		return errors.New("boom")
	})
	obs := &countingObserver{}
	logger, logs := observedLogger()
	const (
		lo = 20 * time.Millisecond
		hi = 80 * time.Millisecond
	)
	s := open(t, t.TempDir(), Options{
		Deliver: rec.Deliver, BackoffMin: lo, BackoffMax: hi, MaxAttempts: 5, Observer: obs, Logger: logger,
	})
	mustAppend(t, s, testEntry(0, 100))
	testutil.WaitFor(t, 10*time.Second, "dead letter", func() bool { return s.Stats().Dead == 1 })

	ds := rec.deliveries()
	if len(ds) != 5 {
		t.Fatalf("%d attempts, want 5", len(ds))
	}
	for i, d := range ds {
		if d.Attempt != i+1 {
			t.Errorf("attempt %d numbered %d", i+1, d.Attempt)
		}
	}
	// Delays: 20, 40, 80, 80ms, each less up to 20% jitter.
	for i, want := range []time.Duration{lo, 2 * lo, hi, hi} {
		if got := times[i+1].Sub(times[i]); got < want*8/10 {
			t.Errorf("delay before attempt %d = %v, want at least %v", i+2, got, want*8/10)
		}
	}
	in, _ := s.Get(testID(0))
	if in.State != queue.StateDead || in.Attempts != 5 || in.LastError != "boom" {
		t.Errorf("dead callback: %+v", in)
	}
	if obs.dead.Load() != 1 || obs.outcome(queue.OutcomeFailed) != 5 {
		t.Errorf("observer: %d dead, %d failed", obs.dead.Load(), obs.outcome(queue.OutcomeFailed))
	}
	if logs.FilterMessageSnippet("dead-lettered").Len() != 1 {
		t.Errorf("no dead-letter warning: %v", logs.All())
	}

	// Replay: back to pending with attempts reset, then delivered.
	rec.setFail(nil)
	if err := s.Retry(context.Background(), testID(0)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "delivery after retry", func() bool { return s.Stats().Delivered == 1 })
	in, _ = s.Get(testID(0))
	if in.Attempts != 1 {
		t.Errorf("attempts after retry and delivery = %d, want 1", in.Attempts)
	}
	if ds := rec.deliveries(); ds[len(ds)-1].Attempt != 1 {
		t.Errorf("first attempt after retry numbered %d", ds[len(ds)-1].Attempt)
	}
}

// TestOperatorActions covers Retry, RetryAll, Delete and their errors,
// and that they survive a restart.
func TestOperatorActions(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	rec := &recorder{fail: func(queue.Delivery) error { return errors.New("down") }}
	s := open(t, dir, Options{Deliver: rec.Deliver, MaxAttempts: 1})
	for i := range 4 {
		mustAppend(t, s, testEntry(i, 100))
	}
	testutil.WaitFor(t, 10*time.Second, "dead letters", func() bool { return s.Stats().Dead == 4 })
	if got := infoIDs(s.List(queue.StateDead, 0)); len(got) != 4 {
		t.Fatalf("dead: %v", got)
	}
	if err := s.Delete(ctx, testID(3)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, testID(3)); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if err := s.Retry(ctx, "unknown"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Retry(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.RetryAll(ctx, queue.StateDelivered); err == nil {
		t.Error("RetryAll(delivered) succeeded")
	}
	closeSpool(t, s)

	rec.setFail(nil)
	s = open(t, dir, Options{Deliver: rec.Deliver})
	if st := s.Stats(); st.Dead != 3 || st.Pending != 0 {
		t.Fatalf("after reopen: %+v", st)
	}
	n, err := s.RetryAll(ctx, queue.StateDead)
	if err != nil || n != 3 {
		t.Fatalf("RetryAll = %d, %v", n, err)
	}
	testutil.WaitFor(t, 10*time.Second, "deliveries", func() bool { return s.Stats().Delivered == 3 })
	if err := s.Retry(ctx, testID(0)); !errors.Is(err, queue.ErrDelivered) {
		t.Errorf("Retry(delivered) = %v, want ErrDelivered", err)
	}
	if _, err := s.Load(ctx, testID(0)); !errors.Is(err, queue.ErrDelivered) {
		t.Errorf("Load(delivered) = %v, want ErrDelivered", err)
	}
	if err := s.Delete(ctx, testID(0)); err != nil {
		t.Errorf("Delete(delivered) = %v", err)
	}
	closeSpool(t, s)

	s = open(t, dir, Options{})
	if got := infoIDs(s.List(queue.StateDelivered, 0)); !cmp.Equal(got, []string{testID(1), testID(2)}) {
		t.Errorf("delivered after reopen: %v", got)
	}
	if st := s.Stats(); st.Pending+st.Dead != 0 {
		t.Errorf("after reopen: %+v", st)
	}
}

// TestReconfigureNoGapNoDouble swaps the deliverer while deliveries run:
// every callback is delivered exactly once, by one or the other.
func TestReconfigureNoGapNoDouble(t *testing.T) {
	var a, b atomic.Int64
	counts := make(map[string]*atomic.Int64)
	for i := range 200 {
		counts[testID(i)] = new(atomic.Int64)
	}
	deliverer := func(n *atomic.Int64) queue.DeliverFunc {
		return func(ctx context.Context, d queue.Delivery) error {
			n.Add(1)
			counts[d.ID].Add(1)
			time.Sleep(time.Millisecond)
			return nil
		}
	}
	s := open(t, t.TempDir(), Options{Deliver: deliverer(&a)})
	for i := range 200 {
		mustAppend(t, s, testEntry(i, 100))
		if i == 100 {
			if err := s.Reconfigure(Options{Deliver: deliverer(&b), Concurrency: 8}); err != nil {
				t.Fatal(err)
			}
		}
	}
	testutil.WaitFor(t, 10*time.Second, "deliveries", func() bool { return s.Stats().Delivered == 200 })
	for id, n := range counts {
		if n.Load() != 1 {
			t.Errorf("%s delivered %d times", id, n.Load())
		}
	}
	if a.Load() == 0 || b.Load() == 0 {
		t.Errorf("deliveries: %d by the first deliverer, %d by the second", a.Load(), b.Load())
	}
}

func TestDeliveryTimeoutAndPanic(t *testing.T) {
	obs := &countingObserver{}
	rec := &recorder{}
	rec.setFail(func(d queue.Delivery) error {
		if d.ID == testID(1) {
			panic("deliverer bug")
		}
		return nil
	})
	hang := func(ctx context.Context, d queue.Delivery) error {
		if d.ID == testID(0) {
			<-ctx.Done()
			return ctx.Err()
		}
		return rec.Deliver(ctx, d)
	}
	s := open(t, t.TempDir(), Options{Deliver: hang, DeliveryTimeout: 20 * time.Millisecond, BackoffMin: time.Hour, BackoffMax: time.Hour, Observer: obs})
	mustAppend(t, s, testEntry(0, 100))
	mustAppend(t, s, testEntry(1, 100))
	testutil.WaitFor(t, 10*time.Second, "two failed attempts", func() bool {
		a, _ := s.Get(testID(0))
		b, _ := s.Get(testID(1))
		return a.Attempts == 1 && b.Attempts == 1
	})
	if a, _ := s.Get(testID(0)); !strings.Contains(a.LastError, "timeout") {
		t.Errorf("timed out attempt: %+v", a)
	}
	if b, _ := s.Get(testID(1)); !strings.Contains(b.LastError, "panicked") {
		t.Errorf("panicking attempt: %+v", b)
	}
	if obs.outcome(queue.OutcomeTimeout) != 1 || obs.outcome(queue.OutcomeFailed) != 1 {
		t.Errorf("outcomes: canceled %d, timeout %d, failed %d", obs.outcome(queue.OutcomeCanceled), obs.outcome(queue.OutcomeTimeout), obs.outcome(queue.OutcomeFailed))
	}
}

// TestFirstAttemptFromMemory checks that a callback's first attempt
// delivers the record as appended, kept in memory, without reading the
// segment back, and that a retry reads it from the disk: with the body
// damaged on disk after the append, the first attempt delivers it whole
// and the retry fails on the checksum. Past the memory budget, records
// are read from the disk from the first attempt, and the budget is given
// back as records leave memory.
func TestFirstAttemptFromMemory(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{BackoffMin: time.Millisecond, BackoffMax: time.Millisecond, MaxAttempts: 2})
	e0, e1 := testEntry(0, 4000), testEntry(1, 4000)
	s.mu.Lock()
	s.memLimit = 6000 // one record of about 4 KB, not two
	s.mu.Unlock()
	mustAppend(t, s, e0)
	mustAppend(t, s, e1)
	s.mu.Lock()
	kept0, kept1, mem := s.entries[e0.ID].rec != nil, s.entries[e1.ID].rec != nil, s.memBytes
	size0 := int64(len(s.entries[e0.ID].rec))
	s.mu.Unlock()
	if !kept0 || kept1 || mem != size0 {
		t.Fatalf("in memory: %s %v, %s %v, %d bytes counted; want only the first", e0.ID, kept0, e1.ID, kept1, mem)
	}

	// Damage both bodies on disk: a flipped bit in the middle of each.
	seg := segmentFiles(t, dir)[0]
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range recordOffsets(t, seg)[:2] {
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, off+headerSize+2000); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x20
		if _, err := f.WriteAt(b, off+headerSize+2000); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()

	var rec recorder
	rec.setFail(func(queue.Delivery) error { return errors.New("app down") })
	if err := s.Reconfigure(Options{
		Deliver: rec.Deliver, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond, MaxAttempts: 2,
	}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "both callbacks dead", func() bool { return s.Stats().Dead == 2 })
	if got := rec.deliveries(); len(got) != 1 || got[0].ID != e0.ID || !bytes.Equal(got[0].Body, e0.Body) {
		t.Fatalf("deliveries %v, want only %s's first attempt, with its body as appended", rec.ids(), e0.ID)
	}
	for _, id := range []string{e0.ID, e1.ID} {
		info, ok := s.Get(id)
		if !ok || !strings.Contains(info.LastError, "checksum mismatch") {
			t.Errorf("%s: last error %q (found %v), want the damaged record's checksum mismatch", id, info.LastError, ok)
		}
	}
	s.mu.Lock()
	mem = s.memBytes
	s.mu.Unlock()
	if mem != 0 {
		t.Errorf("%d bytes still counted in memory after every first attempt", mem)
	}
}

// TestSpoolOverHTTP wires a spool to a receiver that fails, then recovers.
func TestSpoolOverHTTP(t *testing.T) {
	ok := make(chan bool, 1)
	ok <- false
	received := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := <-ok
		ok <- true
		if !v {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		received <- r.Header.Get("X-Atlas-Callback-Id") + " attempt " + r.Header.Get("X-Atlas-Attempt")
	}))
	defer srv.Close()
	s := open(t, t.TempDir(), Options{
		Deliver:    (&queue.HTTPDeliverer{URL: srv.URL}).Deliver,
		BackoffMin: time.Millisecond, BackoffMax: time.Millisecond,
	})
	mustAppend(t, s, testEntry(0, 100))
	select {
	case got := <-received:
		if got != testID(0)+" attempt 2" {
			t.Errorf("received %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
}
