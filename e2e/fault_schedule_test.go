package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/build"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caddy-atlas/caddy-atlas/callback"
	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
)

// TestFaultSchedule runs a fleet the way production runs it, three Caddy
// processes built from this repo in durable mode on one R3 JetStream
// stream of three nats-server processes, every connection between them
// through a toxiproxy server (Caddy to each NATS node, and each NATS node
// to each other one), and drives it through a seeded random sequence of
// faults under load:
//
//   - kill -9 of a Caddy, restarted on the same config;
//   - kill -9 of a NATS node, restarted on the same store (it rejoins);
//   - SIGSTOP of a NATS node for 10 s, then SIGCONT;
//   - a leader step-down of the work and state streams;
//   - latency (100 to 250 ms each way), a cut (the proxies disabled:
//     connections closed, new ones refused) or a blackhole (toxiproxy's
//     timeout toxic: connections stay open, nothing passes) of the links
//     between every Caddy and one NATS node, or of one NATS node's route
//     links to the other two.
//
// One fault at a time: never two NATS nodes down (the quorum stands),
// never every Caddy. Each fault is healed, then the test waits for full
// service (the cluster whole: every stream and the consumer with a leader
// and both replicas current; a fresh callback answered 202 at once by
// every Caddy, and delivered) and records the time from the fault's end
// to it.
//
// Load runs throughout: senders post distinct callbacks across the live
// Caddy instances as Atlas would; an answer other than 202 is retried,
// on another instance, after its Retry-After. The checker records every
// answer and every delivery and asserts: every callback answered 202 is
// delivered; no callback id is delivered twice to the app (but one whose
// first delivery was made by a Caddy the schedule killed within 2s after
// it, before it could record the delivery: that one is delivered again,
// at least once, and listed); the only refusals are 503 with Retry-After
// (no other status, no connection error but from a Caddy the schedule
// killed). It prints, per fault, the refusals, the answer times and the
// recovery times.
//
// By default (CI) the schedule is one fault of each of the seven main
// kinds, in a seeded random order. ATLAS_FAULT_SCHEDULE=<duration> runs
// random faults of all ten kinds for that long instead, and
// ATLAS_FAULT_SEED=<n> replays a schedule:
//
//	ATLAS_FAULT_SCHEDULE=30m go test -run TestFaultSchedule -timeout 45m -v ./e2e/
func TestFaultSchedule(t *testing.T) {
	skipShort(t)
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL and SIGSTOP")
	}
	var long time.Duration
	if v := os.Getenv("ATLAS_FAULT_SCHEDULE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("ATLAS_FAULT_SCHEDULE=%q: %v", v, err)
		}
		long = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("ATLAS_FAULT_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("ATLAS_FAULT_SEED=%q: %v", v, err)
		}
		seed = s
	}
	t.Logf("fault schedule seed %d (replay with ATLAS_FAULT_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))

	ctx, cancel := context.WithTimeout(context.Background(), long+10*time.Minute)
	defer cancel()
	f := startFaultFleet(t, ctx)
	f.waitFullService(t, time.Now(), 90*time.Second)
	f.startLoad(4)
	t.Logf("fleet up: 3 Caddy, 3 nats-server, %d toxiproxy links; load started", f.proxyCount())

	var plan []faultKind
	if long == 0 {
		plan = slices.Clone(shortFaultKinds)
		rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	}
	start := time.Now()
	for i := 0; ; i++ {
		var kind faultKind
		if long == 0 {
			if i == len(plan) {
				break
			}
			kind = plan[i]
		} else {
			if time.Since(start) >= long {
				break
			}
			kind = allFaultKinds[rng.IntN(len(allFaultKinds))]
		}
		if !f.runFault(t, rng, i, kind, long > 0) {
			break
		}
		gap := 2 * time.Second
		if long > 0 {
			gap = time.Duration(5+rng.IntN(11)) * time.Second
		}
		time.Sleep(gap)
	}
	f.check(t, time.Since(start))
}

// faultKind names a kind of fault of the schedule.
type faultKind string

const (
	faultCaddyKill       faultKind = "caddy kill -9"
	faultNATSKill        faultKind = "nats kill -9"
	faultNATSFreeze      faultKind = "nats SIGSTOP 10s"
	faultStepDown        faultKind = "leader step-down"
	faultClientLatency   faultKind = "caddy-nats latency"
	faultClientCut       faultKind = "caddy-nats cut"
	faultClientBlackhole faultKind = "caddy-nats blackhole"
	faultRouteLatency    faultKind = "nats-nats latency"
	faultRouteCut        faultKind = "nats-nats cut"
	faultRouteBlackhole  faultKind = "nats-nats blackhole"
)

// shortFaultKinds are the faults of the default (CI) schedule, once each;
// allFaultKinds those the long schedule draws from.
var (
	shortFaultKinds = []faultKind{faultCaddyKill, faultNATSKill, faultNATSFreeze, faultStepDown,
		faultClientLatency, faultClientCut, faultRouteBlackhole}
	allFaultKinds = []faultKind{faultCaddyKill, faultNATSKill, faultNATSFreeze, faultStepDown,
		faultClientLatency, faultClientCut, faultClientBlackhole, faultRouteLatency, faultRouteCut, faultRouteBlackhole}
)

const faultStream = "FAULTS_CALLBACKS"

// faultFleet is the fleet under test and what the checker records.
type faultFleet struct {
	t       *testing.T
	ctx     context.Context
	caddy   string // binary
	work    string // directory
	nodes   []*natsNode
	insts   []*faultInstance
	toxi    *toxiproxy.Client
	clients [][]*toxiproxy.Proxy // [caddy][node]
	routes  [][]*toxiproxy.Proxy // [from node][to node], nil on the diagonal
	adverts []*toxiproxy.Proxy   // [node]: the route address each node advertises
	recv    *faultReceiver
	mon     *nats.Conn
	js      jetstream.JetStream

	token atomic.Pointer[string]
	next  atomic.Int64 // the next callback number

	// phase is the fault in progress (from its start to full service),
	// or "between faults".
	phase atomic.Pointer[faultPhase]

	mu       sync.Mutex
	acked    map[string]ackRecord
	stats    map[int]*phaseStats // by phase index, -1 between faults
	failures []string            // answers that break the contract
	retries  []*cbJob            // refused callbacks, due again after their Retry-After
	faults   []*faultPhase
	kills    []caddyKill

	stop    chan struct{}
	senders sync.WaitGroup
}

// caddyKill is a kill -9 of a Caddy by the schedule.
type caddyKill struct {
	inst int
	at   time.Time
}

type ackRecord struct {
	at    time.Time
	inst  int
	phase int
}

type phaseStats struct {
	answers, accepted, refused, otherStatus int
	connKilled, connOther                   int
	refusedByInst                           [3]int
	took                                    []time.Duration // the time to each answer
}

type faultPhase struct {
	index  int
	kind   faultKind
	target string
	start  time.Time
	healed time.Time
	// accepting is when every Caddy first answered a fresh callback 202
	// at once after the heal; full when the cluster was also whole and
	// those callbacks delivered.
	accepting, full time.Duration
	recovered       bool
}

func (p *faultPhase) label() string {
	if p == nil {
		return "between faults"
	}
	return fmt.Sprintf("#%d %s %s", p.index+1, p.kind, p.target)
}

type cbJob struct {
	k     int64
	body  []byte
	id    string
	tries int
	due   time.Time
}

// natsNode is a nats-server process of the cluster.
type natsNode struct {
	name              string
	clientPort, route int
	conf, log         string
	bin               string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (n *natsNode) start(t *testing.T) {
	t.Helper()
	logs, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(n.bin, "-c", n.conf)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		logs.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logs.Close()
		close(done)
	}()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(n.clientPort), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			out, _ := os.ReadFile(n.log)
			t.Fatalf("nats-server %s exited:\n%s", n.name, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server %s does not listen: %v", n.name, err)
		}
	}
}

func (n *natsNode) signal(sig syscall.Signal) {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(sig)
	}
}

func (n *natsNode) kill9() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// faultInstance is a Caddy process of the fleet.
type faultInstance struct {
	i                  int
	base, config, home string
	log                string
	proc               *caddyProcess
	client             *http.Client
	transport          *http.Transport
	down               atomic.Bool
	gen                atomic.Int64 // bumped at each kill
}

// faultReceiver is the app: it answers 200 and records every delivery,
// by callback id, with the instance that made it (the path).
type faultReceiver struct {
	*httptest.Server
	f          *faultFleet
	mu         sync.Mutex
	deliveries map[string][]faultDelivery
	requests   int
}

type faultDelivery struct {
	inst    string
	at      time.Time
	attempt string
	phase   string
}

func (r *faultReceiver) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.deliveries[id])
}

// goBuild builds pkg (a main package of the module's dependencies, or a
// path) into dir.
func goBuild(t *testing.T, ctx context.Context, dir, name, pkg string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(build.Default.GOROOT, "bin", "go")
	}
	bin := filepath.Join(dir, name)
	if out, err := exec.CommandContext(ctx, gobin, "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, out)
	}
	return bin
}

func startFaultFleet(t *testing.T, ctx context.Context) *faultFleet {
	t.Helper()
	f := &faultFleet{
		t: t, ctx: ctx, work: t.TempDir(),
		acked: make(map[string]ackRecord),
		stats: make(map[int]*phaseStats),
		stop:  make(chan struct{}),
	}
	bins := t.TempDir()
	f.caddy = buildCaddy(t, ctx)
	natsBin := goBuild(t, ctx, bins, "nats-server", "github.com/nats-io/nats-server/v2")
	toxiBin := goBuild(t, ctx, bins, "toxiproxy-server", "github.com/Shopify/toxiproxy/v2/cmd/server")

	// toxiproxy, as a process of its own.
	toxiPort := natstest.FreePort(t)
	toxiLog := filepath.Join(f.work, "toxiproxy.log")
	logs, err := os.Create(toxiLog)
	if err != nil {
		t.Fatal(err)
	}
	toxi := exec.CommandContext(ctx, toxiBin, "-host", "127.0.0.1", "-port", strconv.Itoa(toxiPort))
	toxi.Env = append(os.Environ(), "LOG_LEVEL=warn")
	toxi.Stdout, toxi.Stderr = logs, logs
	if err := toxi.Start(); err != nil {
		t.Fatal(err)
	}
	toxiDone := make(chan struct{})
	go func() { _ = toxi.Wait(); logs.Close(); close(toxiDone) }()
	t.Cleanup(func() { _ = toxi.Process.Kill(); <-toxiDone })
	f.toxi = toxiproxy.NewClient("127.0.0.1:" + strconv.Itoa(toxiPort))
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := f.toxi.Proxies(); err == nil {
			break
		} else if time.Now().After(deadline) {
			out, _ := os.ReadFile(toxiLog)
			t.Fatalf("toxiproxy-server does not answer: %v\n%s", err, out)
		}
	}
	proxy := func(name string, upstream int) *toxiproxy.Proxy {
		p, err := f.toxi.CreateProxy(name, "127.0.0.1:"+strconv.Itoa(natstest.FreePort(t)), "127.0.0.1:"+strconv.Itoa(upstream))
		if err != nil {
			t.Fatalf("toxiproxy: creating %s: %v", name, err)
		}
		return p
	}

	// Three nats-server processes, every route through a proxy: node a
	// dials node b through routes[a][b], and advertises adverts[a] as its
	// own route address (so that a route learnt by gossip goes through a
	// proxy too). Clients learn no server URL from the servers
	// (no_advertise): Caddy reaches each node through its proxies only.
	for i := range 3 {
		f.nodes = append(f.nodes, &natsNode{
			name: fmt.Sprintf("f%d", i+1), clientPort: natstest.FreePort(t), route: natstest.FreePort(t), bin: natsBin,
			conf: filepath.Join(f.work, fmt.Sprintf("f%d.conf", i+1)), log: filepath.Join(f.work, fmt.Sprintf("f%d.log", i+1)),
		})
	}
	f.routes = make([][]*toxiproxy.Proxy, 3)
	for a := range 3 {
		f.routes[a] = make([]*toxiproxy.Proxy, 3)
		for b := range 3 {
			if a != b {
				f.routes[a][b] = proxy(fmt.Sprintf("route-%s-%s", f.nodes[a].name, f.nodes[b].name), f.nodes[b].route)
			}
		}
		f.adverts = append(f.adverts, proxy("advert-"+f.nodes[a].name, f.nodes[a].route))
	}
	for a, n := range f.nodes {
		var routes []string
		for b := range 3 {
			if a != b {
				routes = append(routes, "nats://"+f.routes[a][b].Listen)
			}
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
	name: faults
	listen: 127.0.0.1:%d
	advertise: %q
	no_advertise: true
	routes: [%s]
}
`, n.name, n.clientPort, filepath.Join(f.work, n.name), n.route, f.adverts[a].Listen, strings.Join(routes, ", "))
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range f.nodes {
		n.start(t)
		t.Cleanup(n.kill9)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range f.nodes {
				out, _ := os.ReadFile(n.log)
				t.Logf("%s:\n%s", n.log, tail(out, 200))
			}
		}
	})

	// The checker's own connection, straight to the servers.
	var direct []string
	for _, n := range f.nodes {
		direct = append(direct, "nats://127.0.0.1:"+strconv.Itoa(n.clientPort))
	}
	f.mon, err = nats.Connect(strings.Join(direct, ","), nats.Name("fault-schedule-checker"),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.mon.Close)
	if f.js, err = jetstream.New(f.mon); err != nil {
		t.Fatal(err)
	}

	// The app, and three Caddy processes, each reaching every node
	// through a proxy of its own.
	f.recv = &faultReceiver{f: f, deliveries: make(map[string][]faultDelivery)}
	f.recv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		d := faultDelivery{inst: strings.TrimPrefix(r.URL.Path, "/deliver/"), at: time.Now(),
			attempt: r.Header.Get("X-Atlas-Attempt"), phase: f.phase.Load().label()}
		id := r.Header.Get("X-Atlas-Callback-Id")
		f.recv.mu.Lock()
		f.recv.requests++
		f.recv.deliveries[id] = append(f.recv.deliveries[id], d)
		f.recv.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(f.recv.Close)
	f.clients = make([][]*toxiproxy.Proxy, 3)
	for i := range 3 {
		var urls []string
		for b, n := range f.nodes {
			p := proxy(fmt.Sprintf("caddy%d-%s", i, n.name), n.clientPort)
			f.clients[i] = append(f.clients[i], p)
			urls = append(urls, "nats://"+f.clients[i][b].Listen)
		}
		f.insts = append(f.insts, f.startInstance(t, i, urls))
	}
	tok, err := crashToken(f.insts[0].base + "/hooks/atlas/auth")
	if err != nil {
		t.Fatal(err)
	}
	f.token.Store(&tok)
	return f
}

func (f *faultFleet) proxyCount() int {
	return 3*3 + 3*2 + 3
}

// startInstance writes the Caddyfile of instance i, whose queue reaches
// NATS at urls, and runs it. The queue's settings are the defaults
// (ack_wait 10s, publish_timeout 10s) but the delivery target.
func (f *faultFleet) startInstance(t *testing.T, i int, urls []string) *faultInstance {
	t.Helper()
	httpPort, adminPort := natstest.FreePort(t), natstest.FreePort(t)
	dir := filepath.Join(f.work, fmt.Sprintf("caddy-%d", i))
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
			deliver_to    %s/deliver/%d
			max_attempts  1000
			queue jetstream {
				url      %s
				stream   %s
				replicas 3
			}
		}
	}
}
`, adminPort, httpPort, f.recv.URL, i, strings.Join(urls, " "), faultStream)
	in := &faultInstance{
		i:      i,
		base:   "http://127.0.0.1:" + strconv.Itoa(httpPort),
		config: filepath.Join(dir, "Caddyfile"),
		home:   dir,
		log:    filepath.Join(dir, "caddy.log"),
	}
	if err := os.WriteFile(in.config, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	in.transport = &http.Transport{MaxIdleConnsPerHost: 16}
	in.client = &http.Client{Timeout: 30 * time.Second, Transport: in.transport}
	in.proc = startCaddyProcess(t, f.ctx, f.caddy, in.config, in.home, in.log, in.base+"/hooks/atlas/auth")
	return in
}

// body is callback k: distinct documents, so a distinct callback id.
func faultBody(k int64) []byte {
	return bytes.ReplaceAll(payloadtest.Sample(2), []byte(`"doc-`), []byte(fmt.Sprintf(`"fs-%07d-`, k)))
}

func (f *faultFleet) newJob() *cbJob {
	k := f.next.Add(1)
	b := faultBody(k)
	return &cbJob{k: k, body: b, id: callback.ID(b)}
}

// answer is the outcome of one post.
type answer struct {
	status     int
	retryAfter string
	err        error
	killed     bool          // the error came from a Caddy the schedule killed meanwhile
	took       time.Duration // from the request to the answer
}

func (f *faultFleet) post(in *faultInstance, job *cbJob) answer {
	gen := in.gen.Load()
	req, err := http.NewRequestWithContext(f.ctx, http.MethodPost, in.base+"/hooks/atlas", bytes.NewReader(job.body))
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Token", *f.token.Load())
	start := time.Now()
	resp, err := in.client.Do(req)
	if err != nil {
		return answer{err: err, killed: in.down.Load() || in.gen.Load() != gen, took: time.Since(start)}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), took: time.Since(start)}
}

// record files an answer to job from instance i under the fault in
// progress, and reports whether it was a 202.
func (f *faultFleet) record(job *cbJob, i int, a answer, probe bool) bool {
	ph := f.phase.Load()
	idx := -1
	if ph != nil {
		idx = ph.index
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.stats[idx]
	if st == nil {
		st = new(phaseStats)
		f.stats[idx] = st
	}
	st.answers++
	st.took = append(st.took, a.took)
	what := "load"
	if probe {
		what = "probe"
	}
	switch {
	case a.err != nil && a.killed:
		st.connKilled++
	case a.err != nil:
		st.connOther++
		f.failures = append(f.failures, fmt.Sprintf("%s callback %d (%s) to caddy %d during %s: %v", what, job.k, job.id, i, ph.label(), a.err))
	case a.status == http.StatusAccepted:
		st.accepted++
		if _, ok := f.acked[job.id]; !ok {
			f.acked[job.id] = ackRecord{at: time.Now(), inst: i, phase: idx}
		}
		return true
	case a.status == http.StatusServiceUnavailable && a.retryAfter != "":
		st.refused++
		st.refusedByInst[i]++
	default:
		st.otherStatus++
		f.failures = append(f.failures, fmt.Sprintf("%s callback %d (%s) to caddy %d during %s: status %d, Retry-After %q",
			what, job.k, job.id, i, ph.label(), a.status, a.retryAfter))
	}
	return false
}

// retryDelay is the pause before job is tried again after a: its
// Retry-After, or a second after a connection error.
func retryDelay(a answer) time.Duration {
	if s, err := strconv.Atoi(a.retryAfter); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return time.Second
}

// pick returns a live instance for the tries-th try of callback k: the
// instances in turn, so that a retry goes to another one.
func (f *faultFleet) pick(k int64, tries int) *faultInstance {
	for off := range 3 {
		in := f.insts[(int(k)+tries+off)%3]
		if !in.down.Load() {
			return in
		}
	}
	return nil
}

// startLoad runs n senders until f.stop closes.
func (f *faultFleet) startLoad(n int) {
	for range n {
		f.senders.Go(func() {
			for {
				select {
				case <-f.stop:
					return
				default:
				}
				job := f.dueRetry()
				if job == nil {
					job = f.newJob()
				}
				f.send(job)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// The callback token lives 15 minutes: a fresh one every 5.
	f.senders.Go(func() {
		tick := time.NewTicker(5 * time.Minute)
		defer tick.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
				for _, in := range f.insts {
					if in.down.Load() {
						continue
					}
					if tok, err := crashToken(in.base + "/hooks/atlas/auth"); err == nil && tok != "" {
						f.token.Store(&tok)
						break
					}
				}
			}
		}
	})
}

// send makes one try of job; a refused one is queued for a retry.
func (f *faultFleet) send(job *cbJob) bool {
	in := f.pick(job.k, job.tries)
	if in == nil {
		job.due = time.Now().Add(100 * time.Millisecond)
		f.requeue(job)
		return false
	}
	a := f.post(in, job)
	job.tries++
	if f.record(job, in.i, a, false) {
		return true
	}
	job.due = time.Now().Add(retryDelay(a))
	f.requeue(job)
	return false
}

func (f *faultFleet) requeue(job *cbJob) {
	f.mu.Lock()
	f.retries = append(f.retries, job)
	f.mu.Unlock()
}

func (f *faultFleet) dueRetry() *cbJob {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for i, j := range f.retries {
		if !j.due.After(now) {
			f.retries = slices.Delete(f.retries, i, i+1)
			return j
		}
	}
	return nil
}

// runFault injects one fault of kind, heals it, and waits for full
// service. It reports false if the fleet did not recover, and the
// schedule must stop (a second fault could then break the quorum).
func (f *faultFleet) runFault(t *testing.T, rng *rand.Rand, index int, kind faultKind, long bool) bool {
	t.Helper()
	ph := &faultPhase{index: index, kind: kind, start: time.Now()}
	hold := func(short, lo, hi int) {
		d := time.Duration(short) * time.Second
		if long {
			d = time.Duration(lo+rng.IntN(hi-lo+1)) * time.Second
		}
		time.Sleep(d)
	}
	node := rng.IntN(3)
	leader := f.streamLeader()
	// Kill or freeze the work stream's leader: always in the short
	// schedule, half the time in the long one.
	if (kind == faultNATSKill || kind == faultNATSFreeze) && (!long || rng.IntN(2) == 0) {
		for i, n := range f.nodes {
			if n.name == leader {
				node = i
			}
		}
	}
	n := f.nodes[node]
	role := "replica"
	if n.name == leader {
		role = "leader"
	}
	switch kind {
	case faultCaddyKill:
		in := f.insts[rng.IntN(3)]
		ph.target = fmt.Sprintf("caddy %d", in.i)
		f.phase.Store(ph)
		in.down.Store(true)
		in.gen.Add(1)
		f.mu.Lock()
		f.kills = append(f.kills, caddyKill{inst: in.i, at: time.Now()})
		f.mu.Unlock()
		in.proc.kill()
		in.transport.CloseIdleConnections()
		hold(2, 2, 10)
		ph.healed = time.Now()
		in.proc = startCaddyProcess(t, f.ctx, f.caddy, in.config, in.home, in.log, in.base+"/hooks/atlas/auth")
		in.down.Store(false)
	case faultNATSKill:
		ph.target = n.name + " (" + role + ")"
		f.phase.Store(ph)
		n.kill9()
		hold(3, 2, 15)
		ph.healed = time.Now()
		n.start(t)
	case faultNATSFreeze:
		ph.target = n.name + " (" + role + ")"
		f.phase.Store(ph)
		n.signal(syscall.SIGSTOP)
		time.Sleep(10 * time.Second)
		n.signal(syscall.SIGCONT)
		ph.healed = time.Now()
	case faultStepDown:
		ph.target = "work leader " + leader
		f.phase.Store(ph)
		for _, s := range []string{faultStream, faultStream + "_STATE"} {
			if err := f.stepDown(s); err != nil {
				t.Errorf("step-down of %s: %v", s, err)
			}
		}
		ph.healed = time.Now()
	case faultClientLatency, faultClientCut, faultClientBlackhole, faultRouteLatency, faultRouteCut, faultRouteBlackhole:
		var links []*toxiproxy.Proxy
		if kind == faultClientLatency || kind == faultClientCut || kind == faultClientBlackhole {
			for i := range f.insts {
				links = append(links, f.clients[i][node])
			}
			ph.target = "every caddy to " + n.name + " (" + role + ")"
		} else {
			for b := range f.nodes {
				if b != node {
					links = append(links, f.routes[node][b], f.routes[b][node])
				}
			}
			links = append(links, f.adverts[node])
			ph.target = n.name + " (" + role + ") from its peers"
		}
		latency := 100 + rng.IntN(151)
		if kind == faultClientLatency || kind == faultRouteLatency {
			ph.target += fmt.Sprintf(", %dms each way", latency)
		}
		f.phase.Store(ph)
		for _, p := range links {
			var err error
			switch kind {
			case faultClientLatency, faultRouteLatency:
				for _, dir := range []string{"upstream", "downstream"} {
					if _, err = p.AddToxic("latency-"+dir, "latency", dir, 1, toxiproxy.Attributes{"latency": latency, "jitter": latency / 5}); err != nil {
						break
					}
				}
			case faultClientCut, faultRouteCut:
				err = p.Disable()
			default:
				for _, dir := range []string{"upstream", "downstream"} {
					if _, err = p.AddToxic("blackhole-"+dir, "timeout", dir, 1, toxiproxy.Attributes{"timeout": 0}); err != nil {
						break
					}
				}
			}
			if err != nil {
				t.Fatalf("toxiproxy %s on %s: %v", kind, p.Name, err)
			}
		}
		hold(4, 5, 20)
		ph.healed = time.Now()
		for _, p := range links {
			var err error
			switch kind {
			case faultClientCut, faultRouteCut:
				err = p.Enable()
			default:
				toxics, terr := p.Toxics()
				err = terr
				for _, tx := range toxics {
					if err = p.RemoveToxic(tx.Name); err != nil {
						break
					}
				}
			}
			if err != nil {
				t.Fatalf("toxiproxy: healing %s on %s: %v", kind, p.Name, err)
			}
		}
	default:
		t.Fatalf("unknown fault %q", kind)
	}
	f.mu.Lock()
	f.faults = append(f.faults, ph)
	f.mu.Unlock()
	ok := f.recover(ph, 3*time.Minute)
	f.phase.Store(nil)
	if !ok {
		t.Errorf("fault %s: no full service %s after its end; the schedule stops", ph.label(), 3*time.Minute)
		return false
	}
	t.Logf("fault %s: %s long, every Caddy accepting %s and full service %s after its end",
		ph.label(), ph.healed.Sub(ph.start).Round(100*time.Millisecond), ph.accepting.Round(100*time.Millisecond), ph.full.Round(100*time.Millisecond))
	return true
}

// streamLeader returns the name of the work stream's leader, "" if
// none answers.
func (f *faultFleet) streamLeader() string {
	ctx, cancel := context.WithTimeout(f.ctx, 3*time.Second)
	defer cancel()
	s, err := f.js.Stream(ctx, faultStream)
	if err != nil {
		return ""
	}
	if c := s.CachedInfo().Cluster; c != nil {
		return c.Leader
	}
	return ""
}

func (f *faultFleet) stepDown(stream string) error {
	var err error
	for try := 0; try < 5; try++ {
		var msg *nats.Msg
		msg, err = f.mon.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 5*time.Second)
		if err == nil {
			var r struct {
				Success bool `json:"success"`
				Error   *struct {
					Description string `json:"description"`
				} `json:"error"`
			}
			if err = json.Unmarshal(msg.Data, &r); err == nil && !r.Success {
				err = fmt.Errorf("%s", msg.Data)
			}
			if err == nil {
				return nil
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return err
}

// clusterWhole reports whether every stream of the queue, and its
// delivery consumer, has a leader and two current replicas online.
func (f *faultFleet) clusterWhole() bool {
	ctx, cancel := context.WithTimeout(f.ctx, 3*time.Second)
	defer cancel()
	whole := func(c *jetstream.ClusterInfo) bool {
		if c == nil || c.Leader == "" || len(c.Replicas) != 2 {
			return false
		}
		for _, r := range c.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
		return true
	}
	for _, name := range []string{faultStream, faultStream + "_STATE", faultStream + "_DEAD"} {
		s, err := f.js.Stream(ctx, name)
		if err != nil || !whole(s.CachedInfo().Cluster) {
			return false
		}
		if name == faultStream {
			c, err := s.Consumer(ctx, "deliver")
			if err != nil || !whole(c.CachedInfo().Cluster) {
				return false
			}
		}
	}
	return true
}

// probe posts a fresh callback to every Caddy and reports whether each
// answered 202 at once; the callbacks' ids are returned either way (the
// accepted ones must be delivered like any other).
func (f *faultFleet) probe() (bool, []string) {
	ok := true
	var ids []string
	for _, in := range f.insts {
		if in.down.Load() {
			return false, ids
		}
		job := f.newJob()
		if f.record(job, in.i, f.post(in, job), true) {
			ids = append(ids, job.id)
		} else {
			ok = false
			// Atlas would retry it: the load's senders do.
			job.tries++
			job.due = time.Now().Add(time.Second)
			f.requeue(job)
		}
	}
	return ok, ids
}

// recover waits, at most within, until every Caddy answers a fresh
// callback 202 at once, the cluster is whole and those callbacks are
// delivered, and files the times from ph's end.
func (f *faultFleet) recover(ph *faultPhase, within time.Duration) bool {
	deadline := ph.healed.Add(within)
	for time.Now().Before(deadline) {
		ok, ids := f.probe()
		if !ok {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if ph.accepting == 0 {
			ph.accepting = time.Since(ph.healed)
		}
		delivered := false
		for until := time.Now().Add(5 * time.Second); time.Now().Before(until); time.Sleep(50 * time.Millisecond) {
			delivered = true
			for _, id := range ids {
				if f.recv.count(id) == 0 {
					delivered = false
				}
			}
			if delivered {
				break
			}
		}
		if delivered && f.clusterWhole() {
			ph.full = time.Since(ph.healed)
			ph.recovered = true
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// waitFullService waits for the fleet to start serving: every Caddy
// answers 202 at once, the cluster is whole.
func (f *faultFleet) waitFullService(t *testing.T, since time.Time, within time.Duration) {
	t.Helper()
	ph := &faultPhase{index: -2, kind: "start", healed: since}
	if !f.recover(ph, within) {
		t.Fatalf("the fleet does not serve within %s", within)
	}
	t.Logf("fleet serving %s after start", ph.full.Round(100*time.Millisecond))
	// The start's refusals (the queue opening) are no fault's.
	f.mu.Lock()
	delete(f.stats, -1)
	f.mu.Unlock()
}

// check stops the load, retries every refused callback until it is
// accepted, waits for the queue to drain, and asserts and prints what
// the issue asks.
func (f *faultFleet) check(t *testing.T, ran time.Duration) {
	t.Helper()
	close(f.stop)
	f.senders.Wait()

	// Atlas retries what was refused until it is accepted.
	for deadline := time.Now().Add(90 * time.Second); ; {
		f.mu.Lock()
		pending := f.retries
		f.retries = nil
		f.mu.Unlock()
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d refused callbacks still not accepted 90s after the schedule, e.g. callback %d", len(pending), pending[0].k)
			break
		}
		for _, job := range pending {
			job.due = time.Time{}
			f.send(job)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Every accepted callback is delivered.
	f.mu.Lock()
	acked := make(map[string]ackRecord, len(f.acked))
	for id, a := range f.acked {
		acked[id] = a
	}
	f.mu.Unlock()
	var lost []string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		lost = lost[:0]
		for id := range acked {
			if f.recv.count(id) == 0 {
				lost = append(lost, id)
			}
		}
		if len(lost) == 0 || time.Now().After(deadline) {
			break
		}
	}
	// Redeliveries in flight settle (an ack wait).
	time.Sleep(12 * time.Second)

	f.recv.mu.Lock()
	deliveries := make(map[string][]faultDelivery, len(f.recv.deliveries))
	for id, ds := range f.recv.deliveries {
		deliveries[id] = slices.Clone(ds)
	}
	requests := f.recv.requests
	f.recv.mu.Unlock()
	// A callback delivered by a Caddy killed right after (before it
	// could record the delivery) is delivered again: the at-least-once
	// that jsqueue documents, which no queue avoids under kill -9. Those
	// are counted and listed; any other second delivery fails the test.
	var dups, killDups []string
	for id, ds := range deliveries {
		switch {
		case len(ds) == 2 && f.killedAfter(ds[0]) != "":
			killDups = append(killDups, id)
		case len(ds) > 1:
			dups = append(dups, id)
		}
	}
	sort.Strings(dups)
	sort.Strings(killDups)
	unknown := 0
	for id := range deliveries {
		if _, ok := acked[id]; !ok {
			unknown++
		}
	}

	// The figures.
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "fault schedule: %d faults in %s; %d callbacks sent, %d accepted (202), %d delivered (%d deliveries), %d lost, %d ids delivered twice by the kill -9 of the Caddy that delivered them first, %d ids delivered more than once otherwise, %d delivered without a 202 seen (accepted but answered otherwise)\n",
		len(f.faults), ran.Round(time.Second), f.next.Load(), len(acked), len(deliveries), requests, len(lost), len(killDups), len(dups), unknown)
	fmt.Fprintf(&b, "%-4s %-22s %-44s %8s %8s %7s %8s %16s %10s %10s %10s\n",
		"#", "fault", "target", "answers", "refused", "refus%", "killedCE", "answer p99/max", "fault len", "accepting", "full")
	row := func(idx int, kind, target, dur, acc, full string) {
		st := f.stats[idx]
		if st == nil {
			st = new(phaseStats)
		}
		pct := 0.0
		if st.answers > 0 {
			pct = 100 * float64(st.refused) / float64(st.answers)
		}
		num := strconv.Itoa(idx + 1)
		if idx < 0 {
			num = "-"
		}
		fmt.Fprintf(&b, "%-4s %-22s %-44s %8d %8d %6.2f%% %8d %16s %10s %10s %10s\n", num, kind, target, st.answers, st.refused, pct, st.connKilled, p99Max(st.took), dur, acc, full)
	}
	for _, ph := range f.faults {
		full := "not"
		if ph.recovered {
			full = ph.full.Round(100 * time.Millisecond).String()
		}
		row(ph.index, string(ph.kind), ph.target, ph.healed.Sub(ph.start).Round(100*time.Millisecond).String(),
			ph.accepting.Round(100*time.Millisecond).String(), full)
	}
	row(-1, "between faults", "", "", "", "")
	// Per kind.
	type kindSum struct {
		n, answers, refused, connKilled int
		acc, full, took                 []time.Duration
	}
	sums := map[faultKind]*kindSum{}
	for _, ph := range f.faults {
		s := sums[ph.kind]
		if s == nil {
			s = new(kindSum)
			sums[ph.kind] = s
		}
		s.n++
		if st := f.stats[ph.index]; st != nil {
			s.answers += st.answers
			s.refused += st.refused
			s.connKilled += st.connKilled
			s.took = append(s.took, st.took...)
		}
		s.acc = append(s.acc, ph.accepting)
		if ph.recovered {
			s.full = append(s.full, ph.full)
		}
	}
	fmt.Fprintf(&b, "\nby kind:\n%-22s %4s %8s %8s %7s %8s %16s %18s %18s\n", "fault", "n", "answers", "refused", "refus%", "killedCE", "answer p99/max", "accepting med/max", "full med/max")
	for _, k := range allFaultKinds {
		s := sums[k]
		if s == nil {
			continue
		}
		pct := 0.0
		if s.answers > 0 {
			pct = 100 * float64(s.refused) / float64(s.answers)
		}
		fmt.Fprintf(&b, "%-22s %4d %8d %8d %6.2f%% %8d %16s %18s %18s\n", k, s.n, s.answers, s.refused, pct, s.connKilled, p99Max(s.took), medMax(s.acc), medMax(s.full))
	}
	t.Log(b.String())

	if len(f.failures) > 0 {
		t.Errorf("%d answers other than 202 or 503 with Retry-After (or connection errors not from a killed Caddy), e.g.:\n%s",
			len(f.failures), strings.Join(f.failures[:min(10, len(f.failures))], "\n"))
	}
	if len(lost) > 0 {
		sort.Strings(lost)
		var ex []string
		for _, id := range lost[:min(10, len(lost))] {
			a := acked[id]
			ex = append(ex, fmt.Sprintf("%s accepted by caddy %d at %s during %s", id, a.inst, a.at.Format("15:04:05.000"), f.phaseLabel(a.phase)))
		}
		t.Errorf("%d of %d accepted callbacks not delivered:\n%s", len(lost), len(acked), strings.Join(ex, "\n"))
	}
	describe := func(id string) string {
		a := acked[id]
		var ds []string
		for _, d := range deliveries[id] {
			ds = append(ds, fmt.Sprintf("caddy %s attempt %s at %s during %s", d.inst, d.attempt, d.at.Format("15:04:05.000"), d.phase))
		}
		return fmt.Sprintf("%s (accepted by caddy %d at %s): %s%s", id, a.inst, a.at.Format("15:04:05.000"),
			strings.Join(ds, "; "), f.killedAfter(deliveries[id][0]))
	}
	for _, id := range killDups {
		t.Logf("delivered again after the kill -9 of the Caddy that delivered it first (at least once): %s", describe(id))
	}
	if len(dups) > 0 {
		var ex []string
		for _, id := range dups[:min(20, len(dups))] {
			ex = append(ex, describe(id))
		}
		t.Errorf("%d callback ids delivered more than once to the app:\n%s", len(dups), strings.Join(ex, "\n"))
	}
}

// killedAfter says whether the Caddy that made delivery d was killed by
// the schedule within 2s after it (recording a delivery takes
// milliseconds when no other fault is in progress, and the schedule runs
// one at a time): then it died between the delivery and the record of
// its outcome, and the callback is delivered again, the at-least-once
// that the jsqueue package documents.
func (f *faultFleet) killedAfter(d faultDelivery) string {
	for _, k := range f.kills {
		if strconv.Itoa(k.inst) == d.inst && !k.at.Before(d.at) && k.at.Sub(d.at) < 2*time.Second {
			return fmt.Sprintf(" (caddy %s was killed %s after its delivery)", d.inst, k.at.Sub(d.at).Round(time.Millisecond))
		}
	}
	return ""
}

func (f *faultFleet) phaseLabel(idx int) string {
	for _, ph := range f.faults {
		if ph.index == idx {
			return ph.label()
		}
	}
	return "between faults"
}

// medMax formats the median and the maximum of ds.
func medMax(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(100*time.Millisecond).String() + " / " + s[len(s)-1].Round(100*time.Millisecond).String()
}

// p99Max formats the 99th percentile and the maximum of ds.
func p99Max(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*99/100].Round(10*time.Millisecond).String() + " / " + s[len(s)-1].Round(10*time.Millisecond).String()
}

// tail returns the last n lines of b.
func tail(b []byte, n int) []byte {
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, []byte("\n"))
}
