package spool

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

const (
	// writeQueue is the capacity of the writer's request channel.
	writeQueue = 1024
	// maxBatchReqs and maxBatchBytes bound one group commit.
	maxBatchReqs  = 1024
	maxBatchBytes = 64 << 20
	// lazySyncInterval bounds how long state changes (attempts,
	// deliveries) may stay unsynced when no append forces an fsync.
	lazySyncInterval = time.Second
)

// writeReq is a request to the writer: records to append, or a rotation.
type writeReq struct {
	// buf holds one or more encoded records.
	buf []byte
	// durable requests are fsynced before they complete; the others are
	// synced with the next durable batch or within lazySyncInterval.
	durable bool
	// appends is the number of enqueue records in buf.
	appends int
	// rotate asks for a new segment instead of a write.
	rotate bool
	// done receives the result; nil for fire-and-forget requests.
	done chan writeResult
}

// writeResult is where a request's records landed (the first of them, or
// for a rotation the new segment), or why they did not.
type writeResult struct {
	seg *segment
	off int64
	err error
}

// writer is the single goroutine that appends to the log. It takes every
// request queued while it was busy, writes them all, and fsyncs once:
// concurrent appends share an fsync (group commit). The fsync runs in a
// goroutine of its own while the writer goes on writing what arrives
// meanwhile, which the next fsync covers as soon as this one is done:
// a request waits for one fsync and part of another, not for the writes
// of the batch before it too (a trace of the 16-connection benchmark had
// the writer spend a third of its time in write calls between fsyncs,
// with every caller waiting). Only the fsync call leaves the writer
// goroutine; all state stays in it. It never takes FileSpool.mu, which is
// held while requests are queued.
type writer struct {
	s      *FileSpool
	reqs   chan *writeReq
	exited chan struct{}

	seg    *segment
	bw     *bufio.Writer
	off    int64
	nextID uint64
	// dirty is true when records were written since the last fsync.
	dirty bool
	// broken is true after a failed fsync or truncation: the next write
	// goes to a new segment.
	broken bool

	// syncing is the batch whose fsync is in flight, if any; waiting
	// holds the durable batches written since it began, for the next
	// fsync. Both are in the current segment: a rotation settles them
	// first.
	syncing, waiting *syncBatch
	syncDone         chan syncResult
	// serialSync, set by benchmarks, makes every fsync wait in line as
	// before fsyncs were pipelined, for a comparison in one run.
	serialSync bool
	// holdCap, set by benchmarks, replaces maxHold; negative: no hold.
	holdCap time.Duration
	// After an fsync, the next one is held back until holdFor appends
	// wait (as many as the two batches in flight when it ended: the
	// callers just answered come back with their next requests) or until
	// hold fires, at most one fsync's time later; holdC is hold's channel
	// while it is armed. Without it, concurrent appenders split into two
	// groups taking turns, each fsync covering half of them.
	holdFor int
	hold    *time.Timer
	holdC   <-chan time.Time

	// fault, set by tests, can fail an operation ("write", "sync",
	// "create") before it is done.
	fault atomic.Pointer[func(op string) error]
}

// syncBatch is written requests waiting for an fsync to complete.
type syncBatch struct {
	seg     *segment
	start   int64 // the offset of the first record in seg
	reqs    []*writeReq
	offs    []int64
	appends int
}

// syncResult is the outcome of an fsync run by startSync.
type syncResult struct {
	err  error
	took time.Duration
}

func newWriter(s *FileSpool) *writer {
	return &writer{
		s:      s,
		reqs:   make(chan *writeReq, writeQueue),
		exited: make(chan struct{}),
		bw:     bufio.NewWriterSize(nil, 1<<20),
		// one fsync is in flight at a time
		syncDone: make(chan syncResult, 1),
		hold:     time.NewTimer(time.Hour),
	}
}

// maxHold bounds how long an fsync is held back for more appends.
const maxHold = 2 * time.Millisecond

func (w *writer) injected(op string) error {
	if f := w.fault.Load(); f != nil {
		return (*f)(op)
	}
	return nil
}

// run serves requests until the channel is closed, then syncs what is
// left.
func (w *writer) run() {
	defer close(w.exited)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	batch := make([]*writeReq, 0, 64)
	for {
		var r *writeReq
		var ok bool
		select {
		case r, ok = <-w.reqs:
		case res := <-w.syncDone:
			w.synced(res)
			continue
		case <-w.holdC:
			w.holdC, w.holdFor = nil, 0
			if w.syncing == nil {
				w.startSync()
			}
			continue
		case <-timer.C:
			armed = false
			w.settle()
			if w.dirty {
				if err := w.sync(0); err != nil {
					w.failed("lazy fsync", err)
				}
			}
			continue
		}
		if !ok {
			w.finish()
			return
		}
		batch = append(batch[:0], r)
		closed := false
		size := len(r.buf)
	drain:
		for len(batch) < maxBatchReqs && size < maxBatchBytes {
			select {
			case r, ok := <-w.reqs:
				if !ok {
					closed = true
					break drain
				}
				batch = append(batch, r)
				size += len(r.buf)
			default:
				break drain
			}
		}
		w.commit(batch)
		clear(batch)
		if closed {
			w.finish()
			return
		}
		if w.dirty && !armed {
			timer.Reset(lazySyncInterval)
			armed = true
		}
	}
}

// commit serves a batch: runs of writes, each synced once, separated by
// rotations.
func (w *writer) commit(batch []*writeReq) {
	for len(batch) > 0 {
		i := 0
		for i < len(batch) && !batch[i].rotate {
			i++
		}
		if i > 0 {
			w.write(batch[:i])
		}
		if i < len(batch) {
			err := w.rotate()
			reply(batch[i], writeResult{seg: w.seg, err: err})
			i++
		}
		batch = batch[i:]
	}
}

func reply(r *writeReq, res writeResult) {
	if r.done != nil {
		r.done <- res
	}
}

// write appends the records of reqs, fsyncs if any is durable, and
// replies. On failure the segment is truncated back to where the batch
// began and every request gets the error.
func (w *writer) write(reqs []*writeReq) {
	var err error
	if w.seg == nil || w.broken || w.off >= w.s.config().segmentSize {
		err = w.rotate()
	}
	start := w.off
	offs := make([]int64, len(reqs))
	durable, appends := false, 0
	for i, r := range reqs {
		if err != nil {
			break
		}
		offs[i] = w.off
		if err = w.injected("write"); err == nil {
			_, err = w.bw.Write(r.buf)
		}
		w.off += int64(len(r.buf))
		durable = durable || r.durable
		appends += r.appends
	}
	if err == nil {
		err = w.bw.Flush()
	}
	if err == nil {
		w.s.diskBytes.Add(w.off - w.seg.size.Swap(w.off))
		w.dirty = true
	}
	if err != nil {
		if w.seg != nil {
			w.truncate(start)
		}
		err = fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
		w.failed("write", err)
	}
	if err != nil || !durable {
		for i, r := range reqs {
			reply(r, writeResult{seg: w.seg, off: offs[i], err: err})
		}
		return
	}
	// The replies wait for an fsync (every request of the batch, as
	// before: a lazy one among durable ones is synced with them).
	if w.waiting == nil {
		w.waiting = &syncBatch{seg: w.seg, start: start}
	}
	b := w.waiting
	b.reqs = append(b.reqs, reqs...)
	b.offs = append(b.offs, offs...)
	b.appends += appends
	if w.syncing == nil && (w.holdC == nil || b.appends >= w.holdFor) {
		w.startSync()
	}
	if w.serialSync {
		w.settle()
	}
}

// startSync starts the fsync of the waiting batches. None may be in
// flight.
func (w *writer) startSync() {
	b := w.waiting
	if b == nil {
		return
	}
	if w.holdC != nil {
		w.hold.Stop()
		w.holdC, w.holdFor = nil, 0
	}
	w.syncing, w.waiting = b, nil
	// Writes from now on are not covered by this fsync.
	w.dirty = false
	f := b.seg.f
	go func() {
		start := time.Now()
		err := w.injected("sync")
		if err == nil {
			err = f.Sync()
		}
		w.syncDone <- syncResult{err: err, took: time.Since(start)}
	}()
}

// synced completes the batch whose fsync ended with res, and starts the
// next fsync if batches are waiting. After a failed fsync the page
// cache's state is unknown: the segment is cut back to where the batch
// began, which drops the waiting batches written after it too, every one
// of them fails, and writing goes on in a new segment.
func (w *writer) synced(res syncResult) {
	b := w.syncing
	w.syncing = nil
	if res.err != nil {
		w.broken = true
		w.dirty = true
		failed := b.reqs
		failedOffs := b.offs
		if wb := w.waiting; wb != nil {
			failed = append(failed, wb.reqs...)
			failedOffs = append(failedOffs, wb.offs...)
			w.waiting = nil
		}
		w.truncate(b.start)
		err := fmt.Errorf("%w: %w", queue.ErrUnavailable, res.err)
		w.failed("write", err)
		for i, r := range failed {
			reply(r, writeResult{seg: b.seg, off: failedOffs[i], err: err})
		}
		return
	}
	w.s.config().obs.FsyncDone(res.took, b.appends)
	for i, r := range b.reqs {
		reply(r, writeResult{seg: b.seg, off: b.offs[i]})
	}
	inFlight := b.appends
	if w.waiting != nil {
		inFlight += w.waiting.appends
	}
	limit := maxHold
	if w.holdCap != 0 {
		limit = w.holdCap
	}
	if w.serialSync || limit < 0 || inFlight <= 1 || (w.waiting != nil && w.waiting.appends >= inFlight) {
		w.startSync()
		return
	}
	w.holdFor = inFlight
	w.hold.Reset(min(res.took, limit))
	w.holdC = w.hold.C
}

// settle waits until every written batch is synced (or failed).
func (w *writer) settle() {
	for w.syncing != nil || w.waiting != nil {
		if w.syncing == nil {
			w.startSync()
		}
		w.synced(<-w.syncDone)
	}
}

// truncate drops what the current segment holds after off.
func (w *writer) truncate(off int64) {
	w.bw.Reset(w.seg.f)
	if err := w.seg.f.Truncate(off); err != nil {
		w.broken = true
	} else if _, err := w.seg.f.Seek(off, io.SeekStart); err != nil {
		w.broken = true
	}
	w.s.diskBytes.Add(off - w.seg.size.Swap(off))
	w.off = off
}

// sync fsyncs the current segment.
func (w *writer) sync(appends int) error {
	start := time.Now()
	err := w.injected("sync")
	if err == nil {
		err = w.seg.f.Sync()
	}
	if err != nil {
		return err
	}
	w.dirty = false
	w.s.config().obs.FsyncDone(time.Since(start), appends)
	return nil
}

// rotate seals the current segment and starts a new one.
func (w *writer) rotate() error {
	w.settle()
	if w.seg != nil && w.dirty {
		if err := w.sync(0); err != nil {
			w.failed("fsync before rotation", err)
		}
	}
	if err := w.injected("create"); err != nil {
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}
	path := filepath.Join(w.s.dir, segmentName(w.nextID))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}
	if err := syncDir(w.s.dir); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}
	seg := &segment{id: w.nextID, path: path, f: f}
	w.nextID++
	w.s.addSegment(seg)
	w.seg, w.off, w.dirty, w.broken = seg, 0, false, false
	w.bw.Reset(f)
	return nil
}

// finish syncs the last writes before the writer exits.
func (w *writer) finish() {
	w.settle()
	if w.seg != nil && w.dirty {
		if err := w.sync(0); err != nil {
			w.failed("final fsync", err)
		}
	}
}

func (w *writer) failed(op string, err error) {
	w.s.config().logger.Error("spool write failed", zap.String("op", op), zap.Error(err))
}
