package simulator

import (
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/internal/cfparse"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("atlas_simulator", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("atlas_simulator", httpcaddyfile.Before, "reverse_proxy")
}

// parseCaddyfile sets up the handler from Caddyfile tokens.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	if err := handler.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return handler, nil
}

// subdirectives are the simulator block's subdirectives (a test checks
// them against the parser's switch).
var subdirectives = []string{"client_id", "client_secret", "token_lifetime", "upload_response", "document_type_form", "one_live_token", "narrate", "processing_delay", "pending_documents"}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	atlas_simulator {
//	    client_id          <id>
//	    client_secret      <secret>
//	    token_lifetime     <duration>
//	    upload_response    array|object
//	    document_type_form string|object
//	    one_live_token
//	    narrate
//	    processing_delay   <duration> [<max duration>]
//	    pending_documents  listed|empty|omitted
//	}
//
// The block is optional; without client_id and client_secret the
// simulator accepts demo-client / demo-secret. one_live_token makes each
// issued token revoke the client's previous ones. narrate prints what
// the simulator does, one plain line each, on standard output.
// processing_delay keeps each uploaded document processing that long (a
// value in the range, per document, when a maximum is given), during
// which extracts shows it as pending_documents says. Use {env.X} or
// {file.path} for credentials you do not want in the adapted JSON.
// FOR TESTS AND DEMOS ONLY: never serve it to real traffic.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}

	seen := cfparse.Seen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if !slices.Contains(subdirectives, sub) {
			return cfparse.Unrecognized(d, subdirectives)
		}
		if err := seen.Once(d); err != nil {
			return err
		}

		switch sub {
		case "one_live_token", "narrate": // flags: no argument
			if d.NextArg() {
				return d.ArgErr()
			}
			if sub == "narrate" {
				h.Narrate = true
			} else {
				h.OneLiveToken = true
			}
			continue
		case "processing_delay": // one or two durations
			if err := parseProcessingDelay(d, h); err != nil {
				return err
			}
			continue
		}
		var arg string
		if !d.Args(&arg) {
			return d.ArgErr()
		}
		if d.NextArg() {
			return d.ArgErr()
		}

		switch sub {
		case "client_id":
			h.ClientID = arg
		case "client_secret":
			h.ClientSecret = arg
		case "token_lifetime":
			dur, err := caddy.ParseDuration(arg)
			if err != nil {
				return d.Errf("parsing token_lifetime: %v", err)
			}
			if dur <= 0 {
				return d.Errf("token_lifetime must be positive, got %s", arg)
			}
			h.TokenLifetime = caddy.Duration(dur)
		case "upload_response":
			if arg != atlastest.UploadResponseArray && arg != atlastest.UploadResponseObject {
				return d.Errf("upload_response must be %q or %q, got %q", atlastest.UploadResponseArray, atlastest.UploadResponseObject, arg)
			}
			h.UploadResponse = arg
		case "document_type_form":
			if arg != atlastest.DocumentTypeString && arg != atlastest.DocumentTypeObject {
				return d.Errf("document_type_form must be %q or %q, got %q", atlastest.DocumentTypeString, atlastest.DocumentTypeObject, arg)
			}
			h.DocumentTypeForm = arg
		case "pending_documents":
			switch arg {
			case atlastest.PendingListed, atlastest.PendingEmpty, atlastest.PendingOmitted:
			default:
				return d.Errf("pending_documents must be %q, %q or %q, got %q", atlastest.PendingListed, atlastest.PendingEmpty, atlastest.PendingOmitted, arg)
			}
			h.PendingDocuments = arg
		}
	}
	return nil
}

// parseProcessingDelay parses the arguments of processing_delay: a
// duration and an optional maximum not below it.
func parseProcessingDelay(d *caddyfile.Dispenser, h *Handler) error {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return d.ArgErr()
	}
	var durs []caddy.Duration
	for _, a := range args {
		dur, err := caddy.ParseDuration(a)
		if err != nil {
			return d.Errf("parsing processing_delay: %v", err)
		}
		if dur < 0 {
			return d.Errf("processing_delay must not be negative, got %s", a)
		}
		durs = append(durs, caddy.Duration(dur))
	}
	h.ProcessingDelay = durs[0]
	if len(durs) == 2 {
		if durs[1] < durs[0] {
			return d.Errf("processing_delay's maximum %s is below its minimum %s", args[1], args[0])
		}
		h.ProcessingDelayMax = durs[1]
	}
	return nil
}
