package callback

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/callback/token"
	"github.com/caddy-atlas/caddy-atlas/internal/httpjson"
)

// verifyRequest verifies the token of a callback and returns its subject.
// A token that verified within token.CacheTTL is taken from the cache.
func (c *Callback) verifyRequest(r *http.Request) (string, error) {
	raw, err := token.FromRequest(r)
	if err != nil {
		return "", err
	}
	return c.verifier.Subject(r.Context(), raw)
}

// callbackRealm is the realm of the callback route's Bearer challenge.
const callbackRealm = "atlas-callback"

// refuseToken answers 401 to a callback whose token err refused, per RFC
// 6750: a request without a token (none, or credentials of another
// scheme) gets a challenge without an error code and is told a token is
// required; a token that does not verify gets error="invalid_token". The
// reason is logged at info level, at most once per reason every
// rejectLogEvery with the count of those held back, never the token.
func (c *Callback) refuseToken(w http.ResponseWriter, r *http.Request, err error) error {
	reason := token.FailureReason(err)
	if ok, held := c.rejectLog.allow(reason, c.now()); ok {
		c.logger.Info("callback rejected: token", zap.String("reason", reason), zap.Error(err),
			zap.String("remote_ip", callbackClientIP(r)), zap.Int("suppressed", held))
	}
	if errors.Is(err, token.ErrNoToken) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+callbackRealm+`"`)
		return httpjson.WriteError(w, http.StatusUnauthorized,
			"a token is required: send the token issued at "+c.AuthPath+" in the Token header or as Authorization: Bearer")
	}
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	return httpjson.WriteError(w, http.StatusUnauthorized, "invalid or expired token")
}

// verifyToken verifies a token's signature and claims, without the
// cache of verified tokens.
func (c *Callback) verifyToken(ctx context.Context, raw string) (*jwt.RegisteredClaims, error) {
	return c.verifier.Verify(ctx, raw)
}

// issueToken mints a token for the client, signed with the signing key.
func (c *Callback) issueToken(now time.Time) (string, error) {
	return token.Issue(c.signer, token.Claims{
		Issuer:   c.Issuer,
		Subject:  c.clientID,
		Audience: c.Audience,
		TTL:      time.Duration(c.TokenTTL),
	}, now)
}

// truncateForLog shortens an untrusted string for an error message or a
// log.
func truncateForLog(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
