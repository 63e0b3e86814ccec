// Command natscheck runs a cluster of nats-servers with JetStream inside
// one process, on loopback, for scripts/check-configs.sh to validate the
// Caddyfiles that use `queue jetstream` against real servers rather than
// a stand-in URL.
//
//	go run ./scripts/natscheck -dir DIR [-size 3]
//
// The servers run in operator (JWT) mode, as a cluster with
// decentralized auth does: one account with JetStream, one user of it.
// natscheck writes that user's credentials to DIR/user.creds (the format
// of `nsc generate creds`), and, once every server takes connections and
// JetStream has a meta leader, the client URLs to DIR/urls, space
// separated on one line. It runs until SIGINT or SIGTERM, then shuts the
// servers down. The stores are under DIR.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

func main() {
	dir := flag.String("dir", "", "directory for user.creds, urls and the stores")
	size := flag.Int("size", 3, "number of servers in the cluster")
	flag.Parse()
	if *dir == "" || *size < 1 {
		fmt.Fprintln(os.Stderr, "usage: natscheck -dir DIR [-size N]")
		os.Exit(2)
	}
	log.SetFlags(0)
	log.SetPrefix("natscheck: ")
	servers, err := run(*dir, *size)
	if err != nil {
		log.Print(err)
	}
	if err == nil {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
	}
	for _, s := range servers {
		s.Shutdown()
	}
	for _, s := range servers {
		s.WaitForShutdown()
	}
	if err != nil {
		os.Exit(1)
	}
}

// trust is an operator with a system account and an account with
// JetStream, and a user of the latter.
type trust struct {
	operator *jwt.OperatorClaims
	accounts map[string]string // public key -> account JWT
	system   string            // the system account's public key
	creds    []byte            // the user's .creds file
}

func newTrust() (*trust, error) {
	okp, err := nkeys.CreateOperator()
	if err != nil {
		return nil, err
	}
	opub, _ := okp.PublicKey()
	t := &trust{accounts: make(map[string]string)}
	account := func(name string, js bool) (nkeys.KeyPair, string, error) {
		akp, err := nkeys.CreateAccount()
		if err != nil {
			return nil, "", err
		}
		apub, _ := akp.PublicKey()
		ac := jwt.NewAccountClaims(apub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		token, err := ac.Encode(okp)
		if err != nil {
			return nil, "", err
		}
		t.accounts[apub] = token
		return akp, apub, nil
	}
	_, sys, err := account("SYS", false)
	if err != nil {
		return nil, err
	}
	akp, _, err := account("ATLAS", true)
	if err != nil {
		return nil, err
	}
	t.system = sys
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "natscheck"
	oc.SystemAccount = sys
	otoken, err := oc.Encode(okp)
	if err != nil {
		return nil, err
	}
	if t.operator, err = jwt.DecodeOperatorClaims(otoken); err != nil {
		return nil, err
	}
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = "caddy-atlas"
	utoken, err := uc.Encode(akp)
	if err != nil {
		return nil, err
	}
	seed, _ := ukp.Seed()
	t.creds, err = jwt.FormatUserConfig(utoken, seed)
	return t, err
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// run starts the cluster and writes user.creds and urls; the servers it
// returns are to be shut down, on error too.
func run(dir string, size int) ([]*server.Server, error) {
	t, err := newTrust()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "user.creds"), t.creds, 0o600); err != nil {
		return nil, err
	}
	ports, err := freePorts(2 * size)
	if err != nil {
		return nil, err
	}
	var routes, urls []string
	for i := range size {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[size+i]))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	var servers []*server.Server
	for i := range size {
		resolver := &server.MemAccResolver{}
		for pub, token := range t.accounts {
			if err := resolver.Store(pub, token); err != nil {
				return servers, err
			}
		}
		opts := &server.Options{
			ServerName:       fmt.Sprintf("natscheck-%d", i+1),
			Host:             "127.0.0.1",
			Port:             ports[i],
			JetStream:        true,
			StoreDir:         filepath.Join(dir, fmt.Sprintf("store-%d", i+1)),
			MaxPayload:       8 << 20, // as the nats.conf of docs/operations.md
			NoLog:            true,
			NoSigs:           true,
			TrustedOperators: []*jwt.OperatorClaims{t.operator},
			SystemAccount:    t.system,
			AccountResolver:  resolver,
		}
		if size > 1 {
			opts.Cluster = server.ClusterOpts{Name: "natscheck", Host: "127.0.0.1", Port: ports[size+i]}
			opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}
		s, err := server.NewServer(opts)
		if err != nil {
			return servers, err
		}
		servers = append(servers, s)
		go s.Start()
	}
	for _, s := range servers {
		if !s.ReadyForConnections(20 * time.Second) {
			return servers, fmt.Errorf("nats-server %s not ready", s.Name())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !leader(servers) {
		if time.Now().After(deadline) {
			return servers, errors.New("no JetStream meta leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// urls appears whole: written aside, then renamed.
	tmp := filepath.Join(dir, "urls.tmp")
	if err := os.WriteFile(tmp, []byte(strings.Join(urls, " ")+"\n"), 0o644); err != nil {
		return servers, err
	}
	return servers, os.Rename(tmp, filepath.Join(dir, "urls"))
}

func leader(servers []*server.Server) bool {
	for _, s := range servers {
		if s.JetStreamIsLeader() {
			return true
		}
	}
	return false
}
