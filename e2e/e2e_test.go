package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
)

// The outbound routes' end-to-end tests: a gateway (startGateway) in
// front of the Atlas simulator and an httptest app.

const (
	e2eClientID     = "e2e-client"
	e2eClientSecret = "e2e-secret-do-not-leak-7f3a"
)

// get sends a GET through the gateway with optional header pairs.
func get(t *testing.T, tester *caddytest.Tester, path string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, gatewayURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(t, tester.Client, req)
}

func do(t *testing.T, client *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", req.URL, err)
	}
	return resp, body
}

// wantError checks a gateway error: its status, Atlas's JSON shape, a
// message containing want, and no secret.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, want string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want JSON", ct)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q is not Atlas's error shape: %v", body, err)
	}
	if !strings.Contains(e.Error, want) {
		t.Errorf("error = %q, want it to contain %q", e.Error, want)
	}
	if bytes.Contains(body, []byte(e2eClientSecret)) {
		t.Errorf("the response holds the client secret: %s", body)
	}
}

// extractsPage is the envelope of an extracts response.
type extractsPage struct {
	Data []struct {
		DocumentID string          `json:"document_id"`
		FileData   json.RawMessage `json:"file_data"`
	} `json:"data"`
	Page       int  `json:"page"`
	PerPage    int  `json:"per_page"`
	TotalPages int  `json:"total_pages"`
	TotalItems int  `json:"total_items"`
	HasNext    bool `json:"has_next"`
	HasPrev    bool `json:"has_prev"`
}

func decodePage(t *testing.T, body []byte) extractsPage {
	t.Helper()
	var p extractsPage
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decoding extracts page %q: %v", body, err)
	}
	return p
}

func docIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return ids
}

func TestE2EExtractsInjectsTokenAndStripsCallerCredentials(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch(docIDs("pan", 3)...)
	tester, app := startGateway(t, sim.URL, "")

	resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch+"&secret_param=x",
		"Token", "caller-token", "Authorization", "Bearer caller", "Cookie", "session=caller")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, body %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	page := decodePage(t, body)
	if len(page.Data) != 3 || page.TotalItems != 3 || page.Page != 1 {
		t.Errorf("page = %+v, want the batch's 3 documents", page)
	}

	hdr := sim.LastHeaders("extracts")
	if tok := hdr.Get("Token"); tok == "" || tok == "caller-token" {
		t.Errorf("Atlas got Token %q, want the gateway's token", tok)
	}
	for _, name := range []string{"Authorization", "Cookie"} {
		if v := hdr.Get(name); v != "" {
			t.Errorf("Atlas got the caller's %s header %q", name, v)
		}
	}
	if n := sim.Calls("authtoken"); n != 1 {
		t.Errorf("authtoken calls = %d, want 1", n)
	}
	if app.count() != 0 {
		t.Errorf("the app got %d requests for an atlas route", app.count())
	}

	// Everything else falls through to the app untouched.
	resp, body = get(t, tester, "/orders/42")
	if resp.StatusCode != http.StatusOK || string(body) != "app:/orders/42" {
		t.Errorf("fall-through: %d %q", resp.StatusCode, body)
	}
}

func TestE2EExtractsQueryValidation(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch(docIDs("doc", 60)...)
	tester, _ := startGateway(t, sim.URL, "")

	for _, tc := range []struct {
		query  string
		status int
		want   string
	}{
		{"", 400, "batch_id is required"},
		{"?batch_id=", 400, "batch_id is required"},
		{"?batch_id=%20%20", 400, "batch_id is required"},
		{"?batch_id=" + batch + "&page=0", 400, "page must be a positive integer"},
		{"?batch_id=" + batch + "&page=abc", 400, "page must be a positive integer"},
		{"?batch_id=" + batch + "&per_page=-3", 400, "per_page must be a positive integer"},
		{"?batch_id=" + batch + "&per_page=1.5", 400, "per_page must be a positive integer"},
		{"?batch_id=a&batch_id=b", 400, "batch_id is given more than once"},
		{"?batch_id=" + batch + "&all=maybe", 400, "all must be 1 or 0"},
	} {
		resp, body := get(t, tester, "/atlas/extracts"+tc.query)
		wantError(t, resp, body, tc.status, tc.want)
	}
	if n := sim.Calls("extracts") + sim.Calls("authtoken"); n != 0 {
		t.Errorf("Atlas was called %d times for requests answered locally", n)
	}

	// per_page above 50 is capped, and the response says so.
	resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch+"&per_page=500")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if p := decodePage(t, body); p.PerPage != 50 || len(p.Data) != 50 || !p.HasNext || p.TotalPages != 2 {
		t.Errorf("capped page: per_page %d, %d docs, has_next %v, total_pages %d", p.PerPage, len(p.Data), p.HasNext, p.TotalPages)
	}
	if got := sim.LastQuery("extracts").Get("per_page"); got != "50" {
		t.Errorf("Atlas got per_page %q, want 50", got)
	}

	// Page 2 is forwarded as asked.
	resp, body = get(t, tester, "/atlas/extracts?batch_id="+batch+"&page=2&per_page=50")
	if p := decodePage(t, body); resp.StatusCode != 200 || p.Page != 2 || len(p.Data) != 10 || !p.HasPrev {
		t.Errorf("page 2: %d %+v", resp.StatusCode, p)
	}

	// Atlas's own errors reach the client as Atlas sent them.
	resp, body = get(t, tester, "/atlas/extracts?batch_id=BATCH-00000-NOPE-20260101000000")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown batch: %d %s", resp.StatusCode, body)
	}

	req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/atlas/extracts?batch_id="+batch, nil)
	resp, body = do(t, tester.Client, req)
	wantError(t, resp, body, http.StatusMethodNotAllowed, "method not allowed")
	if allow := resp.Header.Get("Allow"); allow != "GET" {
		t.Errorf("Allow = %q, want GET", allow)
	}
}

func TestE2EReplaysOnceAfterRevocation(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch("pan-1", "aadhaar-2")
	tester, _ := startGateway(t, sim.URL, "")

	if resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch); resp.StatusCode != 200 {
		t.Fatalf("first request: %d %s", resp.StatusCode, body)
	}
	sim.RevokeAll()
	resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after revocation: %d %s, want 200 through the replay", resp.StatusCode, body)
	}
	if a, e := sim.Calls("authtoken"), sim.Calls("extracts"); a != 2 || e != 3 {
		t.Errorf("authtoken calls %d (want 2), extracts calls %d (want 3: ok, 401, replay)", a, e)
	}
}

func TestE2ECredentialsRefused(t *testing.T) {
	skipShort(t)
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: "another-secret"})
	tester, _ := startGateway(t, sim.URL, "")

	resp, body := get(t, tester, "/atlas/extracts?batch_id=BATCH-1")
	wantError(t, resp, body, http.StatusBadGateway, "refused the gateway's credentials")
	if sim.Calls("extracts") != 0 {
		t.Errorf("extracts was called without a token")
	}
}

func TestE2EAtlasDownAndSlow(t *testing.T) {
	skipShort(t)
	// A listener that is closed at once: nothing answers at that address.
	l := httptest.NewServer(http.NotFoundHandler())
	deadURL := l.URL
	l.Close()

	tester, _ := startGateway(t, deadURL, "")
	resp, body := get(t, tester, "/atlas/extracts?batch_id=BATCH-1")
	wantError(t, resp, body, http.StatusBadGateway, "")

	sim := newSimulator(t)
	batch := sim.CreateBatch("pan-1")
	tester, _ = startGateway(t, sim.URL, "timeout 500ms")
	if resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	sim.DelayNext("extracts", 1, 3*time.Second)
	start := time.Now()
	resp, body = get(t, tester, "/atlas/extracts?batch_id="+batch)
	wantError(t, resp, body, http.StatusGatewayTimeout, "did not answer within 500ms")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the gateway answered after %s, past its 500ms timeout", took)
	}
}

func TestE2EConcurrentColdStartFetchesOneToken(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch(docIDs("voter", 2)...)
	tester, _ := startGateway(t, sim.URL, "")

	const callers = 100
	var wg sync.WaitGroup
	statuses := make(chan int, callers)
	for range callers {
		wg.Go(func() {
			resp, err := tester.Client.Get(gatewayURL + "/atlas/extracts?batch_id=" + batch)
			if err != nil {
				statuses <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusOK {
			t.Errorf("a concurrent request got %d", s)
		}
	}
	if n := sim.Calls("authtoken"); n != 1 {
		t.Errorf("authtoken calls = %d for %d concurrent cold requests, want 1", n, callers)
	}
}

func TestE2EAllStreamsEveryDocument(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	ids := docIDs("doc", 500)
	batch := sim.CreateBatch(ids...)
	tester, _ := startGateway(t, sim.URL, "")

	resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch+"&all=1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	p := decodePage(t, body)
	if len(p.Data) != 500 || p.Page != 1 || p.TotalPages != 1 || p.HasNext || p.HasPrev || p.TotalItems != 500 || p.PerPage != 500 {
		t.Fatalf("envelope: %d docs, page %d, total_pages %d, total_items %d, per_page %d, has_next %v",
			len(p.Data), p.Page, p.TotalPages, p.TotalItems, p.PerPage, p.HasNext)
	}
	for i, d := range p.Data {
		if d.DocumentID != ids[i] {
			t.Fatalf("data[%d].document_id = %q, want %q", i, d.DocumentID, ids[i])
		}
	}
	if n := sim.Calls("extracts"); n != 10 {
		t.Errorf("extracts calls = %d, want 10 pages of 50", n)
	}

	// The documents are Atlas's, byte for byte: page 3 through the
	// gateway holds the same file_data as all=1.
	_, body = get(t, tester, "/atlas/extracts?batch_id="+batch+"&page=3")
	p3 := decodePage(t, body)
	for i, d := range p3.Data {
		if !bytes.Equal(d.FileData, p.Data[100+i].FileData) {
			t.Fatalf("document %s differs between page 3 and all=1", d.DocumentID)
		}
	}

	// An error on the first page is answered as usual.
	resp, body = get(t, tester, "/atlas/extracts?batch_id=BATCH-00000-NOPE-20260101000000&all=1")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown batch with all=1: %d %s", resp.StatusCode, body)
	}

	// A failure after the response has started cuts it off: the client
	// can never take a truncated batch for a complete one.
	sim.FailAfter("extracts", 2, 1, http.StatusInternalServerError)
	r2, err := tester.Client.Get(gatewayURL + "/atlas/extracts?batch_id=" + batch + "&all=1")
	if err != nil {
		t.Fatal(err)
	}
	partial, err := io.ReadAll(r2.Body)
	r2.Body.Close()
	if err == nil && json.Valid(partial) {
		t.Errorf("a batch whose page 3 failed came back as valid JSON (%d bytes)", len(partial))
	}
}

func TestE2EUploadThenExtracts(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	tester, app := startGateway(t, sim.URL, "max_upload_body 2KiB")

	body := `{"product_type": "LOAN_APP", "file_urls": [
		{"file_url": "https://files.example.com/a.pdf?sig=1", "document_id": "pan-applicant-1"},
		{"file_url": "https://files.example.com/b.pdf?sig=2", "document_id": "aadhaar-applicant-1"}]}`
	req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/atlas/multiupload", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Token", "caller-token")
	resp, out := do(t, tester.Client, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d %s", resp.StatusCode, out)
	}
	var files []struct {
		BatchID    string `json:"batch_id"`
		DocumentID string `json:"document_id"`
	}
	if err := json.Unmarshal(out, &files); err != nil || len(files) != 2 || files[0].BatchID == "" {
		t.Fatalf("upload response %s: %v", out, err)
	}
	if tok := sim.LastHeaders("multiupload").Get("Token"); tok == "" || tok == "caller-token" {
		t.Errorf("Atlas got Token %q on upload", tok)
	}

	resp, out = get(t, tester, "/atlas/extracts?batch_id="+files[0].BatchID)
	p := decodePage(t, out)
	if resp.StatusCode != 200 || len(p.Data) != 2 || p.Data[0].DocumentID != "pan-applicant-1" {
		t.Fatalf("extracts of the uploaded batch: %d %s", resp.StatusCode, out)
	}

	for _, tc := range []struct {
		body, contentType string
		status            int
		want              string
	}{
		{`{"file_urls": [{"file_url": "u", "document_id": "d"}]}`, "application/json", 400, "product_type is required"},
		{`{"product_type": "", "file_urls": [{"file_url": "u", "document_id": "d"}]}`, "application/json", 400, "product_type must not be empty"},
		{`{"product_type": 7, "file_urls": [{"file_url": "u", "document_id": "d"}]}`, "application/json", 400, "product_type must be a string"},
		{`{"product_type": "LOAN_APP", "file_urls": []}`, "application/json", 400, "file_urls is required"},
		{`{"product_type": "LOAN_APP", "file_urls": "u"}`, "application/json", 400, "file_urls must be an array"},
		{`{"product_type": "LOAN_APP", "file_urls": [{"file_url": "u"}]}`, "application/json", 400, "file_urls[0].document_id is required"},
		{`{"product_type": "LOAN_APP", "file_urls": [{"file_url": "u", "document_id": "d"}, 3]}`, "application/json", 400, "file_urls[1] must be an object"},
		{`{"product_type": "LOAN_APP"`, "application/json", 400, "not valid JSON"},
		{`[1, 2]`, "application/json", 400, "must be a JSON object"},
		{`product_type=LOAN_APP`, "application/x-www-form-urlencoded", 415, "must be JSON"},
		{`{"product_type": "LOAN_APP", "pad": "` + strings.Repeat("x", 3000) + `"}`, "application/json", 413, "larger than 2.0 KiB"},
	} {
		before := sim.Calls("multiupload")
		req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/atlas/multiupload", strings.NewReader(tc.body))
		req.Header.Set("Content-Type", tc.contentType)
		resp, out := do(t, tester.Client, req)
		wantError(t, resp, out, tc.status, tc.want)
		if sim.Calls("multiupload") != before {
			t.Errorf("body %.40q reached Atlas", tc.body)
		}
	}
	if app.count() != 0 {
		t.Errorf("the app got %d requests", app.count())
	}

	resp, out = get(t, tester, "/atlas/multiupload")
	wantError(t, resp, out, http.StatusMethodNotAllowed, "")
	if resp.Header.Get("Allow") != "POST" {
		t.Errorf("Allow = %q", resp.Header.Get("Allow"))
	}
}

func TestE2EUploadReplaysBufferedBodyOn401(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	tester, _ := startGateway(t, sim.URL, "")
	if resp, body := get(t, tester, "/atlas/extracts?batch_id="+sim.CreateBatch("pan-0")); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	sim.RevokeAll()
	req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/atlas/multiupload",
		strings.NewReader(`{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://f/x", "document_id": "passport-9"}]}`))
	req.Header.Set("Content-Type", "application/json")
	resp, out := do(t, tester.Client, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload after revocation: %d %s", resp.StatusCode, out)
	}
	if n := sim.Calls("multiupload"); n != 2 {
		t.Errorf("multiupload calls = %d, want 2 (401, then the one replay)", n)
	}

	// A 5xx from Atlas is never retried: the POST may have been received.
	sim.FailNext("multiupload", 1, http.StatusServiceUnavailable)
	req, _ = http.NewRequest(http.MethodPost, gatewayURL+"/atlas/multiupload",
		strings.NewReader(`{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://f/y", "document_id": "pan-10"}]}`))
	resp, out = do(t, tester.Client, req)
	if resp.StatusCode != http.StatusServiceUnavailable || sim.Calls("multiupload") != 3 {
		t.Errorf("a 503 upload: %d %s after %d calls, want one call answered 503", resp.StatusCode, out, sim.Calls("multiupload"))
	}
}

func TestE2EReloadKeepsToken(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch("gst-1")
	tester, app := startGateway(t, sim.URL, "")
	if resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// The same endpoint and credentials in a changed config: a reload.
	tester.InitServer(e2eConfig(sim.URL, app.Listener.Addr().String(), "timeout 10s"), "caddyfile")
	if resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch); resp.StatusCode != 200 {
		t.Fatalf("after reload: %d %s", resp.StatusCode, body)
	}
	if n := sim.Calls("authtoken"); n != 1 {
		t.Errorf("authtoken calls = %d across a reload, want 1", n)
	}

	// The metrics say what happened.
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`caddy_atlas_token_fetches_total{outcome="success"}`,
		`caddy_atlas_upstream_requests_total{class="2xx",route="extracts"}`,
		`caddy_atlas_upstream_duration_seconds_bucket{route="extracts"`,
		`caddy_atlas_token_age_seconds{client_id="e2e-client"}`,
		`caddy_atlas_token_replays_total`,
	} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if bytes.Contains(metrics, []byte(e2eClientSecret)) {
		t.Error("the metrics hold the client secret")
	}
}

func TestE2EJSONConfig(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch("dl-1")
	t.Setenv("E2E_ATLAS_CLIENT_ID", e2eClientID)
	t.Setenv("E2E_ATLAS_CLIENT_SECRET", e2eClientSecret)
	tester := newTester(t)
	tester.InitServer(fmt.Sprintf(`{
		"admin": {"listen": %q},
		"apps": {"http": {"http_port": %d, "https_port": %d, "grace_period": 1,
			"servers": {"gw": {"listen": [":%d"], "automatic_https": {"disable": true},
				"routes": [{"handle": [{
					"handler": "atlas",
					"endpoint": %q,
					"client_id": "{env.E2E_ATLAS_CLIENT_ID}",
					"client_secret": "{env.E2E_ATLAS_CLIENT_SECRET}",
					"extracts_path": "/v1/extracts",
					"upload_path": "off"
				}]}]}}}}}`, adminAddr, httpPort, httpsPort, httpPort, sim.URL), "json")
	resp, body := get(t, tester, "/v1/extracts?batch_id="+batch)
	if resp.StatusCode != 200 || len(decodePage(t, body).Data) != 1 {
		t.Fatalf("JSON-configured extracts: %d %s", resp.StatusCode, body)
	}
	// With upload_path off, the default path is nobody's: the request
	// falls through to the end of the route (Caddy's empty 200).
	req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/atlas/multiupload", strings.NewReader(`{}`))
	resp, body = do(t, tester.Client, req)
	if resp.StatusCode != http.StatusOK || len(body) != 0 || sim.Calls("multiupload") != 0 {
		t.Errorf("upload_path off: %d %q, %d upload calls; want it to fall through", resp.StatusCode, body, sim.Calls("multiupload"))
	}
}
