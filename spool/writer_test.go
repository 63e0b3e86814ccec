package spool

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/queue"
)

// TestFailedFsyncFailsTheBatchWrittenMeanwhile: the writer goes on
// writing while an fsync runs; when that fsync fails, the segment is cut
// back to where its batch began, so the batch written meanwhile is lost
// too and must fail as well, never be acknowledged. Both are accepted
// afterwards, and a reopened spool holds exactly the acknowledged ones.
func TestFailedFsyncFailsTheBatchWrittenMeanwhile(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	mustAppend(t, s, testEntry(0, 100))

	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	fault := func(op string) error {
		if op != "sync" {
			return nil
		}
		first := false
		once.Do(func() { first = true })
		if !first {
			return nil // the fsync that would cover the second batch
		}
		close(started)
		<-release
		return &os.PathError{Op: "fsync", Path: "segment", Err: syscall.EIO}
	}
	s.w.fault.Store(&fault)

	errs := make(chan error, 2)
	go func() { _, err := s.Append(context.Background(), testEntry(1, 100)); errs <- err }()
	<-started
	before := s.Stats().DiskBytes
	go func() { _, err := s.Append(context.Background(), testEntry(2, 100)); errs <- err }()
	// Wait until the second callback is written, behind the fsync.
	testutil.WaitFor(t, 5*time.Second, "the second append to be written while the first fsync runs", func() bool {
		return s.Stats().DiskBytes != before
	})
	close(release)
	for range 2 {
		if err := <-errs; !errors.Is(err, queue.ErrUnavailable) || !errors.Is(err, syscall.EIO) {
			t.Fatalf("Append = %v, want ErrUnavailable and EIO", err)
		}
	}
	for _, i := range []int{1, 2} {
		if _, ok := s.Get(testID(i)); ok {
			t.Errorf("%s failed but is in the index", testID(i))
		}
	}
	s.w.fault.Store(nil)
	mustAppend(t, s, testEntry(3, 100))
	mustAppend(t, s, testEntry(2, 100))
	closeSpool(t, s)

	s = open(t, dir, Options{})
	if got := infoIDs(s.List(queue.AnyState, 0)); !cmp.Equal(got, []string{testID(0), testID(3), testID(2)}) {
		t.Errorf("after reopen: %v", got)
	}
	if st := s.Stats(); st.SkippedRecords != 0 {
		t.Errorf("SkippedRecords = %d", st.SkippedRecords)
	}
}

// TestGroupCommitMergesTurns: appenders that come back as soon as they are
// answered share one fsync, rather than splitting into two groups that
// take turns (the writer holds the next fsync back, for at most one
// fsync's time, until as many appends wait as were in flight).
func TestGroupCommitMergesTurns(t *testing.T) {
	obs := &countingObserver{}
	s := open(t, t.TempDir(), Options{Observer: obs})
	slow := func(op string) error {
		if op == "sync" {
			time.Sleep(3 * time.Millisecond)
		}
		return nil
	}
	s.w.fault.Store(&slow)
	const appenders, rounds = 16, 20
	var wg sync.WaitGroup
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				if _, err := s.Append(context.Background(), testEntry(a*rounds+r, 1<<10)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	per := float64(obs.syncedAppend.Load()) / float64(obs.fsyncs.Load())
	// Two groups taking turns would make about appenders/2 per fsync.
	if per < appenders*0.65 {
		t.Errorf("%.1f appends per fsync with %d appenders, want most of them in each", per, appenders)
	}
}
