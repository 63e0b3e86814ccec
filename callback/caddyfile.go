package callback

import (
	"math"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
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
	if !d.NextArg() {
		return d.ArgErr()
	}
	c.Path = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}

	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		switch name {
		case "verify_key", "client_secret", "previous_signing_key", "sign_deliveries", "encryption_key":
			// repeatable
		default:
			if seen[name] {
				return d.Errf("%s specified more than once", name)
			}
			seen[name] = true
		}

		if name == "retry_backoff" {
			if err := unmarshalRetryBackoff(d, c); err != nil {
				return err
			}
			continue
		}
		if name == "queue" {
			if err := unmarshalQueue(d, c); err != nil {
				return err
			}
			continue
		}

		var str *string
		switch name {
		case "auth_path":
			str = &c.AuthPath
		case "client_id":
			str = &c.ClientID
		case "signing_key":
			str = &c.SigningKey
		case "issuer":
			str = &c.Issuer
		case "audience":
			str = &c.Audience
		case "jwks_url":
			str = &c.JWKSURL
		case "spool":
			str = &c.Spool
		case "deliver_to":
			str = &c.DeliverTo
		case "client_secret", "previous_signing_key", "sign_deliveries",
			"verify_key", "token_ttl", "leeway", "max_body",
			"max_attempts", "concurrency", "delivery_timeout", "retention", "max_spool_size",
			"encryption_key", "dead_letter_retention", "purge_delay":
		default:
			return d.Errf("unrecognized subdirective %q", name)
		}

		if !d.NextArg() {
			return d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}

		switch name {
		case "verify_key":
			c.VerifyKeys = append(c.VerifyKeys, val)
		case "encryption_key":
			if val == "" {
				return d.Errf("encryption_key must not be empty")
			}
			c.EncryptionKeys = append(c.EncryptionKeys, val)
		case "client_secret":
			if val == "" {
				return d.Errf("client_secret must not be empty")
			}
			if c.ClientSecret == "" {
				c.ClientSecret = val
			} else {
				c.ClientSecrets = append(c.ClientSecrets, val)
			}
		case "previous_signing_key":
			c.PreviousSigningKeys = append(c.PreviousSigningKeys, val)
		case "sign_deliveries":
			c.SignDeliveries = append(c.SignDeliveries, val)
		case "token_ttl", "leeway":
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return d.Errf("%s: %v", name, err)
			}
			if name == "token_ttl" && dur <= 0 {
				return d.Errf("token_ttl must be positive, got %s", val)
			}
			if name == "leeway" && dur <= 0 {
				return d.Errf("leeway must be positive, got %s (0 selects the default, 60s)", val)
			}
			if name == "token_ttl" {
				c.TokenTTL = caddy.Duration(dur)
			} else {
				c.Leeway = caddy.Duration(dur)
			}
		case "max_body":
			size, err := humanize.ParseBytes(val)
			if err != nil {
				return d.Errf("max_body: invalid size %q (want e.g. 32MiB)", val)
			}
			if size == 0 || size > math.MaxInt64 {
				return d.Errf("max_body must be between 1 byte and 8 EiB, got %s", val)
			}
			c.MaxBody = int64(size)
		case "max_spool_size":
			size, err := humanize.ParseBytes(val)
			if err != nil {
				return d.Errf("max_spool_size: invalid size %q (want e.g. 4GiB)", val)
			}
			if size == 0 || size > math.MaxInt64 {
				return d.Errf("max_spool_size must be between 1 byte and 8 EiB, got %s", val)
			}
			c.MaxSpoolSize = int64(size)
		case "max_attempts", "concurrency":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				return d.Errf("%s must be a whole number of at least 1, got %s", name, val)
			}
			if name == "max_attempts" {
				c.MaxAttempts = n
			} else {
				c.Concurrency = n
			}
		case "delivery_timeout", "retention", "dead_letter_retention", "purge_delay":
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return d.Errf("%s: %v", name, err)
			}
			if dur <= 0 {
				return d.Errf("%s must be positive, got %s", name, val)
			}
			switch name {
			case "delivery_timeout":
				c.DeliveryTimeout = caddy.Duration(dur)
			case "retention":
				c.Retention = caddy.Duration(dur)
			case "purge_delay":
				c.PurgeDelay = caddy.Duration(dur)
			default:
				c.DeadLetterRetention = caddy.Duration(dur)
			}
		default:
			if val == "" {
				return d.Errf("%s must not be empty", name)
			}
			*str = val
		}
	}
	return nil
}

// unmarshalRetryBackoff parses `retry_backoff <first delay> <maximum
// delay>`; d is on the subdirective.
func unmarshalRetryBackoff(d *caddyfile.Dispenser, c *Callback) error {
	args := d.RemainingArgs()
	if len(args) != 2 {
		return d.ArgErr()
	}
	var durs [2]time.Duration
	for i, a := range args {
		dur, err := caddy.ParseDuration(a)
		if err != nil {
			return d.Errf("retry_backoff: %v", err)
		}
		if dur <= 0 {
			return d.Errf("retry_backoff delays must be positive, got %s", a)
		}
		durs[i] = dur
	}
	if durs[0] > durs[1] {
		return d.Errf("retry_backoff: the first delay %s exceeds the maximum %s", args[0], args[1])
	}
	c.RetryBackoffMin, c.RetryBackoffMax = caddy.Duration(durs[0]), caddy.Duration(durs[1])
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
