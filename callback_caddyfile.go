package caddyatlas

import (
	"math"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"

	"github.com/caddy-atlas/caddy-atlas/callback"
)

// unmarshalCallback sets up the callback route from the `callback`
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
func unmarshalCallback(d *caddyfile.Dispenser, c *callback.Callback) error {
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
			"encryption_key", "dead_letter_retention":
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
		case "delivery_timeout", "retention", "dead_letter_retention":
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
func unmarshalRetryBackoff(d *caddyfile.Dispenser, c *callback.Callback) error {
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
