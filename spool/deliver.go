package spool

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// maxIdle bounds the dispatcher's sleep, so that a jump of the clock
// delays nothing for long.
const maxIdle = time.Second

// dispatch starts deliveries: the oldest due callbacks first, up to the
// configured concurrency. A callback waiting for its backoff is in the
// wait heap, not the ready one, so it holds up nothing.
func (s *FileSpool) dispatch() {
	defer s.bg.Done()
	timer := time.NewTimer(maxIdle)
	defer timer.Stop()
	for {
		timer.Reset(s.dispatchDue())
		select {
		case <-s.stop:
			return
		case <-s.kickc:
		case <-timer.C:
		}
	}
}

// dispatchDue starts the deliveries that are due and allowed, and
// returns how long until the next one is due.
func (s *FileSpool) dispatchDue() time.Duration {
	cfg := s.config()
	now := cfg.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for e := s.wait.peek(); e != nil && !e.next.After(now); e = s.wait.peek() {
		heap.Pop(&s.wait)
		heap.Push(&s.ready, e)
	}
	for cfg.deliver != nil && s.inflight < cfg.concurrency && s.ready.Len() > 0 {
		e := heap.Pop(&s.ready).(*entry)
		e.inflight = true
		s.inflight++
		s.acquire(e.seg)
		s.deliveries.Add(1)
		s.startDelivery(deliveryJob{
			e: e, cfg: cfg, seg: e.seg, off: e.off, n: e.n, attempt: e.attempts + 1, rec: s.takeRec(e),
		})
	}
	wait := maxIdle
	if e := s.wait.peek(); e != nil {
		wait = min(wait, max(e.next.Sub(now), time.Millisecond))
	}
	return wait
}

// memRecordBytes bounds the records kept in memory for their first
// delivery attempt (entry.rec): 32 MiB, about 1,800 callbacks of 17 KiB.
// A callback appended beyond it, or retried, is read back from its
// segment.
const memRecordBytes = 32 << 20

// workerIdle is how long a delivery worker waits for its next delivery
// before it exits.
const workerIdle = 5 * time.Second

// deliveryJob is one delivery attempt of e, whose record is at off in seg
// (acquired by the dispatcher), or in rec if e kept it in memory.
type deliveryJob struct {
	e       *entry
	cfg     *config
	seg     *segment
	off, n  int64
	attempt int
	rec     []byte
}

// startDelivery hands j to an idle delivery worker, or starts one. The
// workers outlive their deliveries: a goroutine per delivery would grow
// its stack from the minimum through the HTTP client's calls every time
// (about 2% of a durable callback's CPU under load). The dispatcher's
// count of deliveries in flight, not the workers, bounds the concurrency.
func (s *FileSpool) startDelivery(j deliveryJob) {
	select {
	case s.jobs <- j:
	default:
		s.workers.Add(1)
		go s.deliveryWorker(j)
	}
}

// deliveryWorker makes the delivery attempt j, then those handed to it,
// until it has been idle for workerIdle or the spool closes.
func (s *FileSpool) deliveryWorker(j deliveryJob) {
	defer s.workers.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		s.deliver(j)
		j = deliveryJob{} // an idle worker holds no record
		idle.Reset(workerIdle)
		select {
		case j = <-s.jobs:
		case <-idle.C:
			return
		case <-s.stop:
			return
		}
	}
}

// deliver makes the delivery attempt j.
func (s *FileSpool) deliver(j deliveryJob) {
	defer s.deliveries.Done()
	e, cfg, attempt := j.e, j.cfg, j.attempt
	start := time.Now()
	var rec Record
	var err error
	if j.rec != nil {
		rec, err = decodeEnqueue(j.rec, e.id, cfg.keyring)
	}
	if j.rec == nil || err != nil {
		// A record that no longer opens from memory (its key gone from
		// the keyring since) is read from the disk, where compaction
		// may have sealed it again under the first key.
		rec, err = readEnqueue(j.seg, j.off, j.n, e.id, cfg.keyring)
	}
	s.release(j.seg)
	outcome := queue.OutcomeFailed
	if err == nil {
		ctx, cancel := context.WithTimeout(s.deliverCtx, cfg.deliveryTimeout)
		err = queue.SafeDeliver(ctx, cfg.deliver, queue.Delivery{
			ID: rec.ID, Header: rec.Header, Body: rec.Body, Received: rec.Time, Attempt: attempt,
		})
		switch {
		case err == nil:
			outcome = queue.OutcomeDelivered
		case s.deliverCtx.Err() != nil:
			outcome = queue.OutcomeCanceled
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			outcome = queue.OutcomeTimeout
			err = fmt.Errorf("timeout after %s: %w", cfg.deliveryTimeout, err)
		}
		cancel()
	}
	cfg.obs.DeliveryAttempt(outcome, time.Since(start))
	s.finish(e, attempt, outcome, err)
}

// finish records the outcome of an attempt: delivered, rescheduled with
// backoff, dead, or (cancelled by Close) pending as before.
func (s *FileSpool) finish(e *entry, attempt int, outcome queue.Outcome, err error) {
	cfg := s.config()
	now := cfg.now()
	var dead bool
	s.mu.Lock()
	e.inflight = false
	s.inflight--
	switch {
	case e.removed:
	case outcome == queue.OutcomeCanceled:
		s.schedule(e, now)
	case outcome == queue.OutcomeDelivered:
		e.attempts++
		e.state, e.delivered, e.lastAttempt = queue.StateDelivered, now, now
		s.logState(&Record{
			Type: RecordDelivered, ID: e.id, Time: now, Received: e.received, Size: e.size, Attempts: e.attempts,
		})
		s.letGo(e.seg, now, cfg)
	default:
		e.attempts++
		e.lastErr, e.lastAttempt = truncate(err.Error(), maxErrLen), now
		rec := &Record{Type: RecordAttempt, ID: e.id, Time: now, Attempts: e.attempts, Err: e.lastErr}
		if e.attempts >= cfg.maxAttempts {
			dead = true
			e.state = queue.StateDead
			s.logState(rec, &Record{Type: RecordDead, ID: e.id, Time: now})
		} else {
			e.next = now.Add(queue.Backoff(cfg.backoffMin, cfg.backoffMax, e.attempts))
			rec.Next = e.next
			s.logState(rec)
			s.schedule(e, now)
		}
	}
	next, attempts := e.next, e.attempts
	s.mu.Unlock()
	s.kick()

	switch {
	case dead:
		cfg.obs.DeadLettered()
		s.kickMaintenance() // to time its expiry
		cfg.logger.Warn("callback dead-lettered: out of delivery attempts",
			zap.String("callback_id", e.id), zap.Int("attempts", attempts), zap.Error(err))
	case outcome == queue.OutcomeFailed || outcome == queue.OutcomeTimeout:
		if ce := cfg.logger.Check(zapcore.DebugLevel, "callback delivery failed"); ce != nil {
			ce.Write(zap.String("callback_id", e.id), zap.Int("attempt", attempt),
				zap.Time("next_attempt", next), zap.Error(err))
		}
	case outcome == queue.OutcomeDelivered:
		if ce := cfg.logger.Check(zapcore.DebugLevel, "callback delivered"); ce != nil {
			ce.Write(zap.String("callback_id", e.id), zap.Int("attempt", attempt))
		}
	}
}
