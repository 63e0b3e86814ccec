package atlastest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// sink is a callback_url that keeps every body it receives, in order,
// and answers status (200 when 0).
type sink struct {
	*httptest.Server
	mu     sync.Mutex
	bodies [][]byte
	tokens []string
	status int
}

func newSink(t *testing.T) *sink {
	k := &sink{}
	k.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/auth" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token":"sink-token","expires_in":300}`)
			return
		}
		b, _ := io.ReadAll(r.Body)
		k.mu.Lock()
		defer k.mu.Unlock()
		k.bodies = append(k.bodies, b)
		k.tokens = append(k.tokens, r.Header.Get("Token"))
		if k.status != 0 {
			w.WriteHeader(k.status)
		}
	}))
	t.Cleanup(k.Close)
	return k
}

func (k *sink) target() CallbackTarget {
	return CallbackTarget{AuthURL: k.URL + "/auth", CallbackURL: k.URL + "/callback", ClientID: "atlas", ClientSecret: "shh"}
}

func (k *sink) received() [][]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.bodies)
}

// docIDs returns the document ids of a callback body.
func docIDs(t *testing.T, body []byte) []string {
	t.Helper()
	var p page
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("callback body %s: %v", body, err)
	}
	var ids []string
	for _, d := range p.Data {
		if len(d.FileData) == 0 {
			t.Errorf("callback carries %s without file_data", d.DocumentID)
		}
		ids = append(ids, d.DocumentID)
	}
	return ids
}

func TestAutoCallbackPerBatch(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	k := newSink(t)
	srv := NewServer(t, Options{
		Now:             clock.Now,
		ProcessingDelay: 5 * time.Second,
		AutoCallback:    &AutoCallback{Target: k.target(), Delay: 2 * time.Second},
	})
	tok := token(t, srv)
	batch := batchOf(t, upload(t, srv, tok, "loan-3-pan", "loan-3-blurry"))

	for _, step := range []time.Duration{0, 5 * time.Second, 6*time.Second + 999*time.Millisecond} {
		clock.Set(testutil.Epoch.Add(step))
		srv.FlushCallbacks()
		if c := srv.CallbackCounts(); c != (CallbackCounts{Pending: 1}) || len(k.received()) != 0 {
			t.Fatalf("at +%v: counts %+v, %d received, want one pending", step, c, len(k.received()))
		}
	}
	clock.Set(testutil.Epoch.Add(7 * time.Second))
	srv.FlushCallbacks()
	got := k.received()
	if len(got) != 1 {
		t.Fatalf("at +7s: %d callbacks received, want 1", len(got))
	}
	want, _ := srv.BatchPayload(batch)
	if string(got[0]) != string(want) {
		t.Errorf("callback body differs from BatchPayload:\n%s\n%s", got[0], want)
	}
	if k.tokens[0] != "sink-token" {
		t.Errorf("callback Token = %q", k.tokens[0])
	}
	if diff := cmp.Diff(CallbackCounts{Sent: 1, Delivered: 1}, srv.CallbackCounts()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	ev := srv.Callbacks()
	if len(ev) != 1 || ev[0].Seq != 1 || ev[0].BatchID != batch || !ev[0].Due.Equal(testutil.Epoch.Add(7*time.Second)) ||
		!slices.Equal(ev[0].DocumentIDs, []string{"loan-3-pan", "loan-3-blurry"}) || len(ev[0].Deliveries) != 1 || ev[0].Deliveries[0].CallbackStatus != 200 {
		t.Errorf("events = %+v", ev)
	}
	// Sent once only.
	clock.Advance(time.Hour)
	srv.FlushCallbacks()
	if n := len(k.received()); n != 1 {
		t.Errorf("%d callbacks after more time, want 1", n)
	}
	// Manual deliveries are not automatic callbacks, and the other way round.
	if n := len(srv.Deliveries()); n != 0 {
		t.Errorf("Deliveries holds %d automatic callbacks", n)
	}
}

func TestAutoCallbackPerDocument(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	k := newSink(t)
	srv := NewServer(t, Options{
		Now:                clock.Now,
		ProcessingDelay:    time.Second,
		ProcessingDelayMax: 10 * time.Second,
		AutoCallback:       &AutoCallback{Target: k.target(), PerDocument: true},
	})
	ids := []string{"d1-pan", "d2-aadhaar", "d3-invalid", "d4-dl", "d5-voter"}
	srv.CreateBatch(ids...)
	byDelay := slices.Clone(ids)
	slices.SortStableFunc(byDelay, func(a, b string) int { return int(srv.ProcessingDelayFor(a) - srv.ProcessingDelayFor(b)) })

	var got []string
	for step := time.Duration(0); step <= 10*time.Second; step += 500 * time.Millisecond {
		clock.Set(testutil.Epoch.Add(step))
		srv.FlushCallbacks()
		for _, b := range k.received()[len(got):] {
			one := docIDs(t, b)
			if len(one) != 1 {
				t.Fatalf("a per-document callback carries %v", one)
			}
			if d := srv.ProcessingDelayFor(one[0]); d > step {
				t.Errorf("%s (delay %v) called back at +%v", one[0], d, step)
			}
			got = append(got, one[0])
		}
	}
	if !slices.Equal(got, byDelay) {
		t.Errorf("callbacks in order %v, want %v (by processing delay)", got, byDelay)
	}
	var p page
	_ = json.Unmarshal(k.received()[0], &p)
	if p.Page != 1 || p.PerPage != 1 || p.TotalItems != 1 || p.TotalPages != 1 || p.HasNext {
		t.Errorf("per-document payload page fields: %+v", p)
	}
	for i, e := range srv.Callbacks() {
		if e.Seq != i+1 || !slices.Equal(e.DocumentIDs, []string{byDelay[i]}) {
			t.Errorf("event %d = %+v", i, e)
		}
	}
}

func TestAutoCallbackDropAndRepeatListed(t *testing.T) {
	k := newSink(t)
	srv := NewServer(t, Options{Now: testutil.NewClock(testutil.Epoch).Now})
	srv.SetAutoCallback(&AutoCallback{Target: k.target(), PerDocument: true, DropNth: []int{2}, RepeatNth: []int{2, 3}})
	srv.CreateBatch("a", "b", "c", "d")
	srv.FlushCallbacks()

	var got []string
	for _, b := range k.received() {
		got = append(got, docIDs(t, b)...)
	}
	if want := []string{"a", "c", "c", "d"}; !slices.Equal(got, want) {
		t.Errorf("received %v, want %v (b dropped, c repeated)", got, want)
	}
	if diff := cmp.Diff(CallbackCounts{Sent: 3, Delivered: 4, Dropped: 1, Repeated: 1}, srv.CallbackCounts()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	ev := srv.Callbacks()
	var dropped, repeated []int
	for _, e := range ev {
		if e.Dropped {
			dropped = append(dropped, e.Seq)
			if len(e.Deliveries) != 0 {
				t.Errorf("dropped callback %d has deliveries", e.Seq)
			}
		}
		if e.Repeated {
			repeated = append(repeated, e.Seq)
			if len(e.Deliveries) != 2 {
				t.Errorf("repeated callback %d has %d deliveries", e.Seq, len(e.Deliveries))
			}
		}
	}
	if !slices.Equal(dropped, []int{2}) || !slices.Equal(repeated, []int{3}) {
		t.Errorf("dropped %v repeated %v, want [2] [3] (a dropped callback is not repeated)", dropped, repeated)
	}
}

// dropped runs 200 per-document callbacks with drop and repeat fractions
// and returns the sequence numbers dropped and repeated.
func fractions(t *testing.T, seed uint64) (dropped, repeated []int) {
	k := newSink(t)
	sim := New(Options{AutoCallback: &AutoCallback{Target: CallbackTarget{CallbackURL: k.URL}, PerDocument: true, Drop: 0.3, Repeat: 0.2, Seed: seed}})
	t.Cleanup(sim.Close)
	ids := make([]string, 200)
	for i := range ids {
		ids[i] = fmt.Sprint("doc-", i)
	}
	sim.CreateBatch(ids...)
	sim.FlushCallbacks()
	for _, e := range sim.Callbacks() {
		if e.Dropped {
			dropped = append(dropped, e.Seq)
		}
		if e.Repeated {
			repeated = append(repeated, e.Seq)
		}
	}
	c := sim.CallbackCounts()
	if c.Dropped != len(dropped) || c.Repeated != len(repeated) || c.Sent != 200-len(dropped) || c.Delivered != c.Sent+c.Repeated || c.Failed != 0 {
		t.Errorf("counts %+v for %d dropped, %d repeated", c, len(dropped), len(repeated))
	}
	if n := len(k.received()); n != c.Delivered {
		t.Errorf("sink received %d, Delivered %d", n, c.Delivered)
	}
	return dropped, repeated
}

func TestAutoCallbackFractionsDeterministic(t *testing.T) {
	d1, r1 := fractions(t, 7)
	d2, r2 := fractions(t, 7)
	d3, _ := fractions(t, 8)
	if !slices.Equal(d1, d2) || !slices.Equal(r1, r2) {
		t.Errorf("the same seed chose differently: %v %v / %v %v", d1, r1, d2, r2)
	}
	if slices.Equal(d1, d3) {
		t.Error("another seed chose the same callbacks")
	}
	if len(d1) < 35 || len(d1) > 85 || len(r1) < 15 || len(r1) > 65 {
		t.Errorf("%d dropped and %d repeated of 200, want about 60 and 28", len(d1), len(r1))
	}
}

func TestAutoCallbackRealClock(t *testing.T) {
	k := newSink(t)
	k.status = http.StatusInternalServerError
	srv := NewServer(t, Options{AutoCallback: &AutoCallback{Target: k.target()}})
	srv.CreateBatch("a")
	testutil.WaitFor(t, 5*time.Second, "the callback, sent by the simulator itself", func() bool {
		return srv.CallbackCounts().Failed == 1
	})
	ev := srv.Callbacks()
	if len(ev) != 1 || ev[0].Deliveries[0].Err == nil || ev[0].Deliveries[0].CallbackStatus != 500 {
		t.Errorf("events = %+v", ev)
	}

	// Close stops callbacks still scheduled.
	srv.SetAutoCallback(&AutoCallback{Target: k.target(), Delay: 200 * time.Millisecond})
	srv.CreateBatch("b")
	srv.Close()
	time.Sleep(300 * time.Millisecond)
	if n := len(k.received()); n != 1 {
		t.Errorf("%d callbacks received after Close, want the first only", n)
	}
}

func TestAutoCallbackSwitching(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	k := newSink(t)
	srv := NewServer(t, Options{Now: clock.Now})
	srv.CreateBatch("off-by-default")
	srv.SetAutoCallback(&AutoCallback{Target: k.target(), Delay: time.Minute})
	on := srv.CreateBatch("on")
	srv.SetAutoCallback(&AutoCallback{}) // no callback URL: off
	srv.CreateBatch("off-again")
	clock.Advance(time.Minute)
	srv.FlushCallbacks()
	if ev := srv.Callbacks(); len(ev) != 1 || ev[0].BatchID != on {
		t.Errorf("events = %+v, want the batch uploaded while on, with its settings", ev)
	}

	// Reset forgets events and scheduled callbacks, and restores the
	// configured setting (off).
	srv.SetAutoCallback(&AutoCallback{Target: k.target(), Delay: time.Minute})
	srv.CreateBatch("forgotten")
	srv.Reset()
	if c := srv.CallbackCounts(); c != (CallbackCounts{}) || len(srv.Callbacks()) != 0 {
		t.Errorf("after Reset: %+v %v", c, srv.Callbacks())
	}
	srv.CreateBatch("after-reset")
	clock.Advance(time.Hour)
	srv.FlushCallbacks()
	if n := len(k.received()); n != 1 {
		t.Errorf("%d callbacks received, want the one before Reset", n)
	}
}

func TestAutoCallbackControlEndpoints(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	k := newSink(t)
	srv := NewServer(t, Options{Now: clock.Now})
	for _, body := range []string{
		"{",
		`{"callback_url":"/relative"}`,
		`{"callback_url":"http://x/","auth_url":"ftp://x"}`,
		`{"callback_url":"http://x/","per":"page"}`,
		`{"callback_url":"http://x/","drop":1.5}`,
		`{"callback_url":"http://x/","repeat":-0.1}`,
		`{"callback_url":"http://x/","drop_nth":[0]}`,
		`{"callback_url":"http://x/","delay_ms":-1}`,
	} {
		if r := do(t, srv, http.MethodPost, "/_sim/auto-callback", body); r.status != http.StatusBadRequest || r.jsonMap(t)["error"] == nil {
			t.Errorf("%s: %d %s, want 400 with an error", body, r.status, r.body)
		}
	}
	if r := do(t, srv, http.MethodPost, "/_sim/callbacks", ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /_sim/callbacks: %d", r.status)
	}
	body := fmt.Sprintf(`{"auth_url":%q,"callback_url":%q,"client_id":"atlas","client_secret":"shh","per":"document","delay_ms":1000,"drop_nth":[1],"repeat_nth":[2],"seed":3}`,
		k.URL+"/auth", k.URL+"/callback")
	if r := do(t, srv, http.MethodPost, "/_sim/auto-callback", body); r.status != http.StatusOK {
		t.Fatalf("auto-callback: %d %s", r.status, r.body)
	}
	batch := srv.CreateBatch("a", "b")
	clock.Advance(time.Second)
	srv.FlushCallbacks()

	r := do(t, srv, http.MethodGet, "/_sim/callbacks", "")
	var got struct {
		Counts    CallbackCounts `json:"counts"`
		Callbacks []struct {
			Seq         int               `json:"seq"`
			BatchID     string            `json:"batch_id"`
			DocumentIDs []string          `json:"document_ids"`
			Due         time.Time         `json:"due"`
			Dropped     bool              `json:"dropped"`
			Repeated    bool              `json:"repeated"`
			Deliveries  []json.RawMessage `json:"deliveries"`
		} `json:"callbacks"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("callbacks %s: %v", r.body, err)
	}
	if diff := cmp.Diff(CallbackCounts{Sent: 1, Delivered: 2, Dropped: 1, Repeated: 1}, got.Counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if len(got.Callbacks) != 2 || got.Callbacks[0].BatchID != batch || !got.Callbacks[0].Dropped || len(got.Callbacks[0].Deliveries) != 0 ||
		!got.Callbacks[1].Repeated || len(got.Callbacks[1].Deliveries) != 2 || !slices.Equal(got.Callbacks[1].DocumentIDs, []string{"b"}) ||
		!got.Callbacks[1].Due.Equal(testutil.Epoch.Add(time.Second)) {
		t.Errorf("callbacks = %s", r.body)
	}

	// An empty callback_url switches them off.
	if r := do(t, srv, http.MethodPost, "/_sim/auto-callback", `{}`); r.status != http.StatusOK {
		t.Fatal(r.status)
	}
	srv.CreateBatch("c")
	if c := srv.CallbackCounts(); c.Pending != 0 {
		t.Errorf("off, yet %d pending", c.Pending)
	}
	do(t, srv, http.MethodPost, "/_sim/reset", "")
	if r := do(t, srv, http.MethodGet, "/_sim/callbacks", ""); string(r.body) != `{"callbacks":[],"counts":{"pending":0,"sent":0,"delivered":0,"failed":0,"dropped":0,"repeated":0}}`+"\n" {
		t.Errorf("after reset: %s", r.body)
	}
}
