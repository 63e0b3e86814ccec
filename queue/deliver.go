package queue

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Defaults of the delivery options every Store takes (spool.Options,
// jsqueue.Options).
const (
	DefaultRetention       = 7 * 24 * time.Hour
	DefaultMaxAttempts     = 20
	DefaultBackoffMin      = time.Second
	DefaultBackoffMax      = 10 * time.Minute
	DefaultDeliveryTimeout = 30 * time.Second
	DefaultConcurrency     = 4
)

// DeliverFunc delivers one callback and returns nil once the receiver has
// taken it. Any error schedules a retry. It must return when ctx is done.
type DeliverFunc func(ctx context.Context, d Delivery) error

// Delivery is one delivery attempt of a callback.
type Delivery struct {
	// ID is the callback id.
	ID string
	// Header holds the stored headers; the DeliverFunc may modify it.
	Header http.Header
	// Body is the callback body as stored.
	Body []byte
	// Received is when the callback arrived.
	Received time.Time
	// Attempt is the attempt number, from 1.
	Attempt int
}

// Outcome is the result of a delivery attempt, for metrics.
type Outcome string

// Outcomes of a delivery attempt.
const (
	// OutcomeDelivered: the receiver took the callback.
	OutcomeDelivered Outcome = "delivered"
	// OutcomeFailed: an error or a non-2xx answer; a retry is scheduled
	// unless the callback is out of attempts.
	OutcomeFailed Outcome = "failed"
	// OutcomeTimeout: the attempt exceeded DeliveryTimeout; counted as a
	// failure.
	OutcomeTimeout Outcome = "timeout"
	// OutcomeCanceled: the attempt was cancelled by Close; it does not
	// count as an attempt.
	OutcomeCanceled Outcome = "canceled"
)

// Observer receives metrics events. Its methods are called synchronously
// from the store's goroutines and must be fast. Embed NopObserver to
// implement only some of them.
type Observer interface {
	// FsyncDone reports an fsync of the log: its latency and the number
	// of appends it made durable (the group-commit batch size; 0 for a
	// sync of state changes only). A store without a log of its own
	// reports each acknowledged write with appends 1.
	FsyncDone(d time.Duration, appends int)
	// DeliveryAttempt reports the outcome and duration of an attempt.
	DeliveryAttempt(outcome Outcome, d time.Duration)
	// DeadLettered reports that a callback ran out of attempts.
	DeadLettered()
}

// NopObserver is an Observer, and a spool.RetentionObserver, that does
// nothing.
type NopObserver struct{}

// FsyncDone does nothing.
func (NopObserver) FsyncDone(time.Duration, int) {}

// DeliveryAttempt does nothing.
func (NopObserver) DeliveryAttempt(Outcome, time.Duration) {}

// DeadLettered does nothing.
func (NopObserver) DeadLettered() {}

// DeadLetterExpired does nothing.
func (NopObserver) DeadLetterExpired() {}

// SafeDeliver calls fn, turning a panic into an error: a faulty
// DeliverFunc must not take the server down. Every Store's deliveries
// go through it.
func SafeDeliver(ctx context.Context, fn DeliverFunc, d Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("deliver panicked: %v", r)
		}
	}()
	return fn(ctx, d)
}

// Backoff is the delay after the given number of failed attempts: lo,
// doubling per further failure, at most hi, less up to 20% of jitter so
// that callbacks that failed together do not retry together. Every
// Store schedules retries with it (its options' BackoffMin and
// BackoffMax).
func Backoff(lo, hi time.Duration, failures int) time.Duration {
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if j := int64(d / 5); j > 0 {
		d -= time.Duration(rand.Int64N(j + 1))
	}
	return d
}

// WaitDeliveries waits for the deliveries counted by wg until ctx is
// done, then calls cancel (which cancels them) and waits for them to
// end. It reports whether it had to cancel: a Store's Close.
func WaitDeliveries(ctx context.Context, wg *sync.WaitGroup, cancel func()) (cancelled bool) {
	drained := make(chan struct{})
	go func() {
		wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		return false
	case <-ctx.Done():
		select {
		case <-drained:
			return false
		default:
			cancel()
			<-drained
			return true
		}
	}
}
