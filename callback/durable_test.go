package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/queues"
	"github.com/caddy-atlas/caddy-atlas/whsign"
)

// durableTestCallback provisions a callback route in durable mode,
// spooling to a new directory and delivering to rc.
func durableTestCallback(t *testing.T, rc *callbacktest.Receiver, mut func(*Callback)) (*Callback, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	c := &Callback{
		Spool:           dir,
		DeliverTo:       rc.URL + "/hooks",
		RetryBackoffMin: caddy.Duration(10 * time.Millisecond),
		RetryBackoffMax: caddy.Duration(50 * time.Millisecond),
		Concurrency:     1,
	}
	if mut != nil {
		mut(c)
	}
	provisionTestCallback(t, c)
	return c, dir
}

// decodeAck decodes a 202 answer of the durable route.
func decodeAck(t *testing.T, rec *httptest.ResponseRecorder) spoolAck {
	t.Helper()
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d, want 202: %s", rec.Code, rec.Body)
	}
	var ack spoolAck
	if err := json.Unmarshal(rec.Body.Bytes(), &ack); err != nil {
		t.Fatalf("ack %q: %v", rec.Body, err)
	}
	return ack
}

// TestDurableSpoolsAcksAndDelivers checks the durable route: the callback
// is acknowledged 202 once spooled, not handed to the next handler, and
// delivered with its body and headers; a redelivery by Atlas is
// acknowledged as a duplicate and not delivered again.
func TestDurableSpoolsAcksAndDelivers(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	c, _ := durableTestCallback(t, rc, nil)
	tok := callbackAuthToken(t, c)
	body := payloadtest.Sample(3)
	id := ID(body)

	accepted := callbackCounterValue(t, c.metrics.callbacks.WithLabelValues(outcomeAccepted))
	req := callbackTestRequest(c.Path, tok, body)
	req.Header.Set("X-Atlas-Attempt", "99")
	rec, app := serveTestCallback(t, c, req)
	ack := decodeAck(t, rec)
	if ack != (spoolAck{Status: "accepted", CallbackID: id}) {
		t.Errorf("ack %+v", ack)
	}
	if !strings.Contains(rec.Body.String(), `{"status":"accepted","callback_id":"`+id+`"}`) {
		t.Errorf("ack body %s", rec.Body)
	}
	if app.calls != 0 {
		t.Error("durable mode called the next handler")
	}
	if got := callbackCounterValue(t, c.metrics.callbacks.WithLabelValues(outcomeAccepted)); got != accepted+1 {
		t.Errorf("accepted counter %v, want %v", got, accepted+1)
	}
	repl := req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if v, _ := repl.GetString("http.atlas.callback.id"); v != id {
		t.Errorf("placeholder callback.id %q", v)
	}

	rc.WaitDelivered(t, 1, 5*time.Second)
	if !bytes.Equal(rc.Body(id), body) {
		t.Error("the receiver got another body")
	}
	h := rc.Header(id)
	for k, want := range map[string]string{
		"X-Atlas-Callback-Id":    id,
		"X-Atlas-Subject":        "atlas-client",
		"X-Atlas-Document-Count": "3",
		"X-Atlas-Attempt":        "1",
		"Content-Type":           "application/json",
		"Token":                  "",
		"Authorization":          "",
	} {
		if v := h.Get(k); v != want {
			t.Errorf("delivered header %s = %q, want %q", k, v, want)
		}
	}

	// Atlas delivers the same payload again, after and while delivered.
	rec, app = serveTestCallback(t, c, callbackTestRequest(c.Path, tok, body))
	if ack := decodeAck(t, rec); !ack.Duplicate || ack.CallbackID != id {
		t.Errorf("redelivery ack %+v", ack)
	}
	if app.calls != 0 {
		t.Error("durable mode called the next handler")
	}
	time.Sleep(50 * time.Millisecond)
	if n := rc.Takes(id); n != 1 || rc.RequestCount() != 1 {
		t.Errorf("delivered %d times in %d requests, want once", n, rc.RequestCount())
	}
	if info, ok := c.openStore().Get(id); !ok || info.State != queue.StateDelivered || info.Attempts != 1 {
		t.Errorf("state %+v", info)
	}
}

// TestDurableRejectsBeforeSpooling checks that refused callbacks are not
// spooled.
func TestDurableRejectsBeforeSpooling(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	c, _ := durableTestCallback(t, rc, nil)
	tok := callbackAuthToken(t, c)
	for name, req := range map[string]*http.Request{
		"no token":    callbackTestRequest(c.Path, "", payloadtest.Sample(1)),
		"bad payload": callbackTestRequest(c.Path, tok, []byte(`{"data":{}}`)),
	} {
		rec, _ := serveTestCallback(t, c, req)
		if rec.Code == http.StatusAccepted {
			t.Errorf("%s: accepted", name)
		}
	}
	if st := c.openStore().Stats(); st.Pending+st.Delivered+st.Dead != 0 {
		t.Errorf("refused callbacks were spooled: %+v", st)
	}
}

// fakeStore is a queue.Store whose Append fails with err.
type fakeStore struct {
	queue.Store
	err error
}

func (f fakeStore) Append(context.Context, queue.Entry) (queue.AppendResult, error) {
	return queue.AppendResult{}, f.err
}

// TestDurableSpoolUnavailable checks that a callback the spool cannot
// store is answered 503 with Retry-After, never 2xx, and logged at Error
// without the token or the body; other errors are 500s.
func TestDurableSpoolUnavailable(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	c, _ := durableTestCallback(t, rc, nil)
	core, logs := observer.New(zapcore.ErrorLevel)
	c.logger = zap.New(core)
	tok := callbackAuthToken(t, c)
	orig := c.store
	defer func() { c.store = orig }()

	for _, err := range []error{
		fmt.Errorf("%w: write: %w", queue.ErrUnavailable, syscall.ENOSPC),
		queue.ErrFull,
		queue.ErrClosed,
	} {
		c.store = testStore(fakeStore{err: err})
		body := payloadtest.Sample(2)
		rec, app := serveTestCallback(t, c, callbackTestRequest(c.Path, tok, body))
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "30" || app.calls != 0 {
			t.Errorf("%v: %d Retry-After %q", err, rec.Code, rec.Header().Get("Retry-After"))
		}
		if !strings.Contains(rec.Body.String(), `"error":"the callback cannot be stored right now; retry later"`) {
			t.Errorf("%v: body %s", err, rec.Body)
		}
	}
	if logs.Len() != 3 {
		t.Errorf("%d error logs, want 3", logs.Len())
	}
	for _, e := range logs.All() {
		line := fmt.Sprint(e.Message, e.ContextMap())
		if strings.Contains(line, tok) || strings.Contains(line, "document_id") {
			t.Errorf("the log holds the token or the body: %s", line)
		}
	}

	c.store = testStore(fakeStore{err: errors.New("disk on fire")})
	rec := httptest.NewRecorder()
	err := c.ServeCallback(rec, callbackTestRequest(c.Path, tok, payloadtest.Sample(2)), new(callbackApp))
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != http.StatusInternalServerError {
		t.Errorf("another store error: %v", err)
	}
}

// TestDurablePurgeDelay checks that purge_delay reaches the spool: with
// a delay of a second, a delivered callback's body, on disk when it was
// acknowledged, is gone from every spool file within seconds (with the
// default, ten minutes).
func TestDurablePurgeDelay(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	c, dir := durableTestCallback(t, rc, func(c *Callback) { c.PurgeDelay = caddy.Duration(time.Second) })
	const marker = "purge-delay-marker-7f3a"
	body := bytes.Replace(payloadtest.Sample(2), []byte(`"doc-0"`), []byte(`"`+marker+`"`), 1)
	onDisk := func() bool {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(marker)) {
				return true
			}
		}
		return false
	}
	decodeAck(t, serveTestCallbackRec(t, c, body))
	if !onDisk() {
		t.Fatal("the acknowledged callback is not in the spool's files")
	}
	rc.WaitDelivered(t, 1, 5*time.Second)
	testutil.WaitFor(t, 10*time.Second, "the delivered callback's body to leave the disk (purge_delay 1s)", func() bool { return !onDisk() })
}

// TestDurableQueueTooLarge checks that a callback the queue refuses as
// too large (a JetStream message above the servers' max_payload) is
// answered 413, which Atlas does not retry, not a 5xx, and that the
// warning names the size but holds neither the token nor the body.
func TestDurableQueueTooLarge(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	c, _ := durableTestCallback(t, rc, nil)
	core, logs := observer.New(zapcore.WarnLevel)
	c.logger = zap.New(core)
	tok := callbackAuthToken(t, c)
	orig := c.store
	defer func() { c.store = orig }()
	c.store = testStore(fakeStore{err: fmt.Errorf("%w: body of 2000000 bytes, and the NATS servers' max_payload is 1048576", queue.ErrTooLarge)})

	body := payloadtest.Sample(2)
	rec, app := serveTestCallback(t, c, callbackTestRequest(c.Path, tok, body))
	if rec.Code != http.StatusRequestEntityTooLarge || app.calls != 0 {
		t.Fatalf("status %d, %d calls to the app; want 413 and none", rec.Code, app.calls)
	}
	if want := `"error":"the callback body (` + strconv.Itoa(len(body)) + ` bytes) is larger than the queue takes"`; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("body %s, want %s", rec.Body, want)
	}
	if logs.Len() != 1 || !strings.Contains(fmt.Sprint(logs.All()[0].ContextMap()), "max_payload") {
		t.Fatalf("logs %v, want one warning naming max_payload", logs.All())
	}
	if line := fmt.Sprint(logs.All()[0].Message, logs.All()[0].ContextMap()); strings.Contains(line, tok) || strings.Contains(line, "document_id") {
		t.Errorf("the log holds the token or the body: %s", line)
	}
}

// TestDurableSpoolFull checks the 503 with a real spool at its disk
// bound.
func TestDurableSpoolFull(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	c, _ := durableTestCallback(t, rc, func(c *Callback) { c.MaxSpoolSize = 1 })
	rec, _ := serveTestCallback(t, c, callbackTestRequest(c.Path, callbackAuthToken(t, c), payloadtest.Sample(1)))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("a full spool answered %d: %s", rec.Code, rec.Body)
	}
}

// TestDurableProvisionDefaults checks the defaults of durable mode and
// that a route without spool stays synchronous.
func TestDurableProvisionDefaults(t *testing.T) {
	c := &Callback{Spool: filepath.Join(t.TempDir(), "s"), DeliverTo: "http://127.0.0.1:1/hooks"}
	provisionTestCallback(t, c)
	if c.openStore() == nil {
		t.Error("no spool")
	}
	if _, err := os.Stat(c.queueName); err != nil {
		t.Errorf("spool directory: %v", err)
	}

	syncRoute := &Callback{}
	provisionTestCallback(t, syncRoute)
	if syncRoute.store != nil || syncRoute.backend != nil {
		t.Error("a route without spool has a spool")
	}
}

// TestDurableConfigErrors checks the provision errors of durable mode.
func TestDurableConfigErrors(t *testing.T) {
	dir := t.TempDir()
	const marker = "s3cr3t-marker"
	for _, tc := range []struct {
		name string
		c    Callback
		want string
	}{
		{"deliver_to without spool", Callback{DeliverTo: "http://app/hooks"}, "deliver_to needs spool"},
		{"spool without deliver_to", Callback{Spool: dir}, "deliver_to is required with spool"},
		{"unset spool placeholder", Callback{Spool: "{env.DURABLE_TEST_UNSET}", DeliverTo: "http://app/"}, "spool {env.DURABLE_TEST_UNSET} is empty: DURABLE_TEST_UNSET is not set"},
		{"relative deliver_to", Callback{Spool: dir, DeliverTo: "/hooks"}, "deliver_to is not an absolute http(s) URL"},
		{"ftp deliver_to", Callback{Spool: dir, DeliverTo: "ftp://" + marker + "@app/"}, "deliver_to is not an absolute http(s) URL"},
		{"unset deliver_to placeholder", Callback{Spool: dir, DeliverTo: "{env.DURABLE_TEST_UNSET}"}, "deliver_to {env.DURABLE_TEST_UNSET} is empty: DURABLE_TEST_UNSET is not set"},
		{"negative max_attempts", Callback{Spool: dir, DeliverTo: "http://app/", MaxAttempts: -1}, "max_attempts must be at least 1"},
		{"negative concurrency", Callback{Spool: dir, DeliverTo: "http://app/", Concurrency: -2}, "concurrency must be at least 1"},
		{"min above max", Callback{Spool: dir, DeliverTo: "http://app/", RetryBackoffMin: caddy.Duration(time.Minute), RetryBackoffMax: caddy.Duration(time.Second)},
			"retry_backoff: the first delay 1m0s exceeds the maximum 1s"},
		{"negative backoff", Callback{Spool: dir, DeliverTo: "http://app/", RetryBackoffMin: -1}, "retry_backoff durations must be positive"},
		{"negative timeout", Callback{Spool: dir, DeliverTo: "http://app/", DeliveryTimeout: -1}, "delivery_timeout must be positive"},
		{"negative retention", Callback{Spool: dir, DeliverTo: "http://app/", Retention: -1}, "retention must be positive"},
		{"negative size", Callback{Spool: dir, DeliverTo: "http://app/", MaxSpoolSize: -1}, "max_spool_size must be positive"},
		{"huge max_body", Callback{Spool: dir, DeliverTo: "http://app/", MaxBody: 2 << 30}, "max_body must be at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.Path, c.ClientID, c.ClientSecret, c.SigningKey = "/hooks/atlas", "atlas-client", "secret", testHMACSecret
			err, cerr := provisionAndValidate(&c)
			if cerr != nil {
				t.Errorf("cleanup: %v", cerr)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), marker) {
				t.Errorf("the error echoes deliver_to's credentials: %v", err)
			}
		})
	}
	if len(queues.Open()) != 0 {
		t.Errorf("failed provisions left %d spools open", len(queues.Open()))
	}
}

// TestDurableSharedSpool checks the spool shared across configs: a
// reload (a new config's route provisioned, then the old one cleaned up)
// keeps the spool open and applies the new deliver_to; a failed reload
// (the new route cleaned up first) goes back to the old one; two routes
// of one config may not share a spool with different settings.
func TestDurableSharedSpool(t *testing.T) {
	a, b := callbacktest.NewReceiver(t), callbacktest.NewReceiver(t)
	dir := filepath.Join(t.TempDir(), "spool")
	newRoute := func(rc *callbacktest.Receiver) (*Callback, caddy.Context, context.CancelFunc) {
		c := &Callback{Path: "/hooks/atlas", ClientID: "atlas-client", ClientSecret: "atlas-client-secret", SigningKey: testHMACSecret,
			Spool: dir, DeliverTo: rc.URL, RetryBackoffMin: caddy.Duration(10 * time.Millisecond), RetryBackoffMax: caddy.Duration(10 * time.Millisecond)}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		if err := c.Provision(ctx, zap.NewNop()); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		return c, ctx, cancel
	}
	send := func(c *Callback, n int) string {
		body := payloadtest.Sample(n)
		rec, _ := serveTestCallback(t, c, callbackTestRequest(c.Path, callbackAuthToken(t, c), body))
		decodeAck(t, rec)
		return ID(body)
	}

	old, _, cancelOld := newRoute(a)
	defer cancelOld()
	send(old, 1)
	a.WaitDelivered(t, 1, 5*time.Second)

	// Reload: the new config's route shares the spool.
	cur, curCtx, cancelCur := newRoute(b)
	defer cancelCur()
	if cur.openStore() != old.openStore() {
		t.Fatal("the reload opened another spool")
	}
	// Another route of the same config, same spool, other deliver_to.
	other := &Callback{Path: "/other", ClientID: "x", ClientSecret: "y", SigningKey: testHMACSecret, Spool: dir, DeliverTo: a.URL}
	err := other.Provision(curCtx, zap.NewNop())
	_ = other.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "also used by the callback route /hooks/atlas of this config with other delivery settings") {
		t.Errorf("two settings for one spool in one config: %v", err)
	}
	// Same deliver_to, other sign_deliveries: the last route's signer
	// would sign the other's callbacks with a secret its app does not know.
	signed := &Callback{Path: "/signed", ClientID: "x", ClientSecret: "y", SigningKey: testHMACSecret, Spool: dir, DeliverTo: b.URL,
		RetryBackoffMin: caddy.Duration(10 * time.Millisecond), RetryBackoffMax: caddy.Duration(10 * time.Millisecond),
		SignDeliveries: []string{whsign.NewSecret()}}
	err = signed.Provision(curCtx, zap.NewNop())
	_ = signed.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "with other delivery settings") {
		t.Errorf("two sign_deliveries for one spool in one config: %v", err)
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	id2 := send(cur, 2)
	b.WaitDelivered(t, 1, 5*time.Second)
	if len(a.Delivered()) != 1 || b.Delivered()[0] != id2 {
		t.Errorf("after the reload: a got %v, b got %v", a.Delivered(), b.Delivered())
	}

	// A failed reload: a third config's route is provisioned, then
	// cleaned up; the running config's deliver_to applies again.
	failed, _, cancelFailed := newRoute(a)
	if err := failed.Cleanup(); err != nil {
		t.Fatal(err)
	}
	cancelFailed()
	send(cur, 3)
	b.WaitDelivered(t, 2, 5*time.Second)
	if len(a.Delivered()) != 1 {
		t.Errorf("after a failed reload, a got %v", a.Delivered())
	}

	// The last route closes the spool, and it can be opened again.
	if err := cur.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if len(queues.Open()) != 0 {
		t.Error("the spool is still open")
	}
	again, _, cancelAgain := newRoute(b)
	defer cancelAgain()
	defer again.Cleanup()
	if st := again.openStore().Stats(); st.Delivered != 3 {
		t.Errorf("reopened spool: %+v", st)
	}
}

// TestDurableSettingWithoutQueue: a setting of the queue on a route in
// synchronous mode is of no effect, as it always was, and says so; on a
// route that uses the app's queue it is an error that says where it goes.
func TestDurableSettingWithoutQueue(t *testing.T) {
	c := &Callback{MaxAttempts: 4}
	logs := provisionTestCallback(t, c)
	if logs.FilterMessage("a setting of durable mode has no effect: the callback route has no deliver_to and no queue").Len() != 1 {
		t.Errorf("no warning: %v", logs.All())
	}
	if c.store != nil {
		t.Error("a synchronous route has a queue")
	}
	app := &Callback{MaxAttempts: 4, DeliverTo: "http://127.0.0.1:1/hooks"}
	if err := app.foldLegacyQueue(); err == nil || !strings.Contains(err.Error(), "max_attempts needs spool or queue") {
		t.Errorf("a setting beside the app's queue: %v", err)
	}
}

// TestDurableOpensAtStart checks that a route's queue opens when its
// config starts, not when it is provisioned (as `caddy validate` does):
// until then nothing is created; a callback that comes meanwhile waits
// for the queue (Caddy starts its apps in no set order), and one whose
// request ends first is answered 503 with Retry-After.
func TestDurableOpensAtStart(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	dir := filepath.Join(t.TempDir(), "spool")
	c := &Callback{Path: "/hooks/atlas", ClientID: "atlas-client", ClientSecret: "atlas-client-secret", SigningKey: testHMACSecret,
		Spool: dir, DeliverTo: rc.URL}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := c.Provision(ctx, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	defer c.Cleanup()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the spool exists before the config starts: %v", err)
	}
	body := payloadtest.Sample(1)
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	rec, app := serveTestCallback(t, c, callbackTestRequest(c.Path, callbackAuthToken(t, c), body).WithContext(short))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || app.calls != 0 {
		t.Fatalf("before start, the request ending first: %d Retry-After %q, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	waited := make(chan *httptest.ResponseRecorder, 1)
	req := callbackTestRequest(c.Path, callbackAuthToken(t, c), body)
	go func() {
		rec := httptest.NewRecorder()
		_ = c.ServeCallback(rec, req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil }))
		waited <- rec
	}()
	time.Sleep(100 * time.Millisecond)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the spool after start: %v", err)
	}
	if ack := decodeAck(t, <-waited); ack.CallbackID != ID(body) {
		t.Errorf("a callback that came before start: %+v", ack)
	}
	rc.WaitDelivered(t, 1, 10*time.Second)
}

// TestDurableReloadTakesOpenQueue: on a reload, the new config's route
// takes its queue, open already, as it is provisioned, so that it never
// answers 503 while its config starts.
func TestDurableReloadTakesOpenQueue(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	dir := filepath.Join(t.TempDir(), "spool")
	route := func() *Callback {
		c := &Callback{Path: "/hooks/atlas", ClientID: "atlas-client", ClientSecret: "atlas-client-secret", SigningKey: testHMACSecret,
			Spool: dir, DeliverTo: rc.URL}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		if err := c.Provision(ctx, zap.NewNop()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Cleanup() })
		return c
	}
	old := route()
	if old.openStore() != nil {
		t.Fatal("the first config's queue is open before it starts")
	}
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	cur := route()
	if cur.openStore() == nil || cur.openStore() != old.openStore() {
		t.Fatal("the reload's route has not taken the open queue at provision")
	}
	body := payloadtest.Sample(1)
	rec, _ := serveTestCallback(t, cur, callbackTestRequest(cur.Path, callbackAuthToken(t, cur), body))
	decodeAck(t, rec)
	rc.WaitDelivered(t, 1, 10*time.Second)
}
