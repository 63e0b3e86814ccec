// Package whsign signs and verifies webhook deliveries per the Standard
// Webhooks specification (https://www.standardwebhooks.com, version 1):
//
//	webhook-id:        the message id (caddy-atlas: the callback id)
//	webhook-timestamp: the signing time, in Unix seconds
//	webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">
//
// The HMAC key is the base64-decoded part of a `whsec_` secret. A [Signer]
// given several secrets (during a rotation) sends one signature per
// secret, space-separated; a receiver that knows any of them accepts the
// message.
//
// The package knows nothing of Caddy: caddy-atlas signs each hand-off of
// a callback with it, and a Go app behind the gateway can check them with
// [Verify].
package whsign

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The header names of the specification.
const (
	HeaderID        = "Webhook-Id"
	HeaderTimestamp = "Webhook-Timestamp"
	HeaderSignature = "Webhook-Signature"
)

// Prefix starts every secret.
const Prefix = "whsec_"

// The key lengths accepted, in bytes: the specification asks for 24 to
// 64.
const (
	MinKeyLen = 24
	MaxKeyLen = 64
)

// DefaultTolerance is how far a timestamp may be from the verifier's
// clock, either way: five minutes, as the specification's libraries use.
const DefaultTolerance = 5 * time.Minute

// Secret is a parsed `whsec_` secret. Its String method never shows the
// key.
type Secret struct {
	key []byte
}

// String returns a placeholder; the key is never printed.
func (Secret) String() string { return "whsec_[redacted]" }

// GoString is String, so that %#v does not show the key either.
func (s Secret) GoString() string { return s.String() }

// ParseSecret parses "whsec_" followed by the base64 (standard alphabet,
// padded or not) of a 24- to 64-byte key. Surrounding whitespace is
// ignored (a secret read from a file may end in a newline). Errors say
// what is wrong and never include any part of s.
func ParseSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Secret{}, errors.New("webhook secret is empty")
	}
	b64, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Secret{}, errors.New(`webhook secret must start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(b64)
	}
	if err != nil {
		return Secret{}, errors.New(`webhook secret: the part after "whsec_" is not valid base64`)
	}
	if len(key) < MinKeyLen || len(key) > MaxKeyLen {
		return Secret{}, fmt.Errorf("webhook secret: the key is %d bytes, want %d to %d", len(key), MinKeyLen, MaxKeyLen)
	}
	return Secret{key: key}, nil
}

// Sign returns the v1 signature ("v1,<base64>") of body for id and ts.
func (s Secret) Sign(id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, s.key)
	var num [20]byte
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(num[:0], ts, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	var sum [sha256.Size]byte
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(sum[:0]))
}

// Signer signs messages with one or more secrets. It is safe for
// concurrent use.
type Signer struct {
	secrets []Secret
}

// String names the signer without its keys (fmt prints the unexported
// keys of a struct as they are otherwise).
func (s Signer) String() string {
	return "whsign.Signer(" + strconv.Itoa(len(s.secrets)) + " secrets)"
}

// GoString is String, for %#v.
func (s Signer) GoString() string { return s.String() }

// NewSigner parses secrets (see [ParseSecret]); it needs at least one. An
// error names which secret (by its place, from 1) is wrong.
func NewSigner(secrets ...string) (*Signer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no webhook secret")
	}
	s := &Signer{secrets: make([]Secret, len(secrets))}
	for i, raw := range secrets {
		sec, err := ParseSecret(raw)
		if err != nil {
			if len(secrets) > 1 {
				return nil, fmt.Errorf("secret %d: %w", i+1, err)
			}
			return nil, err
		}
		s.secrets[i] = sec
	}
	return s, nil
}

// Signature returns the webhook-signature header value for the message:
// one v1 signature per secret, space-separated, in the order given.
func (s *Signer) Signature(id string, ts int64, body []byte) string {
	var b strings.Builder
	for i, sec := range s.secrets {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(sec.Sign(id, ts, body))
	}
	return b.String()
}

// SetHeaders sets the three headers of the message on h, signed at now.
// It replaces any such headers already there, so that a client cannot
// smuggle its own.
func (s *Signer) SetHeaders(h http.Header, id string, now time.Time, body []byte) {
	ts := now.Unix()
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, s.Signature(id, ts, body))
}

// Errors of [Verify].
var (
	ErrMissingHeaders = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature")
	ErrBadTimestamp   = errors.New("webhook: the timestamp is not a number of seconds")
	ErrTooOld         = errors.New("webhook: the timestamp is too old")
	ErrTooNew         = errors.New("webhook: the timestamp is in the future")
	ErrNoMatch        = errors.New("webhook: no signature matches")
)

// Verify checks the Standard Webhooks headers of a message: that its
// timestamp is within tolerance of now (either way) and that one of its v1
// signatures is body's under one of secrets. The comparison takes constant
// time. It returns the message id.
func Verify(h http.Header, body []byte, now time.Time, tolerance time.Duration, secrets ...Secret) (string, error) {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return "", ErrMissingHeaders
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return "", ErrBadTimestamp
	}
	tol := int64(tolerance / time.Second)
	switch n := now.Unix(); {
	case n-ts > tol:
		return "", ErrTooOld
	case ts-n > tol:
		return "", ErrTooNew
	}
	for _, sec := range secrets {
		want := sec.Sign(id, ts, body)
		for _, got := range strings.Fields(sigs) {
			if hmac.Equal([]byte(got), []byte(want)) {
				return id, nil
			}
		}
	}
	return "", ErrNoMatch
}

// NewSecret returns a fresh secret: a random 32-byte key, as "whsec_"
// and its base64.
func NewSecret() string {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (crypto/rand, Go 1.24 and later)
	return Prefix + base64.StdEncoding.EncodeToString(key)
}
