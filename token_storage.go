package caddyatlas

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
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
)

// The Atlas token is shared by every instance that uses the same Caddy
// storage (the `storage` global option; by default the local file system
// of each instance), so that a fleet on a shared storage makes one
// authtoken call per token lifetime: see atlasclient.SharedTokenStore.
// `token_storage off` keeps the token in memory only.

// tokenStorageOff is the Handler.TokenStorage value that keeps the token
// out of Caddy's storage.
const tokenStorageOff = "off"

// tokenStoragePrefix is the storage key prefix of the stored tokens.
const tokenStoragePrefix = "atlas/tokens/"

// tokenRecordMagic starts a stored token: format version 1, then the
// AES-256-GCM nonce and the sealed JSON record.
var tokenRecordMagic = []byte("ATK\x01")

// tokenRecord is a token as stored, before sealing.
type tokenRecord struct {
	Value    string    `json:"value"`
	IssuedAt time.Time `json:"issued_at"`
	Expiry   time.Time `json:"expiry"`
}

// storageTokenStore is an atlasclient.SharedTokenStore over a Caddy
// (certmagic) storage: one token per endpoint and client id, sealed with
// AES-256-GCM under a key derived from the client secret with
// HKDF-SHA256, so that a reader of the storage without the secret can
// neither use the token nor plant one. The storage key and lock name hold
// a digest of the endpoint and client id, never the secret.
type storageTokenStore struct {
	storage certmagic.Storage
	key     string // storage key of the token
	lock    string // lock name
	aead    cipher.AEAD
}

// newStorageTokenStore returns the token store of endpoint and clientID
// in storage.
func newStorageTokenStore(storage certmagic.Storage, endpoint, clientID, secret string) (*storageTokenStore, error) {
	id := sha256.Sum256([]byte("caddy-atlas token\x00" + endpoint + "\x00" + clientID))
	key, err := hkdf.Key(sha256.New, []byte(secret), id[:], "caddy-atlas stored token v1", 32)
	if err != nil {
		return nil, fmt.Errorf("deriving the token storage key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	name := hex.EncodeToString(id[:16])
	return &storageTokenStore{
		storage: storage,
		key:     tokenStoragePrefix + name,
		lock:    "atlas_token_" + name,
		aead:    aead,
	}, nil
}

// Lock takes the storage's lock of this token.
func (s *storageTokenStore) Lock(ctx context.Context) (func(context.Context) error, error) {
	if err := s.storage.Lock(ctx, s.lock); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return s.storage.Unlock(ctx, s.lock) }, nil
}

// Load reads and opens the stored token; a zero Token when none is stored.
func (s *storageTokenStore) Load(ctx context.Context) (atlasclient.Token, error) {
	data, err := s.storage.Load(ctx, s.key)
	if errors.Is(err, fs.ErrNotExist) {
		return atlasclient.Token{}, nil
	}
	if err != nil {
		return atlasclient.Token{}, err
	}
	rec, err := s.open(data)
	if err != nil {
		return atlasclient.Token{}, err
	}
	return atlasclient.Token{Value: rec.Value, IssuedAt: rec.IssuedAt, Expiry: rec.Expiry}, nil
}

// Store seals tok and writes it in place of the stored token.
func (s *storageTokenStore) Store(ctx context.Context, tok atlasclient.Token) error {
	plain, err := json.Marshal(tokenRecord{Value: tok.Value, IssuedAt: tok.IssuedAt, Expiry: tok.Expiry})
	if err != nil {
		return err
	}
	return s.storage.Store(ctx, s.key, s.seal(plain))
}

// seal returns the stored form of plain: magic, nonce, ciphertext. The
// storage key is the additional data, so a record copied under another
// key does not open.
func (s *storageTokenStore) seal(plain []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce) // never fails since Go 1.24
	out := append(slices.Clone(tokenRecordMagic), nonce...)
	return s.aead.Seal(out, nonce, plain, []byte(s.key))
}

// open reverses seal.
func (s *storageTokenStore) open(data []byte) (tokenRecord, error) {
	var rec tokenRecord
	rest, ok := bytes.CutPrefix(data, tokenRecordMagic)
	if !ok || len(rest) < s.aead.NonceSize()+s.aead.Overhead() {
		return rec, errors.New("the stored atlas token is not in a known format")
	}
	nonce, sealed := rest[:s.aead.NonceSize()], rest[s.aead.NonceSize():]
	plain, err := s.aead.Open(nil, nonce, sealed, []byte(s.key))
	if err != nil {
		return rec, errors.New("the stored atlas token does not open with this client secret (sealed with another secret, or altered)")
	}
	if err := json.Unmarshal(plain, &rec); err != nil || rec.Value == "" {
		return tokenRecord{}, errors.New("the stored atlas token is not a valid record")
	}
	return rec, nil
}

// tokenStores is the SharedTokenStore of a pooled token source: it uses
// the store of the most recently provisioned handler that is still in
// use. A reload that changes the storage thus moves the token to the new
// storage, and a reload that fails (whose storage Caddy cleans up) leaves
// the source on the storage of the config still running. With no handler
// attached it stores nothing.
type tokenStores struct {
	mu     sync.Mutex
	stores []*storageTokenStore
}

func (t *tokenStores) attach(s *storageTokenStore) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stores = append(t.stores, s)
}

func (t *tokenStores) detach(s *storageTokenStore) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := slices.Index(t.stores, s); i >= 0 {
		t.stores = slices.Delete(t.stores, i, i+1)
	}
}

func (t *tokenStores) current() *storageTokenStore {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.stores) == 0 {
		return nil
	}
	return t.stores[len(t.stores)-1]
}

// Lock implements atlasclient.SharedTokenStore.
func (t *tokenStores) Lock(ctx context.Context) (func(context.Context) error, error) {
	if s := t.current(); s != nil {
		return s.Lock(ctx)
	}
	return func(context.Context) error { return nil }, nil
}

// Load implements atlasclient.SharedTokenStore.
func (t *tokenStores) Load(ctx context.Context) (atlasclient.Token, error) {
	if s := t.current(); s != nil {
		return s.Load(ctx)
	}
	return atlasclient.Token{}, nil
}

// Store implements atlasclient.SharedTokenStore.
func (t *tokenStores) Store(ctx context.Context, tok atlasclient.Token) error {
	if s := t.current(); s != nil {
		return s.Store(ctx, tok)
	}
	return nil
}

// contextStorage returns the storage of ctx, or nil for a context made
// outside a config load (as in unit tests), which has none.
func contextStorage(ctx caddy.Context) (storage certmagic.Storage) {
	defer func() {
		if recover() != nil {
			storage = nil
		}
	}()
	return ctx.Storage()
}

// Interface guards
var (
	_ atlasclient.SharedTokenStore = (*storageTokenStore)(nil)
	_ atlasclient.SharedTokenStore = (*tokenStores)(nil)
)
