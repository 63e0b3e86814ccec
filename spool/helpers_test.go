package spool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// clockStart is where the tests' fake clocks start.
var clockStart = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// countingObserver counts the Observer events.
type countingObserver struct {
	fsyncs       atomic.Int64 // fsyncs that made appends durable
	syncedAppend atomic.Int64
	lazyFsyncs   atomic.Int64
	dead         atomic.Int64
	mu           sync.Mutex
	outcomes     map[queue.Outcome]int
}

func (o *countingObserver) FsyncDone(_ time.Duration, appends int) {
	if appends == 0 {
		o.lazyFsyncs.Add(1)
		return
	}
	o.fsyncs.Add(1)
	o.syncedAppend.Add(int64(appends))
}

func (o *countingObserver) DeliveryAttempt(out queue.Outcome, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.outcomes == nil {
		o.outcomes = make(map[queue.Outcome]int)
	}
	o.outcomes[out]++
}

func (o *countingObserver) DeadLettered() { o.dead.Add(1) }

func (o *countingObserver) outcome(out queue.Outcome) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.outcomes[out]
}

// recorder is a DeliverFunc that records deliveries and fails those its
// fail function selects.
type recorder struct {
	mu   sync.Mutex
	got  []queue.Delivery
	fail func(d queue.Delivery) error
}

func (r *recorder) Deliver(ctx context.Context, d queue.Delivery) error {
	r.mu.Lock()
	r.got = append(r.got, d)
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		return fail(d)
	}
	return nil
}

func (r *recorder) setFail(f func(d queue.Delivery) error) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

func (r *recorder) deliveries() []queue.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]queue.Delivery(nil), r.got...)
}

// ids returns the ids delivered, in order.
func (r *recorder) ids() []string {
	var ids []string
	for _, d := range r.deliveries() {
		ids = append(ids, d.ID)
	}
	return ids
}

func (r *recorder) count(id string) int {
	n := 0
	for _, d := range r.deliveries() {
		if d.ID == id {
			n++
		}
	}
	return n
}

// open opens a spool and closes it at the end of the test.
func open(t testing.TB, dir string, opts Options) *FileSpool {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// closeSpool closes s, failing the test on error.
func closeSpool(t testing.TB, s *FileSpool) {
	t.Helper()
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// observedLogger returns a logger that records Warn and above.
func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.WarnLevel)
	return zap.New(core), logs
}

func testID(i int) string { return fmt.Sprintf("cb-%04d", i) }

func testEntry(i int, size int) queue.Entry {
	body := bytes.Repeat([]byte{'a' + byte(i%26)}, size)
	copy(body, fmt.Sprintf(`{"n":%d}`, i))
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Atlas-Callback-Id", testID(i))
	h.Set("X-Atlas-Subject", "client-1")
	return queue.Entry{ID: testID(i), Header: h, Body: body}
}

func mustAppend(t testing.TB, s *FileSpool, e queue.Entry) queue.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), e)
	if err != nil {
		t.Fatalf("Append(%s): %v", e.ID, err)
	}
	return res
}

// copyDir copies the spool's files as they are now: the disk as a kill -9
// would leave it (the page cache survives the process).
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	des, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		in, err := os.Open(filepath.Join(src, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
	return dst
}

// segmentFiles returns the paths of the segments in dir, ascending.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	ids, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, id := range ids {
		paths = append(paths, filepath.Join(dir, segmentName(id)))
	}
	return paths
}

// recordOffsets returns the offsets of the records of a segment file.
func recordOffsets(t testing.TB, path string) []int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off := 0; off < len(b); {
		_, n, err := DecodeRecord(b[off:])
		if err != nil {
			t.Fatalf("record at %d: %v", off, err)
		}
		offs = append(offs, int64(off))
		off += n
	}
	return offs
}

func infoIDs(infos []queue.Info) []string {
	var ids []string
	for _, in := range infos {
		ids = append(ids, in.ID)
	}
	return ids
}
