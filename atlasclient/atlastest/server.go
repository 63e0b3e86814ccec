package atlastest

import (
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
// and registers its Close with tb.Cleanup.
func NewServer(tb testing.TB, opts Options) *Server {
	tb.Helper()
	sim := New(opts)
	srv := httptest.NewServer(sim)
	s := &Server{Simulator: sim, URL: srv.URL, srv: srv}
	tb.Cleanup(s.Close)
	return s
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
