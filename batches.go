package caddyatlas

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/internal/placeholder"
	"github.com/caddy-atlas/caddy-atlas/jsqueue"
	"github.com/caddy-atlas/caddy-atlas/ledger"
	"github.com/caddy-atlas/caddy-atlas/queues"
)

// Defaults of the batches' settings beside the ledger's own (see
// ledger.Policy).
const (
	DefaultBatchesPath = "/atlas/batches"
	DefaultMaxWait     = 60 * time.Second
	DefaultPollRate    = 2.0
	DefaultLeaseTTL    = 2 * time.Minute
)

// Batches configures the ledger of batches: the gateway records every
// upload Atlas accepts and follows each document to its result, so that
// the app can ask whether a batch is done (GET {batches_path}/{id}).
// It needs the app's queue: with a spool, the ledger is a file
// (ledger.db) in the spool's directory; with a jetstream queue, a
// key-value bucket on its servers (LedgerBucket), shared by the fleet.
type Batches struct {
	// How long after the upload a batch with documents still pending is
	// polled, and reported overdue. 0 polls every batch from its upload
	// on (for accounts without callbacks). Default: 15m.
	PollAfter *caddy.Duration `json:"poll_after,omitempty"`

	// The time between two polls of a batch. Default: 5m.
	PollEvery caddy.Duration `json:"poll_every,omitempty"`

	// How long after the upload a batch with documents still pending is
	// given up: expired. Default: 72h.
	GiveUpAfter caddy.Duration `json:"give_up_after,omitempty"`

	// At most this many extracts requests per second for polling.
	// Default: 2.
	PollRate float64 `json:"poll_rate,omitempty"`

	// The longest ?wait= of the batch status endpoint. Default: 60s.
	MaxWait caddy.Duration `json:"max_wait,omitempty"`

	// How long a finished batch is kept. Default: 720h (30 days).
	Retention caddy.Duration `json:"retention,omitempty"`

	// How long an upload's Idempotency-Key is remembered. Default: 24h.
	IdempotencyWindow caddy.Duration `json:"idempotency_window,omitempty"`

	// Where the results found by polling are POSTed when no durable
	// callback route takes them: stored in the app's queue and delivered
	// from it, with X-Atlas-Batch-Id and X-Atlas-Result-Source: poll,
	// neither masked nor signed. Required with service bulk (which has
	// no callbacks). Beside a durable callback route, the results go
	// through that route (masked and signed as its callbacks), and this,
	// if set, must be the route's deliver_to. Placeholders are resolved
	// at provision time.
	DeliverTo string `json:"deliver_to,omitempty"`

	// A poll's lease on its batch, renewed between pages while the poll
	// runs: if the instance polling dies, another takes the batch over
	// once it expires. Keep it above the longest page of extracts plus
	// the instances' clock skew (30s). Default: 2m.
	LeaseTTL caddy.Duration `json:"lease_ttl,omitempty"`
}

// policy returns the ledger policy of the settings.
func (b *Batches) policy() ledger.Policy {
	p := ledger.Policy{
		PollEvery:         time.Duration(b.PollEvery),
		GiveUpAfter:       time.Duration(b.GiveUpAfter),
		Retention:         time.Duration(b.Retention),
		IdempotencyWindow: time.Duration(b.IdempotencyWindow),
	}
	switch {
	case b.PollAfter == nil:
	case *b.PollAfter == 0:
		// Poll-only: every batch is due from its upload on.
		p.PollAfter = time.Nanosecond
	default:
		p.PollAfter = time.Duration(*b.PollAfter)
	}
	return p.WithDefaults()
}

// validate checks the settings.
func (b *Batches) validate() error {
	for name, d := range map[string]caddy.Duration{
		"poll_every": b.PollEvery, "give_up_after": b.GiveUpAfter, "max_wait": b.MaxWait,
		"retention": b.Retention, "idempotency_window": b.IdempotencyWindow, "lease_ttl": b.LeaseTTL,
	} {
		if d < 0 {
			return fmt.Errorf("batches: %s must not be negative", name)
		}
	}
	if b.PollAfter != nil && *b.PollAfter < 0 {
		return errors.New("batches: poll_after must not be negative")
	}
	if b.PollRate < 0 {
		return errors.New("batches: poll_rate must not be negative")
	}
	return nil
}

// resolveDeliverTo resolves deliver_to's placeholders and checks it:
// "" if unset, else an absolute http(s) URL.
func (b *Batches) resolveDeliverTo() (string, error) {
	if b.DeliverTo == "" {
		return "", nil
	}
	v := caddy.NewReplacer().ReplaceKnown(b.DeliverTo, "")
	if v == "" {
		return "", fmt.Errorf("batches: %w", placeholder.Empty("deliver_to", b.DeliverTo))
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("batches: deliver_to is not an absolute http(s) URL")
	}
	return v, nil
}

// leaseTTL is a poll's lease.
func (b *Batches) leaseTTL() time.Duration {
	if b.LeaseTTL > 0 {
		return time.Duration(b.LeaseTTL)
	}
	return DefaultLeaseTTL
}

// maxWait is the longest wait of the status endpoint.
func (b *Batches) maxWait() time.Duration {
	if b.MaxWait > 0 {
		return time.Duration(b.MaxWait)
	}
	return DefaultMaxWait
}

// ledgers holds the open ledgers, shared across reloads: a bbolt file
// by directory (bbolt locks its file: a reload must not open it twice),
// a JetStream bucket by bucket and servers (one connection and one
// watcher per process).
var ledgers = caddy.NewUsagePool()

// ledgerStore is an open ledger: a BoltStore or a JetStreamStore.
type ledgerStore interface {
	ledger.Store
	Policy() ledger.Policy
	SetPolicy(ledger.Policy)
}

// sharedLedger is an open ledger in the pool.
type sharedLedger struct {
	store ledgerStore
	// conn is the JetStream ledger's own connection, nil for bbolt.
	conn *nats.Conn
}

// Destruct closes the ledger (and its connection) when the last config
// using it is unloaded.
func (l *sharedLedger) Destruct() error {
	err := l.store.Close()
	if l.conn != nil {
		l.conn.Close()
	}
	return err
}

// ledgerHolder is the app's hold on its ledger: set when the config
// starts, so that a config that is only validated opens nothing.
type ledgerHolder struct {
	key   string // the pool's key
	where string // where the ledger is, for logs and errors
	open  func(ledger.Policy) (*sharedLedger, error)
	store atomic.Pointer[sharedLedger]
	// ready is closed once store is set.
	ready     chan struct{}
	readyOnce sync.Once
}

// The time JetStream is given to open the ledger's bucket when the
// config starts (a cluster just formed elects the stream's leader).
const ledgerOpenTimeout = 30 * time.Second

// LedgerBucket is the JetStream key-value bucket of the ledger of
// batches beside the queue's stream: ATLAS_LEDGER beside the default
// stream (ATLAS_CALLBACKS), <stream>_LEDGER beside any other, so that
// two fleets on one cluster, each with its own stream, do not share
// their batches.
func LedgerBucket(stream string) string {
	if stream == "" || stream == jsqueue.DefaultStream {
		return ledger.DefaultBucket
	}
	return stream + "_LEDGER"
}

// provisionBatches checks the batches' settings and where the ledger
// goes: the directory of the app's spool, or a key-value bucket on the
// servers of its JetStream queue. It connects to nothing.
func (a *App) provisionBatches() error {
	if a.Batches == nil {
		return nil
	}
	if err := a.Batches.validate(); err != nil {
		return err
	}
	h := &ledgerHolder{ready: make(chan struct{})}
	switch q := a.queue.(type) {
	case interface{ Directory() string }:
		dir := q.Directory()
		h.key, h.where = "bolt:"+dir, dir
		h.open = func(p ledger.Policy) (*sharedLedger, error) {
			st, err := ledger.Open(dir, ledger.Options{Policy: p})
			if err != nil {
				return nil, err
			}
			return &sharedLedger{store: st}, nil
		}
	case interface{ NATS() queues.NATS }:
		n := q.NATS()
		bucket := LedgerBucket(n.Stream)
		h.key = "jetstream:" + bucket + " on " + n.Key
		h.where = "JetStream bucket " + bucket
		logger := a.logger
		h.open = func(p ledger.Policy) (*sharedLedger, error) {
			nc, err := n.Connect("caddy-atlas ledger", logger.With(zap.String("ledger", bucket)))
			if err != nil {
				return nil, err
			}
			js, err := jetstream.New(nc)
			if err != nil {
				nc.Close()
				return nil, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), ledgerOpenTimeout)
			defer cancel()
			st, err := ledger.OpenJetStream(ctx, js, ledger.JetStreamOptions{Policy: p, Bucket: bucket, Replicas: n.Replicas})
			if err != nil {
				nc.Close()
				return nil, err
			}
			return &sharedLedger{store: st, conn: nc}, nil
		}
	default:
		return errors.New("batches needs the queue of the global atlas options, a spool (queue spool <dir>: the ledger is kept in the spool's directory) or a jetstream queue (the ledger is a key-value bucket on its servers)")
	}
	deliverTo, err := a.Batches.resolveDeliverTo()
	if err != nil {
		return err
	}
	if a.own != nil && a.own.service.name == ServiceBulk && deliverTo == "" {
		return errors.New("batches: service bulk needs deliver_to in batches: Atlas's bulk service has no callbacks, so the results found by polling are pushed to the app at batches' deliver_to, through the queue of the global atlas options")
	}
	a.ledger = h
	a.poll = &poller{deliverTo: deliverTo}
	a.onStart(a.openLedger)
	a.onStart(a.startReconciler)
	return nil
}

// openLedger opens the ledger, or takes it from the pool on a reload.
func (a *App) openLedger() error {
	h := a.ledger
	policy := a.Batches.policy()
	val, _, err := ledgers.LoadOrNew(h.key, func() (caddy.Destructor, error) {
		l, err := h.open(policy)
		if err != nil {
			return nil, err
		}
		a.logger.Info("ledger of batches open", zap.String("where", h.where))
		return l, nil
	})
	if err != nil {
		return fmt.Errorf("opening the ledger of batches (%s): %w", h.where, err)
	}
	l := val.(*sharedLedger)
	l.store.SetPolicy(policy) // a reload's settings apply to the open ledger
	h.store.Store(l)
	h.readyOnce.Do(func() { close(h.ready) })
	return nil
}

// waitLedger returns the ledger, waiting up to 10 s (or until ctx is
// done) for the config to open it: Caddy starts its apps in no set
// order, so a request may come a moment before the ledger is open.
func (a *App) waitLedger(ctx context.Context) ledger.Store {
	if st := a.Ledger(); st != nil || a.ledger == nil {
		return st
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-a.ledger.ready:
	case <-ctx.Done():
	case <-t.C:
	}
	return a.Ledger()
}

// releaseLedger stops the reconciler and gives the ledger back to the
// pool.
func (a *App) releaseLedger() error {
	if err := a.stopReconciler(); err != nil {
		a.logger.Warn("stopping the reconciler of batches", zap.Error(err))
	}
	if err := a.detachPollQueue(); err != nil {
		a.logger.Warn("detaching the batches' deliver_to from the queue", zap.Error(err))
	}
	if a.ledger == nil || a.ledger.store.Load() == nil {
		return nil
	}
	_, err := ledgers.Delete(a.ledger.key)
	return err
}

// Ledger returns the app's ledger of batches, nil without batches or
// before the config starts.
func (a *App) Ledger() ledger.Store {
	if a.ledger == nil {
		return nil
	}
	if l := a.ledger.store.Load(); l != nil {
		return l.store
	}
	return nil
}

// batchesOn reports whether the app keeps a ledger of batches.
func (a *App) batchesOn() bool { return a.Batches != nil }

// Interface guard
var _ caddy.Destructor = (*sharedLedger)(nil)

// openLedger returns an open ledger of batches of this process, nil if
// none is open: the one a config's atlas app keeps (a reload shares it).
func openLedger() ledgerStore {
	var keys []string
	found := map[string]ledgerStore{}
	ledgers.Range(func(k, v any) bool {
		if l, ok := v.(*sharedLedger); ok && l != nil && l.store != nil {
			key := fmt.Sprint(k)
			keys = append(keys, key)
			found[key] = l.store
		}
		return true
	})
	if len(keys) == 0 {
		return nil
	}
	slices.Sort(keys)
	return found[keys[0]]
}
