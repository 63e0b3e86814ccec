package spool

import (
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

// Defaults of Options; the delivery options' defaults are those of
// every Store, queue.DefaultRetention etc.
const (
	DefaultMaxDiskBytes = 4 << 30
	DefaultSegmentSize  = 64 << 20

	DefaultDeadLetterRetention = 30 * 24 * time.Hour
	DefaultPurgeDelay          = 10 * time.Minute
)

// Options configure a FileSpool. The zero value of a field selects its
// default; negative values are an error.
type Options struct {
	// Deliver delivers one callback. Nil: callbacks are stored but not
	// delivered until Reconfigure sets a Deliver.
	Deliver queue.DeliverFunc

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

	// MaxDiskBytes bounds the size of the log: Append returns
	// queue.ErrFull rather than exceed it. Compaction may use up to the
	// size of the live callbacks more while it runs. Default: 4 GiB.
	MaxDiskBytes int64

	// SegmentSize is the size at which the log moves to a new segment
	// file. Default: 64 MiB.
	SegmentSize int64

	// Logger receives warnings (torn records, dead letters, write
	// failures) and debug lines. Default: no logging.
	Logger *zap.Logger

	// Observer receives metrics events. Default: none.
	Observer queue.Observer

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

// RetentionObserver is a queue.Observer that is also told of the dead letters
// purged at the end of Options.DeadLetterRetention. The spool checks
// whether its Observer implements it.
type RetentionObserver interface {
	// DeadLetterExpired reports that a dead callback was purged.
	DeadLetterExpired()
}

// config is a resolved Options; a FileSpool swaps it atomically.
type config struct {
	deliver         queue.DeliverFunc
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
	obs             queue.Observer
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
		retention:       orDefault(opts.Retention, queue.DefaultRetention),
		deadRetention:   orDefault(opts.DeadLetterRetention, DefaultDeadLetterRetention),
		purgeDelay:      orDefault(opts.PurgeDelay, DefaultPurgeDelay),
		maxAttempts:     orDefault(opts.MaxAttempts, queue.DefaultMaxAttempts),
		backoffMin:      orDefault(opts.BackoffMin, queue.DefaultBackoffMin),
		backoffMax:      orDefault(opts.BackoffMax, queue.DefaultBackoffMax),
		deliveryTimeout: orDefault(opts.DeliveryTimeout, queue.DefaultDeliveryTimeout),
		concurrency:     orDefault(opts.Concurrency, queue.DefaultConcurrency),
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
		c.obs = queue.NopObserver{}
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
