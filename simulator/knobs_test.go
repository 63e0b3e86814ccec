package simulator

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// serve provisions h and serves it on a local test server.
func serve(t *testing.T, h *Handler) *httptest.Server {
	t.Helper()
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.ServeHTTP(w, r, nil); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// demoToken fetches a token with the demo credentials from path (an
// authtoken endpoint) of srv.
func demoToken(t *testing.T, srv *httptest.Server, path string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+path, nil)
	req.Header.Set("Client-Id", "demo-client")
	req.Header.Set("Client-Secret", "demo-secret")
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	mustJSON(t, req, 200, &tok)
	return tok.AccessToken
}

// rawExtracts GETs path with tok and returns the answer's data as raw
// items.
func rawExtracts(t *testing.T, srv *httptest.Server, path, tok string) []map[string]json.RawMessage {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	req.Header.Set("Token", tok)
	var p struct {
		Data []map[string]json.RawMessage `json:"data"`
	}
	mustJSON(t, req, 200, &p)
	return p.Data
}

func TestUnmarshalCaddyfileKnobs(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Handler
		wantErr string
	}{
		{name: "fixed processing delay", input: "atlas_simulator {\nprocessing_delay 2s\npending_documents omitted\n}",
			want: Handler{ProcessingDelay: caddy.Duration(2 * time.Second), PendingDocuments: "omitted"}},
		{name: "processing delay range", input: "atlas_simulator {\nprocessing_delay 1s 1m\npending_documents empty\n}",
			want: Handler{ProcessingDelay: caddy.Duration(time.Second), ProcessingDelayMax: caddy.Duration(time.Minute), PendingDocuments: "empty"}},
		{name: "processing_delay zero", input: "atlas_simulator {\nprocessing_delay 0s\n}", want: Handler{}},
		{name: "processing_delay missing value", input: "atlas_simulator {\nprocessing_delay\n}", wantErr: "wrong argument count"},
		{name: "processing_delay three values", input: "atlas_simulator {\nprocessing_delay 1s 2s 3s\n}", wantErr: "wrong argument count"},
		{name: "processing_delay bad", input: "atlas_simulator {\nprocessing_delay later\n}", wantErr: "parsing processing_delay"},
		{name: "processing_delay negative", input: "atlas_simulator {\nprocessing_delay -1s\n}", wantErr: "processing_delay must not be negative"},
		{name: "processing_delay max below min", input: "atlas_simulator {\nprocessing_delay 5s 1s\n}", wantErr: "maximum 1s is below its minimum 5s"},
		{name: "processing_delay repeated", input: "atlas_simulator {\nprocessing_delay 1s\nprocessing_delay 2s\n}", wantErr: `subdirective "processing_delay" given more than once`},
		{name: "pending_documents bad", input: "atlas_simulator {\npending_documents hidden\n}", wantErr: `pending_documents must be "listed", "empty" or "omitted"`},
		{name: "pending_documents missing value", input: "atlas_simulator {\npending_documents\n}", wantErr: "wrong argument count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if diff := cmp.Diff(tt.want, h, cmpopts.IgnoreUnexported(Handler{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestProcessingDelayThroughHandler(t *testing.T) {
	h := Handler{ProcessingDelay: caddy.Duration(time.Hour), PendingDocuments: "empty"}
	srv := serve(t, &h)
	tok := demoToken(t, srv, "/v1/docstream/authtoken")
	batch := h.sim.CreateBatch("pan-1")
	items := rawExtracts(t, srv, "/v1/docstream/extracts?batch_id="+batch, tok)
	if len(items) != 1 || string(items[0]["file_data"]) != "{}" {
		t.Errorf("a document an hour from done: %v", items)
	}
	if d := h.sim.ProcessingDelayFor("x"); d != time.Hour {
		t.Errorf("ProcessingDelayFor = %v", d)
	}

	// The knobs are part of the simulator's identity.
	other := Handler{ProcessingDelay: caddy.Duration(time.Hour), ProcessingDelayMax: caddy.Duration(2 * time.Hour), PendingDocuments: "empty"}
	if err := provision(t, &other); err != nil {
		t.Fatal(err)
	}
	if other.sim == h.sim {
		t.Error("a config with another processing_delay shares the simulator")
	}
}

func TestValidateKnobs(t *testing.T) {
	for _, tt := range []struct {
		h       Handler
		wantErr string
	}{
		{Handler{ProcessingDelay: caddy.Duration(-time.Second)}, "processing_delay must not be negative"},
		{Handler{ProcessingDelayMax: caddy.Duration(-time.Second)}, "processing_delay must not be negative"},
		{Handler{PendingDocuments: "hidden"}, "pending_documents must be"},
	} {
		h := tt.h
		if err := provision(t, &h); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%+v: err = %v, want it to contain %q", tt.h, err, tt.wantErr)
		}
	}
}
