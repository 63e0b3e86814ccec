package spool

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/queue"
)

func TestAppendReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	var want []string
	for i := range 10 {
		res := mustAppend(t, s, testEntry(i, 1000+i))
		if res.Duplicate || res.ID != testID(i) {
			t.Fatalf("Append = %+v", res)
		}
		want = append(want, testID(i))
	}
	closeSpool(t, s)

	s = open(t, dir, Options{})
	if got := infoIDs(s.List(queue.StatePending, 0)); !cmp.Equal(got, want) {
		t.Fatalf("pending after reopen = %v, want %v", got, want)
	}
	if got := infoIDs(s.List(queue.AnyState, 3)); !cmp.Equal(got, want[:3]) {
		t.Errorf("List(AnyState, 3) = %v", got)
	}
	for i := range 10 {
		e, err := s.Load(context.Background(), testID(i))
		if err != nil {
			t.Fatalf("Load(%s): %v", testID(i), err)
		}
		w := testEntry(i, 1000+i)
		if !bytes.Equal(e.Body, w.Body) || e.Header.Get("X-Atlas-Subject") != "client-1" || e.Received.IsZero() {
			t.Errorf("Load(%s) = %d bytes, header %v", testID(i), len(e.Body), e.Header)
		}
	}
	in, ok := s.Get(testID(3))
	if !ok || in.State != queue.StatePending || in.Size != 1003 || in.Attempts != 0 {
		t.Errorf("Get = %+v, %v", in, ok)
	}
	if _, err := s.Load(context.Background(), "nope"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Load(unknown) = %v, want ErrNotFound", err)
	}
	if st := s.Stats(); st.Pending != 10 || st.SkippedRecords != 0 || st.DiskBytes == 0 || st.OldestPending.IsZero() {
		t.Errorf("Stats = %+v", st)
	}
}

// TestReopenAfterCrash appends without closing, takes the files as a
// kill -9 would leave them, and checks that everything acknowledged is
// delivered after a restart.
func TestReopenAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{}) // no Deliver: everything stays pending
	const n = 50
	for i := range n {
		mustAppend(t, s, testEntry(i, 500))
	}
	crashed := copyDir(t, dir)

	rec := &recorder{}
	s2 := open(t, crashed, Options{Deliver: rec.Deliver, Concurrency: 1})
	testutil.WaitFor(t, 10*time.Second, "deliveries after the crash", func() bool { return s2.Stats().Delivered == n })
	var want []string
	for i := range n {
		want = append(want, testID(i))
	}
	if got := rec.ids(); !cmp.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	for _, d := range rec.deliveries() {
		if d.Header.Get("X-Atlas-Callback-Id") != d.ID || d.Attempt != 1 || len(d.Body) != 500 {
			t.Errorf("delivery %s: attempt %d, header %v, %d bytes", d.ID, d.Attempt, d.Header, len(d.Body))
		}
	}
}

func TestTornWrite(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := range 3 {
		mustAppend(t, s, testEntry(i, 2000))
	}
	closeSpool(t, s)
	seg := segmentFiles(t, dir)[0]
	offs := recordOffsets(t, seg)
	// Cut the last record in the middle of its body, as a crash during
	// the write would.
	if err := os.Truncate(seg, offs[2]+headerSize+100); err != nil {
		t.Fatal(err)
	}

	s = reopenDamaged(t, dir, []string{testID(0), testID(1)}, "torn record")
	if fi, _ := os.Stat(seg); fi.Size() != offs[2] {
		t.Errorf("segment is %d bytes, want it truncated to %d", fi.Size(), offs[2])
	}
	// Appends go after the last valid record, and the next open is clean.
	mustAppend(t, s, testEntry(2, 2000))
	closeSpool(t, s)
	s = open(t, dir, Options{})
	if st := s.Stats(); st.Pending != 3 || st.SkippedRecords != 0 {
		t.Errorf("after append and reopen: %+v", st)
	}
}

// reopenDamaged opens the spool in dir after damage to one record, and
// checks that exactly that record was skipped, with one warning holding
// warning, and that the callbacks left are want.
func reopenDamaged(t *testing.T, dir string, want []string, warning string) *FileSpool {
	t.Helper()
	logger, logs := observedLogger()
	s := open(t, dir, Options{Logger: logger})
	if got := infoIDs(s.List(queue.AnyState, 0)); !cmp.Equal(got, want) {
		t.Errorf("after the damage: %v, want %v", got, want)
	}
	if st := s.Stats(); st.SkippedRecords != 1 {
		t.Errorf("SkippedRecords = %d, want 1", st.SkippedRecords)
	}
	if logs.FilterMessageSnippet(warning).Len() != 1 {
		t.Errorf("no warning %q: %v", warning, logs.All())
	}
	return s
}

func TestZeroFilledTail(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	mustAppend(t, s, testEntry(0, 100))
	closeSpool(t, s)
	seg := segmentFiles(t, dir)[0]
	f, err := os.OpenFile(seg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 8192)) // a file extended but never written
	f.Close()

	s = open(t, dir, Options{})
	if st := s.Stats(); st.Pending != 1 || st.SkippedRecords != 1 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestChecksumMismatch(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := range 3 {
		mustAppend(t, s, testEntry(i, 2000))
	}
	closeSpool(t, s)
	seg := segmentFiles(t, dir)[0]
	offs := recordOffsets(t, seg)
	b, _ := os.ReadFile(seg)
	b[offs[1]+headerSize+1000] ^= 0x20 // a flipped bit in the middle record's body
	os.WriteFile(seg, b, 0o600)

	reopenDamaged(t, dir, []string{testID(0), testID(2)}, "corrupt record skipped")
	// The damaged bytes stay (they are not at the tail); appends follow.
	if fi, _ := os.Stat(seg); fi.Size() != int64(len(b)) {
		t.Errorf("segment size changed to %d", fi.Size())
	}
}

func TestDuplicateAppend(t *testing.T) {
	obs := &countingObserver{}
	s := open(t, t.TempDir(), Options{Observer: obs})
	mustAppend(t, s, testEntry(1, 100))
	before := s.Stats().DiskBytes
	res := mustAppend(t, s, testEntry(1, 100))
	if !res.Duplicate {
		t.Fatal("second Append of the same id: Duplicate = false")
	}
	if after := s.Stats().DiskBytes; after != before {
		t.Errorf("duplicate wrote %d bytes", after-before)
	}

	// Concurrent appends of one id: exactly one stores it.
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored := 0
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Append(context.Background(), testEntry(2, 100))
			if err != nil {
				t.Error(err)
				return
			}
			if !res.Duplicate {
				mu.Lock()
				stored++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if stored != 1 {
		t.Errorf("%d concurrent appends stored the id, want 1", stored)
	}
	if got := obs.syncedAppend.Load(); got != 2 {
		t.Errorf("%d appends written, want 2", got)
	}
}

func TestErrFull(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxDiskBytes: 100 << 10})
	var err error
	n := 0
	for ; n < 100; n++ {
		if _, err = s.Append(context.Background(), testEntry(n, 16<<10)); err != nil {
			break
		}
	}
	if !errors.Is(err, queue.ErrFull) || !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("Append past the bound = %v, want ErrFull matching ErrUnavailable", err)
	}
	if n != 6 {
		t.Errorf("%d appends of 16 KiB fitted in 100 KiB, want 6", n)
	}
	if st := s.Stats(); st.DiskBytes > 100<<10 || st.Pending != n {
		t.Errorf("Stats = %+v", st)
	}
	if _, ok := s.Get(testID(n)); ok {
		t.Error("the refused callback is stored")
	}
}

// TestWriteFailure checks that a failed write, fsync or segment creation
// (disk full, read-only file system) is an ErrUnavailable, leaves nothing
// behind, and does not break later appends.
func TestWriteFailure(t *testing.T) {
	for _, c := range []struct {
		ops   string // the operations that fail
		errno syscall.Errno
	}{
		{"write", syscall.ENOSPC},
		{"sync", syscall.EIO},
		{"write", syscall.EROFS},
		{"sync create", syscall.ENOSPC},
	} {
		t.Run(c.ops+" "+c.errno.Error(), func(t *testing.T) {
			dir := t.TempDir()
			logger, _ := observedLogger()
			s := open(t, dir, Options{Logger: logger})
			mustAppend(t, s, testEntry(0, 100))
			fault := func(op string) error {
				if strings.Contains(c.ops, op) {
					return &os.PathError{Op: op, Path: "segment", Err: c.errno}
				}
				return nil
			}
			s.w.fault.Store(&fault)
			_, err := s.Append(context.Background(), testEntry(1, 100))
			if !errors.Is(err, queue.ErrUnavailable) || !errors.Is(err, c.errno) {
				t.Fatalf("Append = %v, want ErrUnavailable and %v", err, c.errno)
			}
			if _, ok := s.Get(testID(1)); ok {
				t.Error("the failed callback is in the index")
			}
			if c.ops == "sync create" {
				// The failed fsync moves writes to a new segment, which
				// cannot be created either.
				if _, err := s.Append(context.Background(), testEntry(3, 100)); !errors.Is(err, c.errno) {
					t.Fatalf("Append after a failed fsync = %v", err)
				}
			}
			s.w.fault.Store(nil)
			mustAppend(t, s, testEntry(2, 100))
			// Atlas retries the failed one, which is accepted now.
			if res := mustAppend(t, s, testEntry(1, 100)); res.Duplicate {
				t.Error("retry of a failed append reported as a duplicate")
			}
			closeSpool(t, s)

			s = open(t, dir, Options{})
			if got := infoIDs(s.List(queue.AnyState, 0)); !cmp.Equal(got, []string{testID(0), testID(2), testID(1)}) {
				t.Errorf("after reopen: %v", got)
			}
			if st := s.Stats(); st.SkippedRecords != 0 {
				t.Errorf("SkippedRecords = %d", st.SkippedRecords)
			}
		})
	}
}

func TestReadOnlyDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root, which chmod does not stop from writing; TestWriteFailure covers ErrUnavailable with an injected ENOSPC")
	}
	dir := t.TempDir()
	s := open(t, dir, Options{})
	mustAppend(t, s, testEntry(0, 100))
	closeSpool(t, s)
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	for _, p := range segmentFiles(t, dir) {
		os.Chmod(p, 0o400)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Open of a read-only spool = %v, want ErrUnavailable", err)
	}
}

// TestGroupCommit checks that concurrent appends share fsyncs. The
// fsync is slowed to 5ms, as on a slow disk, so that the result does not
// depend on how busy the machine is.
func TestGroupCommit(t *testing.T) {
	obs := &countingObserver{}
	s := open(t, t.TempDir(), Options{Observer: obs})
	slow := func(op string) error {
		if op == "sync" {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}
	s.w.fault.Store(&slow)
	const n = 64
	entries := make([]queue.Entry, n)
	for i := range entries {
		entries[i] = testEntry(i, 16<<10)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := s.Append(context.Background(), e); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	fsyncs, appends := obs.fsyncs.Load(), obs.syncedAppend.Load()
	t.Logf("%d appends, %d fsyncs", appends, fsyncs)
	if appends != n {
		t.Errorf("%d appends synced, want %d", appends, n)
	}
	if fsyncs > n/8 {
		t.Errorf("%d fsyncs for %d concurrent appends, want at most %d", fsyncs, n, n/8)
	}
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open = %v, want ErrLocked", err)
	}
	// The flock alone also refuses (another process would meet it).
	if _, err := lockDir(dir); !errors.Is(err, ErrLocked) {
		t.Errorf("lockDir of an open spool = %v, want ErrLocked", err)
	}
	closeSpool(t, s)
	s = open(t, dir, Options{})
	closeSpool(t, s)
}

func TestClosed(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	mustAppend(t, s, testEntry(0, 10))
	closeSpool(t, s)
	ctx := context.Background()
	if _, err := s.Append(ctx, testEntry(1, 10)); !errors.Is(err, queue.ErrClosed) {
		t.Errorf("Append after Close = %v", err)
	}
	if err := s.Retry(ctx, testID(0)); !errors.Is(err, queue.ErrClosed) {
		t.Errorf("Retry after Close = %v", err)
	}
	if err := s.Delete(ctx, testID(0)); !errors.Is(err, queue.ErrClosed) {
		t.Errorf("Delete after Close = %v", err)
	}
	if err := s.Compact(ctx); !errors.Is(err, queue.ErrClosed) {
		t.Errorf("Compact after Close = %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{
		{Retention: -1}, {MaxAttempts: -1}, {BackoffMin: time.Minute, BackoffMax: time.Second}, {MaxDiskBytes: -5},
	} {
		if _, err := Open(t.TempDir(), o); err == nil {
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}
