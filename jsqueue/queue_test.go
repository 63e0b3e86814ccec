package jsqueue

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/queue/queuetest"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

func testKeyring(t testing.TB, keys ...byte) *seal.Keyring {
	t.Helper()
	var ks [][]byte
	for _, k := range keys {
		ks = append(ks, bytes.Repeat([]byte{k}, seal.KeySize))
	}
	kr, err := seal.NewKeyring(ks...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// rawJS connects to url for looking at the streams as a NATS operator
// would.
func rawJS(t testing.TB, url string) jetstream.JetStream {
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

// TestSealed checks that with a Keyring nothing of a callback's headers
// or body is readable in the streams, that it is delivered and loaded
// whole, and that a sealed message moved to another id does not open.
func TestSealed(t *testing.T) {
	n := natstest.Start(t)
	stream := newStreamName()
	rec := &queuetest.Recorder{}
	rec.SetFail(func(d queue.Delivery) error { return errors.New("app down") })
	o := testOptions([]string{n.URL()}, stream, 1, queuetest.Options{Deliver: rec.Deliver, MaxAttempts: 1})
	o.Keyring = testKeyring(t, 1)
	q := openQueue(t, o)
	e := queuetest.Entry(0, 2000)
	e.Header.Set("X-Atlas-Secret-Looking", "hunter2-in-a-header")
	queuetest.MustAppend(t, q, e)
	testutil.WaitFor(t, 20*time.Second, "dead letter", func() bool { return q.Stats().Dead == 1 })

	js := rawJS(t, n.URL())
	ctx := context.Background()
	s, err := js.Stream(ctx, stream+"_DEAD")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, stream+"_DEAD.*")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(m.Data, e.Body[:40]) || bytes.Contains(m.Data, []byte("hunter2")) || bytes.Contains(m.Data, []byte("client-1")) {
		t.Error("the dead letter holds plaintext")
	}
	if got, err := q.Load(ctx, e.ID); err != nil || !bytes.Equal(got.Body, e.Body) || got.Header.Get("X-Atlas-Secret-Looking") == "" {
		t.Errorf("Load = %v, %v", got.Header, err)
	}
	rec.SetFail(nil)
	if err := q.Retry(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "delivery", func() bool { return q.Stats().Delivered == 1 })
	ds := rec.Deliveries()
	if d := ds[len(ds)-1]; !bytes.Equal(d.Body, e.Body) || d.Header.Get("X-Atlas-Secret-Looking") != "hunter2-in-a-header" {
		t.Errorf("delivered %d bytes, headers %v", len(d.Body), d.Header)
	}

	// An operator copies the sealed data of one callback under another
	// id: it does not open, so it is never delivered as that callback.
	other := "cb-other"
	nm := nats.NewMsg(stream + ".q." + other)
	nm.Header.Set(hdrID, other)
	nm.Header.Set(hdrSealed, "1")
	nm.Data = m.Data
	rec.SetFail(nil)
	logger, _ := queuetest.ObservedLogger()
	o.Logger, o.MaxAttempts, o.Deliver = logger, 1, rec.Deliver
	if err := q.Reconfigure(o); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, nm); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the forged message to die", func() bool { in, _ := q.Get(other); return in.State == queue.StateDead })
	if in, _ := q.Get(other); !strings.Contains(in.LastError, "authentication failed") {
		t.Errorf("forged message: %+v", in)
	}
	if rec.Count(other) != 0 {
		t.Error("the forged message was delivered")
	}

	// Without the key, nothing opens; with the old key behind a new one,
	// everything does.
	o.Keyring = testKeyring(t, 2, 1)
	if err := q.Reconfigure(o); err != nil {
		t.Fatal(err)
	}
	e1 := queuetest.Entry(1, 100)
	queuetest.MustAppend(t, q, e1)
	testutil.WaitFor(t, 20*time.Second, "delivery under the new key", func() bool { return rec.Count(e1.ID) == 1 })
}

// TestStreamMismatch checks that an existing stream whose settings
// differ from the configuration is reported, naming the setting, and
// left as it is.
func TestStreamMismatch(t *testing.T) {
	n := natstest.Start(t)
	js := rawJS(t, n.URL())
	ctx := context.Background()
	stream := newStreamName()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{stream + ".q.*"}, Retention: jetstream.LimitsPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	_, err := Open(testOptions([]string{n.URL()}, stream, 1, queuetest.Options{}))
	if err == nil || !strings.Contains(err.Error(), "retention") || !strings.Contains(err.Error(), "WorkQueue") ||
		!strings.Contains(err.Error(), "Limits") {
		t.Errorf("Open over a limits stream = %v, want an error naming retention, WorkQueue and Limits", err)
	}
	s, _ := js.Stream(ctx, stream)
	if s.CachedInfo().Config.Retention != jetstream.LimitsPolicy {
		t.Error("the stream was changed")
	}

	// The same for the state stream without message TTLs.
	stream = newStreamName()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: stream + "_STATE", Subjects: []string{stream + "_STATE.*.*"}, MaxMsgsPerSubject: 1,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err = Open(testOptions([]string{n.URL()}, stream, 1, queuetest.Options{})); err == nil || !strings.Contains(err.Error(), "allow_msg_ttl") {
		t.Errorf("Open over a state stream without TTLs = %v", err)
	}
	if _, err := Open(Options{URLs: []string{n.URL()}, Stream: "bad.name"}); err == nil {
		t.Error("Open with a stream name holding a dot succeeded")
	}
}

// TestReplicasAboveCluster checks that a queue whose replicas a single
// server can never hold fails at once, saying to set replicas 1, rather
// than retrying for the setup's deadline.
func TestReplicasAboveCluster(t *testing.T) {
	n := natstest.Start(t)
	core, logs := observer.New(zapcore.DebugLevel)
	o := testOptions([]string{n.URL()}, newStreamName(), 3, queuetest.Options{Logger: zap.New(core)})
	start := time.Now()
	q, err := Open(o)
	if err == nil {
		q.Close(context.Background())
		t.Fatal("Open with replicas 3 on a single server succeeded")
	}
	want := "replicas 3 needs a cluster of at least 3 JetStream servers; this NATS server is not clustered: set replicas 1"
	if !strings.Contains(err.Error(), want) || errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Open = %v, want a configuration error containing %q", err, want)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open took %v to fail; it retried", d)
	}
	if n := logs.FilterMessage("jetstream queue: setting up the streams again").Len(); n != 0 {
		t.Errorf("%d retries", n)
	}
}

// TestOpenWaitsForNATS starts the server a moment after Open: Open
// tries again, saying why at warn level, and opens the queue.
func TestOpenWaitsForNATS(t *testing.T) {
	n := natstest.Start(t)
	n.Stop()
	core, logs := observer.New(zapcore.DebugLevel)
	o := testOptions([]string{n.URL()}, newStreamName(), 1, queuetest.Options{Logger: zap.New(core)})
	o.PublishTimeout = 2 * time.Second
	type result struct {
		q   *Queue
		err error
	}
	done := make(chan result, 1)
	go func() {
		q, err := Open(o)
		done <- result{q, err}
	}()
	time.Sleep(time.Second)
	n.Start()
	r := <-done
	if r.err != nil {
		t.Fatalf("Open = %v, want the queue once NATS is up", r.err)
	}
	r.q.Close(context.Background())
	warn := logs.FilterMessage("jetstream queue: cannot connect to NATS yet; trying again").All()
	if len(warn) == 0 || warn[0].Level != zapcore.WarnLevel || warn[0].ContextMap()["error"] == nil {
		t.Errorf("logs %v, want a warning with the reason", logs.All())
	}
}

// TestNATSDown stops the server: Append fails with ErrUnavailable, and
// works again once the server is back, without reopening the queue;
// everything acknowledged is delivered.
func TestNATSDown(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out reconnects to a stopped server: not under -short")
	}
	n := natstest.Start(t)
	rec := &queuetest.Recorder{}
	o := testOptions([]string{n.URL()}, newStreamName(), 1, queuetest.Options{Deliver: rec.Deliver})
	o.PublishTimeout = time.Second
	q := openQueue(t, o)
	for i := range 5 {
		queuetest.MustAppend(t, q, queuetest.Entry(i, 100))
	}
	testutil.WaitFor(t, 20*time.Second, "deliveries", func() bool { return q.Stats().Delivered == 5 })

	n.Stop()
	start := time.Now()
	_, err := q.Append(context.Background(), queuetest.Entry(5, 100))
	if !errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("Append with NATS down = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Append with NATS down took %v", d)
	}
	if _, err := q.Load(context.Background(), queuetest.ID(0)); !errors.Is(err, queue.ErrUnavailable) {
		t.Errorf("Load with NATS down = %v, want ErrUnavailable", err)
	}
	// Stats keeps the last counts read rather than reporting an empty
	// queue to the metrics while NATS is away.
	if st := q.Stats(); st.Delivered != 5 {
		t.Errorf("Stats with NATS down: %+v, want the last counts (5 delivered)", st)
	}
	time.Sleep(300 * time.Millisecond)

	n.Start()
	acked := []int{}
	testutil.WaitFor(t, 20*time.Second, "appends to work again", func() bool {
		_, err := q.Append(context.Background(), queuetest.Entry(5, 100))
		return err == nil
	})
	acked = append(acked, 5)
	for i := 6; i < 10; i++ {
		queuetest.MustAppend(t, q, queuetest.Entry(i, 100))
		acked = append(acked, i)
	}
	testutil.WaitFor(t, 20*time.Second, "deliveries after the outage", func() bool {
		for _, i := range acked {
			if rec.Count(queuetest.ID(i)) == 0 {
				return false
			}
		}
		return true
	})
	var st queue.Stats
	if !testutil.Poll(20*time.Second, 10*time.Millisecond, func() bool {
		st = q.Stats()
		return st.Delivered == 10 && st.Pending == 0
	}) {
		t.Fatalf("outcomes not recorded: %+v", st)
	}
}

// TestSameCallbackTwoInstances posts one callback through two Queues,
// on two connections, concurrently and again later: it is stored and
// delivered once.
func TestSameCallbackTwoInstances(t *testing.T) {
	n := natstest.Start(t)
	stream := newStreamName()
	var deliveries atomic.Int64
	deliver := func(context.Context, queue.Delivery) error { deliveries.Add(1); return nil }
	a := openQueue(t, testOptions([]string{n.URL()}, stream, 1, queuetest.Options{Deliver: deliver}))
	b := openQueue(t, testOptions([]string{n.URL()}, stream, 1, queuetest.Options{Deliver: deliver}))
	const callbacks = 20
	var stored atomic.Int64
	var wg sync.WaitGroup
	for i := range callbacks {
		for _, q := range []*Queue{a, b, a, b} {
			wg.Go(func() {
				res, err := q.Append(context.Background(), queuetest.Entry(i, 500))
				if err != nil {
					t.Error(err)
				} else if !res.Duplicate {
					stored.Add(1)
				}
			})
		}
	}
	wg.Wait()
	if stored.Load() != callbacks {
		t.Errorf("%d stored, want %d", stored.Load(), callbacks)
	}
	testutil.WaitFor(t, 20*time.Second, "deliveries", func() bool { return a.Stats().Delivered == callbacks })
	// Atlas retries after the delivery, to the other instance.
	for i := range callbacks {
		if res := queuetest.MustAppend(t, b, queuetest.Entry(i, 500)); !res.Duplicate {
			t.Errorf("%s stored again after delivery", queuetest.ID(i))
		}
	}
	time.Sleep(200 * time.Millisecond)
	if d := deliveries.Load(); d != callbacks {
		t.Errorf("%d deliveries, want %d", d, callbacks)
	}
}

// TestTakeover kills an instance in the middle of deliveries: the other
// one delivers them after the ack wait, with the same ids.
func TestTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out an ack wait: not under -short")
	}
	n := natstest.Start(t)
	stream := newStreamName()
	started := make(chan string, 16)
	hang := func(ctx context.Context, d queue.Delivery) error {
		started <- d.ID
		<-ctx.Done()
		return ctx.Err()
	}
	a := openQueue(t, testOptions([]string{n.URL()}, stream, 1, queuetest.Options{Deliver: hang, Concurrency: 4}))
	for i := range 4 {
		queuetest.MustAppend(t, a, queuetest.Entry(i, 100))
	}
	for range 4 {
		<-started
	}
	// Heartbeats keep the deliveries with a past the ack wait.
	rec := &queuetest.Recorder{}
	b := openQueue(t, testOptions([]string{n.URL()}, stream, 1, queuetest.Options{Deliver: rec.Deliver}))
	time.Sleep(2 * testAckWait)
	if got := len(rec.Deliveries()); got != 0 {
		t.Fatalf("%d deliveries taken from a live instance", got)
	}
	a.kill()
	start := time.Now()
	testutil.WaitFor(t, 20*time.Second, "takeover", func() bool { return b.Stats().Delivered == 4 })
	t.Logf("taken over in %v (ack wait %v)", time.Since(start), testAckWait)
	for i := range 4 {
		if c := rec.Count(queuetest.ID(i)); c != 1 {
			t.Errorf("%s delivered %d times by the survivor", queuetest.ID(i), c)
		}
	}
	for _, d := range rec.Deliveries() {
		if d.Attempt != 1 {
			t.Errorf("%s: attempt %d, want 1 (a crash is not a failed attempt)", d.ID, d.Attempt)
		}
	}
}

// TestOutcomeRecordedAcrossReconnect loses the connection to NATS the
// moment a delivery succeeds, before its outcome is recorded, and gets it
// back 300ms later: the outcome is recorded once the client reconnects,
// and the callback is not delivered again.
func TestOutcomeRecordedAcrossReconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a server and waits out ack waits: not under -short")
	}
	n := natstest.Start(t)
	started, stopped := make(chan struct{}), make(chan struct{})
	var deliveries atomic.Int64
	deliver := func(ctx context.Context, d queue.Delivery) error {
		if deliveries.Add(1) == 1 {
			started <- struct{}{}
			<-stopped
		}
		return nil
	}
	q := openQueue(t, testOptions([]string{n.URL()}, newStreamName(), 1, queuetest.Options{Deliver: deliver}))
	queuetest.MustAppend(t, q, queuetest.Entry(0, 100))
	<-started
	n.Stop()
	close(stopped) // the delivery succeeded; its outcome is recorded while NATS is away
	time.Sleep(300 * time.Millisecond)
	n.Start()
	testutil.WaitFor(t, 20*time.Second, "the outcome recorded", func() bool { return q.Stats().Delivered == 1 })
	time.Sleep(3 * testAckWait)
	if d := deliveries.Load(); d != 1 {
		t.Errorf("%d deliveries, want 1: an outcome not recorded across a reconnect is delivered again", d)
	}
}

// TestCostPerCallback measures the stream bytes a callback costs while
// pending and, after its delivery, for the retention window (the figures
// in the package documentation), and checks them against bounds.
func TestCostPerCallback(t *testing.T) {
	n := natstest.Start(t)
	stream := newStreamName()
	o := testOptions([]string{n.URL()}, stream, 1, queuetest.Options{})
	q := openQueue(t, o)
	const count, size = 200, 16 << 10
	for i := range count {
		queuetest.MustAppend(t, q, queuetest.Entry(i, size))
	}
	js := rawJS(t, n.URL())
	bytesOf := func(name string) int64 {
		s, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		return int64(s.CachedInfo().State.Bytes)
	}
	pending := bytesOf(stream)/count - size
	rec := &queuetest.Recorder{}
	o.Deliver = rec.Deliver
	if err := q.Reconfigure(o); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "deliveries", func() bool { return q.Stats().Delivered == count })
	delivered := bytesOf(stream+"_STATE") / count
	t.Logf("per callback: %d bytes beyond the body while pending (headers of %d bytes included), %d bytes once delivered",
		pending, len(appendEnvelope(nil, queuetest.Entry(0, 0).Header, nil)), delivered)
	if pending > 512 || delivered > 512 {
		t.Errorf("per callback: %d bytes pending overhead, %d delivered; want at most 512 each", pending, delivered)
	}
	if w := bytesOf(stream); w != 0 {
		t.Errorf("work stream holds %d bytes after delivery", w)
	}

	// Dead ones: the letter and the dead record.
	stateBefore := bytesOf(stream + "_STATE")
	rec.SetFail(func(queue.Delivery) error { return errors.New("receiver answered 503 Service Unavailable") })
	o.MaxAttempts = 1
	if err := q.Reconfigure(o); err != nil {
		t.Fatal(err)
	}
	for i := count; i < 2*count; i++ {
		queuetest.MustAppend(t, q, queuetest.Entry(i, size))
	}
	testutil.WaitFor(t, 20*time.Second, "dead letters", func() bool { return q.Stats().Dead == count })
	dead := (bytesOf(stream+"_DEAD")+bytesOf(stream+"_STATE")-stateBefore)/count - size
	t.Logf("per dead callback: %d bytes beyond the body", dead)
	if dead > 1024 {
		t.Errorf("per dead callback: %d bytes beyond the body; want at most 1024", dead)
	}
}

// TestTooLarge checks that a callback above the servers' max_payload is
// refused with ErrTooLarge (the route answers 413; Atlas would retry a
// 503 for ever), not ErrUnavailable, and that the queue takes the next
// callback as before.
func TestTooLarge(t *testing.T) {
	n := natstest.Start(t)
	rec := &queuetest.Recorder{}
	q := openQueue(t, testOptions([]string{n.URL()}, newStreamName(), 1, queuetest.Options{Deliver: rec.Deliver}))
	big := queuetest.Entry(0, int(q.MaxPayload())+1)
	_, err := q.Append(context.Background(), big)
	if !errors.Is(err, queue.ErrTooLarge) || errors.Is(err, queue.ErrUnavailable) {
		t.Fatalf("Append of %d bytes above max_payload %d = %v, want ErrTooLarge", len(big.Body), q.MaxPayload(), err)
	}
	if !strings.Contains(err.Error(), "max_payload") {
		t.Errorf("the error does not name max_payload: %v", err)
	}
	queuetest.MustAppend(t, q, queuetest.Entry(1, 100))
	testutil.WaitFor(t, 20*time.Second, "the next callback delivered", func() bool { return q.Stats().Delivered == 1 })
}

// TestListCostBounded: a page of pending callbacks costs requests in
// proportion to the page, not to the backlog.
func TestListCostBounded(t *testing.T) {
	n := natstest.Start(t)
	q := openQueue(t, testOptions([]string{n.URL()}, newStreamName(), 1, queuetest.Options{}))
	const backlog, page = 300, 10
	for i := range backlog {
		queuetest.MustAppend(t, q, queuetest.Entry(i, 100))
	}
	requests := func(fn func()) uint64 {
		before := q.nc.Stats().OutMsgs
		fn()
		return q.nc.Stats().OutMsgs - before
	}
	var got []queue.Info
	paged := requests(func() { got = q.List(queue.StatePending, page) })
	if len(got) != page || got[0].ID != queuetest.ID(0) || got[page-1].ID != queuetest.ID(page-1) {
		t.Fatalf("the page: %v", queuetest.IDs(got))
	}
	all := requests(func() { got = q.List(queue.StatePending, 0) })
	if len(got) != backlog {
		t.Fatalf("%d listed, want %d", len(got), backlog)
	}
	t.Logf("requests: %d for a page of %d, %d for all %d", paged, page, all, backlog)
	if paged > 2*page+4 {
		t.Errorf("a page of %d cost %d requests with %d pending; want at most %d", page, paged, backlog, 2*page+4)
	}
}

// TestRetryable: the failures another try of a publish may cure are
// tried again; a refusal is not.
func TestRetryable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nats.ErrNoResponders, true},
		{context.DeadlineExceeded, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 409, ErrorCode: 10158, Description: "duplicate message id is in process"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Description: "wrong last sequence"}, false},
		{&jetstream.APIError{Code: 413, Description: "message size exceeds maximum allowed"}, false},
		{errors.New("something else"), false},
	} {
		if got := retryable(c.err); got != c.want {
			t.Errorf("retryable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
