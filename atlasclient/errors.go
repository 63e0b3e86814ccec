package atlasclient

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrBatchIDRequired matches an *APIError for a 400 whose message says
	// that batch_id is required.
	ErrBatchIDRequired = errors.New("atlas: batch_id is required")

	// ErrUnauthorized matches an *APIError for a 401: the token was missing,
	// invalid or expired.
	ErrUnauthorized = errors.New("atlas: unauthorized")

	// ErrTokenUnavailable is wrapped by TokenSource.Token when no valid token
	// could be had for a reason other than rejected credentials (network,
	// 5xx, 429, an unusable response). The wrapping error carries the cause.
	ErrTokenUnavailable = errors.New("atlas: token unavailable")

	// ErrClosed is returned by TokenSource.Token after Close.
	ErrClosed = errors.New("atlas: token source closed")
)

// maxErrorMessage bounds the length of a message taken from a response body.
const maxErrorMessage = 512

// APIError is a non-2xx answer from Atlas.
type APIError struct {
	// StatusCode is the HTTP status of the response.
	StatusCode int
	// Message is the human-readable message found in the body, or the
	// status text when the body had none.
	Message string
	// Code is the machine-readable code found in the body (error_code or
	// code), if any.
	Code string
}

// Error returns a message like "atlas: 400: batch_id is required".
func (e *APIError) Error() string {
	if e.Code != "" && e.Code != strconv.Itoa(e.StatusCode) {
		return fmt.Sprintf("atlas: %d %s: %s", e.StatusCode, e.Code, e.Message)
	}
	return fmt.Sprintf("atlas: %d: %s", e.StatusCode, e.Message)
}

// Is reports whether e matches one of the sentinel errors ErrUnauthorized
// or ErrBatchIDRequired.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrBatchIDRequired:
		return e.StatusCode == http.StatusBadRequest &&
			strings.Contains(strings.ToLower(e.Message), "batch_id is required")
	}
	return false
}

// ParseAPIError builds an *APIError from a response status and body. It
// understands {"error":"..."}, {"error_code":"401","error_message":"..."},
// {"message":"..."} (and a few close variants), plain text, and an empty
// body, for which the message is the status text.
func ParseAPIError(status int, body []byte) *APIError {
	e := &APIError{StatusCode: status}
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '{' {
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) == nil {
			e.Message = firstText(m, "error_message", "message", "error", "detail", "error_description", "msg")
			e.Code = firstText(m, "error_code", "code")
			if e.Message == "" {
				// {"error": {"code": ..., "message": ...}}
				var nested map[string]json.RawMessage
				if json.Unmarshal(m["error"], &nested) == nil {
					e.Message = firstText(nested, "message", "error_message", "error", "detail")
					if e.Code == "" {
						e.Code = firstText(nested, "code", "error_code")
					}
				}
			}
			e.Message = cmp.Or(e.Message, http.StatusText(status), "status "+strconv.Itoa(status))
			return e
		}
	}
	e.Message = cmp.Or(truncate(strings.TrimSpace(string(body))), http.StatusText(status), "status "+strconv.Itoa(status))
	return e
}

// firstText returns the first of keys whose member in m is a non-empty
// JSON string or number, as text.
func firstText(m map[string]json.RawMessage, keys ...string) string {
	for _, k := range keys {
		raw, ok := m[k]
		if !ok {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) == nil && s != "" {
			return truncate(s)
		}
		var n json.Number
		if json.Unmarshal(raw, &n) == nil && n != "" {
			return truncate(n.String())
		}
	}
	return ""
}

// truncate shortens s to maxErrorMessage bytes without splitting a rune.
func truncate(s string) string {
	if len(s) <= maxErrorMessage {
		return s
	}
	s = s[:maxErrorMessage]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// CredentialsError reports that the authtoken endpoint rejected the client
// credentials (400 or 401). It never contains the client secret.
type CredentialsError struct {
	// ClientID is the client_id whose credentials were rejected.
	ClientID string
	// StatusCode is the HTTP status of the authtoken response.
	StatusCode int
	// Message is the message Atlas gave, with the secret redacted should
	// the server have echoed it.
	Message string
}

// Error returns a message like
// `atlas rejected the credentials of client_id "x" (401: invalid credentials)`.
func (e *CredentialsError) Error() string {
	return fmt.Sprintf("atlas rejected the credentials of client_id %q (%d: %s)", e.ClientID, e.StatusCode, e.Message)
}
