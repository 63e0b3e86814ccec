package callback

import (
	"context"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-atlas/caddy-atlas/callback/token"
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
