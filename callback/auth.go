package callback

import (
	"container/list"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-atlas/caddy-atlas/internal/httpjson"
)

// maxCallbackAuthBody bounds the body of an auth request.
const maxCallbackAuthBody = 64 << 10

// callbackAuthResponse is the auth_path's answer, in Atlas's own token shape.
type callbackAuthResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// ServeAuth serves the auth_url: it checks the client credentials Atlas
// presents and answers a token for the callback route.
func (c *Callback) ServeAuth(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return httpjson.MethodNotAllowed(w, http.MethodPost)
	}
	addr := callbackClientKey(r)
	now := c.now()
	if wait := c.limiter.wait(addr, now); wait > 0 {
		c.metrics.authFailures.WithLabelValues("throttled").Inc()
		secs := int64(math.Ceil(wait.Seconds()))
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		return httpjson.WriteError(w, http.StatusTooManyRequests,
			"too many failed authentication attempts; retry in "+strconv.FormatInt(secs, 10)+"s")
	}

	id, secret, via := callbackCredentials(w, r)
	if !c.checkCredentials(id, secret) {
		c.limiter.fail(addr, now)
		c.metrics.authFailures.WithLabelValues("invalid_credentials").Inc()
		if ce := c.logger.Check(zapcore.DebugLevel, "callback auth refused: invalid client credentials"); ce != nil {
			ce.Write(zap.String("via", via), zap.Bool("credentials_presented", id != "" || secret != ""),
				zap.String("remote_ip", callbackClientIP(r)))
		}
		return httpjson.WriteError(w, http.StatusUnauthorized, "invalid client credentials")
	}
	c.limiter.reset(addr)

	tok, err := c.issueToken(now)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("signing a callback token: %w", err))
	}
	c.metrics.tokensIssued.Inc()
	body, _ := json.Marshal(callbackAuthResponse{
		AccessToken: tok,
		TokenType:   "Bearer",
		ExpiresIn:   int64(time.Duration(c.TokenTTL) / time.Second),
	})
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Pragma", "no-cache")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// checkCredentials compares the presented credentials with the configured
// ones in constant time: both are hashed to fixed-length digests and every
// comparison always runs (the id, and the secret against each accepted
// secret), so a wrong id and a wrong secret take the same time, whichever
// secret would have matched.
func (c *Callback) checkCredentials(id, secret string) bool {
	idSum := sha256.Sum256([]byte(id))
	secretSum := sha256.Sum256([]byte(secret))
	secretOK := subtle.ConstantTimeCompare(secretSum[:], c.secretDigest[:])
	for i := range c.moreSecretDigests {
		secretOK |= subtle.ConstantTimeCompare(secretSum[:], c.moreSecretDigests[i][:])
	}
	ok := subtle.ConstantTimeCompare(idSum[:], c.idDigest[:]) & secretOK
	return ok == 1 && c.hasSecret && c.clientID != ""
}

// callbackCredentials returns the client credentials of an auth request and
// how they were presented: Client-Id/Client-Secret headers, HTTP Basic,
// or a JSON or form body with client_id/client_secret. Basic credentials
// are taken as they are, not form-decoded.
func callbackCredentials(w http.ResponseWriter, r *http.Request) (id, secret, via string) {
	if r.Header.Get("Client-Id") != "" || r.Header.Get("Client-Secret") != "" {
		return r.Header.Get("Client-Id"), r.Header.Get("Client-Secret"), "headers"
	}
	if id, secret, ok := r.BasicAuth(); ok {
		return id, secret, "basic"
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/json":
		var body struct {
			ClientID     string `json:"client_id"`
			ClientSecret string `json:"client_secret"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, maxCallbackAuthBody)).Decode(&body); err != nil {
			return "", "", "json"
		}
		return body.ClientID, body.ClientSecret, "json"
	case "application/x-www-form-urlencoded":
		r.Body = http.MaxBytesReader(w, r.Body, maxCallbackAuthBody)
		if err := r.ParseForm(); err != nil {
			return "", "", "form"
		}
		// PostForm only: credentials in the query string are ignored.
		return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"), "form"
	}
	return "", "", "none"
}

// callbackClientIP returns the client's address as Caddy's server determined it
// (trusted proxies considered), or else the connection's peer.
func callbackClientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// callbackClientKey is the key under which failed authentications are
// counted: the client's IPv4 address, or the /64 of its IPv6 address.
func callbackClientKey(r *http.Request) string {
	ip := callbackClientIP(r)
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}

// Policy of the failure limiter.
const (
	authFreeFailures = 5
	authBaseDelay    = time.Second
	authMaxDelay     = 30 * time.Second
	authFailureTTL   = 15 * time.Minute
	authMaxTracked   = 10000
)

// failureLimiter counts failed authentications per client address. After
// authFreeFailures failures, an address is refused for a delay that
// doubles with each further failure, from authBaseDelay to authMaxDelay.
// An address is forgotten authFailureTTL after its last failure, on
// success, or when more than authMaxTracked addresses are tracked (least
// recently failing first), so its memory is bounded.
type failureLimiter struct {
	mu      sync.Mutex
	entries map[string]*list.Element
	order   *list.List // front: most recent failure
	max     int
}

type failureEntry struct {
	key      string
	failures int
	last     time.Time
	until    time.Time
}

func newFailureLimiter() *failureLimiter {
	return &failureLimiter{
		entries: make(map[string]*list.Element),
		order:   list.New(),
		max:     authMaxTracked,
	}
}

// wait returns how long key is still refused, or 0.
func (l *failureLimiter) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.entries[key]
	if !ok {
		return 0
	}
	e := el.Value.(*failureEntry)
	if now.Sub(e.last) > authFailureTTL {
		l.remove(el)
		return 0
	}
	if d := e.until.Sub(now); d > 0 {
		return d
	}
	return 0
}

// fail records a failure of key.
func (l *failureLimiter) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var e *failureEntry
	if el, ok := l.entries[key]; ok {
		e = el.Value.(*failureEntry)
		if now.Sub(e.last) > authFailureTTL {
			e.failures = 0
		}
		l.order.MoveToFront(el)
	} else {
		e = &failureEntry{key: key}
		l.entries[key] = l.order.PushFront(e)
	}
	e.failures++
	e.last = now
	if over := e.failures - authFreeFailures; over > 0 {
		delay := authMaxDelay
		if over <= 6 {
			delay = min(authBaseDelay<<(over-1), authMaxDelay)
		}
		e.until = now.Add(delay)
	}
	for l.order.Len() > l.max {
		l.remove(l.order.Back())
	}
	// Entries past their TTL at the back are dropped early.
	for back := l.order.Back(); back != nil && now.Sub(back.Value.(*failureEntry).last) > authFailureTTL; back = l.order.Back() {
		l.remove(back)
	}
}

// reset forgets key.
func (l *failureLimiter) reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.entries[key]; ok {
		l.remove(el)
	}
}

func (l *failureLimiter) remove(el *list.Element) {
	l.order.Remove(el)
	delete(l.entries, el.Value.(*failureEntry).key)
}

// len returns the number of tracked addresses.
func (l *failureLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}
