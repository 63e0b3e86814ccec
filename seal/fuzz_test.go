package seal

import (
	"bytes"
	"errors"
	"testing"
)

// fuzzKeyring has two fixed keys, so the committed seed corpus (blobs
// sealed under them, then damaged) stays valid.
func fuzzKeyring(t testing.TB) *Keyring {
	return mustKeyring(t, testKey("fuzz 1"), testKey("fuzz 2"))
}

// FuzzOpen checks that Open never panics on any bytes, fails only with
// ErrCorrupt or ErrUnknownKey, and that whatever opens is exactly as long
// as the blob minus Overhead, under a key of the ring named by the blob.
// The seeds in testdata/fuzz/FuzzOpen are blobs of fuzzKeyring, whole,
// truncated, bit-flipped, of another version and under an unknown key.
func FuzzOpen(f *testing.F) {
	kr := fuzzKeyring(f)
	f.Add(kr.Seal(nil, []byte(`{"id":"1"}`), []byte("1")), []byte("1"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, sealed, aad []byte) {
		in := append([]byte(nil), sealed...)
		got, err := kr.Open(nil, sealed, aad)
		if !bytes.Equal(in, sealed) {
			t.Fatal("Open changed its input")
		}
		if err != nil {
			if got != nil {
				t.Fatalf("error %v with output %q", err, got)
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("error %v is neither ErrCorrupt nor ErrUnknownKey", err)
			}
			return
		}
		if len(got) != len(sealed)-Overhead {
			t.Fatalf("opened %d bytes from %d", len(got), len(sealed))
		}
		if id, ok := KeyIDOf(sealed); !ok || !kr.Has(id) {
			t.Fatalf("opened a blob of key id %q, %v", id, ok)
		}
		// What opened seals again and opens to the same bytes.
		again, err := kr.Open(nil, kr.Seal(nil, got, aad), aad)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("round trip: %q, %v", again, err)
		}
	})
}

// FuzzSealDamage seals any plaintext, damages one byte, and checks that
// the damage is always detected.
func FuzzSealDamage(f *testing.F) {
	kr := fuzzKeyring(f)
	f.Add([]byte(`{"aadhaar_number":"2345 6789 0123"}`), []byte("id"), uint16(30), byte(1))
	f.Add([]byte{}, []byte{}, uint16(0), byte(0x80))
	f.Fuzz(func(t *testing.T, plain, aad []byte, at uint16, xor byte) {
		sealed := kr.Seal(nil, plain, aad)
		if got, err := kr.Open(nil, sealed, aad); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("round trip: %q, %v", got, err)
		}
		if xor == 0 {
			xor = 1
		}
		sealed[int(at)%len(sealed)] ^= xor
		if got, err := kr.Open(nil, sealed, aad); err == nil {
			t.Fatalf("damaged byte %d opened to %q", int(at)%len(sealed), got)
		}
	})
}
