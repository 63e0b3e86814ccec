// Package bench holds caddy-atlas's benchmarks: the Go benchmarks here,
// and the load script load.sh.
package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
)

// BenchmarkTransport measures the per-request overhead of the
// token-injecting atlasclient.Transport: a GET to a loopback server
// through a plain http.Transport (the baseline), the same GET with a
// static Token header set by the caller (what a client without
// atlasclient sends: the server reads one header more), then the same GET
// through atlasclient.Transport with a cached token. Compare them with
// benchstat or by their ratio:
//
//	go test -run xxx -bench BenchmarkTransport -benchmem -benchtime 3s -count 6 ./bench/
func BenchmarkTransport(b *testing.B) {
	srv, target := transportBenchServer(b)

	run := func(b *testing.B, rt http.RoundTripper, token string) {
		hc := &http.Client{Transport: rt}
		b.ReportAllocs()
		for b.Loop() {
			req, err := http.NewRequest(http.MethodGet, target, nil)
			if err != nil {
				b.Fatal(err)
			}
			if token != "" {
				req.Header.Set("Token", token)
			}
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}

	b.Run("plain", func(b *testing.B) {
		base := &http.Transport{}
		defer base.CloseIdleConnections()
		run(b, base, "")
	})
	b.Run("static-token", func(b *testing.B) {
		base := &http.Transport{}
		defer base.CloseIdleConnections()
		run(b, base, "bench-token")
	})
	b.Run("atlas", func(b *testing.B) {
		base := &http.Transport{}
		defer base.CloseIdleConnections()
		run(b, &atlasclient.Transport{Source: cachedTokenSource(b, srv.URL), Base: base}, "")
	})
}

// BenchmarkTransportPaired is BenchmarkTransport with the clients taking
// turns request by request, each request timed on its own, so that a busy
// machine slows them alike: it reports each one's median time per request
// (medians, since a shared machine's preemptions and GC pauses land on
// one request or another) and the ratios of the medians: atlas/plain,
// atlas/static-token, and clone/plain for the transport as it was before
// it copied requests shallowly.
//
//	go test -run xxx -bench BenchmarkTransportPaired -benchtime 20000x -count 3 ./bench/
func BenchmarkTransportPaired(b *testing.B) {
	srv, target := transportBenchServer(b)
	s := cachedTokenSource(b, srv.URL)
	clients := []struct {
		name  string
		rt    http.RoundTripper
		token string
	}{
		{"plain", &http.Transport{}, ""},
		{"static-token", &http.Transport{}, "bench-token"},
		{"atlas", &atlasclient.Transport{Source: s, Base: &http.Transport{}}, ""},
		{"atlas-clone", &cloneTransport{source: s, base: &http.Transport{}}, ""},
	}
	spent := make([][]time.Duration, len(clients))
	hcs := make([]*http.Client, len(clients))
	for i, c := range clients {
		hcs[i] = &http.Client{Transport: c.rt}
	}
	defer func() {
		for _, c := range clients {
			if t, ok := c.rt.(*http.Transport); ok {
				t.CloseIdleConnections()
			}
		}
		clients[2].rt.(*atlasclient.Transport).Base.(*http.Transport).CloseIdleConnections()
		clients[3].rt.(*cloneTransport).base.CloseIdleConnections()
	}()
	turn := 0
	for b.Loop() {
		turn++
		for k := range clients {
			// each client goes first in turn: no position bias
			i := (k + turn) % len(clients)
			c := clients[i]
			start := time.Now()
			req, err := http.NewRequest(http.MethodGet, target, nil)
			if err != nil {
				b.Fatal(err)
			}
			if c.token != "" {
				req.Header.Set("Token", c.token)
			}
			resp, err := hcs[i].Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			spent[i] = append(spent[i], time.Since(start))
		}
	}
	med := make([]float64, len(clients))
	for i, c := range clients {
		slices.Sort(spent[i])
		med[i] = float64(spent[i][len(spent[i])/2])
		b.ReportMetric(med[i]/1e3, "µs/"+c.name)
	}
	b.ReportMetric(med[2]/med[0], "atlas/plain")
	b.ReportMetric(med[2]/med[1], "atlas/static")
	b.ReportMetric(med[3]/med[0], "clone/plain")
	b.ReportMetric(0, "ns/op")
}

// cloneTransport is atlasclient.Transport's token path as it was before
// it copied requests shallowly (Request.Clone, then the token header
// set), without the 401 replay, which a 200 never reaches: the
// "before" of that change, measured in the same run.
type cloneTransport struct {
	source *atlasclient.TokenSource
	base   *http.Transport
}

func (t *cloneTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.source.Token(req.Context())
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	for k := range r.Header {
		if strings.EqualFold(k, "Authorization") || strings.EqualFold(k, "Token") {
			delete(r.Header, k)
		}
	}
	r.Header.Set("Token", tok.Value)
	return t.base.RoundTrip(r)
}

// transportBenchServer starts the loopback server of the transport
// benchmarks, closed at the end of the benchmark: authtoken, and an empty
// extracts page at target.
func transportBenchServer(b *testing.B) (srv *httptest.Server, target string) {
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v1/docstream/authtoken" {
			_, _ = io.WriteString(w, `{"access_token": "bench-token", "expires_in": 3600}`)
			return
		}
		_, _ = io.WriteString(w, `{"data":[],"page":1,"per_page":50,"total_pages":0,"total_items":0,"has_next":false,"has_prev":false}`)
	}))
	b.Cleanup(srv.Close)
	return srv, srv.URL + "/v1/docstream/extracts?batch_id=BATCH-1"
}

// cachedTokenSource returns a token source for endpoint holding a token
// already, closed at the end of the benchmark.
func cachedTokenSource(b *testing.B, endpoint string) *atlasclient.TokenSource {
	s, err := atlasclient.NewTokenSource(atlasclient.TokenOptions{
		Endpoint: endpoint, ClientID: "bench-client", ClientSecret: "bench-secret",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	if _, err := s.Token(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}
