package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
	"github.com/caddy-atlas/caddy-atlas/ledger"
	"github.com/caddy-atlas/caddy-atlas/ledger/ledgertest"
)

// connect returns a JetStream context on url, closed at the end of the
// test.
func connect(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func openJS(t testing.TB, js jetstream.JetStream, o ledger.JetStreamOptions) *ledger.JetStreamStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := ledger.OpenJetStream(ctx, js, o)
	if err != nil {
		t.Fatalf("OpenJetStream: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestJetStreamConformance runs the Store suite against a real
// nats-server, a bucket per test.
func TestJetStreamConformance(t *testing.T) {
	srv := natstest.Start(t)
	var n atomic.Int64
	ledgertest.Run(t, func(t *testing.T) ledgertest.Opener {
		bucket := fmt.Sprintf("T%d", n.Add(1))
		js := connect(t, srv.URL())
		return func(t *testing.T, o ledgertest.Options) ledger.Store {
			return openJS(t, js, ledger.JetStreamOptions{Policy: o.Policy, Now: o.Now, Bucket: bucket, Replicas: 1})
		}
	})
}

// TestJetStreamCluster: two stores on two servers of a 3-node cluster
// share an R3 bucket: concurrent claims of one batch win each document
// once, one lease is taken of many, one Begin is new, and a watch on one
// instance sees the other's claim.
func TestJetStreamCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	nodes := natstest.StartCluster(t, 3)
	clock := testutil.NewClock(testutil.Epoch)
	o := ledger.JetStreamOptions{Policy: ledgertest.Policy, Now: clock.Now, Replicas: 3}
	a := openJS(t, connect(t, nodes[0].URL()), o)
	b := openJS(t, connect(t, nodes[1].URL()), o)
	stores := []ledger.Store{a, b}
	ctx := context.Background()

	const nDocs, nClaims = 30, 12
	var docs []ledger.Document
	for i := range nDocs {
		docs = append(docs, ledger.Document{ID: fmt.Sprintf("d-%d", i)})
	}
	if _, err := a.Create(ctx, &ledger.Batch{ID: "B", Documents: docs}); err != nil {
		t.Fatal(err)
	}
	_, err := b.Create(ctx, &ledger.Batch{ID: "B", Documents: docs})
	if !errors.Is(err, ledger.ErrExists) {
		t.Fatalf("Create on the other instance: %v, want ErrExists", err)
	}

	// A watch on b sees a's claim.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := b.Watch(wctx, "B")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := a.Claim(ctx, "B", ledger.Claim{Source: ledger.SourceCallback, DeliveryID: "first", Results: []ledger.Result{{DocumentID: "d-0"}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Logf("watch on the other instance signalled %v after the claim", time.Since(start).Round(time.Millisecond))
	case <-time.After(time.Second):
		t.Fatal("no signal on the other instance within a second")
	}

	var mu sync.Mutex
	won := map[string][]string{}
	var wg sync.WaitGroup
	for w := range nClaims {
		wg.Go(func() {
			s := stores[w%2]
			delivery := fmt.Sprintf("cb-%d", w)
			c := ledger.Claim{Source: ledger.SourceCallback, DeliveryID: delivery}
			for i := range nDocs {
				if (i+w)%3 != 0 {
					c.Results = append(c.Results, ledger.Result{DocumentID: fmt.Sprintf("d-%d", i)})
				}
			}
			r, err := s.Claim(ctx, "B", c)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, d := range r.Won {
				won[d] = append(won[d], delivery)
			}
		})
	}
	wg.Wait()
	got, err := b.Get(ctx, "B")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range got.Documents[1:] {
		if len(won[d.ID]) != 1 || won[d.ID][0] != d.DeliveryID {
			t.Fatalf("%s won by %q, recorded %q", d.ID, won[d.ID], d.DeliveryID)
		}
	}
	if got.State != ledger.StateComplete {
		t.Fatalf("state %s", got.State)
	}

	// Leases: one of many, across instances.
	if _, err := a.Create(ctx, &ledger.Batch{ID: "L", Documents: docs[:1]}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(ledgertest.Policy.PollAfter)
	for _, s := range stores {
		ds, err := s.Due(ctx, 10, "")
		if err != nil || len(ds) != 1 || ds[0].BatchID != "L" {
			t.Fatalf("Due: %v %v", ds, err)
		}
	}
	var leases, news atomic.Int64
	for w := range 10 {
		wg.Go(func() {
			_, err := stores[w%2].TakeLease(ctx, "L", fmt.Sprintf("r%d", w), time.Minute)
			switch {
			case err == nil:
				leases.Add(1)
			case errors.Is(err, ledger.ErrLeaseHeld), errors.Is(err, ledger.ErrNotDue):
			default:
				t.Error(err)
			}
		})
		wg.Go(func() {
			r, err := stores[w%2].Begin(ctx, "k", "d")
			if err != nil {
				t.Error(err)
			} else if r.Outcome == ledger.IdemNew {
				news.Add(1)
			}
		})
	}
	wg.Wait()
	if leases.Load() != 1 || news.Load() != 1 {
		t.Fatalf("%d leases taken, %d Begins new; want 1 and 1", leases.Load(), news.Load())
	}
	for _, s := range stores {
		ds, err := s.Due(ctx, 10, "")
		if err != nil || len(ds) != 0 {
			t.Fatalf("Due while leased: %v %v", ds, err)
		}
	}
}

// TestJetStreamKeys: ids that are not KV tokens (dots, wildcards,
// spaces, '=', non-ASCII) are escaped, and do not collide.
func TestJetStreamKeys(t *testing.T) {
	srv := natstest.Start(t)
	s := openJS(t, connect(t, srv.URL()), ledger.JetStreamOptions{Replicas: 1})
	ctx := context.Background()
	ids := []string{"a.b", "a", "*", ">", "a b", "=YQ", "é", "a..b", ".", "BATCH-1_x"}
	for _, id := range ids {
		if _, err := s.Create(ctx, &ledger.Batch{ID: id, Documents: []ledger.Document{{ID: id}, {ID: "shared"}}}); err != nil {
			t.Fatalf("Create(%q): %v", id, err)
		}
	}
	for _, id := range ids {
		b, err := s.Get(ctx, id)
		if err != nil || b.ID != id {
			t.Fatalf("Get(%q): %v %v", id, b, err)
		}
		refs, err := s.Lookup(ctx, id)
		if err != nil || len(refs) != 1 || refs[0].BatchID != id {
			t.Fatalf("Lookup(%q): %v %v", id, refs, err)
		}
	}
	refs, err := s.Lookup(ctx, "shared")
	if err != nil || len(refs) != len(ids) {
		t.Fatalf("Lookup(shared): %d refs, %v", len(refs), err)
	}
	p, err := s.List(ctx, ledger.ListQuery{Limit: 100})
	if err != nil || len(p.Batches) != len(ids) {
		t.Fatalf("List: %d, %v", len(p.Batches), err)
	}
}

// TestJetStreamStaleIndex: index keys left by a writer that died (before
// its compare-and-set, or after it and before removing the old keys) are
// ignored by the readers, and removed once that is safe.
func TestJetStreamStaleIndex(t *testing.T) {
	srv := natstest.Start(t)
	js := connect(t, srv.URL())
	clock := testutil.NewClock(testutil.Epoch)
	s := openJS(t, js, ledger.JetStreamOptions{Policy: ledgertest.Policy, Now: clock.Now, Replicas: 1})
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, ledger.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, &ledger.Batch{ID: "B", Documents: []ledger.Document{{ID: "a"}}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(ledgertest.Policy.PollAfter)
	// A Create that died after writing its index keys, before its batch.
	ghost := func(key string, base uint64) {
		t.Helper()
		v, _ := json.Marshal(map[string]any{"r": base, "w": clock.Now().UnixNano()})
		if _, err := kv.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	dueKey := func(at time.Time, id string) string {
		return fmt.Sprintf("due.%d.%016x.%s", at.UnixNano()/int64(time.Minute), uint64(at.UnixNano())^1<<63, id)
	}
	ghost("d.a.G", 0)
	ghost(dueKey(clock.Now().Add(-time.Second), "G"), 0)
	// A poll that died after taking B's lease, before removing B's old
	// due key: the key is stale, written for an older revision.
	b, err := s.Get(ctx, "B")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TakeLease(ctx, "B", "r1", time.Minute); err != nil {
		t.Fatal(err)
	}
	ghost(dueKey(b.NextPoll, "B"), b.Revision)

	ds, err := s.Due(ctx, 10, "")
	if err != nil || len(ds) != 0 {
		t.Fatalf("Due with stale keys: %v %v", ds, err)
	}
	if _, err := kv.Get(ctx, dueKey(b.NextPoll, "B")); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		t.Fatalf("B's stale due key: %v, want removed", err)
	}
	if _, err := kv.Get(ctx, dueKey(clock.Now().Add(-time.Second), "G")); err != nil {
		t.Fatalf("the ghost's due key, within the grace: %v, want kept", err)
	}
	refs, err := s.Lookup(ctx, "a")
	if err != nil || len(refs) != 1 || refs[0].BatchID != "B" {
		t.Fatalf("Lookup with a ghost: %v %v", refs, err)
	}
	// Past the grace, the ghost's keys go.
	clock.Advance(ledger.DefaultOrphanGrace + time.Second)
	if _, err := s.Lookup(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "d.a.G"); err == nil {
		t.Fatal("the ghost's document key is still there")
	}
	if _, err := s.Due(ctx, 10, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, dueKey(testutil.Epoch.Add(ledgertest.Policy.PollAfter-time.Second), "G")); err == nil {
		t.Fatal("the ghost's due key is still there")
	}
}

// TestJetStreamOpen: a bucket's replicas are checked, and the bucket name.
func TestJetStreamOpen(t *testing.T) {
	srv := natstest.Start(t)
	js := connect(t, srv.URL())
	openJS(t, js, ledger.JetStreamOptions{Replicas: 1, Bucket: "X"})
	ctx := context.Background()
	_, err := ledger.OpenJetStream(ctx, js, ledger.JetStreamOptions{Replicas: 3, Bucket: "X"})
	if err == nil || !strings.Contains(err.Error(), "has 1 replicas") {
		t.Fatalf("replicas differ: %v", err)
	}
	_, err = ledger.OpenJetStream(ctx, js, ledger.JetStreamOptions{Bucket: "a.b"})
	if err == nil {
		t.Fatal("bucket a.b accepted")
	}
	_, err = ledger.OpenJetStream(ctx, js, ledger.JetStreamOptions{Bucket: "R3"})
	if err == nil || !errors.Is(err, ledger.ErrUnavailable) {
		t.Fatalf("replicas 3 on a single server: %v", err)
	}
}
