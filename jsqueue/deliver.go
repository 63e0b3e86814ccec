package jsqueue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// fetchWait bounds one pull request; a slot freed meanwhile waits for
// the next.
const fetchWait = 2 * time.Second

// fetch pulls callbacks from the shared consumer, as many as there are
// free delivery slots, and starts their deliveries.
func (q *Queue) fetch() {
	defer q.fetcher.Done()
	pause := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-q.stop:
			return false
		case <-q.kickc:
		case <-t.C:
		}
		return true
	}
	for {
		if q.fetchCtx.Err() != nil {
			return
		}
		cfg := q.config()
		q.mu.Lock()
		free := cfg.concurrency - len(q.inflight)
		q.mu.Unlock()
		if cfg.deliver == nil || free <= 0 {
			if !pause(time.Second) {
				return
			}
			continue
		}
		ctx, cancel := context.WithTimeout(q.fetchCtx, fetchWait)
		batch, err := q.cons.Fetch(free, jetstream.FetchContext(ctx))
		if err != nil {
			cancel()
			cfg.logger.Debug("jetstream queue: fetch", zap.Error(err))
			if !pause(500 * time.Millisecond) {
				return
			}
			continue
		}
		for m := range batch.Messages() {
			// The settings now, not those of when the pull began: a
			// Reconfigure meanwhile applies to this delivery.
			q.start(m, q.config())
		}
		cancel()
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) &&
			!errors.Is(err, context.Canceled) && !errors.Is(err, nats.ErrTimeout) {
			cfg.logger.Debug("jetstream queue: fetch", zap.Error(err))
			if !pause(500 * time.Millisecond) {
				return
			}
		}
	}
}

// start begins the delivery of m, unless this instance is closing or is
// delivering it already (a redelivery after a missed heartbeat).
func (q *Queue) start(m jetstream.Msg, cfg *config) {
	md, err := m.Metadata()
	if err != nil {
		cfg.logger.Warn("jetstream queue: message without metadata", zap.Error(err))
		return
	}
	seq := md.Sequence.Stream
	q.mu.Lock()
	if q.closing || cfg.deliver == nil {
		q.mu.Unlock()
		_ = m.Nak() // someone else's now, or later
		return
	}
	if _, ok := q.inflight[seq]; ok {
		q.mu.Unlock()
		return
	}
	id, _, _ := msgInfo(m.Headers())
	q.inflight[seq] = id
	q.deliveries.Add(1)
	q.mu.Unlock()
	go q.deliver(m, seq, cfg)
}

// deliver makes one delivery attempt of m, the work message at seq.
func (q *Queue) deliver(m jetstream.Msg, seq uint64, cfg *config) {
	defer q.deliveries.Done()
	defer func() {
		q.mu.Lock()
		delete(q.inflight, seq)
		q.mu.Unlock()
		q.kick()
	}()

	// Keep the servers from handing m to another instance while this
	// one works on it, until its outcome is recorded.
	hbStop := make(chan struct{})
	var hb sync.WaitGroup
	hb.Add(1)
	go func() {
		defer hb.Done()
		t := time.NewTicker(cfg.ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-hbStop:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	var stopOnce sync.Once
	stopHB := func() {
		stopOnce.Do(func() {
			close(hbStop)
			hb.Wait()
		})
	}
	defer stopHB()

	id, received, size := msgInfo(m.Headers())
	if id == "" {
		cfg.logger.Error("jetstream queue: message without callback id, dropped", zap.Uint64("seq", seq))
		_ = m.Term()
		return
	}
	octx, cancel := context.WithTimeout(q.deliverCtx, cfg.publishTimeout)
	rec, err := q.state(octx, id)
	cancel()
	if err != nil {
		// Not an attempt: try again shortly.
		cfg.logger.Debug("jetstream queue: reading callback state", zap.String("callback_id", id), zap.Error(err))
		_ = m.NakWithDelay(time.Second)
		return
	}
	var base uint64
	failures := 0
	if rec != nil {
		base = rec.rseq
		if rec.Seq == seq {
			switch rec.kind {
			case kindDelivered, kindDead:
				// Its outcome was recorded, the ack was lost.
				_ = m.Ack()
				return
			case kindPending:
				failures = rec.Attempts
			}
		}
	}
	a := attempt{q: q, m: m, seq: seq, id: id, received: received, size: size, base: base, cfg: cfg,
		n: failures + 1, hadFailures: rec != nil && rec.kind == kindPending, stopHB: stopHB}

	start := time.Now()
	outcome := queue.OutcomeFailed
	e, err := q.entry(m.Headers(), m.Data())
	if err == nil {
		ctx, cancel := context.WithTimeout(q.deliverCtx, cfg.deliveryTimeout)
		err = queue.SafeDeliver(ctx, cfg.deliver, queue.Delivery{
			ID: id, Header: e.Header, Body: e.Body, Received: e.Received, Attempt: a.n,
		})
		switch {
		case err == nil:
			outcome = queue.OutcomeDelivered
		case q.deliverCtx.Err() != nil:
			outcome = queue.OutcomeCanceled
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			outcome = queue.OutcomeTimeout
			err = fmt.Errorf("timeout after %s: %w", cfg.deliveryTimeout, err)
		}
		cancel()
	}
	cfg.obs.DeliveryAttempt(outcome, time.Since(start))
	a.finish(outcome, err)
}

// attempt is a delivery attempt whose outcome is to be recorded.
type attempt struct {
	q           *Queue
	m           jetstream.Msg
	cfg         *config
	seq         uint64
	id          string
	received    time.Time
	size        int64
	base        uint64 // sequence of the newest state record when the attempt began
	n           int    // attempt number
	hadFailures bool
	// stopHB stops the in-progress heartbeats; called before the final
	// ack or nak, which a late heartbeat would otherwise undo (it resets
	// the redelivery timer a nak's delay set).
	stopHB func()
}

// finish records the outcome: a delivered record then the ack; a
// failure record then a nak with the backoff; or, out of attempts, the
// dead letter, a dead record, then the ack. If the state changed
// meanwhile because an operator deleted or retried the callback (its
// message is gone), the outcome is ignored. Anything left undone by an
// error is redone after the ack wait, by this instance or another.
func (a *attempt) finish(outcome queue.Outcome, derr error) {
	q, cfg := a.q, a.cfg
	if outcome == queue.OutcomeCanceled {
		a.stopHB()
		_ = a.m.Nak()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.publishTimeout)
	defer cancel()
	now := time.Now()
	r := &record{ID: a.id, Seq: a.seq, Size: a.size, Attempts: a.n, Received: a.received, LastAttempt: now}
	var kind string
	var ttl, delay time.Duration
	switch {
	case outcome == queue.OutcomeDelivered:
		kind, ttl = kindDelivered, cfg.retention
		r.State, r.Delivered = "delivered", now
	case a.n >= cfg.maxAttempts:
		kind = kindDead
		r.State, r.LastError = "dead", truncate(derr.Error(), maxErrLen)
		if err := a.publishDeadLetter(ctx, r); err != nil {
			cfg.logger.Warn("jetstream queue: writing a dead letter; it will be retried",
				zap.String("callback_id", a.id), zap.Error(err))
			return
		}
	default:
		kind, ttl = kindPending, cfg.retention
		delay = queue.Backoff(cfg.backoffMin, cfg.backoffMax, a.n)
		r.State, r.LastError, r.NextAttempt = "pending", truncate(derr.Error(), maxErrLen), now.Add(delay)
	}

	recorded := false
	for try := 0; try < 3 && !recorded; try++ {
		ok, err := a.putState(ctx, kind, r, ttl)
		if err != nil {
			cfg.logger.Warn("jetstream queue: recording a delivery outcome; the callback will be delivered again",
				zap.String("callback_id", a.id), zap.String("outcome", string(outcome)), zap.Error(err))
			return
		}
		if ok {
			recorded = true
			break
		}
		// Someone wrote a state meanwhile. If the message is gone, an
		// operator deleted or retried the callback: ignore this outcome.
		if _, err := q.work.GetMsg(ctx, a.seq); errors.Is(err, jetstream.ErrMsgNotFound) {
			if kind == kindDead {
				if rec, _ := q.state(ctx, a.id); rec != nil && rec.kind == kindDeleted {
					_ = q.dead.Purge(ctx, jetstream.WithPurgeSubject(q.deadSubj+subjectKey(a.id)))
				}
			}
			_ = a.m.Ack()
			return
		}
		// Another instance handled the same message (it took over after a
		// missed heartbeat): record over its state.
		rec, err := q.state(ctx, a.id)
		if err != nil {
			return
		}
		a.base = 0
		if rec != nil {
			a.base = rec.rseq
		}
	}
	if !recorded {
		return
	}
	if a.hadFailures && kind != kindPending {
		_ = q.purgeState(ctx, a.id, kindPending)
	}
	a.stopHB()
	switch kind {
	case kindPending:
		_ = a.m.NakWithDelay(delay)
		if ce := cfg.logger.Check(zapcore.DebugLevel, "callback delivery failed"); ce != nil {
			ce.Write(zap.String("callback_id", a.id), zap.Int("attempt", a.n), zap.Time("next_attempt", r.NextAttempt), zap.Error(derr))
		}
	case kindDead:
		_ = a.m.DoubleAck(ctx)
		cfg.obs.DeadLettered()
		cfg.logger.Warn("callback dead-lettered: out of delivery attempts",
			zap.String("callback_id", a.id), zap.Int("attempts", a.n), zap.Error(derr))
	case kindDelivered:
		_ = a.m.DoubleAck(ctx)
		if ce := cfg.logger.Check(zapcore.DebugLevel, "callback delivered"); ce != nil {
			ce.Write(zap.String("callback_id", a.id), zap.Int("attempt", a.n))
		}
	}
}

// putState writes the outcome's state record over a.base. A try that
// gets no answer (the connection lost under it, or lost and not back
// yet; a stream leader election) is tried again within ctx, each try
// bounded by the attempt timeout, as Append's are: the delivery is done,
// and an outcome not recorded is a second delivery to the app. If an
// earlier try was stored but its ack lost, the next one finds the record
// changed (false), which finish resolves by reading the state again.
func (a *attempt) putState(ctx context.Context, kind string, r *record, ttl time.Duration) (bool, error) {
	for n := 1; ; n++ {
		actx, cancel := withTimeout(ctx, a.cfg.attemptTimeout)
		ok, err := a.q.putState(actx, kind, r, a.base, ttl)
		cancel()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return ok, err
		}
		wait := min(25*time.Millisecond<<min(n, 5), 500*time.Millisecond)
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(wait):
		}
	}
}

// publishDeadLetter copies the callback to the dead-letter stream, with
// its attempts and last error in headers.
func (a *attempt) publishDeadLetter(ctx context.Context, r *record) error {
	nm := nats.NewMsg(a.q.deadSubj + subjectKey(a.id))
	for k, vs := range a.m.Headers() {
		switch k {
		case hdrID, hdrReceived, hdrSize, hdrSealed:
			nm.Header[k] = vs
		}
	}
	nm.Header.Set(hdrAttempts, strconv.Itoa(r.Attempts))
	nm.Header.Set(hdrLastErr, sanitizeHeader(r.LastError))
	nm.Data = a.m.Data()
	_, err := a.q.js.PublishMsg(ctx, nm, jetstream.WithMsgID(a.id+"~dead"+strconv.FormatUint(a.seq, 10)))
	return err
}

// sanitizeHeader keeps s to one line, as a header value must be.
func sanitizeHeader(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}
