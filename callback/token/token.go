// Package token issues and verifies the JWTs of the callback route: the
// keys they are signed with (HMAC secrets, PEM keys, JWKs), a JWKS kept
// fresh in the background, the verification of a token's signature and
// claims, and a cache of the tokens that verified. It knows nothing of
// Caddy.
package token

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

// MaxBytes bounds the size of a token that is parsed.
const MaxBytes = 8 << 10

// ErrNoToken is a request that carries no token: no Token header and no
// Authorization header, or one of another scheme (RFC 6750 counts both as
// a request without credentials).
var ErrNoToken = errors.New("no token in the Token or Authorization header")

// errNotBearer is a request whose only credential is an Authorization
// header of another scheme than Bearer.
var errNotBearer = fmt.Errorf("%w: the Authorization header is not a Bearer credential", ErrNoToken)

// FromRequest returns the token of a request: the Token header, or the
// credentials of an `Authorization: Bearer` header. The query string and
// cookies are never looked at. Two different tokens are an error.
func FromRequest(r *http.Request) (string, error) {
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
			if tok == "" {
				return "", errNotBearer
			}
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
		return "", ErrNoToken
	}
	if len(tok) > MaxBytes {
		return "", fmt.Errorf("token longer than %d bytes", MaxBytes)
	}
	return tok, nil
}

// Verifier verifies tokens: their signature with Keys (and the keys of
// JWKS, if set), and their claims: exp required; iss, aud, nbf and iat
// checked with Leeway; sub required. Set the fields, then call Init once
// before use; it is then safe for concurrent use.
type Verifier struct {
	Issuer   string
	Audience string
	Leeway   time.Duration
	Keys     []*Key
	JWKS     *JWKS
	// Now is the clock; time.Now if nil.
	Now func() time.Time

	methods []string
	parser  *jwt.Parser
	cache   *Cache
}

// Init prepares the parser of the configured keys and an empty cache.
func (v *Verifier) Init() {
	if v.Now == nil {
		v.Now = time.Now
	}
	v.methods = MethodsOf(v.Keys, v.JWKS != nil)
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(v.Issuer),
		jwt.WithAudience(v.Audience),
		jwt.WithLeeway(v.Leeway),
		jwt.WithTimeFunc(func() time.Time { return v.Now() }),
	)
	v.cache = NewCache()
}

// Methods returns the algorithms accepted, which follow from the keys.
func (v *Verifier) Methods() []string { return v.methods }

// Cache returns the cache of verified tokens.
func (v *Verifier) Cache() *Cache { return v.cache }

// Subject verifies raw and returns its subject. A token that verified
// within CacheTTL is taken from the cache.
func (v *Verifier) Subject(ctx context.Context, raw string) (string, error) {
	now := v.Now()
	if sub, ok := v.cache.Get(raw, now); ok {
		return sub, nil
	}
	claims, err := v.Verify(ctx, raw)
	if err != nil {
		return "", err
	}
	if claims.ExpiresAt != nil { // required by the parser; checked all the same
		v.cache.Put(raw, claims.Subject, now, claims.ExpiresAt.Add(v.Leeway))
	}
	return claims.Subject, nil
}

// Verify verifies a token's signature and claims, without the cache.
func (v *Verifier) Verify(ctx context.Context, raw string) (*jwt.RegisteredClaims, error) {
	claims := new(jwt.RegisteredClaims)
	if _, err := v.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		return v.keyFor(ctx, t)
	}); err != nil {
		return nil, err
	}
	if claims.Subject == "" {
		return nil, errors.New("token has no sub")
	}
	if !PrintableHeaderValue(claims.Subject) {
		return nil, errors.New("token sub is not a printable header value of at most 256 bytes")
	}
	return claims, nil
}

// keyFor returns the key or keys a token may be verified with. A key is
// only ever used for the algorithm it was configured for, so neither an
// alg header nor a kid can make a public key serve as an HMAC secret.
func (v *Verifier) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if _, ok := t.Header["crit"]; ok {
		return nil, errors.New("token has a crit header, and no extension is supported")
	}
	var kid string
	if h, ok := t.Header["kid"]; ok {
		s, ok := h.(string)
		if !ok || s == "" {
			return nil, errors.New("kid header is not a non-empty string")
		}
		kid = s
	}

	if kid != "" {
		k := FindKey(v.Keys, kid)
		if k == nil && v.JWKS != nil {
			k = v.JWKS.Lookup(ctx, kid)
		}
		switch {
		case k == nil:
			return nil, fmt.Errorf("unknown kid %q", truncate(kid, 64))
		case k.alg != alg:
			return nil, fmt.Errorf("kid %q is a %s key, the token says %s", truncate(kid, 64), k.alg, alg)
		}
		return k.public, nil
	}

	// Without a kid, every key of the token's algorithm is tried.
	var set jwt.VerificationKeySet
	for _, k := range v.Keys {
		if k.alg == alg {
			set.Keys = append(set.Keys, k.public)
		}
	}
	if v.JWKS != nil {
		for _, k := range v.JWKS.All(ctx) {
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

// Claims are the claims of an issued token.
type Claims struct {
	Issuer   string
	Subject  string
	Audience string
	TTL      time.Duration
}

// Issue mints a token with the claims, valid from now for c.TTL, with a
// random jti, signed with key (which must be a signing key) and naming
// its kid.
func Issue(key *Key, c Claims, now time.Time) (string, error) {
	if key == nil || key.private == nil {
		return "", errors.New("no signing key")
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	claims := jwt.RegisteredClaims{
		Issuer:    c.Issuer,
		Subject:   c.Subject,
		Audience:  jwt.ClaimStrings{c.Audience},
		ExpiresAt: jwt.NewNumericDate(now.Add(c.TTL)),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
	}
	t := jwt.NewWithClaims(key.Method(), claims)
	t.Header["kid"] = key.kid
	return t.SignedString(key.private)
}

// FailureReason names, for the logs, why a token was refused.
func FailureReason(err error) string {
	switch {
	case errors.Is(err, errNotBearer):
		return "not a Bearer credential"
	case errors.Is(err, ErrNoToken):
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

// PrintableHeaderValue reports whether s can travel as a header value
// unchanged: printable ASCII, at most 256 bytes.
func PrintableHeaderValue(s string) bool {
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
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
