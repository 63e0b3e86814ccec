package queues

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-atlas/caddy-atlas/internal/cfparse"
	"github.com/caddy-atlas/caddy-atlas/internal/placeholder"
	"github.com/caddy-atlas/caddy-atlas/jsqueue"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
	"github.com/caddy-atlas/caddy-atlas/spool"
)

// Delivery are the settings every backend shares: how the queue delivers
// its callbacks, how long it remembers them, and the keys that encrypt
// them at rest.
type Delivery struct {
	// The number of failed delivery attempts after which a callback
	// becomes a dead letter, kept until retried or deleted through the
	// admin API. Default: 20.
	MaxAttempts int `json:"max_attempts,omitempty"`

	// The delay after the first failed attempt, doubled after each
	// further one (less up to 20% of jitter). Default: 1s.
	RetryBackoffMin caddy.Duration `json:"retry_backoff_min,omitempty"`

	// The longest delay between attempts. Default: 10m.
	RetryBackoffMax caddy.Duration `json:"retry_backoff_max,omitempty"`

	// The time allowed for one delivery attempt. Default: 30s.
	DeliveryTimeout caddy.Duration `json:"delivery_timeout,omitempty"`

	// The number of deliveries in parallel. Default: 4.
	Concurrency int `json:"concurrency,omitempty"`

	// How long the id of a delivered callback is remembered to
	// deduplicate. Default: 7 days.
	Retention caddy.Duration `json:"retention,omitempty"`

	// Keys that encrypt the stored callbacks at rest (AES-256-GCM):
	// each 32 random bytes in base64 or hex, given as {file.path} or
	// {env.NAME} placeholders, resolved at provision time. The first
	// encrypts, all decrypt: to rotate, put a new key first and keep the
	// old one until the admin API shows no callback under its key id.
	// Without a key, the payloads are stored unencrypted, and a warning
	// says so at provision time.
	EncryptionKeys []string `json:"encryption_keys,omitempty"`
}

// DeliveryDirectives are the Caddyfile subdirectives of the Delivery
// settings, in every queue block; in a callback block they are accepted
// too, as the spellings of the settings of the queue it names.
var DeliveryDirectives = map[string]bool{
	"max_attempts":     true,
	"retry_backoff":    true,
	"delivery_timeout": true,
	"concurrency":      true,
	"retention":        true,
	"encryption_key":   true,
}

// deliveryNames are the DeliveryDirectives, sorted.
func deliveryNames() []string { return slices.Sorted(maps.Keys(DeliveryDirectives)) }

// unmarshalDirective parses the Delivery subdirective d is on; seen
// refuses a repeat (encryption_key repeats).
func (s *Delivery) unmarshalDirective(d *caddyfile.Dispenser, seen cfparse.Seen) error {
	name := d.Val()
	if name != "encryption_key" {
		if err := seen.Once(d); err != nil {
			return err
		}
	}
	switch name {
	case "max_attempts":
		return cfparse.Count(d, &s.MaxAttempts, 1, math.MaxInt)
	case "retry_backoff":
		return unmarshalRetryBackoff(d, s)
	case "delivery_timeout":
		return cfparse.Duration(d, &s.DeliveryTimeout)
	case "concurrency":
		return cfparse.Count(d, &s.Concurrency, 1, math.MaxInt)
	case "retention":
		return cfparse.Duration(d, &s.Retention)
	case "encryption_key":
		return cfparse.Append(d, &s.EncryptionKeys)
	}
	return cfparse.Unrecognized(d, deliveryNames())
}

// unmarshalRetryBackoff parses `retry_backoff <first delay> <maximum
// delay>`; d is on the subdirective.
func unmarshalRetryBackoff(d *caddyfile.Dispenser, s *Delivery) error {
	args := d.RemainingArgs()
	if len(args) != 2 {
		return d.ArgErr()
	}
	var durs [2]caddy.Duration
	for i, a := range args {
		dur, err := caddy.ParseDuration(a)
		if err != nil {
			return d.Errf("retry_backoff: %v", err)
		}
		if dur <= 0 {
			return d.Errf("retry_backoff delays must be positive, got %s", a)
		}
		durs[i] = caddy.Duration(dur)
	}
	if durs[0] > durs[1] {
		return d.Errf("retry_backoff: the first delay %s exceeds the maximum %s", args[0], args[1])
	}
	s.RetryBackoffMin, s.RetryBackoffMax = durs[0], durs[1]
	return nil
}

// resolved are Delivery settings with their defaults applied and the
// encryption keys parsed, comparable with ==, but for the keyring.
type resolved struct {
	maxAttempts     int
	backoffMin      time.Duration
	backoffMax      time.Duration
	deliveryTimeout time.Duration
	concurrency     int
	retention       time.Duration
	// keyIDs are the ids of the encryption keys, comma-separated, first
	// the one that encrypts; "" for none.
	keyIDs string
}

// resolve applies the defaults, resolves and parses the encryption keys,
// and checks the settings. Errors name a key by its position, never by
// its value.
func (s *Delivery) resolve() (resolved, *seal.Keyring, error) {
	r := resolved{
		maxAttempts:     s.MaxAttempts,
		backoffMin:      time.Duration(s.RetryBackoffMin),
		backoffMax:      time.Duration(s.RetryBackoffMax),
		deliveryTimeout: time.Duration(s.DeliveryTimeout),
		concurrency:     s.Concurrency,
		retention:       time.Duration(s.Retention),
	}
	if r.maxAttempts == 0 {
		r.maxAttempts = queue.DefaultMaxAttempts
	}
	if r.backoffMin == 0 {
		r.backoffMin = queue.DefaultBackoffMin
	}
	if r.backoffMax == 0 {
		r.backoffMax = max(queue.DefaultBackoffMax, r.backoffMin)
	}
	if r.deliveryTimeout == 0 {
		r.deliveryTimeout = queue.DefaultDeliveryTimeout
	}
	if r.concurrency == 0 {
		r.concurrency = queue.DefaultConcurrency
	}
	if r.retention == 0 {
		r.retention = queue.DefaultRetention
	}
	switch {
	case r.maxAttempts < 1:
		return r, nil, fmt.Errorf("max_attempts must be at least 1, got %d", r.maxAttempts)
	case r.backoffMin <= 0 || r.backoffMax <= 0:
		return r, nil, errors.New("retry_backoff durations must be positive")
	case r.backoffMin > r.backoffMax:
		return r, nil, fmt.Errorf("retry_backoff: the first delay %s exceeds the maximum %s", r.backoffMin, r.backoffMax)
	case r.deliveryTimeout <= 0:
		return r, nil, errors.New("delivery_timeout must be positive")
	case r.concurrency < 1:
		return r, nil, fmt.Errorf("concurrency must be at least 1, got %d", r.concurrency)
	case r.retention <= 0:
		return r, nil, errors.New("retention must be positive")
	}
	kr, err := keyring(s.EncryptionKeys)
	if err != nil {
		return r, nil, err
	}
	r.keyIDs = strings.Join(kr.KeyIDs(), ",")
	return r, kr, nil
}

// keyring resolves and parses the encryption keys; nil for none.
func keyring(encryptionKeys []string) (*seal.Keyring, error) {
	if len(encryptionKeys) == 0 {
		return nil, nil
	}
	repl := caddy.NewReplacer()
	keys := make([][]byte, len(encryptionKeys))
	defer func() {
		for _, k := range keys {
			clear(k)
		}
	}()
	for i, v := range encryptionKeys {
		raw := repl.ReplaceKnown(v, "")
		if placeholder.Blank(raw) {
			return nil, placeholder.Empty(fmt.Sprintf("encryption_key %d", i+1), v)
		}
		k, err := seal.ParseKey(raw)
		if err != nil {
			return nil, fmt.Errorf("encryption_key %d: %w", i+1, err)
		}
		keys[i] = k
	}
	kr, err := seal.NewKeyring(keys...)
	if err != nil {
		return nil, fmt.Errorf("encryption_key: %w", err)
	}
	return kr, nil
}

// WithDefaults returns the JSON settings of a queue module, q as decoded
// into a map (numbers as float64), with every setting it leaves out set
// to its default: two queues written differently but alike once
// resolved compare equal.
func WithDefaults(q map[string]any) map[string]any {
	out := make(map[string]any, len(q)+12)
	for k, v := range q {
		out[k] = v
	}
	def := func(k string, v float64) {
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	def("max_attempts", queue.DefaultMaxAttempts)
	def("retry_backoff_min", float64(queue.DefaultBackoffMin))
	minBackoff, _ := out["retry_backoff_min"].(float64)
	def("retry_backoff_max", max(float64(queue.DefaultBackoffMax), minBackoff))
	def("delivery_timeout", float64(queue.DefaultDeliveryTimeout))
	def("concurrency", queue.DefaultConcurrency)
	def("retention", float64(queue.DefaultRetention))
	switch out["backend"] {
	case "spool":
		def("max_spool_size", spool.DefaultMaxDiskBytes)
		def("dead_letter_retention", float64(spool.DefaultDeadLetterRetention))
		def("purge_delay", float64(spool.DefaultPurgeDelay))
	case "jetstream":
		if s, _ := out["stream"].(string); s == "" {
			out["stream"] = jsqueue.DefaultStream
		}
		def("replicas", jsqueue.DefaultReplicas)
		def("ack_wait", float64(jsqueue.DefaultAckWait))
		def("publish_timeout", float64(jsqueue.DefaultPublishTimeout))
	}
	return out
}
