package atlastest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

func TestControlEndpointValidation(t *testing.T) {
	srv := NewServer(t, Options{})
	tests := []struct {
		method, path string
		body         string
		status       int
	}{
		{"GET", "/_sim/revoke", "", 405},
		{"POST", "/_sim/counters", "", 405},
		{"GET", "/_sim/nope", "", 404},
		{"POST", "/_sim/", "", 404},
		{"POST", "/_sim/fail?endpoint=bogus&n=1&status=500", "", 400},
		{"POST", "/_sim/fail?endpoint=extracts&n=x&status=500", "", 400},
		{"POST", "/_sim/fail?endpoint=extracts&n=-1&status=500", "", 400},
		{"POST", "/_sim/fail?endpoint=extracts&n=1", "", 400},
		{"POST", "/_sim/fail?endpoint=extracts&n=1&status=99", "", 400},
		{"POST", "/_sim/fail?endpoint=extracts&n=1&status=600", "", 400},
		{"POST", "/_sim/delay?endpoint=extracts&n=1&ms=-5", "", 400},
		{"POST", "/_sim/delay?endpoint=extracts&n=1", "", 400},
		{"POST", "/_sim/token-lifetime?seconds=0", "", 400},
		{"POST", "/_sim/token-lifetime", "", 400},
		{"POST", "/_sim/callback", "{", 400},
		{"POST", "/_sim/callback", `{"batch_id":"x"}`, 400},
		{"POST", "/_sim/callback", `{"batch_id":"x","callback_url":"http://127.0.0.1:1/"}`, 404},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+tt.body, func(t *testing.T) {
			r := do(t, srv, tt.method, tt.path, tt.body)
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", r.status, tt.status, r.body)
			}
			if r.jsonMap(t)["error"] == nil {
				t.Errorf("no error in %s", r.body)
			}
		})
	}
	if n := srv.Calls(""); n != 0 {
		t.Errorf("control calls counted as API calls: %d", n)
	}
}

func TestControlEndpoints(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now})
	ok := func(method, path string) {
		t.Helper()
		r := do(t, srv, method, path, "")
		if r.status != 200 || string(r.body) != "{\"ok\":true}\n" {
			t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
		}
	}
	counters := func() map[string]int {
		t.Helper()
		r := do(t, srv, "GET", "/_sim/counters", "")
		var m map[string]int
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatalf("counters %s: %v", r.body, err)
		}
		return m
	}

	tok := token(t, srv)
	batch := srv.CreateBatch("a")

	// revoke
	ok("POST", "/_sim/revoke")
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 401 {
		t.Errorf("after /_sim/revoke: %d, want 401", r.status)
	}
	tok = token(t, srv)

	// fail
	ok("POST", "/_sim/fail?endpoint=extracts&n=2&status=503")
	for i := 0; i < 2; i++ {
		if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 503 {
			t.Errorf("after /_sim/fail, call %d: %d, want 503", i, r.status)
		}
	}
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 200 {
		t.Errorf("after the failures: %d", r.status)
	}
	ok("POST", "/_sim/fail?n=1&status=500") // endpoint omitted = any
	if status, _ := authStatus(t, srv); status != 500 {
		t.Errorf("after /_sim/fail with no endpoint: %d, want 500", status)
	}

	// counters
	if diff := cmp.Diff(map[string]int{"authtoken": 3, "multiupload": 0, "extracts": 4}, counters()); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}

	// delay
	ok("POST", "/_sim/delay?endpoint=authtoken&n=1&ms=120")
	start := time.Now()
	authStatus(t, srv)
	if el := time.Since(start); el < 120*time.Millisecond {
		t.Errorf("delayed authtoken took %v", el)
	}

	// token-lifetime
	ok("POST", "/_sim/token-lifetime?seconds=5")
	if _, body := authStatus(t, srv); body["expires_in"] != float64(5) {
		t.Errorf("expires_in after /_sim/token-lifetime = %v", body["expires_in"])
	}

	// reset: counters, faults, lifetime
	ok("POST", "/_sim/fail?endpoint=authtoken&n=3&status=500")
	ok("POST", "/_sim/reset")
	if diff := cmp.Diff(map[string]int{"authtoken": 0, "multiupload": 0, "extracts": 0}, counters()); diff != "" {
		t.Errorf("counters after reset (-want +got):\n%s", diff)
	}
	if status, body := authStatus(t, srv); status != 200 || body["expires_in"] != float64(3600) {
		t.Errorf("after reset: %d %v, want 200 with expires_in 3600", status, body)
	}
	// reset keeps batches and tokens
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 200 {
		t.Errorf("batch or token lost by reset: %d", r.status)
	}
}

func TestControlCallback(t *testing.T) {
	srv := NewServer(t, Options{})
	batch := srv.CreateBatch("pan-1")
	rc := newReceiver(t)

	body := fmt.Sprintf(`{"auth_url":%q,"callback_url":%q,"client_id":"atlas","client_secret":"shh","batch_id":%q}`, rc.URL+"/auth", rc.URL+"/callback", batch)
	r := do(t, srv, "POST", "/_sim/callback", body)
	if r.status != 200 {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
	want := map[string]any{"batch_id": batch, "auth_status": float64(200), "callback_status": float64(200), "body": `{"received":true}`}
	if diff := cmp.Diff(want, r.jsonMap(t)); diff != "" {
		t.Errorf("delivery (-want +got):\n%s", diff)
	}
	rc.mu.Lock()
	gotToken := rc.cbHeaders.Get("Token")
	rc.mu.Unlock()
	if gotToken != "cb-token-1" {
		t.Errorf("callback Token = %q", gotToken)
	}

	rc.mu.Lock()
	rc.cbStatus = 500
	rc.mu.Unlock()
	r = do(t, srv, "POST", "/_sim/callback", body)
	if r.status != http.StatusBadGateway || r.jsonMap(t)["error"] != "callback_url answered 500" {
		t.Errorf("failed delivery: %d %s", r.status, r.body)
	}

	r = do(t, srv, "GET", "/_sim/deliveries", "")
	var ds []map[string]any
	if err := json.Unmarshal(r.body, &ds); err != nil || len(ds) != 2 {
		t.Fatalf("deliveries: %s (%v)", r.body, err)
	}
	if ds[1]["callback_status"] != float64(500) {
		t.Errorf("deliveries[1] = %v", ds[1])
	}

	do(t, srv, "POST", "/_sim/reset", "")
	if r := do(t, srv, "GET", "/_sim/deliveries", ""); string(r.body) != "[]\n" {
		t.Errorf("deliveries after reset = %s", r.body)
	}
}
