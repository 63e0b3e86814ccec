package jsqueue

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// natsNode is a nats-server run in the test process on loopback, which a
// test can stop and start again on the same port and store.
type natsNode struct {
	t    testing.TB
	opts *server.Options
	srv  *server.Server
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNATS runs a single JetStream server.
func startNATS(t testing.TB) *natsNode {
	t.Helper()
	n := &natsNode{t: t, opts: &server.Options{
		ServerName: "single",
		Host:       "127.0.0.1",
		Port:       freePort(t),
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
	}}
	n.start()
	t.Cleanup(n.stop)
	return n
}

// startCluster runs a 3-node JetStream cluster.
func startCluster(t testing.TB) []*natsNode {
	t.Helper()
	var routes []string
	cports := make([]int, 3)
	for i := range cports {
		cports[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cports[i]))
	}
	nodes := make([]*natsNode, 3)
	for i := range nodes {
		nodes[i] = &natsNode{t: t, opts: &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       freePort(t),
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "atlas", Host: "127.0.0.1", Port: cports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}}
	}
	for _, n := range nodes {
		n.startAsync()
	}
	for _, n := range nodes {
		n.waitReady()
		t.Cleanup(n.stop)
	}
	// Wait for the meta leader, which stream creation needs.
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, n := range nodes {
			if n.srv.JetStreamIsLeader() {
				return nodes
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no JetStream meta leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *natsNode) startAsync() {
	n.t.Helper()
	o := n.opts.Clone()
	s, err := server.NewServer(o)
	if err != nil {
		n.t.Fatal(err)
	}
	n.srv = s
	go s.Start()
}

func (n *natsNode) waitReady() {
	n.t.Helper()
	if !n.srv.ReadyForConnections(20 * time.Second) {
		n.t.Fatalf("nats-server %s not ready", n.opts.ServerName)
	}
}

func (n *natsNode) start() {
	n.t.Helper()
	n.startAsync()
	n.waitReady()
}

func (n *natsNode) stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

func urls(nodes []*natsNode) []string {
	var u []string
	for _, n := range nodes {
		u = append(u, n.url())
	}
	return u
}
