package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
	"github.com/caddy-atlas/caddy-atlas/callback/token"
	"github.com/caddy-atlas/caddy-atlas/internal/cfparse/cfparsetest"
	"github.com/caddy-atlas/caddy-atlas/internal/httpjson"

	"github.com/caddy-atlas/caddy-atlas/callback/token/tokentest"
)

// TestCallbackHandOff checks what reaches the app for a good callback:
// the body byte-for-byte, no token, no smuggled X-Atlas-* headers, the
// managed headers and placeholders.
func TestCallbackHandOff(t *testing.T) {
	c := &Callback{}
	provisionTestCallback(t, c)
	tok := callbackAuthToken(t, c)
	body := []byte(" {\"data\":[{\"document_id\":\"a\",\"file_data\":{\"x\":{\"value\":\"\\u00e9\",\"confidence_score\":0.5}}},\n{\"document_id\":\"b\",\"file_data\":{}}], \"batch_id\":\"B1\"}\n")

	accepted := callbackCounterValue(t, c.metrics.callbacks.WithLabelValues(outcomeAccepted))
	for _, bearer := range []bool{false, true} {
		req := callbackTestRequest("/hooks/atlas?keep=1", "", body)
		if bearer {
			req.Header.Set("Authorization", "Bearer "+tok)
		} else {
			req.Header.Set("Token", tok)
		}
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("X-Atlas-Subject", "admin")
		req.Header["x-atlas-document-count"] = []string{"999"}
		req.Header.Set("X-Atlas-Anything", "smuggled")
		req.Header.Set("X-Other", "kept")
		rec, app := serveTestCallback(t, c, req)
		if rec.Code != http.StatusAccepted || app.calls != 1 {
			t.Fatalf("status %d, app calls %d: %s", rec.Code, app.calls, rec.Body)
		}
		if !bytes.Equal(app.body, body) {
			t.Errorf("app body\n%q\nwant\n%q", app.body, body)
		}
		if app.req.ContentLength != int64(len(body)) || app.header.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Errorf("content length %d / %q", app.req.ContentLength, app.header.Get("Content-Length"))
		}
		if app.req.URL.RawQuery != "keep=1" {
			t.Errorf("query %q", app.req.URL.RawQuery)
		}
		if got, err := app.req.GetBody(); err != nil {
			t.Error(err)
		} else if b, _ := io.ReadAll(got); !bytes.Equal(b, body) {
			t.Error("GetBody returns another body")
		}
		want := map[string][]string{
			"X-Atlas-Subject":        {"atlas-client"},
			"X-Atlas-Document-Count": {"2"},
			"X-Atlas-Callback-Id":    {ID(body)},
			"X-Other":                {"kept"},
		}
		for k, v := range want {
			if got := app.header.Values(k); fmt.Sprint(got) != fmt.Sprint(v) {
				t.Errorf("header %s = %q, want %q", k, got, v)
			}
		}
		for k := range app.header {
			if strings.HasPrefix(http.CanonicalHeaderKey(k), "X-Atlas-") && want[k] == nil {
				t.Errorf("smuggled header %s reached the app", k)
			}
		}
		if app.header.Get("Token") != "" || app.header.Get("Authorization") != "" {
			t.Error("the token reached the app")
		}
		repl := req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if got := repl.ReplaceAll("{http.atlas.callback.id} {http.atlas.callback.subject} {http.atlas.callback.document_count}", ""); got != ID(body)+" atlas-client 2" {
			t.Errorf("placeholders = %q", got)
		}
	}
	if got := callbackCounterValue(t, c.metrics.callbacks.WithLabelValues(outcomeAccepted)) - accepted; got != 2 {
		t.Errorf("accepted counter moved by %v, want 2", got)
	}
}

// TestCallbackID checks that the id is stable per body and 32 hex digits.
func TestCallbackID(t *testing.T) {
	a, b := payloadtest.Sample(2), payloadtest.Sample(3)
	if ID(a) != ID(append([]byte(nil), a...)) {
		t.Error("the id of the same body differs")
	}
	if ID(a) == ID(b) {
		t.Error("two bodies have the same id")
	}
	if id := ID(a); len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("id %q is not 32 hex digits", id)
	}
}

// TestCallbackRejections checks the status of each kind of bad callback,
// the order of the checks, and that none reaches the app, none makes the
// route read the body before the token is verified, and no log holds
// the token.
func TestCallbackRejections(t *testing.T) {
	c := &Callback{MaxBody: 1024}
	logs := provisionTestCallback(t, c)
	good := callbackAuthToken(t, c)
	expired := tokentest.Mint(t, jwt.SigningMethodHS256, []byte(testHMACSecret), "", func() jwt.MapClaims {
		cl := callbackClaims(c, time.Now())
		cl["exp"] = time.Now().Add(-time.Hour).Unix()
		return cl
	}())
	big := append([]byte(`{"data":[],"pad":"`), bytes.Repeat([]byte("x"), 2000)...)
	big = append(big, `"}`...)
	valid := payloadtest.Sample(1)

	for _, tc := range []struct {
		name        string
		method      string
		token       string
		contentType string
		body        []byte
		chunked     bool
		status      int
		msg         string
	}{
		{name: "GET", method: http.MethodGet, token: good, body: valid, status: 405},
		{name: "no token, bad everything", token: "", contentType: "text/plain", body: big, status: 401, msg: "a token is required"},
		{name: "expired token", token: expired, body: valid, status: 401, msg: "invalid or expired token"},
		{name: "garbage token", token: "not-a-jwt", body: valid, status: 401},
		{name: "token ok, text/plain", token: good, contentType: "text/plain", body: big, status: 415},
		{name: "token ok, no content type", token: good, contentType: "-", body: valid, status: 415},
		{name: "token ok, form", token: good, contentType: "application/x-www-form-urlencoded", body: valid, status: 415},
		{name: "token ok, too large", token: good, body: big, status: 413},
		{name: "token ok, too large chunked", token: good, body: big, chunked: true, status: 413},
		{name: "token ok, not JSON", token: good, body: []byte("hello"), status: 400, msg: "body: invalid JSON at byte 1"},
		{name: "token ok, truncated", token: good, body: valid[:len(valid)-5], status: 400, msg: "has_prev: truncated JSON"},
		{name: "token ok, score", token: good, body: []byte(`{"data":[{"document_id":"a","file_data":{"x":{"confidence_score":1.7}}}]}`), status: 400,
			msg: "data[0].file_data.x.confidence_score: 1.7 is outside [0, 1]"},
		{name: "vendor json type", token: good, contentType: "application/vnd.atlas.callback+json; charset=utf-8", body: valid, status: 202},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.TakeAll()
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			body := &callbackCountingReader{r: bytes.NewReader(tc.body)}
			req := callbackTestRequest("/hooks/atlas", tc.token, nil)
			req.Method = method
			req.Body = io.NopCloser(body)
			req.ContentLength = int64(len(tc.body))
			if tc.chunked {
				req.ContentLength = -1
			}
			switch tc.contentType {
			case "":
			case "-":
				req.Header.Del("Content-Type")
			default:
				req.Header.Set("Content-Type", tc.contentType)
			}
			rec, app := serveTestCallback(t, c, req)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status != 202 && app.calls != 0 {
				t.Fatal("the request reached the app")
			}
			var resp httpjson.ErrorBody
			if tc.status != 202 {
				if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
					t.Fatalf("error body %q: %v", rec.Body, err)
				}
				if !strings.HasPrefix(resp.Error, tc.msg) {
					t.Errorf("error %q, want it to start with %q", resp.Error, tc.msg)
				}
			}
			switch tc.status {
			case 401:
				want := `Bearer error="invalid_token"`
				if tc.token == "" {
					want = `Bearer realm="atlas-callback"` // RFC 6750: no error code without credentials
				}
				if got := rec.Header().Get("WWW-Authenticate"); got != want {
					t.Errorf("WWW-Authenticate %q, want %q", got, want)
				}
				if body.n != 0 {
					t.Errorf("read %d bytes of an unauthenticated body", body.n)
				}
				if logs.Len() == 0 {
					t.Error("no log says why")
				}
			case 405:
				if rec.Header().Get("Allow") != "POST" {
					t.Errorf("Allow %q", rec.Header().Get("Allow"))
				}
			case 413:
				if body.n > 1024+512 {
					t.Errorf("read %d bytes for a max_body of 1024", body.n)
				}
			}
			for _, e := range logs.All() {
				line := fmt.Sprint(e.Message, e.ContextMap())
				if tc.token != "" && strings.Contains(line, tc.token) {
					t.Errorf("a log holds the token: %s", line)
				}
				if strings.Contains(line, testHMACSecret) {
					t.Errorf("a log holds the signing key: %s", line)
				}
			}
		})
	}
}

// TestCallbackProvisionDefaults checks the defaults and the placeholder
// resolution.
func TestCallbackProvisionDefaults(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(keyFile, []byte(testHMACSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CALLBACK_TEST_ID", "id-from-env")
	t.Setenv("CALLBACK_TEST_SECRET", "secret-from-env")
	c := &Callback{
		Path:         "/hooks/atlas/",
		ClientID:     "{env.CALLBACK_TEST_ID}",
		ClientSecret: "{env.CALLBACK_TEST_SECRET}",
		SigningKey:   "{file." + keyFile + "}",
	}
	provisionTestCallback(t, c)
	if c.AuthPath != "/hooks/atlas/auth" || c.Issuer != "caddy-atlas" || c.Audience != "atlas-callback" ||
		time.Duration(c.TokenTTL) != 15*time.Minute || time.Duration(c.Leeway) != time.Minute || c.MaxBody != 32<<20 {
		t.Errorf("defaults: %+v", c)
	}
	if c.clientID != "id-from-env" || !c.checkCredentials("id-from-env", "secret-from-env") {
		t.Error("credentials from the environment not resolved")
	}
	if want, err := token.ParseSigningKey(testHMACSecret); err != nil || c.signer.KID() != want.KID() {
		t.Error("signing key from the file not resolved (or its newline kept)")
	}
	// The exported config still holds the placeholders, not the secrets.
	if c.ClientSecret != "{env.CALLBACK_TEST_SECRET}" || !strings.HasPrefix(c.SigningKey, "{file.") {
		t.Error("provision replaced the configured placeholders")
	}
}

// TestCallbackConfigErrors checks the provision and validate errors, and
// that none echoes a secret.
func TestCallbackConfigErrors(t *testing.T) {
	k := tokentest.Keys(t)
	const marker = "SECRET-MARKER-0123456789abcdef0123456789"
	weakRSA := tokentest.WeakRSA(t)
	for _, tc := range []struct {
		name string
		c    Callback
		want string
	}{
		{"no path", Callback{Path: "-"}, "path is required"},
		{"relative path", Callback{Path: "hooks"}, `path "hooks" must start with /`},
		{"relative auth path", Callback{AuthPath: "auth"}, `auth_path "auth" must start with /`},
		{"same paths", Callback{AuthPath: "/hooks/atlas"}, "auth_path and path are the same path"},
		{"empty client id", Callback{ClientID: "{env.CALLBACK_TEST_UNSET}"}, "client_id {env.CALLBACK_TEST_UNSET} is empty: CALLBACK_TEST_UNSET is not set"},
		{"empty secret", Callback{ClientSecret: "{env.CALLBACK_TEST_UNSET}"}, "client_secret {env.CALLBACK_TEST_UNSET} is empty: CALLBACK_TEST_UNSET is not set"},
		{"empty signing key", Callback{SigningKey: "{env.CALLBACK_TEST_UNSET}"}, "signing_key {env.CALLBACK_TEST_UNSET} is empty: CALLBACK_TEST_UNSET is not set"},
		{"unreadable signing key file", Callback{SigningKey: "{file./nonexistent/callback.key}"}, "signing_key {file./nonexistent/callback.key} is empty: the file /nonexistent/callback.key does not exist"},
		{"short HMAC", Callback{SigningKey: marker[:31]}, "signing_key: an HMAC secret must be at least 32 bytes, this one has 31"},
		{"weak RSA", Callback{SigningKey: tokentest.PEMPrivate(t, weakRSA)}, "signing_key: an RSA key must have at least 2048 bits, this one has 1024"},
		{"weak RSA verify key", Callback{VerifyKeys: []string{tokentest.PEMPublic(t, &weakRSA.PublicKey)}}, "verify_keys[0]: an RSA key must have at least 2048 bits"},
		{"public signing key", Callback{SigningKey: tokentest.PEMPublic(t, k.Ed.Public())}, `signing_key: PEM block "PUBLIC KEY" holds no private key`},
		{"bad PEM", Callback{SigningKey: "-----BEGIN PRIVATE KEY-----\n" + marker + "\n-----END PRIVATE KEY-----\n"}, "signing_key: no PEM block found"},
		{"broken key", Callback{SigningKey: "-----BEGIN PRIVATE KEY-----\nU0VDUkVULU1BUktFUg==\n-----END PRIVATE KEY-----\n"}, "signing_key: parsing the PRIVATE KEY PEM block"},
		{"HMAC verify key", Callback{VerifyKeys: []string{marker}}, "verify_keys[0]: not a PEM public key (HMAC secrets are not accepted as verify keys)"},
		{"empty verify key", Callback{VerifyKeys: []string{"{env.CALLBACK_TEST_UNSET}"}}, "verify_keys[0] {env.CALLBACK_TEST_UNSET} is empty: CALLBACK_TEST_UNSET is not set"},
		{"negative leeway", Callback{Leeway: -1}, "leeway must not be negative"},
		{"negative ttl", Callback{TokenTTL: -1}, "token_ttl must be positive"},
		{"negative max_body", Callback{MaxBody: -1}, "max_body must not be negative"},
		{"bad jwks url", Callback{JWKSURL: "ftp://example.com/jwks"}, `jwks_url "ftp://example.com/jwks" is not an absolute http(s) URL`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			if c.Path == "-" {
				c.Path = ""
			} else if c.Path == "" {
				c.Path = "/hooks/atlas"
			}
			if c.ClientID == "" {
				c.ClientID = "atlas-client"
			}
			if c.ClientSecret == "" {
				c.ClientSecret = marker
			}
			if c.SigningKey == "" {
				c.SigningKey = testHMACSecret
			}
			err, cerr := provisionAndValidate(&c)
			if cerr != nil {
				t.Errorf("cleanup: %v", cerr)
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), marker[:20]) || strings.Contains(err.Error(), "U0VDUkVU") {
				t.Errorf("the error echoes a secret: %v", err)
			}
		})
	}
}

// TestCallbackCleanupWithoutProvision checks that cleanup is safe on an
// unprovisioned route.
func TestCallbackCleanupWithoutProvision(t *testing.T) {
	if err := new(Callback).Cleanup(); err != nil {
		t.Fatal(err)
	}
}

// TestCallbackMetricsRegisterTwice checks that a second route (or a
// reload) registering the collectors in the same registry is fine.
func TestCallbackMetricsRegisterTwice(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	a, err := registerCallbackMetrics(ctx.GetMetricsRegistry())
	if err != nil {
		t.Fatal(err)
	}
	b, err := registerCallbackMetrics(ctx.GetMetricsRegistry())
	if err != nil || a != b {
		t.Fatalf("second registration: %v", err)
	}
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	for _, want := range []string{"caddy_atlas_callback_verify_seconds", "caddy_atlas_callback_payload_bytes"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("%s not registered: %v", want, names)
		}
	}
}

// TestSubdirectiveList checks that the list that suggests the nearest
// name of a misspelt subdirective is the names the parser accepts.
func TestSubdirectiveList(t *testing.T) {
	cfparsetest.Check(t, "caddyfile.go", "Callback.UnmarshalCaddyfile", subdirectives)
}
