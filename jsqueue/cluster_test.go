package jsqueue

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
	"github.com/caddy-atlas/caddy-atlas/spool"
	"github.com/caddy-atlas/caddy-atlas/spool/spooltest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterLeaderLoss appends distinct callbacks through two
// instances to an R3 stream on a 3-node cluster and shuts the stream
// leader down in the middle: every acknowledged callback is delivered
// (at least once, with its id), none lost. Appends refused during the
// leader election are retried, as Atlas retries a 503.
func TestClusterLeaderLoss(t *testing.T) {
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
	if _, err := Open(testOptions(u, r1, 3, spool.Options{})); err == nil || !strings.Contains(err.Error(), "replicas 1") ||
		!strings.Contains(err.Error(), "wants 3") {
		t.Errorf("Open(R3) over an R1 stream = %v", err)
	}

	stream := newStreamName()
	rec := &spooltest.Recorder{}
	a := openQueue(t, testOptions(u, stream, 3, spool.Options{Deliver: rec.Deliver, Concurrency: 8}))
	rev := []string{u[2], u[1], u[0]}
	b := openQueue(t, testOptions(rev, stream, 3, spool.Options{Deliver: rec.Deliver, Concurrency: 8}))

	const n, workers = 300, 8
	var acked, refused atomic.Int64
	killed := make(chan string, 1)
	var once sync.Once
	kill := func() {
		if nd := natstest.StreamLeader(nodes, stream); nd != nil {
			nd.Stop()
			killed <- nd.Name()
			return
		}
		killed <- ""
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			q := a
			if w%2 == 1 {
				q = b
			}
			for i := w; i < n; i += workers {
				deadline := time.Now().Add(30 * time.Second)
				for {
					_, err := q.Append(context.Background(), spooltest.Entry(i, 1024))
					if err == nil {
						break
					}
					refused.Add(1)
					if time.Now().After(deadline) {
						t.Errorf("Append(%s) refused for 30s: %v", spooltest.ID(i), err)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
				if acked.Add(1) == n/3 {
					once.Do(func() { go kill() })
				}
			}
		})
	}
	wg.Wait()
	leader := <-killed
	if leader == "" {
		t.Fatal("found no stream leader to shut down")
	}
	t.Logf("shut down stream leader %s after %d acks; %d appends refused and retried", leader, n/3, refused.Load())
	spooltest.WaitFor(t, "every acknowledged callback delivered", func() bool {
		for i := range n {
			if rec.Count(spooltest.ID(i)) == 0 {
				return false
			}
		}
		return true
	})
	dups := len(rec.Deliveries()) - n
	t.Logf("%d deliveries for %d callbacks (%d redeliveries)", len(rec.Deliveries()), n, dups)
	spooltest.WaitFor(t, "the work stream to drain", func() bool { st := a.Stats(); return st.Pending == 0 && st.Delivered == n })
}
