// Package simulator serves the Atlas Docstream simulator
// (github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest) from Caddy,
// as the http.handlers.atlas_simulator module and the atlas_simulator
// Caddyfile directive.
//
// THIS MODULE IS FOR TESTS AND DEMOS ONLY. It fakes Atlas with demo
// credentials, its /_sim/ control endpoints are unauthenticated and can
// make the server POST to arbitrary URLs. Never deploy it in front of real
// traffic.
package simulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/internal/placeholder"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// simulators holds the running simulators, keyed by their resolved
// configuration, so that a config reload that leaves a simulator's
// configuration unchanged keeps its batches, tokens and knobs.
var simulators = caddy.NewUsagePool()

// Handler is an HTTP handler simulating the Atlas Docstream API: the
// /v1/docstream/authtoken, /multiupload and /extracts endpoints, their
// bulk-service twins under /v1/bulk/ (no callbacks), and the
// unauthenticated /_sim/ control endpoints (see package atlastest). It is
// a terminal handler: it answers every request itself and never calls the
// next handler.
//
// Handlers with identical configuration share one simulator, which
// survives config reloads as long as some handler uses it.
//
// FOR TESTS AND DEMOS ONLY: never deploy it in front of real traffic.
type Handler struct {
	// ClientID is the Client-Id the authtoken endpoint accepts. Accepts
	// {env.*} and {file.*} placeholders. Defaults to "demo-client" when
	// both client_id and client_secret are omitted.
	ClientID string `json:"client_id,omitempty"`

	// ClientSecret is the Client-Secret the authtoken endpoint accepts.
	// Accepts {env.*} and {file.*} placeholders. Defaults to
	// "demo-secret" when both client_id and client_secret are omitted.
	ClientSecret string `json:"client_secret,omitempty"`

	// TokenLifetime is the lifetime of issued tokens. Default 1h.
	TokenLifetime caddy.Duration `json:"token_lifetime,omitempty"`

	// UploadResponse is the shape of a multiupload response: "array"
	// (default; [{"batch_id", "document_id", "file_uuid"}]) or "object"
	// ({"batch_id"}). The Atlas documentation shows both.
	UploadResponse string `json:"upload_response,omitempty"`

	// DocumentTypeForm is the form of file_data.document_type: "string"
	// (default) or "object" ({"value", "confidence_score"}). The Atlas
	// documentation does not settle it.
	DocumentTypeForm string `json:"document_type_form,omitempty"`

	// OneLiveToken keeps one live token per client: issuing a token
	// revokes the client's previous ones, which then answer 401. Default
	// off (every unexpired token is live).
	OneLiveToken bool `json:"one_live_token,omitempty"`

	// Narrate prints on standard output, one plain line each, what the
	// simulator does as Atlas: tokens issued, batches uploaded, extracts
	// sent, and how the gateway answered the callbacks it played (see
	// package internal/demostory). For the demo (scripts/run.sh).
	// Default off.
	Narrate bool `json:"narrate,omitempty"`

	// ProcessingDelay is how long each uploaded document takes to
	// process; extracts shows it pending until then. Default 0 (at
	// once).
	ProcessingDelay caddy.Duration `json:"processing_delay,omitempty"`

	// ProcessingDelayMax, when above ProcessingDelay, makes each
	// document's delay a value in [ProcessingDelay, ProcessingDelayMax]
	// derived from its document id.
	ProcessingDelayMax caddy.Duration `json:"processing_delay_max,omitempty"`

	// PendingDocuments is how extracts shows a document still
	// processing: "listed" (default; {"document_id"} without file_data),
	// "empty" ("file_data": {}) or "omitted" (left out of data).
	PendingDocuments string `json:"pending_documents,omitempty"`

	// AutoCallback, when set, makes the simulator deliver callbacks by
	// itself, as Atlas does, when a docstream batch's documents are done.
	AutoCallback *AutoCallbackConfig `json:"auto_callback,omitempty"`

	// RateLimits limits each client's requests per second, by endpoint
	// name ("authtoken", "multiupload", "extracts", "bulk/authtoken",
	// "bulk/multiupload", "bulk/extracts"; "" for every endpoint together): requests over it answer 429 with Retry-After.
	RateLimits map[string]int `json:"rate_limits,omitempty"`

	clientID     string
	clientSecret string
	key          poolKey
	provisioned  bool
	sim          *atlastest.Simulator
	logger       *zap.Logger
}

// AutoCallbackConfig is where and how the simulator delivers callbacks by
// itself (see atlastest.AutoCallback).
type AutoCallbackConfig struct {
	// AuthURL is POSTed with Client-Id and Client-Secret for a token
	// before each callback. Empty: callbacks carry no Token.
	AuthURL string `json:"auth_url,omitempty"`
	// CallbackURL receives the callbacks. Required.
	CallbackURL string `json:"callback_url,omitempty"`
	// ClientID and ClientSecret are presented at AuthURL. Accept {env.*}
	// and {file.*} placeholders.
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
	// Per is "batch" (default: one callback with every document when the
	// last is done) or "document" (one per document when it is done).
	Per string `json:"per,omitempty"`
	// Delay is how long after the documents are done a callback is sent.
	Delay caddy.Duration `json:"delay,omitempty"`
	// Drop is the fraction of callbacks never sent, DropNth the sequence
	// numbers (from 1) of more.
	Drop    float64 `json:"drop,omitempty"`
	DropNth []int   `json:"drop_nth,omitempty"`
	// Repeat is the fraction of callbacks sent twice, RepeatNth the
	// sequence numbers of more.
	Repeat    float64 `json:"repeat,omitempty"`
	RepeatNth []int   `json:"repeat_nth,omitempty"`
	// Seed varies which callbacks Drop and Repeat choose.
	Seed uint64 `json:"seed,omitempty"`
}

// resolve returns the simulator's setting for c, placeholders replaced,
// or what is wrong with it.
func (c *AutoCallbackConfig) resolve(repl *caddy.Replacer) (*atlastest.AutoCallback, error) {
	if c == nil {
		return nil, nil
	}
	if c.CallbackURL == "" {
		return nil, errors.New("auto_callback: callback_url is required")
	}
	switch c.Per {
	case "", atlastest.CallbackPerBatch, atlastest.CallbackPerDocument:
	default:
		return nil, fmt.Errorf("auto_callback: per must be %q or %q, got %q", atlastest.CallbackPerBatch, atlastest.CallbackPerDocument, c.Per)
	}
	a := &atlastest.AutoCallback{
		Target: atlastest.CallbackTarget{
			AuthURL:      c.AuthURL,
			CallbackURL:  c.CallbackURL,
			ClientID:     repl.ReplaceKnown(c.ClientID, ""),
			ClientSecret: repl.ReplaceKnown(c.ClientSecret, ""),
		},
		PerDocument: c.Per == atlastest.CallbackPerDocument,
		Delay:       time.Duration(c.Delay),
		Drop:        c.Drop,
		DropNth:     c.DropNth,
		Repeat:      c.Repeat,
		RepeatNth:   c.RepeatNth,
		Seed:        c.Seed,
	}
	if msg := atlastest.AutoCallbackProblem(a); msg != "" {
		return nil, errors.New("auto_callback: " + msg)
	}
	return a, nil
}

// poolKey identifies a simulator configuration in the usage pool.
type poolKey struct {
	clientID, clientSecret string
	tokenLifetime          time.Duration
	uploadResponse         string
	documentTypeForm       string
	oneLiveToken           bool
	processingDelay        time.Duration
	processingDelayMax     time.Duration
	pendingDocuments       string
	autoCallback           string // JSON of the resolved setting
	rateLimits             string // JSON of RateLimits, keys sorted
}

// poolEntry is a pooled simulator.
type poolEntry struct {
	sim *atlastest.Simulator
}

// Destruct implements caddy.Destructor: it stops the simulator's
// automatic callbacks.
func (e poolEntry) Destruct() error {
	e.sim.Close()
	return nil
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.atlas_simulator",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision resolves placeholders, applies defaults and loads (or creates)
// the shared simulator for this configuration.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()

	repl := caddy.NewReplacer()
	h.clientID = repl.ReplaceKnown(h.ClientID, "")
	h.clientSecret = repl.ReplaceKnown(h.ClientSecret, "")
	if h.ClientID == "" && h.ClientSecret == "" {
		h.clientID, h.clientSecret = atlastest.DefaultClientID, atlastest.DefaultClientSecret
	}
	if err := h.check(); err != nil {
		return err
	}
	auto, err := h.AutoCallback.resolve(repl)
	if err != nil {
		return err
	}

	lifetime := time.Duration(h.TokenLifetime)
	if lifetime == 0 {
		lifetime = atlastest.DefaultTokenLifetime
	}
	h.key = poolKey{
		clientID:         h.clientID,
		clientSecret:     h.clientSecret,
		tokenLifetime:    lifetime,
		uploadResponse:   orDefault(h.UploadResponse, atlastest.UploadResponseArray),
		documentTypeForm: orDefault(h.DocumentTypeForm, atlastest.DocumentTypeString),
		oneLiveToken:     h.OneLiveToken,
		processingDelay:  time.Duration(h.ProcessingDelay),
		pendingDocuments: orDefault(h.PendingDocuments, atlastest.PendingListed),
	}
	h.key.processingDelayMax = max(time.Duration(h.ProcessingDelayMax), h.key.processingDelay)
	if auto != nil {
		b, _ := json.Marshal(auto)
		h.key.autoCallback = string(b)
	}
	if len(h.RateLimits) > 0 {
		b, _ := json.Marshal(h.RateLimits) // encoding/json sorts map keys
		h.key.rateLimits = string(b)
	}
	val, loaded, err := simulators.LoadOrNew(h.key, func() (caddy.Destructor, error) {
		return poolEntry{sim: atlastest.New(atlastest.Options{
			ClientID:            h.key.clientID,
			ClientSecret:        h.key.clientSecret,
			TokenLifetime:       h.key.tokenLifetime,
			UploadResponseShape: h.key.uploadResponse,
			DocumentTypeForm:    h.key.documentTypeForm,
			OneLiveToken:        h.key.oneLiveToken,
			ProcessingDelay:     h.key.processingDelay,
			ProcessingDelayMax:  h.key.processingDelayMax,
			PendingDocuments:    h.key.pendingDocuments,
			AutoCallback:        auto,
			RateLimits:          h.RateLimits,
		})}, nil
	})
	if err != nil {
		return fmt.Errorf("loading simulator: %v", err)
	}
	h.provisioned = true
	h.sim = val.(poolEntry).sim

	h.logger.Warn("atlas_simulator is a fake Atlas API for tests and demos only; never deploy it in front of real traffic",
		zap.Bool("reused", loaded),
		zap.Duration("token_lifetime", lifetime),
		zap.String("upload_response", h.key.uploadResponse),
		zap.String("document_type_form", h.key.documentTypeForm),
		zap.Bool("one_live_token", h.key.oneLiveToken),
		zap.Duration("processing_delay", h.key.processingDelay),
		zap.Duration("processing_delay_max", h.key.processingDelayMax),
		zap.String("pending_documents", h.key.pendingDocuments),
		zap.Bool("auto_callback", auto != nil),
		zap.Any("rate_limits", h.RateLimits),
	)
	return nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	return h.check()
}

// check reports what is wrong with the configuration. It never includes a
// secret in its error.
func (h *Handler) check() error {
	if h.clientID == "" {
		return placeholder.Empty("client_id", h.ClientID)
	}
	if h.clientSecret == "" {
		return placeholder.Empty("client_secret", h.ClientSecret)
	}
	if h.TokenLifetime < 0 {
		return fmt.Errorf("token_lifetime must not be negative, got %s", time.Duration(h.TokenLifetime))
	}
	switch h.UploadResponse {
	case "", atlastest.UploadResponseArray, atlastest.UploadResponseObject:
	default:
		return fmt.Errorf("upload_response must be %q or %q, got %q", atlastest.UploadResponseArray, atlastest.UploadResponseObject, h.UploadResponse)
	}
	switch h.DocumentTypeForm {
	case "", atlastest.DocumentTypeString, atlastest.DocumentTypeObject:
	default:
		return fmt.Errorf("document_type_form must be %q or %q, got %q", atlastest.DocumentTypeString, atlastest.DocumentTypeObject, h.DocumentTypeForm)
	}
	if h.ProcessingDelay < 0 || h.ProcessingDelayMax < 0 {
		return fmt.Errorf("processing_delay must not be negative, got %s %s", time.Duration(h.ProcessingDelay), time.Duration(h.ProcessingDelayMax))
	}
	for endpoint, n := range h.RateLimits {
		if endpoint != "" && !atlastest.KnownEndpoint(endpoint) {
			return fmt.Errorf("rate_limits: unknown endpoint %q", endpoint)
		}
		if n < 1 {
			return fmt.Errorf("rate_limits: %q must be a positive number of requests per second, got %d", endpoint, n)
		}
	}
	switch h.PendingDocuments {
	case "", atlastest.PendingListed, atlastest.PendingEmpty, atlastest.PendingOmitted:
	default:
		return fmt.Errorf("pending_documents must be %q, %q or %q, got %q", atlastest.PendingListed, atlastest.PendingEmpty, atlastest.PendingOmitted, h.PendingDocuments)
	}
	return nil
}

// Cleanup releases this handler's reference to the shared simulator. It
// is safe after a failed Provision.
func (h *Handler) Cleanup() error {
	if !h.provisioned {
		return nil
	}
	h.provisioned = false
	h.sim = nil
	_, err := simulators.Delete(h.key)
	return err
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)

var _ caddy.Destructor = poolEntry{}
