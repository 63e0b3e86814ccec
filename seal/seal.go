// Package seal encrypts records at rest with AES-256-GCM under a keyring
// of one or more 32-byte keys: the first key seals, every key opens, so a
// key can be rotated by adding a new first key and retiring the old one
// once nothing sealed under it is left. It uses only the standard library
// and knows nothing of Caddy.
//
// A sealed blob is self-describing:
//
//	offset size  field
//	0      1     format version (1)
//	1      8     key id: the first 8 bytes of SHA-256("caddy-atlas seal key id v1\x00" || key)
//	9      12    nonce, fresh from crypto/rand for every Seal
//	21     n+16  AES-256-GCM ciphertext of the n plaintext bytes, then its tag
//
// The additional data authenticated by GCM is the 9-byte header (version
// and key id) followed by the caller's aad, so a blob only opens with the
// same aad it was sealed with: bind a record's id and metadata there and
// a blob cannot be moved to another record. The key id is a fingerprint
// that identifies a key without revealing it; KeyIDOf reads it from a
// blob without any key.
//
// Nothing in this package panics on any input, and no error includes key
// material.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// Sizes of the sealed format.
const (
	// Version is the format version byte that starts every sealed blob.
	Version = 1
	// KeySize is the length of a key: AES-256.
	KeySize = 32
	// HeaderSize is the version byte and the 8-byte key id.
	HeaderSize = 1 + keyIDSize
	// PrefixSize is the length of a blob before its ciphertext: the
	// header and the nonce. See Seal and Open for sealing and opening
	// in place.
	PrefixSize = HeaderSize + nonceSize
	// Overhead is how much longer a sealed blob is than its plaintext.
	Overhead = PrefixSize + tagSize

	keyIDSize = 8
	nonceSize = 12
	tagSize   = 16
)

// keyIDDomain separates key ids from any other SHA-256 of the key.
const keyIDDomain = "caddy-atlas seal key id v1\x00"

var (
	// ErrUnknownKey is matched (errors.Is) by the error Open returns
	// for a blob sealed under a key that is not in the keyring; the
	// error is an *UnknownKeyError naming the key id.
	ErrUnknownKey = errors.New("seal: unknown key")
	// ErrCorrupt is matched by the error Open returns for a blob that
	// is truncated, of an unknown format version, or fails
	// authentication (tampered bytes, a flipped bit, another aad).
	ErrCorrupt = errors.New("seal: sealed data is corrupt")
)

// UnknownKeyError is the error for a blob sealed under a key id that is
// not in the keyring.
type UnknownKeyError struct {
	// ID is the key id found in the blob.
	ID string
}

func (e *UnknownKeyError) Error() string {
	return fmt.Sprintf("seal: sealed under key id %s, which is not configured", e.ID)
}

// Unwrap makes errors.Is(err, ErrUnknownKey) true.
func (e *UnknownKeyError) Unwrap() error { return ErrUnknownKey }

// ParseKey decodes a key given as text: 32 bytes in hex (64 digits) or
// base64 (standard or URL alphabet, padded or not). Surrounding white
// space, such as a file's final newline, is ignored. Errors never contain
// the text.
func ParseKey(text string) ([]byte, error) {
	s := strings.TrimSpace(text)
	if s == "" {
		return nil, errors.New("seal: key is empty")
	}
	if len(s) == 2*KeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding,
		base64.URLEncoding, base64.RawURLEncoding,
	} {
		k, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("seal: key decodes to %d bytes, want %d (generate one with: head -c 32 /dev/urandom | base64)", len(k), KeySize)
		}
		return k, nil
	}
	return nil, fmt.Errorf("seal: key of %d characters is neither base64 nor hex of %d bytes (generate one with: head -c 32 /dev/urandom | base64)", len(s), KeySize)
}

// KeyID returns the id of a key: 16 hex digits, the first 8 bytes of a
// domain-separated SHA-256 of the key. It is stable and reveals nothing
// of the key.
func KeyID(key []byte) string {
	id := keyID(key)
	return hex.EncodeToString(id[:])
}

func keyID(key []byte) [keyIDSize]byte {
	h := sha256.New()
	h.Write([]byte(keyIDDomain))
	h.Write(key)
	var sum [sha256.Size]byte
	var id [keyIDSize]byte
	copy(id[:], h.Sum(sum[:0]))
	return id
}

// KeyIDOf returns the key id a sealed blob names, and false if b is not
// a sealed blob of a known format version (too short, or another
// version byte). It needs no key and checks nothing else.
func KeyIDOf(sealed []byte) (string, bool) {
	if len(sealed) < HeaderSize || sealed[0] != Version {
		return "", false
	}
	return hex.EncodeToString(sealed[1:HeaderSize]), true
}

type key struct {
	id   [keyIDSize]byte
	aead cipher.AEAD
}

// Keyring holds the keys: the first seals, all open. It is safe for
// concurrent use and never changes after NewKeyring.
type Keyring struct {
	keys []key
}

// NewKeyring makes a keyring of one or more 32-byte keys, the first
// being the one that seals. Two equal keys are an error.
func NewKeyring(keys ...[]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: a keyring needs at least one key")
	}
	kr := &Keyring{keys: make([]key, 0, len(keys))}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("seal: key %d is %d bytes, want %d", i+1, len(k), KeySize)
		}
		id := keyID(k)
		for j, o := range kr.keys {
			if o.id == id {
				return nil, fmt.Errorf("seal: keys %d and %d are the same key (id %x)", j+1, i+1, id)
			}
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("seal: key %d: %v", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("seal: key %d: %v", i+1, err)
		}
		kr.keys = append(kr.keys, key{id: id, aead: aead})
	}
	return kr, nil
}

// KeyIDs returns the ids of the keys, the sealing key first. A nil
// keyring has none.
func (kr *Keyring) KeyIDs() []string {
	if kr == nil {
		return nil
	}
	ids := make([]string, len(kr.keys))
	for i := range kr.keys {
		ids[i] = hex.EncodeToString(kr.keys[i].id[:])
	}
	return ids
}

// SealingKeyID returns the id of the key Seal uses.
func (kr *Keyring) SealingKeyID() string {
	return hex.EncodeToString(kr.keys[0].id[:])
}

// Has reports whether the keyring holds the key of this id. A nil
// keyring holds none.
func (kr *Keyring) Has(id string) bool {
	for _, k := range kr.KeyIDs() {
		if k == id {
			return true
		}
	}
	return false
}

// Seal encrypts plaintext under the first key with a fresh random nonce,
// authenticating aad too, and appends the sealed blob (len(plaintext) +
// Overhead bytes) to dst. dst and plaintext may overlap. Sealing in place,
// without a copy: the plaintext at dst[len(dst)+PrefixSize:], within
// dst's capacity with Overhead bytes to spare.
func (kr *Keyring) Seal(dst, plaintext, aad []byte) []byte {
	k := &kr.keys[0]
	ret, out := sliceForAppend(dst, len(plaintext)+Overhead)
	if inexactOverlap(out[PrefixSize:], plaintext) || anyOverlap(out[:PrefixSize], plaintext) {
		plaintext = append([]byte(nil), plaintext...)
	}
	out[0] = Version
	copy(out[1:HeaderSize], k.id[:])
	nonce := out[HeaderSize : HeaderSize+nonceSize]
	// crypto/rand.Read never fails (it crashes the program if the
	// system's generator does, rather than let a nonce repeat).
	_, _ = rand.Read(nonce)
	k.aead.Seal(out[HeaderSize+nonceSize:HeaderSize+nonceSize], nonce, plaintext, additional(out[:HeaderSize], aad))
	return ret
}

// Open decrypts a blob made by Seal with the same aad under any key of
// the keyring and appends the plaintext to dst. The error matches
// ErrUnknownKey (an *UnknownKeyError naming the id) if the blob's key is
// not in the keyring, ErrCorrupt if the blob is truncated, of another
// format version or fails authentication. dst and sealed may overlap.
// Opening in place, without a copy: dst = sealed[:PrefixSize], the
// plaintext is then at [PrefixSize:] of the result; the ciphertext is
// overwritten, even when authentication fails. A nil keyring opens
// nothing: every well-formed blob is ErrUnknownKey.
func (kr *Keyring) Open(dst, sealed, aad []byte) ([]byte, error) {
	switch {
	case len(sealed) == 0:
		return nil, fmt.Errorf("%w: empty", ErrCorrupt)
	case sealed[0] != Version:
		return nil, fmt.Errorf("%w: unknown format version %d", ErrCorrupt, sealed[0])
	case len(sealed) < Overhead:
		return nil, fmt.Errorf("%w: truncated to %d bytes, a sealed blob has at least %d", ErrCorrupt, len(sealed), Overhead)
	}
	var k *key
	if kr != nil {
		for i := range kr.keys {
			if string(kr.keys[i].id[:]) == string(sealed[1:HeaderSize]) {
				k = &kr.keys[i]
				break
			}
		}
	}
	if k == nil {
		return nil, &UnknownKeyError{ID: hex.EncodeToString(sealed[1:HeaderSize])}
	}
	ret, out := sliceForAppend(dst, len(sealed)-Overhead)
	if inexactOverlap(out, sealed[PrefixSize:]) || anyOverlap(out, sealed[:PrefixSize]) {
		sealed = append([]byte(nil), sealed...)
	}
	nonce := sealed[HeaderSize : HeaderSize+nonceSize]
	if _, err := k.aead.Open(out[:0], nonce, sealed[HeaderSize+nonceSize:], additional(sealed[:HeaderSize], aad)); err != nil {
		clear(out)
		return nil, fmt.Errorf("%w: authentication failed under key id %x (tampered, truncated or bound to other data)", ErrCorrupt, k.id)
	}
	return ret, nil
}

// additional is the GCM additional data: the blob's header, then aad.
func additional(header, aad []byte) []byte {
	ad := make([]byte, 0, len(header)+len(aad))
	return append(append(ad, header...), aad...)
}

// sliceForAppend extends in by n bytes, reallocating if needed, and
// returns the whole slice and the n new bytes (as crypto/cipher does).
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	return head, head[len(in):]
}

// inexactOverlap reports whether x and y share memory without starting
// at the same byte, which GCM refuses (crypto/internal/alias).
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	return anyOverlap(x, y)
}

// anyOverlap reports whether x and y share memory
// (crypto/internal/alias.AnyOverlap).
func anyOverlap(x, y []byte) bool {
	return len(x) > 0 && len(y) > 0 &&
		uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}
