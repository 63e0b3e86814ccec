package callback_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	_ "github.com/caddy-atlas/caddy-atlas" // registers the atlas directive
	"github.com/caddy-atlas/caddy-atlas/callback"
)

func TestCallbackUnmarshalCaddyfile(t *testing.T) {
	runCallbackParserCases(t, []callbackParserCase{
		{
			name:  "path only",
			input: `callback /hooks/atlas`,
			want:  callback.Callback{Path: "/hooks/atlas"},
		},
		{
			name: "every setting",
			input: `callback /hooks/atlas {
				auth_path     /hooks/atlas/login
				client_id     {env.ATLAS_CALLBACK_CLIENT_ID}
				client_secret {env.ATLAS_CALLBACK_CLIENT_SECRET}
				signing_key   {file./etc/caddy/callback.pem}
				issuer        my-gateway
				audience      my-app
				token_ttl     5m
				leeway        10s
				verify_key    {file./etc/caddy/idp1.pub.pem}
				verify_key    {file./etc/caddy/idp2.pub.pem}
				jwks_url      https://idp.example.com/.well-known/jwks.json
				max_body      4MiB
			}`,
			want: callback.Callback{
				Path:         "/hooks/atlas",
				AuthPath:     "/hooks/atlas/login",
				ClientID:     "{env.ATLAS_CALLBACK_CLIENT_ID}",
				ClientSecret: "{env.ATLAS_CALLBACK_CLIENT_SECRET}",
				SigningKey:   "{file./etc/caddy/callback.pem}",
				Issuer:       "my-gateway",
				Audience:     "my-app",
				TokenTTL:     caddy.Duration(5 * time.Minute),
				Leeway:       caddy.Duration(10 * time.Second),
				VerifyKeys:   []string{"{file./etc/caddy/idp1.pub.pem}", "{file./etc/caddy/idp2.pub.pem}"},
				JWKSURL:      "https://idp.example.com/.well-known/jwks.json",
				MaxBody:      4 << 20,
			},
		},
		{
			name:  "sizes and day durations",
			input: "callback /cb {\n max_body 500KB\n token_ttl 1d\n}",
			want:  callback.Callback{Path: "/cb", MaxBody: 500000, TokenTTL: caddy.Duration(24 * time.Hour)},
		},
		{
			name: "rotation and signed deliveries",
			input: `callback /hooks/atlas {
				client_secret        {env.NEW}
				client_secret        {env.OLD}
				client_secret        {env.OLDER}
				signing_key          {file./etc/caddy/new.pem}
				previous_signing_key {file./etc/caddy/old.pem}
				previous_signing_key {env.OLDER_KEY}
				sign_deliveries      {file./etc/caddy/whsec}
				sign_deliveries      {env.WHSEC_OLD}
			}`,
			want: callback.Callback{
				Path:                "/hooks/atlas",
				ClientSecret:        "{env.NEW}",
				ClientSecrets:       []string{"{env.OLD}", "{env.OLDER}"},
				SigningKey:          "{file./etc/caddy/new.pem}",
				PreviousSigningKeys: []string{"{file./etc/caddy/old.pem}", "{env.OLDER_KEY}"},
				SignDeliveries:      []string{"{file./etc/caddy/whsec}", "{env.WHSEC_OLD}"},
			},
		},
		{name: "empty client_secret", input: "callback /cb {\n client_secret \"\"\n}", wantErr: "client_secret must not be empty"},
		{name: "empty second client_secret", input: "callback /cb {\n client_secret a\n client_secret \"\"\n}", wantErr: "client_secret must not be empty"},
		{name: "sign_deliveries without a value", input: "callback /cb {\n sign_deliveries\n}", wantErr: "wrong argument count"},
		{name: "previous_signing_key with two values", input: "callback /cb {\n previous_signing_key a b\n}", wantErr: "wrong argument count"},
		{name: "mask in callback", input: "callback /cb {\n mask name\n}", wantErr: `unrecognized subdirective "mask"`},
		{name: "no path", input: `callback`, wantErr: "wrong argument count"},
		{name: "no path with block", input: "callback {\n client_id a\n}", wantErr: "wrong argument count"},
		{name: "two paths", input: `callback /a /b`, wantErr: "wrong argument count"},
		{name: "unknown subdirective", input: "callback /cb {\n client_key x\n}", wantErr: `unrecognized subdirective "client_key"`},
		{name: "misspelt subdirective", input: "callback /cb {\n client_id a\n delivre_to http://app/\n}", wantErr: `unrecognized subdirective "delivre_to"; did you mean "deliver_to"?, at Testfile:3`},
		{name: "repeated", input: "callback /cb {\n client_id a\n client_id b\n}", wantErr: "subdirective \"client_id\" given more than once"},
		{name: "repeated duration", input: "callback /cb {\n leeway 1s\n leeway 2s\n}", wantErr: "subdirective \"leeway\" given more than once"},
		{name: "missing value", input: "callback /cb {\n client_secret\n}", wantErr: "wrong argument count"},
		{name: "missing duration", input: "callback /cb {\n token_ttl\n}", wantErr: "wrong argument count"},
		{name: "extra value", input: "callback /cb {\n issuer a b\n}", wantErr: "wrong argument count"},
		{name: "extra verify_key value", input: "callback /cb {\n verify_key a b\n}", wantErr: "wrong argument count"},
		{name: "empty value", input: "callback /cb {\n audience \"\"\n}", wantErr: "audience must not be empty"},
		{name: "bad duration", input: "callback /cb {\n token_ttl soon\n}", wantErr: `token_ttl: time: invalid duration "soon"`},
		{name: "zero ttl", input: "callback /cb {\n token_ttl 0s\n}", wantErr: "token_ttl must be positive, got 0s"},
		{name: "negative leeway", input: "callback /cb {\n leeway -5s\n}", wantErr: "leeway must be positive, got -5s"},
		{name: "zero leeway", input: "callback /cb {\n leeway 0\n}", wantErr: "leeway must be positive, got 0 (0 selects the default, 60s)"},
		{name: "bad size", input: "callback /cb {\n max_body lots\n}", wantErr: `max_body: invalid size "lots" (want e.g. 32MiB)`},
		{name: "zero size", input: "callback /cb {\n max_body 0\n}", wantErr: "max_body must be between 1 byte and 8 EiB, got 0"},
		{name: "huge size", input: "callback /cb {\n max_body 16EiB\n}", wantErr: "max_body"},
	})
}

// TestCallbackUnmarshalCaddyfileNested checks that the parser leaves the
// dispenser where the enclosing atlas block goes on.
// callbackParserCase is a callback block and the config it parses to, or
// the error it fails with.
type callbackParserCase struct {
	name    string
	input   string
	want    callback.Callback
	wantErr string
}

// runCallbackParserCases parses each case's block with the callback
// parser and checks the config or the error.
func runCallbackParserCases(t *testing.T, cases []callbackParserCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser(tc.input)
			d.Next()
			var got callback.Callback
			err := got.UnmarshalCaddyfile(d)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreUnexported(callback.Callback{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCallbackUnmarshalCaddyfileNested(t *testing.T) {
	d := caddyfile.NewTestDispenser(`atlas {
		callback /hooks/atlas {
			client_id a
			verify_key k1
		}
		after one
	}
	next_directive`)
	d.Next()
	var c callback.Callback
	var rest []string
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if d.Val() == "callback" {
			if err := c.UnmarshalCaddyfile(d); err != nil {
				t.Fatal(err)
			}
			continue
		}
		rest = append(rest, d.Val())
		for d.NextArg() {
			rest = append(rest, d.Val())
		}
	}
	if got := strings.Join(rest, " "); got != "after one" {
		t.Errorf("the atlas block went on with %q", got)
	}
	if c.Path != "/hooks/atlas" || c.ClientID != "a" || len(c.VerifyKeys) != 1 {
		t.Errorf("parsed %+v", c)
	}
	if !d.Next() || d.Val() != "next_directive" {
		t.Errorf("the dispenser is not at the next directive: %q", d.Val())
	}
}

var updateGolden = flag.Bool("update", false, "rewrite the expected JSON of testdata/adapt/*.caddyfiletest")

// TestCallbackCaddyfileAdapt runs the golden files of
// testdata/adapt: a Caddyfile, a line of ten dashes, then the
// expected JSON or the expected error.
func TestCallbackCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "adapt", "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files in testdata/adapt")
	}
	crlf := regexp.MustCompile(`\r?\n`)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.SplitN(crlf.ReplaceAllString(string(data), "\n"), "----------", 2)
			if len(parts) != 2 {
				t.Fatal("no ---------- separator")
			}
			input, expected := strings.TrimSpace(parts[0])+"\n", strings.TrimSpace(parts[1])
			if strings.HasPrefix(expected, "{") {
				if *updateGolden {
					out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
					if err != nil {
						t.Fatal(err)
					}
					var pretty bytes.Buffer
					if err := json.Indent(&pretty, out, "", "\t"); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(file, []byte(input+"----------\n"+pretty.String()+"\n"), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				if !caddytest.CompareAdapt(t, file, input, "caddyfile", expected) {
					t.Errorf("adapting %s did not give the expected JSON", file)
				}
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
			if err == nil {
				t.Fatalf("no error, want %q", expected)
			}
			if !strings.Contains(err.Error(), expected) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, expected)
			}
		})
	}
}

// TestDurableUnmarshalCaddyfile checks the parser of the durable-mode
// subdirectives.
func TestDurableUnmarshalCaddyfile(t *testing.T) {
	runCallbackParserCases(t, []callbackParserCase{
		{
			name: "every setting",
			input: `callback /hooks/atlas {
				spool            /var/lib/caddy/atlas-spool
				deliver_to       http://app:8080/hooks/atlas
				max_attempts     20
				retry_backoff    1s 10m
				delivery_timeout 30s
				concurrency      4
				retention        7d
				max_spool_size   2GiB
			}`,
			// The queue's settings written beside spool go to the queue.
			want: callback.Callback{
				Path: "/hooks/atlas", DeliverTo: "http://app:8080/hooks/atlas",
				Queue: json.RawMessage(`{"backend":"spool","concurrency":4,"delivery_timeout":30000000000,"dir":"/var/lib/caddy/atlas-spool",` +
					`"max_attempts":20,"max_spool_size":2147483648,"retention":604800000000000,"retry_backoff_max":600000000000,"retry_backoff_min":1000000000}`),
			},
		},
		{name: "backoff one value", input: "callback /cb {\n retry_backoff 1s\n}", wantErr: "wrong argument count"},
		{name: "backoff three values", input: "callback /cb {\n retry_backoff 1s 2s 3s\n}", wantErr: "wrong argument count"},
		{name: "backoff order", input: "callback /cb {\n retry_backoff 10m 1s\n}", wantErr: "retry_backoff: the first delay 10m exceeds the maximum 1s"},
		{name: "backoff zero", input: "callback /cb {\n retry_backoff 0s 1s\n}", wantErr: "retry_backoff delays must be positive, got 0s"},
		{name: "backoff bad", input: "callback /cb {\n retry_backoff soon 1s\n}", wantErr: `retry_backoff: time: invalid duration "soon"`},
		{name: "backoff repeated", input: "callback /cb {\n retry_backoff 1s 2s\n retry_backoff 1s 2s\n}", wantErr: "subdirective \"retry_backoff\" given more than once"},
		{name: "zero attempts", input: "callback /cb {\n max_attempts 0\n}", wantErr: "max_attempts must be a whole number of at least 1, got 0"},
		{name: "bad concurrency", input: "callback /cb {\n concurrency many\n}", wantErr: "concurrency must be a whole number of at least 1, got many"},
		{name: "zero timeout", input: "callback /cb {\n delivery_timeout 0s\n}", wantErr: "delivery_timeout must be positive, got 0s"},
		{name: "bad retention", input: "callback /cb {\n retention forever\n}", wantErr: `retention: time: invalid duration "forever"`},
		{name: "bad spool size", input: "callback /cb {\n max_spool_size big\n}", wantErr: `max_spool_size: invalid size "big"`},
		{name: "spool twice", input: "callback /cb {\n spool /a\n spool /b\n}", wantErr: "subdirective \"spool\" given more than once"},
		{name: "spool two dirs", input: "callback /cb {\n spool /a /b\n}", wantErr: "wrong argument count"},
		{name: "deliver_to missing", input: "callback /cb {\n deliver_to\n}", wantErr: "wrong argument count"},
		{
			name: "encryption keys and dead letter retention",
			input: `callback /cb {
				encryption_key        {file./etc/caddy/spool-key-new}
				encryption_key        {file./etc/caddy/spool-key-old}
				dead_letter_retention 14d
				purge_delay           1m
				spool                 /s
			}`,
			want: callback.Callback{
				Path: "/cb",
				Queue: json.RawMessage(`{"backend":"spool","dead_letter_retention":1209600000000000,"dir":"/s",` +
					`"encryption_keys":["{file./etc/caddy/spool-key-new}","{file./etc/caddy/spool-key-old}"],"purge_delay":60000000000}`),
			},
		},
		{
			name: "queue spool with its block",
			input: `callback /cb {
				queue spool /s {
					max_attempts 3
					encryption_key {env.K}
				}
				concurrency 2
			}`,
			want: callback.Callback{Path: "/cb", Queue: json.RawMessage(`{"backend":"spool","concurrency":2,"dir":"/s","encryption_keys":["{env.K}"],"max_attempts":3}`)},
		},
		{name: "a setting in the queue and beside it", input: "callback /cb {\n queue spool /s {\n max_attempts 3\n }\n max_attempts 4\n}",
			wantErr: `subdirective "max_attempts" given more than once: in the queue's block and beside it, at Testfile:5`},
		{name: "spool and queue", input: "callback /cb {\n spool /s\n queue jetstream {\n url nats://a\n }\n}", wantErr: "spool and queue are exclusive"},
		// As before the queue was a module: kept, and without durable
		// mode of no effect (Provision warns).
		{name: "a setting without a queue", input: "callback /cb {\n max_attempts 4\n encryption_key {env.K}\n}",
			want: callback.Callback{Path: "/cb", MaxAttempts: 4, EncryptionKeys: []string{"{env.K}"}}},
		{name: "max_spool_size beside a jetstream queue", input: "callback /cb {\n queue jetstream {\n url nats://a\n }\n max_spool_size 1GiB\n}",
			want: callback.Callback{Path: "/cb", Queue: json.RawMessage(`{"backend":"jetstream","urls":["nats://a"]}`)}},
		{name: "a spool setting beside a jetstream queue", input: "callback /cb {\n queue jetstream {\n url nats://a\n }\n purge_delay 1m\n}",
			wantErr: "purge_delay applies to a spool only",
		},
		{name: "purge_delay bad", input: "callback /cb {\n purge_delay soon\n}", wantErr: `purge_delay: time: invalid duration "soon"`},
		{name: "purge_delay zero", input: "callback /cb {\n purge_delay 0s\n}", wantErr: "purge_delay must be positive, got 0s"},
		{name: "purge_delay twice", input: "callback /cb {\n purge_delay 1m\n purge_delay 2m\n}", wantErr: "subdirective \"purge_delay\" given more than once"},
		{name: "encryption_key missing", input: "callback /cb {\n encryption_key\n}", wantErr: "wrong argument count"},
		{name: "encryption_key two values", input: "callback /cb {\n encryption_key {env.A} {env.B}\n}", wantErr: "wrong argument count"},
		{name: "encryption_key empty", input: "callback /cb {\n encryption_key \"\"\n}", wantErr: "encryption_key must not be empty"},
		{name: "dead_letter_retention bad", input: "callback /cb {\n dead_letter_retention a-month\n}", wantErr: `dead_letter_retention: time: invalid duration "a-month"`},
		{name: "dead_letter_retention zero", input: "callback /cb {\n dead_letter_retention 0s\n}", wantErr: "dead_letter_retention must be positive, got 0s"},
		{name: "dead_letter_retention twice", input: "callback /cb {\n dead_letter_retention 1d\n dead_letter_retention 2d\n}", wantErr: "subdirective \"dead_letter_retention\" given more than once"},
	})
}
