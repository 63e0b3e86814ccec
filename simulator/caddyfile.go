package simulator

import (
	"slices"
	"strconv"

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
var subdirectives = []string{"client_id", "client_secret", "token_lifetime", "upload_response", "document_type_form", "one_live_token", "narrate", "processing_delay", "pending_documents", "auto_callback", "rate_limit"}

// autoCallbackSubdirectives are the auto_callback block's subdirectives.
var autoCallbackSubdirectives = []string{"auth_url", "callback_url", "client_id", "client_secret", "per", "delay", "drop", "drop_nth", "repeat", "repeat_nth", "seed"}

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
//	    rate_limit         <requests per second> [<endpoint>...]
//	    auto_callback {
//	        auth_url      <url>
//	        callback_url  <url>
//	        client_id     <id>
//	        client_secret <secret>
//	        per           batch|document
//	        delay         <duration>
//	        drop          <fraction>
//	        drop_nth      <n>...
//	        repeat        <fraction>
//	        repeat_nth    <n>...
//	        seed          <n>
//	    }
//	}
//
// The block is optional; without client_id and client_secret the
// simulator accepts demo-client / demo-secret. one_live_token makes each
// issued token revoke the client's previous ones. narrate prints what
// the simulator does, one plain line each, on standard output.
// processing_delay keeps each uploaded document processing that long (a
// value in the range, per document, when a maximum is given), during
// which extracts shows it as pending_documents says. auto_callback makes
// the simulator deliver callbacks by itself when documents are done.
// rate_limit answers 429 to a client's requests to the endpoints named
// (each separately; none named: all together) above the rate. Use
// {env.X} or
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
		case "rate_limit": // a rate and endpoint names
			if err := parseRateLimit(d, h); err != nil {
				return err
			}
			continue
		case "auto_callback": // a block
			auto, err := parseAutoCallback(d)
			if err != nil {
				return err
			}
			h.AutoCallback = auto
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

// parseAutoCallback parses the auto_callback block.
func parseAutoCallback(d *caddyfile.Dispenser) (*AutoCallbackConfig, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	c := new(AutoCallbackConfig)
	seen := cfparse.Seen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if !slices.Contains(autoCallbackSubdirectives, sub) {
			return nil, cfparse.Unrecognized(d, autoCallbackSubdirectives)
		}
		if err := seen.Once(d); err != nil {
			return nil, err
		}
		switch sub {
		case "drop_nth", "repeat_nth": // one or more sequence numbers
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			var nth []int
			for _, a := range args {
				n, err := strconv.Atoi(a)
				if err != nil || n < 1 {
					return nil, d.Errf("%s takes sequence numbers from 1, got %q", sub, a)
				}
				nth = append(nth, n)
			}
			if sub == "drop_nth" {
				c.DropNth = nth
			} else {
				c.RepeatNth = nth
			}
			continue
		}
		var arg string
		if !d.Args(&arg) {
			return nil, d.ArgErr()
		}
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		switch sub {
		case "auth_url":
			c.AuthURL = arg
		case "callback_url":
			c.CallbackURL = arg
		case "client_id":
			c.ClientID = arg
		case "client_secret":
			c.ClientSecret = arg
		case "per":
			if arg != atlastest.CallbackPerBatch && arg != atlastest.CallbackPerDocument {
				return nil, d.Errf("per must be %q or %q, got %q", atlastest.CallbackPerBatch, atlastest.CallbackPerDocument, arg)
			}
			c.Per = arg
		case "delay":
			dur, err := caddy.ParseDuration(arg)
			if err != nil || dur < 0 {
				return nil, d.Errf("delay must be a non-negative duration, got %q", arg)
			}
			c.Delay = caddy.Duration(dur)
		case "drop", "repeat":
			f, err := strconv.ParseFloat(arg, 64)
			if err != nil || !(f >= 0 && f <= 1) {
				return nil, d.Errf("%s must be a fraction in [0, 1], got %q", sub, arg)
			}
			if sub == "drop" {
				c.Drop = f
			} else {
				c.Repeat = f
			}
		case "seed":
			n, err := strconv.ParseUint(arg, 10, 64)
			if err != nil {
				return nil, d.Errf("seed must be a non-negative integer, got %q", arg)
			}
			c.Seed = n
		}
	}
	if c.CallbackURL == "" {
		return nil, d.Err("auto_callback needs a callback_url")
	}
	return c, nil
}

// parseRateLimit parses the arguments of rate_limit: requests per second
// and the endpoints they apply to.
func parseRateLimit(d *caddyfile.Dispenser, h *Handler) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return d.Errf("rate_limit must be a positive number of requests per second, got %q", args[0])
	}
	endpoints := args[1:]
	if len(endpoints) == 0 {
		endpoints = []string{""}
	}
	h.RateLimits = map[string]int{}
	for _, e := range endpoints {
		if e != "" && !atlastest.KnownEndpoint(e) {
			return d.Errf("rate_limit: unknown endpoint %q (authtoken, multiupload, extracts or their bulk/ twins)", e)
		}
		h.RateLimits[e] = n
	}
	return nil
}
