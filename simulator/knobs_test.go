package simulator

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/caddy-atlas/caddy-atlas/internal/cfparse/cfparsetest"
	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
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
		{name: "rate_limit on endpoints", input: "atlas_simulator {\nrate_limit 5 extracts multiupload\n}",
			want: Handler{RateLimits: map[string]int{"extracts": 5, "multiupload": 5}}},
		{name: "rate_limit on all", input: "atlas_simulator {\nrate_limit 2\n}", want: Handler{RateLimits: map[string]int{"": 2}}},
		{name: "rate_limit missing value", input: "atlas_simulator {\nrate_limit\n}", wantErr: "wrong argument count"},
		{name: "rate_limit zero", input: "atlas_simulator {\nrate_limit 0\n}", wantErr: "rate_limit must be a positive number"},
		{name: "rate_limit unknown endpoint", input: "atlas_simulator {\nrate_limit 1 extract\n}", wantErr: `rate_limit: unknown endpoint "extract"`},
		{name: "auto_callback everything", input: `atlas_simulator {
				auto_callback {
					auth_url      http://127.0.0.1:8080/atlas/auth
					callback_url  http://127.0.0.1:8080/atlas/callback
					client_id     atlas
					client_secret {env.CB_SECRET}
					per           document
					delay         2s
					drop          0.25
					drop_nth      1 4
					repeat        0.5
					repeat_nth    2
					seed          42
				}
			}`,
			want: Handler{AutoCallback: &AutoCallbackConfig{
				AuthURL: "http://127.0.0.1:8080/atlas/auth", CallbackURL: "http://127.0.0.1:8080/atlas/callback",
				ClientID: "atlas", ClientSecret: "{env.CB_SECRET}", Per: "document", Delay: caddy.Duration(2 * time.Second),
				Drop: 0.25, DropNth: []int{1, 4}, Repeat: 0.5, RepeatNth: []int{2}, Seed: 42,
			}}},
		{name: "auto_callback minimal", input: "atlas_simulator {\nauto_callback {\ncallback_url http://x/cb\n}\n}",
			want: Handler{AutoCallback: &AutoCallbackConfig{CallbackURL: "http://x/cb"}}},
		{name: "auto_callback without callback_url", input: "atlas_simulator {\nauto_callback {\nper batch\n}\n}", wantErr: "auto_callback needs a callback_url"},
		{name: "auto_callback argument", input: "atlas_simulator {\nauto_callback http://x {\n}\n}", wantErr: "wrong argument count"},
		{name: "auto_callback misspelt", input: "atlas_simulator {\nauto_callback {\ncallback_ur http://x\n}\n}", wantErr: `did you mean "callback_url"?`},
		{name: "auto_callback repeated subdirective", input: "atlas_simulator {\nauto_callback {\nseed 1\nseed 2\n}\n}", wantErr: `subdirective "seed" given more than once`},
		{name: "auto_callback bad per", input: "atlas_simulator {\nauto_callback {\nper page\n}\n}", wantErr: `per must be "batch" or "document"`},
		{name: "auto_callback bad drop", input: "atlas_simulator {\nauto_callback {\ndrop 2\n}\n}", wantErr: "drop must be a fraction in [0, 1]"},
		{name: "auto_callback bad repeat", input: "atlas_simulator {\nauto_callback {\nrepeat half\n}\n}", wantErr: "repeat must be a fraction in [0, 1]"},
		{name: "auto_callback bad drop_nth", input: "atlas_simulator {\nauto_callback {\ndrop_nth 1 0\n}\n}", wantErr: "drop_nth takes sequence numbers from 1"},
		{name: "auto_callback empty repeat_nth", input: "atlas_simulator {\nauto_callback {\nrepeat_nth\n}\n}", wantErr: "wrong argument count"},
		{name: "auto_callback bad delay", input: "atlas_simulator {\nauto_callback {\ndelay -1s\n}\n}", wantErr: "delay must be a non-negative duration"},
		{name: "auto_callback bad seed", input: "atlas_simulator {\nauto_callback {\nseed -3\n}\n}", wantErr: "seed must be a non-negative integer"},
		{name: "auto_callback two urls", input: "atlas_simulator {\nauto_callback {\ncallback_url a b\n}\n}", wantErr: "wrong argument count"},
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
		{Handler{AutoCallback: &AutoCallbackConfig{}}, "auto_callback: callback_url is required"},
		{Handler{RateLimits: map[string]int{"extract": 1}}, `rate_limits: unknown endpoint "extract"`},
		{Handler{RateLimits: map[string]int{"extracts": 0}}, `rate_limits: "extracts" must be a positive number`},
		{Handler{AutoCallback: &AutoCallbackConfig{CallbackURL: "/cb"}}, "auto_callback: callback_url must be an absolute http(s) URL"},
		{Handler{AutoCallback: &AutoCallbackConfig{CallbackURL: "http://x/", Per: "page"}}, "auto_callback: per must be"},
		{Handler{AutoCallback: &AutoCallbackConfig{CallbackURL: "http://x/", Drop: 3}}, "auto_callback: drop and repeat must be fractions"},
	} {
		h := tt.h
		if err := provision(t, &h); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%+v: err = %v, want it to contain %q", tt.h, err, tt.wantErr)
		}
	}
}

func TestAutoCallbackSubdirectiveList(t *testing.T) {
	cfparsetest.Check(t, "caddyfile.go", "parseAutoCallback", autoCallbackSubdirectives)
}

func TestAutoCallbackThroughHandler(t *testing.T) {
	var mu sync.Mutex
	var tokens []string
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/auth" {
			if r.Header.Get("Client-Secret") != "from-env" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			_, _ = io.WriteString(w, `{"access_token":"t-1"}`)
			return
		}
		mu.Lock()
		tokens = append(tokens, r.Header.Get("Token"))
		mu.Unlock()
	}))
	t.Cleanup(sink.Close)
	t.Setenv("ATLAS_SIM_TEST_CB_SECRET", "from-env")

	h := Handler{AutoCallback: &AutoCallbackConfig{
		AuthURL: sink.URL + "/auth", CallbackURL: sink.URL + "/cb", ClientID: "atlas",
		ClientSecret: "{env.ATLAS_SIM_TEST_CB_SECRET}", Per: "document", RepeatNth: []int{1},
	}}
	serve(t, &h)
	h.sim.CreateBatch("pan-1")
	testutil.WaitFor(t, 5*time.Second, "the repeated callback", func() bool {
		return h.sim.CallbackCounts().Delivered == 2
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(tokens, []string{"t-1", "t-1"}) {
		t.Errorf("callbacks carried tokens %v", tokens)
	}

	// The setting is part of the simulator's identity.
	other := Handler{AutoCallback: &AutoCallbackConfig{CallbackURL: sink.URL + "/cb"}}
	if err := provision(t, &other); err != nil {
		t.Fatal(err)
	}
	if other.sim == h.sim {
		t.Error("a config with another auto_callback shares the simulator")
	}
	if b, _ := json.Marshal(other); string(b) != `{"auto_callback":{"callback_url":"`+sink.URL+`/cb"}}` {
		t.Errorf("JSON: %s", b)
	}
}

func TestRateLimitThroughHandler(t *testing.T) {
	h := Handler{RateLimits: map[string]int{"extracts": 1}}
	srv := serve(t, &h)
	tok := demoToken(t, srv, "/v1/docstream/authtoken")
	batch := h.sim.CreateBatch("pan-1")
	var got []string
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/docstream/extracts?batch_id="+batch, nil)
		req.Header.Set("Token", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got = append(got, resp.Status+" "+resp.Header.Get("Retry-After"))
	}
	if want := []string{"200 OK ", "429 Too Many Requests 1"}; !slices.Equal(got, want) {
		t.Errorf("answers %q, want %q", got, want)
	}
	if n := h.sim.PeakRate("extracts", "", time.Second); n != 2 {
		t.Errorf("PeakRate = %d, want 2", n)
	}

	// The limits are part of the simulator's identity.
	other := Handler{RateLimits: map[string]int{"extracts": 2}}
	if err := provision(t, &other); err != nil {
		t.Fatal(err)
	}
	if other.sim == h.sim {
		t.Error("a config with another rate_limit shares the simulator")
	}
}

func TestBulkThroughHandler(t *testing.T) {
	h := Handler{}
	srv := serve(t, &h)
	tok := demoToken(t, srv, "/v1/bulk/authtoken")
	batch := h.sim.CreateBulkBatch("pan-1")
	if items := rawExtracts(t, srv, "/v1/bulk/extracts?batch_id="+batch, tok); len(items) != 1 {
		t.Errorf("bulk extracts: %v", items)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/docstream/extracts?batch_id="+batch, nil)
	req.Header.Set("Token", tok)
	var body map[string]any
	mustJSON(t, req, http.StatusUnauthorized, &body)
}
