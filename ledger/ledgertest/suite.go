// Package ledgertest is the behavioural test suite of a ledger.Store:
// the same tests run against every implementation (ledger.BoltStore and
// ledger.JetStreamStore), so that the routes see the
// same semantics whichever is configured. Only tests import it.
package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/ledger"
)

// Options are what the suite sets on the store under test.
type Options struct {
	Policy ledger.Policy
	Now    func() time.Time
}

// Opener opens the store under test. Within one test every call opens
// the same durable store (a directory, a bucket), so that a test can
// close it and open it again. The store is closed at the end of the
// test if the test did not.
type Opener func(t *testing.T, o Options) ledger.Store

// Policy is the policy of the suite's stores.
var Policy = ledger.Policy{
	PollAfter:         10 * time.Minute,
	PollEvery:         5 * time.Minute,
	GiveUpAfter:       2 * time.Hour,
	Retention:         48 * time.Hour,
	IdempotencyWindow: 24 * time.Hour,
	InFlightTimeout:   2 * time.Minute,
}

// Run runs every test of the suite, each as a subtest with a fresh store
// from newStore.
func Run(t *testing.T, newStore func(t *testing.T) Opener) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"CreateGet", testCreateGet},
		{"CreateValidates", testCreateValidates},
		{"Claim", testClaim},
		{"ClaimConcurrent", testClaimConcurrent},
		{"ClaimExpiredBatch", testClaimExpiredBatch},
		{"Update", testUpdate},
		{"UpdateConcurrent", testUpdateConcurrent},
		{"Lookup", testLookup},
		{"MatchClaims", testMatchClaims},
		{"MatchClaimsConcurrent", testMatchClaimsConcurrent},
		{"DueAndLeases", testDueAndLeases},
		{"LeaseExpiry", testLeaseExpiry},
		{"LeaseConcurrent", testLeaseConcurrent},
		{"LeaseOfFinishedBatch", testLeaseOfFinishedBatch},
		{"GiveUp", testGiveUp},
		{"List", testList},
		{"Purge", testPurge},
		{"Idempotency", testIdempotency},
		{"IdempotencyInFlightExpires", testIdempotencyInFlightExpires},
		{"IdempotencyConcurrent", testIdempotencyConcurrent},
		{"Watch", testWatch},
		{"Reopen", testReopen},
		{"Closed", testClosed},
		{"Stats", testStats},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{t: t, open: newStore(t), clock: testutil.NewClock(testutil.Epoch)}
			e.s = e.reopen()
			tc.fn(t, e)
		})
	}
}

// env is one test's store and clock.
type env struct {
	t     *testing.T
	open  Opener
	clock *testutil.Clock
	s     ledger.Store
}

func (e *env) reopen() ledger.Store {
	return e.open(e.t, Options{Policy: Policy, Now: e.clock.Now})
}

var ctx = context.Background()

// docs returns document ids prefix-0 .. prefix-(n-1).
func docs(prefix string, n int) []ledger.Document {
	var ds []ledger.Document
	for i := range n {
		ds = append(ds, ledger.Document{ID: fmt.Sprintf("%s-%d", prefix, i)})
	}
	return ds
}

func (e *env) create(id string, ds ...ledger.Document) *ledger.Batch {
	e.t.Helper()
	b, err := e.s.Create(ctx, &ledger.Batch{ID: id, ProductType: "LOAN_APP", Documents: ds})
	if err != nil {
		e.t.Fatalf("Create(%s): %v", id, err)
	}
	return b
}

func (e *env) get(id string) *ledger.Batch {
	e.t.Helper()
	b, err := e.s.Get(ctx, id)
	if err != nil {
		e.t.Fatalf("Get(%s): %v", id, err)
	}
	return b
}

func (e *env) claim(id string, src ledger.Source, delivery string, docIDs ...string) ledger.ClaimResult {
	e.t.Helper()
	c := ledger.Claim{Source: src, DeliveryID: delivery}
	for _, d := range docIDs {
		c.Results = append(c.Results, ledger.Result{DocumentID: d})
	}
	r, err := e.s.Claim(ctx, id, c)
	if err != nil {
		e.t.Fatalf("Claim(%s, %s): %v", id, delivery, err)
	}
	return r
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func eqSlice(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

func eqTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func testCreateGet(t *testing.T, e *env) {
	up := testutil.Epoch.Add(-time.Minute)
	in := &ledger.Batch{ID: "BATCH-69469-BBRSS-20260309081408", ProductType: "LOAN_APP", Uploaded: up, IdempotencyKey: "key-1",
		Documents: []ledger.Document{{ID: "doc-1", FileUUID: "uuid-1"}, {ID: "doc-2"}}}
	got, err := e.s.Create(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []*ledger.Batch{got, e.get(in.ID)} {
		eq(t, "ID", b.ID, in.ID)
		eq(t, "ProductType", b.ProductType, "LOAN_APP")
		eq(t, "IdempotencyKey", b.IdempotencyKey, "key-1")
		eqTime(t, "Uploaded", b.Uploaded, up)
		eq(t, "State", b.State, ledger.StateProcessing)
		eqTime(t, "NextPoll", b.NextPoll, up.Add(Policy.PollAfter))
		eq(t, "documents", len(b.Documents), 2)
		eq(t, "doc 0", b.Documents[0].ID, "doc-1")
		eq(t, "doc 0 file_uuid", b.Documents[0].FileUUID, "uuid-1")
		eq(t, "doc 1", b.Documents[1].ID, "doc-2")
		for _, d := range b.Documents {
			eq(t, "doc state", d.State, ledger.DocPending)
		}
		if b.Revision == 0 {
			t.Fatal("Revision 0")
		}
		eqTime(t, "Updated", b.Updated, testutil.Epoch)
	}
	// Uploaded defaults to now.
	b := e.create("B2", ledger.Document{ID: "x"})
	eqTime(t, "Uploaded", b.Uploaded, testutil.Epoch)
	_, err = e.s.Get(ctx, "nope")
	wantErr(t, "Get unknown", err, ledger.ErrNotFound)
	// The returned batch is a copy.
	b.Documents[0].State = ledger.DocReceived
	eq(t, "state after changing a returned copy", e.get("B2").Documents[0].State, ledger.DocPending)
}

func testCreateValidates(t *testing.T, e *env) {
	_, err := e.s.Create(ctx, &ledger.Batch{Documents: docs("d", 1)})
	wantErr(t, "no id", err, ledger.ErrInvalid)
	_, err = e.s.Create(ctx, &ledger.Batch{ID: "B"})
	wantErr(t, "no documents", err, ledger.ErrInvalid)
	_, err = e.s.Create(ctx, &ledger.Batch{ID: "B", Documents: []ledger.Document{{ID: ""}}})
	wantErr(t, "empty document id", err, ledger.ErrInvalid)
	// Fields the store sets are not taken from the caller.
	b, err := e.s.Create(ctx, &ledger.Batch{ID: "B", State: ledger.StateComplete, Revision: 99, LeaseOwner: "x",
		Documents: []ledger.Document{{ID: "a", State: ledger.DocReceived, DeliveryID: "d"}, {ID: "b"}, {ID: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "State", b.State, ledger.StateProcessing)
	eq(t, "LeaseOwner", b.LeaseOwner, "")
	eq(t, "documents (a given twice)", len(b.Documents), 2)
	eq(t, "doc a state", b.Documents[0].State, ledger.DocPending)
	eq(t, "doc a delivery", b.Documents[0].DeliveryID, "")
	_, err = e.s.Create(ctx, &ledger.Batch{ID: "B", Documents: docs("d", 1)})
	wantErr(t, "Create twice", err, ledger.ErrExists)
	eq(t, "documents after a refused Create", len(e.get("B").Documents), 2)
}

func testClaim(t *testing.T, e *env) {
	e.create("B", docs("d", 4)...)
	e.clock.Advance(time.Minute)
	r := e.claim("B", ledger.SourceCallback, "cb-1", "d-0", "d-1", "zz", "d-0")
	eqSlice(t, "Won", r.Won, []string{"d-0", "d-1"})
	eqSlice(t, "Unknown", r.Unknown, []string{"zz"})
	eqSlice(t, "Taken", r.Taken, nil)
	eq(t, "Claimed", r.Claimed, 2)
	eq(t, "state", r.Batch.State, ledger.StateProcessing)
	d := r.Batch.Documents[0]
	eq(t, "d-0 state", d.State, ledger.DocReceived)
	eq(t, "d-0 source", d.Source, ledger.SourceCallback)
	eq(t, "d-0 delivery", d.DeliveryID, "cb-1")
	eqTime(t, "d-0 at", d.At, testutil.Epoch.Add(time.Minute))
	rev := r.Batch.Revision

	// A retry of the same delivery wins the same documents, changing
	// nothing; another delivery finds them taken.
	e.clock.Advance(time.Minute)
	r = e.claim("B", ledger.SourceCallback, "cb-1", "d-1", "d-0")
	eqSlice(t, "Won on retry", r.Won, []string{"d-1", "d-0"})
	eq(t, "Claimed on retry", r.Claimed, 0)
	eq(t, "Revision after a retry", r.Batch.Revision, rev)
	eqTime(t, "d-0 at after a retry", r.Batch.Documents[0].At, testutil.Epoch.Add(time.Minute))
	r = e.claim("B", ledger.SourcePoll, "poll-1", "d-0", "d-2")
	eqSlice(t, "Won by the poll", r.Won, []string{"d-2"})
	eq(t, "Claimed by the poll", r.Claimed, 1)
	eq(t, "Completed by the poll", r.Completed, false)
	eqSlice(t, "Taken from the poll", r.Taken, []string{"d-0"})
	eq(t, "d-0 delivery after the poll", r.Batch.Documents[0].DeliveryID, "cb-1")
	eq(t, "d-2 source", r.Batch.Documents[2].Source, ledger.SourcePoll)

	// A failed document, and the batch completes.
	r, err := e.s.Claim(ctx, "B", ledger.Claim{Source: ledger.SourceCallback, DeliveryID: "cb-2",
		Results: []ledger.Result{{DocumentID: "d-3", ErrorCode: "UNRECOGNISED"}}})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Completed by the last claim", r.Completed, true)
	d = r.Batch.Documents[3]
	eq(t, "d-3 state", d.State, ledger.DocFailed)
	eq(t, "d-3 error_code", d.ErrorCode, "UNRECOGNISED")
	b := e.get("B")
	eq(t, "batch state", b.State, ledger.StateComplete)
	eqTime(t, "Finished", b.Finished, testutil.Epoch.Add(2*time.Minute))
	eqTime(t, "NextPoll of a complete batch", b.NextPoll, time.Time{})
	p, rec, f := b.Counts()
	eq(t, "counts", [3]int{p, rec, f}, [3]int{0, 3, 1})

	_, err = e.s.Claim(ctx, "nope", ledger.Claim{Source: ledger.SourcePoll, DeliveryID: "x"})
	wantErr(t, "Claim unknown batch", err, ledger.ErrNotFound)
	_, err = e.s.Claim(ctx, "B", ledger.Claim{Source: ledger.SourcePoll})
	wantErr(t, "Claim without delivery id", err, ledger.ErrInvalid)
	_, err = e.s.Claim(ctx, "B", ledger.Claim{Source: "carrier-pigeon", DeliveryID: "x"})
	wantErr(t, "Claim with a bad source", err, ledger.ErrInvalid)
}

// testClaimConcurrent: many deliveries claim overlapping documents at
// once; each document is won by exactly one, the one it records.
func testClaimConcurrent(t *testing.T, e *env) {
	const nDocs, nClaims = 40, 16
	e.create("B", docs("d", nDocs)...)
	var mu sync.Mutex
	won := map[string][]string{} // document -> deliveries that won it
	var wg sync.WaitGroup
	for w := range nClaims {
		wg.Go(func() {
			delivery := fmt.Sprintf("cb-%d", w)
			var ids []string
			for i := range nDocs {
				if (i+w)%3 != 0 { // overlapping subsets
					ids = append(ids, fmt.Sprintf("d-%d", i))
				}
			}
			for range 2 { // and a retry of each
				c := ledger.Claim{Source: ledger.SourceCallback, DeliveryID: delivery}
				for _, id := range ids {
					c.Results = append(c.Results, ledger.Result{DocumentID: id})
				}
				r, err := e.s.Claim(ctx, "B", c)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, d := range r.Won {
					if !slices.Contains(won[d], delivery) {
						won[d] = append(won[d], delivery)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	b := e.get("B")
	for _, d := range b.Documents {
		if len(won[d.ID]) != 1 {
			t.Fatalf("%s won by %q, want exactly one delivery", d.ID, won[d.ID])
		}
		eq(t, d.ID+" delivery", d.DeliveryID, won[d.ID][0])
		eq(t, d.ID+" state", d.State, ledger.DocReceived)
	}
	eq(t, "state", b.State, ledger.StateComplete)
}

func testClaimExpiredBatch(t *testing.T, e *env) {
	e.create("B", docs("d", 2)...)
	e.claim("B", ledger.SourceCallback, "cb-1", "d-0")
	e.clock.Advance(Policy.GiveUpAfter)
	lease(t, e, "B", "r1")
	b, err := e.s.ReleaseLease(ctx, "B", "r1")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "state", b.State, ledger.StateExpired)
	// A late result is still delivered, once; the batch is then complete.
	e.clock.Advance(time.Minute)
	r := e.claim("B", ledger.SourceCallback, "cb-2", "d-1")
	eqSlice(t, "Won late", r.Won, []string{"d-1"})
	eq(t, "state", r.Batch.State, ledger.StateComplete)
	eqTime(t, "Finished", r.Batch.Finished, e.clock.Now())
}

func testUpdate(t *testing.T, e *env) {
	b0 := e.create("B", docs("d", 2)...)
	e.clock.Advance(time.Second)
	b, err := e.s.Update(ctx, "B", func(b *ledger.Batch) (bool, error) {
		b.Documents[1].FileUUID = "uuid-2"
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "FileUUID", e.get("B").Documents[1].FileUUID, "uuid-2")
	if b.Revision <= b0.Revision {
		t.Fatalf("Revision %d after %d", b.Revision, b0.Revision)
	}
	eqTime(t, "Updated", b.Updated, testutil.Epoch.Add(time.Second))
	// No change: nothing written.
	b2, err := e.s.Update(ctx, "B", func(b *ledger.Batch) (bool, error) {
		b.ProductType = "ignored"
		return false, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Revision after no change", b2.Revision, b.Revision)
	eq(t, "ProductType after no change", e.get("B").ProductType, "LOAN_APP")
	// fn's error comes back as it is, and nothing is written.
	boom := errors.New("boom")
	_, err = e.s.Update(ctx, "B", func(b *ledger.Batch) (bool, error) {
		b.ProductType = "ignored"
		return true, boom
	})
	if err != boom {
		t.Fatalf("Update error %v, want fn's", err)
	}
	eq(t, "ProductType after an error", e.get("B").ProductType, "LOAN_APP")
	// Ids may not change.
	_, err = e.s.Update(ctx, "B", func(b *ledger.Batch) (bool, error) {
		b.Documents[0].ID = "other"
		return true, nil
	})
	wantErr(t, "changing a document id", err, ledger.ErrInvalid)
	_, err = e.s.Update(ctx, "B", func(b *ledger.Batch) (bool, error) {
		b.Documents = b.Documents[:1]
		return true, nil
	})
	wantErr(t, "dropping a document", err, ledger.ErrInvalid)
	_, err = e.s.Update(ctx, "nope", func(b *ledger.Batch) (bool, error) { return true, nil })
	wantErr(t, "Update unknown", err, ledger.ErrNotFound)
	// The store settles what fn leaves: every document done, complete.
	b, err = e.s.Update(ctx, "B", func(b *ledger.Batch) (bool, error) {
		for i := range b.Documents {
			b.Documents[i].State, b.Documents[i].DeliveryID = ledger.DocReceived, "manual"
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "state", b.State, ledger.StateComplete)
	eqTime(t, "NextPoll", b.NextPoll, time.Time{})
}

// testUpdateConcurrent: concurrent read-modify-writes lose no update.
func testUpdateConcurrent(t *testing.T, e *env) {
	const n = 24
	e.create("B", docs("d", n)...)
	var wg sync.WaitGroup
	var calls atomic.Int64
	for i := range n {
		wg.Go(func() {
			_, err := e.s.Update(ctx, "B", func(b *ledger.Batch) (bool, error) {
				calls.Add(1)
				b.Documents[i].FileUUID = fmt.Sprintf("u-%d", i)
				b.Polls++ // a counter: every increment must survive
				return true, nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	b := e.get("B")
	eq(t, "Polls", b.Polls, n)
	for i, d := range b.Documents {
		eq(t, d.ID+" FileUUID", d.FileUUID, fmt.Sprintf("u-%d", i))
	}
	t.Logf("%d calls of fn for %d updates", calls.Load(), n)
}

func refs(rs []ledger.DocRef) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.BatchID+"/"+r.State.String())
	}
	return out
}

func (e *env) lookup(doc string) []string {
	e.t.Helper()
	rs, err := e.s.Lookup(ctx, doc)
	if err != nil {
		e.t.Fatalf("Lookup(%s): %v", doc, err)
	}
	return refs(rs)
}

func testLookup(t *testing.T, e *env) {
	eqSlice(t, "Lookup of nothing", e.lookup("a"), nil)
	for i := range 3 {
		e.create(fmt.Sprintf("B%d", i), ledger.Document{ID: "a"}, ledger.Document{ID: fmt.Sprintf("only-%d", i)})
		e.clock.Advance(time.Second)
	}
	eqSlice(t, "Lookup", e.lookup("a"), []string{"B2/pending", "B1/pending", "B0/pending"})
	eqSlice(t, "Lookup only-1", e.lookup("only-1"), []string{"B1/pending"})
	e.claim("B1", ledger.SourceCallback, "cb-1", "a")
	eqSlice(t, "Lookup after a claim", e.lookup("a"), []string{"B2/pending", "B0/pending", "B1/received"})
	rs, _ := e.s.Lookup(ctx, "a")
	eq(t, "delivery of B1's", rs[2].DeliveryID, "cb-1")
	eqTime(t, "uploaded of B1", rs[2].Uploaded, testutil.Epoch.Add(time.Second))
	// A document id that is a prefix of another is not confused with it.
	e.create("B9", ledger.Document{ID: "a-longer"}, ledger.Document{ID: "\x00a"})
	eqSlice(t, "Lookup a", e.lookup("a"), []string{"B2/pending", "B0/pending", "B1/received"})
	eqSlice(t, "Lookup a-longer", e.lookup("a-longer"), []string{"B9/pending"})
}

func testMatchClaims(t *testing.T, e *env) {
	e.create("B0", ledger.Document{ID: "a"}, ledger.Document{ID: "b"})
	e.clock.Advance(time.Second)
	e.create("B1", ledger.Document{ID: "a"}, ledger.Document{ID: "c"})
	match := func(delivery string, ids ...string) ledger.Matched {
		t.Helper()
		c := ledger.Claim{Source: ledger.SourceCallback, DeliveryID: delivery}
		for _, id := range ids {
			c.Results = append(c.Results, ledger.Result{DocumentID: id})
		}
		m, err := ledger.MatchClaims(ctx, e.s, c)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	won := func(m ledger.Matched) []string {
		var out []string
		for _, c := range m.Claims {
			for _, d := range c.Won {
				out = append(out, c.Batch.ID+"/"+d)
			}
		}
		slices.Sort(out)
		return out
	}
	// a goes to the newest batch where it is pending.
	m := match("cb-1", "a", "b", "zz")
	eqSlice(t, "won", won(m), []string{"B0/b", "B1/a"})
	eqSlice(t, "unknown", m.Unknown, []string{"zz"})
	eq(t, "Won()", m.Won(), 2)
	// A retry wins the same.
	m = match("cb-1", "a", "b")
	eqSlice(t, "won on retry", won(m), []string{"B0/b", "B1/a"})
	// Another delivery of a goes to the older batch; then a is taken.
	m = match("cb-2", "a", "b")
	eqSlice(t, "won by cb-2", won(m), []string{"B0/a"})
	eqSlice(t, "taken from cb-2", m.Taken, []string{"b"})
	m = match("cb-3", "a")
	eqSlice(t, "won by cb-3", won(m), nil)
	eqSlice(t, "taken from cb-3", m.Taken, []string{"a"})
	_, err := ledger.MatchClaims(ctx, e.s, ledger.Claim{Source: ledger.SourceCallback})
	wantErr(t, "MatchClaims without delivery", err, ledger.ErrInvalid)
}

// testMatchClaimsConcurrent: a document id pending in several batches,
// claimed by as many deliveries at once: each batch's document is won
// by exactly one delivery, and each delivery wins one.
func testMatchClaimsConcurrent(t *testing.T, e *env) {
	const n = 6
	for i := range n {
		e.create(fmt.Sprintf("B%d", i), ledger.Document{ID: "a"})
		e.clock.Advance(time.Second)
	}
	var wg sync.WaitGroup
	var wonTotal atomic.Int64
	for w := range n {
		wg.Go(func() {
			m, err := ledger.MatchClaims(ctx, e.s, ledger.Claim{Source: ledger.SourceCallback, DeliveryID: fmt.Sprintf("cb-%d", w),
				Results: []ledger.Result{{DocumentID: "a"}}})
			if err != nil {
				t.Error(err)
			}
			wonTotal.Add(int64(m.Won()))
		})
	}
	wg.Wait()
	deliveries := map[string]bool{}
	for i := range n {
		d := e.get(fmt.Sprintf("B%d", i)).Documents[0]
		if d.State == ledger.DocPending {
			t.Fatalf("B%d's document still pending", i)
		}
		if deliveries[d.DeliveryID] {
			t.Fatalf("%s won two batches' document", d.DeliveryID)
		}
		deliveries[d.DeliveryID] = true
	}
	eq(t, "won", int(wonTotal.Load()), n)
}

func lease(t *testing.T, e *env, id, owner string) *ledger.Batch {
	t.Helper()
	b, err := e.s.TakeLease(ctx, id, owner, time.Minute)
	if err != nil {
		t.Fatalf("TakeLease(%s, %s): %v", id, owner, err)
	}
	return b
}

func (e *env) due(limit int, cursor string) ([]string, string) {
	e.t.Helper()
	ds, err := e.s.Due(ctx, limit, cursor)
	if err != nil {
		e.t.Fatalf("Due: %v", err)
	}
	var ids []string
	next := ""
	for _, d := range ds {
		ids = append(ids, d.BatchID)
		next = d.Cursor
	}
	return ids, next
}

func testDueAndLeases(t *testing.T, e *env) {
	for i := range 5 {
		e.create(fmt.Sprintf("B%d", i), docs(fmt.Sprintf("b%d", i), 2)...)
		e.clock.Advance(time.Minute)
	}
	ids, _ := e.due(10, "")
	eqSlice(t, "due before poll_after", ids, nil)
	_, err := e.s.TakeLease(ctx, "B0", "r1", time.Minute)
	wantErr(t, "TakeLease not due", err, ledger.ErrNotDue)

	e.clock.Set(testutil.Epoch.Add(Policy.PollAfter + 2*time.Minute)) // B0, B1, B2 due
	ids, _ = e.due(10, "")
	eqSlice(t, "due", ids, []string{"B0", "B1", "B2"})
	ids, cur := e.due(2, "")
	eqSlice(t, "due page 1", ids, []string{"B0", "B1"})
	ids, _ = e.due(2, cur)
	eqSlice(t, "due page 2", ids, []string{"B2"})
	_, err = e.s.Due(ctx, 1, "%%%")
	wantErr(t, "Due with a bad cursor", err, ledger.ErrInvalid)

	// A lease: held by one owner, renewed by it, not listed due.
	b := lease(t, e, "B0", "r1")
	eq(t, "LeaseOwner", b.LeaseOwner, "r1")
	eqTime(t, "LeaseUntil", b.LeaseUntil, e.clock.Now().Add(time.Minute))
	_, err = e.s.TakeLease(ctx, "B0", "r2", time.Minute)
	wantErr(t, "TakeLease held", err, ledger.ErrLeaseHeld)
	lease(t, e, "B0", "r1")
	ids, _ = e.due(10, "")
	eqSlice(t, "due while B0 is leased", ids, []string{"B1", "B2"})
	_, err = e.s.ReleaseLease(ctx, "B0", "r2")
	wantErr(t, "ReleaseLease by another", err, ledger.ErrNotOwner)

	// Release schedules the next poll PollEvery later.
	e.clock.Advance(10 * time.Second)
	b, err = e.s.ReleaseLease(ctx, "B0", "r1")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "LeaseOwner after release", b.LeaseOwner, "")
	eqTime(t, "NextPoll after release", b.NextPoll, e.clock.Now().Add(Policy.PollEvery))
	eq(t, "Polls", b.Polls, 1)
	_, err = e.s.ReleaseLease(ctx, "B0", "r1")
	wantErr(t, "ReleaseLease twice", err, ledger.ErrNotOwner)
	ids, _ = e.due(10, "")
	eqSlice(t, "due after B0's poll", ids, []string{"B1", "B2"})

	// A batch completed during its poll leaves the due index; its
	// lease's release changes nothing.
	lease(t, e, "B1", "r3")
	e.claim("B1", ledger.SourcePoll, "poll-B1", "b1-0", "b1-1")
	b, err = e.s.ReleaseLease(ctx, "B1", "r3")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "B1 state", b.State, ledger.StateComplete)
	_, err = e.s.TakeLease(ctx, "B1", "r3", time.Minute)
	wantErr(t, "TakeLease of a complete batch", err, ledger.ErrNotDue)
	e.clock.Advance(Policy.PollEvery)
	ids, _ = e.due(10, "")
	eqSlice(t, "due later", ids, []string{"B2", "B3", "B4", "B0"})
	_, err = e.s.TakeLease(ctx, "nope", "r1", time.Minute)
	wantErr(t, "TakeLease unknown", err, ledger.ErrNotFound)
	_, err = e.s.TakeLease(ctx, "B2", "", time.Minute)
	wantErr(t, "TakeLease without owner", err, ledger.ErrInvalid)
}

func testLeaseExpiry(t *testing.T, e *env) {
	e.create("B", docs("d", 1)...)
	e.clock.Advance(Policy.PollAfter)
	lease(t, e, "B", "dead-instance")
	e.clock.Advance(59 * time.Second)
	_, err := e.s.TakeLease(ctx, "B", "r2", time.Minute)
	wantErr(t, "TakeLease before expiry", err, ledger.ErrLeaseHeld)
	ids, _ := e.due(10, "")
	eqSlice(t, "due before expiry", ids, nil)
	e.clock.Advance(time.Second)
	ids, _ = e.due(10, "")
	eqSlice(t, "due at expiry", ids, []string{"B"})
	b := lease(t, e, "B", "r2")
	eq(t, "owner after takeover", b.LeaseOwner, "r2")
	_, err = e.s.ReleaseLease(ctx, "B", "dead-instance")
	wantErr(t, "release by the dead owner", err, ledger.ErrNotOwner)
	// The old owner's claims still count (compare-and-set, no lease).
	r := e.claim("B", ledger.SourcePoll, "poll-old", "d-0")
	eqSlice(t, "won by the old poll", r.Won, []string{"d-0"})
}

func testLeaseConcurrent(t *testing.T, e *env) {
	e.create("B", docs("d", 1)...)
	e.clock.Advance(Policy.PollAfter)
	var wins atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			_, err := e.s.TakeLease(ctx, "B", fmt.Sprintf("r%d", w), time.Minute)
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, ledger.ErrLeaseHeld), errors.Is(err, ledger.ErrNotDue):
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	eq(t, "leases taken", int(wins.Load()), 1)
}

// testLeaseOfFinishedBatch: a poll's claim that completes a batch keeps
// the poll's lease, so that the batch is due again when the lease ends
// should the poll die before releasing it (its deliveries may not have
// reached the queue); a release ends that.
func testLeaseOfFinishedBatch(t *testing.T, e *env) {
	e.create("A", docs("a", 1)...)
	e.create("B", docs("b", 1)...)
	e.clock.Advance(Policy.PollAfter)
	for _, id := range []string{"A", "B"} {
		lease(t, e, id, "dead-"+id)
	}
	for _, id := range []string{"A", "B"} {
		r := e.claim(id, ledger.SourcePoll, "poll-"+id, map[string]string{"A": "a-0", "B": "b-0"}[id])
		eq(t, "completed "+id, r.Completed, true)
		eq(t, "state "+id, r.Batch.State, ledger.StateComplete)
		eq(t, "lease owner "+id, r.Batch.LeaseOwner, "dead-"+id)
		eqTime(t, "NextPoll "+id, r.Batch.NextPoll, r.Batch.LeaseUntil)
	}
	// A's poll releases its lease: A is due no more.
	b, err := e.s.ReleaseLease(ctx, "A", "dead-A")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "A's lease after release", b.LeaseOwner, "")
	eqTime(t, "A's NextPoll after release", b.NextPoll, time.Time{})
	// B's poll dies: B is due when its lease ends, to a repairing poll.
	ids, _ := e.due(10, "")
	eqSlice(t, "due while leased", ids, nil)
	e.clock.Advance(time.Minute)
	ids, _ = e.due(10, "")
	eqSlice(t, "due at the lease's end", ids, []string{"B"})
	_, err = e.s.TakeLease(ctx, "A", "r2", time.Minute)
	wantErr(t, "TakeLease of a finished batch without a lease", err, ledger.ErrNotDue)
	b = lease(t, e, "B", "r2")
	eq(t, "B's state when repaired", b.State, ledger.StateComplete)
	_, err = e.s.ReleaseLease(ctx, "B", "dead-B")
	if err != nil {
		t.Fatalf("release by the dead owner of a finished batch: %v", err)
	}
	if b, err = e.s.ReleaseLease(ctx, "B", "r2"); err != nil {
		t.Fatal(err)
	}
	eq(t, "B's lease after the repair", b.LeaseOwner, "")
	eqTime(t, "B's NextPoll after the repair", b.NextPoll, time.Time{})
	e.clock.Advance(time.Hour)
	ids, _ = e.due(10, "")
	eqSlice(t, "due after the repair", ids, nil)
}

func testGiveUp(t *testing.T, e *env) {
	e.create("B", docs("d", 2)...)
	e.claim("B", ledger.SourceCallback, "cb", "d-0")
	// Polls every PollEvery, the last at GiveUpAfter at the latest.
	var last time.Time
	for i := 0; ; i++ {
		ids, _ := e.due(1, "")
		if len(ids) == 0 {
			b := e.get("B")
			if b.State != ledger.StateProcessing {
				break
			}
			e.clock.Set(b.NextPoll)
			continue
		}
		if i > 100 {
			t.Fatal("never gave up")
		}
		last = e.clock.Now()
		lease(t, e, "B", fmt.Sprintf("r%d", i))
		if _, err := e.s.ReleaseLease(ctx, "B", fmt.Sprintf("r%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	b := e.get("B")
	eq(t, "state", b.State, ledger.StateExpired)
	eqTime(t, "last poll", last, testutil.Epoch.Add(Policy.GiveUpAfter))
	eqTime(t, "Finished", b.Finished, last)
	eq(t, "polls", b.Polls, int((Policy.GiveUpAfter-Policy.PollAfter)/Policy.PollEvery)+1)
	eqTime(t, "NextPoll", b.NextPoll, time.Time{})
	ids, _ := e.due(10, "")
	eqSlice(t, "due after expiry", ids, nil)
}

func (e *env) list(st ledger.State, limit int, cursor string) ([]string, string) {
	e.t.Helper()
	p, err := e.s.List(ctx, ledger.ListQuery{State: st, Limit: limit, Cursor: cursor})
	if err != nil {
		e.t.Fatalf("List(%v): %v", st, err)
	}
	var ids []string
	for _, b := range p.Batches {
		ids = append(ids, b.ID)
	}
	return ids, p.Next
}

func testList(t *testing.T, e *env) {
	for i := range 6 {
		e.create(fmt.Sprintf("B%d", i), docs(fmt.Sprintf("b%d", i), 1)...)
		e.clock.Advance(5 * time.Minute)
	}
	// Now Epoch+30m: B0..B4 uploaded 10m ago or more (overdue).
	e.claim("B1", ledger.SourceCallback, "cb", "b1-0")
	e.claim("B4", ledger.SourceCallback, "cb", "b4-0")
	all, next := e.list(ledger.StateAny, 100, "")
	eqSlice(t, "all", all, []string{"B5", "B4", "B3", "B2", "B1", "B0"})
	eq(t, "next after the last page", next, "")
	ids, _ := e.list(ledger.StateComplete, 100, "")
	eqSlice(t, "complete", ids, []string{"B4", "B1"})
	ids, _ = e.list(ledger.StateProcessing, 100, "")
	eqSlice(t, "processing", ids, []string{"B5", "B3", "B2", "B0"})
	ids, _ = e.list(ledger.StateOverdue, 100, "")
	eqSlice(t, "overdue", ids, []string{"B3", "B2", "B0"})
	ids, _ = e.list(ledger.StateExpired, 100, "")
	eqSlice(t, "expired", ids, nil)

	// Paging.
	var got []string
	cur := ""
	for range 10 {
		ids, next := e.list(ledger.StateAny, 4, cur)
		got = append(got, ids...)
		if next == "" {
			break
		}
		cur = next
	}
	eqSlice(t, "all, 4 a page", got, all)
	ids, next = e.list(ledger.StateOverdue, 2, "")
	eqSlice(t, "overdue page 1", ids, []string{"B3", "B2"})
	ids, _ = e.list(ledger.StateOverdue, 2, next)
	eqSlice(t, "overdue page 2", ids, []string{"B0"})
	// A batch created after a page was read does not disturb the next.
	ids, next = e.list(ledger.StateAny, 3, "")
	e.create("B6", docs("b6", 1)...)
	ids2, _ := e.list(ledger.StateAny, 3, next)
	eqSlice(t, "pages around a create", append(ids, ids2...), all)
	_, err := e.s.List(ctx, ledger.ListQuery{Cursor: "!!"})
	wantErr(t, "List with a bad cursor", err, ledger.ErrInvalid)
	_, err = e.s.List(ctx, ledger.ListQuery{State: ledger.State(42)})
	wantErr(t, "List with a bad state", err, ledger.ErrInvalid)
	// Limit is at least 1.
	ids, _ = e.list(ledger.StateAny, 0, "")
	eq(t, "limit 0", len(ids), 1)
}

func testPurge(t *testing.T, e *env) {
	e.create("Done", ledger.Document{ID: "shared"})
	e.create("Open", ledger.Document{ID: "shared"}, ledger.Document{ID: "x"})
	e.claim("Done", ledger.SourceCallback, "cb", "shared")
	r, err := e.s.Begin(ctx, "key-1", "digest-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.Finish(ctx, "key-1", r.Token, ledger.Answer{Status: 201, Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(Policy.Retention - time.Second)
	res, err := e.s.Purge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "purged before retention", res.Batches, 0)
	eq(t, "idempotency purged after its window", res.Idempotency, 1)
	e.clock.Advance(time.Second)
	res, err = e.s.Purge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "purged", res, ledger.PurgeResult{Batches: 1})
	_, err = e.s.Get(ctx, "Done")
	wantErr(t, "Get purged", err, ledger.ErrNotFound)
	eqSlice(t, "Lookup after purge", e.lookup("shared"), []string{"Open/pending"})
	e.get("Open") // never purged while processing
	r, err = e.s.Begin(ctx, "key-1", "digest-2")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "Begin after the window", r.Outcome, ledger.IdemNew)
	ids, _ := e.list(ledger.StateAny, 10, "")
	eqSlice(t, "listed after purge", ids, []string{"Open"})

	// Many at once (more than one purge transaction).
	for i := range 520 {
		e.create(fmt.Sprintf("M%04d", i), ledger.Document{ID: "m"})
		e.claim(fmt.Sprintf("M%04d", i), ledger.SourcePoll, "p", "m")
	}
	e.clock.Advance(Policy.Retention)
	res, err = e.s.Purge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "purged many", res.Batches, 520)
	eqSlice(t, "Lookup m", e.lookup("m"), nil)
}

func testIdempotency(t *testing.T, e *env) {
	r, err := e.s.Begin(ctx, "k", "body-1")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "first", r.Outcome, ledger.IdemNew)
	if r.Token == "" {
		t.Fatal("no token")
	}
	tok := r.Token
	for _, c := range []struct {
		digest string
		want   ledger.IdemOutcome
	}{{"body-1", ledger.IdemInFlight}, {"body-2", ledger.IdemMismatch}} {
		r, err := e.s.Begin(ctx, "k", c.digest)
		if err != nil {
			t.Fatal(err)
		}
		eq(t, "while in flight, "+c.digest, r.Outcome, c.want)
	}
	wantErr(t, "Finish with another token", e.s.Finish(ctx, "k", "forged", ledger.Answer{Status: 201}), ledger.ErrNotOwner)
	ans := ledger.Answer{Status: 201, ContentType: "application/json", Body: []byte(`{"batch_id":"B"}`)}
	if err := e.s.Finish(ctx, "k", tok, ans); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Finish twice", e.s.Finish(ctx, "k", tok, ans), ledger.ErrNotOwner)
	wantErr(t, "Abandon after Finish", e.s.Abandon(ctx, "k", tok), ledger.ErrNotOwner)
	e.clock.Advance(Policy.IdempotencyWindow - time.Second)
	r, err = e.s.Begin(ctx, "k", "body-1")
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "repeat", r.Outcome, ledger.IdemDone)
	eq(t, "status", r.Answer.Status, 201)
	eq(t, "content type", r.Answer.ContentType, "application/json")
	eq(t, "body", string(r.Answer.Body), `{"batch_id":"B"}`)
	eqTime(t, "started", r.Started, testutil.Epoch)
	r, _ = e.s.Begin(ctx, "k", "body-2")
	eq(t, "another body after done", r.Outcome, ledger.IdemMismatch)
	e.clock.Advance(time.Second)
	r, _ = e.s.Begin(ctx, "k", "body-2")
	eq(t, "after the window", r.Outcome, ledger.IdemNew)

	// Abandon frees the key.
	r, _ = e.s.Begin(ctx, "k2", "d")
	if err := e.s.Abandon(ctx, "k2", r.Token); err != nil {
		t.Fatal(err)
	}
	r2, _ := e.s.Begin(ctx, "k2", "d")
	eq(t, "after Abandon", r2.Outcome, ledger.IdemNew)
	wantErr(t, "Abandon with the old token", e.s.Abandon(ctx, "k2", r.Token), ledger.ErrNotOwner)
	wantErr(t, "Finish of an unknown key", e.s.Finish(ctx, "nope", "t", ans), ledger.ErrNotFound)
	_, err = e.s.Begin(ctx, "", "d")
	wantErr(t, "empty key", err, ledger.ErrInvalid)
}

func testIdempotencyInFlightExpires(t *testing.T, e *env) {
	r1, _ := e.s.Begin(ctx, "k", "d")
	e.clock.Advance(Policy.InFlightTimeout - time.Second)
	r, _ := e.s.Begin(ctx, "k", "d")
	eq(t, "before the in-flight timeout", r.Outcome, ledger.IdemInFlight)
	e.clock.Advance(time.Second)
	r2, _ := e.s.Begin(ctx, "k", "d")
	eq(t, "after the in-flight timeout", r2.Outcome, ledger.IdemNew)
	if r2.Token == r1.Token {
		t.Fatal("the same token twice")
	}
	wantErr(t, "Finish by the presumed dead", e.s.Finish(ctx, "k", r1.Token, ledger.Answer{Status: 201}), ledger.ErrNotOwner)
	if err := e.s.Finish(ctx, "k", r2.Token, ledger.Answer{Status: 400, Body: []byte("no")}); err != nil {
		t.Fatal(err)
	}
	r, _ = e.s.Begin(ctx, "k", "d")
	eq(t, "done", r.Outcome, ledger.IdemDone)
	eq(t, "status", r.Answer.Status, 400)
	// A done record does not time out before its window.
	e.clock.Advance(Policy.InFlightTimeout * 3)
	r, _ = e.s.Begin(ctx, "k", "d")
	eq(t, "done later", r.Outcome, ledger.IdemDone)
}

func testIdempotencyConcurrent(t *testing.T, e *env) {
	var counts [5]atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			r, err := e.s.Begin(ctx, "k", "d")
			if err != nil {
				t.Error(err)
				return
			}
			counts[r.Outcome].Add(1)
		})
	}
	wg.Wait()
	eq(t, "new", counts[ledger.IdemNew].Load(), 1)
	eq(t, "in flight", counts[ledger.IdemInFlight].Load(), 15)
}

func testWatch(t *testing.T, e *env) {
	e.create("B", docs("d", 2)...)
	wctx, cancel := context.WithCancel(ctx)
	ch, err := e.s.Watch(wctx, "B")
	if err != nil {
		t.Fatal(err)
	}
	recv := func(what string) {
		t.Helper()
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("%s: channel closed", what)
			}
		case <-time.After(time.Second):
			t.Fatalf("%s: no signal within a second", what)
		}
	}
	none := func(what string) {
		t.Helper()
		select {
		case <-ch:
			t.Fatalf("%s: a signal", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
	none("before any change")
	go func() {
		if _, err := e.s.Claim(ctx, "B", ledger.Claim{Source: ledger.SourceCallback, DeliveryID: "cb",
			Results: []ledger.Result{{DocumentID: "d-0"}}}); err != nil {
			t.Error(err)
		}
	}()
	recv("after a claim")
	// A retry changes nothing and signals nothing.
	e.claim("B", ledger.SourceCallback, "cb", "d-0")
	none("after a retry")
	// Changes coalesce into one buffered signal.
	e.claim("B", ledger.SourceCallback, "cb", "d-1")
	if _, err := e.s.Update(ctx, "B", func(b *ledger.Batch) (bool, error) { b.ProductType = "X"; return true, nil }); err != nil {
		t.Fatal(err)
	}
	recv("after two changes")
	none("after the coalesced signal")
	eq(t, "state seen after the signal", e.get("B").State, ledger.StateComplete)
	// Another watcher of the same batch; cancel closes the first only.
	ch2, err := e.s.Watch(ctx, "B")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	testutil.WaitFor(t, 5*time.Second, "the watch channel to close", func() bool {
		select {
		case _, ok := <-ch:
			return !ok
		default:
			return false
		}
	})
	e.clock.Advance(Policy.Retention)
	if _, err := e.s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch2:
	case <-time.After(time.Second):
		t.Fatal("no signal for the purge")
	}
	_, err = e.s.Watch(ctx, "nope")
	wantErr(t, "Watch unknown", err, ledger.ErrNotFound)
	// Close closes the channels.
	e.create("C", docs("c", 1)...)
	ch3, err := e.s.Watch(ctx, "C")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-ch3:
		if ok {
			if _, ok := <-ch3; ok {
				t.Fatal("channel open after Close")
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel open after Close")
	}
}

func testReopen(t *testing.T, e *env) {
	e.create("B", docs("d", 3)...)
	e.create("C", ledger.Document{ID: "d-0"})
	e.claim("B", ledger.SourceCallback, "cb-1", "d-0")
	e.clock.Advance(Policy.PollAfter)
	lease(t, e, "B", "r1")
	r, _ := e.s.Begin(ctx, "k", "d")
	if err := e.s.Finish(ctx, "k", r.Token, ledger.Answer{Status: 201, Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	r2, _ := e.s.Begin(ctx, "k2", "d")
	before := e.get("B")
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = e.reopen()
	after := e.get("B")
	eq(t, "Revision", after.Revision, before.Revision)
	eq(t, "LeaseOwner", after.LeaseOwner, "r1")
	eqTime(t, "LeaseUntil", after.LeaseUntil, before.LeaseUntil)
	eq(t, "d-0 delivery", after.Documents[0].DeliveryID, "cb-1")
	eqSlice(t, "Lookup", e.lookup("d-0"), []string{"C/pending", "B/received"})
	ids, _ := e.due(10, "")
	eqSlice(t, "due", ids, []string{"C"})
	res, _ := e.s.Begin(ctx, "k", "d")
	eq(t, "idempotency done", res.Outcome, ledger.IdemDone)
	res, _ = e.s.Begin(ctx, "k2", "d")
	eq(t, "idempotency in flight", res.Outcome, ledger.IdemInFlight)
	if err := e.s.Finish(ctx, "k2", r2.Token, ledger.Answer{Status: 201}); err != nil {
		t.Fatal(err)
	}
	// The retry of a claim after a restart wins the same documents.
	cr := e.claim("B", ledger.SourceCallback, "cb-1", "d-0")
	eqSlice(t, "Won after reopen", cr.Won, []string{"d-0"})
}

func testClosed(t *testing.T, e *env) {
	e.create("B", docs("d", 1)...)
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Close(); err != nil {
		t.Fatalf("Close twice: %v", err)
	}
	_, err := e.s.Get(ctx, "B")
	wantErr(t, "Get", err, ledger.ErrClosed)
	_, err = e.s.Create(ctx, &ledger.Batch{ID: "C", Documents: docs("d", 1)})
	wantErr(t, "Create", err, ledger.ErrClosed)
	_, err = e.s.Claim(ctx, "B", ledger.Claim{Source: ledger.SourcePoll, DeliveryID: "x"})
	wantErr(t, "Claim", err, ledger.ErrClosed)
	_, err = e.s.Begin(ctx, "k", "d")
	wantErr(t, "Begin", err, ledger.ErrClosed)
	_, err = e.s.Due(ctx, 1, "")
	wantErr(t, "Due", err, ledger.ErrClosed)
	_, err = e.s.Watch(ctx, "B")
	wantErr(t, "Watch", err, ledger.ErrClosed)
}

func testStats(t *testing.T, e *env) {
	for i := range 4 {
		e.create(fmt.Sprintf("B%d", i), docs("d", 1)...)
	}
	e.claim("B0", ledger.SourcePoll, "p", "d-0")
	e.s.Begin(ctx, "k", "d")
	st, err := e.s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "stats", st, ledger.Stats{Processing: 3, Complete: 1, Idempotency: 1})

	// Overdue: the processing batches uploaded PollAfter ago or more.
	e.clock.Advance(Policy.PollAfter / 2)
	e.create("B4", docs("e", 1)...)
	e.clock.Advance(Policy.PollAfter / 2)
	if st, err = e.s.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	eq(t, "stats at PollAfter", st, ledger.Stats{Processing: 4, Complete: 1, Overdue: 3, Idempotency: 1})
}
