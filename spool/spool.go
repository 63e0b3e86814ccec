package spool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

// FileSpool is the queue.Store of one node: a directory of append-only log
// segments, an index in memory rebuilt from them by Open, a group-commit
// writer, and a delivery scheduler. Bodies stay on disk and are read at
// delivery time, so memory holds about 300 bytes per callback (pending,
// dead, or delivered within the retention window).
//
// One FileSpool owns its directory: Open fails with ErrLocked if another
// one, in this process or another, has it open. To keep a spool across
// configuration reloads, keep the FileSpool and call Reconfigure.
type FileSpool struct {
	dir       string
	lockFile  *os.File
	cfg       atomic.Pointer[config]
	w         *writer
	diskBytes atomic.Int64

	// mu guards the index and the scheduling state. It is held while
	// records are queued for the writer, so that the log order of
	// records is the order of the state changes.
	mu         sync.Mutex
	entries    map[string]*entry
	committing map[string]*commit
	seq        uint64
	ready      entryHeap
	wait       entryHeap
	inflight   int
	reserved   int64
	// memBytes is the size of the records that entries keep in memory
	// for their first delivery attempt (entry.rec), at most memLimit
	// (memRecordBytes; tests lower it).
	memBytes     int64
	memLimit     int64
	closing      bool
	writerClosed bool
	skipped      int
	// keyNames interns the entries' key ids.
	keyNames map[string]string
	// ghosts are the callbacks gone from the index whose records may
	// still be in segments that compaction has not rewritten since
	// (compact.go); epoch counts the compactions' snapshots.
	ghosts map[string]ghost
	epoch  uint64

	// segMu guards segs and the segments' reader counts. It may be taken
	// while holding mu, never the other way round.
	segMu sync.Mutex
	segs  map[uint64]*segment

	// compactMu serializes compactions.
	compactMu sync.Mutex

	kickc         chan struct{}
	maintc        chan struct{}
	stop          chan struct{}
	bgCtx         context.Context
	bgCancel      context.CancelFunc
	deliverCtx    context.Context
	deliverCancel context.CancelFunc
	bg            sync.WaitGroup
	deliveries    sync.WaitGroup
	// jobs hands a delivery to an idle delivery worker; workers counts
	// the workers, which outlive their deliveries (deliver.go).
	jobs    chan deliveryJob
	workers sync.WaitGroup
	closed  chan struct{}
}

var _ queue.Store = (*FileSpool)(nil)

// commit is an append being written; a concurrent append of the same id
// waits for it.
type commit struct {
	done chan struct{}
	err  error
}

// openDirs holds the directories open in this process, for platforms
// without flock and for a clearer error.
var openDirs = struct {
	sync.Mutex
	m map[string]bool
}{m: make(map[string]bool)}

// Open opens the spool in dir, creating the directory if needed, replays
// its log, and starts the writer and the delivery of pending callbacks.
// Torn or corrupt records are skipped with a warning (see
// Stats.SkippedRecords); a torn tail is truncated.
func Open(dir string, opts Options) (*FileSpool, error) {
	cfg, err := resolve(opts)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return nil, fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
		}
		// Make the new directory's entry durable too.
		if err := syncDir(filepath.Dir(abs)); err != nil {
			return nil, fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
		}
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	openDirs.Lock()
	if openDirs.m[abs] {
		openDirs.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrLocked, abs)
	}
	openDirs.m[abs] = true
	openDirs.Unlock()

	s := &FileSpool{
		dir:        abs,
		entries:    make(map[string]*entry),
		committing: make(map[string]*commit),
		wait:       entryHeap{byTime: true},
		segs:       make(map[uint64]*segment),
		kickc:      make(chan struct{}, 1),
		maintc:     make(chan struct{}, 1),
		stop:       make(chan struct{}),
		jobs:       make(chan deliveryJob),
		memLimit:   memRecordBytes,
		closed:     make(chan struct{}),
		ghosts:     make(map[string]ghost),
		epoch:      1,
	}
	s.cfg.Store(cfg)
	s.w = newWriter(s)
	if err := s.load(cfg); err != nil {
		s.releaseFiles()
		return nil, err
	}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	s.deliverCtx, s.deliverCancel = context.WithCancel(context.Background())
	go s.w.run()
	s.bg.Add(2)
	go s.dispatch()
	go s.maintain()

	if s.needsMigration(cfg) {
		s.kickMaintenance()
	}
	st := s.Stats()
	cfg.logger.Info("spool opened", zap.String("dir", abs), zap.Int("pending", st.Pending),
		zap.Int("dead", st.Dead), zap.Int("delivered", st.Delivered), zap.Int64("disk_bytes", st.DiskBytes),
		zap.Int("segments", st.Segments), zap.Int("skipped_records", st.SkippedRecords))
	return s, nil
}

// load locks the directory, replays the segments into the index, and
// readies the writer.
func (s *FileSpool) load(cfg *config) error {
	lf, err := lockDir(s.dir)
	if err != nil {
		if errors.Is(err, ErrLocked) {
			return fmt.Errorf("%w: %s", ErrLocked, s.dir)
		}
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}
	s.lockFile = lf
	ids, err := listSegments(s.dir)
	if err != nil {
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}

	// A compacted segment supersedes every lower one; those left behind
	// by a crash during compaction go now.
	for i := len(ids) - 1; i > 0; i-- {
		if !isBase(filepath.Join(s.dir, segmentName(ids[i]))) {
			continue
		}
		for _, id := range ids[:i] {
			if err := os.Remove(filepath.Join(s.dir, segmentName(id))); err != nil {
				return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
			}
		}
		if err := syncDir(s.dir); err != nil {
			return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
		}
		ids = ids[i:]
		break
	}

	for i, id := range ids {
		last := i == len(ids)-1
		seg := &segment{id: id, path: filepath.Join(s.dir, segmentName(id))}
		flag := os.O_RDONLY
		if last {
			flag = os.O_RDWR
		}
		if seg.f, err = os.OpenFile(seg.path, flag, 0); err != nil {
			return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
		}
		s.segs[id] = seg
		fi, err := seg.f.Stat()
		if err != nil {
			return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
		}
		warn := func(msg string, off, n int64, err error) {
			cfg.logger.Warn(msg, zap.String("segment", seg.path), zap.Int64("offset", off),
				zap.Int64("bytes", n), zap.Error(err))
		}
		res, err := scan(seg.f, fi.Size(), func(r *Record, off, n int64) { s.apply(r, seg, off, n) }, warn)
		if err != nil {
			return fmt.Errorf("%w: reading %s: %w", queue.ErrUnavailable, seg.path, err)
		}
		s.skipped += res.skipped
		size := fi.Size()
		if res.torn {
			s.skipped++
			// Only the segment being written when the process stopped can
			// have a torn tail; cut it so that appends follow valid records.
			if last {
				if err := seg.f.Truncate(res.end); err != nil {
					return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
				}
				if err := seg.f.Sync(); err != nil {
					return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
				}
				size = res.end
			}
		}
		seg.size.Store(size)
		s.diskBytes.Add(size)
	}

	if n := len(ids); n > 0 {
		seg := s.segs[ids[n-1]]
		if _, err := seg.f.Seek(seg.size.Load(), io.SeekStart); err != nil {
			return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
		}
		s.w.seg, s.w.off, s.w.nextID = seg, seg.size.Load(), seg.id+1
		s.w.bw.Reset(seg.f)
	} else {
		s.w.nextID = 1
		if err := s.w.rotate(); err != nil {
			return err
		}
	}

	now := cfg.now()
	for _, e := range s.entries {
		s.schedule(e, now)
	}
	for _, seg := range s.segs {
		if seg.letGoAtOpen {
			seg.purgeDue = now.Add(cfg.purgeDelay)
		}
	}
	return nil
}

// config returns the current configuration.
func (s *FileSpool) config() *config { return s.cfg.Load() }

// Dir returns the spool's directory (absolute, symlinks resolved).
func (s *FileSpool) Dir() string { return s.dir }

// Reconfigure applies new options to an open spool, e.g. after a
// configuration reload. Deliveries in progress finish with the old
// Deliver; the next ones use the new. Nothing is delivered twice and
// nothing waits for the change.
func (s *FileSpool) Reconfigure(opts Options) error {
	cfg, err := resolve(opts)
	if err != nil {
		return err
	}
	old := s.cfg.Swap(cfg)
	if !slices.Equal(old.keyring.KeyIDs(), cfg.keyring.KeyIDs()) {
		// Another keyring may open what the last one could not.
		s.mu.Lock()
		for _, e := range s.entries {
			e.unsealable = false
		}
		s.mu.Unlock()
	}
	s.kick()
	s.kickMaintenance()
	return nil
}

// Append implements queue.Store. It encodes e, queues it for the writer, and
// waits until the record is fsynced, sharing the fsync with the appends
// queued meanwhile. Once queued, the record is written even if ctx is
// done: Append then still waits, so that the index matches the log, and
// returns the outcome of the write.
func (s *FileSpool) Append(ctx context.Context, e queue.Entry) (queue.AppendResult, error) {
	res := queue.AppendResult{ID: e.ID}
	if err := validateEntry(&e); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	cfg := s.config()
	if e.Received.IsZero() {
		e.Received = cfg.now()
	}
	var rec []byte
	key := ""
	if cfg.keyring != nil {
		rec = appendSealed(make([]byte, 0, enqueueSize(e.ID, e.Header, e.Body)), cfg.keyring, e.ID, e.Received, e.Header, e.Body)
		key = cfg.keyring.SealingKeyID()
	} else {
		rec = appendRecord(make([]byte, 0, enqueueSize(e.ID, e.Header, e.Body)), &Record{
			Type: RecordEnqueue, ID: e.ID, Time: e.Received, Header: e.Header, Body: e.Body,
		})
	}
	size := int64(len(rec))

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return res, queue.ErrClosed
	}
	if old := s.entries[e.ID]; old != nil && !expired(old, cfg.now(), cfg.retention) {
		s.mu.Unlock()
		res.Duplicate = true
		return res, nil
	}
	if c := s.committing[e.ID]; c != nil {
		s.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return res, ctx.Err()
		}
		if c.err != nil {
			return res, c.err
		}
		res.Duplicate = true
		return res, nil
	}
	if s.diskBytes.Load()+s.reserved+size > cfg.maxDiskBytes {
		s.mu.Unlock()
		s.kickMaintenance()
		return res, queue.ErrFull
	}
	req := &writeReq{buf: rec, durable: true, appends: 1, done: make(chan writeResult, 1)}
	if err := s.send(ctx, req); err != nil {
		s.mu.Unlock()
		return res, err
	}
	c := &commit{done: make(chan struct{})}
	s.committing[e.ID] = c
	s.reserved += size
	s.seq++
	seq := s.seq
	s.mu.Unlock()

	wr := <-req.done

	s.mu.Lock()
	delete(s.committing, e.ID)
	s.reserved -= size
	c.err = wr.err
	if wr.err == nil {
		var floor uint64
		if old := s.entries[e.ID]; old != nil {
			s.remove(old) // an expired tombstone
			floor = old.lowest()
		}
		en := &entry{
			id: e.ID, seq: seq, state: queue.StatePending, received: e.Received, size: int64(len(e.Body)),
			seg: wr.seg, off: wr.off, n: size, key: s.internKey(key), next: e.Received, hidx: -1, floor: floor,
		}
		if s.memBytes+size <= s.memLimit {
			// rec is the record as written, and nothing changes it now:
			// the first attempt need not read it back.
			en.rec = rec
			s.memBytes += size
		}
		s.entries[e.ID] = en
		s.schedule(en, cfg.now())
	}
	s.mu.Unlock()
	close(c.done)
	if wr.err != nil {
		return res, wr.err
	}
	s.kick()
	return res, nil
}

// send queues req for the writer. The caller holds s.mu.
func (s *FileSpool) send(ctx context.Context, req *writeReq) error {
	if s.writerClosed {
		return queue.ErrClosed
	}
	select {
	case s.w.reqs <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// logState queues state-change records without waiting for them: losing
// them in a crash only means a redelivery. The caller holds s.mu.
func (s *FileSpool) logState(recs ...*Record) {
	var buf []byte
	for _, r := range recs {
		buf = appendRecord(buf, r)
	}
	_ = s.send(context.Background(), &writeReq{buf: buf})
}

// logDurable queues records that must be fsynced and returns the channel
// of the result. The caller holds s.mu.
func (s *FileSpool) logDurable(ctx context.Context, recs []*Record) (chan writeResult, error) {
	var buf []byte
	for _, r := range recs {
		buf = appendRecord(buf, r)
	}
	req := &writeReq{buf: buf, durable: true, done: make(chan writeResult, 1)}
	if err := s.send(ctx, req); err != nil {
		return nil, err
	}
	return req.done, nil
}

// awaitDurable waits for the result of logDurable, after s.mu is
// released.
func (s *FileSpool) awaitDurable(done chan writeResult, what string, ids int) error {
	wr := <-done
	if wr.err != nil {
		s.config().logger.Error("operator change applied but not persisted; a restart undoes it",
			zap.String("change", what), zap.Int("callbacks", ids), zap.Error(wr.err))
	}
	return wr.err
}

// lookup returns the entry of id unless it is unknown or expired. The
// caller holds s.mu.
func (s *FileSpool) lookup(id string, cfg *config) *entry {
	e := s.entries[id]
	if e == nil || expired(e, cfg.now(), cfg.retention) {
		return nil
	}
	return e
}

// Get implements queue.Store.
func (s *FileSpool) Get(id string) (queue.Info, bool) {
	cfg := s.config()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.lookup(id, cfg)
	if e == nil {
		return queue.Info{}, false
	}
	return e.info(), true
}

// Load implements queue.Store.
func (s *FileSpool) Load(ctx context.Context, id string) (queue.Entry, error) {
	if err := ctx.Err(); err != nil {
		return queue.Entry{}, err
	}
	cfg := s.config()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return queue.Entry{}, queue.ErrClosed
	}
	e := s.lookup(id, cfg)
	switch {
	case e == nil:
		s.mu.Unlock()
		return queue.Entry{}, queue.ErrNotFound
	case e.state == queue.StateDelivered || e.n == 0:
		s.mu.Unlock()
		return queue.Entry{}, queue.ErrDelivered
	}
	seg, off, n := e.seg, e.off, e.n
	s.acquire(seg)
	s.mu.Unlock()
	defer s.release(seg)
	r, err := readEnqueue(seg, off, n, id, cfg.keyring)
	if err != nil {
		return queue.Entry{}, err
	}
	return queue.Entry{ID: r.ID, Header: r.Header, Body: r.Body, Received: r.Time}, nil
}

// readEnqueue reads and checks the enqueue record of id, and opens it
// with kr if it is sealed.
func readEnqueue(seg *segment, off, n int64, id string, kr *seal.Keyring) (Record, error) {
	buf := make([]byte, n)
	if _, err := seg.f.ReadAt(buf, off); err != nil {
		return Record{}, fmt.Errorf("%w: reading callback %s: %w", queue.ErrUnavailable, id, err)
	}
	return decodeEnqueue(buf, id, kr)
}

// decodeEnqueue checks that buf holds the enqueue record of id, decodes
// it, and opens it with kr if it is sealed. The record's body is a
// subslice of buf (or, sealed, a new buffer).
func decodeEnqueue(buf []byte, id string, kr *seal.Keyring) (Record, error) {
	r, _, err := DecodeRecord(buf)
	if err != nil {
		return Record{}, fmt.Errorf("reading callback %s: %w", id, err)
	}
	if !isEnqueue(r.Type) || r.ID != id {
		return Record{}, fmt.Errorf("%w: reading callback %s: found %s record of %q", ErrCorrupt, id, r.Type, r.ID)
	}
	if err := openRecord(kr, &r, true); err != nil {
		return Record{}, err
	}
	return r, nil
}

// List implements queue.Store.
func (s *FileSpool) List(state queue.State, limit int) []queue.Info {
	cfg := s.config()
	now := cfg.now()
	s.mu.Lock()
	es := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		if (state == queue.AnyState || e.state == state) && !expired(e, now, cfg.retention) {
			es = append(es, e)
		}
	}
	slices.SortFunc(es, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	if limit > 0 && len(es) > limit {
		es = es[:limit]
	}
	out := make([]queue.Info, len(es))
	for i, e := range es {
		out[i] = e.info()
	}
	s.mu.Unlock()
	return out
}

// Retry implements queue.Store.
func (s *FileSpool) Retry(ctx context.Context, id string) error {
	cfg := s.config()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return queue.ErrClosed
	}
	e := s.lookup(id, cfg)
	switch {
	case e == nil:
		s.mu.Unlock()
		return queue.ErrNotFound
	case e.state == queue.StateDelivered:
		s.mu.Unlock()
		return queue.ErrDelivered
	}
	now := cfg.now()
	done, err := s.logDurable(ctx, []*Record{{Type: RecordRetry, ID: id, Time: now}})
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.retry(e, now)
	s.mu.Unlock()
	s.kick()
	return s.awaitDurable(done, "retry", 1)
}

// retry makes e pending and due now with its attempts reset. The caller
// holds s.mu.
func (s *FileSpool) retry(e *entry, now time.Time) {
	s.unschedule(e)
	e.state, e.attempts, e.next = queue.StatePending, 0, now
	s.schedule(e, now)
}

// RetryAll implements queue.Store.
func (s *FileSpool) RetryAll(ctx context.Context, state queue.State) (int, error) {
	if state != queue.StateDead && state != queue.StatePending {
		return 0, fmt.Errorf("spool: cannot retry %s callbacks", state)
	}
	cfg := s.config()
	now := cfg.now()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return 0, queue.ErrClosed
	}
	var es []*entry
	var recs []*Record
	for _, e := range s.entries {
		if e.state == state {
			es = append(es, e)
			recs = append(recs, &Record{Type: RecordRetry, ID: e.id, Time: now})
		}
	}
	if len(es) == 0 {
		s.mu.Unlock()
		return 0, nil
	}
	done, err := s.logDurable(ctx, recs)
	if err != nil {
		s.mu.Unlock()
		return 0, err
	}
	for _, e := range es {
		s.retry(e, now)
	}
	s.mu.Unlock()
	s.kick()
	return len(es), s.awaitDurable(done, "retry all", len(es))
}

// Delete implements queue.Store.
func (s *FileSpool) Delete(ctx context.Context, id string) error {
	cfg := s.config()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return queue.ErrClosed
	}
	e := s.lookup(id, cfg)
	if e == nil {
		s.mu.Unlock()
		return queue.ErrNotFound
	}
	done, err := s.logDurable(ctx, []*Record{{Type: RecordDelete, ID: id, Time: cfg.now()}})
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.remove(e)
	s.addGhost(e.id, e.lowest(), s.epoch)
	if e.n > 0 {
		s.letGo(e.seg, cfg.now(), cfg)
	}
	s.mu.Unlock()
	return s.awaitDurable(done, "delete", 1)
}

// Stats implements queue.Store.
func (s *FileSpool) Stats() queue.Stats {
	cfg := s.config()
	now := cfg.now()
	var st queue.Stats
	s.mu.Lock()
	for _, e := range s.entries {
		if expired(e, now, cfg.retention) {
			continue
		}
		switch e.state {
		case queue.StatePending:
			st.Pending++
			if st.OldestPending.IsZero() || e.received.Before(st.OldestPending) {
				st.OldestPending = e.received
			}
		case queue.StateDead:
			st.Dead++
		case queue.StateDelivered:
			st.Delivered++
		}
		st.LiveBytes += e.liveBytes()
		st.Keys = countKey(st.Keys, e)
	}
	st.InFlight = s.inflight
	st.SkippedRecords = s.skipped
	s.mu.Unlock()
	st.DiskBytes = s.diskBytes.Load()
	s.segMu.Lock()
	st.Segments = len(s.segs)
	s.segMu.Unlock()
	return st
}

// Close implements queue.Store. It stops the scheduler and compaction, waits
// for the deliveries in progress until ctx is done and then cancels them
// (they stay pending), syncs the log and releases the directory. It
// returns an error wrapping ctx.Err() if deliveries had to be cancelled.
// Closing again returns nil once the first Close is done.
func (s *FileSpool) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		select {
		case <-s.closed:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.closing = true
	s.mu.Unlock()

	close(s.stop)
	s.bgCancel()
	s.bg.Wait()
	// Wait for a Compact call in progress, which sees bgCtx done.
	s.compactMu.Lock()
	//lint:ignore SA2001 the empty critical section is that wait
	s.compactMu.Unlock()

	var cerr error
	n := 0
	if queue.WaitDeliveries(ctx, &s.deliveries, func() {
		s.mu.Lock()
		n = s.inflight
		s.mu.Unlock()
		s.deliverCancel()
	}) {
		cerr = fmt.Errorf("spool: close: %d deliveries in progress cancelled, they stay pending: %w", n, ctx.Err())
	}
	s.deliverCancel()
	// The delivery workers have seen stop; none has a delivery left.
	s.workers.Wait()

	s.mu.Lock()
	s.writerClosed = true
	close(s.w.reqs)
	s.mu.Unlock()
	<-s.w.exited

	s.releaseFiles()
	close(s.closed)
	return cerr
}

// releaseFiles closes the segments and the lock and forgets the
// directory.
func (s *FileSpool) releaseFiles() {
	s.segMu.Lock()
	for _, seg := range s.segs {
		seg.dropped = true
		if seg.refs == 0 {
			seg.f.Close()
		}
	}
	s.segMu.Unlock()
	if s.lockFile != nil {
		unlockDir(s.lockFile)
	}
	openDirs.Lock()
	delete(openDirs.m, s.dir)
	openDirs.Unlock()
}

// addSegment registers a new segment.
func (s *FileSpool) addSegment(seg *segment) {
	s.segMu.Lock()
	s.segs[seg.id] = seg
	s.segMu.Unlock()
}

// acquire keeps seg's file open until release. The caller holds s.mu, so
// that compaction cannot drop seg between reading an entry's location
// and acquiring it.
func (s *FileSpool) acquire(seg *segment) {
	s.segMu.Lock()
	seg.refs++
	s.segMu.Unlock()
}

func (s *FileSpool) release(seg *segment) {
	s.segMu.Lock()
	seg.refs--
	if seg.dropped && seg.refs == 0 {
		seg.f.Close()
	}
	s.segMu.Unlock()
}

// kick wakes the dispatcher.
func (s *FileSpool) kick() {
	select {
	case s.kickc <- struct{}{}:
	default:
	}
}

// kickMaintenance wakes the maintenance goroutine.
func (s *FileSpool) kickMaintenance() {
	select {
	case s.maintc <- struct{}{}:
	default:
	}
}
