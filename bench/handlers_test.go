package bench

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-atlas/caddy-atlas"
	"github.com/caddy-atlas/caddy-atlas/bench/upstream/server"
)

// The credentials of the in-process benchmarks.
const (
	benchClientID     = "bench-client"
	benchClientSecret = "bench-secret"
	benchCallbackID   = "bench-atlas"
	benchCallbackSec  = "bench-callback-secret"
	benchSigningKey   = "bench-signing-key-0123456789-abcdefghijklmnop"
	benchWhsec        = "whsec_YmVuY2gtd2Vic29vay1zZWNyZXQtMDEyMzQ1Njc4OQ=="
)

// benchCaddy is a Caddy loaded in-process from a Caddyfile like
// load.sh's, with the servers' handler chains called directly: no client
// connection, so that ns/op and allocs/op are Caddy's own (the upstream
// is an httptest server, on loopback).
type benchCaddy struct {
	up      *server.Server
	servers map[string]*caddyhttp.Server // by name: baseline, atlas, masked
}

// benchMask are the mask rules and delivery signing of the "masked"
// server: an atlas handler like "atlas" otherwise.
const benchMask = `mask aadhaar_number
		mask pan_number
		mask passport_number
		mask name redact
		mask name_as_per_pan redact`

func startBenchCaddy(b *testing.B) *benchCaddy {
	b.Helper()
	up, err := server.New(benchClientID, benchClientSecret)
	if err != nil {
		b.Fatal(err)
	}
	upSrv := httptest.NewServer(up)
	b.Cleanup(upSrv.Close)
	upAddr := strings.TrimPrefix(upSrv.URL, "http://")

	ports := make([]int, 3)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	log {
		level ERROR
	}
}
http://127.0.0.1:%d {
	rewrite /atlas/extracts /v1/docstream/extracts?{query}
	reverse_proxy %s {
		header_up Token %s
	}
}
http://127.0.0.1:%d {
	atlas {
		endpoint      %s
		client_id     %s
		client_secret %s
		callback /hooks/atlas {
			client_id     %s
			client_secret %s
			signing_key   %s
		}
	}
	reverse_proxy %s
}
http://127.0.0.1:%d {
	atlas {
		endpoint      %s
		client_id     %s
		client_secret %s
		%s
		callback /hooks/atlas {
			client_id     %s
			client_secret %s
			signing_key   %s
			sign_deliveries %s
		}
	}
	reverse_proxy %s
}
`, ports[0], upAddr, up.Token(), ports[1], upSrv.URL, benchClientID, benchClientSecret,
		benchCallbackID, benchCallbackSec, benchSigningKey, upAddr,
		ports[2], upSrv.URL, benchClientID, benchClientSecret, benchMask,
		benchCallbackID, benchCallbackSec, benchSigningKey, benchWhsec, upAddr)
	cfg, warn, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		b.Fatalf("adapting: %v (%v)", err, warn)
	}
	if err := caddy.Load(cfg, true); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = caddy.Stop() })
	appIface, err := caddy.ActiveContext().App("http")
	if err != nil {
		b.Fatal(err)
	}
	c := &benchCaddy{up: up, servers: map[string]*caddyhttp.Server{}}
	for _, s := range appIface.(*caddyhttp.App).Servers {
		for _, l := range s.Listen {
			switch {
			case strings.HasSuffix(l, fmt.Sprint(":", ports[0])):
				c.servers["baseline"] = s
			case strings.HasSuffix(l, fmt.Sprint(":", ports[1])):
				c.servers["atlas"] = s
			case strings.HasSuffix(l, fmt.Sprint(":", ports[2])):
				c.servers["masked"] = s
			}
		}
	}
	if len(c.servers) != 3 {
		b.Fatalf("servers not found: %v", c.servers)
	}
	return c
}

// discardWriter is a ResponseWriter that keeps the status and counts the
// body.
type discardWriter struct {
	h      http.Header
	status int
	n      int
	body   *bytes.Buffer // when not nil, the body is kept
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	if w.body != nil {
		w.body.Write(p)
	}
	return len(p), nil
}
func (w *discardWriter) Flush() {}

// copyBufs are ReadFrom's buffers, pooled as net/http's response pools
// them.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// ReadFrom implements io.ReaderFrom with a pooled buffer, as net/http's
// response does, so that a handler's io.Copy costs what it costs in a
// server.
func (w *discardWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	return io.CopyBuffer(writerOnly{w}, r, *buf)
}

// writerOnly hides ReadFrom from io.CopyBuffer.
type writerOnly struct{ io.Writer }

// serve runs one request through the server's handler chain.
func (c *benchCaddy) serve(tb testing.TB, srv string, method, target string, hdr http.Header, body []byte, keep bool) *discardWriter {
	var r *http.Request
	if body != nil {
		r = httptest.NewRequest(method, target, bytes.NewReader(body))
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	for k, v := range hdr {
		r.Header[k] = v
	}
	w := &discardWriter{h: http.Header{}}
	if keep {
		w.body = new(bytes.Buffer)
	}
	c.servers[srv].ServeHTTP(w, r)
	return w
}

// BenchmarkRoutes measures each atlas route's handler chain against Caddy's
// reverse_proxy doing the same exchange, on the same httptest upstream
// (bench/upstream's handler), in process:
//
//	extracts-6, extracts-50: GET of a 6- and a 50-document page; the
//	    baseline is reverse_proxy + rewrite + a static header_up Token
//	callback: a 17 KiB callback (35 documents), token checked, to
//	    reverse_proxy; the baseline is that reverse_proxy alone
//
// Compare baseline and atlas of each by ns/op and allocs/op:
//
//	go test -run xxx -bench BenchmarkRoutes -benchmem -count 6 ./bench/
func BenchmarkRoutes(b *testing.B) {
	c := startBenchCaddy(b)
	for _, tc := range routeCases(b, c) {
		for _, s := range []struct {
			name string
			side routeSide
		}{{"reverse_proxy", tc.baseline}, {"atlas", tc.atlas}} {
			b.Run(tc.name+"/"+s.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					w := c.serve(b, s.side.srv, s.side.method, s.side.target, s.side.hdr, s.side.body, false)
					if w.status != http.StatusOK {
						b.Fatalf("status %d", w.status)
					}
				}
			})
		}
	}
}

// BenchmarkRoutesPaired is BenchmarkRoutes with reverse_proxy and the
// atlas route taking turns request by request (first place alternating),
// each request timed on its own, so that a busy machine slows both alike.
// It reports each side's median time per request and their ratio
// atlas/reverse_proxy (below 1: the route is faster).
//
//	go test -run xxx -bench BenchmarkRoutesPaired -benchtime 20000x -count 3 ./bench/
func BenchmarkRoutesPaired(b *testing.B) {
	c := startBenchCaddy(b)
	for _, tc := range routeCases(b, c) {
		b.Run(tc.name, func(b *testing.B) {
			sides := []routeSide{tc.baseline, tc.atlas}
			spent := [2][]time.Duration{}
			turn := 0
			for b.Loop() {
				turn++
				for k := range sides {
					i := (k + turn) % 2
					s := sides[i]
					start := time.Now()
					w := c.serve(b, s.srv, s.method, s.target, s.hdr, s.body, false)
					spent[i] = append(spent[i], time.Since(start))
					if w.status != http.StatusOK {
						b.Fatalf("status %d", w.status)
					}
				}
			}
			var med [2]float64
			for i := range spent {
				slices.Sort(spent[i])
				med[i] = float64(spent[i][len(spent[i])/2])
			}
			b.ReportMetric(med[0]/1e3, "µs/reverse_proxy")
			b.ReportMetric(med[1]/1e3, "µs/atlas")
			b.ReportMetric(med[1]/med[0], "atlas/reverse_proxy")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// routeSide is one side of a route case: which server, and the request.
type routeSide struct {
	srv    string
	method string
	target string
	hdr    http.Header
	body   []byte
}

// routeCase is a route and its reverse_proxy baseline.
type routeCase struct {
	name            string
	baseline, atlas routeSide
}

// routeCases returns the cases of BenchmarkRoutes, having checked that
// both sides of each answer the same.
func routeCases(b *testing.B, c *benchCaddy) []routeCase {
	payload, err := c.up.Payload(35)
	if err != nil {
		b.Fatal(err)
	}
	auth := c.serve(b, "atlas", http.MethodPost, "http://127.0.0.1/hooks/atlas/auth", http.Header{
		"Client-Id": {benchCallbackID}, "Client-Secret": {benchCallbackSec},
	}, nil, true)
	m := regexp.MustCompile(`"access_token":\s*"([^"]+)"`).FindSubmatch(auth.body.Bytes())
	if auth.status != http.StatusOK || m == nil {
		b.Fatalf("callback auth answered %d: %s", auth.status, auth.body)
	}
	cbHeader := http.Header{"Token": {string(m[1])}, "Content-Type": {"application/json"}}

	cases := []routeCase{
		{"extracts-6",
			routeSide{"baseline", http.MethodGet, "http://127.0.0.1/atlas/extracts?batch_id=BENCH-6", nil, nil},
			routeSide{"atlas", http.MethodGet, "http://127.0.0.1/atlas/extracts?batch_id=BENCH-6", nil, nil}},
		{"extracts-50",
			routeSide{"baseline", http.MethodGet, "http://127.0.0.1/atlas/extracts?batch_id=BENCH-50", nil, nil},
			routeSide{"atlas", http.MethodGet, "http://127.0.0.1/atlas/extracts?batch_id=BENCH-50", nil, nil}},
		{"callback",
			routeSide{"baseline", http.MethodPost, "http://127.0.0.1/hooks/atlas", cbHeader, payload},
			routeSide{"atlas", http.MethodPost, "http://127.0.0.1/hooks/atlas", cbHeader, payload}},
	}
	for _, tc := range cases {
		// Both sides must answer the same, before anything is measured.
		want := c.serve(b, tc.baseline.srv, tc.baseline.method, tc.baseline.target, tc.baseline.hdr, tc.baseline.body, true)
		got := c.serve(b, tc.atlas.srv, tc.atlas.method, tc.atlas.target, tc.atlas.hdr, tc.atlas.body, true)
		if want.status != http.StatusOK || got.status != http.StatusOK || !bytes.Equal(want.body.Bytes(), got.body.Bytes()) {
			b.Fatalf("%s: the sides differ: baseline %d (%d bytes), atlas %d: %.300s", tc.name, want.status, want.n, got.status, got.body)
		}
	}
	return cases
}

// BenchmarkMasked measures what `mask` (five fields) and
// `sign_deliveries` cost on top of the atlas routes, against the same
// routes without them, in the same run: an extracts page of 50 documents,
// the same batch with all=1 (streamed a document at a time), and a 17 KiB
// callback (35 documents) handed to reverse_proxy.
//
//	go test -run xxx -bench BenchmarkMasked -benchmem -count 6 ./bench/
func BenchmarkMasked(b *testing.B) {
	c := startBenchCaddy(b)
	payload, err := c.up.Payload(35)
	if err != nil {
		b.Fatal(err)
	}
	token := func(srv string) http.Header {
		auth := c.serve(b, srv, http.MethodPost, "http://127.0.0.1/hooks/atlas/auth", http.Header{
			"Client-Id": {benchCallbackID}, "Client-Secret": {benchCallbackSec},
		}, nil, true)
		m := regexp.MustCompile(`"access_token":\s*"([^"]+)"`).FindSubmatch(auth.body.Bytes())
		if auth.status != http.StatusOK || m == nil {
			b.Fatalf("callback auth answered %d: %s", auth.status, auth.body)
		}
		return http.Header{"Token": {string(m[1])}, "Content-Type": {"application/json"}}
	}
	hdr := map[string]http.Header{"atlas": token("atlas"), "masked": token("masked")}
	for _, tc := range []struct {
		name, method, target string
		body                 []byte
	}{
		{"extracts-50", http.MethodGet, "http://127.0.0.1/atlas/extracts?batch_id=BENCH-50", nil},
		{"extracts-all", http.MethodGet, "http://127.0.0.1/atlas/extracts?batch_id=BENCH-50&all=1", nil},
		{"callback", http.MethodPost, "http://127.0.0.1/hooks/atlas", payload},
	} {
		// Both answer 200 with the same length of body (masking keeps
		// the documents, and last4 and REDACTED change lengths only a
		// little), and the masked one holds masked values.
		plain := c.serve(b, "atlas", tc.method, tc.target, hdr["atlas"], tc.body, true)
		masked := c.serve(b, "masked", tc.method, tc.target, hdr["masked"], tc.body, true)
		if plain.status != http.StatusOK || masked.status != http.StatusOK {
			b.Fatalf("%s: status %d unmasked, %d masked: %.300s", tc.name, plain.status, masked.status, masked.body)
		}
		if tc.body == nil && !bytes.Contains(masked.body.Bytes(), []byte(`"REDACTED"`)) {
			b.Fatalf("%s: the masked answer holds no masked value: %.300s", tc.name, masked.body)
		}
		for _, srv := range []string{"atlas", "masked"} {
			b.Run(tc.name+"/"+srv, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					w := c.serve(b, srv, tc.method, tc.target, hdr[srv], tc.body, false)
					if w.status != http.StatusOK {
						b.Fatalf("status %d", w.status)
					}
				}
			})
		}
	}
}
