package atlastest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

const (
	msgMissingCredentials = "Missing Client-Id or Client-Secret"
	msgInvalidCredentials = "Invalid client credentials"
	msgInvalidToken       = "Invalid or expired token"

	tokenIssuer = "atlas-docstream-simulator"
)

// tokenClaims are the claims of an access token. Generation is compared
// with the simulator's revocation generation: RevokeAll bumps it.
type tokenClaims struct {
	Generation int64  `json:"gen"`
	Service    string `json:"svc"` // docstream or bulk: a token is good at its own service only
	jwt.RegisteredClaims
}

// serveAuthToken answers POST /v1/docstream/authtoken and
// /v1/bulk/authtoken.
func (s *Simulator) serveAuthToken(w http.ResponseWriter, r *http.Request, service string) {
	id, secret := r.Header.Get("Client-Id"), r.Header.Get("Client-Secret")
	if id == "" || secret == "" {
		writeError(w, http.StatusBadRequest, msgMissingCredentials)
		return
	}
	idOK := subtle.ConstantTimeCompare([]byte(id), []byte(s.clientID)) == 1
	secretOK := subtle.ConstantTimeCompare([]byte(secret), []byte(s.clientSecret)) == 1
	if !idOK || !secretOK {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error_code": "401", "error_message": msgInvalidCredentials})
		return
	}
	token, expiresIn, err := s.issueToken(id, service)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "signing token")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"access_token": token, "expires_in": expiresIn})
}

// issueToken signs a new access token of service for subject and returns
// it with its lifetime in whole seconds.
func (s *Simulator) issueToken(subject, service string) (string, int64, error) {
	s.mu.Lock()
	lifetime, gen := s.lifetime, s.generation
	s.mu.Unlock()

	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	now := s.now()
	claims := tokenClaims{
		Generation: gen,
		Service:    service,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   subject,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(lifetime)),
			ID:        hex.EncodeToString(jti),
		},
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.key)
	if err != nil {
		return "", 0, err
	}
	s.mu.Lock()
	s.latest[service+"/"+subject] = claims.ID
	s.issued = append(s.issued, signed)
	if len(s.issued) > maxIssued {
		s.issued = s.issued[len(s.issued)-maxIssued:]
	}
	s.mu.Unlock()
	return signed, int64(lifetime.Seconds()), nil
}

// tokenValid reports whether raw is a token this simulator issued for service that has
// neither expired (per the simulator's clock) nor been revoked, by
// RevokeAll or, with the one-live-token knob, by a later token of its
// client.
func (s *Simulator) tokenValid(raw, service string) bool {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return false
	}
	var claims tokenClaims
	_, err := jwt.ParseWithClaims(raw, &claims,
		func(*jwt.Token) (any, error) { return s.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithTimeFunc(s.now),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(tokenIssuer),
	)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if claims.Service != service {
		return false
	}
	if s.oneLive && s.latest[service+"/"+claims.Subject] != claims.ID {
		return false
	}
	return claims.Generation == s.generation
}

// authorized checks the Token header, answering 401 when it is missing,
// invalid, expired or revoked.
func (s *Simulator) authorized(w http.ResponseWriter, r *http.Request, service string) bool {
	if !s.tokenValid(r.Header.Get("Token"), service) {
		writeError(w, http.StatusUnauthorized, msgInvalidToken)
		return false
	}
	return true
}
