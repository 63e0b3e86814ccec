package callback

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-atlas/caddy-atlas/internal/batchmetrics"
	"github.com/caddy-atlas/caddy-atlas/internal/httpjson"
	"github.com/caddy-atlas/caddy-atlas/internal/metricsreg"
	"github.com/caddy-atlas/caddy-atlas/internal/placeholder"
	"github.com/caddy-atlas/caddy-atlas/ledger"
	"github.com/caddy-atlas/caddy-atlas/mask"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/whsign"

	"github.com/caddy-atlas/caddy-atlas/callback/body"
	"github.com/caddy-atlas/caddy-atlas/callback/payload"
	"github.com/caddy-atlas/caddy-atlas/callback/token"
)

// Defaults of the callback route.
const (
	DefaultCallbackIssuer   = "caddy-atlas"
	DefaultCallbackAudience = "atlas-callback"
	DefaultCallbackTokenTTL = 15 * time.Minute
	DefaultCallbackLeeway   = 60 * time.Second
	DefaultCallbackMaxBody  = 32 << 20
)

// Headers the callback route sets for the next handler. Any client-supplied
// header starting with X-Atlas- is removed first.
const (
	headerAtlasSubject       = "X-Atlas-Subject"
	headerAtlasDocumentCount = "X-Atlas-Document-Count"
	headerAtlasCallbackID    = "X-Atlas-Callback-Id"
	headerAtlasPrefix        = "X-Atlas-"
)

// Callback is the route through which Atlas delivers extraction results:
// Atlas first authenticates at AuthPath (its auth_url) and receives a
// short-lived JWT, then POSTs the extraction payload to Path (its
// callback_url) with that token. A callback whose token verifies and
// whose payload is well-formed goes to the next handler with its body
// byte-for-byte as Atlas sent it, the token header removed, and these
// headers set:
//
//	X-Atlas-Subject         the token's sub (Atlas's client_id for tokens issued here)
//	X-Atlas-Document-Count  the number of documents in data[]
//	X-Atlas-Callback-Id     the first 32 hex digits of the SHA-256 of the body:
//	                        the same for a redelivery of the same payload, so
//	                        the app can process callbacks idempotently
//
// Tokens are accepted from the `Token` header or `Authorization: Bearer`,
// never from the query string or a cookie. Every token, whichever key
// signed it, must carry the configured issuer and audience and an exp.
// The accepted algorithms follow from the configured keys (HS256 for an
// HMAC secret, EdDSA for Ed25519, ES256 for ECDSA P-256, RS256 for RSA),
// never from the token; an HS256 token is only ever checked against the
// HMAC signing secret. Key ids (kid) are RFC 7638 JWK thumbprints,
// base64url-encoded, for every key, the HMAC secret included.
//
// Failed client authentications are counted per client address (an IPv6
// address by its /64): after 5 failures within 15 minutes the address is
// answered 429 with Retry-After, without checking its credentials, for
// 1s, then 2s, 4s... up to 30s after each further failure. A successful
// authentication clears the count. At most 10,000 addresses are tracked;
// the least recently failing are forgotten first.
type Callback struct {
	// The path of the callback_url, e.g. /hooks/atlas. Required.
	Path string `json:"path,omitempty"`

	// The path of the auth_url. Default: the callback path + "/auth".
	AuthPath string `json:"auth_path,omitempty"`

	// The client id Atlas must present at auth_path. Placeholders such as
	// {env.NAME} and {file.path} are resolved at provision time.
	ClientID string `json:"client_id,omitempty"`

	// The client secret Atlas must present at auth_path. Give it as an
	// {env.NAME} or {file.path} placeholder, resolved at provision time.
	ClientSecret string `json:"client_secret,omitempty"`

	// More client secrets accepted at auth_path besides ClientSecret, for
	// a rotation without downtime: add the new secret, give it to Atlas,
	// then remove the old one. Placeholders as for ClientSecret.
	ClientSecrets []string `json:"client_secrets,omitempty"`

	// The key that signs the tokens issued at auth_path: an HMAC secret of
	// at least 32 bytes, or a PEM private key (Ed25519, ECDSA P-256, or
	// RSA of at least 2048 bits), usually given as {file.path}.
	SigningKey string `json:"signing_key,omitempty"`

	// Keys that signed tokens before SigningKey, in the same forms: tokens
	// they signed still verify (until they expire), but they never sign.
	// For a rotation: the new key in SigningKey, the old one here, then,
	// once TokenTTL plus Leeway has passed, the old one removed.
	PreviousSigningKeys []string `json:"previous_signing_keys,omitempty"`

	// Standard Webhooks secrets (whsec_ and the base64 of a 24- to
	// 64-byte key), usually {file.path}: with any, every hand-off to the
	// app (synchronous, and each durable delivery attempt) carries
	// webhook-id (the callback id), webhook-timestamp and
	// webhook-signature, one v1 signature per secret over the body the
	// app receives. Two during a rotation.
	SignDeliveries []string `json:"sign_deliveries,omitempty"`

	// The iss of issued tokens, and the only one accepted. Default:
	// caddy-atlas.
	Issuer string `json:"issuer,omitempty"`

	// The aud of issued tokens, and the one every accepted token must
	// hold. Default: atlas-callback.
	Audience string `json:"audience,omitempty"`

	// The lifetime of issued tokens. Default: 15m.
	TokenTTL caddy.Duration `json:"token_ttl,omitempty"`

	// The clock skew allowed when checking exp, nbf and iat. Default
	// (and zero): 60s.
	Leeway caddy.Duration `json:"leeway,omitempty"`

	// PEM public keys (or certificates) of other issuers whose tokens are
	// also accepted, usually given as {file.path}. HMAC secrets are not
	// accepted here.
	VerifyKeys []string `json:"verify_keys,omitempty"`

	// The URL of a JWKS whose RSA, EC P-256 and Ed25519 keys are also
	// accepted. It is fetched in the background, refreshed hourly, and
	// refetched (at most every 30s) when a token names an unknown kid.
	JWKSURL string `json:"jwks_url,omitempty"`

	// The largest callback body accepted, in bytes; larger ones are
	// answered 413. Default: 32 MiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// Where the stored callbacks are POSTed: an absolute http(s) URL.
	// Setting it enables durable mode: a verified callback is stored in
	// the durable queue (Queue, or else the queue of the global atlas
	// options) before Atlas is answered 202 {"status": "accepted",
	// "callback_id": "..."}, and delivered here, at least once, by a
	// background worker; the next handler is not called. A callback
	// whose id is already stored or delivered within the queue's
	// retention is acknowledged without being stored or delivered again.
	// If the queue cannot store it, Atlas is answered 503 with
	// Retry-After. Each delivery carries the body as received, its
	// Content-Type, the X-Atlas-Subject, X-Atlas-Document-Count and
	// X-Atlas-Callback-Id headers, and X-Atlas-Attempt (from 1). A 2xx
	// answer marks the callback delivered; redirects are not followed.
	DeliverTo string `json:"deliver_to,omitempty"`

	// The durable queue of this route, a module of the atlas.queues
	// namespace: {"backend": "spool", "dir": "/var/lib/caddy/atlas", ...}
	// for a log on local disk, {"backend": "jetstream", "urls": [...],
	// ...} for a fleet's queue on NATS JetStream. Without it, durable
	// mode uses the queue of the global atlas options. Routes and configs
	// that name one queue share it, and a config reload keeps it.
	Queue json.RawMessage `json:"queue,omitempty" caddy:"namespace=atlas.queues inline_key=backend"`

	// Deprecated spellings of the queue's settings, accepted from JSON
	// configs written before the queue was a module: Spool is the
	// directory of a spool queue (`{"backend": "spool", "dir": ...}`),
	// the others are the settings of the same names of the queue
	// (MaxSpoolSize is a spool's max_size). Provision moves them into
	// Queue; the Caddyfile adapter writes Queue.
	Spool               string         `json:"spool,omitempty"`
	MaxAttempts         int            `json:"max_attempts,omitempty"`
	RetryBackoffMin     caddy.Duration `json:"retry_backoff_min,omitempty"`
	RetryBackoffMax     caddy.Duration `json:"retry_backoff_max,omitempty"`
	DeliveryTimeout     caddy.Duration `json:"delivery_timeout,omitempty"`
	Concurrency         int            `json:"concurrency,omitempty"`
	Retention           caddy.Duration `json:"retention,omitempty"`
	MaxSpoolSize        int64          `json:"max_spool_size,omitempty"`
	EncryptionKeys      []string       `json:"encryption_keys,omitempty"`
	DeadLetterRetention caddy.Duration `json:"dead_letter_retention,omitempty"`
	PurgeDelay          caddy.Duration `json:"purge_delay,omitempty"`

	// runtime state
	clientID     string
	idDigest     [sha256.Size]byte
	secretDigest [sha256.Size]byte
	hasSecret    bool
	signer       *token.Key
	verifyKeys   []*token.Key
	verifier     *token.Verifier
	jwks         *token.JWKS
	limiter      *failureLimiter
	// maxBody is the largest body accepted: MaxBody, or the queue's
	// limit if lower and MaxBody was left to its default (maxBodySet).
	maxBody    *atomic.Int64
	maxBodySet bool
	rejectLog  *rateLog
	metrics    *callbackMetrics
	logger     *zap.Logger
	cancel     context.CancelFunc
	now        func() time.Time

	// regulated data (regulated.go): the other accepted client secrets,
	// the hand-off's masker and signer
	moreSecretDigests [][sha256.Size]byte
	masker            *mask.Masker
	handoffSigner     *whsign.Signer

	// durable mode
	deliverTo string
	appQueue  queue.Backend // the atlas app's, if it has one
	backend   queue.Backend // the queue in use
	user      *queue.User   // the route, as the queue knows it
	// store holds the open queue, from Start; non-nil in durable mode.
	store *atomic.Pointer[storeRef]
	// jwksCtx is the context of the JWKS fetcher, which Start starts.
	jwksCtx  context.Context
	jwksOnce *sync.Once
	// ledgerOf returns the ledger of batches, when the atlas app keeps
	// one (nil before it opens).
	ledgerOf func() ledger.Store
	// ready is closed once store holds the open queue.
	ready     chan struct{}
	readyOnce *sync.Once
	// queueName names the durable queue in logs: the spool directory or
	// jetstream:<stream>.
	queueName string
}

// Provision resolves the secrets, applies the defaults, parses the keys,
// starts the JWKS fetcher and registers the metrics.
func (c *Callback) Provision(ctx caddy.Context, logger *zap.Logger) error {
	if logger == nil {
		logger = zap.NewNop()
	}
	c.logger = logger.Named("callback")
	if c.now == nil {
		c.now = time.Now
	}
	if c.AuthPath == "" && c.Path != "" {
		c.AuthPath = strings.TrimSuffix(c.Path, "/") + "/auth"
	}
	if c.Issuer == "" {
		c.Issuer = DefaultCallbackIssuer
	}
	if c.Audience == "" {
		c.Audience = DefaultCallbackAudience
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = caddy.Duration(DefaultCallbackTokenTTL)
	}
	if c.Leeway == 0 {
		c.Leeway = caddy.Duration(DefaultCallbackLeeway)
	}
	// A max_body left to its default fits the queue's limit, if lower
	// (see fitMaxBody); one that is set must fit.
	c.maxBodySet = c.MaxBody != 0
	if c.MaxBody == 0 {
		c.MaxBody = DefaultCallbackMaxBody
	}
	c.maxBody = new(atomic.Int64)
	c.maxBody.Store(c.MaxBody)

	repl := caddy.NewReplacer()
	c.clientID = repl.ReplaceKnown(c.ClientID, "")
	secret := repl.ReplaceKnown(c.ClientSecret, "")
	c.idDigest = sha256.Sum256([]byte(c.clientID))
	c.secretDigest = sha256.Sum256([]byte(secret))
	c.hasSecret = secret != ""
	c.moreSecretDigests = c.moreSecretDigests[:0]
	for i, v := range c.ClientSecrets {
		more := repl.ReplaceKnown(v, "")
		if more == "" {
			return placeholder.Empty(fmt.Sprintf("client_secrets[%d]", i), v)
		}
		c.moreSecretDigests = append(c.moreSecretDigests, sha256.Sum256([]byte(more)))
	}

	if raw := repl.ReplaceKnown(c.SigningKey, ""); raw != "" {
		k, err := token.ParseSigningKey(raw)
		if err != nil {
			return fmt.Errorf("signing_key: %w", err)
		}
		c.signer = k
	}
	c.verifyKeys = c.verifyKeys[:0]
	if c.signer != nil {
		c.verifyKeys = append(c.verifyKeys, c.signer)
	}
	if err := c.provisionRotation(repl); err != nil {
		return err
	}
	for i, v := range c.VerifyKeys {
		raw := repl.ReplaceKnown(v, "")
		if raw == "" {
			return placeholder.Empty(fmt.Sprintf("verify_keys[%d]", i), v)
		}
		k, err := token.ParseVerifyKey(raw)
		if err != nil {
			return fmt.Errorf("verify_keys[%d]: %w", i, err)
		}
		k.SetOrigin(fmt.Sprintf("verify_keys[%d]", i))
		if !token.ContainsKey(c.verifyKeys, k) {
			c.verifyKeys = append(c.verifyKeys, k)
		}
	}
	c.limiter = newFailureLimiter()
	c.rejectLog = &rateLog{every: rejectLogEvery}

	m, err := registerCallbackMetrics(ctx.GetMetricsRegistry())
	if err != nil {
		return err
	}
	if r := ctx.GetMetricsRegistry(); r != nil && c.ledgerOf != nil {
		// Only with a ledger of batches.
		metricsreg.Register(r, m.lateDuplicates)
		metricsreg.Register(r, m.unmatched)
		batchmetrics.Register(r)
	}
	c.metrics = m

	if c.JWKSURL != "" {
		u, err := url.Parse(repl.ReplaceKnown(c.JWKSURL, ""))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("jwks_url %q is not an absolute http(s) URL", c.JWKSURL)
		}
		if u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
			c.logger.Warn("jwks_url is plain HTTP: whoever can alter the traffic can add keys; use https",
				zap.String("jwks_url", u.String()))
		}
		fctx, cancel := context.WithCancel(ctx)
		c.cancel = cancel
		c.jwks = token.NewJWKS(u.String(), c.logger, func(result string) {
			m.jwksFetches.WithLabelValues(result).Inc()
		})
		c.jwks.SetClock(func() time.Time { return c.now() })
		// Fetched from Start: a config that is only validated connects
		// to nothing.
		c.jwksCtx, c.jwksOnce = fctx, new(sync.Once)
	}
	c.verifier = &token.Verifier{
		Issuer:   c.Issuer,
		Audience: c.Audience,
		Leeway:   time.Duration(c.Leeway),
		Keys:     c.verifyKeys,
		JWKS:     c.jwks,
		Now:      func() time.Time { return c.now() },
	}
	c.verifier.Init()
	return c.provisionDurable(ctx)
}

// Validate checks the provisioned configuration; it changes nothing.
func (c *Callback) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("path is required")
	case !strings.HasPrefix(c.Path, "/"):
		return fmt.Errorf("path %q must start with /", c.Path)
	case !strings.HasPrefix(c.AuthPath, "/"):
		return fmt.Errorf("auth_path %q must start with /", c.AuthPath)
	case c.AuthPath == c.Path:
		return fmt.Errorf("auth_path and path are the same path %q", c.Path)
	case c.clientID == "" && c.ClientID != "":
		return placeholder.Empty("client_id", c.ClientID)
	case c.clientID == "":
		return errors.New("client_id is empty")
	case !c.hasSecret && c.ClientSecret != "":
		return placeholder.Empty("client_secret", c.ClientSecret)
	case !c.hasSecret:
		return errors.New("client_secret is empty; give it as an {env.NAME} or {file.path} placeholder")
	case c.signer == nil && c.SigningKey != "":
		return placeholder.Empty("signing_key", c.SigningKey)
	case c.signer == nil:
		return errors.New("signing_key is empty; give it as an {env.NAME} or {file.path} placeholder")
	case c.Issuer == "":
		return errors.New("issuer is empty")
	case c.Audience == "":
		return errors.New("audience is empty")
	case c.TokenTTL <= 0:
		return errors.New("token_ttl must be positive")
	case c.Leeway < 0:
		return errors.New("leeway must not be negative")
	case c.MaxBody < 0:
		return errors.New("max_body must not be negative")
	}
	for _, k := range c.verifyKeys {
		if err := k.CheckStrength(); err != nil {
			return fmt.Errorf("%s: %w", k.Origin(), err)
		}
	}
	return c.validateDurable()
}

// Cleanup stops the JWKS fetcher and releases the spool. It is safe
// after a failed provision.
func (c *Callback) Cleanup() error {
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
	return c.cleanupDurable()
}

// ServeCallback serves the callback_url. The checks run in this order, so
// that an unauthenticated caller never makes the server read a body:
// method (405), token (401), content type (415), size (413), payload (400).
// A request without a token is answered a challenge without an error
// code, one with a token that does not verify `invalid_token` (RFC 6750,
// 3.1); see refuseToken.
// A callback that passes them goes to the next handler, or, in durable
// mode, to the spool (see spoolCallback).
func (c *Callback) ServeCallback(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.Method != http.MethodPost {
		return httpjson.MethodNotAllowed(w, http.MethodPost)
	}

	start := time.Now()
	subject, err := c.verifyRequest(r)
	c.metrics.verifySeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		c.metrics.callbacks.WithLabelValues(outcomeUnauthorized).Inc()
		return c.refuseToken(w, r, err)
	}

	if ct := r.Header.Get("Content-Type"); !httpjson.IsJSONMediaType(ct) {
		c.metrics.callbacks.WithLabelValues(outcomeInvalid).Inc()
		if ce := c.logger.Check(zapcore.DebugLevel, "callback rejected: content type"); ce != nil {
			ce.Write(zap.String("content_type", truncateForLog(ct, 100)), zap.String("subject", subject))
		}
		return httpjson.WriteError(w, http.StatusUnsupportedMediaType, "the callback body must be JSON (Content-Type: application/json)")
	}

	cb, err := c.readBody(w, r)
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			c.metrics.callbacks.WithLabelValues(outcomeTooLarge).Inc()
			if ce := c.logger.Check(zapcore.DebugLevel, "callback rejected: body too large"); ce != nil {
				ce.Write(zap.Int64("max_body", c.maxBody.Load()), zap.Int64("content_length", r.ContentLength))
			}
			return httpjson.WriteError(w, http.StatusRequestEntityTooLarge,
				"the callback body is larger than "+strconv.FormatInt(c.maxBody.Load(), 10)+" bytes")
		}
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading the callback body: %w", err))
	}
	defer cb.Release()
	body := cb.Bytes()
	c.metrics.payloadBytes.Observe(float64(len(body)))

	docs, err := payload.Validate(body)
	if err != nil {
		c.metrics.callbacks.WithLabelValues(outcomeInvalid).Inc()
		if ce := c.logger.Check(zapcore.DebugLevel, "callback rejected: payload"); ce != nil {
			ce.Write(zap.Error(err), zap.String("subject", subject), zap.Int("bytes", len(body)))
		}
		return httpjson.WriteError(w, http.StatusBadRequest, err.Error())
	}

	id := ID(body)
	count := strconv.Itoa(docs)

	// The id is that of the body as Atlas sent it; the app sees it
	// masked, if the handler masks fields.
	raw := body
	body, releaseMasked, err := c.maskBody(body)
	defer func() { releaseMasked() }()
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("masking callback %s: %w", id, err))
	}

	// The app sees the body without the token, and only the X-Atlas-*
	// headers set here (and the webhook-* ones, when signing).
	hdr := r.Header
	hdr.Del("Token")
	hdr.Del("Authorization")
	for name := range hdr {
		if strings.HasPrefix(name, headerAtlasPrefix) || strings.HasPrefix(http.CanonicalHeaderKey(name), headerAtlasPrefix) {
			delete(hdr, name)
		}
	}
	hdr.Set(headerAtlasSubject, subject)
	hdr.Set(headerAtlasDocumentCount, count)
	hdr.Set(headerAtlasCallbackID, id)

	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok && repl != nil {
		// A provider rather than three Sets: it costs one closure, not
		// a map's growth, and only placeholders that are used are read.
		// Should the route run twice on one request (an error route),
		// the first values stay; they are those of the same body.
		repl.Map(func(key string) (any, bool) {
			switch key {
			case "http.atlas.callback.id":
				return id, true
			case "http.atlas.callback.subject":
				return subject, true
			case "http.atlas.callback.document_count":
				return docs, true
			}
			return nil, false
		})
	}

	if c.store != nil {
		if c.ledgerOf != nil {
			return c.spoolWithLedger(w, r, id, subject, raw, body)
		}
		return c.spoolCallback(w, r, id, subject, count, body)
	}

	if c.masker != nil {
		r.Body, r.GetBody = bodyReader(body)
		// The next handler's transport may still be writing the body
		// after it returns (see package body): the masked buffer is left
		// to the garbage collector, never put back in the pool for the
		// next callback to overwrite.
		releaseMasked = func() {}
	} else {
		r.Body, _ = cb.Reader() // cannot fail before cb.Release
		r.GetBody = cb.Reader
	}
	c.signHandoff(hdr, id, body)
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	hdr.Set("Content-Length", strconv.Itoa(len(body)))

	c.metrics.callbacks.WithLabelValues(outcomeAccepted).Inc()
	if ce := c.logger.Check(zapcore.DebugLevel, "callback accepted"); ce != nil {
		ce.Write(zap.String("callback_id", id), zap.String("subject", subject),
			zap.Int("documents", docs), zap.Int("bytes", len(body)))
	}
	return next.ServeHTTP(w, r)
}

// readBody reads the whole body, at most MaxBody bytes, into one buffer.
func (c *Callback) readBody(w http.ResponseWriter, r *http.Request) (*body.Buffer, error) {
	limit := c.maxBody.Load()
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	return body.Read(w, r.Body, r.ContentLength, limit)
}

// ID is the id of a callback: the first 32 hex digits (128 bits)
// of the SHA-256 of its body, so a redelivery of the same payload has the
// same id.
func ID(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:16])
}

// isLoopbackHost reports whether host is localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Outcomes of a callback, the label of the callbacks counter.
const (
	outcomeAccepted     = "accepted"
	outcomeUnauthorized = "unauthorized"
	outcomeInvalid      = "invalid"
	outcomeTooLarge     = "too_large"
	// Durable mode: outcomeAccepted once spooled, or one of these.
	outcomeDuplicate   = "duplicate"
	outcomeUnavailable = "unavailable"
)
