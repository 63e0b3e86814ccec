package spool

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/seal"
)

// Defaults of Options.
const (
	DefaultRetention       = 7 * 24 * time.Hour
	DefaultMaxAttempts     = 20
	DefaultBackoffMin      = time.Second
	DefaultBackoffMax      = 10 * time.Minute
	DefaultDeliveryTimeout = 30 * time.Second
	DefaultConcurrency     = 4
	DefaultMaxDiskBytes    = 4 << 30
	DefaultSegmentSize     = 64 << 20

	DefaultDeadLetterRetention = 30 * 24 * time.Hour
	DefaultPurgeDelay          = 10 * time.Minute
)

// Options configure a FileSpool. The zero value of a field selects its
// default; negative values are an error.
type Options struct {
	// Deliver delivers one callback. Nil: callbacks are stored but not
	// delivered until Reconfigure sets a Deliver.
	Deliver DeliverFunc

	// Retention is how long a delivered callback's id is remembered to
	// deduplicate. Default: 7 days.
	Retention time.Duration

	// MaxAttempts is the number of failed attempts after which a callback
	// becomes dead. Default: 20.
	MaxAttempts int

	// DeadLetterRetention is how long a dead callback is kept, body
	// included, after its last attempt: then it is purged (forgotten,
	// its body gone from disk within PurgeDelay) and reported to a
	// RetentionObserver. A retry starts the count again. Default: 30
	// days.
	DeadLetterRetention time.Duration

	// PurgeDelay bounds how long the body of a callback stays on disk
	// once it is no longer needed (delivered, deleted, or a purged dead
	// letter): a compaction starts at the latest PurgeDelay later, and
	// removes the segment files that held it. Default: 10 minutes.
	PurgeDelay time.Duration

	// BackoffMin and BackoffMax bound the delay after a failed attempt:
	// BackoffMin after the first failure, doubling after each further one
	// up to BackoffMax, minus up to 20% of jitter. Defaults: 1s and 10m.
	BackoffMin time.Duration
	BackoffMax time.Duration

	// DeliveryTimeout bounds each attempt. Default: 30s.
	DeliveryTimeout time.Duration

	// Concurrency is the number of parallel deliveries. Default: 4.
	Concurrency int

	// MaxDiskBytes bounds the size of the log: Append returns ErrFull
	// rather than exceed it. Compaction may use up to the size of the
	// live callbacks more while it runs. Default: 4 GiB.
	MaxDiskBytes int64

	// SegmentSize is the size at which the log moves to a new segment
	// file. Default: 64 MiB.
	SegmentSize int64

	// Logger receives warnings (torn records, dead letters, write
	// failures) and debug lines. Default: no logging.
	Logger *zap.Logger

	// Observer receives metrics events. Default: none.
	Observer Observer

	// Keyring, if set, encrypts callbacks at rest: Append seals each
	// callback's headers and body under its first key (AES-256-GCM, see
	// package seal); any of its keys opens them. Compaction rewrites what
	// it keeps under the first key, so plaintext spools and records under
	// an older key are migrated; KeyStats shows what each key still
	// protects. Default: none, callbacks are stored in the clear (records
	// sealed earlier then fail to deliver until a keyring with their key
	// is configured again).
	Keyring *seal.Keyring

	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// DeliverFunc delivers one callback and returns nil once the receiver has
// taken it. Any error schedules a retry. It must return when ctx is done.
type DeliverFunc func(ctx context.Context, d Delivery) error

// Delivery is one delivery attempt of a callback.
type Delivery struct {
	// ID is the callback id.
	ID string
	// Header holds the stored headers; the DeliverFunc may modify it.
	Header http.Header
	// Body is the callback body as stored.
	Body []byte
	// Received is when the callback arrived.
	Received time.Time
	// Attempt is the attempt number, from 1.
	Attempt int
}

// Outcome is the result of a delivery attempt, for metrics.
type Outcome string

// Outcomes of a delivery attempt.
const (
	// OutcomeDelivered: the receiver took the callback.
	OutcomeDelivered Outcome = "delivered"
	// OutcomeFailed: an error or a non-2xx answer; a retry is scheduled
	// unless the callback is out of attempts.
	OutcomeFailed Outcome = "failed"
	// OutcomeTimeout: the attempt exceeded DeliveryTimeout; counted as a
	// failure.
	OutcomeTimeout Outcome = "timeout"
	// OutcomeCanceled: the attempt was cancelled by Close; it does not
	// count as an attempt.
	OutcomeCanceled Outcome = "canceled"
)

// Observer receives metrics events. Its methods are called synchronously
// from the spool's goroutines and must be fast. Embed NopObserver to
// implement only some of them.
type Observer interface {
	// FsyncDone reports an fsync of the log: its latency and the number
	// of appends it made durable (the group-commit batch size; 0 for a
	// sync of state changes only).
	FsyncDone(d time.Duration, appends int)
	// DeliveryAttempt reports the outcome and duration of an attempt.
	DeliveryAttempt(outcome Outcome, d time.Duration)
	// DeadLettered reports that a callback ran out of attempts.
	DeadLettered()
}

// RetentionObserver is an Observer that is also told of the dead letters
// purged at the end of Options.DeadLetterRetention. The spool checks
// whether its Observer implements it.
type RetentionObserver interface {
	// DeadLetterExpired reports that a dead callback was purged.
	DeadLetterExpired()
}

// NopObserver is an Observer that does nothing.
type NopObserver struct{}

// FsyncDone does nothing.
func (NopObserver) FsyncDone(time.Duration, int) {}

// DeliveryAttempt does nothing.
func (NopObserver) DeliveryAttempt(Outcome, time.Duration) {}

// DeadLettered does nothing.
func (NopObserver) DeadLettered() {}

// DeadLetterExpired does nothing.
func (NopObserver) DeadLetterExpired() {}

// config is a resolved Options; a FileSpool swaps it atomically.
type config struct {
	deliver         DeliverFunc
	retention       time.Duration
	deadRetention   time.Duration
	purgeDelay      time.Duration
	maxAttempts     int
	backoffMin      time.Duration
	backoffMax      time.Duration
	deliveryTimeout time.Duration
	concurrency     int
	maxDiskBytes    int64
	segmentSize     int64
	logger          *zap.Logger
	obs             Observer
	now             func() time.Time
	keyring         *seal.Keyring
}

// resolve checks opts and applies the defaults.
func resolve(opts Options) (*config, error) {
	if opts.Retention < 0 || opts.BackoffMin < 0 || opts.BackoffMax < 0 || opts.DeliveryTimeout < 0 ||
		opts.DeadLetterRetention < 0 || opts.PurgeDelay < 0 {
		return nil, errors.New("spool: negative duration in options")
	}
	if opts.MaxAttempts < 0 || opts.Concurrency < 0 || opts.MaxDiskBytes < 0 || opts.SegmentSize < 0 {
		return nil, errors.New("spool: negative number in options")
	}
	c := &config{
		deliver:         opts.Deliver,
		retention:       orDefault(opts.Retention, DefaultRetention),
		deadRetention:   orDefault(opts.DeadLetterRetention, DefaultDeadLetterRetention),
		purgeDelay:      orDefault(opts.PurgeDelay, DefaultPurgeDelay),
		maxAttempts:     orDefault(opts.MaxAttempts, DefaultMaxAttempts),
		backoffMin:      orDefault(opts.BackoffMin, DefaultBackoffMin),
		backoffMax:      orDefault(opts.BackoffMax, DefaultBackoffMax),
		deliveryTimeout: orDefault(opts.DeliveryTimeout, DefaultDeliveryTimeout),
		concurrency:     orDefault(opts.Concurrency, DefaultConcurrency),
		maxDiskBytes:    orDefault(opts.MaxDiskBytes, DefaultMaxDiskBytes),
		segmentSize:     orDefault(opts.SegmentSize, DefaultSegmentSize),
		logger:          opts.Logger,
		obs:             opts.Observer,
		now:             opts.Now,
		keyring:         opts.Keyring,
	}
	if c.backoffMin > c.backoffMax {
		return nil, errors.New("spool: backoff min exceeds backoff max")
	}
	if c.logger == nil {
		c.logger = zap.NewNop()
	}
	if c.obs == nil {
		c.obs = NopObserver{}
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}
