package callback

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/queues"
	"github.com/caddy-atlas/caddy-atlas/seal"

	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
)

// Identity values in identityPayload: none may reach the spool's files
// in the clear once a key is configured.
var identityValues = []string{"ABCDE1234F", "RAVI KUMAR", "2345 6789 0123", "01/02/1990"}

// identityPayload is a valid payload with a PAN and an Aadhaar number.
func identityPayload(n int) []byte {
	return bytes.ReplaceAll(payloadtest.Sample(n), []byte(`"dob":`),
		[]byte(`"aadhaar_number":{"value":"2345 6789 0123","confidence_score":0.97},"dob":`))
}

// keyFile writes a key, as base64 with a final newline, to a file and
// returns the key and a {file.*} placeholder naming it.
func keyFile(t *testing.T, label string) ([]byte, string) {
	t.Helper()
	k := sha256.Sum256([]byte("callback test key " + label))
	path := filepath.Join(t.TempDir(), "spool-key-"+label)
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return k[:], "{file." + path + "}"
}

// spoolFilesHold reports whether a file of dir holds any of the values.
func spoolFilesHold(t *testing.T, dir string, values ...string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if bytes.Contains(b, []byte(v)) {
				found = append(found, de.Name()+": "+v)
			}
		}
	}
	return found
}

// TestDurableEncryptionKey: with encryption_key given as {file.*}, the
// spooled callback is in no spool file in the clear, delivery gets the
// plaintext, Stats counts it under the key id, and no warning is logged.
func TestDurableEncryptionKey(t *testing.T) {
	key, placeholder := keyFile(t, "a")
	rc := callbacktest.NewReceiver(t)
	rc.SetStatus(http.StatusServiceUnavailable) // pending until released
	c, dir := durableTestCallback(t, rc, func(c *Callback) { c.EncryptionKeys = []string{placeholder} })
	body := identityPayload(2)
	decodeAck(t, serveTestCallbackRec(t, c, body))

	if found := spoolFilesHold(t, dir, identityValues...); len(found) > 0 {
		t.Errorf("identity values in the clear on disk: %v", found)
	}
	id := seal.KeyID(key)
	if st := c.openStore().Stats(); st.Pending != 1 || st.Keys[id] != 1 || len(st.Keys) != 1 {
		t.Errorf("Stats = %+v, want one pending callback under key id %s", st, id)
	}
	rc.SetStatus(http.StatusOK)
	rc.WaitDelivered(t, 1, 5*time.Second)
	if !bytes.Equal(rc.Body(ID(body)), body) {
		t.Error("the receiver got another body")
	}
}

// serveTestCallbackRec serves one authenticated callback of body.
func serveTestCallbackRec(t *testing.T, c *Callback, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	rec, _ := serveTestCallback(t, c, callbackTestRequest(c.Path, callbackAuthToken(t, c), body))
	return rec
}

// TestDurableUnencryptedWarning: durable mode without a key logs one
// warning at provision that payloads are stored unencrypted; with a key,
// none.
func TestDurableUnencryptedWarning(t *testing.T) {
	_, placeholder := keyFile(t, "a")
	for _, tc := range []struct {
		keys []string
		want int
	}{{nil, 1}, {[]string{placeholder}, 0}} {
		c := &Callback{Spool: filepath.Join(t.TempDir(), "s"), DeliverTo: "http://127.0.0.1:1/hooks", EncryptionKeys: tc.keys}
		logs := provisionTestCallback(t, c)
		if n := logs.FilterMessage("durable mode without encryption_key: payloads are stored unencrypted").Len(); n != tc.want {
			t.Errorf("keys %v: %d warnings, want %d: %v", tc.keys, n, tc.want, logs.All())
		}
	}
}

// TestDurableEncryptionKeyErrors: a bad key is a provision error naming
// the key by its position, never echoing it.
func TestDurableEncryptionKeyErrors(t *testing.T) {
	const marker = "Kx9-not-a-key-marker"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return "{file." + p + "}"
	}
	k, good := keyFile(t, "good")
	short := write("short", base64.StdEncoding.EncodeToString(k[:16]))
	bad := write("bad", marker+strings.Repeat("!", 30))
	empty := write("empty", "\n")
	spoolDir := filepath.Join(dir, "spool")
	for _, tc := range []struct {
		name string
		c    Callback
		want string
	}{
		{"not a key", Callback{Spool: spoolDir, DeliverTo: "http://app/", EncryptionKeys: []string{good, bad}}, "encryption_key 2: seal: key of 50 characters is neither base64 nor hex"},
		{"short key", Callback{Spool: spoolDir, DeliverTo: "http://app/", EncryptionKeys: []string{short}}, "encryption_key 1: seal: key decodes to 16 bytes, want 32"},
		{"empty file", Callback{Spool: spoolDir, DeliverTo: "http://app/", EncryptionKeys: []string{empty}}, "encryption_key 1 " + empty + " is empty: the file " + strings.TrimSuffix(strings.TrimPrefix(empty, "{file."), "}") + " is empty"},
		{"unset env", Callback{Spool: spoolDir, DeliverTo: "http://app/", EncryptionKeys: []string{"{env.ENCRYPTION_TEST_UNSET}"}}, "encryption_key 1 {env.ENCRYPTION_TEST_UNSET} is empty: ENCRYPTION_TEST_UNSET is not set"},
		{"same key twice", Callback{Spool: spoolDir, DeliverTo: "http://app/", EncryptionKeys: []string{good, "hex-" + good}}, ""},
		{"without spool", Callback{EncryptionKeys: []string{good}}, "encryption_key needs spool"},
		{"negative dead letter retention", Callback{Spool: spoolDir, DeliverTo: "http://app/", DeadLetterRetention: -1}, "dead_letter_retention must be positive"},
		{"negative purge delay", Callback{Spool: spoolDir, DeliverTo: "http://app/", PurgeDelay: -1}, "purge_delay must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			if tc.name == "same key twice" {
				c.EncryptionKeys = []string{good, write("hex", hex.EncodeToString(k))}
				tc.want = "encryption_key: seal: keys 1 and 2 are the same key (id " + seal.KeyID(k) + ")"
			}
			c.Path, c.ClientID, c.ClientSecret, c.SigningKey = "/hooks/atlas", "atlas-client", "secret", testHMACSecret
			err, _ := provisionAndValidate(&c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			for _, secret := range []string{marker, base64.StdEncoding.EncodeToString(k), hex.EncodeToString(k), base64.StdEncoding.EncodeToString(k[:16])} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error echoes key material: %v", err)
				}
			}
		})
	}
	if len(queues.Open()) != 0 {
		t.Errorf("failed provisions left %d spools open", len(queues.Open()))
	}
}

// TestDurableKeyRotation: a reload with a new first key keeps the old
// callbacks readable, re-encrypts them under the new key on its own, and
// the counts move to the new key id; then the old key can go.
func TestDurableKeyRotation(t *testing.T) {
	keyA, a := keyFile(t, "a")
	keyB, b := keyFile(t, "b")
	rc := callbacktest.NewReceiver(t)
	rc.SetStatus(http.StatusServiceUnavailable)
	dir := filepath.Join(t.TempDir(), "spool")
	route := func(keys ...string) *Callback {
		c := &Callback{Spool: dir, DeliverTo: rc.URL + "/hooks", EncryptionKeys: keys,
			RetryBackoffMin: caddy.Duration(time.Hour), RetryBackoffMax: caddy.Duration(time.Hour)}
		provisionTestCallback(t, c)
		return c
	}
	old := route(a)
	decodeAck(t, serveTestCallbackRec(t, old, identityPayload(1)))
	// The reload: the new config's route first, then the old one goes.
	cur := route(b, a)
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	decodeAck(t, serveTestCallbackRec(t, cur, identityPayload(2)))
	testutil.WaitFor(t, 5*time.Second, "re-encryption under the new key", func() bool {
		k := cur.openStore().Stats().Keys
		return k[seal.KeyID(keyB)] == 2 && k[seal.KeyID(keyA)] == 0
	})
	if err := cur.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// The old key retired: both callbacks are delivered.
	last := route(b)
	for _, n := range []int{1, 2} {
		e, err := last.openStore().Load(context.Background(), ID(identityPayload(n)))
		if err != nil || !bytes.Equal(e.Body, identityPayload(n)) {
			t.Errorf("Load of callback %d after retiring the old key: %v", n, err)
		}
	}
	if found := spoolFilesHold(t, dir, identityValues...); len(found) > 0 {
		t.Errorf("identity values in the clear on disk: %v", found)
	}
	if st := last.openStore().Stats(); st.Keys[queue.KeyPlaintext] != 0 {
		t.Errorf("plaintext callbacks: %+v", st)
	}
}

// TestJetStreamUnencryptedWarning: the same warning for a JetStream
// queue, whose payloads the NATS servers' operators could otherwise read.
func TestJetStreamUnencryptedWarning(t *testing.T) {
	node := natstest.Start(t)
	_, placeholder := keyFile(t, "a")
	for i, tc := range []struct {
		keys []string
		want int
	}{{nil, 1}, {[]string{placeholder}, 0}} {
		c := &Callback{
			Queue:     jsQueue(t, &queues.JetStream{URLs: []string{node.URL()}, Stream: "WARN" + strconv.Itoa(i), Replicas: 1}),
			DeliverTo: "http://127.0.0.1:1/hooks", EncryptionKeys: tc.keys,
		}
		logs := provisionTestCallback(t, c)
		if n := logs.FilterMessage("durable mode without encryption_key: payloads are stored unencrypted").Len(); n != tc.want {
			t.Errorf("keys %v: %d warnings, want %d", tc.keys, n, tc.want)
		}
	}
}
