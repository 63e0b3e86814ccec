package jsqueue

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// Limits of an entry, as for the spool.
const (
	maxIDLen  = 128
	maxErrLen = 512
)

// NATS headers of the messages in the work and dead-letter streams. The
// callback's own headers travel inside the message data (the envelope),
// where a Keyring seals them with the body.
const (
	hdrID       = "Atlas-Callback-Id"
	hdrReceived = "Atlas-Received" // Unix nanoseconds
	hdrSize     = "Atlas-Size"     // body size in bytes
	hdrSealed   = "Atlas-Sealed"   // "1": the data is sealed by the Keyring
	hdrAttempts = "Atlas-Attempts" // dead letters: failed attempts
	hdrLastErr  = "Atlas-Last-Error"
)

// Kinds of state records, the second token of their subject
// <stream>_STATE.<kind>.<key>. The newest record of a key, whatever its
// kind, is the callback's state; a pending callback that never failed
// has none (its message in the work stream is its state).
const (
	kindPending   = "f" // failed attempts of a pending callback
	kindDead      = "k" // dead; the body is in the dead-letter stream
	kindDelivered = "d" // delivered; kept for the retention window
	kindDeleted   = "x" // deleted by an operator
)

// record is a state record, stored as JSON.
type record struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// Seq is the work-stream sequence of the message this record is
	// about: attempts count only for that message, so a retry, which
	// publishes a new message, starts from zero.
	Seq         uint64    `json:"seq,omitempty"`
	Size        int64     `json:"size"`
	Attempts    int       `json:"attempts,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	Received    time.Time `json:"received"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Delivered   time.Time `json:"delivered,omitzero"`

	// kind and rseq are where the record was read from, not stored.
	kind string
	rseq uint64
}

func (r *record) info() queue.Info {
	in := queue.Info{
		ID: r.ID, Size: r.Size, Attempts: r.Attempts, LastError: r.LastError, Received: r.Received,
		LastAttempt: r.LastAttempt, NextAttempt: r.NextAttempt, Delivered: r.Delivered,
	}
	switch r.kind {
	case kindPending:
		in.State = queue.StatePending
	case kindDead:
		in.State = queue.StateDead
	case kindDelivered:
		in.State = queue.StateDelivered
	}
	return in
}

func decodeRecord(subject string, seq uint64, data []byte) (*record, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("jsqueue: state record %s: %w", subject, err)
	}
	parts := strings.Split(subject, ".")
	if len(parts) < 3 {
		return nil, fmt.Errorf("jsqueue: state record on unexpected subject %q", subject)
	}
	r.kind, r.rseq = parts[len(parts)-2], seq
	return &r, nil
}

// subjectKey turns a callback id into a subject token: ids may contain
// '.', the token separator, which becomes '=' (not an id character, so
// the mapping is one to one).
func subjectKey(id string) string { return strings.ReplaceAll(id, ".", "=") }

// validateEntry checks an entry as the spool does.
func validateEntry(e *queue.Entry) error {
	if e.ID == "" || len(e.ID) > maxIDLen {
		return fmt.Errorf("%w: id must be 1 to %d bytes", queue.ErrInvalid, maxIDLen)
	}
	for i := 0; i < len(e.ID); i++ {
		c := e.ID[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return fmt.Errorf("%w: id contains %q", queue.ErrInvalid, c)
		}
	}
	return nil
}

// The envelope is the data of a work or dead-letter message: a format
// byte, the callback's headers, then its body.
//
//	1 byte   format (1)
//	uvarint  number of header values n
//	n times  uvarint length, name, uvarint length, value
//	rest     body
const envelopeV1 = 1

func envelopeSize(h http.Header, body []byte) int {
	n := 1 + binary.MaxVarintLen64
	for k, vs := range h {
		for _, v := range vs {
			n += 2*binary.MaxVarintLen64 + len(k) + len(v)
		}
	}
	return n + len(body)
}

func appendEnvelope(dst []byte, h http.Header, body []byte) []byte {
	dst = append(dst, envelopeV1)
	count := 0
	for _, vs := range h {
		count += len(vs)
	}
	dst = binary.AppendUvarint(dst, uint64(count))
	for k, vs := range h {
		for _, v := range vs {
			dst = binary.AppendUvarint(dst, uint64(len(k)))
			dst = append(dst, k...)
			dst = binary.AppendUvarint(dst, uint64(len(v)))
			dst = append(dst, v...)
		}
	}
	return append(dst, body...)
}

var errEnvelope = errors.New("jsqueue: malformed message envelope")

// decodeEnvelope returns the headers and body of an envelope; the body
// aliases b.
func decodeEnvelope(b []byte) (http.Header, []byte, error) {
	if len(b) < 1 || b[0] != envelopeV1 {
		return nil, nil, errEnvelope
	}
	b = b[1:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)) {
		return nil, nil, errEnvelope
	}
	b = b[n:]
	str := func() (string, bool) {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return "", false
		}
		s := string(b[n : n+int(l)])
		b = b[n+int(l):]
		return s, true
	}
	h := make(http.Header, count)
	for range count {
		k, ok := str()
		if !ok {
			return nil, nil, errEnvelope
		}
		v, ok := str()
		if !ok {
			return nil, nil, errEnvelope
		}
		h[k] = append(h[k], v)
	}
	return h, b, nil
}

// msgInfo reads the Atlas headers of a work or dead-letter message.
func msgInfo(h nats.Header) (id string, received time.Time, size int64) {
	id = h.Get(hdrID)
	if ns, err := strconv.ParseInt(h.Get(hdrReceived), 10, 64); err == nil {
		received = time.Unix(0, ns)
	}
	size, _ = strconv.ParseInt(h.Get(hdrSize), 10, 64)
	return id, received, size
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
