package spool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

// Identity values of the test payloads: none may reach the disk in the
// clear once a key is configured.
const (
	testAadhaar = "2345 6789 0123"
	testPAN     = "ABCDE1234F"
	testMarker  = "PAYLOAD-MARKER-7f3c"
	testSubject = "SUBJECT-MARKER-91d2"
)

func sealKey(label string) []byte {
	k := sha256.Sum256([]byte("spool test key " + label))
	return k[:]
}

func keyring(t testing.TB, labels ...string) *seal.Keyring {
	t.Helper()
	var keys [][]byte
	for _, l := range labels {
		keys = append(keys, sealKey(l))
	}
	kr, err := seal.NewKeyring(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// identityEntry is a callback carrying identity numbers in its body and
// its X-Atlas-* headers.
func identityEntry(i int) queue.Entry {
	body := fmt.Sprintf(`{"callback":%d,"marker":%q,"documents":[{"document_type":"AADHAAR","file_data":{"aadhaar_number":{"value":%q},"name":{"value":"Asha Rao"}}},{"document_type":"PAN","file_data":{"pan_number":{"value":%q}}}],"pad":%q}`,
		i, testMarker, testAadhaar, testPAN, strings.Repeat("x", 2000))
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Atlas-Callback-Id", testID(i))
	h.Set("X-Atlas-Subject", testSubject)
	return queue.Entry{ID: testID(i), Header: h, Body: []byte(body)}
}

// assertNoPlaintext fails if any file in dir holds an identity value or
// marker.
func assertNoPlaintext(t *testing.T, dir string) {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{testAadhaar, "234567890123", testPAN, testMarker, testSubject, "Asha Rao", "aadhaar_number"} {
			if bytes.Contains(b, []byte(m)) {
				t.Errorf("%s holds %q in the clear", de.Name(), m)
			}
		}
	}
}

func assertLoads(t *testing.T, s *FileSpool, ids ...int) {
	t.Helper()
	for _, i := range ids {
		want := identityEntry(i)
		e, err := s.Load(context.Background(), want.ID)
		if err != nil {
			t.Errorf("Load(%s): %v", want.ID, err)
			continue
		}
		if !bytes.Equal(e.Body, want.Body) || e.Header.Get("X-Atlas-Subject") != testSubject {
			t.Errorf("Load(%s): body or headers differ", want.ID)
		}
	}
}

// TestSealedOnDisk: with a key, no spool file ever holds a payload marker
// or an identity number (bodies or X-Atlas-* headers), through appends,
// failed and successful deliveries, dead letters, compaction and a
// reopen; deliveries and loads get the plaintext.
func TestSealedOnDisk(t *testing.T) {
	dir := t.TempDir()
	kr := keyring(t, "a")
	rec := &recorder{fail: func(d queue.Delivery) error {
		if d.ID == testID(1) || d.ID == testID(2) {
			return errors.New("rejected")
		}
		return nil
	}}
	opts := Options{Deliver: rec.Deliver, Keyring: kr, MaxAttempts: 1}
	s := open(t, dir, opts)
	for i := range 6 {
		mustAppend(t, s, identityEntry(i))
	}
	testutil.WaitFor(t, 10*time.Second, "deliveries", func() bool {
		st := s.Stats()
		return st.Delivered == 4 && st.Dead == 2 && st.InFlight == 0
	})
	for _, d := range rec.deliveries() {
		var i int
		fmt.Sscanf(d.ID, "cb-%d", &i)
		if !bytes.Equal(d.Body, identityEntry(i).Body) || d.Header.Get("X-Atlas-Subject") != testSubject {
			t.Errorf("delivery of %s: body or headers differ from what was appended", d.ID)
		}
	}
	assertNoPlaintext(t, dir)
	if got, want := s.KeyStats(), map[string]int{kr.SealingKeyID(): 2}; !cmp.Equal(got, want) {
		t.Errorf("KeyStats = %v, want %v", got, want)
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertNoPlaintext(t, dir)
	assertLoads(t, s, 1, 2)
	closeSpool(t, s)

	s = open(t, dir, Options{Keyring: kr})
	assertLoads(t, s, 1, 2)
	if st := s.Stats(); st.Dead != 2 || st.Delivered != 4 || st.SkippedRecords != 0 {
		t.Errorf("after reopen: %+v", st)
	}
	assertNoPlaintext(t, dir)
}

// TestSealedWrongKey: a record whose key is not configured stays, with a
// clear error on Load and on every delivery attempt, through compaction;
// the records the keyring can open are unaffected; once the key is back
// it loads.
func TestSealedWrongKey(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{Keyring: keyring(t, "a")})
	mustAppend(t, s, identityEntry(1))
	closeSpool(t, s)
	s = open(t, dir, Options{})
	mustAppend(t, s, identityEntry(0)) // plaintext: no keyring now
	closeSpool(t, s)

	rec := &recorder{}
	logger, logs := observedLogger()
	opts := Options{Deliver: rec.Deliver, Keyring: keyring(t, "b"), MaxAttempts: 2,
		BackoffMin: time.Millisecond, BackoffMax: time.Millisecond, Logger: logger}
	s = open(t, dir, opts)
	idA := seal.KeyID(sealKey("a"))
	_, err := s.Load(context.Background(), testID(1))
	if !errors.Is(err, seal.ErrUnknownKey) || !strings.Contains(err.Error(), idA) || !strings.Contains(err.Error(), testID(1)) {
		t.Fatalf("Load under another key: %v, want ErrUnknownKey naming %s and the callback", err, idA)
	}
	testutil.WaitFor(t, 10*time.Second, "the delivery of the plaintext one and the dead letter", func() bool {
		st := s.Stats()
		return st.Delivered == 1 && st.Dead == 1 && st.InFlight == 0
	})
	if rec.count(testID(1)) != 0 || rec.count(testID(0)) != 1 {
		t.Errorf("delivered %v, want only %s", rec.ids(), testID(0))
	}
	in, _ := s.Get(testID(1))
	if in.State != queue.StateDead || in.Attempts != 2 || !strings.Contains(in.LastError, idA) {
		t.Errorf("callback under the missing key: %+v", in)
	}
	if got, want := s.KeyStats(), map[string]int{idA: 1}; !cmp.Equal(got, want) {
		t.Errorf("KeyStats = %v, want %v", got, want)
	}
	// Compaction keeps it, warns once, and does not try again and again.
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := logs.FilterMessageSnippet("the keyring cannot open them").Len(); n != 1 {
		t.Errorf("%d compaction warnings, want 1: %v", n, logs.All())
	}
	if s.needsMigration(s.config()) {
		t.Error("an unopenable record keeps asking for compaction")
	}
	closeSpool(t, s)

	// No keyring at all: the same clear error.
	s = open(t, dir, Options{})
	if _, err := s.Load(context.Background(), testID(1)); !errors.Is(err, seal.ErrUnknownKey) {
		t.Errorf("Load without a keyring: %v", err)
	}
	closeSpool(t, s)

	// The key is back: it loads, and a retry delivers it.
	rec = &recorder{}
	s = open(t, dir, Options{Deliver: rec.Deliver, Keyring: keyring(t, "b", "a")})
	assertLoads(t, s, 1)
	if err := s.Retry(context.Background(), testID(1)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "delivery once the key is back", func() bool { return rec.count(testID(1)) == 1 })
}

// rewriteRecord replaces the payload of the record at off in the segment
// file path with what edit makes of it, with a valid frame (length and
// checksum), as an attacker with write access to the disk could.
func rewriteRecord(t *testing.T, path string, off int64, edit func(payload []byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, n, err := DecodeRecord(b[off:])
	if err != nil {
		t.Fatal(err)
	}
	payload := edit(append([]byte(nil), b[off+headerSize:off+int64(n)]...))
	rec := append(append([]byte(nil), b[off:off+headerSize]...), payload...)
	finishFrame(rec)
	out := append(append(append([]byte(nil), b[:off]...), rec...), b[off+int64(n):]...)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSealedDamage: a flipped bit and a truncated record, in a valid
// frame (tampering) or not (disk damage), each give a clear error for
// their record and lose no other.
func TestSealedDamage(t *testing.T) {
	for _, tc := range []struct {
		name string
		// damage damages the middle record (at off) of the segment.
		damage func(t *testing.T, path string, off int64)
		// skipped: the frame does not verify, the record is skipped at
		// open with a warning; otherwise Load fails with ErrCorrupt.
		skipped bool
	}{
		{"bit flip in the sealed blob, frame fixed", func(t *testing.T, path string, off int64) {
			rewriteRecord(t, path, off, func(p []byte) []byte { p[len(p)-100] ^= 0x08; return p })
		}, false},
		{"bit flip in the key id, frame fixed", func(t *testing.T, path string, off int64) {
			rewriteRecord(t, path, off, func(p []byte) []byte {
				i := bytes.IndexByte(p[len(testID(1))+1:], seal.Version) + len(testID(1)) + 1
				p[i+3] ^= 0x01
				return p
			})
		}, false},
		{"truncated sealed blob, frame fixed", func(t *testing.T, path string, off int64) {
			rewriteRecord(t, path, off, func(p []byte) []byte { return p[:len(p)-500] })
		}, false},
		{"received time changed, frame fixed", func(t *testing.T, path string, off int64) {
			rewriteRecord(t, path, off, func(p []byte) []byte { p[len(testID(1))+2] ^= 0x02; return p })
		}, false},
		{"bit flip on disk", func(t *testing.T, path string, off int64) {
			b, _ := os.ReadFile(path)
			b[off+headerSize+200] ^= 0x40
			os.WriteFile(path, b, 0o600)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			kr := keyring(t, "a")
			s := open(t, dir, Options{Keyring: kr})
			for i := range 3 {
				mustAppend(t, s, identityEntry(i))
			}
			closeSpool(t, s)
			seg := segmentFiles(t, dir)[0]
			tc.damage(t, seg, recordOffsets(t, seg)[1])

			logger, logs := observedLogger()
			rec := &recorder{}
			s = open(t, dir, Options{Keyring: kr, Logger: logger})
			assertLoads(t, s, 0, 2)
			if tc.skipped {
				if st := s.Stats(); st.SkippedRecords != 1 || logs.FilterMessageSnippet("corrupt record skipped").Len() != 1 {
					t.Errorf("a damaged frame: %+v, %v", st, logs.All())
				}
				return
			}
			_, err := s.Load(context.Background(), testID(1))
			if err == nil || !strings.Contains(err.Error(), testID(1)) ||
				!(errors.Is(err, ErrCorrupt) && errors.Is(err, seal.ErrCorrupt) || errors.Is(err, seal.ErrUnknownKey)) {
				t.Fatalf("Load of the damaged record: %v", err)
			}
			// Delivery fails for it with that error, and only for it.
			if err := s.Reconfigure(Options{Keyring: kr, Logger: logger, Deliver: rec.Deliver, MaxAttempts: 1}); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 10*time.Second, "deliveries", func() bool {
				st := s.Stats()
				return st.Delivered == 2 && st.Dead == 1 && st.InFlight == 0
			})
			if in, _ := s.Get(testID(1)); in.LastError == "" || rec.count(testID(1)) != 0 {
				t.Errorf("damaged record: %+v, delivered %d times", in, rec.count(testID(1)))
			}
			// Compaction keeps it and the others.
			if err := s.Compact(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Load(context.Background(), testID(1)); err == nil {
				t.Error("damaged record loads after compaction")
			}
			if in, ok := s.Get(testID(1)); !ok || in.State != queue.StateDead {
				t.Errorf("damaged record after compaction: %+v, %v", in, ok)
			}
		})
	}
}

// TestKeyRotation: a new first key seals, the old one still opens;
// compaction moves everything to the new key, after which the old key
// can go. A plaintext spool is migrated once a key is configured.
func TestKeyRotation(t *testing.T) {
	dir := t.TempDir()
	idA, idB := seal.KeyID(sealKey("a")), seal.KeyID(sealKey("b"))

	s := open(t, dir, Options{})
	mustAppend(t, s, identityEntry(0))
	mustAppend(t, s, identityEntry(1))
	closeSpool(t, s)

	// A key is configured: the plaintext records are migrated without
	// being asked, new ones are sealed.
	s = open(t, dir, Options{Keyring: keyring(t, "a")})
	mustAppend(t, s, identityEntry(2))
	testutil.WaitFor(t, 10*time.Second, "migration of the plaintext records", func() bool {
		return cmp.Equal(s.KeyStats(), map[string]int{idA: 3})
	})
	assertNoPlaintext(t, dir)
	assertLoads(t, s, 0, 1, 2)

	// Rotation: b first, a still opens. Reconfigure starts the
	// rewriting; the records under a load meanwhile.
	mustAppend(t, s, identityEntry(3))
	opts := Options{Keyring: keyring(t, "b", "a")}
	if err := s.Reconfigure(opts); err != nil {
		t.Fatal(err)
	}
	assertLoads(t, s, 0, 1, 2, 3)
	mustAppend(t, s, identityEntry(4))
	testutil.WaitFor(t, 10*time.Second, "re-encryption under the new key", func() bool {
		return cmp.Equal(s.KeyStats(), map[string]int{idB: 5})
	})
	closeSpool(t, s)

	// The old key is retired: everything opens under the new one alone.
	s = open(t, dir, Options{Keyring: keyring(t, "b")})
	assertLoads(t, s, 0, 1, 2, 3, 4)
	if got := s.KeyStats(); !cmp.Equal(got, map[string]int{idB: 5}) {
		t.Errorf("KeyStats after retiring the old key = %v", got)
	}
	assertNoPlaintext(t, dir)
}

// TestKeyRotationByCompaction: without the automatic migration (no
// maintenance between the steps), an explicit Compact re-encrypts, and
// the counts move from the old key id to the new one.
func TestKeyRotationByCompaction(t *testing.T) {
	dir := t.TempDir()
	idA, idB := seal.KeyID(sealKey("a")), seal.KeyID(sealKey("b"))
	s := open(t, dir, Options{Keyring: keyring(t, "a")})
	for i := range 3 {
		mustAppend(t, s, identityEntry(i))
	}
	closeSpool(t, s)
	// Reopened with b first: the counts show what a still protects.
	s, err := Open(dir, Options{Keyring: keyring(t, "b", "a")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if got := s.KeyStats(); got[idA]+got[idB] != 3 {
		t.Errorf("KeyStats = %v", got)
	}
	mustAppend(t, s, identityEntry(3))
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s.KeyStats(); !cmp.Equal(got, map[string]int{idB: 4}) {
		t.Errorf("KeyStats after compaction = %v, want all under %s", got, idB)
	}
	for _, path := range segmentFiles(t, dir) {
		b, _ := os.ReadFile(path)
		for off := 0; off < len(b); {
			r, n, err := DecodeRecord(b[off:])
			if err != nil {
				t.Fatal(err)
			}
			if r.Type == RecordSealedEnqueue && keyOf(&r) != idB {
				t.Errorf("%s: record of %s under %s after compaction", filepath.Base(path), r.ID, keyOf(&r))
			}
			if r.Type == RecordEnqueue {
				t.Errorf("%s: plaintext record of %s", filepath.Base(path), r.ID)
			}
			off += n
		}
	}
	assertLoads(t, s, 0, 1, 2, 3)
}
