package callback

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
	"github.com/caddy-atlas/caddy-atlas/queues"
)

func TestValidateDurableQueue(t *testing.T) {
	js := jsQueue(t, &queues.JetStream{URLs: []string{"nats://a:4222"}})
	for _, c := range []struct {
		c    Callback
		want string
	}{
		{Callback{Spool: "/var/spool", Queue: js, DeliverTo: "http://app/"}, "exclusive"},
		{Callback{Queue: json.RawMessage(`{}`), DeliverTo: "http://app/"}, "no backend"},
		{Callback{Queue: js}, "deliver_to is required"},
		{Callback{Queue: js, DeliverTo: "http://app/", DeadLetterRetention: caddy.Duration(time.Hour)}, "dead_letter_retention applies to a spool only"},
		{Callback{Queue: js, DeliverTo: "http://app/", PurgeDelay: caddy.Duration(time.Minute)}, "purge_delay applies to a spool only"},
	} {
		err := c.c.foldLegacyQueue()
		if err == nil {
			c.c.deliverTo = c.c.DeliverTo
			err = c.c.validateDurable()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("validateDurable = %v, want an error with %q", err, c.want)
		}
	}
}

// jsQueue is the JSON of a JetStream queue module.
func jsQueue(t *testing.T, js *queues.JetStream) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(js)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["backend"] = "jetstream"
	raw, _ = json.Marshal(m)
	return raw
}

// TestJetStreamRoute checks the callback route on a JetStream queue: 202
// once published and delivered, a duplicate acknowledged as such, the
// queue shared across a reload (the new deliver_to applies), other
// credentials refused until a restart, 503 with Retry-After while NATS is
// down, and the queue closed with its last route.
func TestJetStreamRoute(t *testing.T) {
	n := natstest.Start(t)
	a, b := callbacktest.NewReceiver(t), callbacktest.NewReceiver(t)
	newRoute := func(rc *callbacktest.Receiver, mut func(*queues.JetStream)) (*Callback, error) {
		js := &queues.JetStream{URLs: []string{n.URL()}, Stream: "ROUTE_TEST", Replicas: 1, AckWait: caddy.Duration(time.Second)}
		if mut != nil {
			mut(js)
		}
		c := &Callback{Path: "/hooks/atlas", ClientID: "atlas-client", ClientSecret: "atlas-client-secret", SigningKey: testHMACSecret,
			Queue: jsQueue(t, js), DeliverTo: rc.URL,
			RetryBackoffMin: caddy.Duration(10 * time.Millisecond), RetryBackoffMax: caddy.Duration(10 * time.Millisecond)}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		err := c.Provision(ctx, zap.NewNop())
		if err == nil {
			err = c.Start()
		}
		if err != nil {
			_ = c.Cleanup()
		}
		return c, err
	}
	post := func(c *Callback, body []byte) *httptest.ResponseRecorder {
		rec, _ := serveTestCallback(t, c, callbackTestRequest(c.Path, callbackAuthToken(t, c), body))
		return rec
	}

	old, err := newRoute(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := payloadtest.Sample(1)
	if ack := decodeAck(t, post(old, body)); ack.Duplicate || ack.CallbackID != ID(body) {
		t.Errorf("ack = %+v", ack)
	}
	a.WaitDelivered(t, 1, 10*time.Second)
	if ack := decodeAck(t, post(old, body)); !ack.Duplicate {
		t.Error("a redelivery was not acknowledged as a duplicate")
	}
	qs := queues.Open()
	if len(qs) != 1 || qs[0].Name != "jetstream:ROUTE_TEST" {
		t.Errorf("OpenQueues = %+v", qs)
	}

	// Reload: the new route shares the queue and its deliver_to applies.
	cur, err := newRoute(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cur.openStore() != old.openStore() {
		t.Fatal("the reload opened another queue")
	}
	if _, err := newRoute(b, func(js *queues.JetStream) { js.Credentials = &queues.JetStreamCredentials{User: "u", Password: "p"} }); err == nil ||
		!strings.Contains(err.Error(), "after a restart") {
		t.Errorf("a reload with other credentials: %v", err)
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	body2 := payloadtest.Sample(2)
	decodeAck(t, post(cur, body2))
	b.WaitDelivered(t, 1, 10*time.Second)
	if len(a.Delivered()) != 1 || b.Delivered()[0] != ID(body2) {
		t.Errorf("after the reload: a got %v, b got %v", a.Delivered(), b.Delivered())
	}

	// NATS down: 503 with Retry-After, never a 2xx.
	n.Stop()
	rec := post(cur, payloadtest.Sample(3))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("with NATS down: %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	n.Start()

	if err := cur.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if len(queues.Open()) != 0 {
		t.Error("the queue is still open")
	}
}

// TestJetStreamMaxBody checks max_body against the NATS servers'
// max_payload (1 MB by default): a max_body set above it fails,
// naming both sizes and the fix; the default is lowered to it.
func TestJetStreamMaxBody(t *testing.T) {
	n := natstest.Start(t)
	route := func(maxBody int64) (*Callback, error) {
		js := &queues.JetStream{URLs: []string{n.URL()}, Stream: "MAX_BODY_TEST", Replicas: 1}
		c := &Callback{Path: "/hooks/atlas", ClientID: "atlas-client", ClientSecret: "atlas-client-secret", SigningKey: testHMACSecret,
			Queue: jsQueue(t, js), DeliverTo: "http://127.0.0.1:1/hooks", MaxBody: maxBody}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		err := c.Provision(ctx, zap.NewNop())
		if err == nil {
			err = c.Start()
		}
		t.Cleanup(func() { _ = c.Cleanup() })
		return c, err
	}
	_, err := route(2 << 20)
	want := "max_body 2097152 bytes is above what queue jetstream:MAX_BODY_TEST takes: the NATS servers' max_payload is 1048576 bytes, and a callback adds up to 4096 bytes of headers; set max_body to at most 1044480 bytes, or raise max_payload in the NATS servers' configuration (up to 64MB)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("max_body 2MiB = %v, want an error containing %q", err, want)
	}
	c, err := route(0)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.maxBody.Load(); got != 1044480 {
		t.Errorf("the default max_body on the queue is %d, want 1044480", got)
	}
	if _, err := route(1044480); err != nil {
		t.Errorf("max_body 1044480: %v", err)
	}
}
