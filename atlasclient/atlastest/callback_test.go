package atlastest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// receiver plays a customer's system: /auth issues a token to the right
// credentials, /callback accepts deliveries carrying it.
type receiver struct {
	*httptest.Server

	mu           sync.Mutex
	authHeaders  http.Header
	authMethod   string
	cbHeaders    http.Header
	cbBody       []byte
	authStatus   int    // forced auth status, 0 for normal behaviour
	authBody     string // forced auth body
	cbStatus     int    // callback status, 0 for 204
	authRequests int
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	mux := http.NewServeMux()
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.authRequests++
		rc.authHeaders = r.Header.Clone()
		rc.authMethod = r.Method
		if rc.authStatus != 0 {
			w.WriteHeader(rc.authStatus)
			_, _ = io.WriteString(w, rc.authBody)
			return
		}
		if r.Header.Get("Client-Id") != "atlas" || r.Header.Get("Client-Secret") != "shh" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"cb-token-1","token_type":"Bearer","expires_in":300}`)
	})
	mux.HandleFunc("/callback", func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.cbHeaders = r.Header.Clone()
		rc.cbBody, _ = io.ReadAll(r.Body)
		status := rc.cbStatus
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"received":true}`)
	})
	rc.Server = httptest.NewServer(mux)
	t.Cleanup(rc.Close)
	return rc
}

func TestDeliverCallback(t *testing.T) {
	sim := New(Options{})
	batch := sim.CreateBatch("loan-9-pan", "loan-9-aadhaar", "loan-9-blurry")
	rc := newReceiver(t)
	target := CallbackTarget{AuthURL: rc.URL + "/auth", CallbackURL: rc.URL + "/callback", ClientID: "atlas", ClientSecret: "shh"}

	d, err := sim.DeliverCallback(context.Background(), target, batch)
	if err != nil {
		t.Fatalf("DeliverCallback: %v", err)
	}
	if d.BatchID != batch || d.AuthStatus != 200 || d.CallbackStatus != 200 || string(d.Body) != `{"received":true}` {
		t.Errorf("delivery = %+v", d)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.authMethod != http.MethodPost || rc.authHeaders.Get("Client-Id") != "atlas" || rc.authHeaders.Get("Client-Secret") != "shh" {
		t.Errorf("auth request: %s %v", rc.authMethod, rc.authHeaders)
	}
	if got := rc.cbHeaders.Get("Token"); got != "cb-token-1" {
		t.Errorf("callback Token header = %q, want cb-token-1", got)
	}
	if got := rc.cbHeaders.Get("Content-Type"); got != "application/json" {
		t.Errorf("callback Content-Type = %q", got)
	}
	want, err := sim.BatchPayload(batch)
	if err != nil {
		t.Fatal(err)
	}
	if string(rc.cbBody) != string(want) {
		t.Errorf("callback body differs from BatchPayload:\n%s\n%s", rc.cbBody, want)
	}

	var p page
	if err := json.Unmarshal(rc.cbBody, &p); err != nil {
		t.Fatal(err)
	}
	got := []any{len(p.Data), p.Page, p.PerPage, p.TotalPages, p.TotalItems, p.HasNext, p.HasPrev}
	if diff := cmp.Diff([]any{3, 1, 3, 1, 3, false, false}, got); diff != "" {
		t.Errorf("payload page fields (-want +got):\n%s", diff)
	}
	for i, id := range []string{"loan-9-pan", "loan-9-aadhaar", "loan-9-blurry"} {
		if p.Data[i].DocumentID != id {
			t.Errorf("data[%d] = %q, want %q", i, p.Data[i].DocumentID, id)
		}
		var fd map[string]json.RawMessage
		_ = json.Unmarshal(sim.FileData(id), &fd)
		if diff := cmp.Diff(fd, p.Data[i].FileData); diff != "" {
			t.Errorf("data[%d].file_data differs from FileData (-want +got):\n%s", i, diff)
		}
	}

	if ds := sim.Deliveries(); len(ds) != 1 || ds[0].BatchID != batch || ds[0].Err != nil {
		t.Errorf("Deliveries = %+v", ds)
	}
}

func TestDeliverCallbackFailures(t *testing.T) {
	sim := New(Options{})
	batch := sim.CreateBatch("a")
	rc := newReceiver(t)
	good := CallbackTarget{AuthURL: rc.URL + "/auth", CallbackURL: rc.URL + "/callback", ClientID: "atlas", ClientSecret: "shh"}

	tests := []struct {
		name                   string
		target                 CallbackTarget
		batch                  string
		authStatus             int
		authBody               string
		cbStatus               int
		wantAuth, wantCallback int
		errSubstr              string
	}{
		{name: "wrong credentials", target: CallbackTarget{AuthURL: good.AuthURL, CallbackURL: good.CallbackURL, ClientID: "atlas", ClientSecret: "bad"}, batch: batch, wantAuth: 401, errSubstr: "auth_url answered 401"},
		{name: "auth 500", target: good, batch: batch, authStatus: 500, wantAuth: 500, errSubstr: "auth_url answered 500"},
		{name: "no access_token", target: good, batch: batch, authStatus: 200, authBody: `{"token":"x"}`, wantAuth: 200, errSubstr: "no access_token"},
		{name: "auth not json", target: good, batch: batch, authStatus: 200, authBody: `ok`, wantAuth: 200, errSubstr: "decoding response"},
		{name: "callback 500", target: good, batch: batch, cbStatus: 500, wantAuth: 200, wantCallback: 500, errSubstr: "callback_url answered 500"},
		{name: "callback 401", target: good, batch: batch, cbStatus: 401, wantAuth: 200, wantCallback: 401, errSubstr: "callback_url answered 401"},
		{name: "unknown batch", target: good, batch: "BATCH-nope", errSubstr: "batch not found"},
		{name: "relative callback url", target: CallbackTarget{AuthURL: good.AuthURL, CallbackURL: "/callback"}, batch: batch, errSubstr: "callback_url must be an absolute http(s) URL"},
		{name: "bad auth url", target: CallbackTarget{AuthURL: "ftp://x", CallbackURL: good.CallbackURL}, batch: batch, errSubstr: "auth_url must be an absolute http(s) URL"},
		{name: "unreachable", target: CallbackTarget{AuthURL: "http://127.0.0.1:1/auth", CallbackURL: good.CallbackURL}, batch: batch, errSubstr: "auth_url:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc.mu.Lock()
			rc.authStatus, rc.authBody, rc.cbStatus = tt.authStatus, tt.authBody, tt.cbStatus
			rc.mu.Unlock()
			d, err := sim.DeliverCallback(context.Background(), tt.target, tt.batch)
			if err == nil || !strings.Contains(err.Error(), tt.errSubstr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.errSubstr)
			}
			if !errors.Is(d.Err, err) || d.AuthStatus != tt.wantAuth || d.CallbackStatus != tt.wantCallback {
				t.Errorf("delivery = %+v, want auth %d callback %d", d, tt.wantAuth, tt.wantCallback)
			}
		})
	}
	if _, err := sim.DeliverCallback(context.Background(), good, "BATCH-nope"); !errors.Is(err, ErrUnknownBatch) {
		t.Errorf("unknown batch: err = %v, want ErrUnknownBatch", err)
	}
	if n := len(sim.Deliveries()); n != len(tests)+1 {
		t.Errorf("recorded %d deliveries, want %d", n, len(tests)+1)
	}
}

func TestDeliverCallbackWithoutAuth(t *testing.T) {
	sim := New(Options{})
	batch := sim.CreateBatch("a")
	rc := newReceiver(t)
	d, err := sim.DeliverCallback(context.Background(), CallbackTarget{CallbackURL: rc.URL + "/callback"}, batch)
	if err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.authRequests != 0 || d.AuthStatus != 0 {
		t.Errorf("auth_url was called (%d requests)", rc.authRequests)
	}
	if _, ok := rc.cbHeaders["Token"]; ok {
		t.Errorf("callback carried a Token header without auth: %v", rc.cbHeaders)
	}
}

func TestDeliverCallbackContext(t *testing.T) {
	sim := New(Options{})
	batch := sim.CreateBatch("a")
	rc := newReceiver(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := sim.DeliverCallback(ctx, CallbackTarget{AuthURL: rc.URL + "/auth", CallbackURL: rc.URL + "/callback"}, batch)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestDeliveryJSON(t *testing.T) {
	d := Delivery{BatchID: "B", AuthStatus: 200, CallbackStatus: 500, Err: errors.New("callback_url answered 500"), Body: []byte(`oops`)}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"batch_id":"B","auth_status":200,"callback_status":500,"error":"callback_url answered 500","body":"oops"}`
	if string(b) != want {
		t.Errorf("got %s\nwant %s", b, want)
	}
}
