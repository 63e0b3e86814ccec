package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

// RecordType identifies the kind of a log record.
type RecordType uint8

// Record types. Each record sets state absolutely (never relative to the
// previous state), so replaying a record twice changes nothing.
const (
	// RecordEnqueue is a callback: id, received time, headers and body.
	RecordEnqueue RecordType = 1 + iota
	// RecordAttempt is a failed delivery attempt: the number of attempts
	// so far, when, the error, and when the next attempt is due.
	RecordAttempt
	// RecordDelivered marks a callback delivered. It carries the received
	// time, size and attempts too, so that it is a complete tombstone on
	// its own once compaction has dropped the body.
	RecordDelivered
	// RecordDead marks a callback dead: out of attempts.
	RecordDead
	// RecordRetry moves a callback back to pending, attempts reset, due at
	// the record's time.
	RecordRetry
	// RecordDelete forgets a callback.
	RecordDelete
	// RecordBase, the first record of a compacted segment, says that the
	// segment supersedes every segment with a lower number.
	RecordBase
	// RecordSealedEnqueue is a callback encrypted at rest: id, received
	// time and body size in the clear, then the headers and body of an
	// enqueue record sealed with a seal.Keyring (see sealing.go).
	RecordSealedEnqueue
)

// String returns the record type's name.
func (t RecordType) String() string {
	switch t {
	case RecordEnqueue:
		return "enqueue"
	case RecordAttempt:
		return "attempt"
	case RecordDelivered:
		return "delivered"
	case RecordDead:
		return "dead"
	case RecordRetry:
		return "retry"
	case RecordDelete:
		return "delete"
	case RecordBase:
		return "base"
	case RecordSealedEnqueue:
		return "sealed enqueue"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

const (
	// headerSize is the size of a record's frame header: magic (4), CRC
	// (4), payload length (4), type (1).
	headerSize = 13
	// maxPayload is the largest payload a record may declare.
	maxPayload = 1 << 30
	// maxIDLen is the longest callback id.
	maxIDLen = queue.MaxIDLen
	// maxErrLen is the longest last-error text kept per callback.
	maxErrLen = 512
)

// magic starts every record. Its first byte is NUL, which JSON and HTTP
// header text cannot contain, so a callback body cannot carry a forged
// record for the recovery scan to find; its last byte is the format
// version.
var magic = [4]byte{0x00, 'S', 'P', 0x01}

// castagnoli is the CRC-32C table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by the errors of DecodeRecord for bytes that are
// not a valid record: wrong magic or version, checksum mismatch, or a
// malformed payload.
var ErrCorrupt = errors.New("spool: corrupt record")

// Record is one decoded log record. Which fields are set depends on Type;
// see the RecordType constants.
type Record struct {
	Type RecordType
	// ID is the callback id (every type but RecordBase).
	ID string
	// Time is the received time (enqueue) or the time of the event
	// (attempt, delivered, dead, retry, delete).
	Time time.Time
	// Received is the callback's received time (delivered).
	Received time.Time
	// Next is when the next attempt is due (attempt).
	Next time.Time
	// Attempts is the number of attempts made (attempt, delivered).
	Attempts int
	// Err is the last delivery error (attempt).
	Err string
	// Size is the body size in bytes (delivered, sealed enqueue).
	Size int64
	// Header holds the headers to deliver (enqueue).
	Header http.Header
	// Body is the callback body (enqueue). DecodeRecord returns it as a
	// subslice of its input.
	Body []byte
	// Sealed is the sealed headers and body (sealed enqueue), a subslice
	// of DecodeRecord's input; openRecord decrypts it into Header and
	// Body.
	Sealed []byte
	// Segment is the highest segment number superseded (base).
	Segment uint64
}

// DecodeRecord decodes the record at the start of b and returns it with
// its encoded length. It returns an error wrapping io.ErrUnexpectedEOF if
// b holds only the beginning of a record (a torn write), and one wrapping
// ErrCorrupt if b does not start with a valid record. It never panics and
// allocates only what the record's fields need. A record of an unknown
// type decodes with only Type set.
func DecodeRecord(b []byte) (Record, int, error) {
	if len(b) < headerSize {
		if !bytes.HasPrefix(magic[:], b[:min(len(b), len(magic))]) {
			return Record{}, 0, fmt.Errorf("%w: bad magic", ErrCorrupt)
		}
		return Record{}, 0, fmt.Errorf("record header: %w", io.ErrUnexpectedEOF)
	}
	if !bytes.Equal(b[:len(magic)], magic[:]) {
		return Record{}, 0, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	n := binary.LittleEndian.Uint32(b[8:12])
	if n > maxPayload {
		return Record{}, 0, fmt.Errorf("%w: payload length %d", ErrCorrupt, n)
	}
	total := headerSize + int(n)
	if len(b) < total {
		return Record{}, 0, fmt.Errorf("record payload: %w", io.ErrUnexpectedEOF)
	}
	if crc32.Checksum(b[8:total], castagnoli) != binary.LittleEndian.Uint32(b[4:8]) {
		return Record{}, 0, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	r, err := decodePayload(RecordType(b[12]), b[headerSize:total])
	if err != nil {
		return Record{}, 0, fmt.Errorf("%w: %s payload: %v", ErrCorrupt, RecordType(b[12]), err)
	}
	return r, total, nil
}

// appendRecord appends the encoding of r to dst.
func appendRecord(dst []byte, r *Record) []byte {
	start := len(dst)
	dst = append(dst, magic[:]...)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0, byte(r.Type))
	dst = appendPayload(dst, r)
	finishFrame(dst[start:])
	return dst
}

// finishFrame fills in the payload length and checksum of the record
// that rec holds, whose header was appended with zeros for them.
func finishFrame(rec []byte) {
	binary.LittleEndian.PutUint32(rec[8:], uint32(len(rec)-headerSize))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[8:], castagnoli))
}

// enqueueSize is an upper bound of the encoded size of an enqueue record,
// sealed or not.
func enqueueSize(id string, h http.Header, body []byte) int {
	n := headerSize + 4*binary.MaxVarintLen64 + seal.Overhead + len(id) + len(body)
	for k, vs := range h {
		for _, v := range vs {
			n += 2*binary.MaxVarintLen64 + len(k) + len(v)
		}
	}
	return n
}

func appendPayload(dst []byte, r *Record) []byte {
	if r.Type == RecordBase {
		return binary.AppendUvarint(dst, r.Segment)
	}
	dst = appendString(dst, r.ID)
	dst = appendTime(dst, r.Time)
	switch r.Type {
	case RecordEnqueue:
		dst = appendContent(dst, r.Header, r.Body)
	case RecordSealedEnqueue:
		dst = binary.AppendUvarint(dst, uint64(max(r.Size, 0)))
		dst = append(dst, r.Sealed...)
	case RecordAttempt:
		dst = binary.AppendUvarint(dst, uint64(max(r.Attempts, 0)))
		dst = appendTime(dst, r.Next)
		dst = appendString(dst, truncate(r.Err, maxErrLen))
	case RecordDelivered:
		dst = appendTime(dst, r.Received)
		dst = binary.AppendUvarint(dst, uint64(max(r.Size, 0)))
		dst = binary.AppendUvarint(dst, uint64(max(r.Attempts, 0)))
	}
	return dst
}

// appendContent encodes the headers and body of an enqueue record: the
// header count, the (name, value) pairs sorted by name, then the body.
func appendContent(dst []byte, h http.Header, body []byte) []byte {
	keys := make([]string, 0, len(h))
	pairs := 0
	for k, vs := range h {
		keys = append(keys, k)
		pairs += len(vs)
	}
	slices.Sort(keys)
	dst = binary.AppendUvarint(dst, uint64(pairs))
	for _, k := range keys {
		for _, v := range h[k] {
			dst = appendString(dst, k)
			dst = appendString(dst, v)
		}
	}
	return append(dst, body...)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendTime encodes t as nanoseconds since the Unix epoch; the zero time
// as 0.
func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(dst, 0)
	}
	return binary.AppendVarint(dst, t.UnixNano())
}

// decoder reads a payload; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(msg string) {
	if d.err == nil {
		d.err = errors.New(msg)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int {
	v := d.uvarint()
	if v > 1<<31-1 {
		d.fail("integer out of range")
		return 0
	}
	return int(v)
}

func (d *decoder) string(limit int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) || n > uint64(limit) {
		d.fail("string length out of range")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) time() time.Time {
	v := d.varint()
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}

// content decodes what appendContent encoded; the body is the rest of
// the input.
func (d *decoder) content() (http.Header, []byte) {
	var h http.Header
	pairs := d.uvarint()
	if d.err == nil && pairs > uint64(len(d.b)/2) {
		d.fail("header count out of range")
	}
	for i := uint64(0); d.err == nil && i < pairs; i++ {
		k := d.string(len(d.b))
		v := d.string(len(d.b))
		if d.err == nil {
			if h == nil {
				h = make(http.Header)
			}
			h[k] = append(h[k], v)
		}
	}
	if d.err != nil {
		return nil, nil
	}
	return h, d.b
}

func decodePayload(t RecordType, p []byte) (Record, error) {
	r := Record{Type: t}
	d := &decoder{b: p}
	switch t {
	case RecordEnqueue, RecordAttempt, RecordDelivered, RecordDead, RecordRetry, RecordDelete, RecordSealedEnqueue:
	case RecordBase:
		r.Segment = d.uvarint()
		return r, d.err
	default:
		return r, nil
	}
	r.ID = d.string(maxIDLen)
	if d.err == nil && r.ID == "" {
		d.fail("empty id")
	}
	r.Time = d.time()
	switch t {
	case RecordEnqueue:
		r.Header, r.Body = d.content()
	case RecordSealedEnqueue:
		size := d.uvarint()
		if size > maxPayload {
			d.fail("size out of range")
		}
		r.Size = int64(size)
		r.Sealed = d.b
	case RecordAttempt:
		r.Attempts = d.int()
		r.Next = d.time()
		r.Err = d.string(maxErrLen)
	case RecordDelivered:
		r.Received = d.time()
		size := d.uvarint()
		if size > maxPayload {
			d.fail("size out of range")
		}
		r.Size = int64(size)
		r.Attempts = d.int()
	}
	if d.err != nil {
		return Record{}, d.err
	}
	return r, nil
}

// truncate shortens s to at most n bytes without splitting a UTF-8
// sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
