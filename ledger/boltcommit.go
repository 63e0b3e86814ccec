package ledger

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Group commit: bbolt fsyncs each read-write transaction on commit, and
// runs one at a time, so a change per transaction caps the writes at a
// few hundred a second whatever the callers (each upload, each
// callback's claim waits for the fsyncs of all those before it). The
// store's changes go instead to one committer goroutine, which runs
// every change that has come in while the previous commit was on disk
// in one transaction, in their order, and commits them together: one
// fsync for all. A change alone is committed at once (no delay to wait
// for others); under load, a commit carries whatever waited.
//
// A change's own refusal (its batch not found, a lease held, an
// update's function returning an error...) comes before it writes
// anything, so it is answered to its caller and the others stay in the
// transaction. A change whose write fails (wrapped by abort) leaves the
// transaction in an unknown state: it is rolled back, that change
// answered its error, and the others run again in a new transaction;
// a failed commit answers its error to every change in it. A change
// that panics is treated as a failed write, and its caller panics.

// maxGroup bounds the changes of one transaction.
const maxGroup = 256

// change is one change waiting for the committer.
type change struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// abortError marks an error of a write: the transaction must be rolled
// back.
type abortError struct{ err error }

func (e abortError) Error() string { return e.err.Error() }
func (e abortError) Unwrap() error { return e.err }

// abort wraps a write's error (nil stays nil).
func abort(err error) error {
	if err == nil {
		return nil
	}
	return abortError{err}
}

// startCommitter starts the committer goroutine; stopCommitter ends it.
func (s *BoltStore) startCommitter() {
	s.changes = make(chan *change, maxGroup)
	s.committerDone = make(chan struct{})
	go s.committer()
}

// write runs fn in a read-write transaction shared with the changes
// that wait with it, and returns once that transaction is committed (or
// fn refused, or the commit failed). fn may run more than once (after
// another change's failed write): it must do nothing but read and
// write tx and set variables of its caller. Call it between enter and
// leave.
func (s *BoltStore) write(fn func(*bolt.Tx) error) error {
	c := &change{fn: fn, done: make(chan error, 1)}
	s.changes <- c
	err := <-c.done
	var p panicError
	if errors.As(err, &p) {
		panic(p.v) // in the caller's goroutine, where it belongs
	}
	return err
}

// panicError carries a change's panic from the committer back to its
// caller.
type panicError struct{ v any }

func (e panicError) Error() string { return fmt.Sprintf("ledger: a change panicked: %v", e.v) }

// run runs c in tx; a panic aborts the transaction, as a failed write
// does, and goes back to c's caller.
func (c *change) run(tx *bolt.Tx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = abortError{panicError{v}}
		}
	}()
	return c.fn(tx)
}

func (s *BoltStore) committer() {
	defer close(s.committerDone)
	group := make([]*change, 0, maxGroup)
	for {
		c, ok := <-s.changes
		if !ok {
			return
		}
		group = append(group[:0], c)
	more:
		for len(group) < maxGroup {
			select {
			case c, ok := <-s.changes:
				if !ok {
					break more
				}
				group = append(group, c)
			default:
				break more
			}
		}
		s.commit(group)
	}
}

// commit runs the group's changes in one transaction and answers each.
func (s *BoltStore) commit(group []*change) {
	errs := make([]error, len(group))
	for len(group) > 0 {
		failed := -1
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, c := range group {
				err := c.run(tx)
				var ae abortError
				if errors.As(err, &ae) {
					failed = i
					return err
				}
				errs[i] = err
			}
			return nil
		})
		switch {
		case failed >= 0:
			// Rolled back: the change that failed gets its error, the
			// others run again without it.
			group[failed].done <- err
			group = append(group[:failed:failed], group[failed+1:]...)
			errs = append(errs[:failed:failed], errs[failed+1:]...)
			continue
		case err != nil:
			for _, c := range group {
				c.done <- err
			}
		default:
			for i, c := range group {
				c.done <- errs[i]
			}
		}
		return
	}
}
