package callback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-atlas/caddy-atlas/internal/httpjson"
	"github.com/caddy-atlas/caddy-atlas/internal/outbound"
	"github.com/caddy-atlas/caddy-atlas/mask"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
	"github.com/caddy-atlas/caddy-atlas/spool"
)

// Defaults of the callback route's durable mode (see Callback.Spool),
// beside those of every queue (queue.DefaultMaxAttempts etc.).
const (
	DefaultMaxSpoolSize = spool.DefaultMaxDiskBytes

	DefaultDeadLetterRetention = spool.DefaultDeadLetterRetention
	DefaultPurgeDelay          = spool.DefaultPurgeDelay

	// spoolRetryAfter is the Retry-After, in seconds, of a callback
	// refused because the spool cannot store it.
	spoolRetryAfter = "30"
	// spoolDrainTimeout bounds how long the last config using a spool
	// waits for its deliveries in progress when it is unloaded (caddy
	// stop); cancelled deliveries stay pending and are redelivered at the
	// next start.
	spoolDrainTimeout = 10 * time.Second
	// maxSpooledBody is the largest max_body allowed in durable mode,
	// below the spool's record bound of 1 GiB.
	maxSpooledBody = 1<<30 - 1<<20
	// statusClientClosedRequest is logged when the client went away
	// before its callback was stored.
	statusClientClosedRequest = 499
)

// spools holds the open spools, shared by every config and callback route
// that names the same directory, so that a config reload keeps the spool
// and its delivery workers. Keys are spool directories (absolute, clean,
// symlinks resolved); values are *sharedSpool.
var spools = caddy.NewUsagePool()

// durableSettings are a callback route's resolved delivery settings.
type durableSettings struct {
	deliverTo       string
	maxAttempts     int
	backoffMin      time.Duration
	backoffMax      time.Duration
	deliveryTimeout time.Duration
	concurrency     int
	retention       time.Duration
	maxSpoolSize    int64
	deadRetention   time.Duration
	purgeDelay      time.Duration
	// keyIDs are the ids of the encryption keys, comma-separated, first
	// the one that encrypts; "" for none.
	keyIDs string
}

// sharedSpool is an open spool in the usage pool, with the HTTP transport
// its deliveries use and the callback routes that use it (see
// queueRoutes for whose settings are in effect).
type sharedSpool struct {
	dir       string
	store     *spool.FileSpool
	transport *http.Transport
	routes    queueRoutes
}

// openSharedSpool opens the spool in dir with c's settings.
func openSharedSpool(dir string, c *Callback) (*sharedSpool, error) {
	s := &sharedSpool{
		dir:       dir,
		transport: outbound.NewTransport(),
	}
	st, err := spool.Open(dir, s.options(c))
	if err != nil {
		return nil, err
	}
	s.store = st
	return s, nil
}

// options are the spool options of c's settings.
func (s *sharedSpool) options(c *Callback) spool.Options {
	return spool.Options{
		Deliver:         c.deliverFunc(s.transport),
		Retention:       c.durable.retention,
		MaxAttempts:     c.durable.maxAttempts,
		BackoffMin:      c.durable.backoffMin,
		BackoffMax:      c.durable.backoffMax,
		DeliveryTimeout: c.durable.deliveryTimeout,
		Concurrency:     c.durable.concurrency,
		MaxDiskBytes:    c.durable.maxSpoolSize,
		Logger:          c.logger.Named("spool").With(zap.String("spool", s.dir)),
		Observer:        spoolObserver{registerSpoolMetrics(nil)},
		Keyring:         c.keyring,

		DeadLetterRetention: c.durable.deadRetention,
		PurgeDelay:          c.durable.purgeDelay,
	}
}

// deliverFunc returns the delivery of c's settings, whichever queue
// delivers: a POST to deliver_to through transport, each attempt signed
// (sign_deliveries) and traced (see traceDeliveries).
func (c *Callback) deliverFunc(transport http.RoundTripper) queue.DeliverFunc {
	d := &queue.HTTPDeliverer{URL: c.durable.deliverTo, Client: &http.Client{Transport: outbound.Traced(transport)}}
	if c.handoffSigner != nil {
		d.Header = c.signAttempt
	}
	return traceDeliveries(d.Deliver)
}

// attach adds c to the routes using the spool and applies its settings.
// Two routes of one config may share a spool only with the same delivery
// settings: which would win is otherwise undefined.
func (s *sharedSpool) attach(c *Callback) error {
	return s.routes.add(c, func(o *Callback) error {
		if c.configKey != nil && o.configKey == c.configKey && !sameDelivery(o, c) {
			return fmt.Errorf("spool %s is also used by the callback route %s of this config with other delivery settings; give each route its own spool directory, or the same settings", s.dir, o.Path)
		}
		return nil
	}, func(c *Callback) error { return s.store.Reconfigure(s.options(c)) })
}

// sameDelivery reports whether routes o and c deliver alike: the same
// settings, and the same sign_deliveries secrets (the delivery of the
// route provisioned last signs every callback of the queue).
func sameDelivery(o, c *Callback) bool {
	return o.durable == c.durable && slices.Equal(o.SignDeliveries, c.SignDeliveries)
}

// detach removes c from the routes using the spool; if its settings were
// in effect, those of the last remaining route apply again.
func (s *sharedSpool) detach(c *Callback) {
	s.routes.remove(c, func(last *Callback) {
		if err := s.store.Reconfigure(s.options(last)); err != nil {
			last.logger.Error("restoring the spool settings", zap.String("spool", s.dir), zap.Error(err))
		}
	})
}

// Destruct closes the spool when the last config using it is unloaded:
// it waits up to spoolDrainTimeout for the deliveries in progress; those
// it cancels stay pending and are delivered after the next start.
func (s *sharedSpool) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), spoolDrainTimeout)
	defer cancel()
	err := s.store.Close(ctx)
	s.transport.CloseIdleConnections()
	return err
}

// OpenQueue is a durable queue in use by callback routes, as the admin
// API sees it.
type OpenQueue struct {
	// Name names the queue: a spool's directory.
	Name string
	// Store is the queue.
	Store queue.Store
	// Masker is the masker of the route whose settings are in effect
	// (nil if it masks nothing), for the admin API's ?body=1.
	Masker *mask.Masker
	// MaxBytes is a spool's max_spool_size; 0 for other queues.
	MaxBytes int64
}

// OpenQueues returns the durable queues in use: the spools sorted by
// directory, then the JetStream queues (named jetstream:<stream>) sorted
// by name.
func OpenQueues() []OpenQueue {
	var out []OpenQueue
	for _, s := range liveSpools() {
		out = append(out, OpenQueue{Name: s.dir, Store: s.store, Masker: s.masker(), MaxBytes: s.maxBytes()})
	}
	for _, s := range liveJetStreams() {
		out = append(out, OpenQueue{Name: s.name, Store: s.store, Masker: s.masker()})
	}
	return out
}

// masker returns the masker of the route whose settings are in effect.
func (s *sharedSpool) masker() *mask.Masker { return s.routes.masker() }

// liveSpools returns the open spools, sorted by directory.
func liveSpools() []*sharedSpool {
	var out []*sharedSpool
	spools.Range(func(_, v any) bool {
		if s, ok := v.(*sharedSpool); ok && s != nil {
			out = append(out, s)
		}
		return true
	})
	slices.SortFunc(out, func(a, b *sharedSpool) int { return strings.Compare(a.dir, b.dir) })
	return out
}

// SpoolKey returns the name of a spool directory among the open queues:
// absolute, clean, and with symlinks resolved when the directory exists.
func SpoolKey(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	return filepath.Clean(abs), nil
}

// provisionDurable resolves and checks the durable-mode settings and, if
// a spool is configured, takes it from the pool (opening it on first
// use) and applies the route's delivery settings.
func (c *Callback) provisionDurable(ctx caddy.Context) error {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = queue.DefaultMaxAttempts
	}
	if c.RetryBackoffMin == 0 {
		c.RetryBackoffMin = caddy.Duration(queue.DefaultBackoffMin)
	}
	if c.RetryBackoffMax == 0 {
		c.RetryBackoffMax = caddy.Duration(max(queue.DefaultBackoffMax, time.Duration(c.RetryBackoffMin)))
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = caddy.Duration(queue.DefaultDeliveryTimeout)
	}
	if c.Concurrency == 0 {
		c.Concurrency = queue.DefaultConcurrency
	}
	if c.Retention == 0 {
		c.Retention = caddy.Duration(queue.DefaultRetention)
	}
	if c.MaxSpoolSize == 0 {
		c.MaxSpoolSize = DefaultMaxSpoolSize
	}
	if c.DeadLetterRetention == 0 && c.Queue == nil {
		c.DeadLetterRetention = caddy.Duration(DefaultDeadLetterRetention)
	}
	if c.PurgeDelay == 0 && c.Queue == nil {
		c.PurgeDelay = caddy.Duration(DefaultPurgeDelay)
	}
	repl := caddy.NewReplacer()
	if err := c.provisionKeyring(repl); err != nil {
		return err
	}
	c.spoolDir = repl.ReplaceKnown(c.Spool, "")
	c.deliverTo = repl.ReplaceKnown(c.DeliverTo, "")
	deliverTo := c.deliverTo
	if err := c.validateDurable(); err != nil {
		return err
	}
	if c.spoolDir == "" && c.Queue == nil {
		return nil
	}

	c.durable = durableSettings{
		deliverTo:       deliverTo,
		maxAttempts:     c.MaxAttempts,
		backoffMin:      time.Duration(c.RetryBackoffMin),
		backoffMax:      time.Duration(c.RetryBackoffMax),
		deliveryTimeout: time.Duration(c.DeliveryTimeout),
		concurrency:     c.Concurrency,
		retention:       time.Duration(c.Retention),
		maxSpoolSize:    c.MaxSpoolSize,
		deadRetention:   time.Duration(c.DeadLetterRetention),
		purgeDelay:      time.Duration(c.PurgeDelay),
		keyIDs:          strings.Join(c.keyring.KeyIDs(), ","),
	}
	if r := ctx.GetMetricsRegistry(); r != nil {
		c.configKey = r // one registry per loaded config
	}
	registerSpoolMetrics(ctx.GetMetricsRegistry())
	if c.Queue != nil {
		registerJetStreamMetrics(ctx.GetMetricsRegistry())
		return c.provisionJetStream()
	}

	key, err := SpoolKey(c.spoolDir)
	if err != nil {
		return fmt.Errorf("spool %q: %w", c.spoolDir, err)
	}
	val, _, err := spools.LoadOrNew(key, func() (caddy.Destructor, error) {
		return openSharedSpool(key, c)
	})
	if err != nil {
		return fmt.Errorf("opening spool %s: %w", key, err)
	}
	c.spoolKey = key
	shared := val.(*sharedSpool)
	if err := shared.attach(c); err != nil {
		return err
	}
	c.shared = shared
	c.store = shared.store
	c.queueName = shared.dir
	u, _ := url.Parse(deliverTo)
	c.logger.Info("callback route in durable mode", zap.String("spool", shared.dir),
		zap.String("deliver_to", u.Redacted()), zap.Int("concurrency", c.Concurrency),
		zap.Int("max_attempts", c.MaxAttempts), zap.Strings("encryption_key_ids", c.keyring.KeyIDs()))
	if c.keyring == nil {
		c.logger.Warn("durable mode without encryption_key: payloads are stored unencrypted",
			zap.String("spool", shared.dir))
	}
	return nil
}

// provisionKeyring resolves and parses the encryption keys. Errors name
// a key by its position, never by its value.
func (c *Callback) provisionKeyring(repl *caddy.Replacer) error {
	c.keyring = nil
	if len(c.EncryptionKeys) == 0 {
		return nil
	}
	keys := make([][]byte, len(c.EncryptionKeys))
	for i, v := range c.EncryptionKeys {
		raw := repl.ReplaceKnown(v, "")
		if strings.TrimSpace(raw) == "" {
			return fmt.Errorf("encryption_key %d is empty (an unset {env.*} or unreadable {file.*} placeholder?)", i+1)
		}
		k, err := seal.ParseKey(raw)
		if err != nil {
			return fmt.Errorf("encryption_key %d: %w", i+1, err)
		}
		keys[i] = k
	}
	kr, err := seal.NewKeyring(keys...)
	for _, k := range keys {
		clear(k)
	}
	if err != nil {
		return fmt.Errorf("encryption_key: %w", err)
	}
	c.keyring = kr
	return nil
}

// validateDurable checks the provisioned durable-mode settings; it
// changes nothing.
func (c *Callback) validateDurable() error {
	switch {
	case c.Spool != "" && c.Queue != nil:
		return errors.New("spool and queue are exclusive: durable mode uses either a local spool or a shared queue")
	case c.Queue != nil && c.Queue.JetStream == nil:
		return errors.New("queue names no backend (jetstream)")
	case c.Queue != nil && c.DeadLetterRetention != 0:
		// The JetStream queue keeps a dead letter until it is retried or
		// deleted: a retention it would not apply must not be accepted.
		return errors.New("dead_letter_retention applies to a spool only: a queue jetstream keeps dead letters until they are retried or purged")
	case c.Queue != nil && c.PurgeDelay != 0:
		// JetStream deletes what it no longer needs itself.
		return errors.New("purge_delay applies to a spool only: a queue jetstream deletes delivered messages itself")
	case c.Spool == "" && c.Queue == nil && c.DeliverTo != "":
		return errors.New("deliver_to needs spool or queue: durable mode delivers from a spool directory or a shared queue")
	case c.Spool == "" && c.Queue == nil && len(c.EncryptionKeys) > 0:
		return errors.New("encryption_key needs spool or queue: it encrypts the stored callbacks")
	case c.Spool == "" && c.Queue == nil:
		return nil
	case c.Queue == nil && c.spoolDir == "":
		return errors.New("spool is empty (an unset {env.*} placeholder?)")
	case c.DeliverTo == "":
		return errors.New("deliver_to is required with spool or queue: where the stored callbacks are delivered")
	case c.MaxAttempts < 1:
		return fmt.Errorf("max_attempts must be at least 1, got %d", c.MaxAttempts)
	case c.RetryBackoffMin <= 0 || c.RetryBackoffMax <= 0:
		return errors.New("retry_backoff durations must be positive")
	case c.RetryBackoffMin > c.RetryBackoffMax:
		return fmt.Errorf("retry_backoff: the first delay %s exceeds the maximum %s",
			time.Duration(c.RetryBackoffMin), time.Duration(c.RetryBackoffMax))
	case c.DeliveryTimeout <= 0:
		return errors.New("delivery_timeout must be positive")
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency must be at least 1, got %d", c.Concurrency)
	case c.Retention <= 0:
		return errors.New("retention must be positive")
	case c.MaxSpoolSize <= 0:
		return errors.New("max_spool_size must be positive")
	case c.Queue == nil && c.DeadLetterRetention <= 0:
		return errors.New("dead_letter_retention must be positive")
	case c.Queue == nil && c.PurgeDelay <= 0:
		return errors.New("purge_delay must be positive")
	case len(c.EncryptionKeys) > 0 && c.keyring == nil:
		return errors.New("encryption_key is not provisioned")
	case c.MaxBody > maxSpooledBody:
		return fmt.Errorf("max_body must be at most %d bytes in durable mode", maxSpooledBody)
	}
	u, err := url.Parse(c.deliverTo)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("deliver_to is not an absolute http(s) URL")
	}
	return nil
}

// cleanupDurable releases the route's spool; the last route using it
// closes it. It leaves c.store alone: requests of the old config may
// still be served while it is cleaned up, and a closed spool answers them
// ErrClosed (503).
func (c *Callback) cleanupDurable() error {
	if err := c.cleanupJetStream(); err != nil {
		return err
	}
	if c.shared != nil {
		c.shared.detach(c)
		c.shared = nil
	}
	if c.spoolKey == "" {
		return nil
	}
	key := c.spoolKey
	c.spoolKey = ""
	_, err := spools.Delete(key)
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

	res, err := c.store.Append(r.Context(), queue.Entry{ID: id, Header: hdr, Body: body})
	if err != nil {
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

	outcome := outcomeAccepted
	if res.Duplicate {
		outcome = outcomeDuplicate
	}
	c.metrics.callbacks.WithLabelValues(outcome).Inc()
	if ce := c.logger.Check(zapcore.DebugLevel, "callback spooled"); ce != nil {
		ce.Write(zap.String("callback_id", id), zap.String("subject", subject),
			zap.Bool("duplicate", res.Duplicate), zap.Int("bytes", len(body)))
	}
	ack, _ := json.Marshal(spoolAck{Status: "accepted", CallbackID: id, Duplicate: res.Duplicate})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(append(ack, '\n'))
	return nil
}

// Interface guards
var _ caddy.Destructor = (*sharedSpool)(nil)
