// Package caddyatlas is a Caddy v2 plugin that puts the Atlas Docstream
// document-extraction API behind Caddy: internal apps call Atlas through
// Caddy without holding Atlas credentials (the outbound API routes), and
// Atlas delivers extraction results through Caddy to the app, verified
// (the callback route).
package caddyatlas

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
	"github.com/caddy-atlas/caddy-atlas/internal/outbound"
	"github.com/caddy-atlas/caddy-atlas/mask"

	"github.com/caddy-atlas/caddy-atlas/callback"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the outbound API routes.
const (
	DefaultExtractsPath  = "/atlas/extracts"
	DefaultUploadPath    = "/atlas/multiupload"
	DefaultTokenHeader   = "Token"
	DefaultTimeout       = 30 * time.Second
	DefaultMaxUploadBody = 1 << 20

	// routeOff is the path value that disables a route.
	routeOff = "off"
)

// Handler is the `atlas` HTTP handler. It serves up to four routes and
// passes every other request to the next handler untouched:
//
//   - GET {extracts_path}: proxied to Atlas's GET /v1/docstream/extracts
//     (/v1/bulk/extracts with service bulk) with the gateway's managed Atlas token injected. With `all=1`, every
//     document of the batch is streamed in one response.
//   - POST {upload_path}: proxied to Atlas's POST /v1/docstream/multiupload
//     (/v1/bulk/multiupload with service bulk), validated and size-capped first.
//   - POST {callback.auth_path}: Atlas's auth_url; issues Atlas a short-lived
//     JWT for its callbacks.
//   - POST {callback.path}: Atlas's callback_url; verifies the JWT and the
//     payload, then hands the callback to the next handler.
//
// Secrets (client_secret, signing_key) should be given as `{env.NAME}` or
// `{file.path}` placeholders; they are resolved when the config is
// provisioned, so they never appear in the adapted JSON config.
//
// The callback route sets these placeholders for the rest of the route:
//
//	{http.atlas.callback.id}              the callback id, derived from the body
//	{http.atlas.callback.subject}         the verified token's subject
//	{http.atlas.callback.document_count}  the number of documents in the payload
type Handler struct {
	// The Atlas base URL, e.g. https://docstream.dev.kreditmind.com.
	// With client_id and client_secret, the account of this handler's
	// outbound routes; without them, the routes use the account of the
	// global atlas options (the atlas app). An outbound route needs one
	// or the other. See Account.
	Endpoint string `json:"endpoint,omitempty"`

	// The gateway's Atlas client id. Placeholders are resolved at
	// provision time.
	ClientID string `json:"client_id,omitempty"`

	// The gateway's Atlas client secret. Use `{env.NAME}` or
	// `{file.path}`; it is resolved at provision time.
	ClientSecret string `json:"client_secret,omitempty"`

	// The path of the extracts route. Default: /atlas/extracts; "off"
	// disables the route.
	ExtractsPath string `json:"extracts_path,omitempty"`

	// The path of the upload route. Default: /atlas/multiupload; "off"
	// disables the route.
	UploadPath string `json:"upload_path,omitempty"`

	// The path of the batch status endpoint, served when the global
	// atlas options keep a ledger of batches (batches): GET
	// {batches_path}/{batch_id}[?wait=30s] and GET
	// {batches_path}?state=...&limit=N. Default: /atlas/batches; "off"
	// disables it.
	BatchesPath string `json:"batches_path,omitempty"`

	// The request header that carries the Atlas token upstream.
	// Default: Token.
	TokenHeader string `json:"token_header,omitempty"`

	// The time allowed for a whole upstream exchange (token, request and
	// response body). With `all=1` it applies to each page. Default: 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// The largest upload request body accepted, in bytes. Default: 1 MiB.
	MaxUploadBody int64 `json:"max_upload_body,omitempty"`

	// Where the Atlas token is kept besides memory. Default (empty): in
	// Caddy's configured storage (the `storage` global option), sealed
	// with a key derived from the client secret, so that every instance
	// sharing that storage shares one token, fetched by one of them under
	// the storage's lock. "off": in memory only, one token per instance.
	TokenStorage string `json:"token_storage,omitempty"`

	// The Atlas service of this handler's account: "docstream" (the
	// default) or "bulk" (Atlas's bulk service, under /v1/bulk/, without
	// callbacks). With the account of the global atlas options, it must
	// be that account's, or empty. See Account.
	Service string `json:"service,omitempty"`

	// Fields the apps see masked, in both directions: extracts pages
	// (and all=1), callback hand-offs (synchronous and durable) and the
	// admin API's ?body=1. Without it, payloads pass unchanged.
	Mask []MaskRule `json:"mask,omitempty"`

	// The callback route, when Atlas delivers results to this server.
	Callback *callback.Callback `json:"callback,omitempty"`

	// runtime state
	app          *App
	ownApp       bool // app is this handler's own, made outside a config load
	endpoint     *url.URL
	clientID     string
	service      atlasService
	extractsPath string
	uploadPath   string
	batchesPath  string
	upstream     *http.Client
	metrics      *outboundMetrics
	masker       *mask.Masker
	logger       *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.atlas",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision resolves secrets, applies defaults and builds the upstream
// client with its shared token source.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.TokenHeader == "" {
		h.TokenHeader = DefaultTokenHeader
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(DefaultTimeout)
	}
	if h.MaxUploadBody == 0 {
		h.MaxUploadBody = DefaultMaxUploadBody
	}
	var err error
	if h.masker, err = provisionMask(h.Mask); err != nil {
		return err
	}
	h.extractsPath = routePath(h.ExtractsPath, DefaultExtractsPath)
	h.uploadPath = routePath(h.UploadPath, DefaultUploadPath)

	if h.app, h.ownApp, err = atlasApp(ctx); err != nil {
		return err
	}

	// A handler with a callback route and no account of its own serves
	// no outbound route, unless its block names one (extracts_path,
	// upload_path): the public host of Atlas's callbacks must not become
	// a proxy with the gateway's Atlas token because the global options
	// hold an account.
	if h.Callback != nil && !h.inlineAccount().configured() &&
		(h.app.defaultAccount() == nil || h.ExtractsPath == "" && h.UploadPath == "") {
		h.extractsPath, h.uploadPath = "", ""
	}
	if h.extractsPath != "" || h.uploadPath != "" {
		if err := h.provisionOutbound(); err != nil {
			return err
		}
	}
	if h.app.batchesOn() && h.inlineAccount().configured() {
		return errors.New("batches follow the uploads of the account of the global atlas options, which they poll with: a site with an account of its own cannot be used beside them; configure the account in the global options only")
	}
	switch {
	case h.app.batchesOn() && h.extractsPath != "":
		// On the internal side, beside the outbound routes.
		h.batchesPath = routePath(h.BatchesPath, DefaultBatchesPath)
	case h.BatchesPath != "" && h.BatchesPath != routeOff && !h.app.batchesOn():
		return errors.New("batches_path needs a ledger of batches: add batches { ... } to the global atlas options")
	case h.BatchesPath != "" && h.BatchesPath != routeOff:
		h.batchesPath = h.BatchesPath
	}
	if h.Callback != nil {
		h.Callback.SetMasker(h.masker)
		if q := h.app.Queue(); q != nil {
			h.Callback.UseQueue(q)
		}
		if h.app.batchesOn() {
			h.Callback.UseLedger(h.app.Ledger)
		}
		if err := h.Callback.Provision(ctx, h.logger); err != nil {
			return fmt.Errorf("callback: %w", err)
		}
		if h.app.batchesOn() {
			if err := h.app.usePollTarget(h.Callback); err != nil {
				return err
			}
		}
		if h.ownApp {
			// No config (a unit test): nothing will start; open now.
			if err := h.Callback.Start(); err != nil {
				return fmt.Errorf("callback: %w", err)
			}
		} else {
			h.app.onStart(h.Callback.Start)
		}
	}
	return nil
}

// provisionOutbound takes the account of the outbound routes from the
// atlas app: the one this handler's block names, or the app's own.
func (h *Handler) provisionOutbound() error {
	inline := h.inlineAccount()
	var acct *account
	switch {
	case inline.configured():
		var err error
		if acct, err = h.app.account(inline, h.place()); err != nil {
			return err
		}
	case h.app.defaultAccount() != nil:
		acct = h.app.defaultAccount()
		if h.TokenStorage != "" && h.TokenStorage != acct.tokenStorage {
			return fmt.Errorf("token_storage %q differs from the account's in %s: set token_storage where the account is configured", h.TokenStorage, acct.place)
		}
		if h.Service != "" && h.Service != acct.service.name {
			return fmt.Errorf("service %q differs from the account's (%s) in %s: set service where the account is configured", h.Service, acct.service.name, acct.place)
		}
	default:
		_, _, err := resolveAccount(inline) // says what is missing
		return err
	}
	h.endpoint = acct.endpoint
	h.clientID = acct.clientID
	h.service = acct.service
	h.metrics = acct.metrics
	h.upstream = &http.Client{
		Transport: &atlasclient.Transport{
			Source:   acct.tokens.source,
			Base:     outbound.Traced(acct.transport()),
			Header:   h.TokenHeader,
			OnReplay: h.metrics.replays.Inc,
		},
		// Atlas's redirects are not followed: the token must not travel
		// to wherever a redirect points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return nil
}

// inlineAccount is the account written in the handler's own block.
func (h *Handler) inlineAccount() Account {
	return Account{Endpoint: h.Endpoint, ClientID: h.ClientID, ClientSecret: h.ClientSecret, TokenStorage: h.TokenStorage, Service: h.Service}
}

// place names the handler in errors, by the routes it serves.
func (h *Handler) place() string {
	var routes []string
	if h.Callback != nil && h.Callback.Path != "" {
		routes = append(routes, "callback "+h.Callback.Path)
	}
	if h.extractsPath != "" {
		routes = append(routes, "extracts_path "+h.extractsPath)
	}
	if h.uploadPath != "" {
		routes = append(routes, "upload_path "+h.uploadPath)
	}
	return "the atlas handler of " + strings.Join(routes, ", ")
}

// routePath returns the effective path of a route: the default when
// unset, "" when the route is off.
func routePath(configured, def string) string {
	switch configured {
	case "":
		return def
	case routeOff:
		return ""
	}
	return configured
}

// Validate checks the configuration; it changes nothing.
func (h *Handler) Validate() error {
	for name, p := range map[string]string{"extracts_path": h.extractsPath, "upload_path": h.uploadPath, "batches_path": h.batchesPath} {
		if p != "" && !strings.HasPrefix(p, "/") {
			return fmt.Errorf("%s %q must start with /", name, p)
		}
	}
	if h.extractsPath != "" && h.extractsPath == h.uploadPath {
		return fmt.Errorf("extracts_path and upload_path are the same path %q", h.extractsPath)
	}
	if h.batchesPath != "" && strings.HasSuffix(h.batchesPath, "/") {
		return fmt.Errorf("batches_path %q must not end with /", h.batchesPath)
	}
	if h.batchesPath != "" && (h.batchesPath == h.extractsPath || h.batchesPath == h.uploadPath) {
		return fmt.Errorf("batches_path %q is also an outbound route's path", h.batchesPath)
	}
	if h.Timeout < 0 {
		return errors.New("timeout must not be negative")
	}
	if h.MaxUploadBody < 0 {
		return errors.New("max_upload_body must not be negative")
	}
	if h.TokenStorage != "" && h.TokenStorage != tokenStorageOff {
		return fmt.Errorf("token_storage must be empty (Caddy's storage) or %q, got %q", tokenStorageOff, h.TokenStorage)
	}
	if h.TokenHeader != "" && !validHeaderName(h.TokenHeader) {
		return fmt.Errorf("token_header %q is not a valid header name", h.TokenHeader)
	}
	if h.Callback != nil {
		for _, p := range []string{h.extractsPath, h.uploadPath} {
			if p != "" && (p == h.Callback.Path || p == h.Callback.AuthPath) {
				return fmt.Errorf("path %q is used by both an outbound route and the callback route", p)
			}
		}
		if err := h.Callback.Validate(); err != nil {
			return fmt.Errorf("callback: %w", err)
		}
	}
	if h.extractsPath == "" && h.uploadPath == "" && h.Callback == nil {
		return errors.New("every route is off: enable extracts_path, upload_path or a callback")
	}
	return nil
}

// validHeaderName reports whether s is a token as RFC 9110 defines header
// names.
func validHeaderName(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}

// Cleanup releases the callback route's resources; the account is the
// app's to release. It is safe after a failed Provision.
func (h *Handler) Cleanup() error {
	var errs []error
	if h.Callback != nil {
		if err := h.Callback.Cleanup(); err != nil {
			errs = append(errs, err)
		}
	}
	if h.ownApp {
		errs = append(errs, h.app.Cleanup())
		h.app, h.ownApp = nil, false
	}
	return errors.Join(errs...)
}

// tokenSources holds the token sources shared across config reloads,
// keyed by endpoint, client id and a digest of the secret.
var tokenSources = caddy.NewUsagePool()

// sharedTokenSource is a token source held in the usage pool, with the
// connection pool to Atlas that the handlers using it share.
type sharedTokenSource struct {
	source    *atlasclient.TokenSource
	transport *http.Transport
	clientID  string
	metrics   *outboundMetrics
	logger    *zap.Logger
	// stores is where the token is shared, when it is (nil otherwise).
	stores *tokenStores
	// lastFetch is the Unix time in nanoseconds of the last successful
	// authtoken call, for the token age metric.
	lastFetch atomic.Int64
	// lastRevokedWarning is the Unix time in nanoseconds of the last
	// warning about a token revoked early in its life.
	lastRevokedWarning atomic.Int64
}

// revokedWarningEvery bounds how often a token refused early in its life
// is logged.
const revokedWarningEvery = time.Minute

func newSharedTokenSource(endpoint, authTokenPath, clientID, secret string, shared bool, m *outboundMetrics, logger *zap.Logger) (*sharedTokenSource, error) {
	s := &sharedTokenSource{
		clientID:  clientID,
		metrics:   m,
		logger:    logger,
		transport: outbound.NewTransport(),
	}
	opts := atlasclient.TokenOptions{
		Endpoint:      endpoint,
		AuthTokenPath: authTokenPath,
		ClientID:      clientID,
		ClientSecret:  secret,
		HTTPClient:    &http.Client{Transport: outbound.Traced(s.transport), Timeout: atlasclient.DefaultHTTPTimeout},
		Observer:      s,
	}
	if shared {
		s.stores = new(tokenStores)
		opts.Shared = s.stores
	}
	src, err := atlasclient.NewTokenSource(opts)
	if err != nil {
		return nil, err
	}
	s.source = src
	liveTokenSources.Store(s, struct{}{})
	return s, nil
}

// TokenFetched records an authtoken call in the metrics.
func (s *sharedTokenSource) TokenFetched(outcome string, took time.Duration) {
	if outcome == "success" {
		s.lastFetch.Store(time.Now().UnixNano())
	}
	s.metrics.tokenFetches.WithLabelValues(outcome).Inc()
	s.metrics.tokenFetchDuration.Observe(took.Seconds())
}

// TokenLoaded records that the token in use was fetched by another
// instance (or an earlier run), for the token age metric.
func (s *sharedTokenSource) TokenLoaded(issuedAt time.Time) {
	s.lastFetch.Store(issuedAt.UnixNano())
}

// SharedStoreFailed logs a failure of the token storage; the source then
// fetches a token of its own, as without shared storage.
func (s *sharedTokenSource) SharedStoreFailed(op string, err error) {
	s.logger.Warn("atlas token storage failed; this instance uses a token of its own",
		zap.String("client_id", s.clientID), zap.String("operation", op), zap.Error(err))
}

// TokenRefused logs, at most once a minute, a token that Atlas refused in
// the first half of its life: it was revoked, which is what instances that
// fetch a token each do to one another if Atlas keeps one live token per
// client.
func (s *sharedTokenSource) TokenRefused(age, remaining time.Duration) {
	if age >= remaining {
		return
	}
	now := time.Now().UnixNano()
	last := s.lastRevokedWarning.Load()
	if now-last < int64(revokedWarningEvery) || !s.lastRevokedWarning.CompareAndSwap(last, now) {
		return
	}
	msg := "atlas refused a token early in its life: it was revoked; if several Caddy instances use this client id, give them one shared storage so that they share one token"
	if s.stores == nil {
		msg = "atlas refused a token early in its life: it was revoked; if several Caddy instances use this client id, remove token_storage off and give them one shared storage so that they share one token"
	}
	s.logger.Warn(msg,
		zap.String("client_id", s.clientID),
		zap.Duration("age", age.Round(time.Millisecond)),
		zap.Duration("remaining", remaining.Round(time.Millisecond)))
}

// Destruct stops the token source and closes the idle connections when
// the last config using them is unloaded.
func (s *sharedTokenSource) Destruct() error {
	s.source.Close()
	s.transport.CloseIdleConnections()
	liveTokenSources.Delete(s)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner               = (*Handler)(nil)
	_ caddy.Validator                 = (*Handler)(nil)
	_ caddy.CleanerUpper              = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler     = (*Handler)(nil)
	_ caddy.Destructor                = (*sharedTokenSource)(nil)
	_ atlasclient.TokenObserver       = (*sharedTokenSource)(nil)
	_ atlasclient.SharedTokenObserver = (*sharedTokenSource)(nil)
	_ atlasclient.RefusalObserver     = (*sharedTokenSource)(nil)
)
