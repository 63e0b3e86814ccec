package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/ledger"
)

// docIDs returns n document ids, the last unrecognised by the simulator.
func docIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	ids[n-1] = prefix + "-pan-blurry"
	return ids
}

// Documents processed over twenty minutes are each queued once, as they
// become available, over three pages of three (the last partial), in
// every form the simulator shows pending documents in.
func TestAvailableOverTime(t *testing.T) {
	for _, form := range []string{atlastest.PendingListed, atlastest.PendingEmpty, atlastest.PendingOmitted} {
		t.Run(form, func(t *testing.T) {
			e := newEnv(t, atlastest.Options{ProcessingDelay: time.Minute, ProcessingDelayMax: 20 * time.Minute, PendingDocuments: form}, testPolicy)
			obs := &recorder{}
			r := e.reconciler(Options{Fetcher: e.fetcher(3), Observer: obs})
			docs := docIDs("loan-7", 8)
			id := e.upload(false, docs...)

			if n := e.scan(r); n != 0 {
				t.Fatalf("%d polls before poll_after", n)
			}
			polls := 0
			for e.batch(id).State == ledger.StateProcessing {
				e.clock.Advance(time.Minute)
				polls += e.scan(r)
				if polls > 20 {
					t.Fatal("not complete after 20 polls")
				}
			}
			e.checkDelivered(id, docs...)
			if got := e.q.stored(); got < 2 {
				t.Errorf("%d deliveries: documents were not delivered as they became available", got)
			}
			claimed, completed := 0, 0
			for _, rep := range obs.all() {
				if rep.Outcome != OutcomeOK || rep.Requests != 3 {
					t.Errorf("poll %+v, want ok with 3 requests", rep)
				}
				claimed += rep.Claimed
				if rep.Completed {
					completed++
					if b := e.batch(id); rep.UploadToComplete != b.Finished.Sub(b.Uploaded) || rep.UploadToComplete <= 0 {
						t.Errorf("UploadToComplete %v, want %v", rep.UploadToComplete, b.Finished.Sub(b.Uploaded))
					}
				}
			}
			if claimed != len(docs) || completed != 1 {
				t.Errorf("the polls claimed %d documents and completed the batch %d times, want %d and once", claimed, completed, len(docs))
			}
			// Complete: never polled again.
			calls := e.sim.Calls(atlastest.EndpointExtracts)
			e.clock.Advance(time.Hour)
			e.scan(r)
			if c := e.sim.Calls(atlastest.EndpointExtracts); c != calls {
				t.Errorf("a complete batch was polled: %d extracts calls, then %d", calls, c)
			}
		})
	}
}

// A page whose elements are partial (pending ones listed, left out,
// with empty or null file_data, an error_code beside file_data) counts
// only the available ones; the bytes are delivered untouched.
func TestAvailableRule(t *testing.T) {
	for _, c := range []struct {
		raw  string
		ok   bool
		code string
	}{
		{`{"document_id":"a"}`, false, ""},
		{`{"document_id":"a","file_data":{}}`, false, ""},
		{`{"document_id":"a","file_data": { } }`, false, ""},
		{`{"document_id":"a","file_data":null}`, false, ""},
		{`{"document_id":"a","file_data":{"document_type":"PAN"}}`, true, ""},
		{`{"document_id":"a","file_data":{"error_code":"UNRECOGNISED"}}`, true, "UNRECOGNISED"},
		{`{"document_id":"a","error_code":"INVALID_DOC"}`, true, "INVALID_DOC"},
		{`{"document_id":"a","file_data":{},"error_code":"INVALID_DOC"}`, true, "INVALID_DOC"},
		{`{"file_data":{"document_type":"PAN"}}`, false, ""},
		{`"a"`, false, ""},
	} {
		d, ok := inspect([]byte(c.raw))
		if ok != c.ok || d.code != c.code || (ok && string(d.raw) != c.raw) {
			t.Errorf("%s: available %v code %q, want %v %q", c.raw, ok, d.code, c.ok, c.code)
		}
	}
}

// The delivery id depends on the batch, the documents and their bytes,
// not on their order.
func TestDeliveryID(t *testing.T) {
	a, _ := inspect([]byte(`{"document_id":"a","file_data":{"x":1}}`))
	b, _ := inspect([]byte(`{"document_id":"b","file_data":{"x":1}}`))
	b2, _ := inspect([]byte(`{"document_id":"b","file_data":{"x":2}}`))
	id := deliveryID("B1", []document{a, b})
	switch {
	case id != deliveryID("B1", []document{b, a}):
		t.Error("order changes the id")
	case id == deliveryID("B2", []document{a, b}), id == deliveryID("B1", []document{a, b2}), id == deliveryID("B1", []document{a}):
		t.Error("batch, bytes or documents do not change the id")
	case !strings.HasPrefix(id, "poll-") || len(id) != 45:
		t.Errorf("id %q", id)
	}
}

// A 429 pauses every poll for its Retry-After, and the batch too; the
// rate holds meanwhile, and no request is over it.
func TestThrottled(t *testing.T) {
	p := testPolicy
	p.PollEvery = 20 * time.Second
	e := newEnv(t, atlastest.Options{}, p)
	obs := &recorder{}
	r := e.reconciler(Options{Fetcher: e.fetcher(2), Observer: obs, Rate: 2, Now: e.clock.Now, ScanEvery: time.Second, Concurrency: 3})
	var ids []string
	for i := range 6 {
		ids = append(ids, e.upload(false, fmt.Sprintf("b%d-a", i), fmt.Sprintf("b%d-b", i), fmt.Sprintf("b%d-c", i)))
	}
	e.clock.Advance(testPolicy.PollAfter)
	e.sim.ThrottleNext(atlastest.EndpointExtracts, 1, 10*time.Second)
	stop := drive(e.clock, 20*time.Millisecond)
	defer stop()
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "every batch complete", func() bool {
		for _, id := range ids {
			if b, _ := e.store.Get(context.Background(), id); b.State != ledger.StateComplete {
				return false
			}
		}
		return true
	})
	stop()
	r.Close()
	for i, id := range ids {
		e.checkDelivered(id, fmt.Sprintf("b%d-a", i), fmt.Sprintf("b%d-b", i), fmt.Sprintf("b%d-c", i))
	}
	reqs := e.sim.Requests(atlastest.EndpointExtracts)
	if len(reqs) < 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	if gap := reqs[1].Time.Sub(reqs[0].Time); gap < 10*time.Second {
		t.Errorf("the request after the 429 came %s later, want its Retry-After, 10s", gap)
	}
	// Within the window's edge: the requests are spaced 500ms apart on
	// the clock as the reconciler reads it; the simulator stamps them a
	// few of the driver's steps later.
	if peak := e.sim.PeakRate(atlastest.EndpointExtracts, "", time.Second-100*time.Millisecond); peak > 2 {
		t.Errorf("peak %d requests a second, want at most 2", peak)
	}
	if o := obs.outcomes(); o[OutcomeThrottled] != 1 || o[OutcomeOK] != 6 {
		t.Errorf("outcomes %v, want 1 throttled, 6 ok", o)
	}
}

// Atlas's own rate limit below poll_rate: the 429s are honoured (each
// pauses every poll for its Retry-After) and every document still
// arrives once.
func TestRateLimitedByAtlas(t *testing.T) {
	p := testPolicy
	p.PollEvery = 10 * time.Second
	e := newEnv(t, atlastest.Options{}, p)
	obs := &recorder{}
	r := e.reconciler(Options{Fetcher: e.fetcher(1), Observer: obs, Rate: 10, Now: e.clock.Now, ScanEvery: time.Second, Concurrency: 4})
	e.sim.SetRateLimit(atlastest.EndpointExtracts, 3)
	var ids []string
	for i := range 5 {
		ids = append(ids, e.upload(false, fmt.Sprintf("r%d-a", i), fmt.Sprintf("r%d-b", i)))
	}
	e.clock.Advance(testPolicy.PollAfter)
	stop := drive(e.clock, 20*time.Millisecond)
	defer stop()
	r.Start(context.Background())
	testutil.WaitFor(t, 60*time.Second, "every batch complete", func() bool {
		for _, id := range ids {
			if b, _ := e.store.Get(context.Background(), id); b.State != ledger.StateComplete {
				return false
			}
		}
		return true
	})
	stop()
	r.Close()
	for i, id := range ids {
		e.checkDelivered(id, fmt.Sprintf("r%d-a", i), fmt.Sprintf("r%d-b", i))
	}
	// After each 429 the next request waits for the Retry-After (1s):
	// no request follows a 429 within the second.
	if o := obs.outcomes(); o[OutcomeThrottled] == 0 {
		t.Errorf("outcomes %v: Atlas's limit never answered 429", o)
	}
	if peak := e.sim.PeakRate(atlastest.EndpointExtracts, "", time.Second); peak > 10 {
		t.Errorf("peak %d requests a second, over poll_rate 10", peak)
	}
}

// 5xx: the poll fails, every poll backs off exponentially (1s, 2s,
// 4s), and the batch is polled again once Atlas recovers.
func TestServerErrorBackoff(t *testing.T) {
	e := newEnv(t, atlastest.Options{}, testPolicy)
	obs := &recorder{}
	r := e.reconciler(Options{Fetcher: e.fetcher(0), Observer: obs, Rate: 100, Now: e.clock.Now, ScanEvery: 100 * time.Millisecond, Concurrency: 1})
	ids := []string{e.upload(false, "s0-a"), e.upload(false, "s1-a"), e.upload(false, "s2-a"), e.upload(false, "s3-a")}
	e.clock.Advance(testPolicy.PollAfter)
	e.sim.FailNext(atlastest.EndpointExtracts, 3, http.StatusServiceUnavailable)
	stop := drive(e.clock, 100*time.Millisecond)
	defer stop()
	r.Start(context.Background())
	testutil.WaitFor(t, 60*time.Second, "every batch complete", func() bool {
		for _, id := range ids {
			if b, _ := e.store.Get(context.Background(), id); b.State != ledger.StateComplete {
				return false
			}
		}
		return true
	})
	stop()
	r.Close()
	reqs := e.sim.Requests(atlastest.EndpointExtracts)
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if gap := reqs[i+1].Time.Sub(reqs[i].Time); gap < want {
			t.Errorf("request %d came %s after a 503, want at least %s", i+2, gap, want)
		}
	}
	if o := obs.outcomes(); o[OutcomeFailed] != 3 || o[OutcomeOK] != 4 {
		t.Errorf("outcomes %v, want 3 failed, 4 ok", o)
	}
	for i, id := range ids {
		e.checkDelivered(id, fmt.Sprintf("s%d-a", i))
	}
}

// A Retry-After longer than poll_every holds the batch back that long.
func TestRetryAfterHoldsBatch(t *testing.T) {
	e := newEnv(t, atlastest.Options{}, testPolicy)
	r := e.reconciler(Options{Fetcher: e.fetcher(0)})
	id := e.upload(false, "h-a")
	e.clock.Advance(testPolicy.PollAfter)
	e.sim.ThrottleNext(atlastest.EndpointExtracts, 1, 10*time.Minute)
	rep := r.Poll(context.Background(), id)
	if rep.Outcome != OutcomeThrottled {
		t.Fatalf("%+v", rep)
	}
	b := e.batch(id)
	if !strings.HasSuffix(b.LeaseOwner, holdBackoff) || b.NextPoll.Sub(e.clock.Now()) < 9*time.Minute {
		t.Fatalf("batch after a 10m Retry-After: owner %q next poll in %s", b.LeaseOwner, b.NextPoll.Sub(e.clock.Now()))
	}
	e.clock.Advance(testPolicy.PollEvery)
	if n := e.scan(r); n != 0 {
		t.Fatal("polled within the Retry-After")
	}
	e.clock.Advance(9 * time.Minute)
	rep = r.Poll(context.Background(), id)
	if rep.Outcome != OutcomeOK || rep.Repair {
		t.Fatalf("%+v: want ok, no repair after a backoff", rep)
	}
	e.checkDelivered(id, "h-a")
}

// At give_up_after a batch with pending documents expires: its missing
// documents are listed, the others delivered.
func TestGiveUp(t *testing.T) {
	e := newEnv(t, atlastest.Options{ProcessingDelay: time.Minute, ProcessingDelayMax: 3 * time.Hour}, testPolicy)
	obs := &recorder{}
	r := e.reconciler(Options{Fetcher: e.fetcher(0), Observer: obs})
	var docs, done, missing []string
	for i := range 12 {
		d := fmt.Sprintf("g-%d", i)
		docs = append(docs, d)
		// done by the last poll, at give-up time (less the ticks)
		if e.sim.ProcessingDelayFor(d) < testPolicy.GiveUpAfter-time.Minute {
			done = append(done, d)
		} else if e.sim.ProcessingDelayFor(d) > testPolicy.GiveUpAfter+time.Minute {
			missing = append(missing, d)
		}
	}
	if len(done) == 0 || len(missing) == 0 || len(done)+len(missing) != len(docs) {
		t.Fatalf("pick other ids: %d done, %d missing", len(done), len(missing))
	}
	id := e.upload(false, docs...)
	for range 80 {
		e.clock.Advance(time.Minute)
		e.scan(r)
	}
	b := e.batch(id)
	if b.State != ledger.StateExpired {
		t.Fatalf("batch %s after 80m, want expired", b.State)
	}
	e.checkDelivered(id, done...)
	reps := obs.all()
	last := reps[len(reps)-1]
	if last.Outcome != OutcomeExpired || !slices.Equal(last.Missing, missing) {
		t.Fatalf("last poll %s missing %v, want expired, %v", last.Outcome, last.Missing, missing)
	}
	page, err := e.store.List(context.Background(), ledger.ListQuery{State: ledger.StateExpired, Limit: 10})
	if err != nil || len(page.Batches) != 1 {
		t.Fatalf("expired list %v %v", page, err)
	}
}

// Without a fetcher (no polling configured) the loop still expires
// batches.
func TestNoPollingExpires(t *testing.T) {
	e := newEnv(t, atlastest.Options{}, testPolicy)
	obs := &recorder{}
	r := e.reconciler(Options{Observer: obs, Enqueuer: EnqueueFunc(func(context.Context, Delivery) error { panic("enqueue") })})
	id := e.upload(false, "n-a")
	for range 70 {
		e.clock.Advance(time.Minute)
		e.scan(r)
	}
	if b := e.batch(id); b.State != ledger.StateExpired {
		t.Fatalf("%s", b.State)
	}
	if e.sim.Calls(atlastest.EndpointExtracts) != 0 {
		t.Fatal("polled without a fetcher")
	}
	if o := obs.outcomes(); o[OutcomeExpired] != 1 {
		t.Fatalf("%v", o)
	}
}

// poll_after 0, poll-only: the batch is polled from its upload on. The
// ledger's Policy cannot say 0 (WithDefaults makes it 15m), so the
// nearest it can, a nanosecond, stands for it.
func TestPollOnly(t *testing.T) {
	p := testPolicy
	p.PollAfter = time.Nanosecond
	e := newEnv(t, atlastest.Options{ProcessingDelay: 30 * time.Second}, p)
	r := e.reconciler(Options{Fetcher: e.fetcher(0)})
	id := e.upload(false, "p-a", "p-b")
	e.clock.Advance(time.Millisecond)
	if n := e.scan(r); n != 1 {
		t.Fatalf("%d polls at upload, want 1", n)
	}
	if got := e.sim.Calls(atlastest.EndpointExtracts); got != 1 {
		t.Fatalf("%d extracts calls", got)
	}
	e.clock.Advance(p.PollEvery)
	e.scan(r)
	e.checkDelivered(id, "p-a", "p-b")
}

// The bulk service: the fetcher pointed at /v1/bulk/extracts, with a
// bulk token.
func TestBulk(t *testing.T) {
	e := newEnv(t, atlastest.Options{ProcessingDelay: 6 * time.Minute}, testPolicy)
	f := &HTTPFetcher{Endpoint: e.sim.URL, Path: BulkExtracts, Client: &http.Client{Transport: &bulkToken{url: e.sim.URL}}}
	r := e.reconciler(Options{Fetcher: f})
	id := e.upload(true, "k-a", "k-b", "k-c")
	e.clock.Advance(testPolicy.PollAfter)
	e.scan(r)
	if e.q.stored() != 0 {
		t.Fatal("delivered while processing")
	}
	e.clock.Advance(testPolicy.PollEvery)
	e.scan(r)
	e.checkDelivered(id, "k-a", "k-b", "k-c")
	if e.sim.Calls(atlastest.EndpointBulkExtracts) != 2 || e.sim.Calls(atlastest.EndpointExtracts) != 0 {
		t.Fatalf("bulk %d docstream %d extracts calls", e.sim.Calls(atlastest.EndpointBulkExtracts), e.sim.Calls(atlastest.EndpointExtracts))
	}
}

// bulkToken authenticates with a token of the bulk service
// (atlasclient.TokenSource only speaks to /v1/docstream/authtoken).
type bulkToken struct {
	url string
	mu  sync.Mutex
	tok string
}

func (b *bulkToken) RoundTrip(req *http.Request) (*http.Response, error) {
	b.mu.Lock()
	if b.tok == "" {
		r, _ := http.NewRequest(http.MethodPost, b.url+"/v1/bulk/authtoken", http.NoBody)
		r.Header.Set("Client-Id", atlastest.DefaultClientID)
		r.Header.Set("Client-Secret", atlastest.DefaultClientSecret)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			b.mu.Unlock()
			return nil, err
		}
		var v struct {
			AccessToken string `json:"access_token"`
		}
		err = jsonDecode(resp, &v)
		if err != nil {
			b.mu.Unlock()
			return nil, err
		}
		b.tok = v.AccessToken
	}
	tok := b.tok
	b.mu.Unlock()
	req = req.Clone(req.Context())
	req.Header.Set("Token", tok)
	return http.DefaultTransport.RoundTrip(req)
}

// A refused delivery is retried at the next poll under the same id:
// the documents are won by that id again.
func TestEnqueueRefusedRetried(t *testing.T) {
	e := newEnv(t, atlastest.Options{ProcessingDelay: time.Minute, ProcessingDelayMax: 20 * time.Minute}, testPolicy)
	obs := &recorder{}
	r := e.reconciler(Options{Fetcher: e.fetcher(0), Observer: obs})
	docs := []string{"q-0", "q-1", "q-2", "q-3", "q-4", "q-5"}
	id := e.upload(false, docs...)
	e.clock.Advance(testPolicy.PollAfter + 5*time.Minute)
	e.q.refuseNext(1)
	rep := r.Poll(context.Background(), id)
	if rep.Outcome != OutcomeFailed || rep.Available == 0 || rep.Delivered != 0 {
		t.Fatalf("%+v", rep)
	}
	b := e.batch(id)
	var claimed string
	for _, d := range b.Documents {
		if d.State != ledger.DocPending {
			claimed = d.DeliveryID
		}
	}
	if !strings.HasSuffix(b.LeaseOwner, holdRequeue) || claimed == "" {
		t.Fatalf("after a refusal: owner %q, claimed by %q", b.LeaseOwner, claimed)
	}
	e.clock.Advance(testPolicy.PollEvery)
	rep = r.Poll(context.Background(), id)
	if rep.Outcome != OutcomeOK || !rep.Repair || !slices.Contains(rep.Deliveries, claimed) {
		t.Fatalf("%+v: want the refused delivery %s queued again", rep, claimed)
	}
	if e.q.callsOf(claimed) != 2 {
		t.Fatalf("%d appends of %s", e.q.callsOf(claimed), claimed)
	}
	for e.batch(id).State == ledger.StateProcessing {
		e.clock.Advance(testPolicy.PollEvery)
		e.scan(r)
	}
	e.checkDelivered(id, docs...)
}

// deadPoll is the poll of an instance that dies after its claim: it
// takes the lease of batchID, reads the first extracts page and claims
// the documents available there, and does nothing after. It returns the
// delivery id claimed, which never reached the queue, and the claim.
func deadPoll(t *testing.T, e *env, batchID string) (string, ledger.ClaimResult) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.store.TakeLease(ctx, batchID, "dead-1", time.Minute); err != nil {
		t.Fatal(err)
	}
	page, err := e.fetcher(0).Page(ctx, batchID, 1)
	if err != nil {
		t.Fatal(err)
	}
	var avail []document
	for _, raw := range page.Data {
		if d, ok := inspect(raw); ok {
			avail = append(avail, d)
		}
	}
	lost := deliveryID(batchID, avail)
	c := ledger.Claim{Source: ledger.SourcePoll, DeliveryID: lost}
	for _, d := range avail {
		c.Results = append(c.Results, ledger.Result{DocumentID: d.id, ErrorCode: d.code})
	}
	cr, err := e.store.Claim(ctx, batchID, c)
	if err != nil {
		t.Fatal(err)
	}
	return lost, cr
}

// A poll that dies between its claim and its append (here: the claim
// made by hand, the lease left to expire) is repaired by the next poll
// of any instance: the same delivery id, the same documents.
func TestCrashBetweenClaimAndEnqueue(t *testing.T) {
	e := newEnv(t, atlastest.Options{ProcessingDelay: time.Minute, ProcessingDelayMax: 20 * time.Minute}, testPolicy)
	docs := []string{"c-0", "c-1", "c-2", "c-3", "c-4", "c-5"}
	id := e.upload(false, docs...)
	e.clock.Advance(testPolicy.PollAfter + 5*time.Minute)
	ctx := context.Background()
	lost, cr := deadPoll(t, e, id)
	if n := len(cr.Won); n == 0 || n == len(docs) {
		t.Fatalf("%d available", n)
	}

	r := e.reconciler(Options{Fetcher: e.fetcher(0), Instance: "alive"})
	if rep := r.Poll(ctx, id); rep.Outcome != "" {
		t.Fatalf("polled under the dead lease: %+v", rep)
	}
	e.clock.Advance(time.Minute)
	rep := r.Poll(ctx, id)
	if !rep.Repair || !slices.Contains(rep.Deliveries, lost) {
		t.Fatalf("%+v: want %s repaired", rep, lost)
	}
	for e.batch(id).State == ledger.StateProcessing {
		e.clock.Advance(testPolicy.PollEvery)
		e.scan(r)
	}
	e.checkDelivered(id, docs...)
}

// A refused delivery that completed its batch holds the finished batch
// under a requeue lease, and the poll that takes it when the hold ends
// (here another instance's) queues it again under the same id; the
// batch is then due no more.
func TestEnqueueRefusedFinishedBatch(t *testing.T) {
	e := newEnv(t, atlastest.Options{}, testPolicy)
	r := e.reconciler(Options{Fetcher: e.fetcher(0), Instance: "first"})
	id := e.upload(false, "f-a", "f-b")
	e.clock.Advance(testPolicy.PollAfter)
	e.q.refuseNext(1)
	ctx := context.Background()
	rep := r.Poll(ctx, id)
	b := e.batch(id)
	if rep.Outcome != OutcomeFailed || b.State != ledger.StateComplete || !strings.HasSuffix(b.LeaseOwner, holdRequeue) {
		t.Fatalf("%+v, batch %s leased by %q", rep, b.State, b.LeaseOwner)
	}
	refused := b.Documents[0].DeliveryID
	other := e.reconciler(Options{Fetcher: e.fetcher(0), Instance: "second"})
	if rep := other.Poll(ctx, id); rep.Outcome != "" {
		t.Fatalf("polled during the hold: %+v", rep)
	}
	e.clock.Advance(testPolicy.PollEvery)
	rep = other.Poll(ctx, id)
	if rep.Outcome != OutcomeOK || !rep.Repair || !slices.Contains(rep.Deliveries, refused) {
		t.Fatalf("%+v: want the refused delivery %s queued again", rep, refused)
	}
	e.checkDelivered(id, "f-a", "f-b")
	if b := e.batch(id); b.LeaseOwner != "" || !b.NextPoll.IsZero() {
		t.Fatalf("after the repair: lease %q, next poll %v", b.LeaseOwner, b.NextPoll)
	}
	e.clock.Advance(time.Hour)
	if rep := other.Poll(ctx, id); !errors.Is(rep.Err, ledger.ErrNotDue) {
		t.Fatalf("polled again: %+v", rep)
	}
}

// A poll that dies between the claim that completes its batch and the
// append (the claim made by hand, the lease left to expire) is repaired
// by the next poll of any instance, although the batch is complete: the
// same delivery id, the same documents.
func TestCrashAfterClaimThatCompletes(t *testing.T) {
	e := newEnv(t, atlastest.Options{}, testPolicy)
	docs := []string{"k-0", "k-1"}
	id := e.upload(false, docs...)
	e.clock.Advance(testPolicy.PollAfter)
	lost, cr := deadPoll(t, e, id)
	if !cr.Completed {
		t.Fatalf("claim: %+v", cr)
	}

	r := e.reconciler(Options{Fetcher: e.fetcher(0), Instance: "alive"})
	e.scan(r)
	if n := e.q.callsOf(lost); n != 0 {
		t.Fatalf("queued under the dead lease: %d", n)
	}
	e.clock.Advance(time.Minute)
	e.scan(r)
	if n := e.q.callsOf(lost); n != 1 {
		t.Fatalf("%d appends of the lost delivery %s", n, lost)
	}
	e.checkDelivered(id, docs...)
	e.clock.Advance(time.Hour)
	e.scan(r)
	if n := e.q.callsOf(lost); n != 1 {
		t.Fatalf("%d appends of %s after the repair", n, lost)
	}
}

// A repair that fails before it is done (Atlas answering 503) does not
// release the batch: it is held back, and the next repair queues what
// the dead poll claimed.
func TestRepairFailsThenRetries(t *testing.T) {
	e := newEnv(t, atlastest.Options{}, testPolicy)
	docs := []string{"r-0", "r-1"}
	id := e.upload(false, docs...)
	e.clock.Advance(testPolicy.PollAfter)
	ctx := context.Background()
	dead := e.reconciler(Options{Fetcher: e.fetcher(0), Instance: "dead"})
	e.q.refuseNext(1) // the dead poll's append never happens
	if rep := dead.Poll(ctx, id); !rep.Completed {
		t.Fatalf("%+v", rep)
	}
	lost := e.batch(id).Documents[0].DeliveryID
	// Its hold runs out; the repair finds Atlas failing.
	e.clock.Advance(testPolicy.PollEvery)
	failing := FetcherFunc(func(context.Context, string, int) (PageResult, error) {
		return PageResult{}, &StatusError{API: &atlasclient.APIError{StatusCode: http.StatusServiceUnavailable}}
	})
	r := e.reconciler(Options{Fetcher: failing, Instance: "alive"})
	if rep := r.Poll(ctx, id); !rep.Repair || rep.Outcome != OutcomeFailed {
		t.Fatalf("the failing repair: %+v", rep)
	}
	if b := e.batch(id); !strings.HasSuffix(b.LeaseOwner, holdRequeue) {
		t.Fatalf("after the failing repair: lease %q, next poll %v", b.LeaseOwner, b.NextPoll)
	}
	e.clock.Advance(time.Hour)
	r = e.reconciler(Options{Fetcher: e.fetcher(0), Instance: "alive-2"})
	e.scan(r)
	if e.q.callsOf(lost) != 2 {
		t.Fatalf("%d appends of the lost delivery %s", e.q.callsOf(lost), lost)
	}
	e.checkDelivered(id, docs...)
}

// A delivery the queue never takes is retried for twice GiveUpAfter
// from the upload, then dropped and said so in the report: polls of the
// batch do not go on for ever.
func TestRequeueGivesUp(t *testing.T) {
	e := newEnv(t, atlastest.Options{}, testPolicy)
	id := e.upload(false, "g-0", "g-1")
	e.q.refuseNext(1 << 30)
	obs := &recorder{}
	r := e.reconciler(Options{Fetcher: e.fetcher(0), Observer: obs})
	e.clock.Advance(testPolicy.PollAfter)
	e.scan(r)
	for polls := 0; e.batch(id).LeaseOwner != ""; polls++ {
		if polls > 200 {
			t.Fatalf("still held after %d polls: %+v", polls, e.batch(id))
		}
		e.clock.Advance(testPolicy.PollEvery)
		e.scan(r)
	}
	var dropped []string
	for _, rep := range obs.reports {
		dropped = append(dropped, rep.Dropped...)
	}
	b := e.batch(id)
	if b.State != ledger.StateComplete || !b.NextPoll.IsZero() || len(dropped) != 1 || dropped[0] != b.Documents[0].DeliveryID {
		t.Fatalf("%s, next poll %v, dropped %v", b.State, b.NextPoll, dropped)
	}
	if now := e.clock.Now(); now.Before(b.Uploaded.Add(2 * testPolicy.GiveUpAfter)) {
		t.Fatalf("given up %v after the upload, before twice GiveUpAfter", now.Sub(b.Uploaded))
	}
	if n := e.q.callsOf(dropped[0]); n < 10 {
		t.Fatalf("%d tries of the refused delivery", n)
	}
}

// Documents a callback delivered first are not queued by the poll.
func TestCallbackWonFirst(t *testing.T) {
	e := newEnv(t, atlastest.Options{}, testPolicy)
	r := e.reconciler(Options{Fetcher: e.fetcher(0)})
	id := e.upload(false, "w-a", "w-b")
	if _, err := e.store.Claim(context.Background(), id, ledger.Claim{Source: ledger.SourceCallback, DeliveryID: "cb-1", Results: []ledger.Result{{DocumentID: "w-a"}}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(testPolicy.PollAfter)
	rep := r.Poll(context.Background(), id)
	if rep.Outcome != OutcomeOK || rep.Delivered != 1 || len(e.q.docs("w-a")) != 0 {
		t.Fatalf("%+v", rep)
	}
	e.checkDelivered(id, "w-b")
}

// Two reconcilers on one store never poll one batch at the same time;
// when one dies mid-poll, the other takes the batch over once the lease
// has run out.
func TestTwoReconcilers(t *testing.T) {
	e := newEnv(t, atlastest.Options{ProcessingDelay: 5 * time.Minute, ProcessingDelayMax: 9 * time.Minute}, testPolicy)
	var mu sync.Mutex
	inFlight := map[string]int{}
	var overlap atomic.Int32
	var blockA atomic.Bool
	blocked := make(chan string, 1)
	watch := func(name string) Fetcher {
		f := e.fetcher(2)
		return FetcherFunc(func(ctx context.Context, batchID string, page int) (PageResult, error) {
			mu.Lock()
			inFlight[batchID]++
			if inFlight[batchID] > 1 {
				overlap.Add(1)
			}
			mu.Unlock()
			defer func() { mu.Lock(); inFlight[batchID]--; mu.Unlock() }()
			if name == "A" && blockA.Load() {
				select {
				case blocked <- batchID:
				default:
				}
				<-ctx.Done() // dies mid-poll
				return PageResult{}, ctx.Err()
			}
			time.Sleep(time.Millisecond) // let the polls overlap if they could
			return f.Page(ctx, batchID, page)
		})
	}
	ra := e.reconciler(Options{Fetcher: watch("A"), Instance: "A", Now: e.clock.Now, ScanEvery: 200 * time.Millisecond, LeaseTTL: time.Minute})
	rb := e.reconciler(Options{Fetcher: watch("B"), Instance: "B", Now: e.clock.Now, ScanEvery: 200 * time.Millisecond, LeaseTTL: time.Minute})
	var ids []string
	want := map[string][]string{}
	for i := range 8 {
		docs := []string{fmt.Sprintf("t%d-a", i), fmt.Sprintf("t%d-b", i), fmt.Sprintf("t%d-c", i)}
		id := e.upload(false, docs...)
		ids = append(ids, id)
		want[id] = docs
	}
	e.clock.Advance(testPolicy.PollAfter)
	stop := drive(e.clock, 100*time.Millisecond)
	defer stop()
	ra.Start(context.Background())
	rb.Start(context.Background())
	complete := func() bool {
		for _, id := range ids {
			if b, _ := e.store.Get(context.Background(), id); b.State != ledger.StateComplete {
				return false
			}
		}
		return true
	}
	testutil.WaitFor(t, 60*time.Second, "every batch complete", complete)
	if overlap.Load() != 0 {
		t.Fatalf("%d requests for a batch while another was in flight", overlap.Load())
	}
	for _, id := range ids {
		e.checkDelivered(id, want[id]...)
	}

	// A dies holding a batch's lease.
	rb.Close()
	docs := []string{"d-a", "d-b"}
	id := e.upload(false, docs...)
	blockA.Store(true)
	e.clock.Advance(testPolicy.PollAfter)
	var dead string
	select {
	case dead = <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("A never polled")
	}
	if dead != id {
		t.Fatalf("A polls %s", dead)
	}
	stop()
	ra.Close()
	b := e.batch(id)
	if !strings.HasPrefix(b.LeaseOwner, "A-") {
		t.Fatalf("lease owner %q", b.LeaseOwner)
	}
	rc := e.reconciler(Options{Fetcher: watch("C"), Instance: "C"})
	if rep := rc.Poll(context.Background(), id); rep.Outcome != "" {
		t.Fatalf("took a live lease: %+v", rep)
	}
	e.clock.Set(b.LeaseUntil)
	e.clock.Advance(10 * time.Minute)
	rep := rc.Poll(context.Background(), id)
	if rep.Outcome != OutcomeOK || !rep.Repair {
		t.Fatalf("takeover %+v", rep)
	}
	e.checkDelivered(id, docs...)
}
