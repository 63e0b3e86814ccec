package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/callback"
	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
)

// The JetStream fleet test runs three Caddy processes built from this
// repo in durable mode on one R3 stream of a 3-node NATS cluster (run in
// the test process), sends distinct callbacks across them as Atlas would
// (retrying whatever is not a 202), and checks that every acknowledged
// callback reaches the app through these faults, in turn: the app
// answering 503 for a while, kill -9 of one Caddy (its deliveries in
// progress are taken over), shutdown of the stream's leader, all of NATS
// down for 10s (Atlas gets 503 with Retry-After, then the same processes
// recover), and one callback posted to two instances at once (one
// delivery).

const jsFleetStream = "E2E_CALLBACKS"

type jsInstance struct {
	base, admin string
	proc        *caddyProcess
	log         string
	dead        atomic.Bool
}

func startJSInstance(t *testing.T, ctx context.Context, bin, work string, i int, natsURLs []string, deliverTo string) *jsInstance {
	t.Helper()
	httpPort, adminPort := natstest.FreePort(t), natstest.FreePort(t)
	dir := filepath.Join(work, fmt.Sprintf("caddy-%d", i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
}
:%d {
	atlas {
		callback /hooks/atlas {
			client_id     {env.CRASH_CLIENT_ID}
			client_secret {env.CRASH_CLIENT_SECRET}
			signing_key   {env.CRASH_SIGNING_KEY}
			deliver_to    %s/hooks/atlas
			retry_backoff 50ms 500ms
			max_attempts  1000
			concurrency   8
			queue jetstream {
				url      %s
				stream   %s
				replicas 3
				ack_wait 2s
			}
		}
	}
}
`, adminPort, httpPort, deliverTo, strings.Join(natsURLs, " "), jsFleetStream)
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	in := &jsInstance{
		base:  "http://127.0.0.1:" + strconv.Itoa(httpPort),
		admin: "http://127.0.0.1:" + strconv.Itoa(adminPort),
		log:   filepath.Join(dir, "caddy.log"),
	}
	in.proc = startCaddyProcess(t, ctx, bin, config, dir, in.log, in.base+"/hooks/atlas/auth")
	return in
}

func TestJetStreamFleet(t *testing.T) {
	skipShort(t)
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	bin := buildCaddy(t, ctx)
	nodes := natstest.StartCluster(t, 3)
	rc := callbacktest.NewReceiver(t)
	work := t.TempDir()
	var insts []*jsInstance
	for i := range 3 {
		insts = append(insts, startJSInstance(t, ctx, bin, work, i, natstest.URLs(nodes), rc.URL))
	}
	dumpLogs := func() {
		for i, in := range insts {
			out, _ := os.ReadFile(in.log)
			t.Logf("caddy %d log:\n%s", i, out)
		}
	}
	tok, err := crashToken(insts[0].base + "/hooks/atlas/auth")
	if err != nil {
		t.Fatal(err)
	}

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	body := func(k int) []byte {
		return bytes.ReplaceAll(payloadtest.Sample(2), []byte(`"doc-`), []byte(fmt.Sprintf(`"js-%04d-`, k)))
	}
	post := func(in *jsInstance, b []byte) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, in.base+"/hooks/atlas", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Token", tok)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	var (
		mu      sync.Mutex
		acked   = make(map[string]bool)
		refused atomic.Int64
	)
	// send delivers callback k as Atlas does: to one instance, and on
	// anything but a 202, again after a pause, to the next one.
	send := func(k int) {
		b := body(k)
		deadline := time.Now().Add(40 * time.Second)
		for try := k; ; try++ {
			in := insts[try%len(insts)]
			if !in.dead.Load() {
				resp, err := post(in, b)
				if err == nil && resp.StatusCode == http.StatusAccepted {
					mu.Lock()
					acked[callback.ID(b)] = true
					mu.Unlock()
					return
				}
				refused.Add(1)
				if err == nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
					t.Errorf("503 without Retry-After")
				}
				if err == nil && resp.StatusCode != http.StatusServiceUnavailable {
					t.Errorf("callback %d: status %d", k, resp.StatusCode)
					return
				}
			}
			if time.Now().After(deadline) {
				t.Errorf("callback %d not acknowledged in 40s", k)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	load := func(from, to int, during func(acked int)) {
		var wg sync.WaitGroup
		jobs := make(chan int)
		var done atomic.Int64
		for range 12 {
			wg.Go(func() {
				for k := range jobs {
					send(k)
					if during != nil {
						during(int(done.Add(1)))
					}
				}
			})
		}
		for k := from; k < to; k++ {
			jobs <- k
		}
		close(jobs)
		wg.Wait()
	}

	// 1. The app answers 503 for a while, and a Caddy is killed with
	// SIGKILL while deliveries are in progress.
	var once1 sync.Once
	rc.SetStatus(http.StatusServiceUnavailable)
	load(0, 150, func(n int) {
		if n == 50 {
			once1.Do(func() {
				rc.SetStatus(http.StatusOK)
				insts[2].dead.Store(true)
				insts[2].proc.kill()
			})
		}
	})
	t.Logf("phase 1 (app down, kill -9 of caddy 2): %d acknowledged, %d refused and retried", len(acked), refused.Load())

	// 2. The stream leader goes down under load.
	var once2 sync.Once
	var leader string
	load(150, 300, func(n int) {
		if n == 30 {
			once2.Do(func() {
				if nd := natstest.StreamLeader(nodes, jsFleetStream); nd != nil {
					leader = nd.Name()
					nd.Stop()
				}
			})
		}
	})
	if leader == "" {
		t.Error("no stream leader found to shut down")
	}
	t.Logf("phase 2 (stream leader %s shut down): %d acknowledged, %d refused and retried", leader, len(acked), refused.Load())

	// 3. All of NATS down for 10s: every callback is refused with 503 and
	// Retry-After, none acknowledged; then the same Caddy processes
	// recover.
	for _, nd := range nodes {
		nd.Stop()
	}
	downUntil := time.Now().Add(10 * time.Second)
	attempts := 0
	for k := 10000; time.Now().Before(downUntil); k++ {
		resp, err := post(insts[k%2], body(k))
		if err != nil {
			t.Fatalf("post with NATS down: %v", err)
		}
		attempts++
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("with NATS down: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("phase 3: %d callbacks refused with 503 while NATS was down", attempts)
	natstest.StartAll(t, nodes)
	load(300, 400, nil)
	t.Logf("phase 3 (NATS down 10s, back): %d acknowledged", len(acked))

	// 4. One callback to two instances at once: one delivery.
	dup := body(20000)
	var wg sync.WaitGroup
	for _, in := range insts[:2] {
		wg.Go(func() {
			for until := time.Now().Add(20 * time.Second); time.Now().Before(until); {
				if resp, err := post(in, dup); err == nil && resp.StatusCode == http.StatusAccepted {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()

	// Every acknowledged callback is delivered.
	deadline := time.Now().Add(40 * time.Second)
	for {
		var lost []string
		mu.Lock()
		for id := range acked {
			if rc.Takes(id) == 0 {
				lost = append(lost, id)
			}
		}
		want := len(acked)
		mu.Unlock()
		if len(lost) == 0 && rc.Takes(callback.ID(dup)) > 0 {
			t.Logf("%d of %d acknowledged callbacks delivered, 0 lost; %d redeliveries (at-least-once)",
				want, want, rc.RequestCount()-len(rc.Delivered()))
			break
		}
		if time.Now().After(deadline) {
			dumpLogs()
			t.Fatalf("%d of %d acknowledged callbacks not delivered, e.g. %v", len(lost), want, lost[:min(3, len(lost))])
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if n := rc.Takes(callback.ID(dup)); n != 1 {
		t.Errorf("the callback posted to two instances was taken %d times, want 1", n)
	}

	// The admin API of any instance sees the whole fleet's queue. Its
	// counts come from the servers' consumer info, which may lag for a
	// moment after the leader changes: poll them.
	type adminList struct {
		Spools []struct {
			Dir       string `json:"dir"`
			Delivered int    `json:"delivered"`
		} `json:"spools"`
		Callbacks []json.RawMessage `json:"callbacks"`
	}
	mu.Lock()
	want := len(acked) + 1
	mu.Unlock()
	var list adminList
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		list = adminList{}
		resp, err := http.Get(insts[1].admin + "/atlas/callbacks?state=delivered&limit=10000")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		ok := len(list.Spools) == 1 && list.Spools[0].Dir == "jetstream:"+jsFleetStream &&
			list.Spools[0].Delivered >= want && len(list.Callbacks) >= want
		if ok || time.Now().After(deadline) {
			break
		}
	}
	if len(list.Spools) != 1 || list.Spools[0].Dir != "jetstream:"+jsFleetStream || list.Spools[0].Delivered < want ||
		len(list.Callbacks) < want {
		t.Errorf("admin listing of caddy 1: spools %+v, %d callbacks; want jetstream:%s with at least %d delivered",
			list.Spools, len(list.Callbacks), jsFleetStream, want)
	}

	// So does the CLI, pointed at another instance.
	var out []byte
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		cli := exec.CommandContext(ctx, bin, "atlas", "callbacks", "list", "--state", "pending",
			"--address", strings.TrimPrefix(insts[0].admin, "http://"), "--spool", "jetstream:"+jsFleetStream)
		out, err = cli.CombinedOutput()
		if err == nil && strings.Contains(string(out), "spool jetstream:"+jsFleetStream+": 0 pending, 0 dead") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("caddy atlas callbacks list: %v\n%s", err, out)
			break
		}
	}
}
