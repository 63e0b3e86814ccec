package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
)

// TestBatchesKill9AfterUpload: uploads through a gateway that is killed
// with SIGKILL while they are answered; every upload the app got an
// answer for is in the ledger after a restart, is polled (its callback
// never comes), and its documents reach the app once.
func TestBatchesKill9AfterUpload(t *testing.T) {
	skipShort(t)
	if runtime.GOOS == "windows" {
		t.Skip("needs SIGKILL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	bin := buildCaddy(t, ctx)
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret})
	rc := callbacktest.NewReceiver(t)
	work := t.TempDir()
	httpPort := natstest.FreePort(t)
	config := filepath.Join(work, "Caddyfile")
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	auto_https off
	atlas {
		endpoint      %s
		client_id     %s
		client_secret {env.BATCH_CRASH_SECRET}
		queue spool %s {
			retry_backoff 10ms 100ms
		}
		batches {
			poll_after 2s
			poll_every 1s
			poll_rate  50
		}
	}
}
:%d {
	atlas {
		extracts_path /atlas/extracts
		upload_path   /atlas/multiupload
		callback /hooks/atlas {
			client_id     {env.CRASH_CLIENT_ID}
			client_secret {env.CRASH_CLIENT_SECRET}
			signing_key   {env.CRASH_SIGNING_KEY}
			deliver_to    %s/hooks/atlas
		}
	}
}
`, natstest.FreePort(t), sim.URL, e2eClientID, filepath.Join(work, "spool"), httpPort, rc.URL)
	if err := os.WriteFile(config, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BATCH_CRASH_SECRET", e2eClientSecret)
	base := "http://127.0.0.1:" + strconv.Itoa(httpPort)
	logFile := filepath.Join(work, "caddy.log")
	p := startCaddyProcess(t, ctx, bin, config, work, logFile, base+"/hooks/atlas/auth")

	// Uploads in a loop while the gateway is killed (each takes Atlas
	// 100ms, so that some are in flight): each answered one must be in
	// the ledger.
	sim.DelayNext("multiupload", 1000, 100*time.Millisecond)
	var mu sync.Mutex
	answered := map[string][]string{} // batch id -> document ids
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := 0; i < 10; i++ {
				select {
				case <-stop:
					return
				default:
				}
				doc := fmt.Sprintf("doc-%d-%d", w, i)
				body := `{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://f/` + doc + `", "document_id": "` + doc + `"}]}`
				resp, err := http.Post(base+"/atlas/multiupload", "application/json", strings.NewReader(body))
				if err != nil {
					return // the gateway is gone
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var items []struct {
					BatchID string `json:"batch_id"`
				}
				if resp.StatusCode/100 == 2 && json.Unmarshal(b, &items) == nil && len(items) == 1 {
					mu.Lock()
					answered[items[0].BatchID] = []string{doc}
					mu.Unlock()
				}
			}
		})
	}
	time.Sleep(700 * time.Millisecond)
	p.kill()
	close(stop)
	wg.Wait()
	if len(answered) == 0 {
		t.Fatal("no upload was answered before the kill")
	}

	p2 := startCaddyProcess(t, ctx, bin, config, work, logFile, base+"/hooks/atlas/auth")
	defer p2.kill()
	for id, docs := range answered {
		resp, err := http.Get(base + "/atlas/batches/" + id + "?wait=40s")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var st batchStatus
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &st) != nil || st.State != "complete" {
			t.Errorf("batch %s (documents %v) answered before the kill: %d %s", id, docs, resp.StatusCode, b)
		}
	}
	rc.WaitDelivered(t, len(answered), 30*time.Second)
	time.Sleep(time.Second) // room for a duplicate
	seen := map[string]int{}
	for _, did := range rc.Delivered() {
		var body struct {
			Data []struct {
				DocumentID string `json:"document_id"`
			} `json:"data"`
		}
		_ = json.Unmarshal(rc.Body(did), &body)
		for _, d := range body.Data {
			seen[d.DocumentID]++
		}
	}
	for _, docs := range answered {
		if seen[docs[0]] != 1 {
			t.Errorf("document %s delivered %d times, want once", docs[0], seen[docs[0]])
		}
	}
	t.Logf("%d uploads answered before the kill, each complete and delivered once after the restart", len(answered))
}
