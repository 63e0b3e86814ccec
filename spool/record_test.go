package spool

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/caddy-atlas/caddy-atlas/seal"
)

func sampleRecords() []Record {
	t0 := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
	return []Record{
		{Type: RecordEnqueue, ID: "3f2a9c", Time: t0, Header: http.Header{
			"Content-Type": {"application/json"}, "X-Atlas-Subject": {"client-1"}, "X-Multi": {"a", "b"},
		}, Body: []byte(`{"data":[{"id":1}]}`)},
		{Type: RecordEnqueue, ID: "empty-body", Time: t0},
		{Type: RecordAttempt, ID: "3f2a9c", Time: t0, Attempts: 3, Next: t0.Add(4 * time.Second), Err: "receiver answered 503"},
		{Type: RecordDelivered, ID: "3f2a9c", Time: t0.Add(time.Minute), Received: t0, Size: 19, Attempts: 4},
		{Type: RecordDead, ID: "3f2a9c", Time: t0},
		{Type: RecordRetry, ID: "3f2a9c", Time: t0},
		{Type: RecordDelete, ID: "3f2a9c", Time: t0},
		{Type: RecordBase, Segment: 42},
		{Type: RecordSealedEnqueue, ID: "3f2a9d", Time: t0, Size: 19, Sealed: []byte("\x01sealed bytes")},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, want := range sampleRecords() {
		b := appendRecord([]byte("prefix"), &want)[len("prefix"):]
		got, n, err := DecodeRecord(append(b, "trailing"...))
		if err != nil {
			t.Fatalf("%s: %v", want.Type, err)
		}
		if n != len(b) {
			t.Errorf("%s: length %d, want %d", want.Type, n, len(b))
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: round trip (-want +got):\n%s", want.Type, diff)
		}
	}
}

func TestDecodeRecordDamage(t *testing.T) {
	rec := sampleRecords()[0]
	b := appendRecord(nil, &rec)
	for i := 0; i < len(b); i++ {
		_, _, err := DecodeRecord(b[:i])
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("truncated to %d bytes: error %v, want unexpected EOF", i, err)
		}
	}
	for i := 0; i < len(b); i++ {
		for _, bit := range []byte{0x01, 0x80} {
			c := append([]byte(nil), b...)
			c[i] ^= bit
			_, _, err := DecodeRecord(c)
			if err == nil {
				t.Fatalf("bit %#x of byte %d flipped: decoded without error", bit, i)
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("bit %#x of byte %d flipped: error %v", bit, i, err)
			}
		}
	}
}

func TestTruncateUTF8(t *testing.T) {
	if got := truncate("héllo", 2); got != "h" {
		t.Errorf("truncate = %q, want %q", got, "h")
	}
	if got := truncate("abc", 5); got != "abc" {
		t.Errorf("truncate = %q", got)
	}
}

// fuzzKeyring opens the sealed seeds of FuzzDecodeRecord.
var fuzzKeyring, _ = seal.NewKeyring(sealKey("fuzz"))

// FuzzDecodeRecord checks that DecodeRecord never panics, and that a
// record it accepts encodes to bytes that decode to the same record. The
// input is decoded as it is, and also framed as the payload of a record
// of type input[0] with a valid checksum, so that the payload decoders
// are explored too.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range sampleRecords() {
		f.Add(appendRecord(nil, &r))
	}
	e := identityEntry(1)
	f.Add(appendSealed(nil, fuzzKeyring, e.ID, time.Unix(1700000000, 0), e.Header, e.Body[:200]))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
		if len(b) > 0 {
			framed := append(magic[:], 0, 0, 0, 0, 0, 0, 0, 0, b[0])
			framed = append(framed, b[1:]...)
			binary.LittleEndian.PutUint32(framed[8:], uint32(len(b)-1))
			binary.LittleEndian.PutUint32(framed[4:], crc32.Checksum(framed[8:], castagnoli))
			checkDecode(t, framed)
		}
	})
}

func checkDecode(t *testing.T, b []byte) {
	r, n, err := DecodeRecord(b)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		return
	}
	if n < headerSize || n > len(b) {
		t.Fatalf("length %d out of range (input %d)", n, len(b))
	}
	if r.Type < RecordEnqueue || r.Type > RecordSealedEnqueue {
		return
	}
	if r.Type == RecordSealedEnqueue {
		// Opening never panics, and fails only as documented.
		o := r
		if err := openRecord(fuzzKeyring, &o, false); err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, seal.ErrUnknownKey) {
			t.Fatalf("unexpected error kind opening a sealed record: %v", err)
		}
	}
	again, _, err := DecodeRecord(appendRecord(nil, &r))
	if err != nil {
		t.Fatalf("re-encoded record does not decode: %v", err)
	}
	if diff := cmp.Diff(r, again, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("re-encoding changed the record (-first +second):\n%s", diff)
	}
}
