package jsqueue

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
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
	procs, work := startProcessCluster(t)
	stream := newStreamName()
	rec := &queuetest.Recorder{}
	a, b := openOnProcessCluster(t, procs, work, stream, rec)

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

// startProcessCluster builds nats-server from the module's dependency
// and runs a cluster of three on loopback, each a process whose log is
// in the returned directory.
func startProcessCluster(t *testing.T) ([]*natsProc, string) {
	t.Helper()
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
	return procs, work
}

// openOnProcessCluster opens two instances of an R3 queue on the process
// cluster, delivering to rec, once the cluster has elected its meta
// leader.
func openOnProcessCluster(t *testing.T, procs []*natsProc, work, stream string, rec *queuetest.Recorder) (a, b *Queue) {
	t.Helper()
	u := []string{procs[0].url, procs[1].url, procs[2].url}
	var err error
	opts := func(urls []string) Options {
		return testOptions(urls, stream, 3, queuetest.Options{Deliver: rec.Deliver, Concurrency: 8})
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
	b = openQueue(t, opts([]string{u[2], u[1], u[0]}))
	return a, b
}

// TestClusterFrozenNode freezes the stream leader's process for 10 s
// (SIGSTOP, as a long pause or a one-way partition would) in the middle
// of a load through two instances: at most 5% of the appends are
// refused, and every acknowledged callback is delivered.
func TestClusterFrozenNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs nats-server")
	}
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGSTOP")
	}
	procs, work := startProcessCluster(t)
	stream := newStreamName()
	rec := &queuetest.Recorder{}
	a, b := openOnProcessCluster(t, procs, work, stream, rec)

	var next, acked, refused atomic.Int64
	var firstRefusal atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			q := a
			if w%2 == 1 {
				q = b
			}
			for {
				select {
				case <-done:
					return
				default:
				}
				i := int(next.Add(1) - 1)
				if _, err := q.Append(context.Background(), queuetest.Entry(i, 1024)); err != nil {
					refused.Add(1)
					firstRefusal.CompareAndSwap(nil, err.Error())
					continue
				}
				acked.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	info, err := a.work.Info(ctx)
	cancel()
	if err != nil || info.Cluster == nil {
		t.Fatalf("stream info: %v", err)
	}
	var frozen *natsProc
	for _, p := range procs {
		if p.name == info.Cluster.Leader {
			frozen = p
		}
	}
	if frozen == nil {
		t.Fatalf("no process is the stream leader %q", info.Cluster.Leader)
	}
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Second)
	if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	close(done)
	wg.Wait()
	total := acked.Load() + refused.Load()
	t.Logf("froze stream leader %s for 10s: %d appends, %d refused (%.2f%%)", frozen.name, total, refused.Load(), 100*float64(refused.Load())/float64(total))
	if refused.Load()*20 > total {
		t.Errorf("%d of %d appends refused, more than 5%%; the first: %v", refused.Load(), total, firstRefusal.Load())
	}
	n := int(next.Load())
	testutil.WaitFor(t, 60*time.Second, "every acknowledged callback delivered", func() bool {
		delivered := 0
		for i := range n {
			if rec.Count(queuetest.ID(i)) > 0 {
				delivered++
			}
		}
		return delivered >= int(acked.Load())
	})
}
