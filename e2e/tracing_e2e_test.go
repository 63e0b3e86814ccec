package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
)

// traceparentRecorder wraps the simulator and records the traceparent of
// each request by path.
type traceparentRecorder struct {
	sim *atlastest.Simulator
	mu  sync.Mutex
	got map[string][]string
}

func (tr *traceparentRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tr.mu.Lock()
	tr.got[r.URL.Path] = append(tr.got[r.URL.Path], r.Header.Get("Traceparent"))
	tr.mu.Unlock()
	tr.sim.ServeHTTP(w, r)
}

func (tr *traceparentRecorder) traceparents(path string) []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.got[path]...)
}

// TestTracingE2E checks that with Caddy's tracing directive the plugin's
// calls to Atlas (authtoken, extracts, upload) carry a W3C traceparent of
// the client's trace, each from a span of its own under the request's.
func TestTracingE2E(t *testing.T) {
	skipShort(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	t.Setenv("E2E_ATLAS_CLIENT_ID", e2eClientID)
	t.Setenv("E2E_ATLAS_CLIENT_SECRET", e2eClientSecret)
	rec := &traceparentRecorder{
		sim: atlastest.New(atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret}),
		got: map[string][]string{},
	}
	atlas := httptest.NewServer(rec)
	defer atlas.Close()
	batch := rec.sim.CreateBatch("pan-1")

	tester := newTester(t)
	tester.InitServer(caddyfile("\tgrace_period 1ns\n", fmt.Sprintf(`	tracing {
		span gateway
	}
	atlas {
		endpoint      %s
		client_id     {env.E2E_ATLAS_CLIENT_ID}
		client_secret {env.E2E_ATLAS_CLIENT_SECRET}
		token_storage off
	}
`, atlas.URL)), "caddyfile")

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const clientSpan = "00f067aa0ba902b7"
	clientParent := "00-" + traceID + "-" + clientSpan + "-01"
	resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch, "Traceparent", clientParent)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("extracts: %d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/atlas/multiupload", strings.NewReader(
		`{"product_type":"LOAN_APP","file_urls":[{"file_url":"https://files.example.com/a.pdf","document_id":"a-1"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", clientParent)
	if resp, body := do(t, tester.Client, req); resp.StatusCode/100 != 2 {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}

	seen := map[string]bool{}
	for _, path := range []string{"/v1/docstream/authtoken", "/v1/docstream/extracts", "/v1/docstream/multiupload"} {
		got := rec.traceparents(path)
		if len(got) == 0 {
			t.Errorf("%s: not called", path)
			continue
		}
		for _, tp := range got {
			parts := strings.Split(tp, "-")
			switch {
			case len(parts) != 4 || parts[1] != traceID:
				t.Errorf("%s carried traceparent %q, want one of trace %s", path, tp, traceID)
			case parts[2] == clientSpan:
				t.Errorf("%s carried the client's own span %s, not a child span", path, tp)
			case seen[parts[2]]:
				t.Errorf("%s reuses span %s of another call", path, parts[2])
			}
			if len(parts) == 4 {
				seen[parts[2]] = true
			}
		}
	}
}
