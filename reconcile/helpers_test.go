package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/ledger"
)

// testPolicy: first poll 5 minutes after the upload, then every 2
// minutes, give up after an hour.
var testPolicy = ledger.Policy{PollAfter: 5 * time.Minute, PollEvery: 2 * time.Minute, GiveUpAfter: time.Hour}

// env is a simulator, a BoltStore and a queue on one fake clock.
type env struct {
	t     *testing.T
	clock *testutil.Clock
	sim   *atlastest.Server
	store *ledger.BoltStore
	q     *fakeQueue
	hc    *http.Client
}

func newEnv(t *testing.T, so atlastest.Options, p ledger.Policy) *env {
	t.Helper()
	clock := testutil.NewClock(testutil.Epoch)
	so.Now = clock.Now
	sim := atlastest.NewServer(t, so)
	store, err := ledger.Open(t.TempDir(), ledger.Options{Policy: p, Now: clock.Now, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	src, err := atlasclient.NewTokenSource(atlasclient.TokenOptions{
		Endpoint: sim.URL, ClientID: atlastest.DefaultClientID, ClientSecret: atlastest.DefaultClientSecret,
		Now: clock.Now, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	return &env{t: t, clock: clock, sim: sim, store: store, q: newFakeQueue(), hc: &http.Client{Transport: &atlasclient.Transport{Source: src}}}
}

// fetcher is the HTTP fetcher of the docstream service, per_page n.
func (e *env) fetcher(perPage int) *HTTPFetcher {
	return &HTTPFetcher{Endpoint: e.sim.URL, Client: e.hc, PerPage: perPage, Now: e.clock.Now}
}

// ticking is the reconciler's clock in the tests that step the clock
// themselves: each reading moves it a millisecond, so that the rate
// limiter's waits end.
func (e *env) ticking() func() time.Time {
	return func() time.Time { e.clock.Advance(time.Millisecond); return e.clock.Now() }
}

// reconciler returns a reconciler on the env's store and queue.
func (e *env) reconciler(o Options) *Reconciler {
	e.t.Helper()
	o.Store = e.store
	if o.Enqueuer == nil {
		o.Enqueuer = e.q
	}
	if o.Now == nil {
		o.Now = e.ticking()
	}
	if o.Rate == 0 {
		o.Rate = 100
	}
	if o.Tick == 0 {
		o.Tick = time.Millisecond
	}
	r, err := New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { r.Close() })
	return r
}

// upload creates a batch at the simulator (bulk or not) and records it.
func (e *env) upload(bulk bool, docs ...string) string {
	e.t.Helper()
	var id string
	if bulk {
		id = e.sim.CreateBulkBatch(docs...)
	} else {
		id = e.sim.CreateBatch(docs...)
	}
	b := &ledger.Batch{ID: id, ProductType: "LOAN_APP", Uploaded: e.clock.Now()}
	for _, d := range docs {
		b.Documents = append(b.Documents, ledger.Document{ID: d})
	}
	if _, err := e.store.Create(context.Background(), b); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) batch(id string) *ledger.Batch {
	e.t.Helper()
	b, err := e.store.Get(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// scan runs one scan and waits for its polls.
func (e *env) scan(r *Reconciler) int {
	e.t.Helper()
	n, err := r.Scan(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	r.Wait()
	return n
}

// checkDelivered checks that every document of docs reached the queue
// exactly once, with the simulator's bytes, under the delivery id the
// ledger recorded, and that the ledger says received (or failed) by
// poll.
func (e *env) checkDelivered(batchID string, docs ...string) {
	e.t.Helper()
	b := e.batch(batchID)
	byID := map[string]ledger.Document{}
	for _, d := range b.Documents {
		byID[d.ID] = d
	}
	for _, id := range docs {
		got := e.q.docs(id)
		if len(got) != 1 {
			e.t.Fatalf("document %s queued %d times, want once", id, len(got))
		}
		d := byID[id]
		if d.State == ledger.DocPending || d.Source != ledger.SourcePoll || d.DeliveryID != got[0].del.ID {
			e.t.Fatalf("document %s in the ledger: %+v; queued under %s", id, d, got[0].del.ID)
		}
		var el struct {
			DocumentID string          `json:"document_id"`
			FileData   json.RawMessage `json:"file_data"`
		}
		if err := json.Unmarshal(got[0].raw, &el); err != nil {
			e.t.Fatal(err)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, e.sim.FileData(id)); err != nil {
			e.t.Fatal(err)
		}
		if el.DocumentID != id || !bytes.Equal(el.FileData, want.Bytes()) {
			e.t.Fatalf("document %s delivered as %s, want file_data %s", id, got[0].raw, want.Bytes())
		}
		if _, code := atlastest.Classify(id); code != d.ErrorCode || (code != "") != (d.State == ledger.DocFailed) {
			e.t.Fatalf("document %s: ledger state %s error %q, want error %q", id, d.State, d.ErrorCode, code)
		}
	}
}

// fakeQueue is a durable queue that deduplicates on the delivery id,
// as the spool and JetStream do, and refuses appends on demand.
type fakeQueue struct {
	mu     sync.Mutex
	byID   map[string]Delivery
	order  []Delivery
	calls  []string // every Enqueue's id, refused ones too
	refuse int      // refuse the next n appends
}

func newFakeQueue() *fakeQueue { return &fakeQueue{byID: map[string]Delivery{}} }

var errQueueFull = errors.New("queue: disk full")

func (q *fakeQueue) Enqueue(_ context.Context, d Delivery) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls = append(q.calls, d.ID)
	if q.refuse > 0 {
		q.refuse--
		return errQueueFull
	}
	if _, dup := q.byID[d.ID]; dup {
		return nil
	}
	q.byID[d.ID] = d
	q.order = append(q.order, d)
	return nil
}

func (q *fakeQueue) refuseNext(n int) {
	q.mu.Lock()
	q.refuse = n
	q.mu.Unlock()
}

type queued struct {
	del Delivery
	raw json.RawMessage
}

// docs returns the stored deliveries carrying document id, with its
// element.
func (q *fakeQueue) docs(id string) []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []queued
	for _, d := range q.order {
		var body struct {
			Data []json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(d.Body, &body); err != nil {
			panic(err)
		}
		if len(body.Data) != len(d.DocumentIDs) {
			panic(fmt.Sprintf("delivery %s: %d elements, %d ids", d.ID, len(body.Data), len(d.DocumentIDs)))
		}
		for i, did := range d.DocumentIDs {
			if did == id {
				out = append(out, queued{del: d, raw: body.Data[i]})
			}
		}
	}
	return out
}

func (q *fakeQueue) stored() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

func (q *fakeQueue) callsOf(id string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, c := range q.calls {
		if c == id {
			n++
		}
	}
	return n
}

// recorder is an Observer that keeps the reports.
type recorder struct {
	mu      sync.Mutex
	reports []PollReport
	started int
}

type spanKey struct{}

func (o *recorder) PollStart(ctx context.Context, batchID string) context.Context {
	o.mu.Lock()
	o.started++
	o.mu.Unlock()
	return context.WithValue(ctx, spanKey{}, "span:"+batchID)
}

func (o *recorder) PollEnd(ctx context.Context, r PollReport) {
	if ctx.Value(spanKey{}) != "span:"+r.BatchID {
		panic("PollEnd without the poll's context")
	}
	o.mu.Lock()
	o.reports = append(o.reports, r)
	o.mu.Unlock()
}

func (o *recorder) outcomes() map[Outcome]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := map[Outcome]int{}
	for _, r := range o.reports {
		m[r.Outcome]++
	}
	return m
}

func (o *recorder) all() []PollReport {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]PollReport(nil), o.reports...)
}

// drive moves the clock step every millisecond of real time until the
// returned stop is called.
func drive(clock *testutil.Clock, step time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				clock.Advance(step)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
