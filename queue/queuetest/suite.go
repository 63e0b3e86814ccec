// Package queuetest is the behavioural test suite of a queue.Store: the
// same tests run against every backend (spool.FileSpool, jsqueue.Queue),
// so that the callback route and the admin API see the same semantics
// whichever is configured. Only tests import it.
package queuetest

import (
	"bytes"
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

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// Options are the delivery options of the store under test, those that
// every backend takes; the Opener and Reconfigure map them onto the
// backend's own. The zero value of a field selects the backend's
// default.
type Options struct {
	Deliver         queue.DeliverFunc
	Retention       time.Duration
	MaxAttempts     int
	BackoffMin      time.Duration
	BackoffMax      time.Duration
	DeliveryTimeout time.Duration
	Concurrency     int
	Logger          *zap.Logger
	Observer        queue.Observer
}

// Store is a queue.Store whose delivery options can change while open.
type Store interface {
	queue.Store
	Reconfigure(Options) error
}

// Opener opens the store under test with the given options. Within one
// test, every call opens the same durable store (a spool directory, a
// JetStream stream), so that a test can close it and open it again. The
// store is closed at the end of the test if the test did not.
type Opener func(t *testing.T, o Options) Store

// Run runs every test of the suite, each as a subtest with a fresh store
// from newStore.
func Run(t *testing.T, newStore func(t *testing.T) Opener) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"AppendGetLoadList", testAppendGetLoadList},
		{"AppendKeepsNoBody", testAppendKeepsNoBody},
		{"AppendValidates", testAppendValidates},
		{"Duplicate", testDuplicate},
		{"DeliverOnce", testDeliverOnce},
		{"DeliverLater", testDeliverLater},
		{"NoHeadOfLineBlocking", testNoHeadOfLineBlocking},
		{"BackoffAndDeadLetter", testBackoffAndDeadLetter},
		{"OperatorActions", testOperatorActions},
		{"RetryPending", testRetryPending},
		{"DeliveryTimeoutAndPanic", testDeliveryTimeoutAndPanic},
		{"CloseDrains", testCloseDrains},
		{"Reopen", testReopen},
		{"RetentionExpires", testRetentionExpires},
		{"ConcurrentDistinct", testConcurrentDistinct},
		{"ReconfigureNoGapNoDouble", testReconfigureNoGapNoDouble},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// Recorder is a DeliverFunc that records deliveries and fails those its
// fail function selects.
type Recorder struct {
	mu   sync.Mutex
	got  []queue.Delivery
	fail func(d queue.Delivery) error
}

// Deliver implements queue.DeliverFunc.
func (r *Recorder) Deliver(ctx context.Context, d queue.Delivery) error {
	r.mu.Lock()
	d.Body = bytes.Clone(d.Body)
	r.got = append(r.got, d)
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		return fail(d)
	}
	return nil
}

// SetFail sets the function that decides failures (nil: none).
func (r *Recorder) SetFail(f func(d queue.Delivery) error) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

// Deliveries returns the deliveries so far.
func (r *Recorder) Deliveries() []queue.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// IDs returns the ids delivered, in order.
func (r *Recorder) IDs() []string {
	var ids []string
	for _, d := range r.Deliveries() {
		ids = append(ids, d.ID)
	}
	return ids
}

// Count returns how many times id was delivered.
func (r *Recorder) Count(id string) int {
	n := 0
	for _, d := range r.Deliveries() {
		if d.ID == id {
			n++
		}
	}
	return n
}

// ID is the id of the i-th test callback.
func ID(i int) string { return fmt.Sprintf("cb-%04d.x:y", i) }

// Entry is the i-th test callback, with a body of size bytes.
func Entry(i int, size int) queue.Entry {
	body := bytes.Repeat([]byte{'a' + byte(i%26)}, size)
	copy(body, fmt.Sprintf(`{"n":%d}`, i))
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Atlas-Callback-Id", ID(i))
	h.Set("X-Atlas-Subject", "client-1")
	return queue.Entry{ID: ID(i), Header: h, Body: body}
}

// MustAppend appends e, failing the test on error.
func MustAppend(t testing.TB, s queue.Store, e queue.Entry) queue.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), e)
	if err != nil {
		t.Fatalf("Append(%s): %v", e.ID, err)
	}
	return res
}

// WaitFor polls cond for up to 20s.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close closes s, failing the test on error.
func Close(t testing.TB, s queue.Store) {
	t.Helper()
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// IDs returns the ids of infos.
func IDs(infos []queue.Info) []string {
	var ids []string
	for _, in := range infos {
		ids = append(ids, in.ID)
	}
	return ids
}

// ObservedLogger returns a logger that records Warn and above.
func ObservedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.WarnLevel)
	return zap.New(core), logs
}

// CountingObserver counts the Observer events.
type CountingObserver struct {
	queue.NopObserver
	Durable  atomic.Int64 // appends made durable
	Dead     atomic.Int64
	mu       sync.Mutex
	outcomes map[queue.Outcome]int
}

// FsyncDone implements queue.Observer.
func (o *CountingObserver) FsyncDone(_ time.Duration, appends int) { o.Durable.Add(int64(appends)) }

// DeliveryAttempt implements queue.Observer.
func (o *CountingObserver) DeliveryAttempt(out queue.Outcome, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.outcomes == nil {
		o.outcomes = make(map[queue.Outcome]int)
	}
	o.outcomes[out]++
}

// DeadLettered implements queue.Observer.
func (o *CountingObserver) DeadLettered() { o.Dead.Add(1) }

// Outcome returns how many attempts had the outcome.
func (o *CountingObserver) Outcome(out queue.Outcome) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.outcomes[out]
}

func testAppendGetLoadList(t *testing.T, open Opener) {
	s := open(t, Options{})
	var want []string
	for i := range 10 {
		res := MustAppend(t, s, Entry(i, 1000+i))
		if res.Duplicate || res.ID != ID(i) {
			t.Fatalf("Append = %+v", res)
		}
		want = append(want, ID(i))
	}
	if got := IDs(s.List(queue.StatePending, 0)); !slices.Equal(got, want) {
		t.Fatalf("pending = %v, want %v", got, want)
	}
	if got := IDs(s.List(queue.AnyState, 3)); !slices.Equal(got, want[:3]) {
		t.Errorf("List(AnyState, 3) = %v", got)
	}
	if got := IDs(s.List(queue.StatePending, 4)); !slices.Equal(got, want[:4]) {
		t.Errorf("List(StatePending, 4) = %v", got)
	}
	if got := s.List(queue.StateDead, 0); len(got) != 0 {
		t.Errorf("dead = %v", got)
	}
	for i := range 10 {
		e, err := s.Load(context.Background(), ID(i))
		if err != nil {
			t.Fatalf("Load(%s): %v", ID(i), err)
		}
		w := Entry(i, 1000+i)
		if e.ID != w.ID || !bytes.Equal(e.Body, w.Body) || e.Header.Get("X-Atlas-Subject") != "client-1" ||
			e.Header.Get("Content-Type") != "application/json" || e.Received.IsZero() {
			t.Errorf("Load(%s) = %q, %d bytes, header %v, received %v", ID(i), e.ID, len(e.Body), e.Header, e.Received)
		}
	}
	in, ok := s.Get(ID(3))
	if !ok || in.ID != ID(3) || in.State != queue.StatePending || in.Size != 1003 || in.Attempts != 0 || in.Received.IsZero() {
		t.Errorf("Get = %+v, %v", in, ok)
	}
	if _, ok := s.Get("unknown"); ok {
		t.Error("Get(unknown) found something")
	}
	if _, err := s.Load(context.Background(), "unknown"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Load(unknown) = %v, want ErrNotFound", err)
	}
	if st := s.Stats(); st.Pending != 10 || st.Dead != 0 || st.Delivered != 0 || st.DiskBytes == 0 || st.OldestPending.IsZero() {
		t.Errorf("Stats = %+v", st)
	}
}

// testAppendKeepsNoBody checks that the caller may reuse a body once
// Append returns, as the callback route does with its pooled buffers.
func testAppendKeepsNoBody(t *testing.T, open Opener) {
	s := open(t, Options{})
	e := Entry(1, 4096)
	want := bytes.Clone(e.Body)
	MustAppend(t, s, e)
	for i := range e.Body {
		e.Body[i] = 'z'
	}
	got, err := s.Load(context.Background(), e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Body, want) {
		t.Error("the stored body changed with the caller's buffer")
	}
}

func testAppendValidates(t *testing.T, open Opener) {
	s := open(t, Options{})
	for _, id := range []string{"", "a/b", "a b", "a*", "a>", strings.Repeat("x", 129), "é"} {
		if _, err := s.Append(context.Background(), queue.Entry{ID: id}); !errors.Is(err, queue.ErrInvalid) {
			t.Errorf("Append(id %q) = %v, want ErrInvalid", id, err)
		}
	}
	// Ids that differ only in '.' and the characters around it stay apart.
	for _, id := range []string{"a.b", "a_b", ".a", "a.", "a..b"} {
		if res := MustAppend(t, s, queue.Entry{ID: id, Body: []byte(id)}); res.Duplicate {
			t.Errorf("Append(%q) reported a duplicate", id)
		}
	}
	for _, id := range []string{"a.b", "a_b", ".a", "a.", "a..b"} {
		e, err := s.Load(context.Background(), id)
		if err != nil || string(e.Body) != id {
			t.Errorf("Load(%q) = %q, %v", id, e.Body, err)
		}
	}
}

func testDuplicate(t *testing.T, open Opener) {
	obs := &CountingObserver{}
	s := open(t, Options{Observer: obs})
	MustAppend(t, s, Entry(1, 100))
	if res := MustAppend(t, s, Entry(1, 100)); !res.Duplicate {
		t.Fatal("second Append of the same id: Duplicate = false")
	}
	// Concurrent appends of one id: exactly one stores it.
	var wg sync.WaitGroup
	var stored atomic.Int64
	for range 32 {
		wg.Go(func() {
			res, err := s.Append(context.Background(), Entry(2, 100))
			if err != nil {
				t.Error(err)
				return
			}
			if !res.Duplicate {
				stored.Add(1)
			}
		})
	}
	wg.Wait()
	if stored.Load() != 1 {
		t.Errorf("%d concurrent appends stored the id, want 1", stored.Load())
	}
	if got := obs.Durable.Load(); got != 2 {
		t.Errorf("%d appends made durable, want 2", got)
	}
	if st := s.Stats(); st.Pending != 2 {
		t.Errorf("Stats = %+v, want 2 pending", st)
	}
}

func testDeliverOnce(t *testing.T, open Opener) {
	rec := &Recorder{}
	obs := &CountingObserver{}
	s := open(t, Options{Deliver: rec.Deliver, Observer: obs})
	const n = 20
	for i := range n {
		MustAppend(t, s, Entry(i, 500))
	}
	WaitFor(t, "deliveries", func() bool { return settled(s.Stats(), "Delivered", n) })
	for i := range n {
		if c := rec.Count(ID(i)); c != 1 {
			t.Errorf("%s delivered %d times", ID(i), c)
		}
	}
	for _, d := range rec.Deliveries() {
		if d.Header.Get("X-Atlas-Callback-Id") != d.ID || d.Attempt != 1 || len(d.Body) != 500 || d.Received.IsZero() {
			t.Errorf("delivery %s: attempt %d, header %v, %d bytes", d.ID, d.Attempt, d.Header, len(d.Body))
		}
	}
	in, ok := s.Get(ID(0))
	if !ok || in.State != queue.StateDelivered || in.Attempts != 1 || in.Delivered.IsZero() || in.Size != 500 {
		t.Errorf("Get after delivery = %+v", in)
	}
	if _, err := s.Load(context.Background(), ID(0)); !errors.Is(err, queue.ErrDelivered) {
		t.Errorf("Load(delivered) = %v, want ErrDelivered", err)
	}
	// Atlas redelivers: acknowledged as a duplicate, not delivered again.
	if res := MustAppend(t, s, Entry(0, 500)); !res.Duplicate {
		t.Error("Append of a delivered id: Duplicate = false")
	}
	if got := IDs(s.List(queue.StateDelivered, 0)); len(got) != n {
		t.Errorf("%d delivered listed, want %d", len(got), n)
	}
	WaitFor(t, "pending to drain", func() bool { return s.Stats().Pending == 0 })
	time.Sleep(50 * time.Millisecond)
	if got := len(rec.Deliveries()); got != n {
		t.Errorf("%d deliveries, want %d", got, n)
	}
	if obs.Outcome(queue.OutcomeDelivered) != n {
		t.Errorf("observer: %d delivered", obs.Outcome(queue.OutcomeDelivered))
	}
}

// testDeliverLater stores without a Deliver, then starts delivering
// with Reconfigure.
func testDeliverLater(t *testing.T, open Opener) {
	s := open(t, Options{Concurrency: 1})
	var want []string
	for i := range 10 {
		MustAppend(t, s, Entry(i, 100))
		want = append(want, ID(i))
	}
	time.Sleep(50 * time.Millisecond)
	if st := s.Stats(); st.Pending != 10 || st.Delivered != 0 {
		t.Fatalf("without a Deliver: %+v", st)
	}
	rec := &Recorder{}
	if err := s.Reconfigure(Options{Concurrency: 1, Deliver: rec.Deliver}); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "deliveries", func() bool { return settled(s.Stats(), "Delivered", 10) })
	if got := rec.IDs(); !slices.Equal(got, want) {
		t.Errorf("delivery order %v, want %v (oldest first)", got, want)
	}
}

// testNoHeadOfLineBlocking checks that a callback that keeps failing
// does not hold up the ones behind it, even with one delivery at a time.
func testNoHeadOfLineBlocking(t *testing.T, open Opener) {
	rec := &Recorder{fail: func(d queue.Delivery) error {
		if d.ID == ID(0) {
			return errors.New("receiver rejects this one")
		}
		return nil
	}}
	s := open(t, Options{Concurrency: 1, BackoffMin: time.Hour, BackoffMax: time.Hour})
	for i := range 11 {
		MustAppend(t, s, Entry(i, 100))
	}
	if err := s.Reconfigure(Options{Concurrency: 1, Deliver: rec.Deliver, BackoffMin: time.Hour, BackoffMax: time.Hour}); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "the others", func() bool { return settled(s.Stats(), "Delivered", 10) })
	in, _ := s.Get(ID(0))
	if in.State != queue.StatePending || in.Attempts != 1 || !strings.Contains(in.LastError, "rejects") ||
		in.NextAttempt.Before(time.Now().Add(30*time.Minute)) || in.LastAttempt.IsZero() {
		t.Errorf("failing callback: %+v", in)
	}
	for _, limit := range []int{0, 1, 100} {
		ps := s.List(queue.StatePending, limit)
		if len(ps) != 1 || ps[0].ID != ID(0) || ps[0].Attempts != 1 || !strings.Contains(ps[0].LastError, "rejects") {
			t.Errorf("pending list, limit %d: %+v", limit, ps)
		}
	}
}

func testBackoffAndDeadLetter(t *testing.T, open Opener) {
	var mu sync.Mutex
	var times []time.Time
	rec := &Recorder{}
	rec.SetFail(func(d queue.Delivery) error {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		return errors.New("boom")
	})
	obs := &CountingObserver{}
	logger, logs := ObservedLogger()
	const lo = 100 * time.Millisecond
	s := open(t, Options{
		Deliver: rec.Deliver, MaxAttempts: 4, BackoffMin: lo, BackoffMax: 10 * lo, Observer: obs, Logger: logger,
	})
	MustAppend(t, s, Entry(0, 300))
	WaitFor(t, "dead letter", func() bool { return settled(s.Stats(), "Dead", 1) })
	mu.Lock()
	if len(times) != 4 {
		t.Errorf("%d attempts, want 4", len(times))
	}
	for i := 1; i < len(times); i++ {
		want := lo << (i - 1)
		if got := times[i].Sub(times[i-1]); got < want*8/10 {
			t.Errorf("delay before attempt %d = %v, want at least %v", i+1, got, want*8/10)
		}
	}
	mu.Unlock()
	for i, d := range rec.Deliveries() {
		if d.Attempt != i+1 {
			t.Errorf("delivery %d numbered attempt %d", i, d.Attempt)
		}
	}
	in, _ := s.Get(ID(0))
	if in.State != queue.StateDead || in.Attempts != 4 || in.LastError != "boom" || in.Size != 300 {
		t.Errorf("dead callback: %+v", in)
	}
	if got := IDs(s.List(queue.StateDead, 0)); !slices.Equal(got, []string{ID(0)}) {
		t.Errorf("dead list: %v", got)
	}
	if st := s.Stats(); st.Pending != 0 || st.Dead != 1 {
		t.Errorf("Stats = %+v", st)
	}
	if e, err := s.Load(context.Background(), ID(0)); err != nil || !bytes.Equal(e.Body, Entry(0, 300).Body) {
		t.Errorf("Load(dead) = %d bytes, %v", len(e.Body), err)
	}
	if res := MustAppend(t, s, Entry(0, 300)); !res.Duplicate {
		t.Error("Append of a dead id: Duplicate = false")
	}
	WaitFor(t, "observer", func() bool { return obs.Dead.Load() == 1 })
	if obs.Outcome(queue.OutcomeFailed) != 4 {
		t.Errorf("observer: %d failed", obs.Outcome(queue.OutcomeFailed))
	}
	if logs.FilterMessageSnippet("dead-lettered").Len() != 1 {
		t.Errorf("no dead-letter warning: %v", logs.All())
	}

	// Replay: back to pending with attempts reset, then delivered.
	rec.SetFail(nil)
	if err := s.Retry(context.Background(), ID(0)); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "delivery after retry", func() bool { return settled(s.Stats(), "Delivered", 1) })
	in, _ = s.Get(ID(0))
	if in.State != queue.StateDelivered || in.Attempts != 1 {
		t.Errorf("after retry and delivery: %+v", in)
	}
	if ds := rec.Deliveries(); ds[len(ds)-1].Attempt != 1 {
		t.Errorf("first attempt after retry numbered %d", ds[len(ds)-1].Attempt)
	}
	if st := s.Stats(); st.Dead != 0 {
		t.Errorf("after retry: %+v", st)
	}
}

// testOperatorActions covers Retry, RetryAll, Delete and their errors,
// and that they survive a reopen.
func testOperatorActions(t *testing.T, open Opener) {
	ctx := context.Background()
	rec := &Recorder{fail: func(queue.Delivery) error { return errors.New("down") }}
	s := open(t, Options{Deliver: rec.Deliver, MaxAttempts: 1})
	for i := range 4 {
		MustAppend(t, s, Entry(i, 100))
	}
	WaitFor(t, "dead letters", func() bool { return settled(s.Stats(), "Dead", 4) })
	if got := IDs(s.List(queue.StateDead, 0)); len(got) != 4 {
		t.Fatalf("dead: %v", got)
	}
	if err := s.Delete(ctx, ID(3)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, ID(3)); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if _, ok := s.Get(ID(3)); ok {
		t.Error("Get finds a deleted callback")
	}
	if err := s.Retry(ctx, "unknown"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Retry(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := s.RetryAll(ctx, queue.StateDelivered); err == nil {
		t.Error("RetryAll(delivered) succeeded")
	}
	Close(t, s)

	rec.SetFail(nil)
	s = open(t, Options{Deliver: rec.Deliver})
	if st := s.Stats(); st.Dead != 3 || st.Pending != 0 {
		t.Fatalf("after reopen: %+v", st)
	}
	n, err := s.RetryAll(ctx, queue.StateDead)
	if err != nil || n != 3 {
		t.Fatalf("RetryAll = %d, %v", n, err)
	}
	WaitFor(t, "deliveries", func() bool { return settled(s.Stats(), "Delivered", 3) })
	if err := s.Retry(ctx, ID(0)); !errors.Is(err, queue.ErrDelivered) {
		t.Errorf("Retry(delivered) = %v, want ErrDelivered", err)
	}
	if err := s.Delete(ctx, ID(0)); err != nil {
		t.Errorf("Delete(delivered) = %v", err)
	}
	// A deleted id is accepted again, and delivered.
	for _, i := range []int{0, 3} {
		if res := MustAppend(t, s, Entry(i, 100)); res.Duplicate {
			t.Errorf("Append(%s) after Delete: Duplicate", ID(i))
		}
	}
	WaitFor(t, "redelivery of the re-appended", func() bool { return rec.Count(ID(0)) == 3 && rec.Count(ID(3)) == 2 })
	WaitFor(t, "deliveries", func() bool { return settled(s.Stats(), "Delivered", 4) })
	Close(t, s)

	s = open(t, Options{})
	if got := IDs(s.List(queue.StateDelivered, 0)); !slices.Equal(got, []string{ID(1), ID(2), ID(0), ID(3)}) {
		t.Errorf("delivered after reopen: %v", got)
	}
	if st := s.Stats(); st.Pending+st.Dead != 0 {
		t.Errorf("after reopen: %+v", st)
	}
}

// testRetryPending makes a callback waiting for its backoff due now,
// with its attempts reset.
func testRetryPending(t *testing.T, open Opener) {
	ctx := context.Background()
	rec := &Recorder{}
	rec.SetFail(func(queue.Delivery) error { return errors.New("not yet") })
	s := open(t, Options{Deliver: rec.Deliver, BackoffMin: time.Hour, BackoffMax: time.Hour})
	MustAppend(t, s, Entry(0, 100))
	MustAppend(t, s, Entry(1, 100))
	WaitFor(t, "first attempts", func() bool {
		a, _ := s.Get(ID(0))
		b, _ := s.Get(ID(1))
		return a.Attempts == 1 && b.Attempts == 1
	})
	rec.SetFail(nil)
	if err := s.Retry(ctx, ID(0)); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, "delivery after retry", func() bool { return settled(s.Stats(), "Delivered", 1) })
	if in, _ := s.Get(ID(0)); in.State != queue.StateDelivered || in.Attempts != 1 {
		t.Errorf("after retry: %+v", in)
	}
	if in, _ := s.Get(ID(1)); in.State != queue.StatePending || in.Attempts != 1 {
		t.Errorf("the other: %+v", in)
	}
	if n, err := s.RetryAll(ctx, queue.StatePending); err != nil || n != 1 {
		t.Errorf("RetryAll(pending) = %d, %v", n, err)
	}
	WaitFor(t, "delivery after RetryAll", func() bool { return settled(s.Stats(), "Delivered", 2) })
	if c0, c1 := rec.Count(ID(0)), rec.Count(ID(1)); c0 != 2 || c1 != 2 {
		t.Errorf("deliveries: %d and %d, want 2 each", c0, c1)
	}
}

func testDeliveryTimeoutAndPanic(t *testing.T, open Opener) {
	obs := &CountingObserver{}
	var calls atomic.Int64
	deliver := func(ctx context.Context, d queue.Delivery) error {
		switch calls.Add(1) {
		case 1:
			<-ctx.Done() // hangs until the timeout
			return ctx.Err()
		case 2:
			panic("receiver bug")
		}
		return nil
	}
	s := open(t, Options{
		Deliver: deliver, DeliveryTimeout: 100 * time.Millisecond, BackoffMin: 10 * time.Millisecond,
		BackoffMax: 10 * time.Millisecond, Concurrency: 1, Observer: obs,
	})
	MustAppend(t, s, Entry(0, 100))
	WaitFor(t, "delivery", func() bool { return settled(s.Stats(), "Delivered", 1) })
	if in, _ := s.Get(ID(0)); in.Attempts != 3 {
		t.Errorf("attempts = %d, want 3", in.Attempts)
	}
	if obs.Outcome(queue.OutcomeTimeout) != 1 || obs.Outcome(queue.OutcomeFailed) != 1 {
		t.Errorf("outcomes: %d timeout, %d failed", obs.Outcome(queue.OutcomeTimeout), obs.Outcome(queue.OutcomeFailed))
	}
}

// testCloseDrains checks that Close waits for deliveries in progress up
// to its context, then cancels them, and that they stay pending and do
// not count as an attempt.
func testCloseDrains(t *testing.T, open Opener) {
	started := make(chan struct{}, 1)
	block := func(ctx context.Context, d queue.Delivery) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}
	obs := &CountingObserver{}
	s := open(t, Options{Deliver: block, Observer: obs})
	MustAppend(t, s, Entry(0, 100))
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want a deadline error", err)
	}
	if obs.Outcome(queue.OutcomeCanceled) != 1 {
		t.Errorf("outcomes: canceled %d, timeout %d, failed %d", obs.Outcome(queue.OutcomeCanceled),
			obs.Outcome(queue.OutcomeTimeout), obs.Outcome(queue.OutcomeFailed))
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := s.Append(context.Background(), Entry(1, 10)); !errors.Is(err, queue.ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}

	rec := &Recorder{}
	s = open(t, Options{Deliver: rec.Deliver})
	WaitFor(t, "redelivery", func() bool { return settled(s.Stats(), "Delivered", 1) })
	if ds := rec.Deliveries(); ds[0].Attempt != 1 {
		t.Errorf("attempt after reopen = %d, want 1", ds[0].Attempt)
	}

	// A delivery that completes within the bound is recorded.
	release := make(chan struct{})
	slow := func(ctx context.Context, d queue.Delivery) error {
		started <- struct{}{}
		<-release
		return nil
	}
	Close(t, s)
	s = open(t, Options{Deliver: slow})
	MustAppend(t, s, Entry(1, 100))
	<-started
	time.AfterFunc(20*time.Millisecond, func() { close(release) })
	Close(t, s)
	s = open(t, Options{})
	if st := s.Stats(); st.Delivered != 2 {
		t.Errorf("after a drained close: %+v", st)
	}
}

// testReopen checks that everything stored survives a close, with its
// state.
func testReopen(t *testing.T, open Opener) {
	rec := &Recorder{fail: func(d queue.Delivery) error {
		if d.ID == ID(1) {
			return errors.New("no")
		}
		return nil
	}}
	s := open(t, Options{Deliver: rec.Deliver, MaxAttempts: 1})
	for i := range 3 {
		MustAppend(t, s, Entry(i, 100))
	}
	WaitFor(t, "outcomes", func() bool { st := s.Stats(); return st.Delivered == 2 && st.Dead == 1 })
	Close(t, s)
	s = open(t, Options{})
	MustAppend(t, s, Entry(3, 100))
	st := s.Stats()
	if st.Delivered != 2 || st.Dead != 1 || st.Pending != 1 {
		t.Errorf("after reopen: %+v", st)
	}
	for i, want := range []queue.State{queue.StateDelivered, queue.StateDead, queue.StateDelivered, queue.StatePending} {
		if in, ok := s.Get(ID(i)); !ok || in.State != want {
			t.Errorf("Get(%s) = %+v, want %s", ID(i), in, want)
		}
	}
	if got := IDs(s.List(queue.AnyState, 0)); !slices.Equal(got, []string{ID(0), ID(1), ID(2), ID(3)}) {
		t.Errorf("List(AnyState) = %v", got)
	}
	for i := range 4 {
		if res := MustAppend(t, s, Entry(i, 100)); !res.Duplicate {
			t.Errorf("Append(%s) after reopen: not a duplicate", ID(i))
		}
	}
}

// testRetentionExpires checks that a delivered id is forgotten after
// the retention window, and accepted again.
func testRetentionExpires(t *testing.T, open Opener) {
	rec := &Recorder{}
	s := open(t, Options{Deliver: rec.Deliver, Retention: time.Second})
	MustAppend(t, s, Entry(0, 100))
	WaitFor(t, "delivery", func() bool { return settled(s.Stats(), "Delivered", 1) })
	if res := MustAppend(t, s, Entry(0, 100)); !res.Duplicate {
		t.Error("Append within the retention window: not a duplicate")
	}
	WaitFor(t, "the id to be forgotten", func() bool { _, ok := s.Get(ID(0)); return !ok })
	if st := s.Stats(); st.Delivered != 0 {
		t.Errorf("after the retention window: %+v", st)
	}
	if res := MustAppend(t, s, Entry(0, 100)); res.Duplicate {
		t.Error("Append after the retention window: duplicate")
	}
	WaitFor(t, "second delivery", func() bool { return rec.Count(ID(0)) == 2 })
}

// testConcurrentDistinct appends distinct callbacks from many
// goroutines while they are delivered: each is delivered exactly once.
func testConcurrentDistinct(t *testing.T, open Opener) {
	rec := &Recorder{}
	s := open(t, Options{Deliver: rec.Deliver, Concurrency: 8})
	const n, workers = 400, 16
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if res, err := s.Append(context.Background(), Entry(i, 2048)); err != nil || res.Duplicate {
					t.Errorf("Append(%s) = %+v, %v", ID(i), res, err)
				}
			}
		})
	}
	wg.Wait()
	WaitFor(t, "deliveries", func() bool { return settled(s.Stats(), "Delivered", n) })
	for i := range n {
		if c := rec.Count(ID(i)); c != 1 {
			t.Errorf("%s delivered %d times", ID(i), c)
		}
	}
}

// testReconfigureNoGapNoDouble swaps the deliverer while deliveries run:
// every callback is delivered exactly once, by one or the other, and
// those appended after the swap by the new one.
func testReconfigureNoGapNoDouble(t *testing.T, open Opener) {
	const n = 200
	var a, b atomic.Int64
	counts := make([]atomic.Int64, n)
	var mu sync.Mutex
	byB := make(map[string]bool)
	deliverer := func(mine *atomic.Int64, isB bool) queue.DeliverFunc {
		return func(ctx context.Context, d queue.Delivery) error {
			mine.Add(1)
			var i int
			if _, err := fmt.Sscanf(d.ID, "cb-%04d", &i); err == nil && i < n {
				counts[i].Add(1)
			}
			if isB {
				mu.Lock()
				byB[d.ID] = true
				mu.Unlock()
			}
			time.Sleep(time.Millisecond)
			return nil
		}
	}
	s := open(t, Options{Deliver: deliverer(&a, false)})
	for i := range n {
		MustAppend(t, s, Entry(i, 100))
		if i == n/2 {
			if err := s.Reconfigure(Options{Deliver: deliverer(&b, true)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	WaitFor(t, "deliveries", func() bool { return settled(s.Stats(), "Delivered", n) })
	for i := range counts {
		if c := counts[i].Load(); c != 1 {
			t.Errorf("%s delivered %d times", ID(i), c)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := n/2 + 1; i < n; i++ {
		if !byB[ID(i)] {
			t.Errorf("%s, appended after the swap, was not delivered by the new deliverer", ID(i))
		}
	}
	t.Logf("old deliverer %d, new %d", a.Load(), b.Load())
}

// settled reports whether the count of field ("Dead" or "Delivered") is
// n with no delivery in progress: every outcome recorded, whatever the
// backend's order of recording.
func settled(st queue.Stats, field string, n int) bool {
	v := st.Delivered
	if field == "Dead" {
		v = st.Dead
	}
	return v == n && st.InFlight == 0
}
