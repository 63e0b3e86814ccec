package spool

import (
	"time"

	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// Retention. A body leaves the disk only when compaction rewrites the
// segments holding it and removes them. So that it does within a bounded
// time, the moment a body stops being needed (its callback delivered,
// deleted, or purged as an expired dead letter) sets a deadline,
// PurgeDelay later, by which a compaction starts, unless one is already
// due. A compaction clears the deadline when it seals the segment being
// written: every body let go before that is in a sealed segment, which
// it rewrites without the body; a body let go later sets a new deadline.

// letGo notes that a body on disk is no longer needed. The caller holds
// s.mu.
func (s *FileSpool) letGo(now time.Time, cfg *config) {
	if s.purgeDue.IsZero() {
		s.purgeDue = now.Add(cfg.purgeDelay)
		s.kickMaintenance()
	}
}

// purgeDeadline returns when a compaction must start to purge bodies let
// go, zero if none is waiting.
func (s *FileSpool) purgeDeadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.purgeDue
}

// purgeFailed sets the deadline again after a compaction that had
// cleared it (prev) failed: the next try is soon, within a minute. The
// bound of PurgeDelay holds only while compactions succeed.
func (s *FileSpool) purgeFailed(prev time.Time, cfg *config) {
	if prev.IsZero() {
		return
	}
	retry := cfg.now().Add(min(cfg.purgeDelay, maintainInterval))
	s.mu.Lock()
	if s.purgeDue.IsZero() || retry.Before(s.purgeDue) {
		s.purgeDue = retry
	}
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
	}
	if len(recs) > 0 {
		// Not waited for: if a crash loses them, they expire again.
		s.logState(recs...)
		s.letGo(now, cfg)
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

// maintain purges expired dead letters, and compacts the log when bodies
// let go are due to leave the disk, when its garbage (bodies of
// delivered and deleted callbacks, superseded state records, expired
// tombstones) exceeds both the live data and compactMinBytes, when the
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
		if !due.IsZero() && !due.After(cfg.now()) || s.needsCompaction() {
			if err := s.compact(s.bgCtx); err != nil && s.bgCtx.Err() == nil {
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
