package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/whsign"
)

// The regulated-data end-to-end tests (issue 12): masking and signing of
// the callback hand-off, and credential rotation with Atlas calling
// throughout. Like the other e2e tests they run the in-process Caddy,
// one at a time.

const (
	regClientID     = "atlas-regulated-e2e"
	regSecretOld    = "reg-client-secret-old-5c1f08"
	regSecretNew    = "reg-client-secret-new-a93e7d"
	regSigningOld   = "reg-hmac-signing-key-old-0123456789abcdef"
	regSigningNew   = "reg-hmac-signing-key-new-fedcba9876543210"
	regMaskSettings = `mask aadhaar_number
		mask pan_number
		mask name redact
		mask name_as_per_pan redact`
)

var (
	regAuthURL     = gatewayURL + "/hooks/atlas/auth"
	regCallbackURL = gatewayURL + "/hooks/atlas"
)

// regApp is the app behind the gateway: it records each delivery and
// answers status (202 unless set).
type regApp struct {
	*httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	got    []regDelivery
}

type regDelivery struct {
	header http.Header
	body   []byte
	at     time.Time
}

func newRegApp(t *testing.T) *regApp {
	t.Helper()
	a := new(regApp)
	a.status.Store(http.StatusAccepted)
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.got = append(a.got, regDelivery{header: r.Header.Clone(), body: body, at: time.Now()})
		a.mu.Unlock()
		w.WriteHeader(int(a.status.Load()))
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *regApp) deliveries() []regDelivery {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]regDelivery(nil), a.got...)
}

// regConfig is a callback-only gateway; callback holds the lines of the
// callback block, atlas more lines of the atlas block, next the handler
// after atlas.
func regConfig(atlas, callback, next string) string {
	return caddyfile("\tgrace_period 5s\n", fmt.Sprintf(`	route {
		atlas {
			%s
			callback /hooks/atlas {
				client_id {env.REG_CLIENT_ID}
				%s
			}
		}
		%s
	}
`, atlas, callback, next))
}

func regEnv(t *testing.T) {
	t.Setenv("REG_CLIENT_ID", regClientID)
	t.Setenv("REG_SECRET_OLD", regSecretOld)
	t.Setenv("REG_SECRET_NEW", regSecretNew)
	t.Setenv("REG_SIGNING_OLD", regSigningOld)
	t.Setenv("REG_SIGNING_NEW", regSigningNew)
}

// regSecretFile writes a fresh whsec_ secret to a file and returns the
// secret and the file.
func regSecretFile(t *testing.T) (string, string) {
	t.Helper()
	sec := whsign.NewSecret()
	f := filepath.Join(t.TempDir(), "whsec")
	if err := os.WriteFile(f, []byte(sec+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return sec, f
}

// regPayload is a batch as the simulator delivers it, and the identity
// numbers in it.
func regPayload(t *testing.T, sim *atlastest.Server) (batch string, payload []byte, numbers []string) {
	t.Helper()
	ids := []string{"reg-1-aadhaar", "reg-1-pan", "reg-2-aadhaar", "reg-2-pan", "reg-3-passport"}
	batch = sim.CreateBatch(ids...)
	payload, err := sim.BatchPayload(batch)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		var fd map[string]json.RawMessage
		if err := json.Unmarshal(sim.FileData(id), &fd); err != nil {
			t.Fatal(err)
		}
		numbers = append(numbers, identityNumbers(t, fd)...)
	}
	if len(numbers) != 4 {
		t.Fatalf("%d identity numbers in the batch, want 4", len(numbers))
	}
	return batch, payload, numbers
}

func sha256ID(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:16])
}

// checkSignedMasked checks a delivery: masked, signed with one of
// secrets, webhook-id the callback id of Atlas's payload.
func checkSignedMasked(t *testing.T, d regDelivery, payload []byte, numbers []string, secrets ...string) {
	t.Helper()
	for _, n := range numbers {
		if bytes.Contains(d.body, []byte(n)) {
			t.Fatalf("the app received the identity number %q", n)
		}
	}
	if !json.Valid(d.body) || bytes.Equal(d.body, payload) {
		t.Fatalf("the app received %d bytes, not a masked payload", len(d.body))
	}
	id := sha256ID(payload)
	if got := d.header.Get("X-Atlas-Callback-Id"); got != id {
		t.Errorf("X-Atlas-Callback-Id %s, want the hash of Atlas's payload %s", got, id)
	}
	for _, s := range secrets {
		sec, err := whsign.ParseSecret(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := whsign.Verify(d.header, d.body, d.at, whsign.DefaultTolerance, sec)
		if err != nil || got != id {
			t.Errorf("webhook signature: id %q, %v", got, err)
		}
	}
	if n := len(strings.Fields(d.header.Get(whsign.HeaderSignature))); n != len(secrets) {
		t.Errorf("%d signatures, want %d", n, len(secrets))
	}
}

// TestE2ECallbackMaskedSigned delivers a batch through the synchronous
// hand-off with mask and two sign_deliveries secrets: the app receives
// the masked payload, signed twice, under Atlas's callback id; a
// client-sent webhook-signature does not reach it.
func TestE2ECallbackMaskedSigned(t *testing.T) {
	skipShort(t)
	regEnv(t)
	sec1, file1 := regSecretFile(t)
	sec2, file2 := regSecretFile(t)
	t.Setenv("REG_WHSEC2", sec2)
	app := newRegApp(t)
	tester := newTester(t)
	tester.InitServer(regConfig(regMaskSettings, fmt.Sprintf(`client_secret {env.REG_SECRET_OLD}
				signing_key {env.REG_SIGNING_OLD}
				sign_deliveries {file.%s}
				sign_deliveries {env.REG_WHSEC2}`, file1),
		"reverse_proxy "+app.Listener.Addr().String()), "caddyfile")

	sim := atlastest.NewServer(t, atlastest.Options{})
	batch, payload, numbers := regPayload(t, sim)
	target := atlastest.CallbackTarget{AuthURL: regAuthURL, CallbackURL: regCallbackURL, ClientID: regClientID, ClientSecret: regSecretOld}
	if d, err := sim.DeliverCallback(context.Background(), target, batch); err != nil {
		t.Fatalf("delivery: %v (%+v)", err, d)
	}
	got := app.deliveries()
	if len(got) != 1 {
		t.Fatalf("%d deliveries", len(got))
	}
	checkSignedMasked(t, got[0], payload, numbers, sec1, sec2)
	_ = file2

	// The official library verifies what the app received, with either
	// secret; a body altered in transit does not verify.
	tampered := regDelivery{header: got[0].header, body: bytes.Replace(got[0].body, []byte("XXXX"), []byte("XXXY"), 1)}
	for i, res := range standardWebhooksVerify(t, []regCheck{{sec1, got[0]}, {sec2, got[0]}, {sec1, tampered}}) {
		if want := i < 2; (res == "") != want {
			t.Errorf("standardwebhooks on delivery %d: %q", i, res)
		}
	}

	// A caller's own signature headers are replaced, not passed on.
	tok := regToken(t, tester.Client, regSecretOld)
	req, _ := http.NewRequest(http.MethodPost, regCallbackURL, bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Token", tok)
	req.Header.Set("Webhook-Signature", "v1,forged")
	req.Header.Set("Webhook-Timestamp", "1")
	resp, err := tester.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got = app.deliveries()
	last := got[len(got)-1]
	if strings.Contains(last.header.Get(whsign.HeaderSignature), "forged") || last.header.Get(whsign.HeaderTimestamp) == "1" {
		t.Errorf("client-sent webhook headers reached the app: %v", last.header)
	}
	checkSignedMasked(t, last, payload, numbers, sec1, sec2)
}

// TestE2EDurableMaskedSigned delivers a batch in durable mode: the spool
// files never hold an identity number, and each delivery attempt is
// signed afresh (the app refuses the first).
func TestE2EDurableMaskedSigned(t *testing.T) {
	skipShort(t)
	regEnv(t)
	sec, file := regSecretFile(t)
	app := newRegApp(t)
	app.status.Store(http.StatusServiceUnavailable)
	dir := filepath.Join(t.TempDir(), "spool")
	tester := newTester(t)
	tester.InitServer(regConfig(regMaskSettings, fmt.Sprintf(`client_secret {env.REG_SECRET_OLD}
				signing_key {env.REG_SIGNING_OLD}
				sign_deliveries {file.%s}
				spool %s
				deliver_to %s/hooks/atlas
				retry_backoff 1500ms 1500ms`, file, dir, app.URL),
		`respond "the next handler must not run in durable mode" 299`), "caddyfile")

	sim := atlastest.NewServer(t, atlastest.Options{})
	batch, payload, numbers := regPayload(t, sim)
	target := atlastest.CallbackTarget{AuthURL: regAuthURL, CallbackURL: regCallbackURL, ClientID: regClientID, ClientSecret: regSecretOld}
	d, err := sim.DeliverCallback(context.Background(), target, batch)
	if err != nil || d.CallbackStatus != http.StatusAccepted {
		t.Fatalf("delivery: %v (%+v)", err, d)
	}
	if !bytes.Contains(d.Body, []byte(sha256ID(payload))) {
		t.Errorf("the acknowledgement %s does not name Atlas's callback id", d.Body)
	}
	regEventually(t, 5*time.Second, "a first, refused attempt", func() bool { return len(app.deliveries()) >= 1 })
	app.status.Store(http.StatusNoContent)
	regEventually(t, 10*time.Second, "a second attempt", func() bool { return len(app.deliveries()) >= 2 })
	got := app.deliveries()
	for _, g := range got[:2] {
		checkSignedMasked(t, g, payload, numbers, sec)
	}
	if got[0].header.Get(whsign.HeaderTimestamp) == got[1].header.Get(whsign.HeaderTimestamp) ||
		got[0].header.Get(whsign.HeaderSignature) == got[1].header.Get(whsign.HeaderSignature) {
		t.Errorf("the two attempts carry the same timestamp or signature: not signed per attempt")
	}

	// Nothing on disk holds an identity number or a name of the payload.
	err = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range numbers {
			if bytes.Contains(raw, []byte(n)) {
				t.Errorf("%s holds the identity number %q", path, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// regToken gets a callback token at the auth_url with secret.
func regToken(t *testing.T, c *http.Client, secret string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, regAuthURL, nil)
	req.Header.Set("Client-Id", regClientID)
	req.Header.Set("Client-Secret", secret)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&r) != nil || r.AccessToken == "" {
		t.Fatalf("auth with a secret: %d", resp.StatusCode)
	}
	return r.AccessToken
}

func regEventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestE2ECallbackRotation runs the rotation procedure of
// docs/operations.md for the client secret and the signing key, with the
// simulator delivering callbacks all along: no callback is refused. A
// token issued under the old signing key keeps working while it is the
// previous_signing_key, and stops once that is removed.
func TestE2ECallbackRotation(t *testing.T) {
	skipShort(t)
	regEnv(t)
	app := newRegApp(t)
	tester := newTester(t)
	load := func(callback string) {
		t.Helper()
		tester.InitServer(regConfig("", callback, "reverse_proxy "+app.Listener.Addr().String()), "caddyfile")
	}
	load(`client_secret {env.REG_SECRET_OLD}
				signing_key {env.REG_SIGNING_OLD}`)

	// Atlas delivers on fresh connections, and tries a delivery once more
	// when a connection failed before any answer came: on Linux, Caddy
	// hands its listening socket to the new config with SO_REUSEPORT, and
	// a connection being opened at that instant can be reset by the
	// kernel (see docs/operations.md). An answer other than 2xx is a refusal,
	// and there must be none; every delivery must succeed by its third
	// try, the tries 50 and 100 ms apart (back to back, both could land
	// in one reload's handover on a loaded machine).
	sim := atlastest.NewServer(t, atlastest.Options{CallbackHTTPClient: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true},
	}})
	batch := sim.CreateBatch("rot-1-pan", "rot-1-aadhaar")
	var secret atomic.Value
	secret.Store(regSecretOld)
	var delivered, refused, resets atomic.Int64
	var failures sync.Map
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				var d atlastest.Delivery
				var err error
				for try := 1; try <= 3; try++ {
					if try > 1 {
						time.Sleep(time.Duration(try-1) * 50 * time.Millisecond)
					}
					target := atlastest.CallbackTarget{AuthURL: regAuthURL, CallbackURL: regCallbackURL,
						ClientID: regClientID, ClientSecret: secret.Load().(string)}
					d, err = sim.DeliverCallback(ctx, target, batch)
					noAnswer := d.AuthStatus == 0 || (d.AuthStatus == http.StatusOK && d.CallbackStatus == 0)
					if err == nil || !noAnswer || ctx.Err() != nil {
						break
					}
					resets.Add(1)
				}
				switch {
				case err == nil:
					delivered.Add(1)
				case ctx.Err() == nil:
					refused.Add(1)
					failures.Store(fmt.Sprintf("auth %d, callback %d: %v", d.AuthStatus, d.CallbackStatus, err), true)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	step := func(name string, callback string) {
		t.Helper()
		before := delivered.Load()
		load(callback)
		regEventually(t, 5*time.Second, "deliveries after "+name, func() bool { return delivered.Load() > before+5 })
	}

	// The client secret: both accepted, Atlas switches, the old one goes.
	step("adding the new client secret", `client_secret {env.REG_SECRET_NEW}
				client_secret {env.REG_SECRET_OLD}
				signing_key {env.REG_SIGNING_OLD}`)
	secret.Store(regSecretNew)
	time.Sleep(50 * time.Millisecond)
	held := regToken(t, tester.Client, regSecretOld) // still accepted
	step("removing the old client secret", `client_secret {env.REG_SECRET_NEW}
				signing_key {env.REG_SIGNING_OLD}`)
	req, _ := http.NewRequest(http.MethodPost, regAuthURL, nil)
	req.Header.Set("Client-Id", regClientID)
	req.Header.Set("Client-Secret", regSecretOld)
	if resp, err := tester.Client.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the removed client secret: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The signing key: the new one signs, the old one verifies.
	step("a new signing key", `client_secret {env.REG_SECRET_NEW}
				signing_key {env.REG_SIGNING_NEW}
				previous_signing_key {env.REG_SIGNING_OLD}`)
	callWith := func(tok string) int {
		t.Helper()
		payload, _ := sim.BatchPayload(batch)
		req, _ := http.NewRequest(http.MethodPost, regCallbackURL, bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Token", tok)
		resp, err := tester.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := callWith(held); st != http.StatusAccepted {
		t.Errorf("a token of the previous signing key: %d, want it accepted", st)
	}
	fresh := regToken(t, tester.Client, regSecretNew)
	step("removing the previous signing key", `client_secret {env.REG_SECRET_NEW}
				signing_key {env.REG_SIGNING_NEW}`)
	if st := callWith(held); st != http.StatusUnauthorized {
		t.Errorf("a token of the removed signing key: %d, want 401", st)
	}
	if st := callWith(fresh); st != http.StatusAccepted {
		t.Errorf("a token of the new signing key: %d", st)
	}

	cancel()
	wg.Wait()
	failures.Range(func(k, _ any) bool {
		t.Errorf("refused: %s", k)
		return true
	})
	t.Logf("%d callbacks delivered during the rotation, %d refused; %d connections reset by a reload, tried again",
		delivered.Load(), refused.Load(), resets.Load())
	if refused.Load() != 0 {
		t.Errorf("%d callbacks refused during the rotation", refused.Load())
	}
}

// TestE2EAdminBodyMasked stores a dead letter without mask, then reloads
// with mask: ?body=1 shows the stored body masked by the rules now in
// force, the listing shows no body at all, and each inspection is
// logged without the body.
func TestE2EAdminBodyMasked(t *testing.T) {
	skipShort(t)
	regEnv(t)
	app := newRegApp(t)
	app.status.Store(http.StatusServiceUnavailable)
	dir := filepath.Join(t.TempDir(), "spool")
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	tester := newTester(t)
	load := func(atlas string) {
		t.Helper()
		cfg := regConfig(atlas, fmt.Sprintf(`client_secret {env.REG_SECRET_OLD}
				signing_key {env.REG_SIGNING_OLD}
				spool %s
				deliver_to %s/hooks/atlas
				max_attempts 1`, dir, app.URL), `respond "the next handler must not run in durable mode" 299`)
		cfg = strings.Replace(cfg, "grace_period 5s\n", fmt.Sprintf("grace_period 5s\n\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}\n", logFile), 1)
		tester.InitServer(cfg, "caddyfile")
	}
	load("")

	sim := atlastest.NewServer(t, atlastest.Options{})
	batch, payload, numbers := regPayload(t, sim)
	target := atlastest.CallbackTarget{AuthURL: regAuthURL, CallbackURL: regCallbackURL, ClientID: regClientID, ClientSecret: regSecretOld}
	if d, err := sim.DeliverCallback(context.Background(), target, batch); err != nil {
		t.Fatalf("delivery: %v (%+v)", err, d)
	}
	id := sha256ID(payload)
	admin := adminURL + "/atlas/callbacks"
	get := func(url string) []byte {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
		}
		return b
	}
	regEventually(t, 5*time.Second, "a dead letter", func() bool {
		return bytes.Contains(get(admin+"?state=dead"), []byte(id))
	})
	// Without mask, the stored body is Atlas's, and ?body=1 shows it.
	if b := get(admin + "/" + id + "?body=1"); !bytes.Contains(b, []byte(numbers[0])) {
		t.Fatalf("?body=1 without mask does not show the stored body: %.300s", b)
	}

	load(regMaskSettings)
	b := get(admin + "/" + id + "?body=1")
	for _, n := range numbers {
		if bytes.Contains(b, []byte(n)) {
			t.Errorf("?body=1 with mask shows the identity number %q", n)
		}
	}
	var item struct {
		Body json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(b, &item); err != nil || !bytes.Contains(item.Body, []byte(`"XXXXXXXX`)) || !bytes.Contains(item.Body, []byte(`"REDACTED"`)) {
		t.Fatalf("?body=1 with mask: %v %.300s", err, b)
	}
	if l := get(admin); bytes.Contains(l, []byte(`"body"`)) {
		t.Errorf("the listing holds a body: %.300s", l)
	}

	// Two inspections, two log lines: who and which, never the body.
	var lines []string
	regEventually(t, 3*time.Second, "the inspection log lines", func() bool {
		raw, _ := os.ReadFile(logFile)
		lines = lines[:0]
		for _, l := range strings.Split(string(raw), "\n") {
			if strings.Contains(l, `"msg":"callback body inspected"`) {
				lines = append(lines, l)
			}
		}
		return len(lines) >= 2
	})
	for _, l := range lines {
		if !strings.Contains(l, `"callback_id":"`+id+`"`) || !strings.Contains(l, `"remote_addr":"127.0.0.1:`) {
			t.Errorf("inspection log line without the id or the remote address: %s", l)
		}
		for _, n := range numbers {
			if strings.Contains(l, n) {
				t.Errorf("the inspection log line holds the body: %s", l)
			}
		}
	}
	if !strings.Contains(lines[0], `"masked":false`) || !strings.Contains(lines[len(lines)-1], `"masked":true`) {
		t.Errorf("the log lines do not say whether the body was masked: %q", lines)
	}
}

// regCheck is a delivery for the standardwebhooks package to verify with
// secret.
type regCheck struct {
	secret string
	d      regDelivery
}

// standardWebhooksVerify has scripts/interop/webhook-verify.mjs (the
// official standardwebhooks npm package) verify each delivery: "" for one
// that verifies, else the library's error. It skips the test without node
// or the package.
func standardWebhooksVerify(t *testing.T, checks []regCheck) []string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	if _, err := os.Stat(filepath.Join("..", "scripts", "interop", "node_modules", "standardwebhooks")); err != nil {
		t.Skip("scripts/interop/node_modules/standardwebhooks is missing; run `npm ci --prefix scripts/interop`")
	}
	type check struct {
		Secret     string            `json:"secret"`
		Headers    map[string]string `json:"headers"`
		BodyBase64 string            `json:"body_base64"`
	}
	in := struct {
		Checks []check `json:"checks"`
	}{}
	for _, c := range checks {
		h := map[string]string{}
		for _, k := range []string{whsign.HeaderID, whsign.HeaderTimestamp, whsign.HeaderSignature} {
			h[strings.ToLower(k)] = c.d.header.Get(k)
		}
		in.Checks = append(in.Checks, check{c.secret, h, base64.StdEncoding.EncodeToString(c.d.body)})
	}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("..", "scripts", "interop", "webhook-verify.mjs"))
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("webhook-verify.mjs: %v", err)
	}
	var ans struct {
		Results []struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &ans); err != nil || len(ans.Results) != len(checks) {
		t.Fatalf("webhook-verify.mjs answered %q: %v", out, err)
	}
	res := make([]string, len(checks))
	for i, r := range ans.Results {
		if !r.OK {
			res[i] = r.Error + " "
		}
	}
	return res
}
