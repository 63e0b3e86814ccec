package queues

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/caddy-atlas/caddy-atlas/internal/cfparse/cfparsetest"
	"github.com/caddy-atlas/caddy-atlas/queue"
)

// counterValue reads a counter.
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestDeadLetterExpiredMetric: the spool's purge of a dead letter counts
// in caddy_atlas_dead_letters_expired_total.
func TestDeadLetterExpiredMetric(t *testing.T) {
	m := registerMetrics(nil)
	before := counterValue(t, m.deadExpired)
	observer{m}.DeadLetterExpired()
	if got := counterValue(t, m.deadExpired); got != before+1 {
		t.Errorf("dead_letters_expired_total %v, want %v", got, before+1)
	}
}

// provisionSpool provisions a spool module in a new context.
func provisionSpool(t *testing.T, s *Spool) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := s.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// TestSpoolDefaults checks the defaults of a spool's settings.
func TestSpoolDefaults(t *testing.T) {
	s := &Spool{Dir: filepath.Join(t.TempDir(), "s")}
	provisionSpool(t, s)
	r := s.settings
	if r.maxAttempts != 20 || r.backoffMin != time.Second || r.backoffMax != 10*time.Minute ||
		r.deliveryTimeout != 30*time.Second || r.concurrency != 4 || r.retention != 7*24*time.Hour ||
		r.maxSize != 4<<30 || r.deadRetention != 30*24*time.Hour || r.purgeDelay != 10*time.Minute {
		t.Errorf("defaults: %+v", r)
	}
	// A first delay above the default maximum raises the maximum.
	s2 := &Spool{Dir: filepath.Join(t.TempDir(), "s"), Delivery: Delivery{RetryBackoffMin: caddy.Duration(time.Hour)}}
	provisionSpool(t, s2)
	if s2.settings.backoffMax != time.Hour {
		t.Errorf("retry_backoff_max %s", s2.settings.backoffMax)
	}
}

// testUser is a user of a queue that delivers nowhere.
func testUser(name string, config any, deliveryKey string) *queue.User {
	return &queue.User{
		Name:        name,
		Config:      config,
		DeliveryKey: deliveryKey,
		Deliver: func(http.RoundTripper) queue.DeliverFunc {
			return func(context.Context, queue.Delivery) error { return nil }
		},
	}
}

// attachOpen attaches u to b and opens it, as a route does at its
// config's provision and start.
func attachOpen(b queue.Backend, u *queue.User) (queue.Store, error) {
	if err := b.Attach(u); err != nil {
		return nil, err
	}
	return b.Open(u)
}

// TestSpoolShared checks that two modules naming one directory share one
// spool, that two settings for it in one config are refused naming both
// users, and that the last user closes it.
func TestSpoolShared(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	config := new(int)
	a := &Spool{Dir: dir}
	provisionSpool(t, a)
	b := &Spool{Dir: dir + "/."}
	provisionSpool(t, b)
	ua, ub := testUser("route a", config, "k"), testUser("route b", config, "k")
	sa, err := attachOpen(a, ua)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := attachOpen(b, ub)
	if err != nil {
		t.Fatal(err)
	}
	if sa != sb {
		t.Error("two modules of one directory opened two spools")
	}
	other := &Spool{Dir: dir, Delivery: Delivery{MaxAttempts: 3}}
	provisionSpool(t, other)
	if err := other.Attach(testUser("route c", config, "k")); err == nil ||
		!strings.Contains(err.Error(), "is configured twice in this config, with a different setting") ||
		!strings.Contains(err.Error(), "for route a and for route c") {
		t.Errorf("two settings for one spool: %v", err)
	}
	if err := b.Attach(testUser("route d", config, "other")); err == nil || !strings.Contains(err.Error(), "also used by route a of this config with other delivery settings") {
		t.Errorf("two deliveries for one spool: %v", err)
	}
	// Another config (a reload) may change the settings.
	if _, err := attachOpen(other, testUser("route e", new(int), "k")); err != nil {
		t.Errorf("a reload with other settings: %v", err)
	}
	if n := len(Open()); n != 1 {
		t.Fatalf("%d queues open", n)
	}
	for _, d := range []struct {
		s *Spool
		u *queue.User
	}{{a, ua}, {b, ub}} {
		if err := d.s.Detach(d.u); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(Open()); n != 1 {
		t.Fatalf("%d queues open with a user left", n)
	}
	if err := other.Detach(other.pool.users[0]); err != nil {
		t.Fatal(err)
	}
	if n := len(Open()); n != 0 {
		t.Errorf("%d queues open after the last user left", n)
	}
}

// TestQueueCaddyfile checks the queue blocks' parsers.
func TestQueueCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name, input, want, wantErr string
		mod                        caddyfile.Unmarshaler
	}{
		{name: "spool", mod: new(Spool), input: `spool /var/lib/caddy/atlas {
			max_attempts 5
			retry_backoff 1s 1m
			delivery_timeout 10s
			concurrency 8
			retention 1d
			encryption_key {env.K1}
			encryption_key {env.K2}
			max_spool_size 1GiB
			dead_letter_retention 2d
			purge_delay 1m
		}`, want: `{"dir":"/var/lib/caddy/atlas","max_attempts":5,"retry_backoff_min":1000000000,"retry_backoff_max":60000000000,"delivery_timeout":10000000000,"concurrency":8,"retention":86400000000000,"encryption_keys":["{env.K1}","{env.K2}"],"max_spool_size":1073741824,"dead_letter_retention":172800000000000,"purge_delay":60000000000}`},
		{name: "spool without a directory", mod: new(Spool), input: "spool", wantErr: "wrong argument count"},
		{name: "spool repeat", mod: new(Spool), input: "spool /d {\n concurrency 1\n concurrency 2\n}", wantErr: `subdirective "concurrency" given more than once`},
		{name: "spool unknown", mod: new(Spool), input: "spool /d {\n url nats://a\n}", wantErr: `unrecognized subdirective "url"`},
		{name: "spool misspelt", mod: new(Spool), input: "spool /d {\n max_atempts 3\n}", wantErr: `unrecognized subdirective "max_atempts"; did you mean "max_attempts"?, at Testfile:2`},
		{name: "jetstream misspelt", mod: new(JetStream), input: "jetstream {\n url nats://a\n replica 1\n}", wantErr: `unrecognized subdirective "replica"; did you mean "replicas"?, at Testfile:3`},
		{name: "jetstream tls misspelt", mod: new(JetStream), input: "jetstream {\n url nats://a\n tls {\n  server-name x\n }\n}", wantErr: `queue jetstream tls: unrecognized subdirective "server-name"; did you mean "server_name"?, at Testfile:4`},
		{name: "jetstream credentials misspelt", mod: new(JetStream), input: "jetstream {\n url nats://a\n credentials {\n  nkye /k\n }\n}", wantErr: `queue jetstream credentials: unrecognized subdirective "nkye"; did you mean "nkey"?, at Testfile:4`},
		{name: "jetstream", mod: new(JetStream), input: `jetstream {
			url nats://a:4222 nats://b:4222
			stream S
			replicas 3
			ack_wait 5s
			publish_timeout 3s
			max_attempts 2
		}`, want: `{"urls":["nats://a:4222","nats://b:4222"],"stream":"S","replicas":3,"ack_wait":5000000000,"publish_timeout":3000000000,"max_attempts":2}`},
		{name: "jetstream publish_timeout", mod: new(JetStream), input: "jetstream {\n url nats://a\n publish_timeout 2h\n}", wantErr: "publish_timeout must be a duration from 1s to 1m, got 2h"},
		{name: "jetstream without url", mod: new(JetStream), input: "jetstream {\n stream S\n}", wantErr: "url is required"},
		{name: "jetstream replicas", mod: new(JetStream), input: "jetstream {\n url nats://a\n replicas 7\n}", wantErr: "replicas must be a whole number from 1 to 5, got 7"},
		{name: "jetstream dead letters", mod: new(JetStream), input: "jetstream {\n url nats://a\n dead_letter_retention 1d\n}", wantErr: "dead_letter_retention applies to a spool only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.mod.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(tc.mod)
			if string(got) != tc.want {
				t.Errorf("JSON\n %s\nwant\n %s", got, tc.want)
			}
		})
	}
}

// TestJetStreamMetricsRegistered: a JetStream queue's own histogram is in
// the registry of the config that provisions it.
func TestJetStreamMetricsRegistered(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	j := &JetStream{URLs: []string{"nats://127.0.0.1:4222"}}
	if err := j.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	mfs, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "caddy_atlas_jetstream_publish_seconds" {
			return
		}
	}
	t.Error("caddy_atlas_jetstream_publish_seconds is not registered")
}

// TestWithDefaults: settings written as their defaults compare equal to
// settings left out.
func TestWithDefaults(t *testing.T) {
	a := WithDefaults(map[string]any{"backend": "spool", "dir": "/d", "max_attempts": float64(20)})
	b := WithDefaults(map[string]any{"backend": "spool", "dir": "/d"})
	if !reflect.DeepEqual(a, b) {
		t.Errorf("%v != %v", a, b)
	}
	c := WithDefaults(map[string]any{"backend": "spool", "dir": "/d", "max_attempts": float64(3)})
	if reflect.DeepEqual(a, c) {
		t.Error("max_attempts 3 compares equal to the default")
	}
}

// TestSubdirectiveLists checks that the lists that suggest the nearest
// name of a misspelt subdirective are the names the parsers accept.
func TestSubdirectiveLists(t *testing.T) {
	cfparsetest.Check(t, "delivery.go", "Delivery.unmarshalDirective", deliveryNames())
	cfparsetest.Check(t, "spool.go", "Spool.UnmarshalDirective", spoolSubdirectives, deliveryNames()...)
	cfparsetest.Check(t, "jetstream.go", "JetStream.UnmarshalDirective", jetStreamSubdirectives, deliveryNames()...)
	cfparsetest.Check(t, "jetstream.go", "JetStream.unmarshalCredentials", credentialsSubdirectives)
	cfparsetest.Check(t, "jetstream.go", "JetStream.unmarshalTLS", tlsSubdirectives)
}

// TestSpoolDirNotWritable checks that a spool directory that can never
// be created or written fails at provision, naming the path, and that
// the check creates nothing.
func TestSpoolDirNotWritable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ spool, want string }{
		{filepath.Join(file, "spool"), "spool " + filepath.Join(file, "spool") + ": " + file + " is not a directory"},
		{file, "spool " + file + ": " + file + " is not a directory"},
	} {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := (&Spool{Dir: tc.spool}).Provision(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Provision(spool %s) = %v, want an error containing %q", tc.spool, err, tc.want)
		}
	}

	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	spoolDir := filepath.Join(ro, "a", "spool")
	err := checkSpoolDir(spoolDir)
	if os.Getuid() != 0 {
		want := "spool " + spoolDir + " cannot be written: its parent " + ro + " is not writable by the user Caddy runs as"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkSpoolDir = %v, want an error containing %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(ro, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the check created %s", filepath.Join(ro, "a"))
	}
	if err := checkSpoolDir(filepath.Join(dir, "new", "spool")); err != nil {
		t.Errorf("a spool under a writable directory: %v", err)
	}
}
