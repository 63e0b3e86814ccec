package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"

	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"

	"github.com/caddy-atlas/caddy-atlas/callback"
)

// The crash test runs the real Caddy binary (cmd/caddy) in a process of
// its own, so that it can be killed with SIGKILL.

// crashToken fetches a callback token.
func crashToken(authURL string) (string, error) {
	req, _ := http.NewRequest(http.MethodPost, authURL, nil)
	req.Header.Set("Client-Id", cbE2EClientID)
	req.Header.Set("Client-Secret", cbE2EClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r authAnswer
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return "", err
	}
	return r.AccessToken, nil
}

// TestCrashKill9LosesNoAcknowledgedCallback sends callbacks concurrently
// to a Caddy process in durable mode, kills it with SIGKILL mid-stream,
// restarts it on the same spool, and checks that every callback it
// acknowledged is delivered.
func TestCrashKill9LosesNoAcknowledgedCallback(t *testing.T) {
	skipShort(t)
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	const n, workers = 200, 16
	ctx, cancel := context.WithTimeout(context.Background(), 110*time.Second)
	defer cancel()
	bin := buildCaddy(t, ctx)

	rc := callbacktest.NewReceiver(t)
	work := t.TempDir()
	httpPort := natstest.FreePort(t)
	config := filepath.Join(work, "Caddyfile")
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
			spool         %s
			deliver_to    %s/hooks/atlas
			retry_backoff 10ms 100ms
			max_attempts  1000
		}
	}
}
`, natstest.FreePort(t), httpPort, filepath.Join(work, "spool"), rc.URL)
	if err := os.WriteFile(config, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "http://127.0.0.1:" + strconv.Itoa(httpPort)
	logFile := filepath.Join(work, "caddy.log")
	p := startCaddyProcess(t, ctx, bin, config, work, logFile, base+"/hooks/atlas/auth")
	tok, err := crashToken(base + "/hooks/atlas/auth")
	if err != nil {
		t.Fatal(err)
	}

	// Send n distinct callbacks from several workers; kill Caddy once a
	// quarter of them are acknowledged.
	var (
		mu     sync.Mutex
		acked  = make(map[string]bool)
		killed = make(chan struct{})
		once   sync.Once
	)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				body := bytes.Replace(payloadtest.Sample(2), []byte(`"doc-`), []byte(fmt.Sprintf(`"crash-%03d-`, i)), -1)
				req, _ := http.NewRequest(http.MethodPost, base+"/hooks/atlas", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Token", tok)
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					continue
				}
				mu.Lock()
				acked[callback.ID(body)] = true
				if len(acked) >= n/4 {
					once.Do(func() {
						p.kill()
						close(killed)
					})
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatal("Caddy was not killed: too few callbacks acknowledged")
	}
	mu.Lock()
	want := len(acked)
	mu.Unlock()
	before := len(rc.Delivered())
	t.Logf("%d of %d callbacks acknowledged before and while Caddy was killed; %d delivered before the kill", want, n, before)

	// Restart on the same spool: every acknowledged callback is delivered.
	p2 := startCaddyProcess(t, ctx, bin, config, work, logFile, base+"/hooks/atlas/auth")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var lost []string
		for id := range acked {
			if rc.Takes(id) == 0 {
				lost = append(lost, id)
			}
		}
		if len(lost) == 0 {
			break
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logFile)
			t.Fatalf("%d of %d acknowledged callbacks not delivered after the restart, e.g. %s\n%s", len(lost), want, lost[0], out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	dups := rc.RequestCount() - len(rc.Delivered())
	t.Logf("%d of %d acknowledged callbacks delivered, 0 lost; %d redeliveries (at-least-once)", want, want, dups)

	// A graceful stop drains and exits.
	_ = p2.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p2.done:
	case <-time.After(15 * time.Second):
		t.Error("caddy did not stop within 15s of SIGINT")
	}
}
