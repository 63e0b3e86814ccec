package atlasclient

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkTransport compares a GET to a loopback server through a plain
// http.Transport with the same GET through Transport and a cached token.
func BenchmarkTransport(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == authPath {
			writeToken(w, "bench-token", 3600)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":[],"page":1,"per_page":50,"total_pages":0,"total_items":0,"has_next":false,"has_prev":false}`)
	}))
	defer srv.Close()
	target := srv.URL + "/v1/docstream/extracts?batch_id=BATCH-1"

	run := func(b *testing.B, rt http.RoundTripper) {
		hc := &http.Client{Transport: rt}
		b.ReportAllocs()
		for b.Loop() {
			resp, err := hc.Get(target)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}

	b.Run("plain", func(b *testing.B) {
		base := &http.Transport{}
		defer base.CloseIdleConnections()
		run(b, base)
	})
	b.Run("atlas", func(b *testing.B) {
		base := &http.Transport{}
		defer base.CloseIdleConnections()
		s, err := NewTokenSource(TokenOptions{Endpoint: srv.URL, ClientID: testClientID, ClientSecret: testSecret})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Token(context.Background()); err != nil {
			b.Fatal(err)
		}
		run(b, &Transport{Source: s, Base: base})
	})
}
