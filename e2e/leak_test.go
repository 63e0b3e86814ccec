package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/whsign"
)

// The leak audit runs a gateway with every route (extracts, upload,
// auth_path, callback) in a real Caddy whose logs are at DEBUG and written
// as JSON to files, with an access log on the site as a platform team
// would have. It drives every route through its successes and failures,
// records every response (status, headers, body) and every request that
// reaches the app, and then looks for each configured secret and each
// token issued during the run in all of it. A secret or token anywhere it
// does not belong fails the test, naming the log line and JSON key.
//
// With `mask` configured for them, the identity values of the payloads
// (Aadhaar and PAN numbers, names) are searched for too, everywhere:
// logs, every answer (extracts, callbacks, the admin API's listings and
// ?body=1, the metrics), what reaches the app, the CLI's output and the
// spool's files. A second, durable callback route provides a dead
// letter for the admin API and the CLI.

const (
	leakAtlasClientID     = "leak-atlas-client"
	leakAtlasClientSecret = "leak-atlas-secret-5d1e9c0b7a"
	leakWrongAtlasSecret  = "leak-wrong-atlas-secret-3f8a62d4c1"
	leakWrongCBSecret     = "leak-wrong-callback-secret-e94b07"
	leakCBClientID        = "leak-callback-client"
	leakCBClientSecret    = "leak-callback-secret-a07c4e21b9"
	leakCBSigningKey      = "leak-signing-key-6b2f0e8d4c1a9f7e3b5d"
)

var (
	leakAuthURL     = gatewayURL + "/hooks/atlas/auth"
	leakCallbackURL = gatewayURL + "/hooks/atlas"
)

// leakRawAccessLog runs the audit with a bare access log, which Caddy
// writes with every request header but Authorization and Cookie.
var leakRawAccessLog = flag.Bool("leak.rawaccesslog", false,
	"TestLeakAudit: use a site `log` without the filter docs/security.md recommends")

// leakAccessLogFormat is the access log format docs/security.md recommends:
// Caddy logs each request's headers as they arrived, before any handler
// runs, redacting only Authorization, Proxy-Authorization and Cookie; the
// credentials Atlas sends in Client-Secret (auth_path) and Token (the
// callback) are deleted by this filter.
const leakAccessLogFormat = `format filter {
			wrap json
			request>headers>Client-Secret delete
			request>headers>Token delete
		}`

// leakConfig is the audited gateway; logDir receives caddy.log (every
// logger, DEBUG) and access.log (the site's access log). extra goes into
// the atlas block.
func leakConfig(logDir, endpoint, appAddr, extra string) string {
	format := leakAccessLogFormat
	if *leakRawAccessLog {
		format = "format json"
	}
	return caddyfile(fmt.Sprintf(`	grace_period 1ns
	log {
		output file %s/caddy.log
		format json
		level DEBUG
	}
`, logDir), fmt.Sprintf(`	log {
		output file %[1]s/access.log
		%[5]s
	}
	atlas {
		endpoint      %[2]s
		client_id     {env.LEAK_ATLAS_CLIENT_ID}
		client_secret {env.LEAK_ATLAS_CLIENT_SECRET}
		callback /hooks/atlas {
			client_id     {env.LEAK_CB_CLIENT_ID}
			client_secret {env.LEAK_CB_CLIENT_SECRET}
			signing_key   {env.LEAK_CB_SIGNING_KEY}
			sign_deliveries {env.LEAK_WHSEC}
		}
		%[6]s
		%[4]s
	}
	atlas {
		%[6]s
		callback /hooks/durable {
			client_id     {env.LEAK_CB_CLIENT_ID}
			client_secret {env.LEAK_CB_CLIENT_SECRET}
			signing_key   {env.LEAK_CB_SIGNING_KEY}
			spool         %[1]s/spool
			deliver_to    http://%[3]s/refuse
			max_attempts  1
		}
	}
	reverse_proxy %[3]s
`, logDir, endpoint, appAddr, extra, format, leakMaskSettings))
}

// leakMaskSettings masks every identity value of the audited payloads:
// their identity numbers, and the names (an Aadhaar address holds the
// father's name).
const leakMaskSettings = `mask aadhaar_number
		mask pan_number
		mask name redact
		mask name_as_per_pan redact
		mask father_name redact
		mask address redact
		mask formatted_address redact
		mask legal_name redact`

// leakIdentityNeedles are the identity values of the audited batch, as
// Atlas extracts them, and the Aadhaar numbers without their spaces.
func leakIdentityNeedles(t *testing.T, sim *atlastest.Server, ids ...string) []leakNeedle {
	t.Helper()
	var out []leakNeedle
	for _, id := range ids {
		var fd map[string]json.RawMessage
		if err := json.Unmarshal(sim.FileData(id), &fd); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"aadhaar_number", "pan_number", "name", "name_as_per_pan", "father_name", "legal_name"} {
			var f struct{ Value string }
			if raw, ok := fd[name]; !ok || json.Unmarshal(raw, &f) != nil || f.Value == "" {
				continue
			}
			out = append(out, leakNeedle{what: "the " + name + " of " + id, value: f.Value})
			if name == "aadhaar_number" {
				out = append(out, leakNeedle{what: "the aadhaar_number of " + id + " (digits)", value: strings.ReplaceAll(f.Value, " ", "")})
			}
		}
	}
	return out
}

// leakRecorder keeps everything the clients of the gateway and the app
// behind it were shown.
type leakRecorder struct {
	mu        sync.Mutex
	exchanges []leakExchange
}

// leakExchange is one response, or one request that reached the app.
type leakExchange struct {
	label string // e.g. "POST /hooks/atlas/auth (basic)"
	text  string // status line, headers and body
}

func (r *leakRecorder) add(label, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exchanges = append(r.exchanges, leakExchange{label, text})
}

// send makes a request through the gateway and records the response.
func (r *leakRecorder) send(t *testing.T, client *http.Client, label, method, url string, body []byte, headers ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading the answer: %v", label, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", resp.Status)
	_ = resp.Header.Write(&b)
	_ = resp.Trailer.Write(&b)
	b.Write(out)
	r.add(label, b.String())
	return resp.StatusCode, out
}

// leakNeedle is a string that must not appear; except names the one
// exchange allowed to hold it (the answer that issued a token).
type leakNeedle struct {
	what   string
	value  string
	except string
}

func TestLeakAudit(t *testing.T) {
	skipShort(t)
	logDir := t.TempDir()
	t.Setenv("LEAK_ATLAS_CLIENT_ID", leakAtlasClientID)
	t.Setenv("LEAK_ATLAS_CLIENT_SECRET", leakAtlasClientSecret)
	t.Setenv("LEAK_CB_CLIENT_ID", leakCBClientID)
	t.Setenv("LEAK_CB_CLIENT_SECRET", leakCBClientSecret)
	t.Setenv("LEAK_CB_SIGNING_KEY", leakCBSigningKey)
	leakWhsec := whsign.NewSecret()
	t.Setenv("LEAK_WHSEC", leakWhsec)

	rec := new(leakRecorder)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s\n", r.Method, r.URL)
		_ = r.Header.Write(&b)
		b.Write(body)
		rec.add("app received "+r.Method+" "+r.URL.Path, b.String())
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"stored":true}`)
	}))
	t.Cleanup(app.Close)

	sim := atlastest.NewServer(t, atlastest.Options{ClientID: leakAtlasClientID, ClientSecret: leakAtlasClientSecret})
	batch := sim.CreateBatch("pan-leak-1", "aadhaar-leak-2", "gst-leak-3")
	identities := leakIdentityNeedles(t, sim, "pan-leak-1", "aadhaar-leak-2", "gst-leak-3")
	if len(identities) < 6 {
		t.Fatalf("%d identity values in the audited batch", len(identities))
	}

	tester := newTester(t)
	tester.InitServer(leakConfig(logDir, sim.URL, app.Listener.Addr().String(), ""), "caddyfile")
	c := tester.Client
	requests := 0
	send := func(label, method, url string, body []byte, headers ...string) (int, []byte) {
		t.Helper()
		requests++
		return rec.send(t, c, label, method, url, body, headers...)
	}
	want := func(label string, got, status int, body []byte) {
		t.Helper()
		if got != status {
			t.Fatalf("%s: status %d, want %d: %s", label, got, status, body)
		}
	}

	// The outbound routes.
	status, body := send("extracts", http.MethodGet, gatewayURL+"/atlas/extracts?batch_id="+batch, nil, "Token", "caller-token")
	want("extracts", status, http.StatusOK, body)
	status, body = send("extracts without batch_id", http.MethodGet, gatewayURL+"/atlas/extracts", nil)
	want("extracts without batch_id", status, http.StatusBadRequest, body)
	status, body = send("extracts all=1", http.MethodGet, gatewayURL+"/atlas/extracts?all=1&batch_id="+batch, nil)
	want("extracts all=1", status, http.StatusOK, body)
	upload := []byte(`{"product_type":"LOAN_APP","file_urls":[{"file_url":"https://files.example.com/a.pdf?sig=1","document_id":"pan-leak-9"}]}`)
	status, body = send("upload", http.MethodPost, gatewayURL+"/atlas/multiupload", upload, "Content-Type", "application/json")
	want("upload", status, http.StatusCreated, body)
	status, body = send("upload invalid", http.MethodPost, gatewayURL+"/atlas/multiupload", []byte(`{"product_type":""}`), "Content-Type", "application/json")
	want("upload invalid", status, http.StatusBadRequest, body)
	sim.RevokeAll()
	status, body = send("extracts after revocation", http.MethodGet, gatewayURL+"/atlas/extracts?batch_id="+batch, nil)
	want("extracts after revocation", status, http.StatusOK, body)
	if n := sim.Calls("authtoken"); n != 2 {
		t.Fatalf("%d authtoken calls, want 2: the 401 replay was not exercised", n)
	}

	// auth_path, every way of presenting credentials, right and wrong.
	var cbTokens []leakNeedle
	auth := func(label string, wantStatus int, body []byte, headers ...string) {
		t.Helper()
		label = "auth_path (" + label + ")"
		status, out := send(label, http.MethodPost, leakAuthURL, body, headers...)
		want(label, status, wantStatus, out)
		if status != http.StatusOK {
			return
		}
		var r authAnswer
		if err := json.Unmarshal(out, &r); err != nil || r.AccessToken == "" {
			t.Fatalf("%s: no token in %s", label, out)
		}
		cbTokens = append(cbTokens, leakNeedle{"callback token", r.AccessToken, label})
	}
	basic := func(id, secret string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
	}
	auth("headers", http.StatusOK, nil, "Client-Id", leakCBClientID, "Client-Secret", leakCBClientSecret)
	auth("headers, wrong secret", http.StatusUnauthorized, nil, "Client-Id", leakCBClientID, "Client-Secret", leakWrongCBSecret)
	auth("basic", http.StatusOK, nil, "Authorization", basic(leakCBClientID, leakCBClientSecret))
	auth("basic, wrong secret", http.StatusUnauthorized, nil, "Authorization", basic(leakCBClientID, leakWrongCBSecret))
	auth("json", http.StatusOK, fmt.Appendf(nil, `{"client_id":%q,"client_secret":%q}`, leakCBClientID, leakCBClientSecret),
		"Content-Type", "application/json")
	auth("form", http.StatusOK, []byte("client_id="+leakCBClientID+"&client_secret="+leakCBClientSecret),
		"Content-Type", "application/x-www-form-urlencoded")
	auth("form, wrong secret", http.StatusUnauthorized, []byte("client_id="+leakCBClientID+"&client_secret="+leakWrongCBSecret),
		"Content-Type", "application/x-www-form-urlencoded")

	// The callback route.
	payload, err := sim.BatchPayload(batch)
	if err != nil {
		t.Fatal(err)
	}
	tok := func(i int) string { return cbTokens[i].value }
	status, body = send("callback, Token", http.MethodPost, leakCallbackURL, payload, "Content-Type", "application/json", "Token", tok(0))
	want("callback, Token", status, http.StatusAccepted, body)
	status, body = send("callback, Bearer", http.MethodPost, leakCallbackURL, payload, "Content-Type", "application/json", "Authorization", "Bearer "+tok(1))
	want("callback, Bearer", status, http.StatusAccepted, body)
	forged := tok(2)[:strings.LastIndexByte(tok(2), '.')+1] + "c2lnbmF0dXJlLW9mLW5vLWtleQ"
	status, body = send("callback, forged token", http.MethodPost, leakCallbackURL, payload, "Content-Type", "application/json", "Token", forged)
	want("callback, forged token", status, http.StatusUnauthorized, body)
	status, body = send("callback, bad payload", http.MethodPost, leakCallbackURL, []byte(`{"data":[{"document_id":1}]}`),
		"Content-Type", "application/json", "Token", tok(2))
	want("callback, bad payload", status, http.StatusBadRequest, body)
	status, body = send("callback, wrong content type", http.MethodPost, leakCallbackURL, payload, "Content-Type", "text/plain", "Token", tok(3))
	want("callback, wrong content type", status, http.StatusUnsupportedMediaType, body)

	// The durable route: the callback is stored masked, its one delivery
	// refused, so it is a dead letter whose body the admin API shows.
	durableURL := gatewayURL + "/hooks/durable"
	status, body = send("durable callback", http.MethodPost, durableURL, payload, "Content-Type", "application/json", "Token", tok(0))
	want("durable callback", status, http.StatusAccepted, body)
	var ack struct {
		CallbackID string `json:"callback_id"`
	}
	if err := json.Unmarshal(body, &ack); err != nil || ack.CallbackID == "" {
		t.Fatalf("durable ack %s", body)
	}
	admin := adminURL + "/atlas/callbacks"
	// The admin endpoint's requests are not in the site's access log.
	adminGet := func(label, url string) (int, []byte) {
		t.Helper()
		return rec.send(t, c, label, http.MethodGet, url, nil)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, body = adminGet("admin list dead", admin+"?state=dead")
		if bytes.Contains(body, []byte(ack.CallbackID)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	want("admin list dead", status, http.StatusOK, body)
	if !bytes.Contains(body, []byte(ack.CallbackID)) {
		t.Fatalf("the durable callback is not a dead letter: %s", body)
	}
	status, body = adminGet("admin list", admin)
	want("admin list", status, http.StatusOK, body)
	status, body = adminGet("admin item", admin+"/"+ack.CallbackID)
	want("admin item", status, http.StatusOK, body)
	status, body = adminGet("admin item with body", admin+"/"+ack.CallbackID+"?body=1")
	want("admin item with body", status, http.StatusOK, body)
	if !bytes.Contains(body, []byte(`"body":{`)) || !bytes.Contains(body, []byte("REDACTED")) {
		t.Fatalf("?body=1 shows no masked body: %s", body)
	}
	for _, args := range [][]string{
		{"callbacks", "list", "--address", adminAddr},
		{"callbacks", "list", "--state", "dead", "--json", "--address", adminAddr},
	} {
		out, err := runAtlasCLI(t, args...)
		if err != nil {
			t.Fatalf("caddy atlas %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		rec.add("CLI: caddy atlas "+strings.Join(args, " "), out)
	}
	status, body = adminGet("metrics", adminURL+"/metrics")
	want("metrics", status, http.StatusOK, body)
	if !bytes.Contains(body, []byte("caddy_atlas_callbacks_total")) {
		t.Fatal("the metrics hold no caddy_atlas series")
	}

	// Credentials Atlas refuses: the gateway reloaded with a wrong secret
	// (and another timeout, since Caddy ignores a load of the same JSON).
	t.Setenv("LEAK_ATLAS_CLIENT_SECRET", leakWrongAtlasSecret)
	tester.InitServer(leakConfig(logDir, sim.URL, app.Listener.Addr().String(), "timeout 29s"), "caddyfile")
	status, body = send("extracts, credentials refused", http.MethodGet, gatewayURL+"/atlas/extracts?batch_id="+batch, nil)
	want("extracts, credentials refused", status, http.StatusBadGateway, body)

	// Access log lines are written after the response is sent; wait for
	// one per request.
	deadline = time.Now().Add(3 * time.Second)
	for leakCountLines(t, filepath.Join(logDir, "access.log")) < requests && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := leakCountLines(t, filepath.Join(logDir, "access.log")); n < requests {
		t.Fatalf("the access log has %d lines for %d requests", n, requests)
	}

	needles := []leakNeedle{
		{what: "the Atlas client secret", value: leakAtlasClientSecret},
		{what: "a wrong Atlas client secret", value: leakWrongAtlasSecret},
		{what: "a wrong callback client secret", value: leakWrongCBSecret},
		{what: "the callback client secret", value: leakCBClientSecret},
		{what: "the signing key", value: leakCBSigningKey},
		{what: "Basic credentials", value: strings.TrimPrefix(basic(leakCBClientID, leakCBClientSecret), "Basic ")},
		{what: "Basic credentials", value: strings.TrimPrefix(basic(leakCBClientID, leakWrongCBSecret), "Basic ")},
	}
	issued := sim.IssuedTokens()
	if len(issued) < 2 {
		t.Fatalf("the simulator issued %d Atlas tokens, want at least 2", len(issued))
	}
	for _, v := range issued {
		needles = append(needles, leakNeedle{what: "an Atlas token", value: v})
	}
	needles = append(needles, cbTokens...)
	needles = append(needles, leakNeedle{what: "the sign_deliveries secret", value: leakWhsec},
		leakNeedle{what: "the sign_deliveries key", value: strings.TrimPrefix(leakWhsec, whsign.Prefix)})
	needles = append(needles, identities...)
	// A token's signature alone is as good as the token (and is what a
	// log that truncates a token would most likely still hold).
	for _, n := range slices.Clone(needles) {
		if i := strings.LastIndexByte(n.value, '.'); strings.Count(n.value, ".") == 2 && len(n.value)-i > 16 {
			needles = append(needles, leakNeedle{n.what + " (signature)", n.value[i+1:], n.except})
		}
	}

	var leaks []string
	logLines := 0
	sawHandlerDebug := false
	sawInspection := false
	files, err := filepath.Glob(filepath.Join(logDir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 16<<20)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			logLines++
			if strings.Contains(line, `"level":"debug"`) && strings.Contains(line, `"logger":"http.handlers.atlas`) {
				sawHandlerDebug = true
			}
			if strings.Contains(line, `"msg":"callback body inspected"`) && strings.Contains(line, ack.CallbackID) &&
				strings.Contains(line, `"remote_addr":"127.0.0.1:`) {
				sawInspection = true
			}
			for _, nd := range needles {
				if strings.Contains(line, nd.value) {
					leaks = append(leaks, fmt.Sprintf("%s in %s line %d, %s", nd.what, filepath.Base(file), n, leakKeys(line, nd.value)))
				}
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	// The spool's files: the durable route stores bodies masked.
	spooled := 0
	err = filepath.Walk(filepath.Join(logDir, "spool"), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		spooled += len(raw)
		for _, nd := range identities {
			if bytes.Contains(raw, []byte(nd.value)) {
				leaks = append(leaks, fmt.Sprintf("%s in the spool file %s", nd.what, filepath.Base(path)))
			}
		}
		return nil
	})
	if err != nil || spooled == 0 {
		t.Fatalf("reading the spool: %v (%d bytes)", err, spooled)
	}
	for _, ex := range rec.exchanges {
		for _, nd := range needles {
			if ex.label != nd.except && strings.Contains(ex.text, nd.value) {
				leaks = append(leaks, fmt.Sprintf("%s in %s:\n%s", nd.what, ex.label, truncateForLog(ex.text, 2000)))
			}
		}
	}
	if !sawInspection {
		t.Errorf("no log line records the ?body=1 inspection of %s", ack.CallbackID)
	}
	if logLines == 0 || !sawHandlerDebug {
		t.Fatalf("%d log lines and no debug line of the atlas handler: the audit saw no DEBUG logs", logLines)
	}
	t.Logf("audited %d log lines and %d exchanges for %d secrets and tokens", logLines, len(rec.exchanges), len(needles))
	for _, l := range leaks {
		t.Errorf("leak: %s", l)
	}
}

// leakCountLines counts the lines of a file, 0 if it does not exist.
func leakCountLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// leakKeys describes a JSON log line holding needle: its logger and
// message, and the keys of the values that hold it, e.g.
// `logger "http.log.access.log0", msg "handled request", at request.headers.Client-Secret`.
func leakKeys(line, needle string) string {
	var v map[string]any
	if json.Unmarshal([]byte(line), &v) != nil {
		return "not JSON: " + truncateForLog(line, 500)
	}
	var paths []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case string:
			if strings.Contains(x, needle) {
				paths = append(paths, prefix)
			}
		case []any:
			for i, e := range x {
				walk(fmt.Sprintf("%s[%d]", prefix, i), e)
			}
		case map[string]any:
			for k, e := range x {
				walk(strings.TrimPrefix(prefix+"."+k, "."), e)
			}
		}
	}
	walk("", v)
	sort.Strings(paths)
	return fmt.Sprintf("logger %q, msg %q, at %s", v["logger"], v["msg"], strings.Join(paths, ", "))
}

// truncateForLog shortens a text for a test failure message.
func truncateForLog(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
