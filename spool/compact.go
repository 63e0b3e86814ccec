package spool

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

const (
	// maintainInterval is how often the need for compaction is checked.
	maintainInterval = time.Minute
	// compactMinBytes is the least garbage worth a compaction (or an
	// eighth of MaxDiskBytes if that is less).
	compactMinBytes = 16 << 20
)

// needsCompaction reports whether the log's garbage exceeds both the
// live data and compactMinBytes, the spool is nearly full, or records
// are to be rewritten under the keyring's first key.
func (s *FileSpool) needsCompaction() bool {
	cfg := s.config()
	st := s.Stats()
	garbage := st.DiskBytes - st.LiveBytes
	if garbage >= max(st.LiveBytes, min(compactMinBytes, cfg.maxDiskBytes/8)) {
		return true
	}
	if st.DiskBytes >= cfg.maxDiskBytes/10*9 && garbage >= cfg.maxDiskBytes/10 {
		return true
	}
	return s.needsMigration(cfg)
}

// Compact rewrites the log without its garbage: bodies of delivered and
// deleted callbacks, superseded state records, and delivered callbacks
// past the retention window, which are forgotten (their ids are accepted
// again). With Options.Keyring, what it keeps is rewritten under the
// first key: plaintext records and records under another key of the
// keyring; records it cannot open are kept as they are. The spool
// compacts itself when needed (and when a record is to be rewritten under
// the first key); Compact forces it. Appends and deliveries go on
// meanwhile.
func (s *FileSpool) Compact(ctx context.Context) error {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return queue.ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.bgCtx, cancel)()
	return s.compact(ctx)
}

// snapItem is an entry's state when compaction started.
type snapItem struct {
	e           *entry
	seq         uint64
	state       queue.State
	received    time.Time
	size        int64
	attempts    int
	lastErr     string
	lastAttempt time.Time
	next        time.Time
	delivered   time.Time
	seg         *segment
	off, n      int64
	// unsealable: an earlier compaction could not open the record with
	// this keyring; it is copied as it is.
	unsealable bool
}

// compact seals the segment being written, then replaces every sealed
// segment by one holding the state of their entries: a base record, then
// for each pending or dead callback its enqueue record (copied) and its
// attempt and dead records, and for each delivered one within the
// retention window a delivered record. State changes made while it runs
// are in the newer segments, replayed after the compacted one; records
// are absolute, so replaying them again is harmless.
//
// Crash safety: the new segment is written to a temporary file, fsynced,
// renamed over the newest sealed segment, and the directory fsynced,
// before the older segments are removed. Its base record tells Open to
// remove any older segment that a crash left behind.
func (s *FileSpool) compact(ctx context.Context) (err error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	cfg := s.config()
	started := time.Now()

	// Seal the current segment; the appends queued before the rotation
	// landed in the sealed ones and must be in the index before the
	// snapshot.
	req := &writeReq{rotate: true, done: make(chan writeResult, 1)}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return queue.ErrClosed
	}
	commits := make([]*commit, 0, len(s.committing))
	for _, c := range s.committing {
		commits = append(commits, c)
	}
	// Every body let go so far is in a segment sealed now.
	purgeDue := s.purgeDue
	s.purgeDue = time.Time{}
	defer func() {
		if err != nil {
			s.purgeFailed(purgeDue, cfg)
		}
	}()
	err = s.send(ctx, req)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	wr := <-req.done
	if wr.err != nil {
		return wr.err
	}
	cut := wr.seg.id
	for _, c := range commits {
		<-c.done
	}

	s.segMu.Lock()
	var old []*segment
	for id, seg := range s.segs {
		if id < cut {
			old = append(old, seg)
		}
	}
	s.segMu.Unlock()
	if len(old) == 0 {
		return nil
	}
	slices.SortFunc(old, func(a, b *segment) int { return cmp.Compare(a.id, b.id) })
	target := old[len(old)-1].id

	// Snapshot the entries homed in the sealed segments.
	now := cfg.now()
	forgotten := 0
	var items []snapItem
	s.mu.Lock()
	for _, e := range s.entries {
		if e.seg.id >= cut {
			continue
		}
		if expired(e, now, cfg.retention) {
			s.remove(e)
			forgotten++
			continue
		}
		it := snapItem{
			e: e, seq: e.seq, state: e.state, received: e.received, size: e.size, attempts: e.attempts,
			lastErr: e.lastErr, lastAttempt: e.lastAttempt, next: e.next, delivered: e.delivered,
			unsealable: e.unsealable,
		}
		if e.state != queue.StateDelivered && e.n > 0 {
			it.seg, it.off, it.n = e.seg, e.off, e.n
			s.acquire(e.seg)
		}
		items = append(items, it)
	}
	s.mu.Unlock()
	defer func() {
		for _, it := range items {
			if it.seg != nil {
				s.release(it.seg)
			}
		}
	}()
	slices.SortFunc(items, func(a, b snapItem) int { return cmp.Compare(a.seq, b.seq) })

	final := filepath.Join(s.dir, segmentName(target))
	tmp := final + tmpExt
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	const (
		noBody   = -1
		lostBody = -2
	)
	newOff := make([]int64, len(items))
	newN := make([]int64, len(items))
	newKey := make([]string, len(items))
	unsealable := make([]bool, len(items))
	resealed, kept := 0, 0
	var keptErr error
	if err := func() error {
		bw := bufio.NewWriterSize(f, 1<<20)
		var off int64
		var buf, sealBuf []byte
		put := func(b []byte) error {
			_, err := bw.Write(b)
			off += int64(len(b))
			return err
		}
		if err := put(appendRecord(nil, &Record{Type: RecordBase, Segment: target})); err != nil {
			return err
		}
		for i, it := range items {
			if err := ctx.Err(); err != nil {
				return err
			}
			if it.state == queue.StateDelivered {
				newOff[i] = noBody
				buf = appendRecord(buf[:0], &Record{Type: RecordDelivered, ID: it.e.id, Time: it.delivered,
					Received: it.received, Size: it.size, Attempts: it.attempts})
				if err := put(buf); err != nil {
					return err
				}
				continue
			}
			if it.seg == nil {
				newOff[i] = lostBody
				continue
			}
			if int64(cap(buf)) < it.n {
				buf = make([]byte, it.n)
			}
			raw := buf[:it.n]
			if _, err := it.seg.f.ReadAt(raw, it.off); err != nil {
				return err
			}
			r, _, err := DecodeRecord(raw)
			if err != nil || !isEnqueue(r.Type) || r.ID != it.e.id {
				cfg.logger.Error("spool compaction: callback record unreadable, dropped",
					zap.String("callback_id", it.e.id), zap.String("segment", it.seg.path), zap.Error(err))
				newOff[i] = lostBody
				continue
			}
			was := keyOf(&r)
			out, key, err := raw, was, error(nil)
			if !it.unsealable {
				out, key, err = rewrite(sealBuf[:0], raw, &r, cfg.keyring)
			}
			switch {
			case err != nil:
				// Kept as it is: a missing key may come back.
				unsealable[i] = true
				kept++
				keptErr = err
			case key != was:
				sealBuf = out
				resealed++
			}
			newOff[i], newN[i], newKey[i] = off, int64(len(out)), key
			if err := put(out); err != nil {
				return err
			}
			buf = buf[:0]
			if it.attempts > 0 || it.lastErr != "" {
				buf = appendRecord(buf, &Record{Type: RecordAttempt, ID: it.e.id, Time: it.lastAttempt,
					Attempts: it.attempts, Next: it.next, Err: it.lastErr})
			}
			if it.state == queue.StateDead {
				buf = appendRecord(buf, &Record{Type: RecordDead, ID: it.e.id, Time: it.lastAttempt})
			}
			if err := put(buf); err != nil {
				return err
			}
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		return f.Sync()
	}(); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
	}
	renamed = true
	// From here on the compacted segment is the log; a failure to sync
	// the directory only risks the old state coming back after a crash.
	if err := syncDir(s.dir); err != nil {
		cfg.logger.Error("spool compaction: directory fsync failed", zap.Error(err))
	}

	seg := &segment{id: target, path: final, f: f}
	seg.size.Store(fi.Size())
	var oldBytes int64
	lost := 0
	// What this keyring could not open, another (a Reconfigure meanwhile)
	// may: the flags are for the current keyring only.
	sameKeyring := s.config().keyring == cfg.keyring
	s.mu.Lock()
	for i, it := range items {
		e := it.e
		if e.removed {
			continue
		}
		switch newOff[i] {
		case noBody:
			e.seg, e.off, e.n = seg, 0, 0
		case lostBody:
			s.remove(e)
			lost++
		default:
			e.seg, e.off, e.n, e.key = seg, newOff[i], newN[i], s.internKey(newKey[i])
			e.unsealable = e.unsealable || unsealable[i] && sameKeyring
		}
	}
	s.segMu.Lock()
	for _, o := range old {
		delete(s.segs, o.id)
		o.dropped = true
		if o.refs == 0 {
			o.f.Close()
		}
		oldBytes += o.size.Load()
	}
	s.segs[target] = seg
	s.segMu.Unlock()
	s.mu.Unlock()
	s.diskBytes.Add(seg.size.Load() - oldBytes)

	for _, o := range old[:len(old)-1] {
		if err := os.Remove(o.path); err != nil {
			cfg.logger.Warn("spool compaction: removing a superseded segment", zap.Error(err))
		}
	}
	if err := syncDir(s.dir); err != nil {
		cfg.logger.Warn("spool compaction: directory fsync failed", zap.Error(err))
	}
	if kept > 0 {
		cfg.logger.Warn("spool compaction: callbacks kept as they are, the keyring cannot open them",
			zap.Int("callbacks", kept), zap.NamedError("last_error", keptErr))
	}
	cfg.logger.Info("spool compacted", zap.Int("segments", len(old)), zap.Int64("bytes_before", oldBytes),
		zap.Int64("bytes_after", seg.size.Load()), zap.Int("forgotten", forgotten), zap.Int("lost", lost),
		zap.Int("reencrypted", resealed), zap.Duration("took", time.Since(started)))
	return nil
}
