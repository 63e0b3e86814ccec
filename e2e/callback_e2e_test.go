package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/internal/httpjson"

	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"

	"github.com/caddy-atlas/caddy-atlas/callback/token/tokentest"

	"github.com/caddy-atlas/caddy-atlas/callback/token"

	"github.com/caddy-atlas/caddy-atlas/callback"
)

// The callback end-to-end tests run a real Caddy (the in-process one,
// shared with the other e2e tests: none may run in parallel) with a
// callback-only atlas handler in front of an httptest app. The Atlas
// simulator plays Atlas.

const (
	cbE2EClientID     = "atlas-callback-e2e"
	cbE2EClientSecret = "cb-secret-never-in-a-log-91c2"
	cbE2ESigningKey   = "cb-e2e-hmac-signing-key-0123456789abcdef"
	cbE2EMaxBody      = 64 << 10
)

var (
	cbE2EAuthURL     = gatewayURL + "/hooks/atlas/auth"
	cbE2ECallbackURL = gatewayURL + "/hooks/atlas"
)

// post sends a request through the gateway.
func (g *callbackE2E) post(t *testing.T, url string, body []byte, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := g.tester.Client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// token obtains a token from the gateway's auth_path.
func (g *callbackE2E) token(t *testing.T) string {
	t.Helper()
	resp, body := g.post(t, cbE2EAuthURL, nil, "Client-Id", cbE2EClientID, "Client-Secret", cbE2EClientSecret)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("auth: %d %s", resp.StatusCode, body)
	}
	var r authAnswer
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	return r.AccessToken
}

// wantCallbackError checks an error answer: status, JSON body with a
// message starting with msg, and no secret.
func wantCallbackError(t *testing.T, resp *http.Response, body []byte, status int, msg string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	var e httpjson.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if !strings.HasPrefix(e.Error, msg) {
		t.Errorf("error %q, want it to start with %q", e.Error, msg)
	}
	for _, secret := range []string{cbE2EClientSecret, cbE2ESigningKey} {
		if bytes.Contains(body, []byte(secret)) {
			t.Errorf("the answer holds a secret: %s", body)
		}
	}
}

// TestCallbackE2EDelivery plays Atlas delivering a batch: auth at
// auth_path, then the callback, which reaches the app byte-for-byte with
// the managed headers; a redelivery has the same callback id.
func TestCallbackE2EDelivery(t *testing.T) {
	skipShort(t)
	g := startCallbackGateway(t)
	sim := atlastest.NewServer(t, atlastest.Options{})
	ids := []string{"loan-1-aadhaar", "loan-1-pan", "loan-1-dl", "loan-1-passport", "loan-1-gst"}
	batchID := sim.CreateBatch(ids...)
	payload, err := sim.BatchPayload(batchID)
	if err != nil {
		t.Fatal(err)
	}
	target := atlastest.CallbackTarget{AuthURL: cbE2EAuthURL, CallbackURL: cbE2ECallbackURL, ClientID: cbE2EClientID, ClientSecret: cbE2EClientSecret}

	var firstID string
	for i := range 2 {
		d, err := sim.DeliverCallback(context.Background(), target, batchID)
		if err != nil {
			t.Fatalf("delivery %d: %v (%+v)", i, err, d)
		}
		// The app's status and body go back to Atlas.
		if d.AuthStatus != http.StatusOK || d.CallbackStatus != http.StatusAccepted || string(d.Body) != `{"stored":true}` {
			t.Fatalf("delivery %d: %+v", i, d)
		}
		got := g.app.last()
		if !bytes.Equal(got.body, payload) {
			t.Fatalf("the app got another body:\n%s\nwant\n%s", got.body, payload)
		}
		id := got.header.Get("X-Atlas-Callback-Id")
		for k, want := range map[string]string{
			"X-Atlas-Subject":         cbE2EClientID,
			"X-Atlas-Document-Count":  strconv.Itoa(len(ids)),
			"X-Atlas-Callback-Id":     callback.ID(payload),
			"X-Callback-Placeholders": id + "|" + cbE2EClientID + "|" + strconv.Itoa(len(ids)),
			"Token":                   "",
			"Authorization":           "",
			"Content-Length":          strconv.Itoa(len(payload)),
		} {
			if v := got.header.Get(k); v != want {
				t.Errorf("delivery %d: app header %s = %q, want %q", i, k, v, want)
			}
		}
		if i == 0 {
			firstID = id
		} else if id != firstID {
			t.Errorf("the redelivery has callback id %s, the first %s", id, firstID)
		}
	}
	if g.app.count() != 2 {
		t.Errorf("the app got %d requests", g.app.count())
	}

	// Without an auth step, the simulator sends no token: refused.
	d, err := sim.DeliverCallback(context.Background(), atlastest.CallbackTarget{CallbackURL: cbE2ECallbackURL}, batchID)
	if err == nil || d.CallbackStatus != http.StatusUnauthorized {
		t.Errorf("delivery without a token: %v, %+v", err, d)
	}
	// With wrong credentials, auth fails and nothing is delivered.
	bad := target
	bad.ClientSecret = "wrong"
	if d, err := sim.DeliverCallback(context.Background(), bad, batchID); err == nil || d.AuthStatus != http.StatusUnauthorized || d.CallbackStatus != 0 {
		t.Errorf("delivery with a wrong secret: %v, %+v", err, d)
	}
	if g.app.count() != 2 {
		t.Errorf("a refused delivery reached the app")
	}

	// The token also works as a Bearer credential, and client-supplied
	// X-Atlas-* headers never reach the app.
	resp, body := g.post(t, cbE2ECallbackURL+"?batch="+batchID, payload, "Content-Type", "application/json",
		"Authorization", "Bearer "+g.token(t), "X-Atlas-Subject", "admin", "X-Atlas-Document-Count", "1000", "X-Atlas-Extra", "x")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("bearer: %d %s", resp.StatusCode, body)
	}
	got := g.app.last()
	if got.header.Get("X-Atlas-Subject") != cbE2EClientID || got.header.Get("X-Atlas-Document-Count") != "5" ||
		got.header.Get("X-Atlas-Extra") != "" || got.header.Get("Authorization") != "" || got.query != "batch="+batchID {
		t.Errorf("bearer: app headers %v, query %q", got.header, got.query)
	}
}

// TestCallbackE2EConcurrentBodies sends distinct payloads of nearly
// max_body from many clients at once through the route's pooled buffers:
// every body the app reads must be the one sent as its callback id, whole
// (with -race, a buffer reused too early is also a reported race). Half
// go to an app that answers without reading, whose bodies the proxy's
// transport releases rather than reads. On loopback the transport has
// always finished writing before the route returns; a buffer still being
// written when the route releases it is TestCallbackBodyCloseDuringWrite's
// and TestCallbackBodyNotReusedWhileRead's case.
func TestCallbackE2EConcurrentBodies(t *testing.T) {
	skipShort(t)
	g := startCallbackGateway(t)
	tok := g.token(t)
	base := string(payloadtest.Realistic(60 << 10))
	const clients, each = 8, 40
	sent := make(map[string][]byte) // callback id -> body
	bodies := make([][][]byte, clients)
	for c := range clients {
		for i := range each {
			b := []byte(strings.Replace(base, "loan-app-000000-pan", fmt.Sprintf("client-%02d-req-%03d-pan", c, i), 1))
			bodies[c] = append(bodies[c], b)
			sent[callback.ID(b)] = b
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, b := range bodies[c] {
				req, _ := http.NewRequest(http.MethodPost, cbE2ECallbackURL, bytes.NewReader(b))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Token", tok)
				if i%2 == 0 {
					req.Header.Set("X-Test-Answer-Early", "1")
				}
				resp, err := g.tester.Client.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					errs <- fmt.Errorf("client %d request %d: status %d", c, i, resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	g.app.mu.Lock()
	defer g.app.mu.Unlock()
	if len(g.app.reqs) != clients*each/2 {
		t.Errorf("the app read %d bodies, want %d", len(g.app.reqs), clients*each/2)
	}
	for _, r := range g.app.reqs {
		id := r.header.Get("X-Atlas-Callback-Id")
		if want, ok := sent[id]; !ok || !bytes.Equal(r.body, want) {
			t.Fatalf("the app read a body of %d bytes that is not the one sent as %s", len(r.body), id)
		}
	}
}

// TestCallbackE2EAttacks sends the token attack list; each is answered
// 401 and none reaches the app.
func TestCallbackE2EAttacks(t *testing.T) {
	skipShort(t)
	g := startCallbackGateway(t)
	payload := payloadtest.Sample(2)
	now := time.Now()
	key := []byte(cbE2ESigningKey)
	claims := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": "caddy-atlas", "aud": "atlas-callback", "sub": cbE2EClientID,
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
		if mut != nil {
			mut(c)
		}
		return c
	}
	good := tokentest.Mint(t, jwt.SigningMethodHS256, key, "", claims(nil))
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	forged, _ := json.Marshal(claims(func(c jwt.MapClaims) { c["sub"] = "admin" }))
	wrongSig := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2]

	// Another caddy-atlas, same credentials and claims, its own key.
	otherKey, err := token.ParseSigningKey("another-gateway-signing-key-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	otherToken, err := token.Issue(otherKey, token.Claims{Issuer: "caddy-atlas", Subject: cbE2EClientID,
		Audience: "atlas-callback", TTL: 15 * time.Minute}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherTok := authAnswer{AccessToken: otherToken}

	// A sanity check that the good token passes, so each refusal below is
	// the attack's doing.
	if resp, body := g.post(t, cbE2ECallbackURL, payload, "Content-Type", "application/json", "Token", good); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("the reference token is refused: %d %s", resp.StatusCode, body)
	}
	before := g.app.count()

	for _, tc := range []struct {
		name    string
		url     string
		headers []string
	}{
		{"no token", cbE2ECallbackURL, nil},
		{"garbage", cbE2ECallbackURL, []string{"Token", "garbage"}},
		{"alg none", cbE2ECallbackURL, []string{"Token", none}},
		{"HS256 signed with the RSA public key", cbE2ECallbackURL, []string{"Token", tokentest.Mint(t, jwt.SigningMethodHS256, []byte(g.rsa), "", claims(nil))}},
		{"HS256 with the RSA public key and its kid", cbE2ECallbackURL, []string{"Token", tokentest.Mint(t, jwt.SigningMethodHS256, []byte(g.rsa), callbackKID(t, g.rsa), claims(nil))}},
		{"wrong signature", cbE2ECallbackURL, []string{"Token", wrongSig}},
		{"RSA key not the configured one", cbE2ECallbackURL, []string{"Token", tokentest.Mint(t, jwt.SigningMethodRS256, tokentest.WeakRSA(t), "", claims(nil))}},
		{"expired beyond leeway", cbE2ECallbackURL, []string{"Token", tokentest.Mint(t, jwt.SigningMethodHS256, key, "", claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-2 * time.Minute).Unix() }))}},
		{"nbf in the future", cbE2ECallbackURL, []string{"Token", tokentest.Mint(t, jwt.SigningMethodHS256, key, "", claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(2 * time.Minute).Unix() }))}},
		{"wrong iss", cbE2ECallbackURL, []string{"Token", tokentest.Mint(t, jwt.SigningMethodHS256, key, "", claims(func(c jwt.MapClaims) { c["iss"] = "someone-else" }))}},
		{"wrong aud", cbE2ECallbackURL, []string{"Token", tokentest.Mint(t, jwt.SigningMethodHS256, key, "", claims(func(c jwt.MapClaims) { c["aud"] = "another-app" }))}},
		{"missing exp", cbE2ECallbackURL, []string{"Token", tokentest.Mint(t, jwt.SigningMethodHS256, key, "", claims(func(c jwt.MapClaims) { delete(c, "exp") }))}},
		{"token in the query string only", cbE2ECallbackURL + "?token=" + good + "&access_token=" + good + "&Token=" + good, nil},
		{"token in a cookie only", cbE2ECallbackURL, []string{"Cookie", "token=" + good + "; Token=" + good}},
		{"token of another caddy-atlas", cbE2ECallbackURL, []string{"Token", otherTok.AccessToken}},
		{"Basic credentials", cbE2ECallbackURL, []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(cbE2EClientID+":"+cbE2EClientSecret))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			headers := append([]string{"Content-Type", "application/json"}, tc.headers...)
			resp, body := g.post(t, tc.url, payload, headers...)
			// RFC 6750: a request without Bearer credentials gets a
			// challenge without an error code, a bad token invalid_token.
			msg, challenge := "invalid or expired token", `Bearer error="invalid_token"`
			if !slices.Contains(tc.headers, "Token") {
				msg, challenge = "a token is required", `Bearer realm="atlas-callback"`
			}
			wantCallbackError(t, resp, body, http.StatusUnauthorized, msg)
			if got := resp.Header.Get("WWW-Authenticate"); got != challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, challenge)
			}
			if g.app.count() != before {
				t.Fatal("the request reached the app")
			}
		})
	}
	if otherTok.AccessToken == "" {
		t.Error("the other gateway issued no token")
	}
}

// TestCallbackE2EPayloads sends the bad payload list with a good token;
// each is refused and none reaches the app.
func TestCallbackE2EPayloads(t *testing.T) {
	skipShort(t)
	g := startCallbackGateway(t)
	tok := g.token(t)
	huge := append([]byte(`{"data":[],"pad":"`), bytes.Repeat([]byte("x"), cbE2EMaxBody)...)
	huge = append(huge, `"}`...)
	valid := payloadtest.Sample(3)
	for _, tc := range []struct {
		name        string
		contentType string
		body        []byte
		status      int
		msg         string
	}{
		{"not JSON", "application/json", []byte("hello, not json"), 400, "body: invalid JSON at byte 1"},
		{"truncated JSON", "application/json", valid[:len(valid)/2], 400, "data[1]"},
		{"data not an array", "application/json", []byte(`{"data":{"document_id":"a"}}`), 400, "data: must be an array of documents, not an object"},
		{"missing document_id", "application/json", []byte(`{"data":[{"document_id":"a","file_data":{}},{"file_data":{}}]}`), 400, "data[1].document_id: missing"},
		{"score 1.7", "application/json", []byte(`{"data":[{"document_id":"a","file_data":{}},{"document_id":"b","file_data":{}},{"document_id":"c","file_data":{}},` +
			`{"document_id":"d","file_data":{"pan_number":{"value":"ABCDE1234F","confidence_score":1.7}}}]}`), 400,
			"data[3].file_data.pan_number.confidence_score: 1.7 is outside [0, 1]"},
		{"score high", "application/json", []byte(`{"data":[{"document_id":"a","file_data":{"pan_number":{"value":"X","confidence_score":"high"}}}]}`), 400,
			`data[0].file_data.pan_number.confidence_score: "high" is not a number`},
		{"body over max_body", "application/json", huge, 413, "the callback body is larger than 65536 bytes"},
		{"not a JSON content type", "text/plain", valid, 415, "the callback body must be JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := g.post(t, cbE2ECallbackURL, tc.body, "Content-Type", tc.contentType, "Token", tok)
			wantCallbackError(t, resp, body, tc.status, tc.msg)
			if g.app.count() != 0 {
				t.Fatal("the request reached the app")
			}
		})
	}
	// A chunked body over max_body is cut off too.
	req, _ := http.NewRequest(http.MethodPost, cbE2ECallbackURL, io.MultiReader(bytes.NewReader(huge)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Token", tok)
	req.ContentLength = -1
	resp, err := g.tester.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantCallbackError(t, resp, body, http.StatusRequestEntityTooLarge, "the callback body is larger")
	if g.app.count() != 0 {
		t.Fatal("the chunked request reached the app")
	}
}

// TestCallbackE2EAuthEndpoint checks auth_path through Caddy: methods,
// credential forms, refusals and throttling.
func TestCallbackE2EAuthEndpoint(t *testing.T) {
	skipShort(t)
	g := startCallbackGateway(t)
	resp, err := g.tester.Client.Get(cbE2EAuthURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET auth_path: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}

	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(cbE2EClientID+":"+cbE2EClientSecret))
	for name, args := range map[string][]string{
		"basic": {"Authorization", basic},
		"json":  {"Content-Type", "application/json"},
		"form":  {"Content-Type", "application/x-www-form-urlencoded"},
	} {
		var body []byte
		switch name {
		case "json":
			body, _ = json.Marshal(map[string]string{"client_id": cbE2EClientID, "client_secret": cbE2EClientSecret})
		case "form":
			body = []byte("client_id=" + cbE2EClientID + "&client_secret=" + cbE2EClientSecret)
		}
		resp, b := g.post(t, cbE2EAuthURL, body, args...)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" || !bytes.Contains(b, []byte(`"token_type":"Bearer","expires_in":900`)) {
			t.Errorf("%s: %d %s", name, resp.StatusCode, b)
		}
	}

	// Five refusals, then a sixth that starts the slow-down: even good
	// credentials are answered 429 for a while.
	for i := range 6 {
		resp, body := g.post(t, cbE2EAuthURL, nil, "Client-Id", cbE2EClientID, "Client-Secret", fmt.Sprint("guess-", i))
		wantCallbackError(t, resp, body, http.StatusUnauthorized, "invalid client credentials")
	}
	resp, body := g.post(t, cbE2EAuthURL, nil, "Client-Id", cbE2EClientID, "Client-Secret", cbE2EClientSecret)
	wantCallbackError(t, resp, body, http.StatusTooManyRequests, "too many failed authentication attempts")
	if resp.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	time.Sleep(1100 * time.Millisecond)
	if tok := g.token(t); tok == "" {
		t.Error("no token after the delay")
	}
}

// callbackKID returns the kid of a PEM public key.
func callbackKID(t *testing.T, pemKey string) string {
	t.Helper()
	k, err := token.ParseVerifyKey(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	return k.KID()
}

// authAnswer is the auth_url's answer.
type authAnswer struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}
