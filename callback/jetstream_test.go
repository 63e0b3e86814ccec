package callback

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
	"github.com/caddy-atlas/caddy-atlas/jsqueue"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
)

func TestJetStreamOptions(t *testing.T) {
	dir := t.TempDir()
	creds := "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.sig\n------END NATS USER JWT------\n"
	t.Setenv("JS_TEST_CREDS", creds)
	t.Setenv("JS_TEST_URLS", "nats://a:4222 nats://b:4222")

	o, err := (&JetStream{URLs: []string{"{env.JS_TEST_URLS}", "nats://c:4222"}, Replicas: 3,
		Credentials: &JetStreamCredentials{Creds: "{env.JS_TEST_CREDS}"}}).options()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.URLs, " ") != "nats://a:4222 nats://b:4222 nats://c:4222" || o.Replicas != 3 {
		t.Errorf("options = %+v", o)
	}
	if o.Credentials != creds || o.CredentialsFile != "" {
		t.Error("the creds content was not taken as content")
	}
	o, _ = (&JetStream{URLs: []string{"nats://a:4222"}, Credentials: &JetStreamCredentials{Creds: "/etc/caddy/atlas.creds"}}).options()
	if o.CredentialsFile != "/etc/caddy/atlas.creds" || o.Credentials != "" {
		t.Error("a creds path was not taken as a path")
	}
	a := jsqueue.Options{URLs: []string{"nats://a:4222", "nats://b:4222"}}
	b := jsqueue.Options{URLs: []string{"nats://b:4222", "nats://a:4222"}, Stream: jsqueue.DefaultStream}
	if jetStreamKey(a) != jetStreamKey(b) {
		t.Errorf("the same stream on the same servers has two keys: %q, %q", jetStreamKey(a), jetStreamKey(b))
	}

	pem := filepath.Join(dir, "ca.pem")
	os.WriteFile(pem, []byte("not a certificate"), 0o600)
	for _, c := range []struct {
		js   JetStream
		want string
	}{
		{JetStream{}, "url is required"},
		{JetStream{URLs: []string{"{env.JS_TEST_UNSET}"}}, "url is required"},
		{JetStream{URLs: []string{"http://a:4222"}}, "not a nats://"},
		{JetStream{URLs: []string{"nats://user:pass@a:4222"}}, "not in the URL"},
		{JetStream{URLs: []string{"http://user:pass@a:4222"}}, "not in the URL"},
		{JetStream{URLs: []string{"nats://user:pass@a:4222/%zz"}}, "url 1 is not"},
		{JetStream{URLs: []string{"nats://a:4222"}, Replicas: 7}, "replicas"},
		{JetStream{URLs: []string{"nats://a:4222"}, Credentials: &JetStreamCredentials{Creds: "{env.JS_TEST_UNSET}"}}, "credentials are empty"},
		{JetStream{URLs: []string{"nats://a:4222"}, TLS: &JetStreamTLS{Cert: "c.pem"}}, "both cert and key"},
		{JetStream{URLs: []string{"nats://a:4222"}, TLS: &JetStreamTLS{CA: pem}}, "no PEM certificate"},
		{JetStream{URLs: []string{"nats://a:4222"}, TLS: &JetStreamTLS{CA: filepath.Join(dir, "missing.pem")}}, "tls ca"},
	} {
		_, err := c.js.options()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("options(%+v) = %v, want an error with %q", c.js, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "pass") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestValidateDurableQueue(t *testing.T) {
	js := &Queue{JetStream: &JetStream{URLs: []string{"nats://a:4222"}}}
	for _, c := range []struct {
		c    Callback
		want string
	}{
		{Callback{Spool: "/var/spool", Queue: js, DeliverTo: "http://app/"}, "exclusive"},
		{Callback{Queue: &Queue{}, DeliverTo: "http://app/"}, "no backend"},
		{Callback{Queue: js}, "deliver_to is required"},
		{Callback{Queue: js, DeliverTo: "http://app/", DeadLetterRetention: caddy.Duration(time.Hour)}, "dead_letter_retention applies to a spool only"},
		{Callback{Queue: js, DeliverTo: "http://app/", PurgeDelay: caddy.Duration(time.Minute)}, "purge_delay applies to a spool only"},
	} {
		c.c.deliverTo = c.c.DeliverTo
		if err := c.c.validateDurable(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("validateDurable = %v, want an error with %q", err, c.want)
		}
	}
}

// TestJetStreamRoute checks the callback route on a JetStream queue: 202
// once published and delivered, a duplicate acknowledged as such, the
// queue shared across a reload (the new deliver_to applies), other
// credentials refused until a restart, 503 with Retry-After while NATS is
// down, and the queue closed with its last route.
func TestJetStreamRoute(t *testing.T) {
	n := natstest.Start(t)
	a, b := callbacktest.NewReceiver(t), callbacktest.NewReceiver(t)
	newRoute := func(rc *callbacktest.Receiver, mut func(*JetStream)) (*Callback, error) {
		js := &JetStream{URLs: []string{n.URL()}, Stream: "ROUTE_TEST", Replicas: 1, AckWait: caddy.Duration(time.Second)}
		if mut != nil {
			mut(js)
		}
		c := &Callback{Path: "/hooks/atlas", ClientID: "atlas-client", ClientSecret: "atlas-client-secret", SigningKey: testHMACSecret,
			Queue: &Queue{JetStream: js}, DeliverTo: rc.URL,
			RetryBackoffMin: caddy.Duration(10 * time.Millisecond), RetryBackoffMax: caddy.Duration(10 * time.Millisecond)}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		err := c.Provision(ctx, zap.NewNop())
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
	qs := OpenQueues()
	if len(qs) != 1 || qs[0].Name != "jetstream:ROUTE_TEST" {
		t.Errorf("OpenQueues = %+v", qs)
	}

	// Reload: the new route shares the queue and its deliver_to applies.
	cur, err := newRoute(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cur.store != old.store {
		t.Fatal("the reload opened another queue")
	}
	if _, err := newRoute(b, func(js *JetStream) { js.Credentials = &JetStreamCredentials{User: "u", Password: "p"} }); err == nil ||
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
	if len(liveJetStreams()) != 0 {
		t.Error("the queue is still open")
	}
}
