package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
)

// TestE2EAppTwoSites runs the two-site Caddyfile of the atlas app: the
// account and the queue in the global options; a public site whose atlas
// block has only the callback route (no account, no queue of its own);
// an internal site whose atlas block is empty. A callback on the public
// site is stored in the app's queue and delivered; the internal site
// proxies extracts with the app's account.
func TestE2EAppTwoSites(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_ATLAS_CLIENT_ID", e2eClientID)
	t.Setenv("E2E_ATLAS_CLIENT_SECRET", e2eClientSecret)
	t.Setenv("CB_E2E_CLIENT_ID", cbE2EClientID)
	t.Setenv("CB_E2E_CLIENT_SECRET", cbE2EClientSecret)
	t.Setenv("CB_E2E_SIGNING_KEY", cbE2ESigningKey)
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret})
	rc := callbacktest.NewReceiver(t)
	dir := filepath.Join(t.TempDir(), "app-spool")
	internalURL := "http://127.0.0.1:" + strconv.Itoa(natstest.FreePort(t))

	config := fmt.Sprintf(`{
	skip_install_trust
	admin %s
	http_port %d
	https_port %d
	grace_period 1ns
	atlas {
		endpoint      %s
		client_id     {env.E2E_ATLAS_CLIENT_ID}
		client_secret {env.E2E_ATLAS_CLIENT_SECRET}
		queue spool %s {
			retry_backoff 10ms 100ms
		}
	}
}
%s {
	route {
		atlas {
			extracts_path off
			upload_path off
			callback /hooks/atlas {
				client_id     {env.CB_E2E_CLIENT_ID}
				client_secret {env.CB_E2E_CLIENT_SECRET}
				signing_key   {env.CB_E2E_SIGNING_KEY}
				deliver_to    %s/hooks/atlas
			}
		}
		respond "the next handler must not run in durable mode" 299
	}
}
%s {
	route {
		atlas
		respond "internal app" 200
	}
}
`, adminAddr, httpPort, httpsPort, sim.URL, dir, gatewayURL, rc.URL, internalURL)
	tester := newTester(t)
	tester.InitServer(config, "caddyfile")

	// The callback on the public site: stored in the app's queue (202),
	// then delivered.
	batch := sim.CreateBatch("two-sites-pan", "two-sites-gst")
	target := atlastest.CallbackTarget{AuthURL: cbE2EAuthURL, CallbackURL: cbE2ECallbackURL, ClientID: cbE2EClientID, ClientSecret: cbE2EClientSecret}
	d, err := sim.DeliverCallback(t.Context(), target, batch)
	if err != nil || d.CallbackStatus != http.StatusAccepted {
		t.Fatalf("callback on the public site: %v %+v", err, d)
	}
	rc.WaitDelivered(t, 1, 10*time.Second)
	if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
		t.Errorf("the app's spool directory %s: %v, %d entries", dir, err, len(entries))
	}
	l := listCallbacks(t, "delivered")
	if len(l.Spools) != 1 || l.Spools[0]["dir"] != dir || len(l.Callbacks) != 1 {
		t.Errorf("the admin API lists %+v, want the app's spool %s with one delivered callback", l, dir)
	}

	// The internal site proxies extracts with the app's account; the
	// public site serves none.
	resp, err := http.Get(internalURL + "/atlas/extracts?batch_id=" + batch + "&page=1&per_page=50")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var page struct {
		Data []json.RawMessage `json:"data"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &page) != nil || len(page.Data) != 2 {
		t.Errorf("extracts on the internal site: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(gatewayURL + "/atlas/extracts?batch_id=" + batch)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 299 {
		t.Errorf("extracts on the public site: %d %s, want the next handler", resp.StatusCode, body)
	}
}
