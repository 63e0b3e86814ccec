package callback

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-atlas/caddy-atlas/callback/token"
	"github.com/caddy-atlas/caddy-atlas/internal/placeholder"
	"github.com/caddy-atlas/caddy-atlas/mask"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/whsign"
)

// What the route does for identity data handled as regulated data: the
// hand-off masked (the handler's `mask` rules) and signed per Standard
// Webhooks (SignDeliveries), and the overlap forms of its credentials
// for rotations (ClientSecrets, PreviousSigningKeys).

// SetMasker sets the masker of the hand-off: the atlas handler's `mask`
// rules, which apply to both of its directions. Call it before
// Provision; nil (the default) masks nothing. With a masker, the app
// (synchronously, or through the spool, where the body is stored
// masked) receives the body with the named values masked; the callback
// id stays that of the body as Atlas sent it.
func (c *Callback) SetMasker(m *mask.Masker) { c.masker = m }

// Masker returns the masker of the hand-off, nil if none.
func (c *Callback) Masker() *mask.Masker { return c.masker }

// provisionRotation parses PreviousSigningKeys (verify only) and
// SignDeliveries.
func (c *Callback) provisionRotation(repl *caddy.Replacer) error {
	for i, v := range c.PreviousSigningKeys {
		raw := repl.ReplaceKnown(v, "")
		if raw == "" {
			return placeholder.Empty(fmt.Sprintf("previous_signing_keys[%d]", i), v)
		}
		k, err := token.ParseSigningKey(raw)
		if err != nil {
			return fmt.Errorf("previous_signing_keys[%d]: %w", i, err)
		}
		k.SetOrigin(fmt.Sprintf("previous_signing_keys[%d]", i))
		if !token.ContainsKey(c.verifyKeys, k) {
			c.verifyKeys = append(c.verifyKeys, k)
		}
	}
	c.handoffSigner = nil
	if len(c.SignDeliveries) > 0 {
		secrets := make([]string, len(c.SignDeliveries))
		for i, v := range c.SignDeliveries {
			secrets[i] = repl.ReplaceKnown(v, "")
			if secrets[i] == "" {
				return placeholder.Empty(fmt.Sprintf("sign_deliveries[%d]", i), v)
			}
		}
		s, err := whsign.NewSigner(secrets...)
		if err != nil {
			return fmt.Errorf("sign_deliveries: %w", err)
		}
		c.handoffSigner = s
	}
	return nil
}

// maskBufs pools the buffers of masked bodies; one grown past
// maxPooledMasked is let go.
var maskBufs = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledMasked = 1 << 20

// maskBody returns body masked, or body itself without a masker, and a
// release to call once nothing reads the result any more (the hand-off
// has returned, or the spool has stored it: Store.Append keeps nothing).
// The payload has been validated, so an error here is the masker's own.
func (c *Callback) maskBody(body []byte) ([]byte, func(), error) {
	if c.masker == nil {
		return body, func() {}, nil
	}
	buf := maskBufs.Get().(*[]byte)
	out, _, err := c.masker.Payload((*buf)[:0], body)
	release := func() {
		if cap(out) <= maxPooledMasked {
			*buf = out[:0]
			maskBufs.Put(buf)
		}
	}
	return out, release, err
}

// bodyReader returns a request body and its GetBody over b.
func bodyReader(b []byte) (io.ReadCloser, func() (io.ReadCloser, error)) {
	get := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	rc, _ := get()
	return rc, get
}

// signHandoff sets the Standard Webhooks headers of a hand-off of body
// (as the app receives it), replacing any the client sent, when the
// route signs deliveries.
func (c *Callback) signHandoff(h http.Header, id string, body []byte) {
	if c.handoffSigner != nil {
		c.handoffSigner.SetHeaders(h, id, c.now(), body)
	}
}

// signAttempt is the spool's per-attempt header hook: each durable
// delivery attempt is signed at its own time, so that a retry is not
// refused by the app as a replay.
func (c *Callback) signAttempt(h http.Header, d queue.Delivery) {
	c.signHandoff(h, d.ID, d.Body)
}
