package jsqueue

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
	"github.com/caddy-atlas/caddy-atlas/queue/queuetest"
)

// testAckWait is short so that takeovers happen quickly in tests.
const testAckWait = time.Second

// testOptions maps the suite's delivery options onto a Queue on urls.
func testOptions(urls []string, stream string, replicas int, o queuetest.Options) Options {
	return Options{
		URLs: urls, Stream: stream, Replicas: replicas, AckWait: testAckWait,
		Deliver: o.Deliver, Retention: o.Retention, MaxAttempts: o.MaxAttempts, BackoffMin: o.BackoffMin,
		BackoffMax: o.BackoffMax, DeliveryTimeout: o.DeliveryTimeout, Concurrency: o.Concurrency,
		Logger: o.Logger, Observer: o.Observer,
	}
}

// testStore is a Queue whose Reconfigure takes queuetest.Options.
type testStore struct {
	*Queue
	urls   []string
	stream string
}

func (s testStore) Reconfigure(o queuetest.Options) error {
	return s.Queue.Reconfigure(testOptions(s.urls, s.stream, 1, o))
}

var streamSeq atomic.Int64

func newStreamName() string { return fmt.Sprintf("T%d", streamSeq.Add(1)) }

// openQueue opens a Queue and closes it at the end of the test.
func openQueue(t testing.TB, o Options) *Queue {
	t.Helper()
	q, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { q.Close(context.Background()) })
	return q
}

// TestConformance runs the Store suite shared with the spool against a
// single nats-server.
func TestConformance(t *testing.T) {
	n := natstest.Start(t)
	queuetest.Run(t, func(t *testing.T) queuetest.Opener {
		stream := newStreamName()
		return func(t *testing.T, o queuetest.Options) queuetest.Store {
			u := []string{n.URL()}
			return testStore{Queue: openQueue(t, testOptions(u, stream, 1, o)), urls: u, stream: stream}
		}
	})
}
