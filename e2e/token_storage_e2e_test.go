package e2e

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
)

// tokenStoragePrefix is where the gateway stores its tokens in Caddy's
// storage (docs/operations.md, "One Atlas token per fleet":
// atlas/tokens/<digest>).
const tokenStoragePrefix = "atlas/tokens/"

// tokenRecordKey is the stored token of one endpoint and client id, as
// docs/security.md describes it: at atlas/tokens/<digest>, the digest being
// SHA-256 of endpoint and client id, sealed with AES-256-GCM under a key
// derived from the client secret with HKDF-SHA256, the storage key
// authenticated. The test writes a record under another secret with it,
// and opens the one the gateway wrote, as another instance would.
type tokenRecordKey struct {
	key  string
	aead cipher.AEAD
}

// tokenRecordMagic starts a stored token: format version 1.
var tokenRecordMagic = []byte("ATK\x01")

func newTokenRecordKey(t *testing.T, endpoint, clientID, secret string) tokenRecordKey {
	t.Helper()
	id := sha256.Sum256([]byte("caddy-atlas token\x00" + endpoint + "\x00" + clientID))
	key, err := hkdf.Key(sha256.New, []byte(secret), id[:], "caddy-atlas stored token v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return tokenRecordKey{key: tokenStoragePrefix + hex.EncodeToString(id[:16]), aead: aead}
}

// tokenRecord is a stored token before sealing.
type tokenRecord struct {
	Value    string    `json:"value"`
	IssuedAt time.Time `json:"issued_at"`
	Expiry   time.Time `json:"expiry"`
}

// store seals a token and writes it in the file system storage at root.
func (k tokenRecordKey) store(root, value string, issued, expiry time.Time) error {
	plain, err := json.Marshal(tokenRecord{Value: value, IssuedAt: issued, Expiry: expiry})
	if err != nil {
		return err
	}
	nonce := make([]byte, k.aead.NonceSize())
	_, _ = rand.Read(nonce)
	sealed := k.aead.Seal(append(bytes.Clone(tokenRecordMagic), nonce...), nonce, plain, []byte(k.key))
	return (&certmagic.FileStorage{Path: root}).Store(context.Background(), k.key, sealed)
}

// load reads the token stored in the file system storage at root and
// opens it.
func (k tokenRecordKey) load(root string) (string, error) {
	data, err := (&certmagic.FileStorage{Path: root}).Load(context.Background(), k.key)
	if err != nil {
		return "", err
	}
	rest, ok := bytes.CutPrefix(data, tokenRecordMagic)
	if !ok || len(rest) < k.aead.NonceSize() {
		return "", errors.New("not a stored token")
	}
	plain, err := k.aead.Open(nil, rest[:k.aead.NonceSize()], rest[k.aead.NonceSize():], []byte(k.key))
	if err != nil {
		return "", err
	}
	var rec tokenRecord
	err = json.Unmarshal(plain, &rec)
	return rec.Value, err
}

// storedFiles returns the files under dir, by path relative to dir.
func storedFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[rel], err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// storageConfig is a gateway in front of endpoint whose Caddy storage is
// a file system at root; extra lines go into the atlas block.
func storageConfig(endpoint, root, extra string) string {
	return caddyfile(fmt.Sprintf(`	grace_period 1ns
	storage file_system {
		root %s
	}
`, root), fmt.Sprintf(`	atlas {
		endpoint      %s
		client_id     {env.E2E_ATLAS_CLIENT_ID}
		client_secret {env.E2E_ATLAS_CLIENT_SECRET}
		%s
	}
`, endpoint, extra))
}

// storedTokens returns the files under root's token prefix.
func storedTokens(t *testing.T, root string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for name, data := range storedFiles(t, root) {
		if strings.HasPrefix(filepath.ToSlash(name), tokenStoragePrefix) {
			out[name] = data
		}
	}
	return out
}

func TestE2ETokenInCaddyStorage(t *testing.T) {
	skipShort(t)
	sim := newSimulator(t)
	batch := sim.CreateBatch("pan-1")
	root := t.TempDir()
	t.Setenv("E2E_ATLAS_CLIENT_ID", e2eClientID)
	t.Setenv("E2E_ATLAS_CLIENT_SECRET", e2eClientSecret)
	tester := newTester(t)
	extracts := "/atlas/extracts?batch_id=" + batch
	wantOK := func(when string) {
		t.Helper()
		if resp, body := get(t, tester, extracts); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", when, resp.StatusCode, body)
		}
	}

	// The token is stored, sealed, in the configured storage.
	tester.InitServer(storageConfig(sim.URL, root, ""), "caddyfile")
	wantOK("first request")
	tokens := storedTokens(t, root)
	if len(tokens) != 1 {
		t.Fatalf("stored tokens %v, want one under %s", tokens, tokenStoragePrefix)
	}
	for name, data := range tokens {
		for _, tok := range sim.IssuedTokens() {
			if bytes.Contains(data, []byte(tok)) {
				t.Errorf("%s holds the token in the clear", name)
			}
		}
	}

	// token_storage off: a source of its own, in memory only.
	tester.InitServer(storageConfig(sim.URL, root, "token_storage off"), "caddyfile")
	wantOK("token_storage off")
	if n := sim.Calls(atlastest.EndpointAuthToken); n != 2 {
		t.Errorf("authtoken calls = %d, want 2 (token_storage off fetches its own)", n)
	}
	if after := storedTokens(t, root); !maps.EqualFunc(after, tokens, bytes.Equal) {
		t.Error("token_storage off wrote to the storage")
	}

	// Back to the storage, with a new token source (the one before was
	// released with its config): it takes the stored token, as another
	// instance or a restarted one would.
	tester.InitServer(storageConfig(sim.URL, root, ""), "caddyfile")
	wantOK("back on the storage")
	if n := sim.Calls(atlastest.EndpointAuthToken); n != 2 {
		t.Errorf("authtoken calls = %d, want still 2: the stored token is taken", n)
	}

	// A record that does not open with this secret (another run, another
	// secret) is replaced after one authtoken call.
	foreign := newTokenRecordKey(t, sim.URL, e2eClientID, "not-this-secret")
	if err := foreign.store(root, "foreign", time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	tester.InitServer(storageConfig(sim.URL, root, "token_storage off"), "caddyfile") // release the source
	tester.InitServer(storageConfig(sim.URL, root, ""), "caddyfile")
	wantOK("with a foreign record")
	mine := newTokenRecordKey(t, sim.URL, e2eClientID, e2eClientSecret)
	if tok, err := mine.load(root); err != nil || tok == "" || tok == "foreign" {
		t.Errorf("after the foreign record: stored %v, %v; want a token of this secret's", tok, err)
	}
}
