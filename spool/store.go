package spool

import (
	"errors"
	"fmt"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// The queue types, which FileSpool implements and uses; see package queue.
type (
	Store        = queue.Store
	Entry        = queue.Entry
	AppendResult = queue.AppendResult
	State        = queue.State
	Info         = queue.Info
	Stats        = queue.Stats
)

// States of a callback; see package queue.
const (
	AnyState       = queue.AnyState
	StatePending   = queue.StatePending
	StateDead      = queue.StateDead
	StateDelivered = queue.StateDelivered
)

// ParseState parses "pending", "dead", "delivered", or "" (AnyState).
func ParseState(name string) (State, error) { return queue.ParseState(name) }

// Errors of a Store; see package queue.
var (
	ErrUnavailable = queue.ErrUnavailable
	ErrFull        = queue.ErrFull
	ErrClosed      = queue.ErrClosed
	ErrNotFound    = queue.ErrNotFound
	ErrDelivered   = queue.ErrDelivered
	ErrInvalid     = queue.ErrInvalid
	ErrTooLarge    = queue.ErrTooLarge
	// ErrLocked is returned by Open when another FileSpool, in this
	// process or another, has the directory open.
	ErrLocked = errors.New("spool: directory in use by another spool")
)

// validateEntry checks the parts of e that the log format constrains.
func validateEntry(e *Entry) error {
	if err := queue.CheckID(e.ID); err != nil {
		return err
	}
	if enqueueSize(e.ID, e.Header, e.Body) > maxPayload {
		return fmt.Errorf("%w: body of %d bytes", ErrTooLarge, len(e.Body))
	}
	return nil
}
