package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
)

// The fleet test runs three Caddy processes built from this repo in front
// of one simulator that keeps one live token per client (issuing a token
// revokes the client's previous ones), once with the three sharing a file
// system storage and once with a storage each, and drives 1,000 concurrent
// requests across them on a cold cache, then a steady load through
// several token refreshes.

const (
	fleetClientID     = "fleet-client"
	fleetClientSecret = "fleet-secret-never-at-rest-0d5e"
	fleetInstances    = 3
	fleetColdRequests = 1000
	// fleetLifetime is the simulator's token lifetime: the gateways
	// refresh after 75% of it. The simulator's exp claim has one-second
	// resolution, so the token dies at Atlas up to a second before the
	// gateways think: the refresh must start before that.
	fleetLifetime = 6 * time.Second
	fleetSteady   = 10 * time.Second // two refreshes
)

// fleetSim is the simulator of the fleet test, recording when authtoken
// was called.
type fleetSim struct {
	*atlastest.Simulator
	url string

	mu    sync.Mutex
	auths []time.Time
}

func newFleetSim(t *testing.T) *fleetSim {
	t.Helper()
	s := &fleetSim{Simulator: atlastest.New(atlastest.Options{
		ClientID: fleetClientID, ClientSecret: fleetClientSecret,
		TokenLifetime: fleetLifetime, OneLiveToken: true,
	})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == atlastest.APIPrefix+atlastest.EndpointAuthToken {
			s.mu.Lock()
			s.auths = append(s.auths, time.Now())
			s.mu.Unlock()
		}
		s.Simulator.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *fleetSim) authCalls() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.auths...)
}

// startFleetInstance runs bin as one instance of the fleet and waits until
// it serves. storage is the storage global option, or "".
func startFleetInstance(t *testing.T, ctx context.Context, bin, dir, endpoint, storage string) (string, *caddyProcess) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	port := natstest.FreePort(t)
	config := filepath.Join(dir, "Caddyfile")
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	%s
}
:%d {
	atlas {
		endpoint      %s
		client_id     {env.FLEET_CLIENT_ID}
		client_secret {env.FLEET_CLIENT_SECRET}
		upload_path   off
	}
}
`, natstest.FreePort(t), storage, port, endpoint)
	if err := os.WriteFile(config, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "caddy.log")
	// Without a storage option, each instance has its own default
	// storage under its own data directory.
	env := []string{"FLEET_CLIENT_ID=" + fleetClientID, "FLEET_CLIENT_SECRET=" + fleetClientSecret}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	p := runCaddy(t, ctx, bin, config, dir, logFile, env, 15*time.Second, func() bool {
		// A path the atlas handler passes on: it answers without Atlas.
		resp, err := http.Get(base + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return base, p
}

// fleetResult counts the answers the fleet's clients got.
type fleetResult struct {
	mu       sync.Mutex
	statuses map[int]int // 0: no response
	bodies   map[int]string
}

func (r *fleetResult) add(status int, body string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.statuses == nil {
		r.statuses, r.bodies = map[int]int{}, map[int]string{}
	}
	r.statuses[status]++
	if status != http.StatusOK {
		r.bodies[status] = body
	}
}

func (r *fleetResult) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for status, n := range r.statuses {
		parts = append(parts, fmt.Sprintf("%d: %d", status, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// runFleet starts the fleet, runs the load and returns what the clients
// got, when authtoken was called, and the instances' logs.
func runFleet(t *testing.T, ctx context.Context, bin string, shared bool) (cold, steady *fleetResult, auths []time.Time, logs string) {
	sim := newFleetSim(t)
	batch := sim.CreateBatch("pan-1", "aadhaar-2")
	work := t.TempDir()
	storage := ""
	if shared {
		storage = "storage file_system {\n\t\troot " + filepath.Join(work, "shared") + "\n\t}"
	}
	var bases, dirs []string
	for i := range fleetInstances {
		dir := filepath.Join(work, fmt.Sprint("instance-", i))
		base, _ := startFleetInstance(t, ctx, bin, dir, sim.url, storage)
		bases, dirs = append(bases, base), append(dirs, dir)
	}
	client := &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: fleetColdRequests, MaxIdleConns: fleetColdRequests},
	}
	defer client.CloseIdleConnections()
	request := func(i int, res *fleetResult) {
		resp, err := client.Get(bases[i%fleetInstances] + "/atlas/extracts?batch_id=" + batch)
		if err != nil {
			res.add(0, err.Error())
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res.add(resp.StatusCode, string(body))
	}

	// A cold cache: 1,000 concurrent requests, released together.
	cold, steady = new(fleetResult), new(fleetResult)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range fleetColdRequests {
		wg.Go(func() {
			<-start
			request(i, cold)
		})
	}
	close(start)
	wg.Wait()

	// Then a steady load through the refreshes.
	until := time.Now().Add(fleetSteady)
	for w := range 15 * fleetInstances {
		wg.Go(func() {
			for i := w; time.Now().Before(until); i += 15 * fleetInstances {
				request(i, steady)
			}
		})
	}
	wg.Wait()
	var all []byte
	for _, dir := range dirs {
		out, err := os.ReadFile(filepath.Join(dir, "caddy.log"))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, out...)
	}
	// Neither the secret nor a token in a log, nor in the shared storage
	// (which holds them sealed).
	if bytes.Contains(all, []byte(fleetClientSecret)) {
		t.Error("an instance logged the client secret")
	}
	var stored []byte
	if shared {
		for _, data := range storedFiles(t, filepath.Join(work, "shared")) {
			stored = append(stored, data...)
		}
	}
	issued := map[string]bool{}
	for _, tok := range sim.IssuedTokens() {
		issued[tok] = true
	}
	isTokenByte := func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}
	for _, word := range bytes.FieldsFunc(append(all, stored...), isTokenByte) {
		if issued[string(word)] {
			t.Error("an instance logged or stored a token in the clear")
			break
		}
	}
	return cold, steady, sim.authCalls(), string(all)
}

// revokedWarning starts the log line of a token refused early in its life.
const revokedWarning = "atlas refused a token early in its life"

func TestFleetSharesOneToken(t *testing.T) {
	skipShort(t)
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildCaddy(t, ctx)

	t.Run("shared storage", func(t *testing.T) {
		cold, steady, auths, logs := runFleet(t, ctx, bin, true)
		var gaps []string
		for i := 1; i < len(auths); i++ {
			gaps = append(gaps, auths[i].Sub(auths[i-1]).Round(10*time.Millisecond).String())
		}
		t.Logf("cold: %s; steady: %s; authtoken calls: %d, %v apart", cold, steady, len(auths), gaps)
		for _, r := range []*fleetResult{cold, steady} {
			if n := r.statuses[http.StatusOK]; n == 0 || len(r.statuses) != 1 {
				t.Errorf("answers %s, want 200 only; e.g. %v", r, r.bodies)
			}
		}
		// One authtoken call per token lifetime for the fleet: the first
		// on the cold cache, then one per refresh, each 75% of the
		// lifetime after the one before as the gateways measure it (the
		// simulator sees the calls arrive with the delays of a loaded
		// machine: half the lifetime is the bound).
		minGap := fleetLifetime / 2
		for i := 1; i < len(auths); i++ {
			if gap := auths[i].Sub(auths[i-1]); gap < minGap {
				t.Errorf("authtoken call %d came %s after the one before, want >= %s (one per token lifetime)", i+1, gap, minGap)
			}
		}
		if len(auths) < 2 {
			t.Errorf("authtoken calls = %d, want a refresh during the steady load", len(auths))
		}
		// The tokens revoked by a refresh were at the end of their life:
		// no warning.
		if strings.Contains(logs, revokedWarning) {
			t.Errorf("the instances sharing a token warn of revoked tokens")
		}
	})

	t.Run("storage per instance", func(t *testing.T) {
		// Each instance's authtoken call revokes the others' tokens: the
		// 401 replay saves the requests whose replay comes before the next
		// revocation; the others get the gateway's 502, never a 401.
		cold, steady, auths, logs := runFleet(t, ctx, bin, false)
		t.Logf("cold: %s; steady: %s; authtoken calls: %d; a 502: %s", cold, steady, len(auths), strings.TrimSpace(steady.bodies[http.StatusBadGateway]))
		for _, r := range []*fleetResult{cold, steady} {
			if n := r.statuses[http.StatusUnauthorized]; n != 0 {
				t.Errorf("%d clients got a 401: %s", n, r.bodies[http.StatusUnauthorized])
			}
			if n := r.statuses[0]; n != 0 {
				t.Errorf("%d requests got no response: %s", n, r.bodies[0])
			}
		}
		// The operator is told why.
		if !strings.Contains(logs, revokedWarning) {
			t.Errorf("no instance logged %q", revokedWarning)
		}

	})
}
