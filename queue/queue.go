// Package queue defines the durable queue of callbacks that the callback
// route hands verified callbacks to, and the types and helpers its
// implementations share (deliveries, their backoff, the HTTP deliverer,
// the defaults): package spool is the single-node one (a log on local
// disk), package jsqueue the one on NATS JetStream for a fleet.
package queue

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Store is what the callback route and the admin API depend on: a durable
// queue of callbacks with at-least-once delivery. spool.FileSpool is the
// single-node implementation; a backend on shared storage implements the
// same interface.
//
// Implementations are safe for concurrent use.
type Store interface {
	// Append stores e durably and schedules its delivery. It returns only
	// once e is on stable storage, or with an error if it could not be
	// stored; the caller acknowledges the callback only on a nil error.
	// A callback whose id is already stored (pending, dead, or delivered
	// within the retention window) is not stored again: Append returns
	// Duplicate true and a nil error. Append keeps nothing of e once it
	// returns: the caller may reuse e.Body's memory.
	Append(ctx context.Context, e Entry) (AppendResult, error)

	// Get returns the state of the callback with the given id.
	Get(id string) (Info, bool)

	// Load returns a pending or dead callback, body included. It returns
	// ErrNotFound for an unknown id and ErrDelivered for a delivered one,
	// whose body is not kept.
	Load(ctx context.Context, id string) (Entry, error)

	// List returns the callbacks in the given state (every state for
	// AnyState), oldest first, at most limit of them (all for limit <= 0).
	List(state State, limit int) []Info

	// Retry makes a pending or dead callback due now with its attempts
	// reset. It returns ErrNotFound for an unknown id and ErrDelivered
	// for a delivered one.
	Retry(ctx context.Context, id string) error

	// RetryAll does Retry for every callback in state (StateDead or
	// StatePending) and returns how many there were.
	RetryAll(ctx context.Context, state State) (int, error)

	// Delete forgets a callback, whatever its state; a delivery in
	// progress is not interrupted, but its outcome is ignored. It returns
	// ErrNotFound for an unknown id. A deleted callback's id is accepted
	// again by Append.
	Delete(ctx context.Context, id string) error

	// Stats returns counts and sizes for metrics and health checks.
	Stats() Stats

	// Close stops delivering and releases the store. It waits for the
	// deliveries in progress until ctx is done, then cancels them; a
	// cancelled delivery stays pending and is redelivered after the next
	// open.
	Close(ctx context.Context) error
}

// Entry is a callback to store and deliver.
type Entry struct {
	// ID is the callback id (X-Atlas-Callback-Id): 1 to 128 bytes of
	// letters, digits and "-_.:". It is the deduplication key.
	ID string
	// Header holds the headers to deliver with the body, typically
	// Content-Type and the X-Atlas-* headers.
	Header http.Header
	// Body is the callback body, delivered byte for byte.
	Body []byte
	// Received is when the callback arrived; Append sets it to now if it
	// is zero.
	Received time.Time
}

// AppendResult is the result of Append.
type AppendResult struct {
	// ID is the callback id.
	ID string
	// Duplicate is true if the id was already stored, in which case
	// nothing was written.
	Duplicate bool
}

// State is the delivery state of a callback.
type State uint8

// States of a callback.
const (
	// AnyState selects every state in List.
	AnyState State = iota
	// StatePending callbacks are waiting for (another) delivery attempt.
	StatePending
	// StateDead callbacks ran out of attempts; they stay until retried or
	// deleted.
	StateDead
	// StateDelivered callbacks were taken by the receiver. Only their id,
	// size and times are kept, for the retention window, to deduplicate.
	StateDelivered
)

// String returns "pending", "dead", "delivered", or "" for AnyState.
func (s State) String() string {
	switch s {
	case StatePending:
		return "pending"
	case StateDead:
		return "dead"
	case StateDelivered:
		return "delivered"
	case AnyState:
		return ""
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText encodes the state as its name.
func (s State) MarshalText() ([]byte, error) {
	if s > StateDelivered {
		return nil, fmt.Errorf("queue: unknown state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes a state name, as ParseState does.
func (s *State) UnmarshalText(b []byte) error {
	v, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseState parses "pending", "dead", "delivered", or "" (AnyState).
func ParseState(name string) (State, error) {
	switch name {
	case "pending":
		return StatePending, nil
	case "dead":
		return StateDead, nil
	case "delivered":
		return StateDelivered, nil
	case "":
		return AnyState, nil
	}
	return AnyState, fmt.Errorf("queue: unknown state %q (want pending, dead or delivered)", name)
}

// Info describes a stored callback, without its body.
type Info struct {
	// ID is the callback id.
	ID string `json:"id"`
	// State is pending, dead or delivered.
	State State `json:"state"`
	// Size is the body size in bytes.
	Size int64 `json:"size"`
	// Attempts is the number of delivery attempts made.
	Attempts int `json:"attempts"`
	// LastError is the error of the last failed attempt.
	LastError string `json:"last_error,omitempty"`
	// Received is when the callback arrived.
	Received time.Time `json:"received"`
	// LastAttempt is when the last attempt ended.
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// NextAttempt is when a pending callback is due.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Delivered is when the receiver took the callback.
	Delivered time.Time `json:"delivered,omitzero"`
	// InFlight is true while a delivery attempt is in progress.
	InFlight bool `json:"in_flight,omitempty"`
}

// Stats are counts and sizes of a store.
type Stats struct {
	// Pending, Dead and Delivered count the callbacks by state (delivered
	// ones within the retention window).
	Pending   int `json:"pending"`
	Dead      int `json:"dead"`
	Delivered int `json:"delivered"`
	// InFlight is the number of deliveries in progress.
	InFlight int `json:"in_flight"`
	// OldestPending is the received time of the oldest pending callback,
	// zero if there is none; its age is the delivery lag.
	OldestPending time.Time `json:"oldest_pending,omitzero"`
	// DiskBytes is the size of the log on disk.
	DiskBytes int64 `json:"disk_bytes"`
	// LiveBytes is the part of DiskBytes that compaction would keep.
	LiveBytes int64 `json:"live_bytes"`
	// Segments is the number of log segment files.
	Segments int `json:"segments"`
	// SkippedRecords counts the torn or corrupt records skipped when the
	// store was opened.
	SkippedRecords int `json:"skipped_records"`
	// Keys counts the callbacks whose bodies are stored (pending and
	// dead ones) by the id of the key that encrypts them, KeyPlaintext
	// for those stored unencrypted. A key may be retired once no
	// callback counts under its id.
	Keys map[string]int `json:"keys,omitempty"`
}

// KeyPlaintext is the key id of Stats.Keys for the callbacks stored
// unencrypted.
const KeyPlaintext = "plaintext"

// Errors of a Store. The route answers 503 with Retry-After for any error
// of Append that matches ErrUnavailable (ErrFull included), never a 2xx.
var (
	// ErrUnavailable is wrapped by the errors of writes that failed: disk
	// full, read-only file system, I/O error. The error also wraps the
	// underlying error (e.g. syscall.ENOSPC).
	ErrUnavailable = errors.New("queue: storage unavailable")
	// ErrFull is returned by Append when the store has reached its disk
	// bound. It matches ErrUnavailable.
	ErrFull = fmt.Errorf("%w: disk bound reached", ErrUnavailable)
	// ErrClosed is returned by operations on a closed store.
	ErrClosed = errors.New("queue: closed")
	// ErrNotFound is returned for an unknown callback id.
	ErrNotFound = errors.New("queue: no such callback")
	// ErrDelivered is returned by Load and Retry for a delivered
	// callback, whose body is not kept.
	ErrDelivered = errors.New("queue: callback already delivered")
	// ErrInvalid is wrapped by the errors of Append for an unacceptable
	// entry (bad id, body too large).
	ErrInvalid = errors.New("queue: invalid entry")
	// ErrTooLarge is wrapped by the errors of Append for an entry larger
	// than the store takes (a JetStream message above the servers'
	// max_payload). It matches ErrInvalid.
	ErrTooLarge = fmt.Errorf("%w: too large for the store", ErrInvalid)
)

// MaxIDLen is the longest callback id a Store accepts.
const MaxIDLen = 128

// CheckID reports whether id is an acceptable callback id: 1 to MaxIDLen
// bytes of letters, digits and "-_.:". The error wraps ErrInvalid.
func CheckID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("%w: id must be 1 to %d bytes", ErrInvalid, MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return fmt.Errorf("%w: id contains %q", ErrInvalid, c)
		}
	}
	return nil
}
