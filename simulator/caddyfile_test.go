package simulator

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/caddy-atlas/caddy-atlas/internal/cfparse/cfparsetest"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Handler
		wantErr string
	}{
		{name: "bare", input: `atlas_simulator`, want: Handler{}},
		{name: "empty block", input: "atlas_simulator {\n}", want: Handler{}},
		{
			name: "everything",
			input: `atlas_simulator {
				client_id     demo-client
				client_secret demo-secret
				token_lifetime 1h
				upload_response object
				document_type_form object
				one_live_token
				narrate
			}`,
			want: Handler{
				ClientID:         "demo-client",
				ClientSecret:     "demo-secret",
				TokenLifetime:    caddy.Duration(time.Hour),
				UploadResponse:   "object",
				DocumentTypeForm: "object",
				OneLiveToken:     true,
				Narrate:          true,
			},
		},
		{
			name: "placeholders kept for provision",
			input: `atlas_simulator {
				client_id {env.ATLAS_SIM_ID}
				client_secret {file./run/secrets/atlas}
				token_lifetime 90s
				upload_response array
				document_type_form string
			}`,
			want: Handler{
				ClientID:         "{env.ATLAS_SIM_ID}",
				ClientSecret:     "{file./run/secrets/atlas}",
				TokenLifetime:    caddy.Duration(90 * time.Second),
				UploadResponse:   "array",
				DocumentTypeForm: "string",
			},
		},
		{name: "day durations", input: "atlas_simulator {\ntoken_lifetime 1d\n}", want: Handler{TokenLifetime: caddy.Duration(24 * time.Hour)}},
		{name: "argument on directive", input: `atlas_simulator foo`, wantErr: "wrong argument count"},
		{name: "argument before block", input: "atlas_simulator foo {\n}", wantErr: "wrong argument count"},
		{name: "unknown subdirective", input: "atlas_simulator {\nbase_url http://x\n}", wantErr: `unrecognized subdirective "base_url"`},
		{name: "misspelt subdirective", input: "atlas_simulator {\nclient_secert x\n}", wantErr: `unrecognized subdirective "client_secert"; did you mean "client_secret"?, at Testfile:2`},
		{name: "repeated subdirective", input: "atlas_simulator {\nclient_id a\nclient_id b\n}", wantErr: `subdirective "client_id" given more than once`},
		{name: "client_id missing value", input: "atlas_simulator {\nclient_id\n}", wantErr: "wrong argument count"},
		{name: "client_secret two values", input: "atlas_simulator {\nclient_secret a b\n}", wantErr: "wrong argument count"},
		{name: "token_lifetime missing value", input: "atlas_simulator {\ntoken_lifetime\n}", wantErr: "wrong argument count"},
		{name: "token_lifetime bad", input: "atlas_simulator {\ntoken_lifetime soon\n}", wantErr: "parsing token_lifetime"},
		{name: "token_lifetime zero", input: "atlas_simulator {\ntoken_lifetime 0s\n}", wantErr: "token_lifetime must be positive"},
		{name: "token_lifetime negative", input: "atlas_simulator {\ntoken_lifetime -5m\n}", wantErr: "token_lifetime must be positive"},
		{name: "upload_response bad", input: "atlas_simulator {\nupload_response list\n}", wantErr: `upload_response must be "array" or "object"`},
		{name: "document_type_form bad", input: "atlas_simulator {\ndocument_type_form map\n}", wantErr: `document_type_form must be "string" or "object"`},
		{name: "one_live_token with a value", input: "atlas_simulator {\none_live_token yes\n}", wantErr: "wrong argument count"},
		{name: "narrate with a value", input: "atlas_simulator {\nnarrate on\n}", wantErr: "wrong argument count"},
		{name: "narrate repeated", input: "atlas_simulator {\nnarrate\nnarrate\n}", wantErr: `subdirective "narrate" given more than once`},
		{name: "one_live_token repeated", input: "atlas_simulator {\none_live_token\none_live_token\n}", wantErr: `subdirective "one_live_token" given more than once`},
		{name: "upload_response missing value", input: "atlas_simulator {\nupload_response\n}", wantErr: "wrong argument count"},
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

func TestErrorsNeverEchoSecret(t *testing.T) {
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("atlas_simulator {\nclient_secret hunter2 extra\n}"))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v", err)
	}
}

// TestAdapt checks the directive is registered, ordered before
// reverse_proxy, and adapts to the expected handler JSON.
func TestAdapt(t *testing.T) {
	input := ":8080 {\n" +
		"\treverse_proxy localhost:9999\n" +
		"\tatlas_simulator {\n" +
		"\t\tclient_id demo-client\n" +
		"\t\tclient_secret {env.ATLAS_SIM_SECRET}\n" +
		"\t\ttoken_lifetime 1h\n" +
		"\t\tupload_response object\n" +
		"\t\tone_live_token\n" +
		"\t}\n" +
		"}\n"
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	out, warnings, err := adapter.Adapt([]byte(input), nil)
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	var cfg any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	handlers := collectHandlers(cfg, nil)
	if len(handlers) != 2 {
		t.Fatalf("got %d handlers, want 2:\n%s", len(handlers), out)
	}
	want := map[string]any{
		"handler":         "atlas_simulator",
		"client_id":       "demo-client",
		"client_secret":   "{env.ATLAS_SIM_SECRET}",
		"token_lifetime":  float64(time.Hour),
		"upload_response": "object",
		"one_live_token":  true,
	}
	if diff := cmp.Diff(want, handlers[0]); diff != "" {
		t.Errorf("first handler (-want +got):\n%s\nconfig: %s", diff, out)
	}
	if handlers[1]["handler"] != "reverse_proxy" {
		t.Errorf("second handler = %v, want reverse_proxy", handlers[1]["handler"])
	}
}

// collectHandlers returns, in document order, every JSON object with a
// "handler" key.
func collectHandlers(v any, acc []map[string]any) []map[string]any {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["handler"]; ok {
			acc = append(acc, v)
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			acc = collectHandlers(v[k], acc)
		}
	case []any:
		for _, e := range v {
			acc = collectHandlers(e, acc)
		}
	}
	return acc
}

// TestSubdirectiveList checks that the list that suggests the nearest
// name of a misspelt subdirective is the names the parser accepts.
func TestSubdirectiveList(t *testing.T) {
	cfparsetest.Check(t, "caddyfile.go", "Handler.UnmarshalCaddyfile", subdirectives)
}
