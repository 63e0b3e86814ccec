package jsqueue

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
	"github.com/caddy-atlas/caddy-atlas/queue/queuetest"
)

// natsProc is a nats-server process.
type natsProc struct {
	name, url string
	cmd       *exec.Cmd
	done      chan struct{}
}

func (p *natsProc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// TestClusterLeaderKill9 runs the 3-node cluster as nats-server
// processes, built from the module's dependency, and kills the work
// stream's leader with SIGKILL in the middle of a load through two
// instances: every acknowledged callback is delivered.
func TestClusterLeaderKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs nats-server")
	}
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	work := t.TempDir()
	bin := filepath.Join(work, "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("building nats-server: %v\n%s", err, out)
	}
	cports := []int{natstest.FreePort(t), natstest.FreePort(t), natstest.FreePort(t)}
	var routes []string
	for _, p := range cports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var procs []*natsProc
	for i := range 3 {
		port := natstest.FreePort(t)
		name := fmt.Sprintf("k%d", i+1)
		conf := filepath.Join(work, name+".conf")
		os.WriteFile(conf, []byte(fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: "%s" }
cluster { name: kill9, listen: 127.0.0.1:%d, routes: [%s] }
`, name, port, filepath.Join(work, name), cports[i], strings.Join(routes, ","))), 0o600)
		cmd := exec.Command(bin, "-c", conf)
		logf, _ := os.Create(filepath.Join(work, name+".log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &natsProc{name: name, url: fmt.Sprintf("nats://127.0.0.1:%d", port), cmd: cmd, done: make(chan struct{})}
		go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
		t.Cleanup(p.kill9)
		procs = append(procs, p)
	}
	u := []string{procs[0].url, procs[1].url, procs[2].url}
	stream := newStreamName()
	rec := &queuetest.Recorder{}
	var a *Queue
	var err error
	// The cluster needs a moment to elect its meta leader.
	opts := func(urls []string) Options {
		o := testOptions(urls, stream, 3, queuetest.Options{Deliver: rec.Deliver, Concurrency: 8})
		o.PublishTimeout = 2 * time.Second
		return o
	}
	if !testutil.Poll(60*time.Second, 200*time.Millisecond, func() bool {
		a, err = Open(opts(u))
		return err == nil
	}) {
		for _, p := range procs {
			out, _ := os.ReadFile(filepath.Join(work, p.name+".log"))
			t.Logf("%s log:\n%s", p.name, out)
		}
		t.Fatalf("Open on the process cluster: %v", err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	b := openQueue(t, opts([]string{u[2], u[1], u[0]}))

	const n, workers = 300, 8
	leader, refused := loadThroughLeaderLoss(t, a, b, rec, n, workers, func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := a.work.Info(ctx)
		if err != nil || info.Cluster == nil {
			return ""
		}
		for _, p := range procs {
			if p.name == info.Cluster.Leader {
				p.kill9()
				return p.name
			}
		}
		return ""
	})
	t.Logf("kill -9 of stream leader %s after %d acks; %d appends refused and retried", leader, n/3, refused)
	t.Logf("%d deliveries for %d callbacks", len(rec.Deliveries()), n)
}
