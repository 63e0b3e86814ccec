package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/build"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"

	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"

	"github.com/caddy-atlas/caddy-atlas/callback"
)

// The crash test runs the real Caddy binary (cmd/caddy) in a process of
// its own, so that it can be killed with SIGKILL.

// buildCaddy builds cmd/caddy into a temporary directory.
func buildCaddy(t *testing.T, ctx context.Context) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(build.Default.GOROOT, "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "caddy")
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", bin, "../cmd/caddy")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cmd/caddy: %v\n%s", err, out)
	}
	return bin
}

// caddyProcess is a running Caddy binary.
type caddyProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startCaddyProcess runs bin with the Caddyfile at config and waits until
// the auth route answers at authURL.
func startCaddyProcess(t *testing.T, ctx context.Context, bin, config, home, logFile, authURL string) *caddyProcess {
	t.Helper()
	env := []string{"CRASH_CLIENT_ID=" + cbE2EClientID, "CRASH_CLIENT_SECRET=" + cbE2EClientSecret, "CRASH_SIGNING_KEY=" + cbE2ESigningKey}
	// provisioning a JetStream queue waits for the cluster
	return runCaddy(t, ctx, bin, config, home, logFile, env, 45*time.Second, func() bool {
		tok, err := crashToken(authURL)
		return err == nil && tok != ""
	})
}

// runCaddy runs bin with the Caddyfile at config, HOME and the XDG
// directories at home, env added to the environment and its output
// appended to logFile, and waits (at most within) until ready reports
// true. The process is killed at the end of the test; if the test
// failed, its log is printed.
func runCaddy(t *testing.T, ctx context.Context, bin, config, home, logFile string, env []string, within time.Duration, ready func() bool) *caddyProcess {
	t.Helper()
	logs, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	cmd := exec.CommandContext(ctx, bin, "run", "--config", config, "--adapter", "caddyfile")
	cmd.Env = append(append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home), env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &caddyProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			out, _ := os.ReadFile(logFile)
			t.Logf("%s:\n%s", logFile, out)
		}
	})
	deadline := time.Now().Add(within)
	for !ready() {
		select {
		case <-p.done:
			out, _ := os.ReadFile(logFile)
			t.Fatalf("caddy exited:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logFile)
			t.Fatalf("caddy did not start:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *caddyProcess) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

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
	if testing.Short() {
		t.Skip("builds and runs the Caddy binary")
	}
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
