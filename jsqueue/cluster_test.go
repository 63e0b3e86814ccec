package jsqueue

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
	"github.com/caddy-atlas/caddy-atlas/queue/queuetest"
)

// TestClusterLeaderLoss appends distinct callbacks through two
// instances to an R3 stream on a 3-node cluster and shuts the stream
// leader down in the middle: every acknowledged callback is delivered
// (at least once, with its id), none lost. Appends refused during the
// leader election are retried, as Atlas retries a 503.
func TestClusterLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-server cluster through a leader loss: not under -short")
	}
	nodes := natstest.StartCluster(t, 3)
	u := natstest.URLs(nodes)

	// An existing stream with other replicas is reported, not changed.
	js := rawJS(t, u[0])
	ctx := context.Background()
	r1 := newStreamName()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: r1, Subjects: []string{r1 + ".q.*"}, Retention: jetstream.WorkQueuePolicy, Replicas: 1,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(testOptions(u, r1, 3, queuetest.Options{})); err == nil || !strings.Contains(err.Error(), "replicas 1") ||
		!strings.Contains(err.Error(), "wants 3") {
		t.Errorf("Open(R3) over an R1 stream = %v", err)
	}

	stream := newStreamName()
	rec := &queuetest.Recorder{}
	a := openQueue(t, testOptions(u, stream, 3, queuetest.Options{Deliver: rec.Deliver, Concurrency: 8}))
	rev := []string{u[2], u[1], u[0]}
	b := openQueue(t, testOptions(rev, stream, 3, queuetest.Options{Deliver: rec.Deliver, Concurrency: 8}))

	const n, workers = 300, 8
	leader, refused := loadThroughLeaderLoss(t, a, b, rec, n, workers, func() string {
		if nd := natstest.StreamLeader(nodes, stream); nd != nil {
			nd.Stop()
			return nd.Name()
		}
		return ""
	})
	t.Logf("shut down stream leader %s after %d acks; %d appends refused and retried", leader, n/3, refused)
	dups := len(rec.Deliveries()) - n
	t.Logf("%d deliveries for %d callbacks (%d redeliveries)", len(rec.Deliveries()), n, dups)
	testutil.WaitFor(t, 20*time.Second, "the work stream to drain", func() bool { st := a.Stats(); return st.Pending == 0 && st.Delivered == n })
}

// loadThroughLeaderLoss appends n distinct callbacks through a and b
// (workers goroutines, alternating between them), calls lose once n/3
// are acknowledged, retrying each refused append for up to 30 s as Atlas
// retries a 503, and waits until every acknowledged callback has been
// delivered. lose returns the name of the server it took down, "" if it
// found no stream leader. It returns that name and how many appends were
// refused and retried.
func loadThroughLeaderLoss(t *testing.T, a, b *Queue, rec *queuetest.Recorder, n, workers int, lose func() string) (string, int64) {
	t.Helper()
	var acked, refused atomic.Int64
	lost := make(chan string, 1)
	var once sync.Once
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			q := a
			if w%2 == 1 {
				q = b
			}
			for i := w; i < n; i += workers {
				for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
					_, err := q.Append(context.Background(), queuetest.Entry(i, 1024))
					if err == nil {
						break
					}
					refused.Add(1)
					if time.Now().After(deadline) {
						t.Errorf("Append(%s) refused for 30s: %v", queuetest.ID(i), err)
						return
					}
				}
				if acked.Add(1) == int64(n/3) {
					once.Do(func() { go func() { lost <- lose() }() })
				}
			}
		})
	}
	wg.Wait()
	leader := <-lost
	if leader == "" {
		t.Fatal("found no stream leader to take down")
	}
	testutil.WaitFor(t, 20*time.Second, "every acknowledged callback delivered", func() bool {
		for i := range n {
			if rec.Count(queuetest.ID(i)) == 0 {
				return false
			}
		}
		return true
	})
	return leader, refused.Load()
}

// TestClusterNoRefusals: while two of three servers stand, appends are
// not refused. Load runs through two instances while the stream leader
// is shut down, started again (it rejoins), and the new leader shut down
// and started again in turn: every Append succeeds at its first call
// (a publish that gets no answer is retried within PublishTimeout), and
// every callback is delivered.
func TestClusterNoRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-server cluster through node losses and rejoins: not under -short")
	}
	nodes := natstest.StartCluster(t, 3)
	u := natstest.URLs(nodes)
	stream := newStreamName()
	rec := &queuetest.Recorder{}
	a := openQueue(t, testOptions(u, stream, 3, queuetest.Options{Deliver: rec.Deliver, Concurrency: 8}))
	b := openQueue(t, testOptions([]string{u[2], u[1], u[0]}, stream, 3, queuetest.Options{Deliver: rec.Deliver, Concurrency: 8}))

	var next, acked atomic.Int64
	var refusals []string
	var mu sync.Mutex
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			q := a
			if w%2 == 1 {
				q = b
			}
			for {
				select {
				case <-done:
					return
				default:
				}
				i := int(next.Add(1) - 1)
				start := time.Now()
				if _, err := q.Append(context.Background(), queuetest.Entry(i, 1024)); err != nil {
					mu.Lock()
					refusals = append(refusals, fmt.Sprintf("%s after %s: %v", queuetest.ID(i), time.Since(start).Round(time.Millisecond), err))
					mu.Unlock()
					continue
				}
				acked.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	var faults []string
	for round := range 2 {
		time.Sleep(time.Second)
		leader := natstest.StreamLeader(nodes, stream)
		if leader == nil {
			t.Fatalf("round %d: no stream leader", round)
		}
		leader.Stop()
		faults = append(faults, "stopped "+leader.Name())
		time.Sleep(3 * time.Second)
		leader.Start()
		faults = append(faults, "started "+leader.Name())
		time.Sleep(3 * time.Second)
	}
	close(done)
	wg.Wait()
	t.Logf("%d callbacks acknowledged through %s", acked.Load(), strings.Join(faults, ", "))
	if len(refusals) > 0 {
		t.Errorf("%d appends refused while a quorum stood, e.g. %s", len(refusals), refusals[0])
	}
	n := int(next.Load())
	testutil.WaitFor(t, 30*time.Second, "every acknowledged callback delivered", func() bool {
		delivered := 0
		for i := range n {
			if rec.Count(queuetest.ID(i)) > 0 {
				delivered++
			}
		}
		return delivered >= int(acked.Load())
	})
}
