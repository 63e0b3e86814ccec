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
	// segmentMinGarbage is the least garbage for which a segment is
	// rewritten because it is mostly garbage (or a sixteenth of
	// SegmentSize if that is less).
	segmentMinGarbage = 1 << 20
)

// needsCompaction reports whether the whole log is to be compacted (the
// spool is nearly full, or records are to be rewritten under the
// keyring's first key), or the segments that are mostly garbage (the
// log's garbage exceeds both the live data and compactMinBytes).
func (s *FileSpool) needsCompaction() (full, garbage bool) {
	cfg := s.config()
	st := s.Stats()
	g := st.DiskBytes - st.LiveBytes
	if st.DiskBytes >= cfg.maxDiskBytes/10*9 && g >= cfg.maxDiskBytes/10 || s.needsMigration(cfg) {
		return true, false
	}
	return false, g >= max(st.LiveBytes, min(compactMinBytes, cfg.maxDiskBytes/8))
}

// Compact rewrites the whole log without its garbage: bodies of delivered
// and deleted callbacks, superseded state records, and delivered
// callbacks past the retention window, which are forgotten (their ids are
// accepted again). With Options.Keyring, what it keeps is rewritten
// under the first key: plaintext records and records under another key
// of the keyring; records it cannot open are kept as they are. The spool
// compacts itself when needed, segment by segment (and all of it when
// nearly full or when a record is to be rewritten under the first key);
// Compact forces a compaction of everything. Appends and deliveries go
// on meanwhile.
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
	return s.compact(ctx, true)
}

// ghost is a callback gone from the index (deleted, purged, or forgotten
// by a compaction that had to write a delete record for it) whose records
// may remain in the segments from floor on that no compaction has
// rewritten since epoch at: an enqueue or delivered record there would
// bring it back at the next Open without a delete record after it. n
// counts the callbacks of that id merged into it.
type ghost struct {
	floor, at uint64
	n         int
}

// addGhost notes that the callback id left the index at epoch at, its
// records (and those of the callbacks of its id it replaced) in segment
// floor or after it. The caller holds s.mu.
func (s *FileSpool) addGhost(id string, floor, at uint64) {
	g, ok := s.ghosts[id]
	if !ok {
		s.ghosts[id] = ghost{floor: floor, at: at, n: 1}
		return
	}
	g.floor, g.at, g.n = min(g.floor, floor), max(g.at, at), g.n+1
	s.ghosts[id] = g
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
	// home: the entry's home is in the segments compacted, which take
	// its enqueue record (or its delivered record); otherwise it lives
	// in an older segment and only its state is written.
	home bool
}

// run is segments compacted together into one, adjacent among the
// segments that exist, in ascending order. base: the first of them is
// the oldest segment, so the result can supersede every lower one.
type run struct {
	segs []*segment
	base bool
}

// compact compacts the log: everything sealed if full, else the segments
// that are due to purge a body or mostly garbage (plan). The segment
// being written is sealed first if it is to be compacted.
func (s *FileSpool) compact(ctx context.Context, full bool) (err error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	cfg := s.config()
	defer func() {
		if err != nil {
			s.purgeFailed(cfg)
		}
	}()

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return queue.ErrClosed
	}
	// The appends written so far must be in the index before the
	// snapshot: those under way are waited for. An append queued after
	// this lands in the segment being written or a later one.
	commits := make([]*commit, 0, len(s.committing))
	for _, c := range s.committing {
		commits = append(commits, c)
	}
	var head *segment
	s.segMu.Lock()
	for _, seg := range s.segs {
		if head == nil || seg.id > head.id {
			head = seg
		}
	}
	s.segMu.Unlock()
	cut := head.id
	var req *writeReq
	if full || !head.purgeDue.IsZero() && !head.purgeDue.After(cfg.now()) {
		// Seal the segment being written.
		req = &writeReq{rotate: true, done: make(chan writeResult, 1)}
		err = s.send(ctx, req)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if req != nil {
		wr := <-req.done
		if wr.err != nil {
			return wr.err
		}
		cut = wr.seg.id
	}
	for _, c := range commits {
		<-c.done
	}
	for _, r := range s.plan(cfg, cut, full) {
		if err := s.compactRun(ctx, cfg, r); err != nil {
			return err
		}
	}
	return nil
}

// plan chooses the sealed segments (below cut) to compact: all of them
// if full, else those holding a body due to leave the disk and those
// whose garbage is at least half their size (and segmentMinGarbage).
// Adjacent ones are compacted together up to SegmentSize, and so is a
// neighbour no larger than what the run keeps, so that the segments
// compaction leaves small are merged, each byte rewritten about log2
// times as the result doubles, not every time.
func (s *FileSpool) plan(cfg *config, cut uint64, full bool) []run {
	now := cfg.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.segMu.Lock()
	var sealed []*segment
	for id, seg := range s.segs {
		if id < cut {
			sealed = append(sealed, seg)
		}
	}
	s.segMu.Unlock()
	if len(sealed) == 0 {
		return nil
	}
	slices.SortFunc(sealed, func(a, b *segment) int { return cmp.Compare(a.id, b.id) })
	if full {
		return []run{{segs: sealed, base: true}}
	}
	live := make(map[*segment]int64, len(sealed))
	for _, e := range s.entries {
		if !expired(e, now, cfg.retention) {
			live[e.seg] += e.liveBytes()
		}
	}
	kept := func(seg *segment) int64 { return min(live[seg], seg.size.Load()) }
	minGarbage := min(segmentMinGarbage, cfg.segmentSize/16)
	chosen := make([]bool, len(sealed))
	for i, seg := range sealed {
		size := seg.size.Load()
		garbage := size - kept(seg)
		chosen[i] = size == 0 || !seg.purgeDue.IsZero() && !seg.purgeDue.After(now) ||
			garbage*2 >= size && garbage >= minGarbage
	}
	var runs []run
	last := -1 // the last segment in a run
	for i := 0; i < len(sealed); i++ {
		if !chosen[i] {
			continue
		}
		lo, hi := i, i+1
		out := kept(sealed[i])
		for hi < len(sealed) && out+kept(sealed[hi]) <= cfg.segmentSize &&
			(chosen[hi] || sealed[hi].size.Load() <= out) {
			out += kept(sealed[hi])
			hi++
		}
		for lo-1 > last && !chosen[lo-1] && sealed[lo-1].size.Load() <= out &&
			out+kept(sealed[lo-1]) <= cfg.segmentSize {
			lo--
			out += kept(sealed[lo])
		}
		runs = append(runs, run{segs: sealed[lo:hi], base: lo == 0})
		last, i = hi-1, hi-1
	}
	return runs
}

// compactRun replaces the segments of r by one, numbered as the last of
// them, holding what the log needs of theirs. For each callback with a
// record in them (found by reading them):
//
//   - homed there (its enqueue record, or a delivered callback's
//     record, is there): if pending or dead, its enqueue record (copied,
//     or sealed again under the first key) and its attempt and dead
//     records; if delivered within the retention window, a delivered
//     record; if delivered before, nothing: it is forgotten;
//   - homed in an older segment: its state (retry and attempt records,
//     attempt and dead, or delivered), which replaces the records it
//     had here;
//   - homed in a newer segment: nothing (the records are of an earlier
//     callback of its id, which its enqueue record replaces);
//   - gone from the index: a delete record if an older segment, not
//     rewritten since it left, may hold a record that would bring it
//     back (a ghost); else nothing.
//
// State changes made while it runs are in the segment being written,
// replayed after this one; records are absolute, so replaying again
// what the snapshot already holds is harmless.
//
// Crash safety: the new segment is written to a temporary file, fsynced,
// renamed over the last segment of the run, and the directory fsynced,
// before the others are removed. If r starts at the oldest segment, the
// new one starts with a base record telling Open to remove the lower
// ones a crash left behind; if not, those are replayed before it, which
// is harmless: what it holds of a callback is newer, and it holds a
// delete record for the ghosts whose records they have. A run whose
// result would be empty is removed, in any order: none of its records
// is needed.
func (s *FileSpool) compactRun(ctx context.Context, cfg *config, r run) (err error) {
	started := time.Now()
	segs := r.segs
	first, target := segs[0].id, segs[len(segs)-1].id
	inRun := func(seg *segment) bool { return seg.id >= first && seg.id <= target }

	// The ids with records in the run.
	const (
		hasRecord = 1 << iota
		hasDelete
	)
	ids := make(map[string]uint8)
	for _, seg := range segs {
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := scan(seg.f, seg.size.Load(), func(rec *Record, _, _ int64) {
			if rec.ID == "" {
				return
			}
			f := ids[rec.ID] | hasRecord
			if rec.Type == RecordDelete {
				f |= hasDelete
			}
			ids[rec.ID] = f
		}, func(string, int64, int64, error) {})
		if err != nil {
			return fmt.Errorf("%w: reading %s: %w", queue.ErrUnavailable, seg.path, err)
		}
	}

	// Snapshot.
	now := cfg.now()
	forgotten := 0
	var items []snapItem
	var deletes, prune []string
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return queue.ErrClosed
	}
	epoch := s.epoch
	s.epoch++
	// The bodies let go so far are not in what the run writes.
	prevDue := make([]time.Time, len(segs))
	for i, seg := range segs {
		prevDue[i], seg.purgeDue = seg.purgeDue, time.Time{}
	}
	defer func() {
		if err != nil {
			s.mu.Lock()
			for i, seg := range segs {
				if p := prevDue[i]; !p.IsZero() && (seg.purgeDue.IsZero() || p.Before(seg.purgeDue)) {
					seg.purgeDue = p
				}
			}
			s.mu.Unlock()
		}
	}()
	var below []*segment
	s.segMu.Lock()
	for id, seg := range s.segs {
		if id < first {
			below = append(below, seg)
		}
	}
	s.segMu.Unlock()
	// unclean reports whether a segment that the result does not
	// supersede may hold records, from floor on, of a callback that left
	// the index at epoch at.
	unclean := func(floor, at uint64) bool {
		if floor == 0 {
			return false
		}
		if !r.base {
			// Left behind by a crash, they would be replayed.
			for _, seg := range segs[:len(segs)-1] {
				if seg.id >= floor {
					return true
				}
			}
		}
		for _, seg := range below {
			if seg.id >= floor && seg.clean < at {
				return true
			}
		}
		return false
	}
	for id, f := range ids {
		e := s.entries[id]
		switch {
		case e != nil && inRun(e.seg):
			if expired(e, now, cfg.retention) {
				s.remove(e)
				forgotten++
				if unclean(e.floor, epoch) {
					deletes = append(deletes, id)
					s.addGhost(id, e.floor, epoch)
				}
				continue
			}
		case e != nil && e.seg.id < first:
		case e != nil:
			// Records of an earlier callback of this id.
			continue
		default:
			g, ok := s.ghosts[id]
			switch {
			case !ok:
			case unclean(g.floor, g.at):
				deletes = append(deletes, id)
			case f&hasDelete != 0 && g.n == 1:
				prune = append(prune, id)
			}
			continue
		}
		it := snapItem{
			e: e, seq: e.seq, state: e.state, received: e.received, size: e.size, attempts: e.attempts,
			lastErr: e.lastErr, lastAttempt: e.lastAttempt, next: e.next, delivered: e.delivered,
			unsealable: e.unsealable, home: inRun(e.seg),
		}
		if it.home && e.state != queue.StateDelivered && e.n > 0 {
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
	slices.Sort(deletes)

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
	var size int64
	if err := func() error {
		bw := bufio.NewWriterSize(f, 1<<20)
		var buf, sealBuf []byte
		put := func(b []byte) error {
			_, err := bw.Write(b)
			size += int64(len(b))
			return err
		}
		if r.base {
			if err := put(appendRecord(nil, &Record{Type: RecordBase, Segment: target})); err != nil {
				return err
			}
		}
		// state appends the records that give a callback its state;
		// reset, for one homed in an older segment, makes a pending one
		// pending whatever the records before say.
		state := func(buf []byte, it *snapItem, reset bool) []byte {
			if it.state == queue.StateDelivered {
				return appendRecord(buf, &Record{Type: RecordDelivered, ID: it.e.id, Time: it.delivered,
					Received: it.received, Size: it.size, Attempts: it.attempts})
			}
			if reset && it.state == queue.StatePending {
				buf = appendRecord(buf, &Record{Type: RecordRetry, ID: it.e.id, Time: it.next})
			}
			if it.attempts > 0 || it.lastErr != "" {
				buf = appendRecord(buf, &Record{Type: RecordAttempt, ID: it.e.id, Time: it.lastAttempt,
					Attempts: it.attempts, Next: it.next, Err: it.lastErr})
			}
			if it.state == queue.StateDead {
				buf = appendRecord(buf, &Record{Type: RecordDead, ID: it.e.id, Time: it.lastAttempt})
			}
			return buf
		}
		for i := range items {
			it := &items[i]
			if err := ctx.Err(); err != nil {
				return err
			}
			if !it.home || it.state == queue.StateDelivered {
				newOff[i] = noBody
				if err := put(state(buf[:0], it, !it.home)); err != nil {
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
			rec, _, err := DecodeRecord(raw)
			if err != nil || !isEnqueue(rec.Type) || rec.ID != it.e.id {
				cfg.logger.Error("spool compaction: callback record unreadable, dropped",
					zap.String("callback_id", it.e.id), zap.String("segment", it.seg.path), zap.Error(err))
				newOff[i] = lostBody
				continue
			}
			was := keyOf(&rec)
			out, key, err := raw, was, error(nil)
			if !it.unsealable {
				out, key, err = rewrite(sealBuf[:0], raw, &rec, cfg.keyring)
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
			newOff[i], newN[i], newKey[i] = size, int64(len(out)), key
			if err := put(out); err != nil {
				return err
			}
			if err := put(state(buf[:0], it, false)); err != nil {
				return err
			}
		}
		for _, id := range deletes {
			if err := put(appendRecord(buf[:0], &Record{Type: RecordDelete, ID: id, Time: now})); err != nil {
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
	empty := len(deletes) == 0 && !slices.ContainsFunc(newOff, func(o int64) bool { return o != lostBody })
	var seg *segment
	if !empty {
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("%w: %w", queue.ErrUnavailable, err)
		}
		renamed = true
		// From here on the compacted segment is the log; a failure to
		// sync the directory only risks the old state coming back after
		// a crash.
		if err := syncDir(s.dir); err != nil {
			cfg.logger.Error("spool compaction: directory fsync failed", zap.Error(err))
		}
		seg = &segment{id: target, path: final, f: f, clean: epoch}
		seg.size.Store(size)
	}

	var oldBytes int64
	lost := 0
	// What this keyring could not open, another (a Reconfigure meanwhile)
	// may: the flags are for the current keyring only.
	sameKeyring := s.config().keyring == cfg.keyring
	s.mu.Lock()
	for i, it := range items {
		e := it.e
		if e.removed || !it.home {
			continue
		}
		switch newOff[i] {
		case noBody:
			e.seg, e.off, e.n = seg, 0, 0
		case lostBody:
			s.remove(e)
			s.addGhost(e.id, e.lowest(), s.epoch)
			lost++
		default:
			e.seg, e.off, e.n, e.key = seg, newOff[i], newN[i], s.internKey(newKey[i])
			e.unsealable = e.unsealable || unsealable[i] && sameKeyring
		}
	}
	for _, id := range prune {
		if g, ok := s.ghosts[id]; ok && g.n == 1 && s.entries[id] == nil {
			delete(s.ghosts, id)
		}
	}
	s.segMu.Lock()
	for _, o := range segs {
		if seg != nil && !o.purgeDue.IsZero() && (seg.purgeDue.IsZero() || o.purgeDue.Before(seg.purgeDue)) {
			// A body let go since the snapshot is in the new segment.
			seg.purgeDue = o.purgeDue
		}
		delete(s.segs, o.id)
		o.dropped = true
		if o.refs == 0 {
			o.f.Close()
		}
		oldBytes += o.size.Load()
	}
	if seg != nil {
		s.segs[target] = seg
	}
	s.segMu.Unlock()
	s.mu.Unlock()
	if seg == nil {
		size = 0
	}
	s.diskBytes.Add(size - oldBytes)

	for _, o := range segs {
		if seg != nil && o.id == target {
			continue
		}
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
	cfg.logger.Info("spool compacted", zap.Int("segments", len(segs)), zap.Int64("bytes_before", oldBytes),
		zap.Int64("bytes_after", size), zap.Int("forgotten", forgotten), zap.Int("lost", lost),
		zap.Int("reencrypted", resealed), zap.Duration("took", time.Since(started)))
	return nil
}
