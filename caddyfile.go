package caddyatlas

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/caddy-atlas/caddy-atlas/callback"
	"github.com/caddy-atlas/caddy-atlas/internal/cfparse"
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
	seen := cfparse.Seen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if sub != "mask" {
			if err := seen.Once(d); err != nil {
				return err
			}
		}
		var err error
		switch sub {
		case "endpoint":
			err = cfparse.String(d, &h.Endpoint)
		case "client_id":
			err = cfparse.String(d, &h.ClientID)
		case "client_secret":
			err = cfparse.String(d, &h.ClientSecret)
		case "extracts_path":
			err = cfparse.String(d, &h.ExtractsPath)
		case "upload_path":
			err = cfparse.String(d, &h.UploadPath)
		case "token_header":
			err = cfparse.String(d, &h.TokenHeader)
		case "token_storage":
			err = unmarshalTokenStorage(d, &h.TokenStorage)
		case "timeout":
			err = cfparse.Duration(d, &h.Timeout)
		case "max_upload_body":
			err = cfparse.Size(d, &h.MaxUploadBody, 1<<40, "1MiB")
		case "mask":
			h.Mask, err = unmarshalMaskRule(d, h.Mask)
		case "callback":
			h.Callback = new(callback.Callback)
			err = h.Callback.UnmarshalCaddyfile(d)
		default:
			return d.Errf("unrecognized subdirective %q", sub)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// unmarshalTokenStorage parses `token_storage off`, the one value that
// differs from the default.
func unmarshalTokenStorage(d *caddyfile.Dispenser, dst *string) error {
	val, err := cfparse.Arg(d)
	if err != nil {
		return err
	}
	if val != tokenStorageOff {
		return d.Errf("token_storage must be %q (the default shares the token through Caddy's storage), got %q", tokenStorageOff, val)
	}
	*dst = val
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
