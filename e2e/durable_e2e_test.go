package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"

	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"

	"github.com/caddy-atlas/caddy-atlas/callback"
)

// The durable-mode end-to-end tests run a real Caddy (the in-process
// one, like the other e2e tests: none may run in parallel) with a
// callback route in durable mode that delivers to a deduplicating
// receiver. The Atlas simulator plays Atlas.

var durableAdminURL = adminURL + "/atlas/callbacks"

// deliver plays Atlas delivering a new batch; it checks the 202
// acknowledgement and returns the callback id and payload.
func (g *durableE2E) deliver(t *testing.T, name string) (string, []byte) {
	t.Helper()
	batch := g.sim.CreateBatch(name+"-pan", name+"-gst")
	payload, err := g.sim.BatchPayload(batch)
	if err != nil {
		t.Fatal(err)
	}
	id := callback.ID(payload)
	g.ack(t, batch, id, false)
	return id, payload
}

// ack delivers batch again and checks the acknowledgement.
func (g *durableE2E) ack(t *testing.T, batch, id string, duplicate bool) {
	t.Helper()
	d, err := g.sim.DeliverCallback(context.Background(), g.target, batch)
	if err != nil || d.CallbackStatus != http.StatusAccepted {
		t.Fatalf("delivery of %s: %v %+v", batch, err, d)
	}
	var ack ackAnswer
	if err := json.Unmarshal(d.Body, &ack); err != nil {
		t.Fatalf("ack %q: %v", d.Body, err)
	}
	if ack != (ackAnswer{Status: "accepted", CallbackID: id, Duplicate: duplicate}) {
		t.Fatalf("ack %+v, want callback id %s, duplicate %v", ack, id, duplicate)
	}
}

// adminDo sends a request to the atlas admin API and decodes the JSON
// answer into out (when not nil); it returns the status.
func adminDo(t *testing.T, method, url string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %q: %v", method, url, body, err)
		}
	}
	return resp.StatusCode
}

// adminListing is GET /atlas/callbacks decoded, bodies kept raw.
type adminListing struct {
	Spools    []map[string]any `json:"spools"`
	Callbacks []struct {
		Spool     string          `json:"spool"`
		ID        string          `json:"id"`
		State     string          `json:"state"`
		Size      int64           `json:"size"`
		Attempts  int             `json:"attempts"`
		LastError string          `json:"last_error"`
		Body      json.RawMessage `json:"body"`
	} `json:"callbacks"`
}

// listCallbacks lists the callbacks in state through the admin API.
func listCallbacks(t *testing.T, state string) adminListing {
	t.Helper()
	var l adminListing
	if code := adminDo(t, http.MethodGet, durableAdminURL+"?state="+state, &l); code != http.StatusOK {
		t.Fatalf("listing %s: %d", state, code)
	}
	return l
}

// TestDurableE2EAppDown: while the app answers 503, callbacks are
// acknowledged 202 and retried; once it is back, each is delivered
// exactly once, byte for byte with the X-Atlas-* headers. A redelivery by
// Atlas is acknowledged as a duplicate and not delivered again.
func TestDurableE2EAppDown(t *testing.T) {
	skipShort(t)
	rc := callbacktest.NewReceiver(t)
	rc.SetStatus(http.StatusServiceUnavailable)
	g := startDurableGateway(t, rc, "max_attempts 1000")

	var ids []string
	payloads := make(map[string][]byte)
	for i := range 4 {
		id, payload := g.deliver(t, fmt.Sprint("down-", i))
		ids = append(ids, id)
		payloads[id] = payload
	}
	// Every callback is tried and fails while the app is down.
	callbacktest.Eventually(t, 5*time.Second, "a failed attempt of each callback", func() bool {
		l := listCallbacks(t, "pending")
		n := 0
		for _, c := range l.Callbacks {
			if c.Attempts >= 1 && c.LastError == "receiver answered 503 Service Unavailable" {
				n++
			}
		}
		return n == len(ids)
	})
	// Atlas redelivers the first one: a duplicate.
	batches := g.sim.Deliveries()
	g.ack(t, batches[0].BatchID, ids[0], true)

	rc.SetStatus(http.StatusOK)
	rc.WaitDelivered(t, len(ids), 5*time.Second)
	time.Sleep(150 * time.Millisecond) // room for an unwanted redelivery
	for _, id := range ids {
		if n := rc.Takes(id); n != 1 {
			t.Errorf("callback %s delivered %d times", id, n)
		}
		if !bytes.Equal(rc.Body(id), payloads[id]) {
			t.Errorf("callback %s: another body was delivered", id)
		}
		h := rc.Header(id)
		if h.Get("X-Atlas-Subject") != cbE2EClientID || h.Get("X-Atlas-Document-Count") != "2" || h.Get("X-Atlas-Callback-Id") != id ||
			h.Get("Token") != "" || h.Get("Content-Type") != "application/json" {
			t.Errorf("callback %s: delivered headers %v", id, h)
		}
		if a, _ := strconv.Atoi(h.Get("X-Atlas-Attempt")); a < 2 {
			t.Errorf("callback %s: taken at attempt %q, want a retry", id, h.Get("X-Atlas-Attempt"))
		}
	}
	if l := listCallbacks(t, "delivered"); len(l.Callbacks) != len(ids) {
		t.Errorf("%d delivered callbacks listed, want %d", len(l.Callbacks), len(ids))
	}
}

// TestDurableE2EAppHungDeliversInOrder: while the app holds its first
// request (down but accepting connections), later callbacks queue up;
// when it answers again they are delivered oldest first, once each.
func TestDurableE2EAppHungDeliversInOrder(t *testing.T) {
	skipShort(t)
	rc := callbacktest.NewReceiver(t)
	rc.SetGate(true)
	g := startDurableGateway(t, rc, "delivery_timeout 20s")
	var ids []string
	for i := range 8 {
		id, _ := g.deliver(t, fmt.Sprint("hung-", i))
		ids = append(ids, id)
	}
	rc.SetGate(false)
	got := rc.WaitDelivered(t, len(ids), 5*time.Second)
	if !slices.Equal(got, ids) {
		t.Errorf("delivery order\n%v\nwant\n%v", got, ids)
	}
	time.Sleep(100 * time.Millisecond)
	if n := rc.RequestCount(); n != len(ids) {
		t.Errorf("%d requests for %d callbacks", n, len(ids))
	}
}

// TestDurableE2EAppFailsThenRecovers: the app answers 500 for a while,
// then 200; each callback is delivered once, and the metrics tell the
// story.
func TestDurableE2EAppFailsThenRecovers(t *testing.T) {
	skipShort(t)
	rc := callbacktest.NewReceiver(t)
	rc.SetStatus(http.StatusInternalServerError)
	g := startDurableGateway(t, rc, "")
	var ids []string
	for i := range 3 {
		id, _ := g.deliver(t, fmt.Sprint("flaky-", i))
		ids = append(ids, id)
	}
	callbacktest.Eventually(t, 5*time.Second, "a few failed attempts", func() bool { return rc.RequestCount() >= 6 })
	rc.SetStatus(http.StatusOK)
	rc.WaitDelivered(t, len(ids), 5*time.Second)
	time.Sleep(150 * time.Millisecond)
	for _, id := range ids {
		if n := rc.Takes(id); n != 1 {
			t.Errorf("callback %s delivered %d times", id, n)
		}
	}

	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`caddy_atlas_delivery_attempts_total{outcome="failed"}`,
		`caddy_atlas_delivery_attempts_total{outcome="delivered"}`,
		`caddy_atlas_spool_callbacks{spool="`,
		`state="delivered"} 3`,
		`caddy_atlas_spool_oldest_pending_age_seconds{spool=`,
		`caddy_atlas_spool_fsync_seconds_bucket`,
		`caddy_atlas_spool_commit_batch_size_bucket`,
		`caddy_atlas_dead_letters_total`,
		`caddy_atlas_callbacks_total{outcome="accepted"}`,
	} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestDurableE2EDeadLettersReplayed: an app that never recovers makes
// dead letters, listed by the admin API without their bodies; once the
// app is back, they are replayed one by id and the rest in bulk.
func TestDurableE2EDeadLettersReplayed(t *testing.T) {
	skipShort(t)
	rc := callbacktest.NewReceiver(t)
	rc.SetStatus(http.StatusInternalServerError)
	g := startDurableGateway(t, rc, "max_attempts 3")
	var ids []string
	for i := range 3 {
		id, _ := g.deliver(t, fmt.Sprint("dead-", i))
		ids = append(ids, id)
	}
	var dead adminListing
	callbacktest.Eventually(t, 5*time.Second, "3 dead letters", func() bool {
		dead = listCallbacks(t, "dead")
		return len(dead.Callbacks) == 3
	})
	for i, c := range dead.Callbacks {
		if c.ID != ids[i] || c.State != "dead" || c.Attempts != 3 || c.LastError != "receiver answered 500 Internal Server Error" ||
			c.Size == 0 || c.Body != nil || c.Spool == "" {
			t.Errorf("dead letter %d: %+v", i, c)
		}
	}
	if n := rc.RequestCount(); n != 9 {
		t.Errorf("%d attempts, want 3 per callback", n)
	}

	// One callback's body, on request.
	var one adminListing
	one.Callbacks = append(one.Callbacks, dead.Callbacks[0])
	one.Callbacks[0].Body = nil
	if code := adminDo(t, http.MethodGet, durableAdminURL+"/"+ids[0]+"?body=1", &one.Callbacks[0]); code != 200 ||
		!bytes.Contains(one.Callbacks[0].Body, []byte(`"document_id":"dead-0-pan"`)) {
		t.Errorf("GET with body: %d %s", code, one.Callbacks[0].Body)
	}

	rc.SetStatus(http.StatusOK)
	var res map[string]int
	if code := adminDo(t, http.MethodPost, durableAdminURL+"/"+ids[0]+"/retry", &res); code != 200 || res["retried"] != 1 {
		t.Fatalf("retry by id: %d %v", code, res)
	}
	rc.WaitDelivered(t, 1, 5*time.Second)
	if code := adminDo(t, http.MethodPost, durableAdminURL+"/retry?state=dead", &res); code != 200 || res["retried"] != 2 {
		t.Fatalf("retry dead: %d %v", code, res)
	}
	got := rc.WaitDelivered(t, 3, 5*time.Second)
	if got[0] != ids[0] {
		t.Errorf("delivery order %v", got)
	}
	if l := listCallbacks(t, "delivered"); len(l.Callbacks) != 3 {
		t.Errorf("%d delivered listed", len(l.Callbacks))
	}
	if l := listCallbacks(t, "dead"); len(l.Callbacks) != 0 {
		t.Errorf("%d dead listed after the replay", len(l.Callbacks))
	}

	// The errors of the API.
	for _, tc := range []struct {
		method, url string
		status      int
	}{
		{http.MethodPost, durableAdminURL + "/" + ids[1] + "/retry", http.StatusConflict},
		{http.MethodGet, durableAdminURL + "/" + ids[1] + "?body=1", http.StatusConflict},
		{http.MethodPost, durableAdminURL + "/unknown-id/retry", http.StatusNotFound},
		{http.MethodGet, durableAdminURL + "?state=gone", http.StatusBadRequest},
		{http.MethodGet, durableAdminURL + "?limit=0", http.StatusBadRequest},
		{http.MethodPost, durableAdminURL + "/retry?state=delivered", http.StatusBadRequest},
		{http.MethodGet, durableAdminURL + "?spool=/nonexistent", http.StatusNotFound},
		{http.MethodDelete, durableAdminURL, http.StatusMethodNotAllowed},
		{http.MethodGet, durableAdminURL + "/" + ids[1] + "/other", http.StatusNotFound},
	} {
		if code := adminDo(t, tc.method, tc.url, nil); code != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.url, code, tc.status)
		}
	}
	// Delete forgets a callback; Atlas's redelivery is then taken again.
	if code := adminDo(t, http.MethodDelete, durableAdminURL+"/"+ids[2]+"?spool="+g.dir, &res); code != 200 || res["deleted"] != 1 {
		t.Errorf("delete: %d %v", code, res)
	}
	if code := adminDo(t, http.MethodGet, durableAdminURL+"/"+ids[2], nil); code != http.StatusNotFound {
		t.Errorf("GET after delete: %d", code)
	}
	var d atlastest.Delivery
	for _, x := range g.sim.Deliveries() {
		if strings.HasPrefix(string(x.Body), `{"status":"accepted","callback_id":"`+ids[2]) {
			d = x
		}
	}
	g.ack(t, d.BatchID, ids[2], false)
}

// TestDurableE2EReloadKeepsSpool: a reload that changes deliver_to keeps
// the spool and its pending callbacks, which go to the new receiver,
// once each.
func TestDurableE2EReloadKeepsSpool(t *testing.T) {
	skipShort(t)
	oldApp, newApp := callbacktest.NewReceiver(t), callbacktest.NewReceiver(t)
	oldApp.SetStatus(http.StatusServiceUnavailable)
	g := startDurableGateway(t, oldApp, "max_attempts 1000")
	var ids []string
	for i := range 3 {
		id, _ := g.deliver(t, fmt.Sprint("reload-", i))
		ids = append(ids, id)
	}
	callbacktest.Eventually(t, 5*time.Second, "attempts at the old app", func() bool { return oldApp.RequestCount() >= 3 })

	g.tester.InitServer(durableE2EConfig(g.dir, newApp.URL+"/hooks/atlas", "max_attempts 1000"), "caddyfile")
	id, _ := g.deliver(t, "reload-after")
	ids = append(ids, id)
	newApp.WaitDelivered(t, len(ids), 5*time.Second)
	time.Sleep(150 * time.Millisecond)
	for _, id := range ids {
		if n := newApp.Takes(id); n != 1 {
			t.Errorf("callback %s delivered %d times", id, n)
		}
	}
	if n := len(oldApp.Delivered()); n != 0 {
		t.Errorf("the old app took %d", n)
	}
	if l := listCallbacks(t, ""); len(l.Spools) != 1 || len(l.Callbacks) != len(ids) {
		t.Errorf("after the reload: %d spools, %d callbacks", len(l.Spools), len(l.Callbacks))
	}
}

// runAtlasCLI runs `caddy atlas <args>` in-process and returns its output.
func runAtlasCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	reg, ok := caddycmd.Commands()["atlas"]
	if !ok {
		t.Fatal("the atlas command is not registered")
	}
	cmd := &cobra.Command{Use: "atlas", SilenceUsage: true, SilenceErrors: true}
	reg.CobraFunc(cmd)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestDurableE2ECLI drives the spool through `caddy atlas callbacks`.
func TestDurableE2ECLI(t *testing.T) {
	skipShort(t)
	rc := callbacktest.NewReceiver(t)
	rc.SetStatus(http.StatusBadGateway)
	g := startDurableGateway(t, rc, "max_attempts 1")
	a, _ := g.deliver(t, "cli-a")
	b, _ := g.deliver(t, "cli-b")
	callbacktest.Eventually(t, 5*time.Second, "2 dead letters", func() bool { return len(listCallbacks(t, "dead").Callbacks) == 2 })

	out, err := runAtlasCLI(t, "callbacks", "list", "--state", "dead", "--address", adminAddr)
	if err != nil || !strings.Contains(out, a+"  dead") || !strings.Contains(out, b) ||
		!strings.Contains(out, "receiver answered 502 Bad Gateway") || !strings.Contains(out, "0 pending, 2 dead, 0 delivered") {
		t.Errorf("list: %v\n%s", err, out)
	}
	if out, err := runAtlasCLI(t, "callbacks", "list", "--json", "--address", adminAddr); err != nil || !json.Valid([]byte(out)) {
		t.Errorf("list --json: %v\n%s", err, out)
	}
	if out, err := runAtlasCLI(t, "callbacks", "purge", b, "--address", adminAddr); err != nil || out != "callback "+b+" deleted\n" {
		t.Errorf("purge: %v %q", err, out)
	}
	rc.SetStatus(http.StatusOK)
	if out, err := runAtlasCLI(t, "callbacks", "retry", "--state", "dead", "--address", adminAddr); err != nil || out != "1 callback(s) due for delivery now\n" {
		t.Errorf("retry: %v %q", err, out)
	}
	rc.WaitDelivered(t, 1, 5*time.Second)
	if got := rc.Delivered(); len(got) != 1 || got[0] != a {
		t.Errorf("delivered %v", got)
	}
	if _, err := runAtlasCLI(t, "callbacks", "retry", "--address", adminAddr); err == nil {
		t.Error("retry without an id or a state: no error")
	}
	if _, err := runAtlasCLI(t, "callbacks", "retry", a, "--address", adminAddr); err == nil || !strings.Contains(err.Error(), "HTTP 409") {
		t.Errorf("retry of a delivered callback: %v", err)
	}
}

// ackAnswer is the answer to a callback in durable mode.
type ackAnswer struct {
	Status     string `json:"status"`
	CallbackID string `json:"callback_id"`
	Duplicate  bool   `json:"duplicate,omitempty"`
}
