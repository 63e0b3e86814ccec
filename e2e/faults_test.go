package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
)

// The fault suite drives a real Caddy (caddytest, in process) through
// failing neighbours: Atlas's token endpoint down for longer than a token
// lifetime, a revocation storm under load, resets and stalls, the app
// failing during callbacks, and reloads under load. Each case asserts an
// outcome.

// TestFaultAuthtokenDownLongerThanTokenLifetime: the gateway serves while
// its token is valid, answers 502 with a clear error once it has expired,
// backs off rather than storming authtoken, and recovers by itself.
func TestFaultAuthtokenDownLongerThanTokenLifetime(t *testing.T) {
	skipShort(t)
	sim := atlastest.NewServer(t, atlastest.Options{
		ClientID: e2eClientID, ClientSecret: e2eClientSecret, TokenLifetime: 4 * time.Second,
	})
	batch := sim.CreateBatch("pan-1")
	tester, _ := startFaultGateway(t, sim.URL, "")
	url := "/atlas/extracts?batch_id=" + batch

	if resp, body := get(t, tester, url); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	tokenAt := time.Now()
	sim.FailAuth(1_000_000, http.StatusServiceUnavailable)
	sim.ResetCounters()

	// Hammer the gateway for longer than the token lifetime.
	var ok, unavailable, other int
	deadline := tokenAt.Add(7 * time.Second)
	for time.Now().Before(deadline) {
		resp, body := get(t, tester, url)
		switch {
		case resp.StatusCode == 200:
			ok++
			if time.Since(tokenAt) > 4*time.Second+500*time.Millisecond {
				t.Errorf("served with a token past its lifetime, %s after it was issued", time.Since(tokenAt))
			}
		case resp.StatusCode == http.StatusBadGateway && strings.Contains(string(body), "could not get an atlas token"):
			unavailable++
		default:
			other++
			t.Errorf("unexpected answer %d %s", resp.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ok == 0 || unavailable == 0 {
		t.Errorf("served %d then refused %d: want both while the token was valid, then after it expired", ok, unavailable)
	}
	// Backoff: a few authtoken calls over 7s, not one per request.
	calls := sim.Calls("authtoken")
	requests := ok + unavailable + other
	t.Logf("authtoken down 7s: %d requests, %d served, %d answered 502, %d authtoken calls", requests, ok, unavailable, calls)
	if calls == 0 || calls > 15 {
		t.Errorf("authtoken calls = %d over %d requests, want a backed-off handful", calls, requests)
	}

	// Recovery by itself once authtoken recovers (after the cooldown).
	sim.FailNext("authtoken", 0, 0)
	recovered := false
	for end := time.Now().Add(70 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if resp, _ := get(t, tester, url); resp.StatusCode == 200 {
			recovered = true
			break
		}
	}
	if !recovered {
		t.Fatal("the gateway did not recover after authtoken came back")
	}
}

// TestFaultRevocationStorm: Atlas revokes every token every 300ms while
// eight clients hammer the gateway; no request reaches a client as a 401.
func TestFaultRevocationStorm(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch(docIDs("aadhaar", 3)...)
	tester, _ := startFaultGateway(t, sim.URL, "")
	url := gatewayURL + "/atlas/extracts?batch_id=" + batch

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go func() {
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				sim.RevokeAll()
			}
		}
	}()
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				resp, err := tester.Client.Get(url)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("revocation storm: statuses %v, %d authtoken calls", statuses, sim.Calls("authtoken"))
	if statuses[http.StatusUnauthorized] != 0 {
		t.Errorf("%d requests reached the client as 401", statuses[http.StatusUnauthorized])
	}
	total := 0
	for _, n := range statuses {
		total += n
	}
	if statuses[200] < total*9/10 {
		t.Errorf("only %d of %d requests succeeded through the storm", statuses[200], total)
	}
}

// TestFaultResetAndStall: a reset connection is a 502; an upstream that
// stalls before its headers is a 504; one that stalls mid-body is cut off
// at the timeout, so the client sees an incomplete response, not a hang.
func TestFaultResetAndStall(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch("passport-1")
	tester, _ := startFaultGateway(t, sim.URL, "timeout 1s")
	if resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	// A reset: Go's transport retries an idempotent GET once on a fresh
	// connection when a pooled one is reset, so reset three in a row.
	sim.FailNext("extracts", 3, 0)
	resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch)
	wantError(t, resp, body, http.StatusBadGateway, "atlas is unreachable")
	sim.FailNext("extracts", 0, 0)

	// A reset upload is never resent: Atlas may have received it.
	sim.ResetCounters()
	sim.FailNext("multiupload", 1, 0)
	req, _ := http.NewRequest(http.MethodPost, gatewayURL+"/atlas/multiupload",
		strings.NewReader(`{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://f/r", "document_id": "pan-r"}]}`))
	req.Header.Set("Content-Type", "application/json")
	resp, body = do(t, tester.Client, req)
	wantError(t, resp, body, http.StatusBadGateway, "atlas is unreachable")
	if n := sim.Calls("multiupload"); n != 1 {
		t.Errorf("a reset upload was sent %d times, want once", n)
	}

	sim.DelayNext("extracts", 1, 5*time.Second)
	resp, body = get(t, tester, "/atlas/extracts?batch_id="+batch)
	wantError(t, resp, body, http.StatusGatewayTimeout, "did not answer within 1s")

	// A stall mid-body needs an upstream that sends half a page.
	release := make(chan struct{})
	defer close(release)
	stalling := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/docstream/authtoken" {
			_, _ = io.WriteString(w, `{"access_token": "stall-token", "expires_in": 3600}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100000")
		_, _ = io.WriteString(w, `{"data": [{"document_id": "a", "file_data": {}}`)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer stalling.Close()
	tester, _ = startFaultGateway(t, stalling.URL, "timeout 1s")
	start := time.Now()
	r, err := tester.Client.Get(gatewayURL + "/atlas/extracts?batch_id=B")
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want the upstream's 200 before the stall", r.StatusCode)
	}
	_, err = io.ReadAll(r.Body)
	r.Body.Close()
	if err == nil {
		t.Error("a body cut off mid-way read as complete")
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("the stalled response took %s to end, want about the 1s timeout", took)
	}
}

// TestFaultAppFailingDuringCallbacks: with the synchronous callback route,
// the app's answer is Atlas's answer, so Atlas knows to redeliver: a down
// app is a 502, a failing app its 500, a slow app is waited for.
func TestFaultAppFailingDuringCallbacks(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch(docIDs("gst", 4)...)
	_, app := startFaultGateway(t, sim.URL, "")
	target := atlastest.CallbackTarget{
		AuthURL: cbE2EAuthURL, CallbackURL: cbE2ECallbackURL,
		ClientID: cbE2EClientID, ClientSecret: cbE2EClientSecret,
	}
	deliver := func() atlastest.Delivery {
		t.Helper()
		d, err := sim.DeliverCallback(context.Background(), target, batch)
		if err != nil && d.CallbackStatus == 0 {
			t.Fatalf("delivery: %v", err)
		}
		return d
	}

	if d := deliver(); d.CallbackStatus != http.StatusOK {
		t.Fatalf("healthy app: callback status %d", d.CallbackStatus)
	}
	app.status.Store(http.StatusInternalServerError)
	if d := deliver(); d.CallbackStatus != http.StatusInternalServerError {
		t.Errorf("failing app: Atlas got %d, want the app's 500", d.CallbackStatus)
	}
	app.status.Store(http.StatusOK)
	app.delay.Store(int64(500 * time.Millisecond))
	if d := deliver(); d.CallbackStatus != http.StatusOK {
		t.Errorf("slow app: Atlas got %d, want 200 once the app answered", d.CallbackStatus)
	}
	app.delay.Store(0)
	hits := app.hits.Load()
	app.Close() // the app is down
	if d := deliver(); d.CallbackStatus != http.StatusBadGateway {
		t.Errorf("app down: Atlas got %d, want 502", d.CallbackStatus)
	}
	if app.hits.Load() != hits {
		t.Error("a closed app was reached")
	}
}

// TestFaultReloadLoopUnderLoad reloads the config in a loop while clients
// use both routes: no request fails, no callback is lost, and goroutines
// do not pile up.
func TestFaultReloadLoopUnderLoad(t *testing.T) {
	skipShort(t)
	// Atlas here opens a connection per callback: a POST racing the close
	// of an idle keep-alive connection by a reload would fail on any
	// server, and is not retried since a POST may have been received.
	sim := atlastest.NewServer(t, atlastest.Options{
		ClientID: e2eClientID, ClientSecret: e2eClientSecret,
		CallbackHTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second},
	})
	batch := sim.CreateBatch(docIDs("voter", 5)...)
	tester, app := startFaultGateway(t, sim.URL, "")
	reload := func(i int) {
		tester.InitServer(faultConfigGrace(sim.URL, app.Listener.Addr().String(), fmt.Sprintf("timeout %ds", 10+i), "10s"), "caddyfile")
	}
	reload(0)
	target := atlastest.CallbackTarget{
		AuthURL: cbE2EAuthURL, CallbackURL: cbE2ECallbackURL,
		ClientID: cbE2EClientID, ClientSecret: cbE2EClientSecret,
	}
	// The warm-up follows a reload, whose listener handoff can drop a
	// connection as in the loop below: such a drop is tried again, twice
	// at most.
	for try := 1; ; try++ {
		resp, err := tester.Client.Get(gatewayURL + "/atlas/extracts?batch_id=" + batch)
		if err != nil && isConnectionDrop(err) && try < 3 {
			continue
		}
		if err != nil {
			t.Fatalf("warm-up: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
		}
		break
	}
	runtime.GC()
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	var extractsOK, extractsFailed, callbacksOK, callbacksFailed, dropped atomic.Int32
	var failures sync.Map
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				resp, err := tester.Client.Get(gatewayURL + "/atlas/extracts?batch_id=" + batch)
				if err != nil && isConnectionDrop(err) {
					// Dropped in the listener handoff, as below.
					dropped.Add(1)
					continue
				}
				if err != nil {
					extractsFailed.Add(1)
					failures.Store(err.Error(), true)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					extractsOK.Add(1)
				} else {
					extractsFailed.Add(1)
					failures.Store(fmt.Sprint("extracts status ", resp.StatusCode), true)
				}
			}
		})
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			d, err := sim.DeliverCallback(context.Background(), target, batch)
			switch {
			case err == nil && d.CallbackStatus == http.StatusOK:
				callbacksOK.Add(1)
			case err != nil && d.CallbackStatus == 0 && isConnectionDrop(err):
				// Caddy's listener handoff on Linux (SO_REUSEPORT): a
				// connection still in the old socket's accept queue
				// when it closes is reset. Atlas sees a transport
				// error, not an answer, and nothing was taken.
				dropped.Add(1)
			default:
				callbacksFailed.Add(1)
				failures.Store(fmt.Sprint("callback ", d.AuthStatus, " ", d.CallbackStatus, " ", err), true)
			}
		}
	})
	const reloads = 8
	for i := range reloads {
		time.Sleep(150 * time.Millisecond)
		reload(i + 1)
	}
	time.Sleep(150 * time.Millisecond)
	cancel()
	wg.Wait()

	t.Logf("%d reloads: extracts %d ok / %d failed, callbacks %d ok / %d failed, %d connections dropped in the listener handoff, %d authtoken calls",
		reloads, extractsOK.Load(), extractsFailed.Load(), callbacksOK.Load(), callbacksFailed.Load(), dropped.Load(), sim.Calls("authtoken"))
	if d, all := dropped.Load(), callbacksOK.Load()+extractsOK.Load()+dropped.Load(); d > all/20 {
		t.Errorf("%d of %d connections dropped", d, all)
	}
	failures.Range(func(k, _ any) bool {
		t.Errorf("failure under reload: %v", k)
		return true
	})
	if extractsOK.Load() == 0 || callbacksOK.Load() == 0 {
		t.Error("no traffic got through")
	}
	if int(app.hits.Load()) != int(callbacksOK.Load()) {
		t.Errorf("the app got %d callbacks, Atlas was told %d were taken", app.hits.Load(), callbacksOK.Load())
	}
	if n := sim.Calls("authtoken"); n != 1 {
		t.Errorf("authtoken calls = %d across reloads, want 1 (the token source is shared)", n)
	}

	// Goroutines settle back: allow for idle connections of the clients.
	tester.Client.CloseIdleConnections()
	var after int
	for range 50 {
		runtime.GC()
		if after = runtime.NumGoroutine(); after <= before+10 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if after > before+10 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutines grew from %d to %d across %d reloads:\n%s", before, after, reloads, goroutineSummary(buf))
	}
}

// isConnectionDrop reports whether err is a connection reset or closed
// before any answer.
func isConnectionDrop(err error) bool {
	msg := err.Error()
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		strings.HasSuffix(msg, ": EOF") || strings.Contains(msg, "connection reset by peer")
}

// goroutineSummary counts goroutines by the first frame of their stacks
// that is not in the runtime.
func goroutineSummary(stacks []byte) string {
	counts := map[string]int{}
	for _, g := range strings.Split(string(stacks), "\n\n") {
		lines := strings.Split(g, "\n")
		frame := "?"
		for _, l := range lines[1:] {
			if !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, "runtime.") && !strings.HasPrefix(l, "internal/") &&
				!strings.HasPrefix(l, "net.") && !strings.HasPrefix(l, "bufio.") && !strings.HasPrefix(l, "io.") {
				frame = l
				break
			}
		}
		counts[frame]++
	}
	var b strings.Builder
	for f, n := range counts {
		fmt.Fprintf(&b, "%4d %s\n", n, f)
	}
	return b.String()
}

// TestFaultAtlasFailingUnderLoad: 32 clients call extracts through the
// gateway while Atlas answers 503, then stalls past the route's timeout,
// then resets connections, then recovers. Each request reaches Atlas at
// most once (no retry storm: a 5xx or a stall is not retried), the
// clients get Atlas's 5xx, 504 or 502 with a JSON error, the gateway's
// goroutines and heap come back to where they were, and the first
// requests after Atlas recovers succeed.
func TestFaultAtlasFailingUnderLoad(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch("pan-load", "gst-load")
	tester, _ := startFaultGateway(t, sim.URL, "timeout 1s")
	url := gatewayURL + "/atlas/extracts?batch_id=" + batch
	if resp, body := get(t, tester, "/atlas/extracts?batch_id="+batch); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	settle := func() (int, uint64) {
		var g int
		var m runtime.MemStats
		for range 20 {
			runtime.GC()
			g = runtime.NumGoroutine()
			time.Sleep(50 * time.Millisecond)
		}
		runtime.ReadMemStats(&m)
		return g, m.HeapInuse
	}
	baseG, baseHeap := settle()

	// load runs 32 clients for d and returns the statuses they got, and
	// the first answer that was neither want nor a JSON error.
	load := func(d time.Duration, want int) (map[int]int, int, string) {
		var mu sync.Mutex
		statuses := map[int]int{}
		var odd string
		total := 0
		var wg sync.WaitGroup
		end := time.Now().Add(d)
		client := &http.Client{Timeout: 10 * time.Second}
		for range 32 {
			wg.Go(func() {
				for time.Now().Before(end) {
					resp, err := client.Get(url)
					code, body := 0, ""
					if err == nil {
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						code, body = resp.StatusCode, string(b)
					}
					mu.Lock()
					total++
					statuses[code]++
					if code != want || (want != 200 && !strings.HasPrefix(body, `{"error"`)) {
						if odd == "" {
							odd = fmt.Sprintf("%d %v %.200s", code, err, body)
						}
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return statuses, total, odd
	}

	for _, phase := range []struct {
		name  string
		fault func()
		want  int
	}{
		{"Atlas answers 503", func() { sim.FailNext("extracts", 1_000_000, http.StatusServiceUnavailable) }, http.StatusServiceUnavailable},
		{"Atlas stalls past the timeout", func() { sim.DelayNext("extracts", 1_000_000, 5*time.Second) }, http.StatusGatewayTimeout},
		{"Atlas resets connections", func() { sim.FailNext("extracts", 1_000_000, 0) }, http.StatusBadGateway},
	} {
		sim.ResetCounters()
		phase.fault()
		statuses, total, odd := load(3*time.Second, phase.want)
		sim.FailNext("extracts", 0, 0)
		sim.DelayNext("extracts", 0, 0)
		calls := sim.Calls("extracts")
		t.Logf("%s: %d requests %v, %d reached Atlas's extracts", phase.name, total, statuses, calls)
		if odd != "" {
			t.Errorf("%s: an answer other than %d with a JSON error: %s", phase.name, phase.want, odd)
		}
		// A reset GET is retried once by Go's transport on a fresh
		// connection; nothing else is retried.
		limit := total
		if phase.want == http.StatusBadGateway {
			limit = 2 * total
		}
		if calls > limit {
			t.Errorf("%s: %d calls reached Atlas for %d requests: a retry storm", phase.name, calls, total)
		}
		if n := sim.Calls("authtoken"); n > 2 {
			t.Errorf("%s: %d authtoken calls: the token was dropped", phase.name, n)
		}
	}

	// Back to where it was: no goroutine or heap left behind by the
	// stalled and failed exchanges (the stalled ones end with the
	// simulator's 5s delay at the latest).
	time.Sleep(5 * time.Second)
	g, heap := settle()
	t.Logf("goroutines %d -> %d, heap in use %d KiB -> %d KiB", baseG, g, baseHeap>>10, heap>>10)
	if g > baseG+20 {
		t.Errorf("goroutines grew from %d to %d after the faults", baseG, g)
	}
	if heap > baseHeap+64<<20 {
		t.Errorf("heap in use grew from %d to %d bytes after the faults", baseHeap, heap)
	}

	// Recovery: at once.
	statuses, total, odd := load(time.Second, http.StatusOK)
	if odd != "" || statuses[200] != total {
		t.Errorf("after Atlas recovered: %v of %d; first other answer: %s", statuses, total, odd)
	}
}
