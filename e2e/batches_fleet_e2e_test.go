package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
)

// The batches fleet test runs three Caddy processes built from this
// repo with `batches` on a jetstream queue of a 3-node NATS cluster: the
// ledger is the JetStream key-value bucket they share. The simulator is
// Atlas, behind one small proxy per instance (so that the test knows
// which instance polls which batch); Atlas's callbacks go to the
// instances in turn, through a balancer that skips a dead one. It
// checks that batches uploaded through different instances, some whose
// callback Atlas drops, are answered complete by any instance; that an
// instance killed with SIGKILL in the middle of a poll has its lease
// taken over by another; that ?wait= at one instance answers when
// another records the last document; that an Idempotency-Key repeated
// through another instance is replayed; and that every document reaches
// the app once, with a bounded number of extracts requests per batch.

const jsBatchesStream = "E2E_BATCHES"

// fleetAtlas is one instance's way to the simulator: it counts the
// extracts requests by batch and knows those in flight.
type fleetAtlas struct {
	*httptest.Server
	mu       sync.Mutex
	byBatch  map[string]int
	inFlight map[string]int
}

func newFleetAtlas(t *testing.T, sim *atlastest.Server) *fleetAtlas {
	t.Helper()
	target, _ := url.Parse(sim.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	fa := &fleetAtlas{byBatch: map[string]int{}, inFlight: map[string]int{}}
	fa.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/extracts") {
			b := r.URL.Query().Get("batch_id")
			fa.mu.Lock()
			fa.byBatch[b]++
			fa.inFlight[b]++
			fa.mu.Unlock()
			defer func() {
				fa.mu.Lock()
				fa.inFlight[b]--
				fa.mu.Unlock()
			}()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(fa.Close)
	return fa
}

func (fa *fleetAtlas) polls(batch string) (total, inFlight int) {
	fa.mu.Lock()
	defer fa.mu.Unlock()
	return fa.byBatch[batch], fa.inFlight[batch]
}

type batchesInstance struct {
	base  string
	atlas *fleetAtlas
	proc  *caddyProcess
	dead  atomic.Bool
}

func startBatchesInstance(t *testing.T, ctx context.Context, bin, work string, i int, natsURLs []string, sim *atlastest.Server, deliverTo string) *batchesInstance {
	t.Helper()
	httpPort, adminPort := natstest.FreePort(t), natstest.FreePort(t)
	dir := filepath.Join(work, fmt.Sprintf("caddy-%d", i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	in := &batchesInstance{base: "http://127.0.0.1:" + strconv.Itoa(httpPort), atlas: newFleetAtlas(t, sim)}
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	atlas {
		endpoint      %s
		client_id     %s
		client_secret %s
		queue jetstream {
			url           %s
			stream        %s
			replicas      3
			ack_wait      2s
			retry_backoff 50ms 500ms
			max_attempts  1000
		}
		batches {
			poll_after 5s
			poll_every 1s
			lease_ttl  3s
		}
	}
}
:%d {
	atlas {
		callback /hooks/atlas {
			client_id     {env.CRASH_CLIENT_ID}
			client_secret {env.CRASH_CLIENT_SECRET}
			signing_key   {env.CRASH_SIGNING_KEY}
			deliver_to    %s/hooks/atlas
		}
		extracts_path /atlas/extracts
		upload_path   /atlas/multiupload
	}
}
`, adminPort, in.atlas.URL, e2eClientID, e2eClientSecret, strings.Join(natsURLs, " "), jsBatchesStream, httpPort, deliverTo)
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	in.proc = startCaddyProcess(t, ctx, bin, config, dir, filepath.Join(dir, "caddy.log"), in.base+"/hooks/atlas/auth")
	return in
}

// fleetUpload uploads documents through in and returns the batch id.
func fleetUpload(t *testing.T, in *batchesInstance, docs ...string) string {
	t.Helper()
	var files []string
	for _, d := range docs {
		files = append(files, fmt.Sprintf(`{"file_url": "https://files.example.com/%s.pdf", "document_id": %q}`, d, d))
	}
	resp, err := http.Post(in.base+"/atlas/multiupload", "application/json",
		strings.NewReader(`{"product_type": "LOAN_APP", "file_urls": [`+strings.Join(files, ",")+`]}`))
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

// fleetStatus asks in for the batch's status, waiting up to wait; it
// returns the answer and how long it took.
func fleetStatus(t *testing.T, in *batchesInstance, id, wait string) (batchStatus, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := http.Get(in.base + "/atlas/batches/" + id + "?wait=" + wait)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var st batchStatus
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &st) != nil {
		t.Fatalf("batch status: %d %s", resp.StatusCode, body)
	}
	return st, time.Since(start)
}

// refusedCallback reports whether the simulator's automatic callback for
// batch was sent and not accepted.
func refusedCallback(sim *atlastest.Server, batch string) bool {
	for _, e := range sim.Callbacks() {
		if e.BatchID != batch {
			continue
		}
		for _, d := range e.Deliveries {
			if d.Err != nil {
				return true
			}
		}
	}
	return false
}

func TestBatchesFleetJetStream(t *testing.T) {
	skipShort(t)
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	bin := buildCaddy(t, ctx)
	nodes := natstest.StartCluster(t, 3)
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret, ProcessingDelay: 200 * time.Millisecond})
	rc := callbacktest.NewReceiver(t)
	work := t.TempDir()
	var insts []*batchesInstance
	for i := range 3 {
		insts = append(insts, startBatchesInstance(t, ctx, bin, work, i, natstest.URLs(nodes), sim, rc.URL))
	}
	// Atlas's callbacks go to the live instances in turn.
	var next atomic.Int64
	lb := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		for {
			in := insts[int(next.Add(1))%len(insts)]
			if !in.dead.Load() {
				u, _ := url.Parse(in.base)
				r.SetURL(u)
				return
			}
		}
	}})
	defer lb.Close()
	target := atlastest.CallbackTarget{AuthURL: lb.URL + "/hooks/atlas/auth", CallbackURL: lb.URL + "/hooks/atlas",
		ClientID: cbE2EClientID, ClientSecret: cbE2EClientSecret}

	// 0. A warm-up batch through each instance, its callback taken, so
	// that the buckets' and streams' leaders are elected and every
	// instance's connections are up before anything is counted.
	sim.SetAutoCallback(&atlastest.AutoCallback{Target: target})
	docs := map[string][]string{}
	for i, in := range insts {
		ids := []string{fmt.Sprintf("warmup-%d", i)}
		b := fleetUpload(t, in, ids...)
		docs[b] = ids
		if st, _ := fleetStatus(t, in, b, "30s"); st.State != "complete" {
			t.Fatalf("warm-up batch %s: %+v", b, st)
		}
	}

	// 1. Six batches uploaded through the three instances; the
	// callbacks of the second and fifth are dropped, so those are
	// polled (by whichever instance takes their lease).
	// (Sequence numbers count the warm-up's callbacks.)
	sim.SetAutoCallback(&atlastest.AutoCallback{Target: target, DropNth: []int{len(insts) + 2, len(insts) + 5}})
	var batches []string
	for k := range 6 {
		ids := []string{fmt.Sprintf("pan-%d", k), fmt.Sprintf("gst-%d", k)}
		b := fleetUpload(t, insts[k%3], ids...)
		batches = append(batches, b)
		docs[b] = ids
		time.Sleep(100 * time.Millisecond) // the callbacks fall due in order
	}
	for k, b := range batches {
		// Asked of another instance than the one it was uploaded through.
		st, _ := fleetStatus(t, insts[(k+1)%3], b, "30s")
		if st.State != "complete" {
			t.Fatalf("batch %d (%s): %+v", k, b, st)
		}
		want := "callback"
		if k == 1 || k == 4 || refusedCallback(sim, b) {
			// Dropped, or (on a machine too slow for the ledger's 5 s)
			// refused with a 503 that the simulator does not retry.
			want = "poll"
		}
		for _, d := range st.Documents {
			if d.State != "received" || d.Source != want {
				t.Errorf("batch %d: document %+v, want received by %s", k, d, want)
			}
		}
	}

	// 2. The instance that polls a batch is killed in the middle of its
	// poll (Atlas holds its extracts request): its lease runs out and
	// another instance takes the batch over.
	sim.SetAutoCallback(&atlastest.AutoCallback{Target: target, Drop: 1})
	sim.DelayNext(atlastest.EndpointExtracts, 1, 20*time.Second)
	killed := fleetUpload(t, insts[0], "pan-killed", "gst-killed")
	docs[killed] = []string{"pan-killed", "gst-killed"}
	victim := -1
	callbacktest.Eventually(t, 20*time.Second, "a poll of the batch in flight", func() bool {
		for i, in := range insts {
			if _, n := in.atlas.polls(killed); n > 0 {
				victim = i
				return true
			}
		}
		return false
	})
	insts[victim].dead.Store(true)
	insts[victim].proc.kill()
	alive := insts[(victim+1)%3]
	st, _ := fleetStatus(t, alive, killed, "30s")
	if st.State != "complete" {
		t.Fatalf("the batch whose poller was killed: %+v", st)
	}
	takenOver := false
	for i, in := range insts {
		if n, _ := in.atlas.polls(killed); i != victim && n > 0 {
			takenOver = true
		}
	}
	if !takenOver {
		t.Errorf("no other instance polled batch %s after instance %d was killed", killed, victim)
	}
	batches = append(batches, killed)

	// 3. The wait endpoint of a live instance answers within a second of
	// a document queued by another instance: a batch uploaded through
	// one, its callback taken by another, waited on at the third.
	sim.SetAutoCallback(&atlastest.AutoCallback{Target: target, Delay: 2 * time.Second})
	var live []*batchesInstance
	for _, in := range insts {
		if !in.dead.Load() {
			live = append(live, in)
		}
	}
	watched := fleetUpload(t, live[0], "pan-watched")
	docs[watched] = []string{"pan-watched"}
	st, took := fleetStatus(t, live[1], watched, "30s")
	if st.State != "complete" {
		t.Fatalf("the watched batch: %+v", st)
	}
	if took > 5*time.Second {
		t.Errorf("the wait answered after %s, the callback came about 2.2s after the upload", took)
	}
	batches = append(batches, watched)

	// 4. Idempotent uploads, fleet-wide: the repeat of an upload through
	// another instance gets the stored answer without calling Atlas.
	before := sim.Calls(atlastest.EndpointMultiUpload)
	idem := func(in *batchesInstance) (string, string) {
		req, _ := http.NewRequest(http.MethodPost, in.base+"/atlas/multiupload",
			strings.NewReader(`{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://files.example.com/i.pdf", "document_id": "pan-idem"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "fleet-key-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("idempotent upload: %d %s", resp.StatusCode, body)
		}
		return string(body), resp.Header.Get("Idempotent-Replayed")
	}
	first, _ := idem(live[0])
	again, replayed := idem(live[1])
	if again != first || replayed != "true" {
		t.Errorf("the repeat through another instance: %q (replayed %q), want %q replayed", again, replayed, first)
	}
	if n := sim.Calls(atlastest.EndpointMultiUpload) - before; n != 1 {
		t.Errorf("Atlas's multiupload was called %d times for one Idempotency-Key, want once", n)
	}
	var idemItems []struct {
		BatchID string `json:"batch_id"`
	}
	if err := json.Unmarshal([]byte(first), &idemItems); err != nil || len(idemItems) == 0 {
		t.Fatalf("idempotent upload's answer: %s", first)
	}
	docs[idemItems[0].BatchID] = []string{"pan-idem"}
	if st, _ := fleetStatus(t, live[1], idemItems[0].BatchID, "30s"); st.State != "complete" {
		t.Errorf("the idempotent upload's batch: %+v", st)
	}
	batches = append(batches, idemItems[0].BatchID)

	// Every document reached the app exactly once: in one delivery id
	// (the app deduplicates a redelivery of the same id).
	var want int
	for _, ids := range docs {
		want += len(ids)
	}
	seen := map[string]int{}
	callbacktest.Eventually(t, 20*time.Second, "every document delivered", func() bool {
		clear(seen)
		for _, id := range rc.Delivered() {
			var body struct {
				Data []struct {
					DocumentID string `json:"document_id"`
				} `json:"data"`
			}
			if err := json.Unmarshal(rc.Body(id), &body); err != nil {
				t.Fatalf("delivery %s: %v", id, err)
			}
			for _, d := range body.Data {
				seen[d.DocumentID]++
			}
		}
		return len(seen) >= want
	})
	time.Sleep(2 * time.Second) // a late duplicate would come by now
	for _, ids := range docs {
		for _, d := range ids {
			if seen[d] != 1 {
				t.Errorf("document %s delivered %d times, want once", d, seen[d])
			}
		}
	}
	if len(seen) != want {
		t.Errorf("%d documents delivered, want %d: %v", len(seen), want, seen)
	}

	// Polls per batch are bounded: none for a batch whose callback came
	// in time, a few for the polled ones.
	perBatch := map[string]int{}
	total := 0
	for _, in := range insts {
		for _, b := range batches {
			n, _ := in.atlas.polls(b)
			perBatch[b] += n
			total += n
		}
	}
	for k, b := range batches {
		limit := 0
		if k == 1 || k == 4 || b == killed || refusedCallback(sim, b) {
			limit = 4
		}
		if b == watched || b == idemItems[0].BatchID {
			limit = 1 // its callback may come after poll_after on a slow machine
		}
		if perBatch[b] > limit {
			t.Errorf("batch %d (%s) polled %d times, want at most %d", k, b, perBatch[b], limit)
		}
	}
	t.Logf("instance %d killed mid-poll; extracts requests by batch: %v; wait answered in %s", victim, perBatch, took.Round(time.Millisecond))
	if got := len(sim.Requests(atlastest.EndpointExtracts)); got != total {
		t.Errorf("Atlas saw %d extracts requests, the instances made %d", got, total)
	}
}
