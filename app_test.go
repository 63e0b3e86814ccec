package caddyatlas

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
	"github.com/caddy-atlas/caddy-atlas/queues"
	"github.com/caddy-atlas/caddy-atlas/reconcile"
)

// validateConfig provisions a JSON config, as `caddy validate` does, and
// returns its error.
func validateConfig(t *testing.T, config string) error {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(config), &cfg); err != nil {
		t.Fatal(err)
	}
	return caddy.Validate(&cfg)
}

// siteConfig is a config with the given atlas app and one server whose
// routes are the given atlas handlers, its storage in a directory of the
// test.
func siteConfig(t *testing.T, app string, handlers ...string) string {
	var routes []string
	for _, h := range handlers {
		routes = append(routes, `{"handle": [`+h+`]}`)
	}
	apps := `"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [` + strings.Join(routes, ",") + `]}}}`
	if app != "" {
		apps = `"atlas": ` + app + `, ` + apps
	}
	return `{"admin": {"disabled": true}, "storage": {"module": "file_system", "root": "` + t.TempDir() + `"}, "apps": {` + apps + `}}`
}

// TestAppAccount checks where the outbound routes take their account
// from: the handler's block, else the atlas app; and that one client id
// configured two ways is refused, naming both places.
func TestAppAccount(t *testing.T) {
	t.Setenv("APP_TEST_SECRET", "app-test-secret-do-not-echo")
	const (
		account = `"endpoint": "https://atlas.example.com", "client_id": "gw", "client_secret": "{env.APP_TEST_SECRET}"`
		other   = `"endpoint": "https://other.example.com", "client_id": "gw", "client_secret": "{env.APP_TEST_SECRET}"`
	)
	for _, tc := range []struct {
		name, config, want string
	}{
		{"the app's account", siteConfig(t, `{`+account+`}`, `{"handler": "atlas"}`), ""},
		{"the app's account in two sites", siteConfig(t, `{`+account+`}`, `{"handler": "atlas"}`, `{"handler": "atlas", "extracts_path": "/x", "upload_path": "/y"}`), ""},
		{"inline, the same as the app's", siteConfig(t, `{`+account+`}`, `{"handler": "atlas", `+account+`}`), ""},
		{"inline without an app", siteConfig(t, "", `{"handler": "atlas", `+account+`}`), ""},
		{"no account anywhere", siteConfig(t, "", `{"handler": "atlas"}`), "endpoint is required while an outbound route is enabled: set endpoint, client_id and client_secret in the global atlas options or in the site's atlas block"},
		{"inline, another endpoint than the app's", siteConfig(t, `{`+account+`}`, `{"handler": "atlas", `+other+`}`),
			`client_id "gw" is configured twice, with a different endpoint https://atlas.example.com and https://other.example.com: in the global atlas options and in the atlas handler of extracts_path /atlas/extracts, upload_path /atlas/multiupload`},
		{"two sites, two secrets", siteConfig(t, "", `{"handler": "atlas", `+account+`}`, `{"handler": "atlas", "extracts_path": "/x", "upload_path": "/y", "endpoint": "https://atlas.example.com", "client_id": "gw", "client_secret": "another"}`),
			`client_id "gw" is configured twice, with a different client_secret: in the atlas handler of extracts_path /atlas/extracts, upload_path /atlas/multiupload and in the atlas handler of extracts_path /x, upload_path /y`},
		{"token_storage off beside the app's account", siteConfig(t, `{`+account+`}`, `{"handler": "atlas", "token_storage": "off"}`),
			`token_storage "off" differs from the account's in the global atlas options`},
		{"a bad app account", siteConfig(t, `{"endpoint": "atlas.example.com", "client_id": "gw", "client_secret": "x"}`, `{"handler": "atlas"}`), "not an absolute http(s) URL"},
		{"the bulk service", siteConfig(t, `{`+account+`, "service": "bulk"}`, `{"handler": "atlas"}`, `{"handler": "atlas", "extracts_path": "/x", "upload_path": "/y", "service": "bulk"}`), ""},
		{"inline, the docstream service named", siteConfig(t, `{`+account+`}`, `{"handler": "atlas", "service": "docstream", `+account+`}`), ""},
		{"an unknown service", siteConfig(t, `{`+account+`, "service": "stream"}`, `{"handler": "atlas"}`),
			`service must be "docstream" (the default) or "bulk", got "stream"`},
		{"inline, another service than the app's", siteConfig(t, `{`+account+`}`, `{"handler": "atlas", "service": "bulk", `+account+`}`),
			`client_id "gw" is configured twice, with a different service docstream and bulk: in the global atlas options and in the atlas handler of extracts_path /atlas/extracts, upload_path /atlas/multiupload`},
		{"service beside the app's account", siteConfig(t, `{`+account+`}`, `{"handler": "atlas", "service": "bulk"}`),
			`service "bulk" differs from the account's (docstream) in the global atlas options`},
		{"service without an app account", siteConfig(t, `{"service": "bulk"}`, `{"handler": "atlas", `+account+`}`),
			"service in the global atlas options is a setting of its account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateConfig(t, tc.config)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "app-test-secret-do-not-echo"):
				t.Fatalf("the error echoes the secret: %v", err)
			}
		})
	}
}

// TestAppSharesOneAccount checks that the handlers of one config that
// use one client id share one account, and its token source.
func TestAppSharesOneAccount(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	app := new(App)
	app.Account = Account{Endpoint: "https://atlas.example.com", ClientID: "gw", ClientSecret: "s", TokenStorage: tokenStorageOff}
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer app.Cleanup()
	inline, err := app.account(app.Account, "a site")
	if err != nil {
		t.Fatal(err)
	}
	if inline != app.defaultAccount() {
		t.Error("an inline account with the app's settings is another account")
	}
	if err := app.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := app.account(app.Account, "a site"); err == nil {
		t.Error("a cleaned-up app opened an account")
	}
}

// TestAppQueue checks that a callback route without a queue of its own
// uses the app's, and that one spool directory configured two ways, in
// the app and in a route, is refused naming both places.
func TestAppQueue(t *testing.T) {
	dir := t.TempDir()
	callback := func(extra string) string {
		return `{"handler": "atlas", "callback": {"path": "/hooks/atlas", "client_id": "atlas", "client_secret": "s",
			"signing_key": "0123456789abcdef0123456789abcdef", "deliver_to": "http://127.0.0.1:1/hooks"` + extra + `}}`
	}
	app := `{"queue": {"backend": "spool", "dir": "` + dir + `", "max_attempts": 10}}`
	for _, tc := range []struct {
		name, config, want string
	}{
		{"the app's queue", siteConfig(t, app, callback("")), ""},
		{"the same queue inline", siteConfig(t, app, callback(`, "queue": {"backend": "spool", "dir": "`+dir+`", "max_attempts": 10}`)), ""},
		{"another queue inline", siteConfig(t, app, callback(`, "spool": "`+dir+`/other"`)), ""},
		{"the app's spool, other settings", siteConfig(t, app, callback(`, "spool": "`+dir+`"`)),
			"queue " + dir + " is configured twice in this config, with a different setting (max_attempts, retry_backoff, delivery_timeout, concurrency, retention, encryption_key, max_spool_size, dead_letter_retention or purge_delay): in the global atlas options and for the callback route /hooks/atlas"},
		{"no queue anywhere", siteConfig(t, "", callback("")), "deliver_to needs spool or queue: give the callback block a spool or a queue, or the global atlas options a queue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateConfig(t, tc.config)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestAppReloadKeepsAccount checks that a reload, the new config's app
// provisioned before the old one is cleaned up, keeps the account's
// token source, and that the last config to go stops it.
func TestAppReloadKeepsAccount(t *testing.T) {
	conf := Account{Endpoint: "https://atlas.example.com", ClientID: "reload", ClientSecret: "s", TokenStorage: tokenStorageOff}
	provision := func() *App {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
		t.Cleanup(cancel)
		app := &App{Account: conf}
		if err := app.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return app
	}
	old := provision()
	cur := provision()
	if old.defaultAccount().tokens != cur.defaultAccount().tokens {
		t.Error("the reload made another token source")
	}
	src := cur.defaultAccount().tokens
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, ok := liveTokenSources.Load(src); !ok {
		t.Error("the old config's cleanup stopped the token source the new one uses")
	}
	if err := cur.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, ok := liveTokenSources.Load(src); ok {
		t.Error("the token source outlived the last config")
	}
}

// TestValidateHasNoSideEffects checks that `caddy validate` of a config
// with an account (its token in Caddy's storage) and a callback route
// on a spool creates no directory and writes nothing, and that running
// the config opens the spool.
func TestValidateHasNoSideEffects(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "var", "spool")
	storageDir := filepath.Join(dir, "storage")
	config := `{"admin": {"disabled": true}, "storage": {"module": "file_system", "root": "` + storageDir + `"},
		"apps": {
			"atlas": {"endpoint": "https://atlas.example.com", "client_id": "gw", "client_secret": "s",
				"queue": {"backend": "spool", "dir": "` + spoolDir + `"}},
			"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [{"handler": "atlas",
				"callback": {"path": "/hooks/atlas", "client_id": "atlas", "client_secret": "s",
				"signing_key": "0123456789abcdef0123456789abcdef", "deliver_to": "http://127.0.0.1:1/hooks"}}]}]}}}}}`
	if err := validateConfig(t, config); err != nil {
		t.Fatalf("validate: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("caddy validate created %s", filepath.Join(dir, e.Name()))
	}

	if err := caddy.Load([]byte(config), true); err != nil {
		t.Fatalf("running the config: %v", err)
	}
	defer func() {
		if err := caddy.Stop(); err != nil {
			t.Error(err)
		}
	}()
	if fi, err := os.Stat(spoolDir); err != nil || !fi.IsDir() {
		t.Errorf("the running config did not open its spool: %v", err)
	}
	if qs := queues.Open(); len(qs) != 1 || qs[0].Name != spoolDir {
		t.Errorf("open queues %+v, want the spool %s", qs, spoolDir)
	}
}

// TestQueueFailsAtStart checks that a queue that cannot open passes
// `caddy validate`, which connects to nothing, and fails the config's
// load when it starts, with the reason.
func TestQueueFailsAtStart(t *testing.T) {
	n := natstest.Start(t)
	config := `{"admin": {"disabled": true}, "storage": {"module": "file_system", "root": "` + t.TempDir() + `"},
		"apps": {
			"atlas": {"queue": {"backend": "jetstream", "urls": ["` + n.URL() + `"], "stream": "START_TEST"}},
			"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [{"handler": "atlas",
				"callback": {"path": "/hooks/atlas", "client_id": "atlas", "client_secret": "s",
				"signing_key": "0123456789abcdef0123456789abcdef", "deliver_to": "http://127.0.0.1:1/hooks"}}]}]}}}}}`
	if err := validateConfig(t, config); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if got := n.Connections(); got != 0 {
		t.Errorf("caddy validate opened %d connections to NATS", got)
	}
	err := caddy.Load([]byte(config), true)
	if err == nil {
		_ = caddy.Stop()
		t.Fatal("a config whose queue cannot open was loaded")
	}
	if want := "replicas 3 needs a cluster of at least 3 JetStream servers; this NATS server is not clustered: set replicas 1"; !strings.Contains(err.Error(), want) {
		t.Errorf("load: %v, want the reason %q", err, want)
	}
	if qs := queues.Open(); len(qs) != 0 {
		t.Errorf("open queues after the failed load: %+v", qs)
	}
}

// TestAppBatches checks the configurations of the ledger of batches.
func TestAppBatches(t *testing.T) {
	dir := t.TempDir()
	const (
		account       = `"endpoint": "https://atlas.example.com", "client_id": "gw", "client_secret": "s"`
		bulk          = account + `, "service": "bulk"`
		callbackRoute = `{"handler": "atlas", "extracts_path": "off", "upload_path": "off", "callback": {"path": "/hooks/atlas", "client_id": "atlas", "client_secret": "s",
			"signing_key": "0123456789abcdef0123456789abcdef", "deliver_to": "http://127.0.0.1:1/hooks"}}`
	)
	for _, tc := range []struct {
		name, config, want string
	}{
		{"batches with a spool", siteConfig(t, `{`+account+`, "queue": {"backend": "spool", "dir": "`+dir+`"}, "batches": {"poll_after": 0}}`, `{"handler": "atlas"}`), ""},
		{"batches without a queue", siteConfig(t, `{`+account+`, "batches": {}}`, `{"handler": "atlas"}`),
			"batches needs the queue of the global atlas options, a spool"},
		{"batches_path without batches", siteConfig(t, `{`+account+`}`, `{"handler": "atlas", "batches_path": "/b"}`),
			"batches_path needs a ledger of batches"},
		{"a negative poll_every", siteConfig(t, `{`+account+`, "queue": {"backend": "spool", "dir": "`+dir+`"}, "batches": {"poll_every": -1}}`, `{"handler": "atlas"}`),
			"batches: poll_every must not be negative"},
		{"the bulk service, poll-only to deliver_to", siteConfig(t, `{`+bulk+`, "queue": {"backend": "spool", "dir": "`+dir+`"}, "batches": {"poll_after": 0, "deliver_to": "http://127.0.0.1:1/results"}}`, `{"handler": "atlas"}`), ""},
		{"the bulk service without deliver_to", siteConfig(t, `{`+bulk+`, "queue": {"backend": "spool", "dir": "`+dir+`"}, "batches": {"poll_after": 0}}`, `{"handler": "atlas"}`),
			"batches: service bulk needs deliver_to in batches"},
		{"the bulk service without a queue", siteConfig(t, `{`+bulk+`, "batches": {"deliver_to": "http://127.0.0.1:1/results"}}`, `{"handler": "atlas"}`),
			"batches needs the queue of the global atlas options, a spool"},
		{"deliver_to not a URL", siteConfig(t, `{`+account+`, "queue": {"backend": "spool", "dir": "`+dir+`"}, "batches": {"deliver_to": "app:9000/results"}}`, `{"handler": "atlas"}`),
			"batches: deliver_to is not an absolute http(s) URL"},
		{"deliver_to an empty placeholder", siteConfig(t, `{`+account+`, "queue": {"backend": "spool", "dir": "`+dir+`"}, "batches": {"deliver_to": "{env.APP_TEST_UNSET_DELIVER_TO}"}}`, `{"handler": "atlas"}`),
			"deliver_to"},
		{"deliver_to the callback route's", siteConfig(t, `{`+account+`, "queue": {"backend": "spool", "dir": "`+dir+`"}, "batches": {"deliver_to": "http://127.0.0.1:1/hooks"}}`, `{"handler": "atlas"}`, callbackRoute), ""},
		{"deliver_to another than the callback route's", siteConfig(t, `{`+account+`, "queue": {"backend": "spool", "dir": "`+dir+`"}, "batches": {"deliver_to": "http://127.0.0.1:1/results"}}`, `{"handler": "atlas"}`, callbackRoute),
			"batches' deliver_to http://127.0.0.1:1/results and the deliver_to http://127.0.0.1:1/hooks of the callback route /hooks/atlas differ"},
		// Validating connects to nothing: no server listens there.
		{"batches with a jetstream queue", siteConfig(t, `{`+account+`, "queue": {"backend": "jetstream", "urls": ["nats://127.0.0.1:1"], "stream": "FLEET_A"}, "batches": {"lease_ttl": 10000000000}}`, `{"handler": "atlas"}`), ""},
		{"a negative lease_ttl", siteConfig(t, `{`+account+`, "queue": {"backend": "spool", "dir": "`+dir+`"}, "batches": {"lease_ttl": -1}}`, `{"handler": "atlas"}`),
			"batches: lease_ttl must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateConfig(t, tc.config)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "ledger.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("validating a config created the ledger: %v", err)
	}
	// The ledger's bucket beside a queue's stream: two fleets on one
	// cluster, each with its own stream, do not share it.
	for stream, want := range map[string]string{"": "ATLAS_LEDGER", "ATLAS_CALLBACKS": "ATLAS_LEDGER", "FLEET_A": "FLEET_A_LEDGER"} {
		if got := LedgerBucket(stream); got != want {
			t.Errorf("LedgerBucket(%q) = %q, want %q", stream, got, want)
		}
	}
}

// TestPollObserverSpan checks that a poll is a span, "atlas batch poll",
// whose context PollStart returns (the context of the poll's extracts
// requests and deliveries), ended by PollEnd with the outcome and
// counts, and an error status when the poll failed.
func TestPollObserverSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	o := pollObserver{logger: zap.NewNop(), m: registerBatchMetrics(nil), tp: tp}

	for _, outcome := range []reconcile.Outcome{reconcile.OutcomeOK, reconcile.OutcomeFailed} {
		ctx := o.PollStart(context.Background(), "BATCH-T")
		sc := trace.SpanContextFromContext(ctx)
		if !sc.IsValid() {
			t.Fatal("PollStart returned a context without a span")
		}
		o.PollEnd(ctx, reconcile.PollReport{BatchID: "BATCH-T", Outcome: outcome, Requests: 2, Delivered: 3, Completed: true,
			Err: map[bool]error{true: errors.New("atlas answered 502")}[outcome == reconcile.OutcomeFailed]})
		ended := rec.Ended()
		s := ended[len(ended)-1]
		if s.Name() != "atlas batch poll" || s.SpanContext().SpanID() != sc.SpanID() {
			t.Fatalf("span %q %v, want the poll's", s.Name(), s.SpanContext().SpanID())
		}
		attrs := map[string]string{}
		for _, a := range s.Attributes() {
			attrs[string(a.Key)] = a.Value.String()
		}
		if attrs["atlas.batch.id"] != "BATCH-T" || attrs["atlas.poll.outcome"] != string(outcome) ||
			attrs["atlas.poll.requests"] != "2" || attrs["atlas.poll.documents_delivered"] != "3" {
			t.Errorf("%s: attributes %v", outcome, attrs)
		}
		if failed := s.Status().Code == codes.Error; failed != (outcome == reconcile.OutcomeFailed) || strings.Contains(s.Status().Description, "502") {
			t.Errorf("%s: status %+v", outcome, s.Status())
		}
	}
}
