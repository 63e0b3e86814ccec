package e2e

import (
	"context"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/callback/token/tokentest"
)

// The helpers of the end-to-end tests: the one rule that skips them, the
// Caddyfile every in-process gateway is built on, the gateways the tests
// start in this process (caddytest), and the Caddy binaries the tests
// build and run where they need several instances or kill -9.

// skipShort skips t under go test -short, which runs the unit tests of the
// other packages only. Every test of this package calls it first.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: runs a real Caddy, not under -short")
	}
}

// The in-process Caddy (caddytest), in front of the Atlas simulator and
// httptest apps, listens on loopback ports picked free as this test
// binary starts: its admin API at adminAddr, HTTP at gatewayURL, and an
// HTTPS port it serves nothing on. Two runs of these tests on one machine
// thus have a Caddy each. The tests share it, one at a time: none may run
// in parallel.
var (
	adminPort, httpPort, httpsPort = freeLoopbackPorts()

	adminAddr  = "localhost:" + strconv.Itoa(adminPort)
	adminURL   = "http://" + adminAddr
	gatewayURL = "http://localhost:" + strconv.Itoa(httpPort)
)

// freeLoopbackPorts returns three ports free on 127.0.0.1, each held
// until all three are picked, so that they differ.
func freeLoopbackPorts() (admin, plain, tls int) {
	var ports [3]int
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic("e2e: no free loopback port: " + err.Error())
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], ports[2]
}

// newTester is a caddytest.Tester of the in-process Caddy, whose admin API
// is on adminPort (caddytest's own default is a fixed port, 2999).
func newTester(t *testing.T) *caddytest.Tester {
	t.Helper()
	return caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort})
}

// caddyfile is a Caddyfile of the in-process Caddy: the global options
// every one of them starts with (its admin endpoint and HTTP ports, no
// trust store to install), then global's lines (each Caddyfile has its
// own grace_period), then the site gatewayURL with site's lines in it.
func caddyfile(global, site string) string {
	return fmt.Sprintf("{\n\tskip_install_trust\n\tadmin %s\n\thttp_port %d\n\thttps_port %d\n", adminAddr, httpPort, httpsPort) +
		global + "}\n" + gatewayURL + " {\n" + site + "}\n"
}

// e2eConfig is the Caddyfile of a gateway in front of upstream Atlas at
// endpoint and an app at appAddr; extra lines go into the atlas block.
func e2eConfig(endpoint, appAddr, extra string) string {
	return caddyfile("\tgrace_period 1ns\n", fmt.Sprintf(`	atlas {
		endpoint      %s
		client_id     {env.E2E_ATLAS_CLIENT_ID}
		client_secret {env.E2E_ATLAS_CLIENT_SECRET}
		%s
	}
	reverse_proxy %s
`, endpoint, extra, appAddr))
}

// e2eApp is the app behind the gateway: it records what reaches it.
type e2eApp struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
}

func newE2EApp(t *testing.T) *e2eApp {
	t.Helper()
	a := new(e2eApp)
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.requests = append(a.requests, r.Clone(r.Context()))
		a.mu.Unlock()
		_, _ = io.WriteString(w, "app:"+r.URL.Path)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *e2eApp) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

// startGateway loads a gateway config in front of Atlas at endpoint and
// returns the tester and the app.
func startGateway(t *testing.T, endpoint, extra string) (*caddytest.Tester, *e2eApp) {
	t.Helper()
	t.Setenv("E2E_ATLAS_CLIENT_ID", e2eClientID)
	t.Setenv("E2E_ATLAS_CLIENT_SECRET", e2eClientSecret)
	app := newE2EApp(t)
	tester := newTester(t)
	tester.InitServer(e2eConfig(endpoint, app.Listener.Addr().String(), extra), "caddyfile")
	return tester, app
}

func newSimulator(t *testing.T) *atlastest.Server {
	t.Helper()
	return atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret})
}

// faultConfig is a gateway with both outbound routes and a synchronous
// callback route in front of endpoint and the app at appAddr.
func faultConfig(endpoint, appAddr, extra string) string {
	return faultConfigGrace(endpoint, appAddr, extra, "1ns")
}

// faultConfigGrace is faultConfig with a grace period for the old
// servers of a reload.
func faultConfigGrace(endpoint, appAddr, extra, grace string) string {
	return caddyfile("\tgrace_period "+grace+"\n", fmt.Sprintf(`	atlas {
		endpoint      %s
		client_id     {env.E2E_ATLAS_CLIENT_ID}
		client_secret {env.E2E_ATLAS_CLIENT_SECRET}
		%s
		callback /hooks/atlas {
			client_id     {env.CB_E2E_CLIENT_ID}
			client_secret {env.CB_E2E_CLIENT_SECRET}
			signing_key   {env.CB_E2E_SIGNING_KEY}
		}
	}
	# No keep-alive to the app: reverse_proxy's idle connections outlive
	# a reload by design (until they time out), which would hide any
	# goroutine that the atlas handler leaked.
	reverse_proxy %s {
		transport http {
			keepalive off
		}
	}
`, endpoint, extra, appAddr))
}

// switchableApp is an app whose answer a test can change: a status, or a
// delay before answering 200.
type switchableApp struct {
	*httptest.Server
	status atomic.Int32
	delay  atomic.Int64
	hits   atomic.Int32
}

func newSwitchableApp(t *testing.T) *switchableApp {
	t.Helper()
	a := new(switchableApp)
	a.status.Store(http.StatusOK)
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		if d := time.Duration(a.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(int(a.status.Load()))
	}))
	t.Cleanup(a.Close)
	return a
}

// startFaultGateway loads faultConfig in front of Atlas at endpoint and
// returns the tester and the app.
func startFaultGateway(t *testing.T, endpoint, extra string) (*caddytest.Tester, *switchableApp) {
	t.Helper()
	t.Setenv("E2E_ATLAS_CLIENT_ID", e2eClientID)
	t.Setenv("E2E_ATLAS_CLIENT_SECRET", e2eClientSecret)
	t.Setenv("CB_E2E_CLIENT_ID", cbE2EClientID)
	t.Setenv("CB_E2E_CLIENT_SECRET", cbE2EClientSecret)
	t.Setenv("CB_E2E_SIGNING_KEY", cbE2ESigningKey)
	app := newSwitchableApp(t)
	tester := newTester(t)
	tester.InitServer(faultConfig(endpoint, app.Listener.Addr().String(), extra), "caddyfile")
	return tester, app
}

// callbackE2EApp is the app behind the gateway: it records each request
// that reaches it, with its body, and answers 202; a request with an
// X-Test-Answer-Early header is answered 202 at once, its body unread and
// unrecorded.
type callbackE2EApp struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []callbackE2ERequest
}

type callbackE2ERequest struct {
	header http.Header
	body   []byte
	query  string
}

func (a *callbackE2EApp) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.reqs)
}

func (a *callbackE2EApp) last() callbackE2ERequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reqs[len(a.reqs)-1]
}

// callbackE2E is a running gateway.
type callbackE2E struct {
	tester *caddytest.Tester
	app    *callbackE2EApp
	rsa    string // PEM of the RSA verify key's public half
}

// startCallbackGateway loads a callback gateway: HMAC signing key from the
// environment, an RSA verify key from a file, max_body 64 KiB, and a
// header_up on the proxy that shows the placeholders to the app.
func startCallbackGateway(t *testing.T) *callbackE2E {
	t.Helper()
	k := tokentest.Keys(t)
	rsaPub := tokentest.PEMPublic(t, &k.RSA.PublicKey)
	keyFile := filepath.Join(t.TempDir(), "idp.pub.pem")
	if err := os.WriteFile(keyFile, []byte(rsaPub), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CB_E2E_CLIENT_ID", cbE2EClientID)
	t.Setenv("CB_E2E_CLIENT_SECRET", cbE2EClientSecret)
	t.Setenv("CB_E2E_SIGNING_KEY", cbE2ESigningKey)

	app := new(callbackE2EApp)
	app.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test-Answer-Early") != "" {
			w.WriteHeader(http.StatusAccepted)
			return
		}
		body, _ := io.ReadAll(r.Body)
		app.mu.Lock()
		app.reqs = append(app.reqs, callbackE2ERequest{header: r.Header.Clone(), body: body, query: r.URL.RawQuery})
		app.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"stored":true}`)
	}))
	t.Cleanup(app.Close)

	tester := newTester(t)
	tester.InitServer(caddyfile("\tgrace_period 1ns\n", fmt.Sprintf(`	atlas {
		callback /hooks/atlas {
			client_id     {env.CB_E2E_CLIENT_ID}
			client_secret {env.CB_E2E_CLIENT_SECRET}
			signing_key   {env.CB_E2E_SIGNING_KEY}
			verify_key    {file.%s}
			max_body      64KiB
		}
	}
	reverse_proxy %s {
		header_up X-Callback-Placeholders "{http.atlas.callback.id}|{http.atlas.callback.subject}|{http.atlas.callback.document_count}"
	}
`, keyFile, app.Listener.Addr())), "caddyfile")
	return &callbackE2E{tester: tester, app: app, rsa: rsaPub}
}

// durableE2E is a running durable gateway.
type durableE2E struct {
	*callbackE2E
	sim    *atlastest.Server
	target atlastest.CallbackTarget
	dir    string
}

// durableE2EConfig is the Caddyfile of a durable gateway spooling to dir
// and delivering to deliverTo; extra lines go into the callback block.
func durableE2EConfig(dir, deliverTo, extra string) string {
	return caddyfile("\tgrace_period 1ns\n", fmt.Sprintf(`	route {
		atlas {
			callback /hooks/atlas {
				client_id     {env.CB_E2E_CLIENT_ID}
				client_secret {env.CB_E2E_CLIENT_SECRET}
				signing_key   {env.CB_E2E_SIGNING_KEY}
				spool         %s
				deliver_to    %s
				retry_backoff 10ms 100ms
				concurrency   1
				%s
			}
		}
		respond "the next handler must not run in durable mode" 299
	}
`, dir, deliverTo, extra))
}

// startDurableGateway loads a durable gateway delivering to rc.
func startDurableGateway(t *testing.T, rc *callbacktest.Receiver, extra string) *durableE2E {
	t.Helper()
	t.Setenv("CB_E2E_CLIENT_ID", cbE2EClientID)
	t.Setenv("CB_E2E_CLIENT_SECRET", cbE2EClientSecret)
	t.Setenv("CB_E2E_SIGNING_KEY", cbE2ESigningKey)
	dir := filepath.Join(t.TempDir(), "spool")
	tester := newTester(t)
	tester.InitServer(durableE2EConfig(dir, rc.URL+"/hooks/atlas", extra), "caddyfile")
	return &durableE2E{
		callbackE2E: &callbackE2E{tester: tester},
		sim:         atlastest.NewServer(t, atlastest.Options{}),
		target:      atlastest.CallbackTarget{AuthURL: cbE2EAuthURL, CallbackURL: cbE2ECallbackURL, ClientID: cbE2EClientID, ClientSecret: cbE2EClientSecret},
		dir:         dir,
	}
}

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
