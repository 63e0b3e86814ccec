package callback

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"

	"github.com/caddy-atlas/caddy-atlas/callback/token/tokentest"

	"github.com/caddy-atlas/caddy-atlas/callback/token"
)

// The callback route's inputs are attacker-controlled: anyone can reach
// auth_path and the callback path. These targets feed them arbitrary
// credentials and tokens.

// fuzzRemoteAddrs gives each fuzzed auth request its own client address,
// so that the failure limiter never throttles one.
var fuzzRemoteAddrs atomic.Uint32

func nextFuzzRemoteAddr() string {
	n := fuzzRemoteAddrs.Add(1)
	return fmt.Sprintf("10.%d.%d.%d:4711", byte(n>>16), byte(n>>8), byte(n))
}

// FuzzCallbackCredentials sends auth_path requests with arbitrary
// Client-Id, Client-Secret, Authorization and Content-Type headers and
// bodies. The credentials are read from the place the request names,
// a token is issued exactly when they are the configured ones, and no
// answer echoes a secret.
func FuzzCallbackCredentials(f *testing.F) {
	const id, secret = "atlas-client", "atlas-client-secret"
	basic := func(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }
	for _, s := range []struct{ id, secret, auth, ct, body string }{
		{id, secret, "", "", ""},
		{id, "", "", "", ""},
		{"", secret, "", "", ""},
		{id, secret + " ", "", "", ""},
		{"", "", basic(id, secret), "", ""},
		{"", "", basic(id, secret+"x"), "", ""},
		{"", "", "Basic !!!", "", ""},
		{"", "", "Bearer " + secret, "", ""},
		{"", "", "", "application/json", `{"client_id":"atlas-client","client_secret":"atlas-client-secret"}`},
		{"", "", "", "application/json; charset=utf-8", `{"client_id":"atlas-\u0063lient","client_secret":"atlas-client-secret"} trailing`},
		{"", "", "", "application/json", `{"client_id":1,"client_secret":null}`},
		{"", "", "", "application/json", `{"client_id":"atlas-client","client_id":"x","client_secret":"atlas-client-secret"}`},
		{"", "", "", "application/json", strings.Repeat(" ", 70<<10) + `{}`},
		{"", "", "", "application/x-www-form-urlencoded", "client_id=atlas-client&client_secret=atlas-client-secret"},
		{"", "", "", "application/x-www-form-urlencoded", "client_id=atlas%2Dclient&client_secret=atlas-client-secret&client_id=x"},
		{"", "", "", "application/x-www-form-urlencoded", "client_id=%zz;client_secret"},
		{"", "", "", "multipart/form-data; boundary=x", "--x--"},
		{"", "", "", "text/plain", secret},
		{"", "", "", "application/json;;;", `{}`},
	} {
		f.Add(s.id, s.secret, s.auth, s.ct, []byte(s.body))
	}

	c := &Callback{ClientID: id, ClientSecret: secret}
	provisionTestCallback(f, c)
	newRequest := func(hid, hsecret, auth, ct string, body []byte) *http.Request {
		req := httptest.NewRequest(http.MethodPost, c.AuthPath, bytes.NewReader(body))
		req.RemoteAddr = nextFuzzRemoteAddr()
		// Set directly: the values may be anything a client can send.
		for name, v := range map[string]string{"Client-Id": hid, "Client-Secret": hsecret, "Authorization": auth, "Content-Type": ct} {
			if v != "" {
				req.Header[name] = []string{v}
			}
		}
		return req
	}

	f.Fuzz(func(t *testing.T, hid, hsecret, auth, ct string, body []byte) {
		gotID, gotSecret, via := callbackCredentials(httptest.NewRecorder(), newRequest(hid, hsecret, auth, ct, body))
		switch via {
		case "headers":
			if gotID != hid || gotSecret != hsecret {
				t.Fatalf("headers %q/%q read as %q/%q", hid, hsecret, gotID, gotSecret)
			}
		case "basic", "json", "form", "none":
			if hid != "" || hsecret != "" {
				t.Fatalf("credentials headers present but read via %s", via)
			}
		default:
			t.Fatalf("unknown via %q", via)
		}
		if via == "none" && (gotID != "" || gotSecret != "") {
			t.Fatalf("credentials %q/%q via none", gotID, gotSecret)
		}

		rec := httptest.NewRecorder()
		if err := c.ServeAuth(rec, newRequest(hid, hsecret, auth, ct, body)); err != nil {
			t.Fatalf("serveAuth returned %v", err)
		}
		resp := rec.Body.String()
		if strings.Contains(resp, secret) || strings.Contains(resp, testHMACSecret) {
			t.Fatalf("answer contains a secret: %s", resp)
		}
		if gotID != id || gotSecret != secret {
			if rec.Code != http.StatusUnauthorized || resp != `{"error":"invalid client credentials"}`+"\n" {
				t.Fatalf("credentials %q/%q via %s: %d %s", gotID, gotSecret, via, rec.Code, resp)
			}
			return
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("the configured credentials via %s: %d %s", via, rec.Code, resp)
		}
	})
}

// FuzzCallbackToken sends callbacks with arbitrary Token and
// Authorization header values, a valid payload, to a provisioned route
// with an HMAC signing key and an Ed25519 verify key. No value is a valid
// token (the seeds are forged, expired or mis-claimed), so every callback
// must be refused with 401 without reaching the app.
func FuzzCallbackToken(f *testing.F) {
	k := tokentest.Keys(f)
	c := &Callback{VerifyKeys: []string{tokentest.PEMPublic(f, k.Ed.Public())}}
	provisionTestCallback(f, c)

	now := time.Now()
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		cl := callbackClaims(c, now)
		if edit != nil {
			edit(cl)
		}
		return cl
	}
	hs := jwt.SigningMethodHS256
	forged := tokentest.Mint(f, hs, []byte("not-the-signing-key-0123456789abcdef"), c.signer.KID(), claims(nil))
	seeds := []string{
		"", " ", "Bearer", "a.b.c", "..", "e30.e30.", "eyJhbGciOiJub25lIn0.e30.",
		forged,
		forged + "A",
		strings.ToUpper(forged),
		tokentest.Mint(f, hs, []byte("not-the-signing-key-0123456789abcdef"), "", claims(nil)),
		tokentest.Mint(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims(nil)),
		tokentest.Mint(f, hs, []byte(testHMACSecret), c.signer.KID(), claims(func(m jwt.MapClaims) { m["exp"] = now.Add(-time.Hour).Unix() })),
		tokentest.Mint(f, hs, []byte(testHMACSecret), c.signer.KID(), claims(func(m jwt.MapClaims) { m["aud"] = "other" })),
		tokentest.Mint(f, hs, []byte(testHMACSecret), c.signer.KID(), claims(func(m jwt.MapClaims) { m["iss"] = "other" })),
		tokentest.Mint(f, hs, []byte(testHMACSecret), c.signer.KID(), claims(func(m jwt.MapClaims) { delete(m, "sub") })),
		tokentest.Mint(f, hs, []byte(testHMACSecret), c.signer.KID(), claims(func(m jwt.MapClaims) { m["sub"] = "a\nb" })),
		tokentest.Mint(f, hs, []byte(testHMACSecret), c.signer.KID(), claims(func(m jwt.MapClaims) { delete(m, "exp") })),
		tokentest.Mint(f, hs, []byte(testHMACSecret), c.signer.KID(), claims(func(m jwt.MapClaims) { m["nbf"] = now.Add(time.Hour).Unix() })),
		tokentest.Mint(f, hs, []byte(testHMACSecret), "unknown-kid", claims(nil)),
		tokentest.Mint(f, jwt.SigningMethodEdDSA, k.Ed, "", claims(func(m jwt.MapClaims) { m["exp"] = now.Add(-time.Hour).Unix() })),
		tokentest.Mint(f, jwt.SigningMethodEdDSA, k.Ed, c.signer.KID(), claims(nil)),
		tokentest.Mint(f, jwt.SigningMethodES256, k.EC, "", claims(nil)),
		tokentest.Mint(f, jwt.SigningMethodRS256, k.RSA, "", claims(nil)),
		strings.Repeat("A", token.MaxBytes+1),
	}
	for i, tok := range seeds {
		f.Add(tok, "", uint8(1))
		f.Add("", "Bearer "+tok, uint8(2))
		f.Add(tok, "bearer  "+tok+" ", uint8(3|i%2<<2))
	}
	f.Add("x", "Basic eDp5", uint8(3))

	payload := payloadtest.Sample(1)
	f.Fuzz(func(t *testing.T, tok, authorization string, flags uint8) {
		req := httptest.NewRequest(http.MethodPost, c.Path, bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		if flags&1 != 0 {
			req.Header["Token"] = []string{tok}
			if flags&4 != 0 {
				req.Header["Token"] = append(req.Header["Token"], tok)
			}
		}
		if flags&2 != 0 {
			req.Header["Authorization"] = []string{authorization}
		}
		req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))

		if raw, err := token.FromRequest(req); err == nil && (raw == "" || len(raw) > token.MaxBytes) {
			t.Fatalf("extracted a token of %d bytes", len(raw))
		}
		if sub, err := c.verifyRequest(req); err == nil {
			t.Fatalf("accepted Token %q Authorization %q: subject %q", tok, authorization, sub)
		}
		app := new(callbackApp)
		rec := httptest.NewRecorder()
		if err := c.ServeCallback(rec, req, app); err != nil {
			t.Fatalf("serveCallback returned %v", err)
		}
		if rec.Code != http.StatusUnauthorized || app.calls != 0 {
			t.Fatalf("Token %q Authorization %q: %d, %d calls to the app", tok, authorization, rec.Code, app.calls)
		}
		// RFC 6750: without a token, a challenge without an error code.
		body, challenge := `{"error":"invalid or expired token"}`+"\n", `Bearer error="invalid_token"`
		if _, err := token.FromRequest(req); errors.Is(err, token.ErrNoToken) {
			body = `{"error":"a token is required: send the token issued at ` + c.AuthPath + ` in the Token header or as Authorization: Bearer"}` + "\n"
			challenge = `Bearer realm="atlas-callback"`
		}
		if got := rec.Body.String(); got != body {
			t.Fatalf("401 body %q, want %q", got, body)
		}
		if got := rec.Header().Get("WWW-Authenticate"); got != challenge {
			t.Fatalf("WWW-Authenticate %q, want %q", got, challenge)
		}
	})
}
