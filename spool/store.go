package spool

import (
	"errors"
	"fmt"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// ErrLocked is returned by Open when another FileSpool, in this process
// or another, has the directory open.
var ErrLocked = errors.New("spool: directory in use by another spool")

// validateEntry checks the parts of e that the log format constrains.
func validateEntry(e *queue.Entry) error {
	if err := queue.CheckID(e.ID); err != nil {
		return err
	}
	if enqueueSize(e.ID, e.Header, e.Body) > maxPayload {
		return fmt.Errorf("%w: body of %d bytes", queue.ErrTooLarge, len(e.Body))
	}
	return nil
}
