package caddyatlas

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
	"github.com/caddy-atlas/caddy-atlas/internal/placeholder"
	"github.com/caddy-atlas/caddy-atlas/reconcile"
)

// Account is an Atlas account: the endpoint and the credentials the
// outbound routes call Atlas with. It is configured in the global `atlas`
// options (the app's account, used by every site's atlas handler that
// names none), or inline in a site's atlas block.
type Account struct {
	// The Atlas base URL, e.g. https://docstream.dev.kreditmind.com.
	Endpoint string `json:"endpoint,omitempty"`

	// The gateway's Atlas client id. Placeholders are resolved at
	// provision time.
	ClientID string `json:"client_id,omitempty"`

	// The gateway's Atlas client secret. Use `{env.NAME}` or
	// `{file.path}`; it is resolved at provision time.
	ClientSecret string `json:"client_secret,omitempty"`

	// Where the Atlas token is kept besides memory. Default (empty): in
	// Caddy's configured storage (the `storage` global option), sealed
	// with a key derived from the client secret, so that every instance
	// sharing that storage shares one token, fetched by one of them under
	// the storage's lock. "off": in memory only, one token per instance.
	TokenStorage string `json:"token_storage,omitempty"`

	// The Atlas service the account speaks to: "docstream" (the
	// default), the API under /v1/docstream/ with callbacks, or "bulk",
	// Atlas's bulk service under /v1/bulk/, which has the same requests
	// and answers and no callbacks: polling extracts (batches) is its
	// only channel. Its token, upload and extracts routes and the
	// reconciler's polls all go to the service's paths.
	Service string `json:"service,omitempty"`
}

// The Atlas services an account may speak to.
const (
	ServiceDocstream = "docstream"
	ServiceBulk      = "bulk"
)

// atlasService is the paths of one Atlas service.
type atlasService struct {
	name                        string
	authToken, upload, extracts string
	reconcileExtracts           string
}

var atlasServices = map[string]atlasService{
	ServiceDocstream: {ServiceDocstream, atlasclient.DocstreamAuthTokenPath, "/v1/docstream/multiupload", "/v1/docstream/extracts", reconcile.DocstreamExtracts},
	ServiceBulk:      {ServiceBulk, atlasclient.BulkAuthTokenPath, "/v1/bulk/multiupload", "/v1/bulk/extracts", reconcile.BulkExtracts},
}

// serviceName returns the service s names ("" is docstream), or an
// error for another value.
func serviceName(s string) (string, error) {
	switch s {
	case "":
		return ServiceDocstream, nil
	case ServiceDocstream, ServiceBulk:
		return s, nil
	}
	return "", fmt.Errorf("service must be %q (the default) or %q, got %q", ServiceDocstream, ServiceBulk, s)
}

// configured reports whether any setting of the account is given.
func (a Account) configured() bool {
	return a.Endpoint != "" || a.ClientID != "" || a.ClientSecret != ""
}

// account is an Atlas account in use: its token source, shared across
// config reloads through the tokenSources pool, and the connections to
// Atlas. The atlas app holds one per client id and releases it when its
// config is unloaded.
type account struct {
	// place says where the account is configured, for errors.
	place string
	// endpoint, clientID, secretDigest and tokenStorage are the
	// resolved settings, to compare two places that name one client id.
	endpoint     *url.URL
	clientID     string
	secretDigest string
	tokenStorage string
	// service is the Atlas service's paths.
	service atlasService

	poolKey    string
	tokens     *sharedTokenSource
	tokenStore *storageTokenStore // attached to tokens.stores
	metrics    *outboundMetrics
}

// resolveAccount resolves conf's placeholders and checks it.
func resolveAccount(conf Account) (a *account, secret string, err error) {
	repl := caddy.NewReplacer()
	endpoint := strings.TrimRight(repl.ReplaceKnown(conf.Endpoint, ""), "/")
	if endpoint == "" && conf.Endpoint != "" {
		return nil, "", placeholder.Empty("endpoint", conf.Endpoint)
	}
	if endpoint == "" {
		return nil, "", errors.New("endpoint is required while an outbound route is enabled: set endpoint, client_id and client_secret in the global atlas options or in the site's atlas block (or set extracts_path and upload_path to off for a callback-only gateway)")
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, "", fmt.Errorf("endpoint %q is not an absolute http(s) URL", endpoint)
	}
	clientID := repl.ReplaceKnown(conf.ClientID, "")
	secret = repl.ReplaceKnown(conf.ClientSecret, "")
	switch {
	case conf.ClientID == "" && conf.ClientSecret == "":
		return nil, "", errors.New("client_id and client_secret are empty; give them as {env.NAME} or {file.path} placeholders")
	case clientID == "":
		return nil, "", placeholder.Empty("client_id", conf.ClientID)
	case conf.ClientSecret == "":
		return nil, "", fmt.Errorf("client_secret is empty (client_id %q); give it as an {env.NAME} or {file.path} placeholder", clientID)
	case secret == "":
		return nil, "", fmt.Errorf("%w (client_id %q)", placeholder.Empty("client_secret", conf.ClientSecret), clientID)
	}
	if conf.TokenStorage != "" && conf.TokenStorage != tokenStorageOff {
		return nil, "", fmt.Errorf("token_storage must be empty (Caddy's storage) or %q, got %q", tokenStorageOff, conf.TokenStorage)
	}
	service, err := serviceName(conf.Service)
	if err != nil {
		return nil, "", err
	}
	digest := sha256.Sum256([]byte(secret))
	return &account{
		service:      atlasServices[service],
		endpoint:     u,
		clientID:     clientID,
		secretDigest: hex.EncodeToString(digest[:]),
		tokenStorage: conf.TokenStorage,
	}, secret, nil
}

// differs returns what o configures differently from a, "" if nothing:
// the name of the first setting that differs.
func (a *account) differs(o *account) string {
	switch {
	case a.endpoint.String() != o.endpoint.String():
		return "endpoint " + a.endpoint.Redacted() + " and " + o.endpoint.Redacted()
	case a.secretDigest != o.secretDigest:
		return "client_secret"
	case a.tokenStorage != o.tokenStorage:
		return "token_storage " + strconv.Quote(a.tokenStorage) + " and " + strconv.Quote(o.tokenStorage)
	case a.service.name != o.service.name:
		return "service " + a.service.name + " and " + o.service.name
	}
	return ""
}

// open takes the account's token source from the pool shared across
// config reloads, creating it on first use, and attaches this config's
// storage when the token is shared.
func (a *account) open(ctx caddy.Context, secret string, logger *zap.Logger) error {
	a.metrics = provisionOutboundMetrics(ctx.GetMetricsRegistry())

	// One token source and connection pool per endpoint and credentials,
	// shared by every handler and config that uses them, so a reload
	// neither re-authenticates nor strands connections. The key holds a
	// digest of the secret, never the secret itself.
	endpoint := a.endpoint.String()
	storage := contextStorage(ctx)
	shared := a.tokenStorage != tokenStorageOff && storage != nil
	// A token is good at its own service only: one source per service.
	poolKey := endpoint + "\x00" + a.clientID + "\x00" + a.secretDigest + "\x00" + strconv.FormatBool(shared) + "\x00" + a.service.name
	val, _, err := tokenSources.LoadOrNew(poolKey, func() (caddy.Destructor, error) {
		return newSharedTokenSource(endpoint, a.service.authToken, a.clientID, secret, shared, a.metrics, logger)
	})
	if err != nil {
		return err
	}
	a.poolKey = poolKey
	a.tokens = val.(*sharedTokenSource)
	if shared {
		// The token is shared through this config's storage.
		st, err := newStorageTokenStore(storage, a.storageEndpoint(), a.clientID, secret)
		if err != nil {
			return err
		}
		a.tokenStore = st
		a.tokens.stores.attach(st)
	}
	return nil
}

// storageEndpoint names the account's endpoint in the key of its stored
// token: the endpoint for docstream (as before there were services), the
// endpoint and the service otherwise, so that the two services' tokens
// are kept apart.
func (a *account) storageEndpoint() string {
	if a.service.name == ServiceDocstream {
		return a.endpoint.String()
	}
	return a.endpoint.String() + "\x00" + a.service.name
}

// release gives the token source back to the pool; the last config using
// it stops it. It is safe on an account that failed to open.
func (a *account) release() error {
	if a.tokenStore != nil {
		a.tokens.stores.detach(a.tokenStore)
		a.tokenStore = nil
	}
	if a.poolKey == "" {
		return nil
	}
	key := a.poolKey
	a.poolKey = ""
	_, err := tokenSources.Delete(key)
	return err
}

// transport returns the connections to Atlas that the routes using the
// account share.
func (a *account) transport() http.RoundTripper { return a.tokens.transport }
