package caddyatlas

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/caddy-atlas/caddy-atlas/callback"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("atlas", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("atlas", httpcaddyfile.Before, "reverse_proxy")
}

// parseCaddyfile sets up the handler from Caddyfile tokens.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	atlas {
//		endpoint         <url>
//		client_id        <id>
//		client_secret    <secret>
//		extracts_path    <path>|off
//		upload_path      <path>|off
//		token_header     <name>
//		timeout          <duration>
//		max_upload_body  <size>
//		token_storage    off
//		mask             <field> [last4|redact]   # repeatable
//		callback <path> {
//			...
//		}
//	}
//
// Give secrets as {env.NAME} or {file.path} placeholders: they are
// resolved when the config is loaded, so they stay out of the JSON config.
// The Atlas token is kept, sealed, in Caddy's storage so that instances
// sharing a storage share one token; token_storage off keeps it in memory.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if sub == "mask" {
			var err error
			if h.Mask, err = unmarshalMaskRule(d, h.Mask); err != nil {
				return err
			}
			continue
		}
		if seen[sub] {
			return d.Errf("subdirective %q given more than once", sub)
		}
		seen[sub] = true

		if sub == "callback" {
			h.Callback = new(callback.Callback)
			if err := h.Callback.UnmarshalCaddyfile(d); err != nil {
				return err
			}
			continue
		}

		var target *string
		switch sub {
		case "endpoint":
			target = &h.Endpoint
		case "client_id":
			target = &h.ClientID
		case "client_secret":
			target = &h.ClientSecret
		case "extracts_path":
			target = &h.ExtractsPath
		case "upload_path":
			target = &h.UploadPath
		case "token_header":
			target = &h.TokenHeader
		case "token_storage":
			target = &h.TokenStorage
		case "timeout", "max_upload_body":
		default:
			return d.Errf("unrecognized subdirective %q", sub)
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch sub {
		case "timeout":
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return d.Errf("bad timeout %q: %v", val, err)
			}
			if dur <= 0 {
				return d.Errf("timeout must be positive, got %q", val)
			}
			h.Timeout = caddy.Duration(dur)
		case "max_upload_body":
			size, err := humanize.ParseBytes(val)
			if err != nil {
				return d.Errf("bad max_upload_body %q: %v", val, err)
			}
			if size == 0 || size > 1<<40 {
				return d.Errf("max_upload_body must be between 1B and 1TiB, got %q", val)
			}
			h.MaxUploadBody = int64(size)
		case "token_storage":
			if val != tokenStorageOff {
				return d.Errf("token_storage must be %q (the default shares the token through Caddy's storage), got %q", tokenStorageOff, val)
			}
			*target = val
		default:
			if val == "" {
				return d.Errf("%s must not be empty", sub)
			}
			*target = val
		}
	}
	return nil
}

// formatBytes renders a byte count for error messages, e.g. "1 MiB".
func formatBytes(n int64) string {
	if n < 0 {
		return strconv.FormatInt(n, 10) + " B"
	}
	return humanize.IBytes(uint64(n))
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
