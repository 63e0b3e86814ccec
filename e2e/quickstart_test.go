package e2e

import (
	"bytes"
	"context"
	"fmt"
	"go/build"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's quick start, run as a user pastes it: the commands of
// the fenced sh blocks between <!-- quickstart --> and <!-- /quickstart -->,
// in one bash, in order, against the demo of scripts/run.sh. The demo
// runs on free ports (ATLAS_GATEWAY_PORT, ATLAS_SIMULATOR_PORT,
// ATLAS_APP_PORT, CADDY_ADMIN) in a directory of its own
// (ATLAS_DEMO_DIR), and the commands get those ports and that directory
// in place of 8080, 8081, 9000, 2019 and .caddy-atlas-demo.

const (
	quickstartBegin = "<!-- quickstart -->"
	quickstartEnd   = "<!-- /quickstart -->"
)

// fencedBlock matches a fenced code block for sh, bash or shell.
var fencedBlock = regexp.MustCompile("(?ms)^```(?:sh|bash|shell)[ \t]*\n(.*?)^```[ \t]*$")

// quickstartCommands returns the commands of the sh blocks between the
// quick-start markers of readme.
func quickstartCommands(readme string) (string, error) {
	begin := strings.Index(readme, quickstartBegin)
	if begin < 0 {
		return "", fmt.Errorf("no %s marker", quickstartBegin)
	}
	rest := readme[begin+len(quickstartBegin):]
	end := strings.Index(rest, quickstartEnd)
	if end < 0 {
		return "", fmt.Errorf("no %s after %s", quickstartEnd, quickstartBegin)
	}
	var cmds []string
	for _, m := range fencedBlock.FindAllStringSubmatch(rest[:end], -1) {
		cmds = append(cmds, m[1])
	}
	if len(cmds) == 0 {
		return "", fmt.Errorf("no ```sh block between %s and %s", quickstartBegin, quickstartEnd)
	}
	return strings.Join(cmds, "\n"), nil
}

// demoPorts are the demo's fixed ports, which the commands name.
var demoPorts = []string{"8080", "8081", "9000", "2019"}

// fixedPort matches one of demoPorts after a colon, as in localhost:8080.
var fixedPort = regexp.MustCompile(`:(8080|8081|9000|2019)\b`)

// localize gives the commands the ports of ports (demoPorts' order) and
// the demo directory dir. It fails if a fixed port is left outside a
// comment, where it could reach another demo.
func localize(cmds string, ports []int, dir string) (string, error) {
	to := make(map[string]string, len(demoPorts))
	for i, p := range demoPorts {
		to[p] = strconv.Itoa(ports[i])
	}
	cmds = fixedPort.ReplaceAllStringFunc(cmds, func(s string) string { return ":" + to[s[1:]] })
	cmds = strings.ReplaceAll(cmds, ".caddy-atlas-demo", dir)
	left := regexp.MustCompile(`\b(8080|8081|9000|2019)\b`)
	for line := range strings.Lines(cmds) {
		if code, _, _ := strings.Cut(line, " #"); !strings.HasPrefix(strings.TrimSpace(line), "#") && left.MatchString(code) {
			return "", fmt.Errorf("a fixed port the test cannot replace (write it host:port): %s", strings.TrimSpace(line))
		}
	}
	return cmds, nil
}

// curlWrapper is curl as the quick start's commands get it: the real
// curl (QUICKSTART_CURL), which reports to QUICKSTART_REPORT every answer
// whose status is not 1xx, 2xx or 3xx, whether or not the command has
// -f, and a non-zero exit, even inside a pipeline.
const curlWrapper = `#!/usr/bin/env bash
headers=$(mktemp)
trap 'rm -f "$headers"' EXIT
status=0
"$QUICKSTART_CURL" --dump-header "$headers" "$@" || status=$?
while read -r proto code _; do
	case $proto in
	HTTP/*) case $code in 1?? | 2?? | 3??) ;; *) echo "HTTP $code from: curl $*" >>"$QUICKSTART_REPORT" ;; esac ;;
	esac
done <"$headers"
[ "$status" = 0 ] || echo "curl exit status $status: curl $*" >>"$QUICKSTART_REPORT"
exit "$status"
`

// quickstartPrelude starts the session: each command that exits non-zero
// is reported (line numbers are the quick start's).
const quickstartPrelude = `trap 'echo "exit status $? at line $((LINENO - 1)) of the quick start: $BASH_COMMAND" >>"$QUICKSTART_REPORT"' ERR` + "\n"

// errorBody matches a JSON answer with an "error" member.
var errorBody = regexp.MustCompile(`"error"\s*:`)

func TestQuickstart(t *testing.T) {
	skipShort(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed; the quick start is bash")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed; the quick start uses it")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := quickstartCommands(string(readme))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}

	dir := t.TempDir()
	demoDir := filepath.Join(dir, "demo")
	ports := freePorts(t, len(demoPorts))
	cmds, err = localize(cmds, ports, demoDir)
	if err != nil {
		t.Fatalf("README.md's quick start: %v", err)
	}
	admin := "localhost:" + strconv.Itoa(ports[3])

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	terminal := startDemo(t, demoDir, ports, admin)

	// The commands, in one bash, with curl wrapped.
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "curl"), []byte(curlWrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "quickstart.sh")
	if err := os.WriteFile(script, []byte(quickstartPrelude+cmds), 0o600); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(dir, "report")
	session := exec.CommandContext(ctx, bash, "--noprofile", "--norc", script)
	session.Dir = ".."
	session.Env = append(cleanEnv(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+dir, "CADDY_ADMIN="+admin, "QUICKSTART_CURL="+curl, "QUICKSTART_REPORT="+report)
	out, err := session.CombinedOutput()
	problems, _ := os.ReadFile(report)
	if err != nil {
		problems = append(problems, fmt.Sprintf("bash: %v\n", err)...)
	}
	if m := errorBody.FindIndex(out); m != nil {
		problems = append(problems, fmt.Sprintf("an error answer: %s\n", lineAt(out, m[0]))...)
	}
	if len(problems) > 0 {
		t.Errorf("the quick start failed:\n%s\ncommands:\n%s\noutput:\n%s\nthe demo's terminal:\n%s", problems, cmds, out, terminal())
	}
}

// TestQuickstartCommands checks what TestQuickstart runs of a README:
// every sh block between the markers, nothing outside them, the ports
// and the demo directory replaced, a port it cannot replace refused.
func TestQuickstartCommands(t *testing.T) {
	skipShort(t)
	readme := "```sh\nscripts/run.sh\n```\n" + quickstartBegin + "\nText.\n\n```sh\ncurl -s localhost:8080/a   # the gateway, 8080\n```\n\n" +
		"```json\n{\"not\": \"run\"}\n```\n```bash\n# on 9000\n.caddy-atlas-demo/bin/caddy x --address localhost:2019\ncurl -s http://127.0.0.1:8081/_sim/counters\n```\n" +
		quickstartEnd + "\n```sh\nscripts/test.sh\n```\n"
	cmds, err := quickstartCommands(readme)
	if err != nil {
		t.Fatal(err)
	}
	got, err := localize(cmds, []int{1, 2, 3, 4}, "/d")
	if err != nil {
		t.Fatal(err)
	}
	want := "curl -s localhost:1/a   # the gateway, 8080\n\n# on 9000\n/d/bin/caddy x --address localhost:4\ncurl -s http://127.0.0.1:2/_sim/counters\n"
	if got != want {
		t.Errorf("commands:\n%s\nwant:\n%s", got, want)
	}

	if _, err := localize("curl -s --port 8080 x\n", []int{1, 2, 3, 4}, "/d"); err == nil {
		t.Error("a bare 8080 was accepted")
	}
	for _, bad := range []string{"no markers", quickstartBegin + "\n```sh\nx\n```\n", quickstartBegin + "\ntext\n" + quickstartEnd} {
		if _, err := quickstartCommands(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// lineAt is the line of b holding offset i.
func lineAt(b []byte, i int) []byte {
	start := bytes.LastIndexByte(b[:i], '\n') + 1
	end := bytes.IndexByte(b[i:], '\n')
	if end < 0 {
		return b[start:]
	}
	return b[start : i+end]
}

// cleanEnv is the environment without what would configure the demo
// otherwise (an ATLAS_ENDPOINT of a real Atlas, say).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ATLAS_") || strings.HasPrefix(kv, "CADDY_") || strings.HasPrefix(kv, "XDG_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startDemo runs scripts/run.sh with the demo in demoDir on ports
// (gateway, simulator, app, admin) and waits until every port answers.
// It stops the demo with SIGINT, as Ctrl-C does, at the end of the
// test. The function returned is what the demo printed so far.
func startDemo(t *testing.T, demoDir string, ports []int, admin string) func() string {
	t.Helper()
	terminalFile := filepath.Join(filepath.Dir(demoDir), "terminal")
	terminal, err := os.Create(terminalFile)
	if err != nil {
		t.Fatal(err)
	}
	defer terminal.Close()
	read := func() string {
		b, _ := os.ReadFile(terminalFile)
		return string(b)
	}
	cmd := exec.Command("../scripts/run.sh")
	cmd.Env = append(cleanEnv(),
		// run.sh builds with go.
		"PATH="+filepath.Join(build.Default.GOROOT, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"),
		"ATLAS_DEMO_DIR="+demoDir,
		"ATLAS_GATEWAY_PORT="+strconv.Itoa(ports[0]),
		"ATLAS_SIMULATOR_PORT="+strconv.Itoa(ports[1]),
		"ATLAS_APP_PORT="+strconv.Itoa(ports[2]),
		"CADDY_ADMIN="+admin,
	)
	cmd.Stdout, cmd.Stderr = terminal, terminal
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})

	// The first build of cmd/caddy takes minutes.
	deadline := time.Now().Add(5 * time.Minute)
	for _, p := range ports {
		for {
			c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-done:
				t.Fatalf("scripts/run.sh exited (%v) before the demo listened on %d:\n%s", cmd.ProcessState, p, read())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the demo does not listen on %d after 5 minutes:\n%s", p, read())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return read
}

// freePorts returns n ports free on 127.0.0.1, each held until all are
// picked, so that they differ.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}
