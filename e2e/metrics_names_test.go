package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
)

// The files whose PromQL expressions TestMonitoringUsesExportedMetrics
// checks, from this package's directory.
const (
	dashboardFile = "../deploy/grafana/caddy-atlas.json"
	rulesFile     = "../deploy/prometheus/caddy-atlas.rules.yml"
)

// TestMonitoringUsesExportedMetrics runs a Caddy with an outbound route,
// a durable callback route and the ledger of batches against the
// simulator, drives every route
// so that each metric family has a series, scrapes the admin endpoint's
// /metrics and checks that every caddy_atlas_* metric the Grafana
// dashboard and the alerting rules use exists, with the labels they
// select on.
func TestMonitoringUsesExportedMetrics(t *testing.T) {
	skipShort(t)
	const clientID, clientSecret = "metrics-client", "metrics-secret"
	const cbID, cbSecret = "atlas-metrics", "atlas-metrics-callback-secret"
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: clientID, ClientSecret: clientSecret})
	var delivered atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		delivered.Add(1)
	}))
	t.Cleanup(app.Close)
	t.Setenv("METRICS_E2E_ENDPOINT", sim.URL)
	t.Setenv("METRICS_E2E_CLIENT_ID", clientID)
	t.Setenv("METRICS_E2E_CLIENT_SECRET", clientSecret)
	t.Setenv("METRICS_E2E_CB_SECRET", cbSecret)
	t.Setenv("METRICS_E2E_SIGNING_KEY", "metrics-e2e-signing-key-of-at-least-32-bytes")

	tester := newTester(t)
	// The account, the spool and the ledger of batches in the global
	// options, so that the batch metrics are exported too.
	tester.InitServer(caddyfile(fmt.Sprintf(`	grace_period 1ns
	atlas {
		endpoint {env.METRICS_E2E_ENDPOINT}
		client_id {env.METRICS_E2E_CLIENT_ID}
		client_secret {env.METRICS_E2E_CLIENT_SECRET}
		queue spool %s
		batches
	}
`, filepath.Join(t.TempDir(), "spool")), fmt.Sprintf(`	route {
		atlas {
			callback /hooks/atlas {
				client_id %s
				client_secret {env.METRICS_E2E_CB_SECRET}
				signing_key {env.METRICS_E2E_SIGNING_KEY}
				deliver_to %s
			}
			extracts_path /atlas/extracts
		}
		respond 404
	}
`, cbID, app.URL+"/hooks/atlas")), "caddyfile")

	// Outbound: a token fetch and an extracts page, then a 401 replay.
	batch := sim.CreateBatch("metrics-pan", "metrics-gst")
	for range 2 {
		resp, err := http.Get(gatewayURL + "/atlas/extracts?batch_id=" + batch)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("extracts: %d", resp.StatusCode)
		}
		sim.RevokeAll()
	}
	// Callbacks: a refused authentication, a callback without a token,
	// and one delivered through the spool.
	req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/hooks/atlas/auth", nil)
	req.Header.Set("Client-Id", cbID)
	req.Header.Set("Client-Secret", "wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("auth with a wrong secret: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	if resp, err := http.Post(gatewayURL+"/hooks/atlas", "application/json", strings.NewReader(`{"data":[]}`)); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("callback without a token: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	d, err := sim.DeliverCallback(context.Background(), atlastest.CallbackTarget{
		AuthURL: gatewayURL + "/hooks/atlas/auth", CallbackURL: gatewayURL + "/hooks/atlas",
		ClientID: cbID, ClientSecret: cbSecret,
	}, batch)
	if err != nil || d.CallbackStatus != http.StatusAccepted {
		t.Fatalf("callback: %v %+v", err, d)
	}
	for deadline := time.Now().Add(5 * time.Second); delivered.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the callback was not delivered")
		}
	}

	exported := scrapeMetrics(t, adminURL+"/metrics")
	// The spool's limit is max_spool_size, 4 GiB by default.
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^caddy_atlas_spool_max_bytes\{spool="[^"]+"\} 4\.294967296e\+09$`).Match(text) {
		t.Errorf("no caddy_atlas_spool_max_bytes of 4 GiB in /metrics:\n%s", regexp.MustCompile(`(?m)^caddy_atlas_spool.*$`).FindAll(text, -1))
	}
	refs := monitoringReferences(t)
	if len(refs) < 10 {
		t.Fatalf("only %d metric references found in %s and %s", len(refs), dashboardFile, rulesFile)
	}
	for _, ref := range refs {
		labels, ok := exported[ref.name]
		if !ok {
			t.Errorf("%s uses %s, which the plugin does not export", ref.file, ref.name)
			continue
		}
		for _, l := range ref.labels {
			if l != "job" && l != "instance" && !slices.Contains(labels, l) {
				t.Errorf("%s selects %s on label %q; it has %v", ref.file, ref.name, l, labels)
			}
		}
	}
}

// scrapeMetrics returns the sample names of a Prometheus text exposition
// (histograms as name_bucket, name_sum, name_count) with their label
// names.
func scrapeMetrics(t *testing.T, url string) map[string][]string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := make(map[string][]string)
	labelName := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		for _, m := range labelName.FindAllStringSubmatch(rest, -1) {
			if !slices.Contains(out[name], m[1]) {
				out[name] = append(out[name], m[1])
			}
		}
		if _, ok := out[name]; !ok {
			out[name] = nil
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// metricRef is a caddy_atlas_* metric used in a monitoring file, with the
// labels a selector names.
type metricRef struct {
	file, name string
	labels     []string
}

// monitoringReferences returns the caddy_atlas_* metrics used by the
// dashboard's and the rules' expressions.
func monitoringReferences(t *testing.T) []metricRef {
	t.Helper()
	var exprs []struct{ file, expr string }

	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					exprs = append(exprs, struct{ file, expr string }{dashboardFile, s})
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)

	raw, err = os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Expr string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, struct{ file, expr string }{rulesFile, r.Expr})
		}
	}

	metric := regexp.MustCompile(`(caddy_atlas_[a-z0-9_]*[a-z0-9])(\{[^}]*\})?`)
	matcher := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	var refs []metricRef
	for _, e := range exprs {
		for _, m := range metric.FindAllStringSubmatch(e.expr, -1) {
			ref := metricRef{file: e.file, name: m[1]}
			for _, l := range matcher.FindAllStringSubmatch(m[2], -1) {
				ref.labels = append(ref.labels, l[1])
			}
			refs = append(refs, ref)
		}
	}
	return refs
}
