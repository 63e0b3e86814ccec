package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
)

// batchStatus is the answer of GET /atlas/batches/{id}.
type batchStatus struct {
	BatchID   string `json:"batch_id"`
	State     string `json:"state"`
	Documents []struct {
		DocumentID string `json:"document_id"`
		State      string `json:"state"`
		Source     string `json:"source"`
	} `json:"documents"`
}

// startBatchesGateway runs a gateway with the ledger of batches: the
// account, a spool queue and batches in the global options, the
// callback route delivering to rc, in front of sim.
func startBatchesGateway(t *testing.T, sim *atlastest.Server, rc *callbacktest.Receiver, pollAfter string) {
	t.Helper()
	startBatchesGatewayWith(t, sim, rc, "poll_after "+pollAfter+"\n\t\t\tpoll_every 1s")
}

// startBatchesGatewayWith is startBatchesGateway with the lines of the
// batches block.
func startBatchesGatewayWith(t *testing.T, sim *atlastest.Server, rc *callbacktest.Receiver, batches string) {
	t.Helper()
	t.Setenv("E2E_ATLAS_CLIENT_ID", e2eClientID)
	t.Setenv("E2E_ATLAS_CLIENT_SECRET", e2eClientSecret)
	t.Setenv("CB_E2E_CLIENT_ID", cbE2EClientID)
	t.Setenv("CB_E2E_CLIENT_SECRET", cbE2EClientSecret)
	t.Setenv("CB_E2E_SIGNING_KEY", cbE2ESigningKey)
	dir := filepath.Join(t.TempDir(), "spool")
	config := fmt.Sprintf(`{
	skip_install_trust
	admin %s
	http_port %d
	https_port %d
	grace_period 1ns
	atlas {
		endpoint      %s
		client_id     {env.E2E_ATLAS_CLIENT_ID}
		client_secret {env.E2E_ATLAS_CLIENT_SECRET}
		queue spool %s {
			retry_backoff 10ms 100ms
		}
		batches {
			%s
		}
	}
}
%s {
	route {
		atlas {
			callback /hooks/atlas {
				client_id     {env.CB_E2E_CLIENT_ID}
				client_secret {env.CB_E2E_CLIENT_SECRET}
				signing_key   {env.CB_E2E_SIGNING_KEY}
				deliver_to    %s/hooks/atlas
			}
			extracts_path /atlas/extracts
			upload_path   /atlas/multiupload
		}
		respond "the next handler" 299
	}
}
`, adminAddr, httpPort, httpsPort, sim.URL, dir, batches, gatewayURL, rc.URL)
	tester := newTester(t)
	tester.InitServer(config, "caddyfile")
}

// upload uploads documents through the gateway and returns the batch id.
func upload(t *testing.T, key string, docs ...string) string {
	t.Helper()
	var files []string
	for _, d := range docs {
		files = append(files, fmt.Sprintf(`{"file_url": "https://files.example.com/%s.pdf", "document_id": %q}`, d, d))
	}
	req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/atlas/multiupload",
		strings.NewReader(`{"product_type": "LOAN_APP", "file_urls": [`+strings.Join(files, ",")+`]}`))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var items []struct {
		BatchID string `json:"batch_id"`
	}
	if resp.StatusCode/100 != 2 || json.Unmarshal(body, &items) != nil || len(items) == 0 {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	return items[0].BatchID
}

// waitBatch asks for the batch's status, waiting up to wait.
func waitBatch(t *testing.T, id, wait string) batchStatus {
	t.Helper()
	resp, err := http.Get(gatewayURL + "/atlas/batches/" + id + "?wait=" + wait)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var st batchStatus
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &st) != nil {
		t.Fatalf("batch status: %d %s", resp.StatusCode, body)
	}
	return st
}

// TestE2EBatchDroppedCallbackRecoveredByPoll: Atlas's callback for one
// of two batches never comes; the gateway polls extracts for it and
// delivers its documents once, with X-Atlas-Result-Source: poll; the
// other batch's callback is delivered with its batch named; a late
// callback for the polled batch is acknowledged and not delivered
// again; GET /atlas/batches/{id}?wait= answers once each is complete.
func TestE2EBatchDroppedCallbackRecoveredByPoll(t *testing.T) {
	skipShort(t)
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret, ProcessingDelay: 200 * time.Millisecond})
	rc := callbacktest.NewReceiver(t)
	startBatchesGateway(t, sim, rc, "5s")
	sim.SetAutoCallback(&atlastest.AutoCallback{
		Target:  atlastest.CallbackTarget{AuthURL: cbE2EAuthURL, CallbackURL: cbE2ECallbackURL, ClientID: cbE2EClientID, ClientSecret: cbE2EClientSecret},
		DropNth: []int{1},
	})

	dropped := upload(t, "", "pan-dropped", "gst-dropped")
	time.Sleep(300 * time.Millisecond) // the first callback falls due first
	called := upload(t, "", "pan-called")

	if st := waitBatch(t, called, "20s"); st.State != "complete" || st.Documents[0].Source != "callback" {
		t.Errorf("the batch whose callback came: %+v", st)
	}
	st := waitBatch(t, dropped, "30s")
	if st.State != "complete" {
		t.Fatalf("the batch whose callback was dropped: %+v", st)
	}
	for _, d := range st.Documents {
		if d.Source != "poll" || d.State != "received" {
			t.Errorf("document %+v, want received by poll", d)
		}
	}
	rc.WaitDelivered(t, 2, 10*time.Second)
	// A late callback for the polled batch: acknowledged, not delivered.
	d, err := sim.DeliverCallback(t.Context(), atlastest.CallbackTarget{AuthURL: cbE2EAuthURL, CallbackURL: cbE2ECallbackURL,
		ClientID: cbE2EClientID, ClientSecret: cbE2EClientSecret}, dropped)
	if err != nil || d.CallbackStatus != http.StatusAccepted {
		t.Fatalf("late callback: %v %+v", err, d)
	}
	time.Sleep(500 * time.Millisecond)
	bySource := map[string]int{}
	for _, id := range rc.Delivered() {
		h := rc.Header(id)
		bySource[h.Get("X-Atlas-Result-Source")+" "+h.Get("X-Atlas-Batch-Id")]++
	}
	if len(rc.Delivered()) != 2 || bySource["poll "+dropped] != 1 || bySource["callback "+called] != 1 {
		t.Errorf("deliveries by source and batch: %v", bySource)
	}
}

// TestE2EBatchIdempotentUpload: a repeat of an upload with the same
// Idempotency-Key gets the first answer without a second call to Atlas;
// the same key with another body gets 422.
func TestE2EBatchIdempotentUpload(t *testing.T) {
	skipShort(t)
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret})
	rc := callbacktest.NewReceiver(t)
	startBatchesGateway(t, sim, rc, "15m")
	sim.ResetCounters()
	first := upload(t, "key-1", "pan-idem")
	if again := upload(t, "key-1", "pan-idem"); again != first {
		t.Errorf("the repeat got batch %s, want %s", again, first)
	}
	if n := sim.Calls("multiupload"); n != 1 {
		t.Errorf("Atlas's multiupload was called %d times, want once", n)
	}
	req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/atlas/multiupload",
		strings.NewReader(`{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://f/x", "document_id": "other"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "key-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("the same key with another body: %d, want 422", resp.StatusCode)
	}
	if st := waitBatch(t, first, "0s"); st.State != "processing" || len(st.Documents) != 1 || st.Documents[0].State != "pending" {
		t.Errorf("the recorded batch: %+v", st)
	}
}

// TestE2EBatchExpires: a batch whose documents Atlas never finishes is
// polled until give_up_after, then expired, its pending documents
// listed; the status endpoint says so.
func TestE2EBatchExpires(t *testing.T) {
	skipShort(t)
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret, ProcessingDelay: time.Hour})
	rc := callbacktest.NewReceiver(t)
	startBatchesGatewayWith(t, sim, rc, "poll_after 1s\n\t\t\tpoll_every 1s\n\t\t\tgive_up_after 4s")
	id := upload(t, "", "never-done")
	st := waitBatch(t, id, "30s")
	if st.State != "expired" || len(st.Documents) != 1 || st.Documents[0].State != "pending" {
		t.Errorf("the batch Atlas never finished: %+v", st)
	}
	if n := sim.Calls("extracts"); n < 1 {
		t.Errorf("%d polls before giving up, want at least one", n)
	}
	if len(rc.Delivered()) != 0 {
		t.Errorf("deliveries for a batch never finished: %v", rc.Delivered())
	}
}

// TestE2EBatchPollOnlyAndRate: with poll_after 0 every batch is polled
// from its upload on, its documents delivered once by poll, and the
// polls keep to poll_rate extracts requests per second, counted at the
// simulator.
func TestE2EBatchPollOnlyAndRate(t *testing.T) {
	skipShort(t)
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret, ProcessingDelay: 2 * time.Second})
	rc := callbacktest.NewReceiver(t)
	startBatchesGatewayWith(t, sim, rc, "poll_after 0\n\t\t\tpoll_every 1s\n\t\t\tpoll_rate 2")
	var ids []string
	for i := range 6 {
		ids = append(ids, upload(t, "", fmt.Sprintf("po-%d", i)))
	}
	for _, id := range ids {
		if st := waitBatch(t, id, "60s"); st.State != "complete" || st.Documents[0].Source != "poll" {
			t.Errorf("batch %s: %+v", id, st)
		}
	}
	rc.WaitDelivered(t, len(ids), 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if n := len(rc.Delivered()); n != len(ids) {
		t.Errorf("%d deliveries for %d documents", n, len(ids))
	}
	reqs := sim.Requests("extracts")
	peak := 0
	for i := range reqs {
		n := 0
		for j := i; j < len(reqs) && reqs[j].Time.Sub(reqs[i].Time) < time.Second; j++ {
			n++
		}
		peak = max(peak, n)
	}
	t.Logf("%d extracts requests for %d batches, at most %d in a second", len(reqs), len(ids), peak)
	if peak > 3 {
		t.Errorf("%d extracts requests within a second, above poll_rate 2 (and its burst of 1)", peak)
	}
}

// TestE2EBatchBulkPollOnly: the bulk service in poll-only mode, every
// document pushed to the app once. The account speaks to Atlas's bulk
// service (service bulk), which has no callbacks; there is no callback
// route: batches { poll_after 0, deliver_to } make the gateway poll
// /v1/bulk/extracts from the upload on and push each document, through
// the app's queue, to the receiver once, with X-Atlas-Result-Source:
// poll; the status endpoint says complete.
func TestE2EBatchBulkPollOnly(t *testing.T) {
	skipShort(t)
	// The documents of a batch come over several polls.
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret,
		ProcessingDelay: 100 * time.Millisecond, ProcessingDelayMax: 1500 * time.Millisecond})
	rc := callbacktest.NewReceiver(t)
	t.Setenv("E2E_ATLAS_CLIENT_ID", e2eClientID)
	t.Setenv("E2E_ATLAS_CLIENT_SECRET", e2eClientSecret)
	dir := filepath.Join(t.TempDir(), "spool")
	config := fmt.Sprintf(`{
	skip_install_trust
	admin %s
	http_port %d
	https_port %d
	grace_period 1ns
	atlas {
		endpoint      %s
		client_id     {env.E2E_ATLAS_CLIENT_ID}
		client_secret {env.E2E_ATLAS_CLIENT_SECRET}
		service       bulk
		queue spool %s {
			retry_backoff 10ms 100ms
		}
		batches {
			poll_after 0
			poll_every 300ms
			deliver_to %s/results
		}
	}
}
%s {
	atlas
}
`, adminAddr, httpPort, httpsPort, sim.URL, dir, rc.URL, gatewayURL)
	tester := newTester(t)
	tester.InitServer(config, "caddyfile")

	docs := []string{"bulk-pan-1", "bulk-gst-2", "bulk-aadhaar-3", "bulk-dl-4"}
	first := upload(t, "", docs[:3]...)
	second := upload(t, "", docs[3:]...)
	for _, id := range []string{first, second} {
		st := waitBatch(t, id, "30s")
		if st.State != "complete" {
			t.Fatalf("batch %s: %+v", id, st)
		}
		for _, d := range st.Documents {
			if d.State != "received" || d.Source != "poll" {
				t.Errorf("batch %s, document %+v, want received by poll", id, d)
			}
		}
	}

	// Every document reaches the receiver once, each delivery naming its
	// batch and the poll as its source.
	deadline := time.Now().Add(10 * time.Second)
	var got map[string]int
	for {
		got = map[string]int{}
		for _, id := range rc.Delivered() {
			h := rc.Header(id)
			if src := h.Get("X-Atlas-Result-Source"); src != "poll" {
				t.Errorf("delivery %s: X-Atlas-Result-Source %q, want poll", id, src)
			}
			batch := h.Get("X-Atlas-Batch-Id")
			var body struct {
				Data []struct {
					DocumentID string `json:"document_id"`
				} `json:"data"`
			}
			if err := json.Unmarshal(rc.Body(id), &body); err != nil {
				t.Fatalf("delivery %s: %v: %s", id, err, rc.Body(id))
			}
			for _, d := range body.Data {
				if want := map[bool]string{true: second, false: first}[d.DocumentID == docs[3]]; batch != want {
					t.Errorf("document %s delivered with X-Atlas-Batch-Id %q, want %q", d.DocumentID, batch, want)
				}
				got[d.DocumentID]++
			}
			if n := rc.Takes(id); n != 1 {
				t.Errorf("delivery %s taken %d times", id, n)
			}
		}
		if len(got) == len(docs) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // a few more polls: nothing more is delivered
	total := 0
	for _, id := range rc.Delivered() {
		var body struct {
			Data []json.RawMessage `json:"data"`
		}
		_ = json.Unmarshal(rc.Body(id), &body)
		total += len(body.Data)
	}
	for _, d := range docs {
		if got[d] != 1 {
			t.Errorf("document %s delivered %d times, want once (all: %v)", d, got[d], got)
		}
	}
	if total != len(docs) {
		t.Errorf("%d documents delivered in all, want %d", total, len(docs))
	}

	// The gateway spoke to the bulk service only.
	for endpoint, want := range map[string]bool{
		atlastest.EndpointBulkAuthToken: true, atlastest.EndpointBulkMultiUpload: true, atlastest.EndpointBulkExtracts: true,
		atlastest.EndpointAuthToken: false, atlastest.EndpointMultiUpload: false, atlastest.EndpointExtracts: false,
	} {
		if n := sim.Calls(endpoint); (n > 0) != want {
			t.Errorf("%d calls to %s", n, endpoint)
		}
	}
	if n := sim.Calls(atlastest.EndpointBulkMultiUpload); n != 2 {
		t.Errorf("%d calls to %s, want 2", n, atlastest.EndpointBulkMultiUpload)
	}
	// The extracts route goes to /v1/bulk/extracts too.
	resp, err := http.Get(gatewayURL + "/atlas/extracts?batch_id=" + first)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), docs[0]) {
		t.Errorf("extracts through the gateway: %d %s", resp.StatusCode, body)
	}
}

// TestE2EBatchAdminAndCLI: the admin API and `caddy atlas batches
// list|show` answer what the status endpoint answers.
func TestE2EBatchAdminAndCLI(t *testing.T) {
	skipShort(t)
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret})
	rc := callbacktest.NewReceiver(t)
	startBatchesGateway(t, sim, rc, "15m")
	id := upload(t, "", "cli-pan", "cli-gst")

	resp, err := http.Get(adminURL + "/atlas/batches/" + id)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var st batchStatus
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &st) != nil || st.BatchID != id || len(st.Documents) != 2 {
		t.Fatalf("admin API: %d %s", resp.StatusCode, body)
	}
	if resp, _ := http.Get(adminURL + "/atlas/batches/BATCH-UNKNOWN"); resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown batch at the admin API: %v", resp)
	}

	out, err := runAtlasCLI(t, "batches", "list", "--address", adminAddr)
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "processing") {
		t.Errorf("batches list: %v\n%s", err, out)
	}
	out, err = runAtlasCLI(t, "batches", "show", id, "--address", adminAddr)
	if err != nil || !strings.Contains(out, "cli-pan") || !strings.Contains(out, "cli-gst") || !strings.Contains(out, "pending") {
		t.Errorf("batches show: %v\n%s", err, out)
	}
	if _, err := runAtlasCLI(t, "batches", "list", "--state", "bogus", "--address", adminAddr); err == nil {
		t.Error("batches list --state bogus succeeded")
	}
}

// TestE2EBatchIdempotentConcurrentRepeat: a repeat of an upload while
// the first is still at Atlas gets 409; Atlas sees one upload.
func TestE2EBatchIdempotentConcurrentRepeat(t *testing.T) {
	skipShort(t)
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret})
	rc := callbacktest.NewReceiver(t)
	startBatchesGateway(t, sim, rc, "15m")
	sim.ResetCounters()
	sim.DelayNext("multiupload", 1, time.Second)
	post := func() int {
		req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/atlas/multiupload",
			strings.NewReader(`{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://f/c", "document_id": "concurrent-1"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "key-concurrent")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	first := make(chan int, 1)
	go func() { first <- post() }()
	time.Sleep(300 * time.Millisecond) // the first is at Atlas
	if code := post(); code != http.StatusConflict {
		t.Errorf("a repeat while the first is in flight: %d, want 409", code)
	}
	if code := <-first; code/100 != 2 {
		t.Errorf("the first: %d", code)
	}
	if code := post(); code/100 != 2 {
		t.Errorf("a repeat after the first was answered: %d, want its answer", code)
	}
	if n := sim.Calls("multiupload"); n != 1 {
		t.Errorf("Atlas's multiupload called %d times, want once", n)
	}
}
