package seal

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// testKey is a fixed key derived from a label, so tests and the fuzz seed
// corpus are reproducible.
func testKey(label string) []byte {
	k := sha256.Sum256([]byte("seal test key " + label))
	return k[:]
}

func mustKeyring(t testing.TB, keys ...[]byte) *Keyring {
	t.Helper()
	kr, err := NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestParseKey(t *testing.T) {
	k := testKey("parse")
	for name, text := range map[string]string{
		"hex":            hex.EncodeToString(k),
		"HEX":            strings.ToUpper(hex.EncodeToString(k)),
		"std":            base64.StdEncoding.EncodeToString(k),
		"raw std":        base64.RawStdEncoding.EncodeToString(k),
		"url":            base64.URLEncoding.EncodeToString(k),
		"raw url":        base64.RawURLEncoding.EncodeToString(k),
		"file's newline": base64.StdEncoding.EncodeToString(k) + "\n",
	} {
		got, err := ParseKey(text)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, k) {
			t.Errorf("%s: decoded to another key", name)
		}
	}
	// Errors say what is wrong and never echo the text; "mixed" has
	// characters of both base64 alphabets.
	for name, tc := range map[string]struct{ text, want string }{
		"empty":     {"  \n", "key is empty"},
		"short":     {base64.StdEncoding.EncodeToString(k[:16]), "decodes to 16 bytes, want 32"},
		"long hex":  {hex.EncodeToString(append(k, 1)), "decodes to"},
		"not a key": {"correct horse battery staple!", "neither base64 nor hex"},
		"mixed":     {"+/-_" + base64.RawStdEncoding.EncodeToString(k)[4:], "neither base64 nor hex"},
	} {
		_, err := ParseKey(tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
			continue
		}
		if s := strings.TrimSpace(tc.text); s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("%s: error echoes the key text: %v", name, err)
		}
	}
}

func TestKeyID(t *testing.T) {
	k := testKey("id")
	id := KeyID(k)
	if len(id) != 16 || id != KeyID(append([]byte(nil), k...)) {
		t.Fatalf("KeyID = %q, want 16 stable hex digits", id)
	}
	if id == KeyID(testKey("other")) {
		t.Fatal("two keys share an id")
	}
	if strings.Contains(hex.EncodeToString(k), id) {
		t.Fatal("the key id is part of the key")
	}
	plain := sha256.Sum256(k)
	if strings.HasPrefix(hex.EncodeToString(plain[:]), id) {
		t.Fatal("the key id is the plain SHA-256 of the key, not domain-separated")
	}
}

func TestNewKeyringErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		keys [][]byte
		want string
	}{
		"none":      {nil, "at least one key"},
		"short":     {[][]byte{testKey("a")[:31]}, "key 1 is 31 bytes"},
		"second":    {[][]byte{testKey("a"), make([]byte, 33)}, "key 2 is 33 bytes"},
		"duplicate": {[][]byte{testKey("a"), testKey("b"), testKey("a")}, "keys 1 and 3 are the same key"},
	} {
		_, err := NewKeyring(tc.keys...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
}

func TestSealOpen(t *testing.T) {
	kr := mustKeyring(t, testKey("a"))
	plain := []byte(`{"aadhaar_number":"2345 6789 0123","pan":"ABCDE1234F"}`)
	aad := []byte("callback id 1")
	s1 := kr.Seal(nil, plain, aad)
	s2 := kr.Seal(nil, plain, aad)
	if len(s1) != len(plain)+Overhead {
		t.Fatalf("sealed %d bytes, want %d", len(s1), len(plain)+Overhead)
	}
	if bytes.Equal(s1, s2) {
		t.Fatal("two seals of the same plaintext are equal: the nonce is not fresh")
	}
	for _, marker := range []string{"2345 6789 0123", "ABCDE1234F", "aadhaar"} {
		if bytes.Contains(s1, []byte(marker)) {
			t.Fatalf("sealed blob contains %q", marker)
		}
	}
	if id, ok := KeyIDOf(s1); !ok || id != KeyID(testKey("a")) || id != kr.SealingKeyID() {
		t.Fatalf("KeyIDOf = %q, %v, want %s", id, ok, KeyID(testKey("a")))
	}
	got, err := kr.Open([]byte("prefix:"), s1, aad)
	if err != nil || string(got) != "prefix:"+string(plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// Another aad does not open.
	if _, err := kr.Open(nil, s1, []byte("callback id 2")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with another aad: %v, want ErrCorrupt", err)
	}
	// Empty plaintext and aad round-trip.
	e := kr.Seal(nil, nil, nil)
	if got, err := kr.Open(nil, e, nil); err != nil || len(got) != 0 {
		t.Fatalf("empty: %q, %v", got, err)
	}
}

func TestSealOpenInPlace(t *testing.T) {
	kr := mustKeyring(t, testKey("a"))
	plain := []byte("in place, overlapping buffers")
	buf := make([]byte, len(plain), len(plain)+Overhead)
	copy(buf, plain)
	sealed := kr.Seal(buf[:0], buf, nil)
	got, err := kr.Open(sealed[:0], sealed, nil)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open in place = %q, %v", got, err)
	}
}

// TestSealOpenNoCopy: the plaintext laid out at PrefixSize seals in
// place, and opens in place, without copying it.
func TestSealOpenNoCopy(t *testing.T) {
	kr := mustKeyring(t, testKey("a"))
	plain := []byte("sealed where it lies, opened where it lies")
	buf := make([]byte, 3, 3+len(plain)+Overhead)
	copy(buf[3+PrefixSize:cap(buf)], plain)
	sealed := kr.Seal(buf, buf[3+PrefixSize:3+PrefixSize+len(plain)], []byte("aad"))
	if &sealed[0] != &buf[0] || len(sealed) != 3+len(plain)+Overhead {
		t.Fatal("sealing in place reallocated")
	}
	blob := append([]byte(nil), sealed[3:]...)
	got, err := kr.Open(blob[:PrefixSize], blob, []byte("aad"))
	if err != nil || string(got[PrefixSize:]) != string(plain) || &got[0] != &blob[0] {
		t.Fatalf("Open in place = %q, %v", got, err)
	}
	// Neither copies the plaintext: one allocation, the additional data.
	if n := testing.AllocsPerRun(10, func() {
		kr.Seal(buf[:3], buf[3+PrefixSize:3+PrefixSize+len(plain)], []byte("aad"))
	}); n > 1 {
		t.Errorf("Seal in place: %v allocations", n)
	}
}

func TestRotation(t *testing.T) {
	oldKey, newKey := testKey("old"), testKey("new")
	before := mustKeyring(t, oldKey)
	old := before.Seal(nil, []byte("sealed before the rotation"), []byte("1"))

	after := mustKeyring(t, newKey, oldKey)
	if ids := after.KeyIDs(); len(ids) != 2 || ids[0] != KeyID(newKey) || ids[1] != KeyID(oldKey) {
		t.Fatalf("KeyIDs = %v", ids)
	}
	if got, err := after.Open(nil, old, []byte("1")); err != nil || string(got) != "sealed before the rotation" {
		t.Fatalf("old blob under the new keyring: %q, %v", got, err)
	}
	fresh := after.Seal(nil, []byte("sealed after"), []byte("2"))
	if id, _ := KeyIDOf(fresh); id != KeyID(newKey) {
		t.Fatalf("new blob sealed under %s, want the new key %s", id, KeyID(newKey))
	}
	// Once the old key is retired, its blobs are ErrUnknownKey naming it.
	retired := mustKeyring(t, newKey)
	_, err := retired.Open(nil, old, []byte("1"))
	var uk *UnknownKeyError
	if !errors.Is(err, ErrUnknownKey) || !errors.As(err, &uk) || uk.ID != KeyID(oldKey) {
		t.Fatalf("old blob after retiring its key: %v", err)
	}
	if !strings.Contains(err.Error(), KeyID(oldKey)) {
		t.Fatalf("error %q does not name the key id", err)
	}
	if got, err := retired.Open(nil, fresh, []byte("2")); err != nil || string(got) != "sealed after" {
		t.Fatalf("new blob after retiring the old key: %q, %v", got, err)
	}
}

func TestWrongKey(t *testing.T) {
	sealed := mustKeyring(t, testKey("right")).Seal(nil, []byte("x"), nil)
	_, err := mustKeyring(t, testKey("wrong")).Open(nil, sealed, nil)
	if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), KeyID(testKey("right"))) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := (*Keyring)(nil).Open(nil, sealed, nil); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("nil keyring: %v", err)
	}
	for _, k := range [][]byte{testKey("right"), testKey("wrong")} {
		if strings.Contains(err.Error(), hex.EncodeToString(k)) || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(k)) {
			t.Fatal("error contains key material")
		}
	}
}

func TestTruncated(t *testing.T) {
	kr := mustKeyring(t, testKey("a"))
	sealed := kr.Seal(nil, []byte("a record that is cut short"), []byte("aad"))
	for n := 0; n < len(sealed); n++ {
		got, err := kr.Open(nil, sealed[:n], []byte("aad"))
		if !errors.Is(err, ErrCorrupt) || got != nil {
			t.Fatalf("truncated to %d bytes: %q, %v, want ErrCorrupt", n, got, err)
		}
	}
	if _, err := kr.Open(nil, append(sealed, 0), []byte("aad")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("one byte appended: %v, want ErrCorrupt", err)
	}
}

func TestBitFlip(t *testing.T) {
	a, b := testKey("a"), testKey("b")
	kr := mustKeyring(t, a, b)
	sealed := kr.Seal(nil, []byte("every bit of this is authenticated"), []byte("aad"))
	for i := range sealed {
		for bit := range 8 {
			c := append([]byte(nil), sealed...)
			c[i] ^= 1 << bit
			got, err := kr.Open(nil, c, []byte("aad"))
			switch {
			case got != nil:
				t.Fatalf("byte %d bit %d flipped: opened to %q", i, bit, got)
			case i >= 1 && i < HeaderSize:
				// A flipped key id names a key the ring lacks.
				if !errors.Is(err, ErrUnknownKey) {
					t.Fatalf("key id byte %d bit %d flipped: %v, want ErrUnknownKey", i, bit, err)
				}
			case !errors.Is(err, ErrCorrupt):
				t.Fatalf("byte %d bit %d flipped: %v, want ErrCorrupt", i, bit, err)
			}
		}
	}
}

func TestKeyIDOf(t *testing.T) {
	for _, b := range [][]byte{nil, {Version}, {2, 1, 2, 3, 4, 5, 6, 7, 8}, []byte(`{"json":1}`)} {
		if id, ok := KeyIDOf(b); ok {
			t.Errorf("KeyIDOf(%q) = %q, true", b, id)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	kr := mustKeyring(b, testKey("a"))
	plain := bytes.Repeat([]byte("x"), 16<<10)
	buf := make([]byte, 0, len(plain)+Overhead)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		buf = kr.Seal(buf[:0], plain, []byte("id"))
	}
}

func BenchmarkOpen(b *testing.B) {
	kr := mustKeyring(b, testKey("a"))
	sealed := kr.Seal(nil, bytes.Repeat([]byte("x"), 16<<10), []byte("id"))
	buf := make([]byte, 0, len(sealed))
	b.SetBytes(int64(len(sealed) - Overhead))
	for b.Loop() {
		var err error
		if buf, err = kr.Open(buf[:0], sealed, []byte("id")); err != nil {
			b.Fatal(err)
		}
	}
}
