package caddyatlas

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/caddy-atlas/caddy-atlas/callback"
	"github.com/caddy-atlas/caddy-atlas/internal/cfparse"
	"github.com/caddy-atlas/caddy-atlas/jsqueue"
	"github.com/caddy-atlas/caddy-atlas/queues"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("atlas", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("atlas", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterGlobalOption("atlas", parseGlobalOption)
}

// parseCaddyfile sets up the handler from Caddyfile tokens. An account
// written inline that configures a client id differently from another
// site or from the global atlas options is an error that names both
// places.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	h.Reset()
	h.Next()
	place := fmt.Sprintf("the atlas block at %s:%d", h.File(), h.Line())
	if err := checkAccountPlaces(h, m.inlineAccount(), place); err != nil {
		return nil, h.Errf("%v", err)
	}
	if m.Callback != nil && m.Callback.Queue != nil {
		if err := checkQueuePlaces(h, m.Callback.Queue, place); err != nil {
			return nil, h.Errf("%v", err)
		}
	}
	return m, nil
}

// parseGlobalOption sets up the atlas app from the `atlas` global
// option.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the atlas global option is given more than once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	var warnings []caddyconfig.Warning
	raw := caddyconfig.JSON(app, &warnings)
	if len(warnings) > 0 {
		return nil, d.Errf("atlas: %s", warnings[0].Message)
	}
	return httpcaddyfile.App{Name: "atlas", Value: raw}, nil
}

// UnmarshalCaddyfile sets up the atlas app from the tokens of the
// `atlas` global option. Syntax:
//
//	atlas {
//		endpoint      <url>
//		client_id     <id>
//		client_secret <secret>
//		token_storage off
//		service       docstream|bulk
//		queue spool <directory> { ... }   # or: queue jetstream { ... }
//	}
//
// The account is that of every site's atlas handler that names none, the
// queue that of every callback route that names none (see the
// atlas.queues.spool and atlas.queues.jetstream modules for their
// blocks).
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := cfparse.Seen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.Once(d); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "endpoint":
			err = cfparse.String(d, &a.Endpoint)
		case "client_id":
			err = cfparse.String(d, &a.ClientID)
		case "client_secret":
			err = cfparse.String(d, &a.ClientSecret)
		case "token_storage":
			err = unmarshalTokenStorage(d, &a.TokenStorage)
		case "service":
			err = unmarshalService(d, &a.Service)
		case "queue":
			err = a.unmarshalQueue(d)
		case "batches":
			a.Batches = new(Batches)
			err = a.Batches.UnmarshalCaddyfile(d)
		default:
			return cfparse.Unrecognized(d, appSubdirectives)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// appSubdirectives are the subdirectives of the atlas global option, for
// the suggestion of a misspelt one (a test checks them against the
// parser's switch).
var appSubdirectives = []string{"endpoint", "client_id", "client_secret", "token_storage", "service", "queue", "batches"}

// handlerSubdirectives are the subdirectives of a site's atlas block, for
// the suggestion of a misspelt one (a test checks them against the
// parser's switch).
var handlerSubdirectives = []string{
	"endpoint", "client_id", "client_secret", "extracts_path", "upload_path", "token_header",
	"token_storage", "service", "timeout", "max_upload_body", "mask", "callback", "batches_path",
}

// unmarshalQueue parses `queue <backend> ...`, d on `queue`.
func (a *App) unmarshalQueue(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	backend := d.Val()
	id := "atlas.queues." + backend
	if _, err := caddy.GetModule(id); err != nil {
		return d.Errf("queue: unknown backend %q (want spool or jetstream)", backend)
	}
	mod, err := caddyfile.UnmarshalModule(d, id)
	if err != nil {
		return err
	}
	var warnings []caddyconfig.Warning
	a.QueueRaw = caddyconfig.JSONModuleObject(mod, "backend", backend, &warnings)
	if len(warnings) > 0 {
		return d.Errf("queue: %s", warnings[0].Message)
	}
	return nil
}

// accountPlace is an account as written in the Caddyfile, and where.
type accountPlace struct {
	Account
	place string
}

// accountPlacesKey keys, in the adapter's state, the accounts the sites
// of the Caddyfile configure inline, by client id as written.
const accountPlacesKey = "atlas.accounts"

// checkAccountPlaces compares the account a site's atlas block writes
// inline with those of the sites before it and with the global atlas
// options, as written (placeholders unresolved): one client id must have
// one endpoint, secret and token storage. Provision compares them again
// once resolved.
func checkAccountPlaces(h httpcaddyfile.Helper, acct Account, place string) error {
	if !acct.configured() || acct.ClientID == "" {
		return nil
	}
	places, _ := h.State[accountPlacesKey].(map[string]accountPlace)
	if places == nil {
		places = make(map[string]accountPlace)
		if opt, ok := h.Option("atlas").(httpcaddyfile.App); ok {
			var app App
			if err := json.Unmarshal(opt.Value, &app); err == nil && app.ClientID != "" {
				places[app.ClientID] = accountPlace{app.Account, appPlace}
			}
		}
		h.State[accountPlacesKey] = places
	}
	o, ok := places[acct.ClientID]
	if !ok {
		places[acct.ClientID] = accountPlace{acct, place}
		return nil
	}
	var diff string
	switch {
	case strings.TrimRight(o.Endpoint, "/") != strings.TrimRight(acct.Endpoint, "/"):
		diff = "endpoint " + o.Endpoint + " and " + acct.Endpoint
	case o.ClientSecret != acct.ClientSecret:
		diff = "client_secret"
	case o.TokenStorage != acct.TokenStorage:
		diff = "token_storage"
	case serviceOrDefault(o.Service) != serviceOrDefault(acct.Service):
		diff = "service " + serviceOrDefault(o.Service) + " and " + serviceOrDefault(acct.Service)
	default:
		return nil
	}
	return fmt.Errorf("client_id %s is configured twice, with a different %s: in %s and in %s; configure the account once (in the global atlas options) or give each place the same settings",
		acct.ClientID, diff, o.place, place)
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
//		service          docstream|bulk
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
		case "batches_path":
			err = cfparse.String(d, &h.BatchesPath)
		case "token_header":
			err = cfparse.String(d, &h.TokenHeader)
		case "token_storage":
			err = unmarshalTokenStorage(d, &h.TokenStorage)
		case "service":
			err = unmarshalService(d, &h.Service)
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
			return cfparse.Unrecognized(d, handlerSubdirectives)
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

// unmarshalService parses `service docstream|bulk`.
func unmarshalService(d *caddyfile.Dispenser, dst *string) error {
	val, err := cfparse.Arg(d)
	if err != nil {
		return err
	}
	if _, err := serviceName(val); err != nil || val == "" {
		return d.Errf("service must be %q (the default) or %q, got %q", ServiceDocstream, ServiceBulk, val)
	}
	*dst = val
	return nil
}

// serviceOrDefault is the service s names, as written: docstream when
// empty.
func serviceOrDefault(s string) string {
	if s == "" {
		return ServiceDocstream
	}
	return s
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

// queuePlace is a queue as written in the Caddyfile, and where.
type queuePlace struct {
	settings map[string]any
	place    string
}

// queuePlacesKey keys, in the adapter's state, the queues the sites of
// the Caddyfile configure inline, by queueIdentity.
const queuePlacesKey = "atlas.queues"

// queueIdentity names the queue a module's settings open: its backend
// and directory, or its stream and servers, as written.
func queueIdentity(q map[string]any) string {
	switch q["backend"] {
	case "spool":
		return fmt.Sprintf("spool %v", q["dir"])
	case "jetstream":
		stream, _ := q["stream"].(string)
		if stream == "" {
			stream = jsqueue.DefaultStream
		}
		return fmt.Sprintf("jetstream %s on %v", stream, q["urls"])
	}
	return ""
}

// checkQueuePlaces compares the queue a site's callback block names
// with those of the sites before it and with the global atlas options,
// as written: one queue must have one set of settings.
func checkQueuePlaces(h httpcaddyfile.Helper, raw json.RawMessage, place string) error {
	var q map[string]any
	if err := json.Unmarshal(raw, &q); err != nil {
		return err
	}
	id := queueIdentity(q)
	if id == "" {
		return nil
	}
	places, _ := h.State[queuePlacesKey].(map[string]queuePlace)
	if places == nil {
		places = make(map[string]queuePlace)
		if opt, ok := h.Option("atlas").(httpcaddyfile.App); ok {
			var app App
			var aq map[string]any
			if json.Unmarshal(opt.Value, &app) == nil && app.QueueRaw != nil && json.Unmarshal(app.QueueRaw, &aq) == nil {
				places[queueIdentity(aq)] = queuePlace{aq, appPlace}
			}
		}
		h.State[queuePlacesKey] = places
	}
	o, ok := places[id]
	if !ok {
		places[id] = queuePlace{q, place}
		return nil
	}
	if !reflect.DeepEqual(queues.WithDefaults(o.settings), queues.WithDefaults(q)) {
		return fmt.Errorf("queue %s is configured twice, with different settings: in %s and in %s; configure it once (in the global atlas options) or alike in both places",
			id, o.place, place)
	}
	return nil
}

// batchesSubdirectives are the subdirectives of the batches block, for
// the suggestion of a misspelt one.
var batchesSubdirectives = []string{"poll_after", "poll_every", "give_up_after", "poll_rate", "max_wait", "retention", "idempotency_window", "deliver_to", "lease_ttl"}

// UnmarshalCaddyfile sets up the batches from the `batches` block of the
// atlas global option (d is on `batches`). Syntax:
//
//	batches {
//		poll_after         <duration>   # 0: poll every batch from its upload on
//		poll_every         <duration>
//		give_up_after      <duration>
//		poll_rate          <requests per second>
//		max_wait           <duration>
//		retention          <duration>
//		idempotency_window <duration>
//		deliver_to         <url>        # where polled results go without a durable callback route
//		lease_ttl          <duration>
//	}
func (b *Batches) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := cfparse.Seen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.Once(d); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "poll_after":
			var v string
			if v, err = cfparse.Arg(d); err == nil {
				var dur time.Duration
				if dur, err = caddy.ParseDuration(v); err != nil || dur < 0 {
					return d.Errf("poll_after must be a duration, 0 for poll-only, got %s", v)
				}
				cd := caddy.Duration(dur)
				b.PollAfter = &cd
			}
		case "poll_every":
			err = cfparse.Duration(d, &b.PollEvery)
		case "give_up_after":
			err = cfparse.Duration(d, &b.GiveUpAfter)
		case "poll_rate":
			var v string
			if v, err = cfparse.Arg(d); err == nil {
				r, perr := strconv.ParseFloat(v, 64)
				if perr != nil || r <= 0 || r > 1000 {
					return d.Errf("poll_rate must be a number of requests per second above 0, at most 1000, got %s", v)
				}
				b.PollRate = r
			}
		case "max_wait":
			err = cfparse.Duration(d, &b.MaxWait)
		case "retention":
			err = cfparse.Duration(d, &b.Retention)
		case "idempotency_window":
			err = cfparse.Duration(d, &b.IdempotencyWindow)
		case "deliver_to":
			err = cfparse.String(d, &b.DeliverTo)
		case "lease_ttl":
			err = cfparse.Duration(d, &b.LeaseTTL)
		default:
			return cfparse.Unrecognized(d, batchesSubdirectives)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
