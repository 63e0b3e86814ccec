package atlastest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// Server is a Simulator listening on a local httptest server.
type Server struct {
	*Simulator

	// URL is the base URL, e.g. http://127.0.0.1:41234, without a
	// trailing slash; the endpoints are URL + "/v1/docstream/...".
	URL string

	srv       *httptest.Server
	closeOnce sync.Once
}

// NewServer starts a simulator configured by opts on a local HTTP server
// and registers its Close with tb.Cleanup. Each Server of a process gets
// a port that no earlier Server of the process had, so that state a client
// keeps by the simulator's URL (a gateway's stored token, say) never
// carries over from one test's simulator to the next.
func NewServer(tb testing.TB, opts Options) *Server {
	tb.Helper()
	sim := New(opts)
	srv := httptest.NewUnstartedServer(sim)
	srv.Listener.Close()
	srv.Listener = freshListener(tb)
	srv.Start()
	s := &Server{Simulator: sim, URL: srv.URL, srv: srv}
	tb.Cleanup(s.Close)
	return s
}

// usedPorts holds the ports NewServer has listened on in this process.
var usedPorts sync.Map

// freshListener listens on a loopback port not used before by NewServer.
func freshListener(tb testing.TB) net.Listener {
	tb.Helper()
	for range 1000 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("atlastest: listening: %v", err)
		}
		if _, used := usedPorts.LoadOrStore(l.Addr().(*net.TCPAddr).Port, true); !used {
			return l
		}
		l.Close()
	}
	tb.Fatal("atlastest: no loopback port left that this process has not used")
	return nil
}

// Client returns an HTTP client configured for the server.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Close aborts pending delays and shuts the server down, blocking until
// all requests have finished. It may be called more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.Simulator.close()
		s.srv.Close()
	})
}
