package reconcile

import (
	"context"
	"time"
)

// Outcome is the outcome of one poll of a batch: the label of the
// metric of polls by outcome.
type Outcome string

// Outcomes of a poll.
const (
	// OutcomeOK: every page read, every document found available
	// claimed and handed to the queue (or taken by another delivery).
	OutcomeOK Outcome = "ok"
	// OutcomeThrottled: Atlas answered 429; the batch and every poll of
	// this instance back off for its Retry-After.
	OutcomeThrottled Outcome = "throttled"
	// OutcomeFailed: a 5xx, a network error, an answer that would not
	// decode, another 4xx, or a delivery the queue refused (retried
	// with the same delivery id at the next poll).
	OutcomeFailed Outcome = "failed"
	// OutcomeExpired: the poll's lease release expired the batch: it
	// was GiveUpAfter old with documents still pending (Missing).
	OutcomeExpired Outcome = "expired"
)

// PollReport describes one poll, for metrics and logs.
type PollReport struct {
	BatchID string
	// Owner is the poll's lease owner (instance id and counter).
	Owner   string
	Outcome Outcome
	// Requests counts the extracts requests of the poll.
	Requests int
	// Available counts the documents found available, Delivered those
	// handed to the queue (won by this poll's claims, or re-queued by a
	// repair), Taken those another delivery had won already.
	Available, Delivered, Taken int
	// Claimed counts the documents this poll's claims took from pending:
	// the documents received by polling (Delivered also counts those a
	// repair queued again).
	Claimed int
	// Completed is true when this poll's claims received the batch's
	// last pending document; UploadToComplete is then the time from the
	// batch's upload to its completion, on the ledger's clock.
	Completed        bool
	UploadToComplete time.Duration
	// Deliveries are the ids of the deliveries handed to the queue.
	Deliveries []string
	// Repair is true when the batch's previous poll left its lease
	// unreleased (it died, or the queue refused a delivery): its poll
	// deliveries were handed to the queue again under their ids.
	Repair bool
	// Missing lists the documents still pending of a batch this poll
	// expired.
	Missing []string
	// Dropped lists the deliveries given up on: claimed by a poll (this
	// one, or the one it repaired) and still not queued twice
	// GiveUpAfter after the upload. Their documents are received in the
	// ledger and will not reach the app.
	Dropped []string
	// NextPoll is when the batch is due next (zero once finished and
	// released).
	NextPoll time.Time
	// Err is the poll's error, nil for OutcomeOK and OutcomeExpired
	// (unless the expiry came with an error).
	Err error
	// Took is how long the poll took, on the reconciler's clock.
	Took time.Duration
}

// Observer receives the reconciler's hooks, for metrics and tracing:
// the Caddy side implements it. Its methods may be called concurrently.
type Observer interface {
	// PollStart is called as a poll of batchID begins, once its lease
	// is taken. The context it returns is the poll's: it carries the
	// poll's span, and is the context of the poll's extracts requests
	// and of Enqueue, so that a polled document's delivery carries the
	// trace.
	PollStart(ctx context.Context, batchID string) context.Context
	// PollEnd is called with the poll's context once it is over (its
	// lease released or held), and ends the span.
	PollEnd(ctx context.Context, r PollReport)
}

// NopObserver observes nothing.
type NopObserver struct{}

// PollStart returns ctx.
func (NopObserver) PollStart(ctx context.Context, _ string) context.Context { return ctx }

// PollEnd does nothing.
func (NopObserver) PollEnd(context.Context, PollReport) {}
