package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

// Encryption at rest. With Options.Keyring, Append writes a callback as a
// sealed enqueue record: its id, received time and body size stay in the
// clear (the index needs them, and the admin API shows them), its
// headers and body are sealed under the keyring's first key, with
// sealDomain and the clear fields as additional data, so that a sealed
// blob opens only in the record it was written in. The blob names its key
// id (seal.KeyIDOf). The frame around it, and its checksum, are those of
// every record.
//
// Records are opened when a callback is delivered or loaded. Compaction
// rewrites what it keeps under the first key: plaintext records (a spool
// from before the key was configured) and records under an older key.
// A record whose key is not in the keyring, or that does not open, is
// kept as it is, and its delivery attempts and loads fail with an error
// saying so.

// keyInvalid is the key id of a sealed record whose blob names none.
const keyInvalid = "invalid"

// sealDomain starts the additional data of every sealed enqueue record.
const sealDomain = "caddy-atlas spool sealed enqueue v1\x00"

// sealAAD appends the additional data of a sealed enqueue record.
func sealAAD(dst []byte, id string, received time.Time, size int64) []byte {
	dst = append(dst, sealDomain...)
	dst = appendString(dst, id)
	dst = appendTime(dst, received)
	return binary.AppendUvarint(dst, uint64(max(size, 0)))
}

// appendSealed appends a sealed enqueue record of the callback to dst.
func appendSealed(dst []byte, kr *seal.Keyring, id string, received time.Time, h http.Header, body []byte) []byte {
	start := len(dst)
	dst = append(dst, magic[:]...)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0, byte(RecordSealedEnqueue))
	dst = appendString(dst, id)
	dst = appendTime(dst, received)
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	// The content goes where its ciphertext will be, sealed in place.
	blob := len(dst)
	dst = slices.Grow(dst, enqueueSize(id, h, body)-(blob-start))
	content := appendContent(dst[blob+seal.PrefixSize:blob+seal.PrefixSize], h, body)
	dst = kr.Seal(dst, content, sealAAD(nil, id, received, int64(len(body))))
	finishFrame(dst[start:])
	return dst
}

// openRecord decrypts a sealed enqueue record's headers and body into r,
// which then reads as an enqueue record. Other records are left as they
// are. inPlace decrypts over r.Sealed, saving a copy, and destroys it
// even on failure. The error names the callback; it matches
// seal.ErrUnknownKey for a key the keyring lacks (nil: no keyring) and
// ErrCorrupt and seal.ErrCorrupt for a blob that does not open.
func openRecord(kr *seal.Keyring, r *Record, inPlace bool) error {
	if r.Type != RecordSealedEnqueue {
		return nil
	}
	var dst []byte
	if inPlace && len(r.Sealed) >= seal.PrefixSize {
		dst = r.Sealed[:seal.PrefixSize]
	}
	content, err := kr.Open(dst, r.Sealed, sealAAD(nil, r.ID, r.Time, r.Size))
	switch {
	case errors.Is(err, seal.ErrUnknownKey):
		return fmt.Errorf("spool: callback %s: %w", r.ID, err)
	case err != nil:
		return fmt.Errorf("%w: callback %s: %w", ErrCorrupt, r.ID, err)
	}
	content = content[len(dst):]
	d := &decoder{b: content}
	h, body := d.content()
	if d.err == nil && int64(len(body)) != r.Size {
		d.fail("body size differs from the record's")
	}
	if d.err != nil {
		return fmt.Errorf("%w: callback %s: sealed content: %v", ErrCorrupt, r.ID, d.err)
	}
	r.Type, r.Header, r.Body, r.Sealed = RecordEnqueue, h, body, nil
	return nil
}

// internKey returns the one copy of key id k that the entries share. The
// caller holds s.mu (or is Open, alone).
func (s *FileSpool) internKey(k string) string {
	if k == "" {
		return ""
	}
	if v, ok := s.keyNames[k]; ok {
		return v
	}
	if s.keyNames == nil {
		s.keyNames = make(map[string]string)
	}
	s.keyNames[k] = k
	return k
}

// keyOf returns the key id of an enqueue record: "" for a plaintext one.
func keyOf(r *Record) string {
	if r.Type != RecordSealedEnqueue {
		return ""
	}
	if id, ok := seal.KeyIDOf(r.Sealed); ok {
		return id
	}
	return keyInvalid
}

// bodySize returns the body size of an enqueue record, sealed or not.
func (r *Record) bodySize() int64 {
	if r.Type == RecordSealedEnqueue {
		return r.Size
	}
	return int64(len(r.Body))
}

// isEnqueue reports whether t is an enqueue record, sealed or not.
func isEnqueue(t RecordType) bool {
	return t == RecordEnqueue || t == RecordSealedEnqueue
}

// KeyStats is Stats().Keys, never nil: the callbacks whose bodies are on
// disk (pending and dead ones) by the id of the key that seals them,
// queue.KeyPlaintext for those stored in the clear. A key may be retired
// once no callback counts under it; one that counts under an id the
// keyring lacks cannot be delivered until that key is configured again.
func (s *FileSpool) KeyStats() map[string]int {
	if m := s.Stats().Keys; m != nil {
		return m
	}
	return map[string]int{}
}

// countKey adds e to the counts by key of Stats.
func countKey(m map[string]int, e *entry) map[string]int {
	if e.state == queue.StateDelivered || e.n == 0 {
		return m
	}
	k := e.key
	if k == "" {
		k = queue.KeyPlaintext
	}
	if m == nil {
		m = make(map[string]int, 2)
	}
	m[k]++
	return m
}

// needsMigration reports whether a callback is stored in the clear or
// under a key that is not the first of the keyring, while the keyring
// can open it: compaction would rewrite it under the first key.
func (s *FileSpool) needsMigration(cfg *config) bool {
	if cfg.keyring == nil {
		return false
	}
	ids := cfg.keyring.KeyIDs()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		if e.state == queue.StateDelivered || e.n == 0 || e.unsealable || e.key == ids[0] {
			continue
		}
		if e.key == "" {
			return true
		}
		for _, id := range ids[1:] {
			if e.key == id {
				return true
			}
		}
	}
	return false
}

// rewrite returns the record raw (the enqueue record r, decoded from
// raw) as compaction writes it with keyring kr: sealed under the first
// key, appended to dst, and its key id; or raw itself if it needs no
// change (no keyring, or already under the first key). err is set, and
// raw returned, if the record is sealed and does not open.
func rewrite(dst, raw []byte, r *Record, kr *seal.Keyring) (out []byte, key string, err error) {
	key = keyOf(r)
	if kr == nil || key == kr.SealingKeyID() {
		return raw, key, nil
	}
	if err := openRecord(kr, r, false); err != nil {
		return raw, key, err
	}
	out = appendSealed(dst, kr, r.ID, r.Time, r.Header, r.Body)
	if key != "" {
		clear(r.Body) // decrypted above: leave no plaintext behind
	}
	return out, kr.SealingKeyID(), nil
}
