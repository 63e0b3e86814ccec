// Package bench holds caddy-atlas's benchmarks: the Go benchmarks here,
// and the load script load.sh.
package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

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
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/docstream/authtoken" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token": "bench-token", "expires_in": 3600}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"data":[],"page":1,"per_page":50,"total_pages":0,"total_items":0,"has_next":false,"has_prev":false}`)
	}))
	defer srv.Close()
	target := srv.URL + "/v1/docstream/extracts?batch_id=BATCH-1"

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
		s, err := atlasclient.NewTokenSource(atlasclient.TokenOptions{
			Endpoint: srv.URL, ClientID: "bench-client", ClientSecret: "bench-secret",
		})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Token(context.Background()); err != nil {
			b.Fatal(err)
		}
		run(b, &atlasclient.Transport{Source: s, Base: base}, "")
	})
}
