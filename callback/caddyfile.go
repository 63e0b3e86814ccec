package callback

import (
	"encoding/json"
	"maps"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-atlas/caddy-atlas/internal/cfparse"
)

// UnmarshalCaddyfile sets up the callback route from the `callback`
// subdirective of the atlas block; d is on the `callback` token. Syntax:
//
//	callback <path> {
//		auth_path     <path>
//		client_id     <id>
//		client_secret <secret>                  # twice during a rotation: both accepted
//		signing_key   <hmac secret or PEM private key>
//		previous_signing_key <key>             # verifies, never signs; repeatable
//		sign_deliveries <whsec_ secret>        # Standard Webhooks; repeatable
//		issuer        <iss>
//		audience      <aud>
//		token_ttl     <duration>
//		leeway        <duration>
//		verify_key    <PEM public key>
//		jwks_url      <url>
//		max_body      <size>
//
//		# durable mode: stored, then delivered to deliver_to
//		deliver_to <url>
//		queue spool <directory> {        # a log on local disk
//			...                          # see the atlas.queues.spool module
//		}
//		queue jetstream {                # a fleet's queue on NATS JetStream
//			...                          # see the atlas.queues.jetstream module
//		}
//		spool <directory>                # short for queue spool <directory>
//		# the queue's settings, also accepted here beside spool or queue:
//		max_attempts, retry_backoff, delivery_timeout, concurrency,
//		retention, encryption_key, max_spool_size, dead_letter_retention,
//		purge_delay
//	}
//
// Give the secrets as {env.NAME} or {file.path} placeholders: they are
// resolved at provision time and stay out of the adapted JSON. Each
// subdirective is allowed once, except verify_key, client_secret (the
// second and later go to client_secrets), previous_signing_key,
// sign_deliveries and encryption_key, which repeat (the first
// encryption_key encrypts, all decrypt).
// deliver_to enables durable mode, with the block's queue or else the
// queue of the global atlas options; a queue in the block needs
// deliver_to.
func (c *Callback) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	var err error
	if c.Path, err = cfparse.Arg(d); err != nil {
		return err
	}
	seen := cfparse.Seen{}
	var q queueBlock
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if !repeatable[name] {
			if err := seen.Once(d); err != nil {
				return err
			}
		}
		switch name {
		case "auth_path":
			err = cfparse.String(d, &c.AuthPath)
		case "client_id":
			err = cfparse.String(d, &c.ClientID)
		case "client_secret":
			// The first is the secret, the others are accepted too
			// during a rotation.
			if c.ClientSecret == "" {
				err = cfparse.String(d, &c.ClientSecret)
			} else {
				err = cfparse.Append(d, &c.ClientSecrets)
			}
		case "signing_key":
			err = cfparse.String(d, &c.SigningKey)
		case "previous_signing_key":
			err = appendArg(d, &c.PreviousSigningKeys)
		case "sign_deliveries":
			err = appendArg(d, &c.SignDeliveries)
		case "issuer":
			err = cfparse.String(d, &c.Issuer)
		case "audience":
			err = cfparse.String(d, &c.Audience)
		case "token_ttl":
			err = cfparse.Duration(d, &c.TokenTTL)
		case "leeway":
			err = unmarshalLeeway(d, c)
		case "verify_key":
			err = appendArg(d, &c.VerifyKeys)
		case "jwks_url":
			err = cfparse.String(d, &c.JWKSURL)
		case "max_body":
			err = cfparse.Size(d, &c.MaxBody, 0, "32MiB")
		case "deliver_to":
			err = cfparse.String(d, &c.DeliverTo)
		case "spool":
			// short for queue spool <directory>
			err = q.module(d, "spool")
		case "queue":
			if !d.NextArg() {
				return d.ArgErr()
			}
			err = q.module(d, d.Val())
		case "max_attempts", "retry_backoff", "delivery_timeout", "concurrency", "retention", "encryption_key",
			"max_spool_size", "dead_letter_retention", "purge_delay":
			// a setting of the queue, written beside it
			err = q.setting(d)
		default:
			return cfparse.Unrecognized(d, subdirectives)
		}
		if err != nil {
			return err
		}
	}
	if q.mod == nil {
		// Settings of a queue the block does not name: the JSON's
		// spellings of the former shape keep them, and Provision says
		// what becomes of them.
		return q.settingsInto(c)
	}
	c.Queue, err = q.finish()
	return err
}

// unmarshalLeeway parses `leeway <duration>`, positive: the JSON's 0
// is the default.
func unmarshalLeeway(d *caddyfile.Dispenser, c *Callback) error {
	val, err := cfparse.Arg(d)
	if err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(val)
	if err != nil {
		return d.Errf("leeway: %v", err)
	}
	if dur <= 0 {
		return d.Errf("leeway must be positive, got %s (0 selects the default, 60s)", val)
	}
	c.Leeway = caddy.Duration(dur)
	return nil
}

// subdirectives are the callback block's subdirectives, for the
// suggestion of a misspelt one (a test checks them against the parser's
// switch).
var subdirectives = []string{
	"auth_path", "client_id", "client_secret", "signing_key", "previous_signing_key", "sign_deliveries",
	"issuer", "audience", "token_ttl", "leeway", "verify_key", "jwks_url", "max_body", "deliver_to",
	"spool", "queue", "max_attempts", "retry_backoff", "delivery_timeout", "concurrency", "retention",
	"encryption_key", "max_spool_size", "dead_letter_retention", "purge_delay",
}

// repeatable are the callback block's subdirectives that may be given
// more than once.
var repeatable = map[string]bool{
	"client_secret":        true,
	"previous_signing_key": true,
	"sign_deliveries":      true,
	"verify_key":           true,
	"encryption_key":       true,
}

// appendArg appends the one argument of the subdirective d is on to
// *dst; an empty one is refused at provision time, which names it.
func appendArg(d *caddyfile.Dispenser, dst *[]string) error {
	val, err := cfparse.Arg(d)
	if err != nil {
		return err
	}
	*dst = append(*dst, val)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Callback)(nil)

// queueBlock collects what a callback block says of its queue: the
// queue (`queue <backend> ...`, or `spool <directory>` for short) and the
// queue's settings written beside it, before or after it.
type queueBlock struct {
	backend  string
	mod      caddyfile.Unmarshaler
	settings []caddyfile.Segment
}

// directiveUnmarshaler is a queue module that parses its block's
// subdirectives one by one.
type directiveUnmarshaler interface {
	UnmarshalDirective(d *caddyfile.Dispenser, seen cfparse.Seen) error
}

// module parses the queue of the given backend; d is on the backend's
// name.
func (q *queueBlock) module(d *caddyfile.Dispenser, backend string) error {
	if q.mod != nil {
		return d.Err("spool and queue are exclusive: durable mode uses either a local spool or a shared queue, once")
	}
	id := "atlas.queues." + backend
	if _, err := caddy.GetModule(id); err != nil {
		return d.Errf("queue: unknown backend %q (want spool or jetstream)", backend)
	}
	mod, err := caddyfile.UnmarshalModule(d, id)
	if err != nil {
		return err
	}
	q.backend, q.mod = backend, mod
	return nil
}

// setting keeps the queue's setting d is on, written beside the queue,
// checked at once as a spool's (the queue, which may come later, checks
// it again).
func (q *queueBlock) setting(d *caddyfile.Dispenser) error {
	seg := d.NextSegment()
	info, err := caddy.GetModule("atlas.queues.spool")
	if err != nil {
		return err
	}
	if du, ok := info.New().(directiveUnmarshaler); ok {
		sd := caddyfile.NewDispenser(seg)
		sd.Next()
		if err := du.UnmarshalDirective(sd, cfparse.Seen{}); err != nil {
			return err
		}
	}
	q.settings = append(q.settings, seg)
	return nil
}

// finish returns the queue's JSON, the settings written beside it
// included; nil if the block names no queue.
func (q *queueBlock) finish() (json.RawMessage, error) {
	var merged map[string]any
	if err := remarshal(q.mod, &merged); err != nil {
		return nil, err
	}
	fromBlock := maps.Clone(merged)
	info, err := caddy.GetModule("atlas.queues." + q.backend)
	if err != nil {
		return nil, err
	}
	for _, seg := range q.settings {
		d := caddyfile.NewDispenser(seg)
		d.Next()
		name := d.Val()
		if name == "max_spool_size" && q.backend != "spool" {
			// Beside a queue jetstream it never applied (the streams'
			// limits do); it is refused only in the queue's own block.
			continue
		}
		mod := info.New()
		du, ok := mod.(directiveUnmarshaler)
		if !ok {
			return nil, d.Errf("queue %s takes no setting beside it", q.backend)
		}
		if err := du.UnmarshalDirective(d, cfparse.Seen{}); err != nil {
			return nil, err
		}
		var set map[string]any
		if err := remarshal(mod, &set); err != nil {
			return nil, err
		}
		for k, v := range set {
			if _, dup := fromBlock[k]; dup {
				return nil, d.Errf("subdirective %q given more than once: in the queue's block and beside it", name)
			}
			if keys, ok := v.([]any); ok {
				prev, _ := merged[k].([]any)
				v = append(prev, keys...)
			}
			merged[k] = v
		}
	}
	merged["backend"] = q.backend
	return json.Marshal(merged)
}

// settingsInto sets the queue's settings written in a block that names
// no queue on c's fields of the same JSON names (Callback.MaxAttempts...).
func (q *queueBlock) settingsInto(c *Callback) error {
	info, err := caddy.GetModule("atlas.queues.spool")
	if err != nil {
		return err
	}
	for _, seg := range q.settings {
		d := caddyfile.NewDispenser(seg)
		d.Next()
		mod := info.New()
		du, ok := mod.(directiveUnmarshaler)
		if !ok {
			return d.Errf("the spool module takes no setting")
		}
		if err := du.UnmarshalDirective(d, cfparse.Seen{}); err != nil {
			return err
		}
		keys := c.EncryptionKeys
		if err := remarshal(mod, c); err != nil {
			return err
		}
		if len(keys) > 0 {
			c.EncryptionKeys = append(keys, c.EncryptionKeys...)
		}
	}
	return nil
}

// remarshal copies v into dst through its JSON.
func remarshal(v any, dst any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, dst)
}
