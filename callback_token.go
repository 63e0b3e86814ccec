package caddyatlas

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// maxCallbackTokenBytes bounds the size of a token the route will parse.
const maxCallbackTokenBytes = 8 << 10

// errNoCallbackToken is a callback that carries no token.
var errNoCallbackToken = errors.New("no token in the Token or Authorization header")

// callbackRequestToken returns the token of a callback: the Token header, or the
// credentials of an `Authorization: Bearer` header. The query string and
// cookies are never looked at. Two different tokens are an error.
func callbackRequestToken(r *http.Request) (string, error) {
	var tok string
	switch vals := r.Header.Values("Token"); len(vals) {
	case 0:
	case 1:
		tok = strings.TrimSpace(vals[0])
	default:
		return "", errors.New("more than one Token header")
	}
	switch vals := r.Header.Values("Authorization"); len(vals) {
	case 0:
	case 1:
		scheme, cred, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", errors.New("the Authorization header is not a Bearer credential")
		}
		cred = strings.TrimSpace(cred)
		if tok != "" && cred != tok {
			return "", errors.New("the Token and Authorization headers hold different tokens")
		}
		tok = cred
	default:
		return "", errors.New("more than one Authorization header")
	}
	if tok == "" {
		return "", errNoCallbackToken
	}
	if len(tok) > maxCallbackTokenBytes {
		return "", fmt.Errorf("token longer than %d bytes", maxCallbackTokenBytes)
	}
	return tok, nil
}

// verifyRequest verifies the token of a callback and returns its subject.
// A token that verified within verifiedTokenTTL is taken from the cache.
func (c *Callback) verifyRequest(r *http.Request) (string, error) {
	raw, err := callbackRequestToken(r)
	if err != nil {
		return "", err
	}
	now := c.now()
	if sub, ok := c.verified.get(raw, now); ok {
		return sub, nil
	}
	claims, err := c.verifyToken(r.Context(), raw)
	if err != nil {
		return "", err
	}
	if claims.ExpiresAt != nil { // required by the parser; checked all the same
		c.verified.put(raw, claims.Subject, now, claims.ExpiresAt.Add(time.Duration(c.Leeway)))
	}
	return claims.Subject, nil
}

// verifyToken verifies a token's signature with the configured keys and
// its claims: exp required; iss, aud, nbf and iat checked with the leeway;
// sub required.
func (c *Callback) verifyToken(ctx context.Context, raw string) (*jwt.RegisteredClaims, error) {
	claims := new(jwt.RegisteredClaims)
	if _, err := c.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		return c.keyFor(ctx, t)
	}); err != nil {
		return nil, err
	}
	if claims.Subject == "" {
		return nil, errors.New("token has no sub")
	}
	if !printableHeaderValue(claims.Subject) {
		return nil, errors.New("token sub is not a printable header value of at most 256 bytes")
	}
	return claims, nil
}

// newParser returns the token parser of the provisioned configuration.
func (c *Callback) newParser() *jwt.Parser {
	return jwt.NewParser(
		jwt.WithValidMethods(c.validMethods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(c.Issuer),
		jwt.WithAudience(c.Audience),
		jwt.WithLeeway(time.Duration(c.Leeway)),
		jwt.WithTimeFunc(func() time.Time { return c.now() }),
	)
}

// keyFor returns the key or keys a token may be verified with. A key is
// only ever used for the algorithm it was configured for, so neither an
// alg header nor a kid can make a public key serve as an HMAC secret.
func (c *Callback) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if _, ok := t.Header["crit"]; ok {
		return nil, errors.New("token has a crit header, and no extension is supported")
	}
	var kid string
	if v, ok := t.Header["kid"]; ok {
		s, ok := v.(string)
		if !ok || s == "" {
			return nil, errors.New("kid header is not a non-empty string")
		}
		kid = s
	}

	if kid != "" {
		k := findJWTKey(c.verifyKeys, kid)
		if k == nil && c.jwks != nil {
			k = c.jwks.lookup(ctx, kid)
		}
		switch {
		case k == nil:
			return nil, fmt.Errorf("unknown kid %q", truncateForLog(kid, 64))
		case k.alg != alg:
			return nil, fmt.Errorf("kid %q is a %s key, the token says %s", truncateForLog(kid, 64), k.alg, alg)
		}
		return k.public, nil
	}

	// Without a kid, every key of the token's algorithm is tried.
	var set jwt.VerificationKeySet
	for _, k := range c.verifyKeys {
		if k.alg == alg {
			set.Keys = append(set.Keys, k.public)
		}
	}
	if c.jwks != nil {
		for _, k := range c.jwks.all(ctx) {
			if k.alg == alg {
				set.Keys = append(set.Keys, k.public)
			}
		}
	}
	switch len(set.Keys) {
	case 0:
		return nil, fmt.Errorf("no key for algorithm %s", alg)
	case 1:
		return set.Keys[0], nil
	}
	return set, nil
}

// issueToken mints a token for the client, signed with the signing key.
func (c *Callback) issueToken(now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	claims := jwt.RegisteredClaims{
		Issuer:    c.Issuer,
		Subject:   c.clientID,
		Audience:  jwt.ClaimStrings{c.Audience},
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Duration(c.TokenTTL))),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
	}
	t := jwt.NewWithClaims(c.signer.method(), claims)
	t.Header["kid"] = c.signer.kid
	return t.SignedString(c.signer.private)
}

// tokenFailureReason names, for the logs, why a token was refused.
func tokenFailureReason(err error) string {
	switch {
	case errors.Is(err, errNoCallbackToken):
		return "no token"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "no usable key"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature or algorithm"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "invalid claims"
	}
	return "invalid"
}

// printableHeaderValue reports whether s can travel as a header value
// unchanged: printable ASCII, at most 256 bytes.
func printableHeaderValue(s string) bool {
	if len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// truncate shortens an untrusted string for an error message or a log.
func truncateForLog(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
