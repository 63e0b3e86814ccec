package callback

import (
	"math"
	"strconv"
	"time"

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
//		# durable mode
//		spool            <directory>
//		deliver_to       <url>
//		max_attempts     <n>
//		retry_backoff    <first delay> <maximum delay>
//		delivery_timeout <duration>
//		concurrency      <n>
//		retention        <duration>
//		max_spool_size   <size>
//		encryption_key   <key>
//		dead_letter_retention <duration>
//		purge_delay      <duration>
//		# or, instead of spool, the queue of a fleet on NATS JetStream
//		queue jetstream {
//			url         <nats://host:port>...
//			stream      <name>
//			replicas    <n>
//			ack_wait    <duration>
//			credentials <creds file or its content>
//			credentials {
//				creds    <creds file or its content>
//				nkey     <nkey seed file>
//				user     <user>
//				password <password>
//			}
//			tls {
//				ca          <PEM file>
//				cert        <PEM file>
//				key         <PEM file>
//				server_name <name>
//			}
//		}
//	}
//
// Give the secrets as {env.NAME} or {file.path} placeholders: they are
// resolved at provision time and stay out of the adapted JSON. Each
// subdirective is allowed once, except verify_key, client_secret (the
// second and later go to client_secrets), previous_signing_key,
// sign_deliveries and encryption_key, which repeat (the first
// encryption_key encrypts, all decrypt).
// `spool` enables durable mode and needs `deliver_to`; the other durable
// settings have defaults (see Callback).
func (c *Callback) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	var err error
	if c.Path, err = cfparse.Arg(d); err != nil {
		return err
	}
	seen := cfparse.Seen{}
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
		case "spool":
			err = cfparse.String(d, &c.Spool)
		case "deliver_to":
			err = cfparse.String(d, &c.DeliverTo)
		case "max_attempts":
			err = cfparse.Count(d, &c.MaxAttempts, 1, math.MaxInt)
		case "retry_backoff":
			err = unmarshalRetryBackoff(d, c)
		case "delivery_timeout":
			err = cfparse.Duration(d, &c.DeliveryTimeout)
		case "concurrency":
			err = cfparse.Count(d, &c.Concurrency, 1, math.MaxInt)
		case "retention":
			err = cfparse.Duration(d, &c.Retention)
		case "max_spool_size":
			err = cfparse.Size(d, &c.MaxSpoolSize, 0, "4GiB")
		case "encryption_key":
			err = cfparse.Append(d, &c.EncryptionKeys)
		case "dead_letter_retention":
			err = cfparse.Duration(d, &c.DeadLetterRetention)
		case "purge_delay":
			err = cfparse.Duration(d, &c.PurgeDelay)
		case "queue":
			err = unmarshalQueue(d, c)
		default:
			return d.Errf("unrecognized subdirective %q", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
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

// unmarshalRetryBackoff parses `retry_backoff <first delay> <maximum
// delay>`; d is on the subdirective.
func unmarshalRetryBackoff(d *caddyfile.Dispenser, c *Callback) error {
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
	c.RetryBackoffMin, c.RetryBackoffMax = durs[0], durs[1]
	return nil
}

// unmarshalQueue parses `queue jetstream { ... }`; d is on the
// subdirective.
func unmarshalQueue(d *caddyfile.Dispenser, c *Callback) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	if d.Val() != "jetstream" {
		return d.Errf("queue: unknown backend %q (want jetstream; a local spool is `spool <directory>`)", d.Val())
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	js := &JetStream{}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("queue jetstream: %s specified more than once", name)
		}
		seen[name] = true
		switch name {
		case "url":
			js.URLs = d.RemainingArgs()
			if len(js.URLs) == 0 {
				return d.ArgErr()
			}
		case "stream":
			if !d.AllArgs(&js.Stream) {
				return d.ArgErr()
			}
		case "replicas":
			var val string
			if !d.AllArgs(&val) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > 5 {
				return d.Errf("queue jetstream: replicas must be 1 to 5, got %s", val)
			}
			js.Replicas = n
		case "ack_wait":
			var val string
			if !d.AllArgs(&val) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(val)
			if err != nil || dur < 100*time.Millisecond {
				return d.Errf("queue jetstream: ack_wait must be a duration of at least 100ms, got %s", val)
			}
			js.AckWait = caddy.Duration(dur)
		case "credentials":
			cr := &JetStreamCredentials{}
			if args := d.RemainingArgs(); len(args) == 1 {
				cr.Creds = args[0]
			} else if len(args) > 1 {
				return d.ArgErr()
			}
			for n := d.Nesting(); d.NextBlock(n); {
				var dst *string
				switch d.Val() {
				case "creds":
					dst = &cr.Creds
				case "nkey":
					dst = &cr.NKey
				case "user":
					dst = &cr.User
				case "password":
					dst = &cr.Password
				default:
					return d.Errf("queue jetstream credentials: unrecognized subdirective %q", d.Val())
				}
				if !d.AllArgs(dst) {
					return d.ArgErr()
				}
			}
			kinds := 0
			for _, v := range []string{cr.Creds, cr.NKey, cr.User + cr.Password} {
				if v != "" {
					kinds++
				}
			}
			if kinds != 1 {
				return d.Err("queue jetstream credentials: give one of creds, nkey, or user and password")
			}
			js.Credentials = cr
		case "tls":
			t := &JetStreamTLS{}
			if d.NextArg() {
				return d.ArgErr()
			}
			for n := d.Nesting(); d.NextBlock(n); {
				var dst *string
				switch d.Val() {
				case "ca":
					dst = &t.CA
				case "cert":
					dst = &t.Cert
				case "key":
					dst = &t.Key
				case "server_name":
					dst = &t.ServerName
				default:
					return d.Errf("queue jetstream tls: unrecognized subdirective %q", d.Val())
				}
				if !d.AllArgs(dst) {
					return d.ArgErr()
				}
			}
			js.TLS = t
		default:
			return d.Errf("queue jetstream: unrecognized subdirective %q", name)
		}
	}
	if len(js.URLs) == 0 {
		return d.Err("queue jetstream: url is required")
	}
	c.Queue = &Queue{JetStream: js}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Callback)(nil)
