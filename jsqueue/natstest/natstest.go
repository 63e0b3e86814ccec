// Package natstest runs nats-servers with JetStream inside a test
// process, on loopback: one server, or a cluster of them, which a test
// can stop and start again on the same ports and stores. Only tests
// import it.
package natstest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Node is one nats-server.
type Node struct {
	t    testing.TB
	opts *server.Options
	srv  *server.Server
}

// FreePort returns a loopback port that was free a moment ago, for the
// servers and the Caddy processes that tests start.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start runs a single JetStream server, stopped at the end of the test.
func Start(t testing.TB) *Node {
	t.Helper()
	n := &Node{t: t, opts: &server.Options{
		ServerName: "single",
		Host:       "127.0.0.1",
		Port:       FreePort(t),
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
	}}
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// StartCluster runs a cluster of size JetStream servers and waits for
// its meta leader; they are stopped at the end of the test.
func StartCluster(t testing.TB, size int) []*Node {
	t.Helper()
	var routes []string
	cports := make([]int, size)
	for i := range cports {
		cports[i] = FreePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cports[i]))
	}
	nodes := make([]*Node, size)
	for i := range nodes {
		nodes[i] = &Node{t: t, opts: &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       FreePort(t),
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "atlas", Host: "127.0.0.1", Port: cports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}}
	}
	StartAll(t, nodes)
	for _, n := range nodes {
		t.Cleanup(n.Stop)
	}
	return nodes
}

// StartAll starts stopped nodes of a cluster together (a node alone
// cannot elect a meta leader) and waits until JetStream has a meta
// leader.
func StartAll(t testing.TB, nodes []*Node) {
	t.Helper()
	for _, n := range nodes {
		if n.srv == nil {
			n.startAsync()
		}
	}
	for _, n := range nodes {
		n.waitReady()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, n := range nodes {
			if n.srv.JetStreamIsLeader() {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no JetStream meta leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *Node) startAsync() {
	n.t.Helper()
	s, err := server.NewServer(n.opts.Clone())
	if err != nil {
		n.t.Fatal(err)
	}
	n.srv = s
	go s.Start()
}

func (n *Node) waitReady() {
	n.t.Helper()
	if !n.srv.ReadyForConnections(20 * time.Second) {
		n.t.Fatalf("nats-server %s not ready", n.opts.ServerName)
	}
}

// Start starts a stopped node, on its port and store, and waits until it
// takes connections.
func (n *Node) Start() {
	n.t.Helper()
	n.startAsync()
	n.waitReady()
}

// Stop shuts the node down; stopping a stopped node does nothing.
func (n *Node) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// Running reports whether the node runs.
func (n *Node) Running() bool { return n.srv != nil }

// Name returns the server name.
func (n *Node) Name() string { return n.opts.ServerName }

// Connections returns the number of client connections the node has
// taken since it started.
func (n *Node) Connections() uint64 {
	n.t.Helper()
	v, err := n.srv.Varz(nil)
	if err != nil {
		n.t.Fatal(err)
	}
	return v.TotalConnections
}

// URL returns the client URL.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

// IsStreamLeader reports whether the running node leads the stream (of
// the default account).
func (n *Node) IsStreamLeader(stream string) bool {
	return n.srv != nil && n.srv.JetStreamIsStreamLeader("$G", stream)
}

// URLs returns the client URLs of nodes.
func URLs(nodes []*Node) []string {
	var u []string
	for _, n := range nodes {
		u = append(u, n.URL())
	}
	return u
}

// StreamLeader returns the node leading the stream, nil if none does.
func StreamLeader(nodes []*Node, stream string) *Node {
	for _, n := range nodes {
		if n.IsStreamLeader(stream) {
			return n
		}
	}
	return nil
}
