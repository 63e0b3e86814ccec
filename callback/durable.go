package callback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-atlas/caddy-atlas/internal/httpjson"
	"github.com/caddy-atlas/caddy-atlas/internal/outbound"
	"github.com/caddy-atlas/caddy-atlas/internal/placeholder"
	"github.com/caddy-atlas/caddy-atlas/queue"
)

const (
	// spoolRetryAfter is the Retry-After, in seconds, of a callback
	// refused because the queue cannot store it.
	spoolRetryAfter = "30"
	// maxSpooledBody is the largest max_body allowed in durable mode,
	// below the spool's record bound of 1 GiB.
	maxSpooledBody = 1<<30 - 1<<20
	// statusClientClosedRequest is logged when the client went away
	// before its callback was stored.
	statusClientClosedRequest = 499
	// payloadMargin is what a callback's message adds to its body in a
	// JetStream queue: the envelope with the callback's headers, the
	// NATS headers, a seal.
	payloadMargin = 4 << 10
)

// deliverFunc returns the delivery of c's settings, whichever queue
// delivers: a POST to deliver_to through transport, each attempt signed
// (sign_deliveries) and traced (see traceDeliveries).
func (c *Callback) deliverFunc(transport http.RoundTripper) queue.DeliverFunc {
	d := &queue.HTTPDeliverer{URL: c.deliverTo, Client: &http.Client{Transport: outbound.Traced(transport)}}
	if c.handoffSigner != nil {
		d.Header = c.signAttempt
	}
	return traceDeliveries(d.Deliver)
}

// UseQueue gives the route the queue of the atlas app, for durable mode
// when its block names no queue of its own. Call it before Provision.
func (c *Callback) UseQueue(b queue.Backend) { c.appQueue = b }

// provisionDurable resolves deliver_to and, if set, takes the route's
// queue: the one its block names (loaded as a module of the atlas.queues
// namespace), or the atlas app's; and attaches the route to it, which
// opens nothing: Start opens it.
func (c *Callback) provisionDurable(ctx caddy.Context) error {
	if err := c.foldLegacyQueue(); err != nil {
		return err
	}
	c.deliverTo = caddy.NewReplacer().ReplaceKnown(c.DeliverTo, "")
	if err := c.validateDurable(); err != nil {
		return err
	}
	if c.DeliverTo == "" {
		return nil
	}
	backend := c.appQueue
	if c.Queue != nil {
		mod, err := ctx.LoadModule(c, "Queue")
		if err != nil {
			return fmt.Errorf("loading the queue: %w", err)
		}
		b, ok := mod.(queue.Backend)
		if !ok {
			return fmt.Errorf("the queue module %T is not a queue backend", mod)
		}
		if c.appQueue != nil {
			if diff := c.appQueue.Differs(b); diff != "" {
				return fmt.Errorf("queue %s is configured twice in this config, with a different %s: in the global atlas options and for the callback route %s; configure it once (in the global atlas options) or alike in both places",
					b.Name(), diff, c.Path)
			}
		}
		backend = b
	}
	if backend == nil {
		return errors.New("deliver_to needs spool or queue: give the callback block a spool or a queue, or the global atlas options a queue")
	}
	user := &queue.User{
		Name:        "the callback route " + c.Path,
		Deliver:     c.deliverFunc,
		DeliveryKey: c.deliverTo + "\x00" + strings.Join(c.SignDeliveries, "\x00"),
		Masker:      c.masker,
		Logger:      c.logger,
	}
	if r := ctx.GetMetricsRegistry(); r != nil {
		user.Config = r // one registry per loaded config
	}
	if err := backend.Attach(user); err != nil {
		return err
	}
	c.backend, c.user = backend, user
	c.queueName = backend.Name()
	c.store = new(atomic.Pointer[storeRef])
	c.ready, c.readyOnce = make(chan struct{}), new(sync.Once)
	if backend.IsOpen() {
		// A reload: the queue is open, so the route takes it now and
		// never answers 503 while its config starts. A config that is
		// only validated runs in a process where nothing is open.
		return c.Start()
	}
	return nil
}

// storeRef holds the route's open queue.
type storeRef struct{ queue.Store }

// errNotOpen is the answer of a route whose queue is not open yet.
var errNotOpen = fmt.Errorf("%w: the queue is not open yet", queue.ErrUnavailable)

// Start starts the JWKS fetcher, if any, and opens the route's queue,
// in durable mode, when its config starts (the atlas app's Start): until then, the route answers
// callbacks 503 with Retry-After. A config that is only validated never
// opens it. A max_body the queue cannot take is an error (see
// fitMaxBody). Without a queue, Start does nothing.
func (c *Callback) Start() error {
	if c.jwks != nil && c.jwksOnce != nil {
		c.jwksOnce.Do(func() { c.jwks.Start(c.jwksCtx) })
	}
	if c.backend == nil || c.openStore() != nil {
		return nil
	}
	st, err := c.backend.Open(c.user)
	if err != nil {
		return err
	}
	if err := c.fitMaxBody(st); err != nil {
		return err
	}
	c.store.Store(&storeRef{st})
	c.readyOnce.Do(func() { close(c.ready) })
	u, _ := url.Parse(c.deliverTo)
	c.logger.Info("callback route in durable mode", zap.String("queue", c.queueName), zap.String("deliver_to", u.Redacted()))
	return nil
}

// openWait bounds how long a callback waits for its route's queue to
// open as the config starts: Caddy starts its apps in no set order, so
// the server may take callbacks a moment before the atlas app has opened
// the queues.
const openWait = 10 * time.Second

// waitOpen returns the route's open queue, waiting up to openWait (or
// until ctx is done) for the config to open it; nil if it is still not
// open.
func (c *Callback) waitOpen(ctx context.Context) queue.Store {
	if st := c.openStore(); st != nil || c.ready == nil {
		return st
	}
	t := time.NewTimer(openWait)
	defer t.Stop()
	select {
	case <-c.ready:
	case <-ctx.Done():
	case <-t.C:
	}
	return c.openStore()
}

// openStore returns the route's open queue, nil if it is not open (or
// the route is not in durable mode).
func (c *Callback) openStore() queue.Store {
	if c.store == nil {
		return nil
	}
	if ref := c.store.Load(); ref != nil {
		return ref.Store
	}
	return nil
}

// fitMaxBody checks max_body against the largest message the queue st
// takes (a JetStream queue: the NATS servers' max_payload, less what a
// callback's headers add): a max_body that is set and above it is an
// error naming both and the fix; the default is lowered to it.
func (c *Callback) fitMaxBody(st queue.Store) error {
	mp, ok := st.(interface{ MaxPayload() int64 })
	if !ok || mp.MaxPayload() <= 0 || c.MaxBody+payloadMargin <= mp.MaxPayload() {
		return nil
	}
	fits := mp.MaxPayload() - payloadMargin
	if c.maxBodySet {
		return fmt.Errorf("max_body %d bytes is above what queue %s takes: the NATS servers' max_payload is %d bytes, and a callback adds up to %d bytes of headers; set max_body to at most %d bytes, or raise max_payload in the NATS servers' configuration (up to 64MB)",
			c.MaxBody, c.queueName, mp.MaxPayload(), payloadMargin, fits)
	}
	c.maxBody.Store(fits)
	c.logger.Info("max_body is lowered from its default to what the NATS servers take (their max_payload less the callback's headers); raise max_payload to take larger callbacks",
		zap.String("queue", c.queueName), zap.Int64("max_body", fits), zap.Int64("max_payload", mp.MaxPayload()))
	return nil
}

// validateDurable checks the durable-mode settings that are the route's;
// it changes nothing. The queue checks its own.
func (c *Callback) validateDurable() error {
	if c.deliverTo == "" && c.DeliverTo != "" {
		return placeholder.Empty("deliver_to", c.DeliverTo)
	}
	if c.DeliverTo == "" {
		if c.Queue != nil {
			return errors.New("deliver_to is required with spool or queue: where the stored callbacks are delivered")
		}
		return nil
	}
	if c.MaxBody > maxSpooledBody {
		return fmt.Errorf("max_body must be at most %d bytes in durable mode", maxSpooledBody)
	}
	u, err := url.Parse(c.deliverTo)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("deliver_to is not an absolute http(s) URL")
	}
	return nil
}

// cleanupDurable ends the route's use of its queue; the last user closes
// it. It leaves c.store alone: requests of the old config may still be
// served while it is cleaned up, and a closed queue answers them
// ErrClosed (503).
func (c *Callback) cleanupDurable() error {
	if c.backend == nil {
		return nil
	}
	err := c.backend.Detach(c.user)
	c.backend, c.user = nil, nil
	return err
}

// spoolAck is the answer to a spooled callback.
type spoolAck struct {
	Status     string `json:"status"`
	CallbackID string `json:"callback_id"`
	Duplicate  bool   `json:"duplicate,omitempty"`
}

// spoolCallback stores a verified callback in the spool and acknowledges
// it once it is on stable storage: 202 {"status": "accepted",
// "callback_id": id}, with "duplicate": true for an id already stored. A
// spool that cannot store it is answered 503 with Retry-After, never 2xx.
func (c *Callback) spoolCallback(w http.ResponseWriter, r *http.Request, id, subject, count string, body []byte) error {
	hdr := make(http.Header, 4)
	if ct := r.Header.Get("Content-Type"); ct != "" {
		hdr.Set("Content-Type", ct)
	}
	hdr.Set(headerAtlasSubject, subject)
	hdr.Set(headerAtlasDocumentCount, count)
	hdr.Set(headerAtlasCallbackID, id)
	storeTraceContext(r.Context(), hdr)

	var res queue.AppendResult
	err := errNotOpen
	if st := c.waitOpen(r.Context()); st != nil {
		res, err = st.Append(r.Context(), queue.Entry{ID: id, Header: hdr, Body: body})
	}
	if err != nil {
		return c.refuse(w, r, id, body, err)
	}

	outcome := outcomeAccepted
	if res.Duplicate {
		outcome = outcomeDuplicate
	}
	c.metrics.callbacks.WithLabelValues(outcome).Inc()
	if ce := c.logger.Check(zapcore.DebugLevel, "callback spooled"); ce != nil {
		ce.Write(zap.String("callback_id", id), zap.String("subject", subject),
			zap.Bool("duplicate", res.Duplicate), zap.Int("bytes", len(body)))
	}
	return writeAck(w, id, res.Duplicate)
}

// refuse answers a callback that the queue did not store: 413 for one
// too large for it, 503 with Retry-After when it cannot store, never a
// 2xx.
func (c *Callback) refuse(w http.ResponseWriter, r *http.Request, id string, body []byte, err error) error {
	switch {
	case errors.Is(err, queue.ErrTooLarge):
		// Atlas would retry a 5xx for ever; the operator can raise
		// the store's limit (the NATS servers' max_payload) or lower
		// max_body, which provisioning warned about.
		c.metrics.callbacks.WithLabelValues(outcomeTooLarge).Inc()
		c.logger.Warn("callback refused: too large for the queue", zap.String("callback_id", id),
			zap.String("spool", c.queueName), zap.Int("bytes", len(body)), zap.Error(err))
		return httpjson.WriteError(w, http.StatusRequestEntityTooLarge,
			"the callback body ("+strconv.Itoa(len(body))+" bytes) is larger than the queue takes")
	case errors.Is(err, queue.ErrUnavailable), errors.Is(err, queue.ErrClosed):
		c.metrics.callbacks.WithLabelValues(outcomeUnavailable).Inc()
		c.logger.Error("callback refused: the spool cannot store it", zap.String("callback_id", id),
			zap.String("spool", c.queueName), zap.Int("bytes", len(body)), zap.Error(err))
		w.Header().Set("Retry-After", spoolRetryAfter)
		return httpjson.WriteError(w, http.StatusServiceUnavailable, "the callback cannot be stored right now; retry later")
	case r.Context().Err() != nil:
		return caddyhttp.Error(statusClientClosedRequest, fmt.Errorf("spooling callback %s: %w", id, err))
	}
	return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("spooling callback %s: %w", id, err))
}

// writeAck answers a stored callback 202 {"status": "accepted",
// "callback_id": id}, with "duplicate": true for one stored before.
func writeAck(w http.ResponseWriter, id string, duplicate bool) error {
	ack, _ := json.Marshal(spoolAck{Status: "accepted", CallbackID: id, Duplicate: duplicate})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(append(ack, '\n'))
	return nil
}

// foldLegacyQueue moves the deprecated spellings of the queue's settings
// (Spool, MaxAttempts...) into Queue, and rewrites the queue's former
// JSON shape, {"jetstream": {...}}, as a module's.
func (c *Callback) foldLegacyQueue() error {
	var q map[string]any
	if string(c.Queue) == "null" {
		c.Queue = nil
	}
	if c.Queue != nil {
		if err := json.Unmarshal(c.Queue, &q); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		if js, ok := q["jetstream"]; ok && q["backend"] == nil {
			m, ok := js.(map[string]any)
			if !ok || len(q) != 1 {
				return errors.New(`queue: {"jetstream": {...}} holds the JetStream settings and nothing beside them`)
			}
			q = m
			q["backend"] = "jetstream"
		}
		if len(q) == 0 {
			return errors.New(`queue names no backend: give {"backend": "spool", ...} or {"backend": "jetstream", ...}`)
		}
	}
	type setting struct {
		name string // as the Caddyfile spells it
		json string
		val  any
		set  bool
	}
	legacy := []setting{
		{"max_attempts", "max_attempts", c.MaxAttempts, c.MaxAttempts != 0},
		{"retry_backoff", "retry_backoff_min", c.RetryBackoffMin, c.RetryBackoffMin != 0},
		{"retry_backoff", "retry_backoff_max", c.RetryBackoffMax, c.RetryBackoffMax != 0},
		{"delivery_timeout", "delivery_timeout", c.DeliveryTimeout, c.DeliveryTimeout != 0},
		{"concurrency", "concurrency", c.Concurrency, c.Concurrency != 0},
		{"retention", "retention", c.Retention, c.Retention != 0},
		{"encryption_key", "encryption_keys", c.EncryptionKeys, len(c.EncryptionKeys) > 0},
		{"max_spool_size", "max_spool_size", c.MaxSpoolSize, c.MaxSpoolSize != 0},
		{"dead_letter_retention", "dead_letter_retention", c.DeadLetterRetention, c.DeadLetterRetention != 0},
		{"purge_delay", "purge_delay", c.PurgeDelay, c.PurgeDelay != 0},
	}
	if c.Spool != "" {
		if q != nil {
			return errors.New("spool and queue are exclusive: durable mode uses either a local spool or a shared queue")
		}
		q = map[string]any{"backend": "spool", "dir": c.Spool}
	}
	for _, s := range legacy {
		if !s.set {
			continue
		}
		switch {
		case q == nil && s.name == "encryption_key":
			return errors.New("encryption_key needs spool or queue: it encrypts the stored callbacks")
		case q == nil && c.DeliverTo != "":
			return fmt.Errorf("%s needs spool or queue: it is a setting of the route's own queue; this route uses the queue of the global atlas options, whose block takes it", s.name)
		case q == nil:
			// A route without durable mode never used it.
			c.logger.Warn("a setting of durable mode has no effect: the callback route has no deliver_to and no queue",
				zap.String("setting", s.name))
			continue
		case q["backend"] == "jetstream" && s.name == "dead_letter_retention":
			// The JetStream queue keeps a dead letter until it is retried
			// or deleted: a retention it would not apply must not be
			// accepted.
			return errors.New("dead_letter_retention applies to a spool only: a queue jetstream keeps dead letters until they are retried or purged")
		case q["backend"] == "jetstream" && s.name == "purge_delay":
			return errors.New("purge_delay applies to a spool only: a queue jetstream deletes delivered messages itself")
		case q["backend"] == "jetstream" && s.name == "max_spool_size":
			continue // never applied to a JetStream queue: its streams' limits do
		}
		if _, dup := q[s.json]; dup {
			return fmt.Errorf("%s is given twice: in the queue and beside it", s.name)
		}
		q[s.json] = s.val
	}
	c.Spool, c.MaxAttempts, c.RetryBackoffMin, c.RetryBackoffMax = "", 0, 0, 0
	c.DeliveryTimeout, c.Concurrency, c.Retention, c.EncryptionKeys = 0, 0, 0, nil
	c.MaxSpoolSize, c.DeadLetterRetention, c.PurgeDelay = 0, 0, 0
	if q == nil {
		return nil
	}
	raw, err := json.Marshal(q)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	c.Queue = raw
	return nil
}
