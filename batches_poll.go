package caddyatlas

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
	"github.com/caddy-atlas/caddy-atlas/callback"
	"github.com/caddy-atlas/caddy-atlas/internal/batchmetrics"
	"github.com/caddy-atlas/caddy-atlas/internal/metricsreg"
	"github.com/caddy-atlas/caddy-atlas/internal/outbound"
	"github.com/caddy-atlas/caddy-atlas/ledger"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/reconcile"
)

// poller is the app's reconciler and what it delivers through.
type poller struct {
	// deliverTo is batches' deliver_to, resolved ("" if unset).
	deliverTo string

	mu     sync.Mutex
	target *callback.Callback // the durable callback route polled results go through
	// user and store are the app's own use of its queue, to deliver to
	// deliverTo, when no callback route is the target.
	user   *queue.User
	store  queue.Store
	rec    *reconcile.Reconciler
	cancel context.CancelFunc
}

// usePollTarget makes cb the route that polled results are delivered
// through, if none is yet: the first durable callback route of the
// config that uses the ledger.
func (a *App) usePollTarget(cb *callback.Callback) error {
	if a.poll == nil || !cb.Durable() {
		return nil
	}
	if to := a.poll.deliverTo; to != "" {
		if cbTo := caddy.NewReplacer().ReplaceKnown(cb.DeliverTo, ""); cbTo != to {
			return fmt.Errorf("batches' deliver_to %s and the deliver_to %s of the callback route %s differ: the results found by polling go through the durable callback route, to its deliver_to; remove deliver_to from batches, or make the two the same",
				redactURL(to), redactURL(cbTo), cb.Path)
		}
	}
	a.poll.mu.Lock()
	defer a.poll.mu.Unlock()
	if a.poll.target != nil && a.poll.target != cb {
		return fmt.Errorf("batches deliver the results found by polling through one durable callback route, and this config has two (%s and %s): keep one", a.poll.target.Path, cb.Path)
	}
	a.poll.target = cb
	return nil
}

// startReconciler starts polling the batches the ledger says are due,
// with the app's account, delivering through the poll target; without
// one, it only expires the batches that Atlas never finished.
func (a *App) startReconciler() error {
	st := a.Ledger()
	if st == nil {
		return errors.New("the ledger of batches is not open")
	}
	o := reconcile.Options{
		Store:    st,
		Policy:   a.Batches.policy(),
		Rate:     a.Batches.PollRate,
		LeaseTTL: a.Batches.leaseTTL(),
		Observer: pollObserver{logger: a.logger, m: registerBatchMetrics(a.ctx.GetMetricsRegistry())},
	}
	if o.Rate == 0 {
		o.Rate = DefaultPollRate
	}
	a.poll.mu.Lock()
	target := a.poll.target
	a.poll.mu.Unlock()
	var store queue.Store
	if target == nil && a.poll.deliverTo != "" {
		var err error
		if store, err = a.attachPollQueue(); err != nil {
			return err
		}
	}
	switch acct := a.defaultAccount(); {
	case target == nil && store == nil:
		a.logger.Warn("batches: no durable callback route uses the ledger, and batches have no deliver_to, so results found by polling have nowhere to go: batches are recorded and expire, but are not polled")
	case acct == nil:
		a.logger.Warn("batches: the global atlas options have no account to poll extracts with: batches are recorded and expire, but are not polled")
	default:
		client := &http.Client{
			Transport: &atlasclient.Transport{
				Source: acct.tokens.source,
				Base:   outbound.Traced(acct.transport()),
				Header: DefaultTokenHeader,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		o.Fetcher = &reconcile.HTTPFetcher{Endpoint: acct.endpoint.String(), Path: acct.service.reconcileExtracts, Client: client}
		o.Enqueuer = reconcile.EnqueueFunc(func(ctx context.Context, d reconcile.Delivery) error {
			// Not cut short by a reload's stop: the documents are
			// claimed already.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if target == nil {
				return enqueuePolled(ctx, store, d)
			}
			return target.EnqueuePolled(ctx, d.ID, d.BatchID, len(d.DocumentIDs), d.Body)
		})
	}
	r, err := reconcile.New(o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Start(ctx); err != nil {
		cancel()
		return err
	}
	a.poll.mu.Lock()
	a.poll.rec, a.poll.cancel = r, cancel
	a.poll.mu.Unlock()
	return nil
}

// attachPollQueue attaches the app to its own queue as the user that
// delivers polled results to batches' deliver_to, and opens it (the
// queue is open already when a callback route of the config, or the
// config a reload replaces, uses it). It runs at Start: only then is it
// known that no durable callback route takes the results.
func (a *App) attachPollQueue() (queue.Store, error) {
	to := a.poll.deliverTo
	user := &queue.User{
		Name: "the deliver_to of batches",
		Deliver: func(transport http.RoundTripper) queue.DeliverFunc {
			d := &queue.HTTPDeliverer{URL: to, Client: &http.Client{Transport: outbound.Traced(transport)}}
			return d.Deliver
		},
		// A callback route's key with the same deliver_to and no
		// signing.
		DeliveryKey: to + "\x00",
		Logger:      a.logger,
	}
	if r := a.ctx.GetMetricsRegistry(); r != nil {
		user.Config = r // one registry per loaded config
	}
	if err := a.queue.Attach(user); err != nil {
		return nil, fmt.Errorf("batches: deliver_to: %w", err)
	}
	st, err := a.queue.Open(user)
	if err != nil {
		_ = a.queue.Detach(user)
		return nil, fmt.Errorf("batches: deliver_to: opening queue %s: %w", a.queue.Name(), err)
	}
	a.poll.mu.Lock()
	a.poll.user, a.poll.store = user, st
	a.poll.mu.Unlock()
	a.logger.Info("batches: results found by polling are delivered to deliver_to", zap.String("queue", a.queue.Name()), zap.String("deliver_to", redactURL(to)))
	return st, nil
}

// detachPollQueue ends the app's use of its queue for deliver_to, if it
// has one; the last user closes the queue.
func (a *App) detachPollQueue() error {
	if a.poll == nil {
		return nil
	}
	a.poll.mu.Lock()
	user := a.poll.user
	a.poll.user, a.poll.store = nil, nil
	a.poll.mu.Unlock()
	if user == nil {
		return nil
	}
	return a.queue.Detach(user)
}

// enqueuePolled stores polled results in st for batches' deliver_to:
// the body as polled ({"data":[...]}), unmasked and unsigned, with the
// headers a callback route's polled delivery has.
func enqueuePolled(ctx context.Context, st queue.Store, d reconcile.Delivery) error {
	hdr := make(http.Header, 5)
	hdr.Set("Content-Type", "application/json")
	hdr.Set("X-Atlas-Document-Count", strconv.Itoa(len(d.DocumentIDs)))
	hdr.Set(queue.HeaderCallbackID, d.ID)
	hdr.Set("X-Atlas-Batch-Id", d.BatchID)
	hdr.Set("X-Atlas-Result-Source", string(ledger.SourcePoll))
	_, err := st.Append(ctx, queue.Entry{ID: d.ID, Header: hdr, Body: d.Body})
	return err
}

// redactURL is u with its password, if any, redacted.
func redactURL(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return u
}

// stopReconciler stops polling; a poll in progress keeps its lease,
// which another instance, or the next config, takes over when it ends.
func (a *App) stopReconciler() error {
	if a.poll == nil {
		return nil
	}
	a.poll.mu.Lock()
	r, cancel := a.poll.rec, a.poll.cancel
	a.poll.rec, a.poll.cancel = nil, nil
	a.poll.mu.Unlock()
	if r == nil {
		return nil
	}
	cancel()
	return r.Close()
}

// batchMetrics are the collectors of the ledger of batches:
//
//	caddy_atlas_batch_polls_total{outcome}          polls of batches: ok, throttled, failed, expired
//	caddy_atlas_batch_documents_polled_total        documents found by polling and queued for the app
//	caddy_atlas_batches_expired_total               batches given up with documents still pending
//	caddy_atlas_batches{state}                      batches in the ledger: processing, complete, expired, and overdue
//	                                                (those of processing uploaded poll_after ago or more), read at scrape
//
// and those of package internal/batchmetrics, which the callback route
// feeds too (documents received by source, upload to complete).
type batchMetrics struct {
	polls   *prometheus.CounterVec
	polled  prometheus.Counter
	expired prometheus.Counter
	states  prometheus.Collector
}

var (
	batchMetricsOnce sync.Once
	batchCollectors  *batchMetrics
)

func registerBatchMetrics(registry *prometheus.Registry) *batchMetrics {
	batchMetricsOnce.Do(func() {
		ns, sub := metricsreg.Namespace, metricsreg.Subsystem
		batchCollectors = &batchMetrics{
			polls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "batch_polls_total",
				Help: "Polls of the extracts of batches with documents pending, by outcome (ok, throttled, failed, expired)."}, []string{"outcome"}),
			polled: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "batch_documents_polled_total",
				Help: "Documents that polling found and queued for the app."}),
			expired: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "batches_expired_total",
				Help: "Batches given up with documents still pending after give_up_after."}),
			states: batchStatesCollector{desc: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "batches"),
				"Batches in the ledger, by state: processing, complete, expired (kept for retention), and overdue (processing, uploaded poll_after ago or more).",
				[]string{"state"}, nil)},
		}
		// Every outcome has a series from the start, so that rates and
		// alerts see zeros rather than nothing.
		for _, o := range []reconcile.Outcome{reconcile.OutcomeOK, reconcile.OutcomeThrottled, reconcile.OutcomeFailed, reconcile.OutcomeExpired} {
			batchCollectors.polls.WithLabelValues(string(o))
		}
	})
	m := batchCollectors
	for _, c := range []prometheus.Collector{m.polls, m.polled, m.expired, m.states} {
		metricsreg.Register(registry, c)
	}
	batchmetrics.Register(registry)
	return m
}

// batchStatesCollector reports the batches of the open ledgers by state,
// counted by ledger.Store.Stats at each scrape.
type batchStatesCollector struct {
	desc *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c batchStatesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c batchStatesCollector) Collect(ch chan<- prometheus.Metric) {
	var sum ledger.Stats
	open := false
	ledgers.Range(func(_, v any) bool {
		l, ok := v.(*sharedLedger)
		if !ok {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := l.store.Stats(ctx)
		cancel()
		if err != nil {
			return true // closed, or failing: no series rather than a wrong one
		}
		open = true
		sum.Processing += st.Processing
		sum.Complete += st.Complete
		sum.Expired += st.Expired
		sum.Overdue += st.Overdue
		return true
	})
	if !open {
		return
	}
	for _, s := range []struct {
		state string
		n     int
	}{{"processing", sum.Processing}, {"complete", sum.Complete}, {"expired", sum.Expired}, {"overdue", sum.Overdue}} {
		if m, err := prometheus.NewConstMetric(c.desc, prometheus.GaugeValue, float64(s.n), s.state); err == nil {
			ch <- m
		}
	}
}

// pollObserver logs, counts and traces the reconciler's polls.
type pollObserver struct {
	logger *zap.Logger
	m      *batchMetrics
	// tp records the polls' spans; nil: the deliveries' tracer provider
	// (callback.TracerProvider).
	tp trace.TracerProvider
}

// pollTracerName names the tracer of the polls' spans.
const pollTracerName = "github.com/caddy-atlas/caddy-atlas"

// PollStart implements reconcile.Observer: a poll is a span, "atlas
// batch poll", the root of a trace of its own, in which its extracts
// requests are client spans and its deliveries, stored with the poll's
// context (callback.EnqueuePolled), are delivered.
func (o pollObserver) PollStart(ctx context.Context, batchID string) context.Context {
	tp := o.tp
	if tp == nil {
		tp = callback.TracerProvider()
	}
	ctx, _ = tp.Tracer(pollTracerName).Start(ctx, "atlas batch poll",
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.String("atlas.batch.id", batchID)))
	return ctx
}

// PollEnd implements reconcile.Observer: it counts and logs the poll,
// and ends its span with its outcome. The span's attributes are counts
// and the outcome, never a document's content; its status says only
// that the poll failed (the error may name the endpoint).
func (o pollObserver) PollEnd(ctx context.Context, r reconcile.PollReport) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(
			attribute.String("atlas.poll.outcome", string(r.Outcome)),
			attribute.Int("atlas.poll.requests", r.Requests),
			attribute.Int("atlas.poll.documents_delivered", r.Delivered),
			attribute.Bool("atlas.poll.batch_complete", r.Completed),
		)
		if r.Outcome == reconcile.OutcomeFailed || r.Outcome == reconcile.OutcomeThrottled {
			span.SetStatus(codes.Error, "poll "+string(r.Outcome))
		}
		span.End()
	}
	o.m.polls.WithLabelValues(string(r.Outcome)).Inc()
	o.m.polled.Add(float64(r.Delivered))
	batchmetrics.Received(ledger.SourcePoll, r.Claimed)
	if r.Completed {
		batchmetrics.Completed(r.UploadToComplete)
	}
	if len(r.Dropped) > 0 {
		o.logger.Error("polled results dropped: claimed, but not queued for the app after twice give_up_after; their documents will not reach the app",
			zap.String("batch_id", r.BatchID), zap.Strings("deliveries", r.Dropped), zap.Error(r.Err))
	}
	switch r.Outcome {
	case reconcile.OutcomeExpired:
		o.m.expired.Inc()
		o.logger.Warn("batch expired with documents still pending", zap.String("batch_id", r.BatchID),
			zap.Strings("missing", r.Missing))
	case reconcile.OutcomeFailed, reconcile.OutcomeThrottled:
		o.logger.Info("batch poll", zap.String("batch_id", r.BatchID), zap.String("outcome", string(r.Outcome)), zap.Error(r.Err))
	}
}

// Interface guard
var _ reconcile.Observer = pollObserver{}
