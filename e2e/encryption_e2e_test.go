package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

// TestDurableE2EEncryptedAtRest runs a real Caddy whose durable callback
// route has encryption_key {file.*}: callbacks delivered by the Atlas
// simulator are in no spool file in the clear (no 16-byte run of any
// payload is), the admin API and `caddy atlas callbacks list` count them
// under the key id, and they are delivered byte for byte.
func TestDurableE2EEncryptedAtRest(t *testing.T) {
	skipShort(t)
	k := sha256.Sum256([]byte("e2e spool key"))
	keyPath := filepath.Join(t.TempDir(), "spool-key")
	if err := os.WriteFile(keyPath, []byte(base64.StdEncoding.EncodeToString(k[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyID := seal.KeyID(k[:])
	rc := callbacktest.NewReceiver(t)
	rc.SetStatus(http.StatusServiceUnavailable)
	g := startDurableGateway(t, rc, "encryption_key {file."+keyPath+"}\n\t\t\t\tdead_letter_retention 14d\n\t\t\t\tmax_attempts 1000")

	var payloads [][]byte
	ids := make(map[string][]byte)
	for _, name := range []string{"enc-a", "enc-b"} {
		id, p := g.deliver(t, name)
		payloads = append(payloads, p)
		ids[id] = p
	}

	// On disk: nothing of the payloads.
	des, err := os.ReadDir(g.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(g.dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range payloads {
			for i := 0; i+16 <= len(p); i += 8 {
				if bytes.Contains(b, p[i:i+16]) {
					t.Fatalf("%s holds %q of a payload in the clear", de.Name(), p[i:i+16])
				}
			}
		}
	}

	// The admin API and the CLI count them under the key id.
	l := listCallbacks(t, "")
	if len(l.Spools) != 1 {
		t.Fatalf("spools %v", l.Spools)
	}
	keys, _ := l.Spools[0]["keys"].(map[string]any)
	if n, _ := keys[keyID].(float64); n != 2 || len(keys) != 1 {
		t.Errorf("admin API keys %v, want 2 under %s", l.Spools[0]["keys"], keyID)
	}
	out, err := runAtlasCLI(t, "callbacks", "list", "--address", adminAddr)
	if err != nil || !strings.Contains(out, "2 pending, 0 dead, 0 delivered; stored by key id: "+keyID+" 2") {
		t.Errorf("list: %v\n%s", err, out)
	}

	rc.SetStatus(http.StatusOK)
	rc.WaitDelivered(t, 2, 5*time.Second)
	for id, p := range ids {
		if !bytes.Equal(rc.Body(id), p) {
			t.Errorf("callback %s: another body delivered", id)
		}
	}
	callbacktest.Eventually(t, 5*time.Second, "no live callback under the key", func() bool {
		return listCallbacks(t, "").Spools[0]["keys"] == nil
	})
}
