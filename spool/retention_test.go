package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/queue"
)

// markedEntry is a callback whose body holds a marker of its own.
func markedEntry(i int) queue.Entry {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return queue.Entry{ID: testID(i), Header: h, Body: []byte(fmt.Sprintf(`{"marker":%q,"pad":"%0500d"}`, bodyMarker(i), 0))}
}

func bodyMarker(i int) string { return fmt.Sprintf("BODY-MARKER-%04d", i) }

// onDisk reports whether any file in dir holds the body marker of i.
func onDisk(t *testing.T, dir string, i int) bool {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(bodyMarker(i))) {
			return true
		}
	}
	return false
}

type expiryObserver struct {
	queue.NopObserver
	expired atomic.Int64
}

func (o *expiryObserver) DeadLetterExpired() { o.expired.Add(1) }

// TestDeliveredBodiesPurged: the bodies of delivered and deleted
// callbacks are gone from every spool file within PurgeDelay (plus one
// compaction), with no other compaction trigger; the pending one stays.
// The spool has no key, so that the markers can be searched for.
func TestDeliveredBodiesPurged(t *testing.T) {
	const purgeDelay = 300 * time.Millisecond
	dir := t.TempDir()
	rec := &recorder{fail: func(d queue.Delivery) error {
		if d.ID == testID(2) || d.ID == testID(3) {
			return errors.New("rejected")
		}
		return nil
	}}
	s := open(t, dir, Options{Deliver: rec.Deliver, PurgeDelay: purgeDelay, BackoffMin: time.Hour, BackoffMax: time.Hour})
	for i := range 4 {
		mustAppend(t, s, markedEntry(i))
	}
	testutil.WaitFor(t, 10*time.Second, "deliveries", func() bool { return s.Stats().Delivered == 2 && len(rec.deliveries()) == 4 })
	delivered := time.Now()
	if err := s.Delete(context.Background(), testID(3)); err != nil {
		t.Fatal(err)
	}
	// Still there just after: what removes them is the purge.
	if !onDisk(t, dir, 0) || !onDisk(t, dir, 3) {
		t.Fatal("bodies gone at once; the test would not see the purge")
	}
	testutil.WaitFor(t, 10*time.Second, "delivered and deleted bodies gone from disk", func() bool {
		return !onDisk(t, dir, 0) && !onDisk(t, dir, 1) && !onDisk(t, dir, 3)
	})
	if took := time.Since(delivered); took > purgeDelay+5*time.Second {
		t.Errorf("bodies gone %v after delivery, want within the purge delay %v plus a compaction", took, purgeDelay)
	}
	if !onDisk(t, dir, 2) {
		t.Error("the pending callback's body is gone")
	}
	if e, err := s.Load(context.Background(), testID(2)); err != nil || !bytes.Equal(e.Body, markedEntry(2).Body) {
		t.Errorf("Load of the pending callback: %v", err)
	}
	if res := mustAppend(t, s, markedEntry(0)); !res.Duplicate {
		t.Error("a delivered id is no longer deduplicated after the purge")
	}

	// A delivery after the purge sets a new deadline.
	rec.setFail(nil)
	if err := s.Retry(context.Background(), testID(2)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the second purge", func() bool { return s.Stats().Delivered == 3 && !onDisk(t, dir, 2) })
}

// TestPurgeAfterReopen: bodies of callbacks delivered before a restart
// (no compaction since) are purged within PurgeDelay of the reopen.
func TestPurgeAfterReopen(t *testing.T) {
	dir := t.TempDir()
	rec := &recorder{}
	s := open(t, dir, Options{Deliver: rec.Deliver})
	mustAppend(t, s, markedEntry(0))
	testutil.WaitFor(t, 10*time.Second, "delivery", func() bool { return s.Stats().Delivered == 1 })
	closeSpool(t, s)
	if !onDisk(t, dir, 0) {
		t.Fatal("body gone before the reopen")
	}
	s = open(t, dir, Options{PurgeDelay: 100 * time.Millisecond})
	testutil.WaitFor(t, 10*time.Second, "the purge after the reopen", func() bool { return !onDisk(t, dir, 0) })
	if in, ok := s.Get(testID(0)); !ok || in.State != queue.StateDelivered {
		t.Errorf("after the purge: %+v, %v", in, ok)
	}
}

// TestDeadLetterRetention: a dead letter keeps its body for
// DeadLetterRetention after its last attempt, then is purged, counted,
// logged, and its body leaves the disk; a retried one starts again.
func TestDeadLetterRetention(t *testing.T) {
	const retention = 400 * time.Millisecond
	dir := t.TempDir()
	obs := &expiryObserver{}
	logger, logs := observedLogger()
	rec := &recorder{fail: func(queue.Delivery) error { return errors.New("rejected") }}
	s := open(t, dir, Options{Deliver: rec.Deliver, MaxAttempts: 1, DeadLetterRetention: retention,
		PurgeDelay: 50 * time.Millisecond, Observer: obs, Logger: logger})
	mustAppend(t, s, markedEntry(0))
	mustAppend(t, s, markedEntry(1))
	testutil.WaitFor(t, 10*time.Second, "dead letters", func() bool { return s.Stats().Dead == 2 })
	in, _ := s.Get(testID(0))
	if !onDisk(t, dir, 0) {
		t.Fatal("dead letter's body not on disk")
	}
	testutil.WaitFor(t, 10*time.Second, "the purge of the dead letters", func() bool { return s.Stats().Dead == 0 })
	if age := time.Since(in.LastAttempt); age < retention {
		t.Errorf("dead letter purged %v after its last attempt, before the retention %v", age, retention)
	}
	// The counts change under the spool's lock; the observer and the
	// log hear of it just after.
	testutil.WaitFor(t, 5*time.Second, "the purges observed and logged", func() bool {
		return obs.expired.Load() >= 2 && logs.FilterMessageSnippet("dead letter purged").Len() >= 2
	})
	if n := obs.expired.Load(); n != 2 {
		t.Errorf("DeadLetterExpired called %d times, want 2", n)
	}
	if n := logs.FilterMessageSnippet("dead letter purged").Len(); n != 2 {
		t.Errorf("%d purge log lines, want 2", n)
	}
	if _, ok := s.Get(testID(0)); ok {
		t.Error("purged dead letter still listed")
	}
	testutil.WaitFor(t, 10*time.Second, "purged bodies gone from disk", func() bool { return !onDisk(t, dir, 0) && !onDisk(t, dir, 1) })
	closeSpool(t, s)
	s = open(t, dir, Options{})
	if st := s.Stats(); st.Dead != 0 || st.Pending != 0 {
		t.Errorf("purged dead letters back after a reopen: %+v", st)
	}
}

// TestDeadLetterRetentionClock: the boundary, with a fake clock: a dead
// letter is kept until DeadLetterRetention after its last attempt, a
// retry that fails again restarts the count.
func TestDeadLetterRetentionClock(t *testing.T) {
	clock := testutil.NewClock(clockStart)
	rec := &recorder{fail: func(queue.Delivery) error { return errors.New("rejected") }}
	s := open(t, t.TempDir(), Options{Deliver: rec.Deliver, Now: clock.Now, MaxAttempts: 1})
	mustAppend(t, s, markedEntry(0))
	testutil.WaitFor(t, 10*time.Second, "dead letter", func() bool { return s.Stats().Dead == 1 })
	cfg := s.config()
	clock.Advance(DefaultDeadLetterRetention - time.Minute)
	if next := s.expireDeadLetters(cfg); s.Stats().Dead != 1 || !next.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("before the retention: %+v, next expiry %v", s.Stats(), next)
	}
	if err := s.Retry(context.Background(), testID(0)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "dead again", func() bool { return s.Stats().Dead == 1 && s.Stats().InFlight == 0 })
	clock.Advance(2 * time.Minute)
	if s.expireDeadLetters(cfg); s.Stats().Dead != 1 {
		t.Fatal("a retried dead letter expired on its first death's count")
	}
	clock.Advance(DefaultDeadLetterRetention)
	if next := s.expireDeadLetters(cfg); s.Stats().Dead != 0 || !next.IsZero() {
		t.Fatalf("after the retention: %+v, next %v", s.Stats(), next)
	}
}
