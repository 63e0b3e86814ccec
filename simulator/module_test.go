package simulator

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func newContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

// provision provisions and validates h as Caddy would, cleaning up after
// the test.
func provision(t *testing.T, h *Handler) error {
	t.Helper()
	err := h.Provision(newContext(t))
	if err == nil {
		err = h.Validate()
	}
	t.Cleanup(func() {
		if err := h.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return err
}

func TestJSONRoundTrip(t *testing.T) {
	in := Handler{
		ClientID:         "id",
		ClientSecret:     "{env.SECRET}",
		TokenLifetime:    caddy.Duration(45 * time.Minute),
		UploadResponse:   "object",
		DocumentTypeForm: "object",
		OneLiveToken:     true,
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"client_id":"id","client_secret":"{env.SECRET}","token_lifetime":2700000000000,"upload_response":"object","document_type_form":"object","one_live_token":true}`
	if string(b) != want {
		t.Errorf("marshal:\n got %s\nwant %s", b, want)
	}
	var out Handler
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out, cmpopts.IgnoreUnexported(Handler{})); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}

	// omitempty: the zero config is {}.
	if b, _ := json.Marshal(Handler{}); string(b) != "{}" {
		t.Errorf("zero handler marshals to %s", b)
	}
	// Caddy's duration strings are accepted too.
	if err := json.Unmarshal([]byte(`{"token_lifetime":"2h"}`), &out); err != nil || time.Duration(out.TokenLifetime) != 2*time.Hour {
		t.Errorf(`"2h": %v, %v`, out.TokenLifetime, err)
	}
}

func TestModuleInfo(t *testing.T) {
	info := Handler{}.CaddyModule()
	if info.ID != "http.handlers.atlas_simulator" {
		t.Errorf("ID = %s", info.ID)
	}
	if _, ok := info.New().(*Handler); !ok {
		t.Errorf("New() returns %T", info.New())
	}
}

func TestProvisionValidate(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ATLAS_SIM_TEST_ID", "from-env")

	tests := []struct {
		name         string
		h            Handler
		wantID       string
		wantSecret   string
		wantErr      string
		secretInErrs string
	}{
		{name: "defaults", h: Handler{}, wantID: "demo-client", wantSecret: "demo-secret"},
		{name: "placeholders", h: Handler{ClientID: "{env.ATLAS_SIM_TEST_ID}", ClientSecret: "{file." + secretFile + "}"}, wantID: "from-env", wantSecret: "from-file"},
		{name: "unset env is not silently the demo secret", h: Handler{ClientID: "x", ClientSecret: "{env.ATLAS_SIM_TEST_UNSET}"}, wantErr: "client_secret {env.ATLAS_SIM_TEST_UNSET} is empty: ATLAS_SIM_TEST_UNSET is not set"},
		{name: "only secret", h: Handler{ClientSecret: "s3cret-value"}, wantErr: "client_id is empty", secretInErrs: "s3cret-value"},
		{name: "negative lifetime", h: Handler{TokenLifetime: caddy.Duration(-time.Second)}, wantErr: "token_lifetime must not be negative"},
		{name: "bad upload_response", h: Handler{UploadResponse: "list"}, wantErr: "upload_response must be"},
		{name: "bad document_type_form", h: Handler{DocumentTypeForm: "map"}, wantErr: "document_type_form must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.h
			err := provision(t, &h)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if tt.secretInErrs != "" && strings.Contains(err.Error(), tt.secretInErrs) {
					t.Errorf("error echoes the secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if h.clientID != tt.wantID || h.clientSecret != tt.wantSecret {
				t.Errorf("credentials = %q/%q, want %q/%q", h.clientID, h.clientSecret, tt.wantID, tt.wantSecret)
			}
			// The credentials are the ones the simulator accepts.
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/v1/docstream/authtoken", nil)
			req.Header.Set("Client-Id", tt.wantID)
			req.Header.Set("Client-Secret", tt.wantSecret)
			if err := h.ServeHTTP(rec, req, nil); err != nil || rec.Code != 200 {
				t.Errorf("authtoken: %d %s %v", rec.Code, rec.Body, err)
			}
		})
	}
}

func TestCleanupWithoutProvision(t *testing.T) {
	var h Handler
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

func TestServeUnprovisioned(t *testing.T) {
	var h Handler
	err := h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), nil)
	if err == nil {
		t.Fatal("want an error")
	}
}

// TestSharedAcrossReloads checks that a handler provisioned with the same
// config (as on a reload) reuses the simulator, and a changed config does
// not.
func TestSharedAcrossReloads(t *testing.T) {
	cfg := Handler{ClientID: "reload-id", ClientSecret: "reload-secret", TokenLifetime: caddy.Duration(time.Hour)}

	oldH := cfg
	if err := provision(t, &oldH); err != nil {
		t.Fatal(err)
	}
	batch := oldH.sim.CreateBatch("pan-1")

	// Reload: the new config is provisioned before the old one is cleaned up.
	newH := cfg
	newH.TokenLifetime = 0 // the default, so the same effective config
	if err := provision(t, &newH); err != nil {
		t.Fatal(err)
	}
	oldSim := oldH.sim
	if err := oldH.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if newH.sim != oldSim {
		t.Fatal("same config got a new simulator")
	}
	if _, err := newH.sim.BatchPayload(batch); err != nil {
		t.Fatalf("batch lost across reload: %v", err)
	}

	changed := cfg
	changed.UploadResponse = "object"
	if err := provision(t, &changed); err != nil {
		t.Fatal(err)
	}
	if changed.sim == newH.sim {
		t.Fatal("changed config shares the simulator")
	}
	oneLive := cfg
	oneLive.OneLiveToken = true
	if err := provision(t, &oneLive); err != nil {
		t.Fatal(err)
	}
	if oneLive.sim == newH.sim {
		t.Fatal("a config with one_live_token shares the simulator of one without")
	}

	// Once every user is gone, the next provision starts afresh.
	if err := newH.Cleanup(); err != nil {
		t.Fatal(err)
	}
	fresh := cfg
	if err := provision(t, &fresh); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.sim.BatchPayload(batch); err == nil {
		t.Fatal("simulator survived with no users")
	}
}

func TestServeHTTPThroughHandler(t *testing.T) {
	h := Handler{DocumentTypeForm: "object", UploadResponse: "object"}
	if err := provision(t, &h); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.ServeHTTP(w, r, nil); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}))
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/docstream/authtoken", nil)
	req.Header.Set("Client-Id", "demo-client")
	req.Header.Set("Client-Secret", "demo-secret")
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	mustJSON(t, req, 200, &tok)
	if tok.ExpiresIn != 3600 {
		t.Errorf("expires_in = %d", tok.ExpiresIn)
	}

	req, _ = http.NewRequest(http.MethodPost, srv.URL+"/v1/docstream/multiupload",
		strings.NewReader(`{"product_type":"LOAN_APP","file_urls":[{"file_url":"https://x/1","document_id":"d-pan"}]}`))
	req.Header.Set("Token", tok.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	var up struct {
		BatchID string `json:"batch_id"`
	}
	mustJSON(t, req, 201, &up)

	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/v1/docstream/extracts?batch_id="+up.BatchID, nil)
	req.Header.Set("Token", tok.AccessToken)
	var page struct {
		Data []struct {
			FileData struct {
				DocumentType struct {
					Value string `json:"value"`
				} `json:"document_type"`
			} `json:"file_data"`
		} `json:"data"`
	}
	mustJSON(t, req, 200, &page)
	if len(page.Data) != 1 || page.Data[0].FileData.DocumentType.Value != "PAN" {
		t.Errorf("extracts = %+v", page)
	}

	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/_sim/counters", nil)
	var counters map[string]int
	mustJSON(t, req, 200, &counters)
	if diff := cmp.Diff(map[string]int{"authtoken": 1, "multiupload": 1, "extracts": 1}, counters); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
}

func mustJSON(t *testing.T, req *http.Request, status int, v any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d", req.Method, req.URL.Path, resp.StatusCode, status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestOneLiveTokenThroughHandler(t *testing.T) {
	h := Handler{OneLiveToken: true}
	if err := provision(t, &h); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.ServeHTTP(w, r, nil); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}))
	defer srv.Close()
	tokens := make([]string, 2)
	for i := range tokens {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/docstream/authtoken", nil)
		req.Header.Set("Client-Id", "demo-client")
		req.Header.Set("Client-Secret", "demo-secret")
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		mustJSON(t, req, 200, &tok)
		tokens[i] = tok.AccessToken
	}
	batch := h.sim.CreateBatch("pan-1")
	for i, want := range []int{http.StatusUnauthorized, http.StatusOK} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/docstream/extracts?batch_id="+batch, nil)
		req.Header.Set("Token", tokens[i])
		var body map[string]any
		mustJSON(t, req, want, &body)
	}
}
