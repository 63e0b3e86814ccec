package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/queue"
)

// TestCompaction: delivered bodies go at the next compaction, delivered
// ids after the retention window; pending and dead callbacks survive with
// their attempts, through a reopen.
func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	clock := testutil.NewClock(clockStart)
	const retention = time.Hour
	// Even ids are delivered, odd ones rejected: 1 and 3 are dead after
	// one attempt, the later odd ones pending for an hour after theirs.
	rec := &recorder{fail: func(d queue.Delivery) error {
		var n int
		for _, c := range d.ID[len("cb-"):] {
			n = n*10 + int(c-'0')
		}
		if n%2 == 1 {
			return errors.New("rejected")
		}
		return nil
	}}
	opts := Options{
		Deliver: rec.Deliver, Now: clock.Now, Retention: retention, MaxAttempts: 1,
		BackoffMin: time.Hour, BackoffMax: time.Hour,
	}
	s := open(t, dir, opts)
	for i := range 4 {
		mustAppend(t, s, testEntry(i, 16<<10))
	}
	testutil.WaitFor(t, 10*time.Second, "dead letters", func() bool { return s.Stats().Dead == 2 })
	opts.MaxAttempts = 5
	if err := s.Reconfigure(opts); err != nil {
		t.Fatal(err)
	}
	for i := 4; i < 20; i++ {
		mustAppend(t, s, testEntry(i, 16<<10))
	}
	testutil.WaitFor(t, 10*time.Second, "first attempts", func() bool {
		st := s.Stats()
		return st.Delivered == 10 && len(rec.deliveries()) == 20 && st.InFlight == 0
	})

	before := s.Stats()
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	mid := s.Stats()
	if mid.DiskBytes >= before.DiskBytes*6/10 {
		t.Errorf("compaction within retention: %d -> %d bytes, want the delivered bodies gone", before.DiskBytes, mid.DiskBytes)
	}
	if mid.Delivered != 10 || mid.Pending != 8 || mid.Dead != 2 {
		t.Errorf("after compaction within retention: %+v", mid)
	}
	if res := mustAppend(t, s, testEntry(0, 16<<10)); !res.Duplicate {
		t.Error("a delivered id within retention is not a duplicate after compaction")
	}

	clock.Advance(retention + time.Minute)
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := s.Stats()
	if after.Delivered != 0 || after.Pending != 8 || after.Dead != 2 {
		t.Errorf("after retention: %+v", after)
	}
	if after.DiskBytes >= mid.DiskBytes {
		t.Errorf("compaction after retention: %d -> %d bytes", mid.DiskBytes, after.DiskBytes)
	}
	if got := len(segmentFiles(t, dir)); got != 2 || after.Segments != 2 {
		t.Errorf("%d segment files (%d in Stats), want the compacted one and the current one", got, after.Segments)
	}
	closeSpool(t, s)

	s = open(t, dir, Options{Now: clock.Now, Retention: retention})
	got := s.Stats()
	if got.Pending != 8 || got.Dead != 2 || got.Delivered != 0 || got.SkippedRecords != 0 {
		t.Errorf("after reopen: %+v", got)
	}
	for _, i := range []int{1, 3, 5, 19} {
		in, _ := s.Get(testID(i))
		e, err := s.Load(context.Background(), testID(i))
		if err != nil || !bytes.Equal(e.Body, testEntry(i, 16<<10).Body) {
			t.Errorf("Load(%s) after compaction and reopen: %v", testID(i), err)
		}
		wantState := queue.StatePending
		if i < 5 {
			wantState = queue.StateDead
		}
		if in.State != wantState || in.Attempts != 1 || in.LastError != "rejected" {
			t.Errorf("%s after reopen: %+v", testID(i), in)
		}
	}
	want := []string{testID(5), testID(7), testID(9), testID(11), testID(13), testID(15), testID(17), testID(19)}
	if ids := infoIDs(s.List(queue.StatePending, 0)); !cmp.Equal(ids, want) {
		t.Errorf("pending after reopen: %v, want %v", ids, want)
	}
}

// TestDedupeWindow: a duplicate within retention is acknowledged but not
// delivered again; after retention and compaction it is a new callback.
func TestDedupeWindow(t *testing.T) {
	clock := testutil.NewClock(clockStart)
	rec := &recorder{}
	s := open(t, t.TempDir(), Options{Deliver: rec.Deliver, Now: clock.Now, Retention: 24 * time.Hour})
	mustAppend(t, s, testEntry(7, 100))
	testutil.WaitFor(t, 10*time.Second, "delivery", func() bool { return s.Stats().Delivered == 1 })

	clock.Advance(23 * time.Hour)
	if res := mustAppend(t, s, testEntry(7, 100)); !res.Duplicate {
		t.Error("duplicate within retention accepted")
	}
	mustAppend(t, s, testEntry(8, 100))
	testutil.WaitFor(t, 10*time.Second, "delivery", func() bool { return s.Stats().Delivered == 2 })
	if n := rec.count(testID(7)); n != 1 {
		t.Errorf("duplicate delivered %d times", n)
	}

	clock.Advance(2 * time.Hour)
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get(testID(7)); ok {
		t.Error("delivered callback remembered past retention")
	}
	if res := mustAppend(t, s, testEntry(7, 100)); res.Duplicate {
		t.Error("callback refused after its retention window")
	}
	testutil.WaitFor(t, 10*time.Second, "second delivery", func() bool { return rec.count(testID(7)) == 2 })
}

// TestCompactionCrashLeftovers: a crash after the compacted segment was
// renamed into place but before the old segments were removed, and one
// before the rename, both reopen to the right state.
func TestCompactionCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	rec := &recorder{}
	s := open(t, dir, Options{Deliver: rec.Deliver, SegmentSize: 32 << 10})
	for i := range 10 {
		mustAppend(t, s, testEntry(i, 8<<10))
	}
	testutil.WaitFor(t, 10*time.Second, "deliveries", func() bool { return s.Stats().Delivered == 10 })
	s.Reconfigure(Options{SegmentSize: 32 << 10}) // no more deliveries
	for i := 10; i < 15; i++ {
		mustAppend(t, s, testEntry(i, 8<<10))
	}
	closeSpool(t, s)
	oldSegs := segmentFiles(t, dir)
	if len(oldSegs) < 3 {
		t.Fatalf("%d segments, want several", len(oldSegs))
	}
	saved := map[string][]byte{}
	for _, p := range oldSegs {
		saved[p], _ = os.ReadFile(p)
	}

	s = open(t, dir, Options{})
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	closeSpool(t, s)

	// Put back the segments that compaction removed, and a temporary file.
	for p, b := range saved {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			os.WriteFile(p, b, 0o600)
		}
	}
	os.WriteFile(filepath.Join(dir, segmentName(99)+tmpExt), []byte("partial"), 0o600)

	s = open(t, dir, Options{})
	st := s.Stats()
	if st.Pending != 5 || st.Delivered != 10 || st.SkippedRecords != 0 {
		t.Errorf("after reopen with leftovers: %+v", st)
	}
	if got := len(segmentFiles(t, dir)); got != 2 {
		t.Errorf("%d segments after reopen, want the leftovers removed", got)
	}
	if _, err := os.Stat(filepath.Join(dir, segmentName(99)+tmpExt)); !errors.Is(err, os.ErrNotExist) {
		t.Error("temporary file not removed")
	}
}

// TestCompactionConcurrent runs compactions while callbacks are appended
// and delivered, then checks the log against the index after a reopen.
func TestCompactionConcurrent(t *testing.T) {
	dir := t.TempDir()
	rec := &recorder{fail: func(d queue.Delivery) error {
		if d.ID[len(d.ID)-1]%3 == 0 {
			return errors.New("no")
		}
		return nil
	}}
	s := open(t, dir, Options{Deliver: rec.Deliver, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		MaxAttempts: 3, SegmentSize: 64 << 10})
	ctx, cancel := context.WithCancel(context.Background())
	compactor := make(chan struct{})
	compactions := 0
	go func() {
		defer close(compactor)
		for ctx.Err() == nil {
			if err := s.Compact(ctx); err != nil && ctx.Err() == nil {
				t.Error(err)
			}
			compactions++
		}
	}()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				mustAppend(t, s, testEntry(w*1000+i, 1<<10))
			}
		}()
	}
	wg.Wait()
	testutil.WaitFor(t, 10*time.Second, "deliveries", func() bool { st := s.Stats(); return st.Pending == 0 && st.InFlight == 0 })
	cancel()
	<-compactor
	t.Logf("%d compactions meanwhile", compactions)
	want := s.List(queue.AnyState, 0)
	if len(want) != 400 {
		t.Fatalf("%d callbacks, want 400", len(want))
	}
	closeSpool(t, s)

	s = open(t, dir, Options{})
	got := s.List(queue.AnyState, 0)
	if st := s.Stats(); st.SkippedRecords != 0 || st.Dead+st.Delivered != 400 {
		t.Errorf("after reopen: %+v", st)
	}
	for i := range got {
		got[i].InFlight, want[i].InFlight = false, false
		// Replay keeps what the records say; times round to the nanosecond.
		if got[i].ID != want[i].ID || got[i].State != want[i].State || got[i].Attempts != want[i].Attempts {
			t.Errorf("callback %d: after reopen %+v, before %+v", i, got[i], want[i])
		}
	}
}

// bigMarkedEntry is markedEntry with a 4 KiB body.
func bigMarkedEntry(i int) queue.Entry {
	e := markedEntry(i)
	e.Body = []byte(fmt.Sprintf(`{"marker":%q,"pad":"%04000d"}`, bodyMarker(i), 0))
	return e
}

// fileIDs returns the identity (inode) of each file in paths.
func fileIDs(t *testing.T, paths []string) map[string]os.FileInfo {
	t.Helper()
	m := map[string]os.FileInfo{}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		m[p] = fi
	}
	return m
}

// TestStandingDeadLettersNotRewritten: the compactions that purge the
// bodies of a stream of delivered callbacks leave the segment holding a
// backlog of dead letters as it is, the same file; the delivered bodies
// still leave the disk within PurgeDelay.
func TestStandingDeadLettersNotRewritten(t *testing.T) {
	const purgeDelay = 200 * time.Millisecond
	dir := t.TempDir()
	rec := &recorder{fail: func(d queue.Delivery) error {
		if d.ID < testID(100) {
			return errors.New("rejected")
		}
		return nil
	}}
	s := open(t, dir, Options{Deliver: rec.Deliver, MaxAttempts: 1, PurgeDelay: purgeDelay, SegmentSize: 64 << 10})
	for i := range 40 {
		mustAppend(t, s, bigMarkedEntry(i))
	}
	testutil.WaitFor(t, 10*time.Second, "dead letters", func() bool { return s.Stats().Dead == 40 && s.Stats().InFlight == 0 })
	// One segment of dead letters, then the one being written.
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	standing := segmentFiles(t, dir)
	standing = standing[:len(standing)-1]
	before := fileIDs(t, standing)
	content := map[string][]byte{}
	for _, p := range standing {
		content[p], _ = os.ReadFile(p)
	}

	for round := range 3 {
		for i := range 30 {
			mustAppend(t, s, bigMarkedEntry(100+30*round+i))
		}
		testutil.WaitFor(t, 10*time.Second, "deliveries", func() bool { return s.Stats().Delivered == 30*(round+1) })
		delivered := time.Now()
		testutil.WaitFor(t, 10*time.Second, "delivered bodies gone from disk", func() bool {
			for i := range 30 {
				if onDisk(t, dir, 100+30*round+i) {
					return false
				}
			}
			return true
		})
		if took := time.Since(delivered); took > purgeDelay+5*time.Second {
			t.Errorf("round %d: bodies gone %v after delivery, want within the purge delay %v", round, took, purgeDelay)
		}
	}
	for p, fi := range before {
		now, err := os.Stat(p)
		if err != nil {
			t.Fatalf("standing segment %s: %v", filepath.Base(p), err)
		}
		if b, _ := os.ReadFile(p); !os.SameFile(fi, now) || !bytes.Equal(b, content[p]) {
			t.Errorf("standing segment %s rewritten", filepath.Base(p))
		}
	}
	closeSpool(t, s)
	s = open(t, dir, Options{})
	if st := s.Stats(); st.Dead != 40 || st.Delivered != 90 || st.SkippedRecords != 0 {
		t.Errorf("after reopen: %+v", st)
	}
	for i := range 40 {
		if e, err := s.Load(context.Background(), testID(i)); err != nil || !bytes.Equal(e.Body, bigMarkedEntry(i).Body) {
			t.Errorf("Load(%s) after reopen: %v", testID(i), err)
		}
	}
}

// TestPurgeRewritesOnlyItsSegment: a dead letter deleted from the oldest
// of several segments of dead letters leaves the disk within PurgeDelay,
// by a rewrite of that segment alone.
func TestPurgeRewritesOnlyItsSegment(t *testing.T) {
	const purgeDelay = 200 * time.Millisecond
	dir := t.TempDir()
	rec := &recorder{fail: func(queue.Delivery) error { return errors.New("rejected") }}
	s := open(t, dir, Options{Deliver: rec.Deliver, MaxAttempts: 1, PurgeDelay: purgeDelay, SegmentSize: 32 << 10})
	for i := range 30 {
		mustAppend(t, s, bigMarkedEntry(i))
	}
	testutil.WaitFor(t, 10*time.Second, "dead letters", func() bool { return s.Stats().Dead == 30 && s.Stats().InFlight == 0 })
	segs := segmentFiles(t, dir)
	if len(segs) < 4 {
		t.Fatalf("%d segments, want at least 4", len(segs))
	}
	before := fileIDs(t, segs)
	if err := s.Delete(context.Background(), testID(1)); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	testutil.WaitFor(t, 10*time.Second, "the deleted body gone from disk", func() bool { return !onDisk(t, dir, 1) })
	if took := time.Since(deleted); took > purgeDelay+5*time.Second {
		t.Errorf("body gone %v after the delete, want within the purge delay %v", took, purgeDelay)
	}
	after := fileIDs(t, segs[:len(segs)-1])
	if os.SameFile(before[segs[0]], after[segs[0]]) {
		t.Error("the segment of the deleted body was not rewritten")
	}
	for _, p := range segs[1 : len(segs)-1] {
		if !os.SameFile(before[p], after[p]) {
			t.Errorf("segment %s rewritten too", filepath.Base(p))
		}
	}
	closeSpool(t, s)
	s = open(t, dir, Options{})
	if _, ok := s.Get(testID(1)); ok {
		t.Error("the deleted callback is back after a reopen")
	}
	if st := s.Stats(); st.Dead != 29 || st.SkippedRecords != 0 {
		t.Errorf("after reopen: %+v", st)
	}
}

// compactSegment compacts the sealed segment id alone, as a purge would.
func compactSegment(t *testing.T, s *FileSpool, id uint64) {
	t.Helper()
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	s.segMu.Lock()
	seg := s.segs[id]
	lowest := true
	for other := range s.segs {
		lowest = lowest && other >= id
	}
	s.segMu.Unlock()
	if seg == nil {
		t.Fatalf("no segment %d", id)
	}
	if err := s.compactRun(context.Background(), s.config(), run{segs: []*segment{seg}, base: lowest}); err != nil {
		t.Fatal(err)
	}
}

// TestSegmentCompactionKeepsDeletes: compacting the segment holding a
// delete record before the one holding the deleted body keeps the delete
// (the callback stays deleted across a reopen); once the body's segment
// is rewritten too, the delete record goes at the next compaction.
func TestSegmentCompactionKeepsDeletes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 32 << 10})
	for i := range 8 {
		mustAppend(t, s, bigMarkedEntry(i))
	}
	if err := s.Delete(context.Background(), testID(0)); err != nil {
		t.Fatal(err)
	}
	for i := 8; i < 20; i++ {
		mustAppend(t, s, bigMarkedEntry(i))
	}
	ids, _ := listSegments(dir)
	if len(ids) < 3 {
		t.Fatalf("%d segments, want 3", len(ids))
	}
	// The delete record is in the second segment, the body in the first.
	compactSegment(t, s, ids[1])
	closeSpool(t, s)
	s = open(t, dir, Options{SegmentSize: 32 << 10})
	if _, ok := s.Get(testID(0)); ok {
		t.Fatal("deleted callback back after its delete record's segment was compacted alone")
	}
	if !onDisk(t, dir, 0) {
		t.Fatal("the body is gone already; the test would not see the delete kept")
	}
	compactSegment(t, s, ids[0])
	compactSegment(t, s, ids[1])
	if n := len(s.ghosts); n != 0 {
		t.Errorf("%d ghosts left after both segments were rewritten", n)
	}
	b, _ := os.ReadFile(filepath.Join(dir, segmentName(ids[1])))
	for off := 0; off < len(b); {
		r, n, err := DecodeRecord(b[off:])
		if err != nil {
			t.Fatal(err)
		}
		if r.Type == RecordDelete {
			t.Errorf("delete record of %s kept", r.ID)
		}
		off += n
	}
	closeSpool(t, s)
	s = open(t, dir, Options{})
	if _, ok := s.Get(testID(0)); ok || onDisk(t, dir, 0) {
		t.Error("deleted callback back after both segments were compacted")
	}
	if st := s.Stats(); st.Pending != 19 || st.SkippedRecords != 0 {
		t.Errorf("after reopen: %+v", st)
	}
}
