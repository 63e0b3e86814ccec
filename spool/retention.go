package spool

import (
	"time"

	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// Retention. A body leaves the disk only when compaction rewrites the
// segment holding it without it. So that it does within a bounded time,
// the moment a body stops being needed (its callback delivered, deleted,
// or purged as an expired dead letter) sets a deadline on its segment,
// PurgeDelay later, by which a compaction of that segment starts, unless
// one is already due. A compaction clears the deadline of the segments
// it rewrites when it takes its snapshot: the bodies let go before that
// are not in what it writes; a body let go later sets a new deadline, on
// the segment that compaction writes.

// letGo notes that a body in seg is no longer needed. The caller holds
// s.mu.
func (s *FileSpool) letGo(seg *segment, now time.Time, cfg *config) {
	if seg.purgeDue.IsZero() {
		seg.purgeDue = now.Add(cfg.purgeDelay)
		s.kickMaintenance()
	}
}

// purgeDeadline returns when a compaction must start to purge bodies let
// go, the earliest deadline of a segment; zero if none is waiting.
func (s *FileSpool) purgeDeadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due time.Time
	s.segMu.Lock()
	for _, seg := range s.segs {
		if !seg.purgeDue.IsZero() && (due.IsZero() || seg.purgeDue.Before(due)) {
			due = seg.purgeDue
		}
	}
	s.segMu.Unlock()
	return due
}

// purgeFailed moves the deadlines that have passed after a compaction
// failed: the next try is soon, within a minute. The bound of PurgeDelay
// holds only while compactions succeed.
func (s *FileSpool) purgeFailed(cfg *config) {
	now := cfg.now()
	retry := now.Add(min(cfg.purgeDelay, maintainInterval))
	s.mu.Lock()
	s.segMu.Lock()
	for _, seg := range s.segs {
		if !seg.purgeDue.IsZero() && !seg.purgeDue.After(now) {
			seg.purgeDue = retry
		}
	}
	s.segMu.Unlock()
	s.mu.Unlock()
}

// deadSince is when a dead entry became dead: its last attempt.
func deadSince(e *entry) time.Time {
	if e.lastAttempt.IsZero() {
		return e.received
	}
	return e.lastAttempt
}

// expireDeadLetters purges the dead callbacks whose last attempt is
// DeadLetterRetention old: a delete record each, out of the index, their
// bodies let go. It returns when the next one expires, zero if none will.
func (s *FileSpool) expireDeadLetters(cfg *config) time.Time {
	now := cfg.now()
	var next time.Time
	var recs []*Record
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return next
	}
	for _, e := range s.entries {
		if e.state != queue.StateDead || e.inflight {
			continue
		}
		at := deadSince(e).Add(cfg.deadRetention)
		if at.After(now) {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		recs = append(recs, &Record{Type: RecordDelete, ID: e.id, Time: now})
		s.remove(e)
		s.addGhost(e.id, e.lowest(), s.epoch)
		if e.n > 0 {
			s.letGo(e.seg, now, cfg)
		}
	}
	if len(recs) > 0 {
		// Not waited for: if a crash loses them, they expire again.
		s.logState(recs...)
	}
	s.mu.Unlock()
	ro, _ := cfg.obs.(RetentionObserver)
	for _, r := range recs {
		if ro != nil {
			ro.DeadLetterExpired()
		}
		cfg.logger.Warn("dead letter purged: kept for the dead letter retention",
			zap.String("callback_id", r.ID), zap.Duration("retention", cfg.deadRetention))
	}
	return next
}

// maintain purges expired dead letters, and compacts the log: the
// segments holding bodies let go that are due to leave the disk, and
// those mostly garbage (bodies of delivered and deleted callbacks,
// superseded state records, expired tombstones) once the log's garbage
// exceeds both the live data and compactMinBytes; all of it when the
// spool is nearly full, or when records are to be rewritten under the
// keyring's first key.
func (s *FileSpool) maintain() {
	defer s.bg.Done()
	t := time.NewTicker(maintainInterval)
	defer t.Stop()
	// A first round at once: a purge due from the replay, dead letters
	// to expire.
	wake := time.NewTimer(0)
	defer wake.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.maintc:
		case <-wake.C:
		}
		cfg := s.config()
		nextDead := s.expireDeadLetters(cfg)
		due := s.purgeDeadline()
		full, garbage := s.needsCompaction()
		if full || garbage || !due.IsZero() && !due.After(cfg.now()) {
			if err := s.compact(s.bgCtx, full); err != nil && s.bgCtx.Err() == nil {
				cfg.logger.Warn("spool compaction failed", zap.Error(err))
			}
			due = s.purgeDeadline()
		}
		next := nextDead
		if !due.IsZero() && (next.IsZero() || due.Before(next)) {
			next = due
		}
		wait := maintainInterval
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(cfg.now()), time.Millisecond))
		}
		wake.Reset(wait)
	}
}
