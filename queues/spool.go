package queues

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/internal/cfparse"
	"github.com/caddy-atlas/caddy-atlas/internal/placeholder"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
	"github.com/caddy-atlas/caddy-atlas/spool"
)

func init() {
	caddy.RegisterModule(Spool{})
}

// Spool is the `atlas.queues.spool` module: the durable queue of one
// Caddy instance, a log in a local directory (see package spool). A
// callback is appended and fsynced before Atlas is answered 202, and
// delivered, at least once, by background workers. If the spool cannot
// store a callback (disk full, read-only, max_spool_size reached), Atlas is
// answered 503 with Retry-After. Routes and configs naming the same
// directory share one spool, and a config reload keeps it.
type Spool struct {
	// The directory of the spool. Required.
	Dir string `json:"dir,omitempty"`

	Delivery

	// The largest size of the spool on disk, in bytes; beyond it new
	// callbacks are answered 503. Default: 4 GiB.
	MaxSpoolSize int64 `json:"max_spool_size,omitempty"`

	// How long a dead letter is kept, body included, after its last
	// attempt; then it is purged and counted in
	// caddy_atlas_dead_letters_expired_total. Default: 30 days.
	DeadLetterRetention caddy.Duration `json:"dead_letter_retention,omitempty"`

	// How long the body of a callback stays in the spool's files once it
	// is no longer needed (delivered, deleted, or a purged dead letter):
	// a compaction starts at the latest this much later and removes the
	// files that held it. Each compaction rewrites the callbacks still
	// pending or dead, so a short delay costs disk writes when many are
	// waiting. Default: 10 minutes.
	PurgeDelay caddy.Duration `json:"purge_delay,omitempty"`

	key      string // the directory: absolute, clean, symlinks resolved
	settings spoolSettings
	keyring  *seal.Keyring
	logger   *zap.Logger
	pool     *poolRef
}

// spoolSettings are a spool's resolved settings, comparable with ==.
type spoolSettings struct {
	resolved
	maxSize       int64
	deadRetention time.Duration
	purgeDelay    time.Duration
}

// CaddyModule returns the Caddy module information.
func (Spool) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "atlas.queues.spool",
		New: func() caddy.Module { return new(Spool) },
	}
}

// Provision resolves the directory and the settings; the spool opens when
// the config of the first route that uses it starts.
func (s *Spool) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	dir := caddy.NewReplacer().ReplaceKnown(s.Dir, "")
	if dir == "" {
		return placeholder.Empty("spool", s.Dir)
	}
	if abs, err := filepath.Abs(dir); err == nil {
		if err := checkSpoolDir(abs); err != nil {
			return err
		}
	}
	key, err := SpoolKey(dir)
	if err != nil {
		return fmt.Errorf("spool %q: %w", dir, err)
	}
	s.key = key
	r, kr, err := s.Delivery.resolve()
	if err != nil {
		return fmt.Errorf("spool %s: %w", key, err)
	}
	s.keyring = kr
	s.settings = spoolSettings{
		resolved:      r,
		maxSize:       s.MaxSpoolSize,
		deadRetention: time.Duration(s.DeadLetterRetention),
		purgeDelay:    time.Duration(s.PurgeDelay),
	}
	if s.settings.maxSize == 0 {
		s.settings.maxSize = spool.DefaultMaxDiskBytes
	}
	if s.settings.deadRetention == 0 {
		s.settings.deadRetention = spool.DefaultDeadLetterRetention
	}
	if s.settings.purgeDelay == 0 {
		s.settings.purgeDelay = spool.DefaultPurgeDelay
	}
	switch {
	case s.settings.maxSize < 0:
		return errors.New("max_spool_size must be positive")
	case s.settings.deadRetention < 0:
		return errors.New("dead_letter_retention must be positive")
	case s.settings.purgeDelay < 0:
		return errors.New("purge_delay must be positive")
	}
	s.pool = &poolRef{metricsRegistry: ctx.GetMetricsRegistry()}
	return nil
}

// Name names the spool: its directory.
func (s *Spool) Name() string { return s.key }

// Directory returns the spool's directory (absolute, clean), where the
// ledger of batches is kept beside it.
func (s *Spool) Directory() string { return s.key }

// Attach adds u to the users of the spool, opening nothing (see
// queue.Backend).
func (s *Spool) Attach(u *queue.User) error {
	if s.pool == nil {
		return errNotProvisioned
	}
	return s.pool.attach(s, u)
}

// Open opens the spool if no route has it open yet and makes u's
// delivery the one in effect (see queue.Backend).
func (s *Spool) Open(u *queue.User) (queue.Store, error) {
	if s.pool == nil {
		return nil, errNotProvisioned
	}
	return s.pool.open(s, u)
}

// Detach stops u's use of the spool; the last user closes it.
func (s *Spool) Detach(u *queue.User) error {
	if s.pool == nil {
		return nil
	}
	return s.pool.detach(s, u)
}

// poolKey names the spool in the pool: its directory.
func (s *Spool) poolKey() string { return s.key }

// options are the spool options of s's settings with a's delivery.
func (s *Spool) options(a attachment, transport http.RoundTripper) spool.Options {
	r := s.settings
	return spool.Options{
		Deliver:         a.u.Deliver(transport),
		Retention:       r.retention,
		MaxAttempts:     r.maxAttempts,
		BackoffMin:      r.backoffMin,
		BackoffMax:      r.backoffMax,
		DeliveryTimeout: r.deliveryTimeout,
		Concurrency:     r.concurrency,
		MaxDiskBytes:    r.maxSize,
		Logger:          s.logger.With(zap.String("spool", s.key)),
		Observer:        observer{registerMetrics(nil)},
		Keyring:         s.keyring,

		DeadLetterRetention: r.deadRetention,
		PurgeDelay:          r.purgeDelay,
	}
}

// open opens the spool.
func (s *Spool) open(a attachment, transport http.RoundTripper) (store, error) {
	st, err := spool.Open(s.key, s.options(a, transport))
	if err != nil {
		return nil, err
	}
	s.logger.Info("spool open", zap.String("spool", s.key), zap.Int("concurrency", s.settings.concurrency),
		zap.Int("max_attempts", s.settings.maxAttempts), zap.Strings("encryption_key_ids", s.keyring.KeyIDs()))
	return st, nil
}

// reconfigure applies s's settings and a's delivery to the open spool.
func (s *Spool) reconfigure(st store, a attachment, transport http.RoundTripper) error {
	fs, ok := st.(*spool.FileSpool)
	if !ok {
		return fmt.Errorf("queue %s is not a spool", s.key)
	}
	return fs.Reconfigure(s.options(a, transport))
}

// differs returns the first setting o configures differently from s.
func (s *Spool) differs(o backend) string {
	os, ok := o.(*Spool)
	switch {
	case !ok:
		return "backend"
	case os.settings != s.settings:
		return "setting (max_attempts, retry_backoff, delivery_timeout, concurrency, retention, encryption_key, max_spool_size, dead_letter_retention or purge_delay)"
	}
	return ""
}

// maxBytes is the spool's max_spool_size.
func (s *Spool) maxBytes() int64 { return s.settings.maxSize }

// IsOpen reports whether the queue is open already (see queue.Backend).
func (s *Spool) IsOpen() bool {
	_, ok := pool.References(s.poolKey())
	return ok
}

// Differs returns the first setting o configures differently if it
// names the same queue, "" otherwise (see queue.Backend).
func (s *Spool) Differs(o queue.Backend) string {
	ob, ok := o.(backend)
	if !ok || ob.poolKey() != s.poolKey() {
		return ""
	}
	return s.differs(ob)
}

// log is the module's logger.
func (s *Spool) log() *zap.Logger { return s.logger }

// encrypted reports whether the queue encrypts what it stores.
func (s *Spool) encrypted() bool { return s.keyring != nil }

// UnmarshalCaddyfile sets up the spool from the tokens of `queue spool`
// (d is on `spool`). Syntax:
//
//	queue spool <directory> {
//		max_attempts          <n>
//		retry_backoff         <first delay> <maximum delay>
//		delivery_timeout      <duration>
//		concurrency           <n>
//		retention             <duration>
//		encryption_key        <key>          # repeatable: the first encrypts
//		max_spool_size        <size>
//		dead_letter_retention <duration>
//		purge_delay           <duration>
//	}
func (s *Spool) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the backend's name
	var err error
	if s.Dir, err = cfparse.Arg(d); err != nil {
		return err
	}
	seen := cfparse.Seen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := s.UnmarshalDirective(d, seen); err != nil {
			return err
		}
	}
	return nil
}

// spoolSubdirectives are the subdirectives of a spool's block, for the
// suggestion of a misspelt one (a test checks them against the parser's
// switch).
var spoolSubdirectives = append(deliveryNames(), "max_spool_size", "dead_letter_retention", "purge_delay")

// UnmarshalDirective parses one subdirective of the spool's block, d on
// it; seen refuses a repeat.
func (s *Spool) UnmarshalDirective(d *caddyfile.Dispenser, seen cfparse.Seen) error {
	name := d.Val()
	if DeliveryDirectives[name] {
		return s.Delivery.unmarshalDirective(d, seen)
	}
	if err := seen.Once(d); err != nil {
		return err
	}
	switch name {
	case "max_spool_size":
		return cfparse.Size(d, &s.MaxSpoolSize, 0, "4GiB")
	case "dead_letter_retention":
		return cfparse.Duration(d, &s.DeadLetterRetention)
	case "purge_delay":
		return cfparse.Duration(d, &s.PurgeDelay)
	}
	return cfparse.Unrecognized(d, spoolSubdirectives)
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

// Interface guards
var (
	_ caddy.Provisioner     = (*Spool)(nil)
	_ caddyfile.Unmarshaler = (*Spool)(nil)
	_ queue.Backend         = (*Spool)(nil)
)
