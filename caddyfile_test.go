package caddyatlas

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/caddy-atlas/caddy-atlas/internal/cfparse/cfparsetest"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		input   string
		want    Handler
		wantErr string
	}{
		{
			name: "every outbound setting",
			input: `atlas {
				endpoint      https://docstream.dev.kreditmind.com
				client_id     {env.ATLAS_CLIENT_ID}
				client_secret {env.ATLAS_CLIENT_SECRET}
				extracts_path /docs/extracts
				upload_path   off
				token_header  X-Atlas-Token
				timeout       45s
				max_upload_body 4MiB
			}`,
			want: Handler{
				Endpoint:      "https://docstream.dev.kreditmind.com",
				ClientID:      "{env.ATLAS_CLIENT_ID}",
				ClientSecret:  "{env.ATLAS_CLIENT_SECRET}",
				ExtractsPath:  "/docs/extracts",
				UploadPath:    "off",
				TokenHeader:   "X-Atlas-Token",
				Timeout:       caddy.Duration(45 * time.Second),
				MaxUploadBody: 4 << 20,
			},
		},
		{
			name: "mask, repeatable",
			input: `atlas {
				mask aadhaar_number
				mask pan_number last4
				mask name redact
			}`,
			want: Handler{Mask: []MaskRule{{Field: "aadhaar_number"}, {Field: "pan_number", Style: "last4"}, {Field: "name", Style: "redact"}}},
		},
		{name: "mask without a field", input: "atlas {\n mask\n}", wantErr: "wrong argument count or unexpected line ending after 'mask', at Testfile:2"},
		{name: "mask with two styles", input: "atlas {\n mask name redact last4\n}", wantErr: "wrong argument count"},
		{name: "mask with an unknown style", input: "atlas {\n mask name half\n}", wantErr: `mask name: unknown style "half" (want last4 or redact), at Testfile:2`},
		{name: "mask of a field twice", input: "atlas {\n mask name\n mask name redact\n}", wantErr: `mask: field "name" is given more than once, at Testfile:3`},
		{name: "empty block", input: `atlas {
			}`, want: Handler{}},
		{name: "no block", input: `atlas`, want: Handler{}},
		{name: "inline argument", input: `atlas https://x`, wantErr: "wrong argument count or unexpected line ending after 'https://x', at Testfile:1"},
		{name: "unknown subdirective", input: "atlas {\n endpoint https://x\n client_key abc\n}", wantErr: `unrecognized subdirective "client_key", at Testfile:3`},
		{name: "misspelt subdirective", input: "atlas {\n endpoint https://x\n extract_path /x\n}", wantErr: `unrecognized subdirective "extract_path"; did you mean "extracts_path"?, at Testfile:3`},
		{name: "repeated subdirective", input: "atlas {\n endpoint https://x\n endpoint https://y\n}", wantErr: `subdirective "endpoint" given more than once, at Testfile:3`},
		{name: "missing argument", input: "atlas {\n client_id\n}", wantErr: "wrong argument count or unexpected line ending after 'client_id', at Testfile:2"},
		{name: "extra argument", input: "atlas {\n client_id a b\n}", wantErr: "wrong argument count or unexpected line ending after 'b', at Testfile:2"},
		{name: "bad timeout", input: "atlas {\n timeout soon\n}", wantErr: `timeout: time: invalid duration "soon", at Testfile:2`},
		{name: "zero timeout", input: "atlas {\n timeout 0s\n}", wantErr: "timeout must be positive"},
		{name: "bad size", input: "atlas {\n max_upload_body lots\n}", wantErr: `max_upload_body: invalid size "lots"`},
		{name: "zero size", input: "atlas {\n max_upload_body 0\n}", wantErr: "max_upload_body must be between"},
		{name: "empty value", input: "atlas {\n endpoint \"\"\n}", wantErr: "endpoint must not be empty"},
		{name: "token_storage off", input: "atlas {\n token_storage off\n}", want: Handler{TokenStorage: "off"}},
		{name: "token_storage other", input: "atlas {\n token_storage redis\n}", wantErr: `token_storage must be "off"`},
		{name: "token_storage bare", input: "atlas {\n token_storage\n}", wantErr: "wrong argument count"},
		{name: "service bulk", input: "atlas {\n service bulk\n}", want: Handler{Service: "bulk"}},
		{name: "service docstream", input: "atlas {\n service docstream\n}", want: Handler{Service: "docstream"}},
		{name: "service other", input: "atlas {\n service stream\n}", wantErr: `service must be "docstream" (the default) or "bulk", got "stream"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, h, cmpopts.IgnoreUnexported(Handler{})); diff != "" {
				t.Errorf("handler (-want +got):\n%s", diff)
			}
		})
	}
}

var updateGolden = flag.Bool("update", false, "rewrite the expected JSON of testdata/adapt/*.caddyfiletest")

// TestCaddyfileAdapt checks testdata/adapt/*.caddyfiletest: a Caddyfile,
// a line of dashes, then the JSON it adapts to, or for a file whose name
// starts with "error_", the adapt error it must fail with.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			input, want, ok := strings.Cut(string(data), "----------")
			if !ok {
				t.Fatal("no ---------- separator")
			}
			want = strings.TrimSpace(want)
			if strings.HasPrefix(filepath.Base(f), "error_") {
				_, err := adaptCaddyfile(input)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("adapt error = %v, want it to contain %q", err, want)
				}
				return
			}
			if *updateGolden {
				out, err := adaptCaddyfile(input)
				if err != nil {
					t.Fatal(err)
				}
				var pretty bytes.Buffer
				if err := json.Indent(&pretty, out, "", "\t"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f, []byte(input+"----------\n"+pretty.String()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !caddytest.CompareAdapt(t, f, input, "caddyfile", want) {
				t.Error("the adapted JSON differs from the expected one")
			}
		})
	}
}

// TestAdaptedConfigKeepsSecretsOut checks that {env.*} secrets stay
// placeholders in the adapted JSON.
func TestAdaptedConfigKeepsSecretsOut(t *testing.T) {
	t.Setenv("ATLAS_CLIENT_SECRET", "adapt-secret-should-not-appear")
	out, err := adaptCaddyfile(`:8080 {
		atlas {
			endpoint https://atlas.example.com
			client_id demo
			client_secret {env.ATLAS_CLIENT_SECRET}
		}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "adapt-secret-should-not-appear") {
		t.Errorf("the adapted config holds the secret: %s", out)
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"client_secret":"{env.ATLAS_CLIENT_SECRET}"`) {
		t.Errorf("the placeholder is missing from %s", out)
	}
}

func adaptCaddyfile(input string) ([]byte, error) {
	adapter := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}
	out, _, err := adapter.Adapt([]byte(input), nil)
	return out, err
}

// TestSubdirectiveLists checks that the lists that suggest the nearest
// name of a misspelt subdirective are the names the parsers accept.
func TestSubdirectiveLists(t *testing.T) {
	cfparsetest.Check(t, "caddyfile.go", "App.UnmarshalCaddyfile", appSubdirectives)
	cfparsetest.Check(t, "caddyfile.go", "Handler.UnmarshalCaddyfile", handlerSubdirectives)
}
