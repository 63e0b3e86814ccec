package simulator

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/internal/demostory"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestNarrate plays the demo's story through a narrating simulator: a
// token, an upload, extracts, callbacks the gateway accepts, takes as a
// duplicate and refuses, and checks each line told.
func TestNarrate(t *testing.T) {
	var told syncBuffer
	demostory.Output = &told
	t.Cleanup(func() { demostory.Output = nil })

	h := Handler{Narrate: true}
	if err := provision(t, &h); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.ServeHTTP(w, r, nil); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}))
	defer srv.Close()

	// The gateway's callback route, as the simulator sees it.
	answers := []string{
		`{"status":"accepted","callback_id":"2b461a66a68d0db99304ee6aeba44da3"}`,
		`{"status":"accepted","callback_id":"2b461a66a68d0db99304ee6aeba44da3","duplicate":true}`,
	}
	var calls atomic.Int32
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/auth":
			if r.Header.Get("Client-Secret") != "right" {
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"error":"invalid client credentials"}`)
				return
			}
			fmt.Fprint(w, `{"access_token":"t"}`)
		default:
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, answers[int(calls.Add(1)-1)%len(answers)])
		}
	}))
	defer gateway.Close()

	do := func(method, path, token, body string) string {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Client-Id", "demo-client")
		req.Header.Set("Client-Secret", "demo-secret")
		req.Header.Set("Token", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return b.String()
	}
	tok := regexp.MustCompile(`"access_token":"([^"]+)"`).FindStringSubmatch(do("POST", "/v1/docstream/authtoken", "", ""))
	if tok == nil {
		t.Fatal("no token")
	}
	up := do("POST", "/v1/docstream/multiupload", tok[1],
		`{"product_type":"LOAN_APP","file_urls":[{"file_url":"https://x/1","document_id":"pan-1"},{"file_url":"https://x/2","document_id":"aadhaar-1"}]}`)
	batch := regexp.MustCompile(`BATCH-[^"]+`).FindString(up)
	do("POST", "/v1/docstream/multiupload", tok[1], `{"file_urls":[]}`)
	do("GET", "/v1/docstream/extracts?batch_id="+batch, tok[1], "")
	callback := func(secret string) {
		do("POST", "/_sim/callback", "", fmt.Sprintf(`{"auth_url":%q,"callback_url":%q,"client_id":"atlas","client_secret":%q,"batch_id":%q}`,
			gateway.URL+"/auth", gateway.URL+"/hooks", secret, batch))
	}
	callback("right")
	callback("right")
	callback("wrong")
	do("POST", "/_sim/callback", "", `{"callback_url":"http://x/","batch_id":"BATCH-none"}`)
	do("GET", "/_sim/counters", "", "")

	want := []string{
		`atlas: token issued to "demo-client", valid 1h0m0s`,
		`atlas: batch ` + batch + ` uploaded (2 documents: pan-1, aadhaar-1); its extracts are ready`,
		`atlas: upload refused (400): product_type is required`,
		`atlas: extracts of ` + batch + ` sent, page 1 of 1 (2 documents)`,
		`atlas: callback for ` + batch + ` answered 202 by the gateway (spooled as 2b461a66…)`,
		`atlas: callback for ` + batch + ` answered 202 by the gateway: a duplicate of 2b461a66…, spooled before, not delivered again`,
		`atlas: callback for ` + batch + ` failed: auth_url answered 401 (the client_id or client_secret is not the callback block's)`,
		`atlas: callback not sent (404): batch not found`,
	}
	if got := strings.Split(strings.TrimSuffix(told.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("told:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if id, total, ok := demostory.BatchOf([]string{"aadhaar-1"}); !ok || id != batch || total != 2 {
		t.Errorf("BatchOf(aadhaar-1) = %q, %d, %v; want %q, 2, true", id, total, ok, batch)
	}
}
