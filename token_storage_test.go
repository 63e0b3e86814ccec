package caddyatlas

import (
	"bytes"
	"context"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
)

const (
	tsEndpoint = "https://docstream.example.com"
	tsClientID = "storage-client"
	tsSecret   = "storage-secret-never-at-rest-4b1d"
)

// newTestTokenStore returns a token store over a file storage at dir, as
// one instance of a fleet sharing dir would have it.
func newTestTokenStore(t *testing.T, dir, endpoint, secret string) *storageTokenStore {
	t.Helper()
	st, err := newStorageTokenStore(&certmagic.FileStorage{Path: dir}, endpoint, tsClientID, secret)
	if err != nil {
		t.Fatal(err)
	}
	return st
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

func TestStorageTokenStoreRoundTripSealed(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	a := newTestTokenStore(t, dir, tsEndpoint, tsSecret)
	b := newTestTokenStore(t, dir, tsEndpoint, tsSecret) // another instance

	if tok, err := b.Load(ctx); err != nil || tok.Value != "" {
		t.Fatalf("empty storage: %v, %v; want no token and no error", tok, err)
	}
	issued := time.Now().Truncate(time.Millisecond)
	want := atlasclient.Token{Value: "eyJ.the-token-value.sig", IssuedAt: issued, Expiry: issued.Add(time.Hour)}
	if err := a.Store(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := b.Load(ctx)
	if err != nil || got.Value != want.Value || !got.IssuedAt.Equal(want.IssuedAt) || !got.Expiry.Equal(want.Expiry) {
		t.Fatalf("Load = %+v, %v; want %+v", got, err, want)
	}

	// At rest: one file, under a digest; neither the token, nor the
	// secret, nor the client id or endpoint in it or in its name.
	files := storedFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("stored files %v, want one", files)
	}
	for name, data := range files {
		if !strings.HasPrefix(filepath.ToSlash(name), tokenStoragePrefix) {
			t.Errorf("stored at %s, want under %s", name, tokenStoragePrefix)
		}
		for _, secret := range []string{want.Value, "the-token-value", tsSecret, tsClientID, "docstream.example.com"} {
			if strings.Contains(name, secret) || bytes.Contains(data, []byte(secret)) {
				t.Errorf("%s holds %q in the clear", name, secret)
			}
		}
	}
}

func TestStorageTokenStoreRejectsForeignRecords(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	tok := atlasclient.Token{Value: "tok", IssuedAt: time.Now(), Expiry: time.Now().Add(time.Hour)}
	mine := newTestTokenStore(t, dir, tsEndpoint, tsSecret)
	if err := mine.Store(ctx, tok); err != nil {
		t.Fatal(err)
	}

	// Another client secret (a rotation, or a reader guessing): it does
	// not open, and it says so without naming the secret.
	other := newTestTokenStore(t, dir, tsEndpoint, "another-secret")
	if got, err := other.Load(ctx); err == nil || got.Value != "" || !strings.Contains(err.Error(), "does not open") {
		t.Errorf("with another secret: %+v, %v; want an error and no token", got, err)
	} else if strings.Contains(err.Error(), tsSecret) || strings.Contains(err.Error(), "another-secret") {
		t.Errorf("the error names a secret: %v", err)
	}

	// Another endpoint is another key: nothing stored there.
	elsewhere := newTestTokenStore(t, dir, "http://127.0.0.1:1", tsSecret)
	if got, err := elsewhere.Load(ctx); err != nil || got.Value != "" {
		t.Errorf("another endpoint: %+v, %v; want none", got, err)
	}

	// A record moved under another key does not open (the key is
	// authenticated), nor does an altered one, nor a truncated one.
	fsys := &certmagic.FileStorage{Path: dir}
	data, err := fsys.Load(ctx, mine.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.Store(ctx, elsewhere.key, data); err != nil {
		t.Fatal(err)
	}
	if got, err := elsewhere.Load(ctx); err == nil || got.Value != "" {
		t.Errorf("a record moved under another key opened: %+v", got)
	}
	for name, bad := range map[string][]byte{
		"altered":   append(bytes.Clone(data[:len(data)-1]), data[len(data)-1]^1),
		"truncated": data[:len(tokenRecordMagic)+5],
		"plain":     []byte(`{"value":"planted"}`),
	} {
		if err := fsys.Store(ctx, mine.key, bad); err != nil {
			t.Fatal(err)
		}
		if got, err := mine.Load(ctx); err == nil || got.Value != "" {
			t.Errorf("%s record: %+v, %v; want an error", name, got, err)
		}
	}
}

func TestStorageTokenStoreLockIsFleetWide(t *testing.T) {
	dir := t.TempDir()
	a := newTestTokenStore(t, dir, tsEndpoint, tsSecret)
	b := newTestTokenStore(t, dir, tsEndpoint, tsSecret)
	unlock, err := a.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := b.Lock(ctx); err == nil {
		t.Fatal("a second instance took the lock while the first held it")
	}
	if err := unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
	unlockB, err := b.Lock(context.Background())
	if err != nil {
		t.Fatalf("after the first released it: %v", err)
	}
	_ = unlockB(context.Background())
}

func TestTokenStoresFollowTheLatestConfig(t *testing.T) {
	ctx := context.Background()
	var stores tokenStores
	// No config attached: nothing stored, a lock that always succeeds.
	if err := stores.Store(ctx, atlasclient.Token{Value: "x"}); err != nil {
		t.Fatal(err)
	}
	if tok, err := stores.Load(ctx); err != nil || tok.Value != "" {
		t.Fatalf("empty: %+v %v", tok, err)
	}
	unlock, err := stores.Lock(ctx)
	if err != nil || unlock(ctx) != nil {
		t.Fatalf("empty lock: %v", err)
	}

	oldDir, newDir := t.TempDir(), t.TempDir()
	old := newTestTokenStore(t, oldDir, tsEndpoint, tsSecret)
	stores.attach(old)
	// A reload to a config with another storage: the token goes there.
	next := newTestTokenStore(t, newDir, tsEndpoint, tsSecret)
	stores.attach(next)
	tok := atlasclient.Token{Value: "v", IssuedAt: time.Now(), Expiry: time.Now().Add(time.Hour)}
	if err := stores.Store(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if len(storedFiles(t, newDir)) != 1 || len(storedFiles(t, oldDir)) != 0 {
		t.Errorf("stored in the old config's storage, not the new one's")
	}
	// The new config fails and is cleaned up: back to the old storage.
	stores.detach(next)
	if got, _ := stores.Load(ctx); got.Value != "" {
		t.Errorf("after the new config was cleaned up, read %q from its storage", got.Value)
	}
	stores.detach(old)
	stores.detach(old) // idempotent
	if stores.current() != nil {
		t.Error("stores left after every config was cleaned up")
	}
}

// TestStorageFleetOneLiveToken runs three token sources as three instances
// would, each with its own file storage on one shared directory, against
// the simulator keeping one live token per client: one authtoken call for
// 300 concurrent cold requests, none of them refused.
func TestStorageFleetOneLiveToken(t *testing.T) {
	sim := atlastest.NewServer(t, atlastest.Options{ClientID: tsClientID, ClientSecret: tsSecret, OneLiveToken: true})
	batch := sim.CreateBatch("pan-1")
	dir := t.TempDir()
	var clients []*http.Client
	for range 3 {
		src, err := atlasclient.NewTokenSource(atlasclient.TokenOptions{
			Endpoint: sim.URL, ClientID: tsClientID, ClientSecret: tsSecret,
			Shared: newTestTokenStore(t, dir, sim.URL, tsSecret),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(src.Close)
		clients = append(clients, &http.Client{Transport: &atlasclient.Transport{Source: src}})
	}
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			resp, err := clients[i%3].Get(sim.URL + "/v1/docstream/extracts?batch_id=" + batch)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("request %d: %d", i, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if n := sim.Calls(atlastest.EndpointAuthToken); n != 1 {
		t.Errorf("authtoken calls = %d for three instances on a shared storage, want 1", n)
	}
	if n := sim.Calls(atlastest.EndpointExtracts); n != 300 {
		t.Errorf("extracts calls = %d, want 300 (no 401, no replay)", n)
	}
}

func TestTokenRefusedEarlyIsLoggedOnceAMinute(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	for _, tt := range []struct {
		name   string
		stores *tokenStores
		hint   string
	}{
		{"shared", new(tokenStores), "give them one shared storage"},
		{"token_storage off", nil, "remove token_storage off"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &sharedTokenSource{clientID: "gw", logger: zap.New(core), stores: tt.stores}
			before := logs.Len()
			s.TokenRefused(50*time.Minute, 10*time.Minute) // at the end of its life: a refresh's doing
			s.TokenRefused(time.Second, time.Hour)
			s.TokenRefused(2*time.Second, time.Hour) // within the minute
			entries := logs.All()[before:]
			if len(entries) != 1 {
				t.Fatalf("%d warnings, want 1: %v", len(entries), entries)
			}
			if e := entries[0]; !strings.Contains(e.Message, tt.hint) || e.ContextMap()["client_id"] != "gw" {
				t.Errorf("warning %q %v, want it to say %q", e.Message, e.ContextMap(), tt.hint)
			}
			s.lastRevokedWarning.Add(-int64(revokedWarningEvery))
			s.TokenRefused(time.Second, time.Hour)
			if n := logs.Len() - before; n != 2 {
				t.Errorf("%d warnings after a minute, want 2", n)
			}
		})
	}
}
