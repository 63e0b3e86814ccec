package atlasclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults of TokenOptions.
const (
	DefaultRefreshBefore = 0.25
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = time.Minute
	DefaultHTTPTimeout   = 30 * time.Second
)

// The authtoken paths of Atlas's two services: the docstream API (the
// default) and the bulk service, whose tokens are good at their own
// service only.
const (
	DocstreamAuthTokenPath = "/v1/docstream/authtoken"
	BulkAuthTokenPath      = "/v1/bulk/authtoken"
)

// fetchAttempts bounds the authtoken calls of one refresh.
const fetchAttempts = 3

// maxTokenBody bounds how much of an authtoken response is read.
const maxTokenBody = 1 << 20

// Outcomes reported to TokenObserver.TokenFetched.
const (
	OutcomeSuccess             = "success"
	OutcomeCredentialsRejected = "credentials_rejected"
	OutcomeError               = "error"
)

// TokenOptions configures a TokenSource.
type TokenOptions struct {
	// Endpoint is the Atlas base URL, such as
	// https://docstream.dev.kreditmind.com. A trailing slash and a path
	// prefix are tolerated; user info, a query or a fragment are not.
	Endpoint string
	// AuthTokenPath is the path of the authtoken endpoint under
	// Endpoint: DocstreamAuthTokenPath (the default) or
	// BulkAuthTokenPath.
	AuthTokenPath string
	// ClientID and ClientSecret are the credentials sent to authtoken.
	ClientID     string
	ClientSecret string
	// HTTPClient makes the authtoken calls. Default: a client with a 30s
	// timeout. Redirects are never followed, whatever the client's
	// CheckRedirect: the credentials must not travel elsewhere.
	HTTPClient *http.Client
	// RefreshBefore is the fraction of a token's lifetime that must remain
	// when a background refresh starts, in (0, 1). Default 0.25: a 3600s
	// token is refreshed after 45 minutes.
	RefreshBefore float64
	// MinBackoff and MaxBackoff bound the exponential backoff, with jitter,
	// between failed authtoken calls and the cooldown after a failed
	// refresh. Defaults 1s and 1m.
	MinBackoff, MaxBackoff time.Duration
	// Now is the clock that decides expiry, refresh and cooldown.
	// Default time.Now.
	Now func() time.Time
	// Observer, if not nil, is told about every authtoken call. If it
	// also implements SharedTokenObserver, it is told about Shared too.
	Observer TokenObserver
	// Shared, if not nil, is a token store shared with other sources,
	// typically the other instances of a fleet: a refresh takes the
	// shared token when it is usable, and calls authtoken only under the
	// store's lock, storing the new token for the others. See
	// SharedTokenStore.
	Shared SharedTokenStore
}

// TokenObserver receives optional hooks, for metrics. Its methods may be
// called concurrently.
type TokenObserver interface {
	// TokenFetched is called after each authtoken call with its outcome
	// (OutcomeSuccess, OutcomeCredentialsRejected or OutcomeError) and
	// how long it took.
	TokenFetched(outcome string, took time.Duration)
}

// RefusalObserver is implemented by a TokenObserver that also wants to
// hear when a cached token is invalidated (Atlas answered 401 to it).
type RefusalObserver interface {
	// TokenRefused is called by Invalidate, outside the source's lock,
	// with how long ago the dropped token was issued and how long it
	// still had to live. A token refused early in its life was revoked:
	// by an operator, or, when Atlas keeps one live token per client, by
	// a token issued to another instance.
	TokenRefused(age, remaining time.Duration)
}

// Token is an Atlas access token.
type Token struct {
	// Value is the token sent in the Token header.
	Value string
	// IssuedAt is when the token was requested, by the source's clock.
	IssuedAt time.Time
	// Expiry is when the token stops being usable, by the source's clock.
	Expiry time.Time
}

// String describes t without revealing its value.
func (t Token) String() string {
	if t.Value == "" {
		return "atlas token (none)"
	}
	return "atlas token (expires " + t.Expiry.Format(time.RFC3339) + ")"
}

// validAt reports whether t may be used at now.
func (t Token) validAt(now time.Time) bool {
	return t.Value != "" && now.Before(t.Expiry)
}

// refreshAt is when t enters its refresh window, the last fraction
// before of its lifetime.
func (t Token) refreshAt(before float64) time.Time {
	lifetime := t.Expiry.Sub(t.IssuedAt)
	return t.Expiry.Add(-time.Duration(float64(lifetime) * before))
}

// TokenSource fetches Atlas access tokens, caches them, and refreshes them
// in the background before they expire. At most one authtoken call is in
// flight at any time, however many goroutines ask for a token. It is safe
// for concurrent use.
type TokenSource struct {
	url           string
	clientID      string
	secret        string
	hc            *http.Client
	refreshBefore float64
	minBackoff    time.Duration
	maxBackoff    time.Duration
	now           func() time.Time
	observer      TokenObserver
	shared        SharedTokenStore
	sharedObs     SharedTokenObserver // nil unless observer implements it

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	tok       Token
	inflight  *fetchCall // the refresh in progress, if any
	lastErr   error      // of the last failed refresh, ready to return
	coolUntil time.Time  // no refresh starts before then
	failures  int        // consecutive failed refreshes
	rejected  string     // the last value passed to Invalidate
	closed    bool
}

// fetchCall is one refresh, awaited by the callers that have no valid token.
type fetchCall struct {
	done chan struct{}
	tok  Token
	err  error
	// ctx is the context of the authtoken calls: see fetchContext.
	ctx     context.Context
	release context.CancelFunc
}

// NewTokenSource validates opts and returns a TokenSource. It starts
// nothing: the first call to Token fetches the first token.
func NewTokenSource(opts TokenOptions) (*TokenSource, error) {
	base, err := parseEndpoint(opts.Endpoint)
	if err != nil {
		return nil, err
	}
	if opts.ClientID == "" {
		return nil, errors.New("atlas: client id is empty")
	}
	if opts.ClientSecret == "" {
		return nil, errors.New("atlas: client secret is empty")
	}
	path := opts.AuthTokenPath
	if path == "" {
		path = DocstreamAuthTokenPath
	}
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("atlas: authtoken path %q must be an absolute path without a query", path)
	}
	s := &TokenSource{
		url:           endpointURL(base, path, nil),
		clientID:      opts.ClientID,
		secret:        opts.ClientSecret,
		hc:            opts.HTTPClient,
		refreshBefore: opts.RefreshBefore,
		minBackoff:    opts.MinBackoff,
		maxBackoff:    opts.MaxBackoff,
		now:           opts.Now,
		observer:      opts.Observer,
		shared:        opts.Shared,
	}
	s.sharedObs, _ = opts.Observer.(SharedTokenObserver)
	if s.hc == nil {
		s.hc = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	s.hc = withoutRedirects(s.hc)
	if s.refreshBefore == 0 {
		s.refreshBefore = DefaultRefreshBefore
	}
	if s.refreshBefore <= 0 || s.refreshBefore >= 1 {
		return nil, fmt.Errorf("atlas: refresh before must be in (0, 1), got %v", s.refreshBefore)
	}
	if s.minBackoff <= 0 {
		s.minBackoff = DefaultMinBackoff
	}
	if s.maxBackoff <= 0 {
		s.maxBackoff = max(DefaultMaxBackoff, s.minBackoff)
	}
	if s.maxBackoff < s.minBackoff {
		return nil, fmt.Errorf("atlas: max backoff %v is less than min backoff %v", s.maxBackoff, s.minBackoff)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// ClientID returns the client id the source authenticates as.
func (s *TokenSource) ClientID() string {
	return s.clientID
}

// Token returns a valid token. A cached token is returned at once; when it
// has entered its refresh window, one background refresh is started. When
// no valid token is cached, Token waits for the one refresh in flight (or
// starts it), or until ctx ends. After a failed refresh, and until its
// cooldown has passed, Token returns that failure at once instead of
// calling authtoken again. Errors are a *CredentialsError when Atlas
// rejected the credentials, ErrClosed after Close, ctx's error, or else
// wrap ErrTokenUnavailable.
func (s *TokenSource) Token(ctx context.Context) (Token, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Token{}, ErrClosed
	}
	now := s.now()
	if s.tok.validAt(now) {
		tok := s.tok
		if !now.Before(s.refreshAt()) && s.inflight == nil && !now.Before(s.coolUntil) {
			s.startLocked(ctx)
		}
		s.mu.Unlock()
		return tok, nil
	}
	c := s.inflight
	if c == nil {
		if s.lastErr != nil && now.Before(s.coolUntil) {
			err := s.lastErr
			s.mu.Unlock()
			return Token{}, err
		}
		if err := ctx.Err(); err != nil {
			s.mu.Unlock()
			return Token{}, err
		}
		c = s.startLocked(ctx)
	}
	s.mu.Unlock()

	select {
	case <-c.done:
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
	if c.err != nil {
		return Token{}, c.err
	}
	if !c.tok.validAt(s.now()) {
		return Token{}, fmt.Errorf("%w: the new token expired before it could be used", ErrTokenUnavailable)
	}
	return c.tok, nil
}

// Invalidate drops the cached token if its value is still value, so that
// the next Token call fetches a new one. Use it when Atlas answered 401 to
// that token. With a Shared store, the next refresh does not take value
// from the store either: it calls authtoken, under the store's lock,
// unless another source has already replaced value there, and stores the
// new token in its place, so that the rejection holds for the fleet.
func (s *TokenSource) Invalidate(value string) {
	if value == "" {
		return
	}
	s.mu.Lock()
	s.rejected = value
	dropped := s.tok
	if dropped.Value != value {
		s.mu.Unlock()
		return
	}
	s.tok = Token{}
	now := s.now()
	s.mu.Unlock()
	if o, ok := s.observer.(RefusalObserver); ok {
		o.TokenRefused(now.Sub(dropped.IssuedAt), dropped.Expiry.Sub(now))
	}
}

// Close cancels any refresh in flight and waits for it to end. Token
// returns ErrClosed afterwards. Close is idempotent.
func (s *TokenSource) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.tok = Token{}
		s.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// refreshAt is when the cached token enters its refresh window.
func (s *TokenSource) refreshAt() time.Time {
	return s.tok.refreshAt(s.refreshBefore)
}

// fetchContext returns the context of a refresh that a call with trigger
// starts: it carries trigger's values (a trace span, say, so that the
// authtoken call is traced within the request that caused it) but not its
// deadline or cancellation, since the refresh serves every caller; it is
// cancelled when the source is closed, or by the returned function.
func (s *TokenSource) fetchContext(trigger context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(trigger))
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// startLocked starts a refresh. s.mu must be held, no refresh may be in
// flight, and the source must not be closed.
func (s *TokenSource) startLocked(trigger context.Context) *fetchCall {
	c := &fetchCall{done: make(chan struct{})}
	c.ctx, c.release = s.fetchContext(trigger)
	s.inflight = c
	s.wg.Add(1)
	go s.refresh(c)
	return c
}

// refresh runs one refresh and publishes its result.
func (s *TokenSource) refresh(c *fetchCall) {
	defer s.wg.Done()
	defer c.release()
	var (
		tok        Token
		retryAfter time.Duration
		stored     bool
		err        error
	)
	for range sharedAttempts {
		tok, retryAfter, stored, err = s.obtain(c.ctx)
		// A token taken from the shared store may have been rejected
		// (Invalidate) while it was being read: take another. A token
		// authtoken has just answered is Atlas's word, even if it is the
		// value rejected before (an authtoken that reissues a live token).
		if err != nil || !stored || tok.Value != s.rejectedValue() {
			break
		}
		tok, err = Token{}, fmt.Errorf("%w: the shared token was rejected", ErrTokenUnavailable)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight = nil
	switch {
	case s.closed:
		tok, err = Token{}, ErrClosed
	case err == nil:
		s.tok = tok
		s.failures = 0
		s.lastErr = nil
		s.coolUntil = time.Time{}
	default:
		s.failures++
		cool := max(s.backoff(s.failures), min(retryAfter, s.maxBackoff))
		s.coolUntil = s.now().Add(cool)
		s.lastErr = err
	}
	c.tok, c.err = tok, err
	close(c.done)
}

// fetchWithRetry calls authtoken up to fetchAttempts times, backing off
// between transient failures. It returns the Retry-After of the last
// failure, if any, and an error ready for Token to return.
func (s *TokenSource) fetchWithRetry(ctx context.Context) (Token, time.Duration, error) {
	for attempt := 1; ; attempt++ {
		tok, err := s.fetch(ctx)
		if err == nil {
			return tok, 0, nil
		}
		var retryAfter time.Duration
		var se *statusError
		if errors.As(err, &se) {
			retryAfter = se.retryAfter
		}
		var ce *CredentialsError
		if errors.As(err, &ce) {
			return Token{}, retryAfter, err
		}
		if s.ctx.Err() != nil {
			return Token{}, 0, ErrClosed
		}
		if attempt >= fetchAttempts || !transient(err) {
			return Token{}, retryAfter, fmt.Errorf("%w: %w", ErrTokenUnavailable, err)
		}
		t := time.NewTimer(max(s.backoff(attempt), min(retryAfter, s.maxBackoff)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return Token{}, 0, ErrClosed
		}
	}
}

// backoff returns the wait after the n-th consecutive failure (n >= 1):
// MinBackoff doubled n-1 times, capped at MaxBackoff, with equal jitter.
func (s *TokenSource) backoff(n int) time.Duration {
	d := s.minBackoff
	for i := 1; i < n && d < s.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.maxBackoff)
	half := d / 2
	return half + rand.N(d-half+1)
}

// fetch makes one authtoken call.
func (s *TokenSource) fetch(ctx context.Context) (Token, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, http.NoBody)
	if err != nil {
		return Token{}, err
	}
	req.Header.Set("Client-Id", s.clientID)
	req.Header.Set("Client-Secret", s.secret)
	req.Header.Set("Accept", "application/json")

	start := time.Now()
	issued := s.now()
	resp, err := s.hc.Do(req)
	if err != nil {
		s.observe(OutcomeError, start)
		return Token{}, err
	}
	defer resp.Body.Close()
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody))

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		apiErr := ParseAPIError(resp.StatusCode, body)
		apiErr.Message = s.redact(apiErr.Message)
		apiErr.Code = s.redact(apiErr.Code)
		if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnauthorized {
			s.observe(OutcomeCredentialsRejected, start)
			return Token{}, &CredentialsError{ClientID: s.clientID, StatusCode: resp.StatusCode, Message: apiErr.Message}
		}
		s.observe(OutcomeError, start)
		return Token{}, &statusError{api: apiErr, retryAfter: s.retryAfter(resp.Header.Get("Retry-After"))}
	}
	if readErr != nil {
		s.observe(OutcomeError, start)
		return Token{}, fmt.Errorf("reading authtoken response: %w", readErr)
	}
	tok, err := parseToken(body, issued)
	if err != nil {
		s.observe(OutcomeError, start)
		return Token{}, err
	}
	s.observe(OutcomeSuccess, start)
	return tok, nil
}

func (s *TokenSource) observe(outcome string, start time.Time) {
	if s.observer != nil {
		s.observer.TokenFetched(outcome, time.Since(start))
	}
}

// redact removes the client secret from text that came from the server.
func (s *TokenSource) redact(text string) string {
	return strings.ReplaceAll(text, s.secret, "[redacted]")
}

// retryAfter parses a Retry-After header, in seconds or as an HTTP date.
func (s *TokenSource) retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(s.now()), 0)
	}
	return 0
}

// parseToken reads an authtoken response body. The lifetime comes from
// expires_in (seconds, a number or a numeric string) or, when that is
// absent or zero, from the exp claim of the token read as an unverified JWT.
func parseToken(body []byte, issued time.Time) (Token, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return Token{}, errors.New("authtoken response body is empty")
	}
	var r struct {
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return Token{}, errors.New("authtoken response is not the expected JSON object")
	}
	if r.AccessToken == "" {
		return Token{}, errors.New("authtoken response has no access_token")
	}
	lifetime, err := parseExpiresIn(r.ExpiresIn)
	if err != nil {
		return Token{}, err
	}
	tok := Token{Value: r.AccessToken, IssuedAt: issued, Expiry: issued.Add(lifetime)}
	if lifetime == 0 {
		exp, ok := jwtExpiry(r.AccessToken)
		if !ok {
			return Token{}, errors.New("authtoken response has neither expires_in nor a JWT exp claim")
		}
		tok.Expiry = exp
	}
	if !tok.Expiry.After(issued) {
		return Token{}, errors.New("authtoken returned a token that has already expired")
	}
	return tok, nil
}

// parseExpiresIn reads expires_in; absent, null and 0 all give 0.
func parseExpiresIn(raw json.RawMessage) (time.Duration, error) {
	v := strings.Trim(string(bytes.TrimSpace(raw)), `"`)
	if v == "" || v == "null" {
		return 0, nil
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || !(secs >= 0 && secs <= 1e9) { // NaN included
		return 0, errors.New("authtoken response has an invalid expires_in")
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// jwtExpiry reads the exp claim of value, without verifying anything.
func jwtExpiry(value string) (time.Time, bool) {
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(value, claims); err != nil {
		return time.Time{}, false
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return time.Time{}, false
	}
	return exp.Time, true
}

// statusError is a non-2xx authtoken answer other than 400 and 401.
type statusError struct {
	api        *APIError
	retryAfter time.Duration
}

func (e *statusError) Error() string {
	return fmt.Sprintf("authtoken answered %d: %s", e.api.StatusCode, e.api.Message)
}

func (e *statusError) Unwrap() error { return e.api }

// transient reports whether a failed authtoken call is worth retrying
// within the same refresh.
func transient(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		code := se.api.StatusCode
		return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
	}
	// Network errors and unusable bodies.
	return true
}

// parseEndpoint validates an Atlas base URL.
func parseEndpoint(endpoint string) (*url.URL, error) {
	if endpoint == "" {
		return nil, errors.New("atlas: endpoint is empty")
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("atlas: invalid endpoint: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("atlas: endpoint %q must be an http or https URL", endpoint)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("atlas: endpoint %q has no host", endpoint)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("atlas: endpoint %q must not have user info, a query or a fragment", u.Redacted())
	}
	return u, nil
}

// endpointURL joins base and path, which starts with a slash, and adds q.
func endpointURL(base *url.URL, path string, q url.Values) string {
	u := *base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawPath = ""
	u.RawQuery = q.Encode()
	return u.String()
}
