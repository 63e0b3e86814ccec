package ledger

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The bbolt store's batch records. A batch is read and written whole at
// each claim, so its encoding is on the callback route's path: a compact
// binary form, about half the JSON's size, 18 times faster to encode
// and 5 times faster to decode (BenchmarkBatchRecord, 35 documents). A record starts with its form's byte: batchBinaryV1,
// or '{' for the JSON of a ledger written before it, which is read as
// well and rewritten in the binary form by the batch's next change.
//
// batchBinaryV1, then, in order: the strings ID, ProductType,
// IdempotencyKey, LeaseOwner (each a uvarint length and the bytes); the
// times Uploaded, Finished, NextPoll, LeaseUntil, Updated (each a
// varint of Unix nanoseconds, 0 for the zero time); State (a byte);
// Polls and Revision (uvarints); the number of documents (a uvarint)
// and each document: the strings ID, FileUUID, Source, ErrorCode,
// DeliveryID, State (a byte) and the time At.
const batchBinaryV1 = 0x01

// encodeBoltBatch returns b's record.
func encodeBoltBatch(b *Batch) []byte {
	n := 64 + len(b.ID) + len(b.ProductType) + len(b.IdempotencyKey) + len(b.LeaseOwner)
	for i := range b.Documents {
		d := &b.Documents[i]
		n += 24 + len(d.ID) + len(d.FileUUID) + len(d.Source) + len(d.ErrorCode) + len(d.DeliveryID)
	}
	v := make([]byte, 0, n)
	v = append(v, batchBinaryV1)
	for _, s := range []string{b.ID, b.ProductType, b.IdempotencyKey, b.LeaseOwner} {
		v = appendString(v, s)
	}
	for _, t := range []time.Time{b.Uploaded, b.Finished, b.NextPoll, b.LeaseUntil, b.Updated} {
		v = appendTime(v, t)
	}
	v = append(v, byte(b.State))
	v = binary.AppendUvarint(v, uint64(b.Polls))
	v = binary.AppendUvarint(v, b.Revision)
	v = binary.AppendUvarint(v, uint64(len(b.Documents)))
	for i := range b.Documents {
		d := &b.Documents[i]
		for _, s := range []string{d.ID, d.FileUUID, string(d.Source), d.ErrorCode, d.DeliveryID} {
			v = appendString(v, s)
		}
		v = append(v, byte(d.State))
		v = appendTime(v, d.At)
	}
	return v
}

func appendString(v []byte, s string) []byte {
	return append(binary.AppendUvarint(v, uint64(len(s))), s...)
}

func appendTime(v []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(v, 0)
	}
	return binary.AppendVarint(v, t.UnixNano())
}

// errBadRecord: a batch record that does not decode.
var errBadRecord = errors.New("truncated or malformed")

// decodeBoltBatch reads a batch record, in either form.
func decodeBoltBatch(v []byte) (*Batch, error) {
	b := new(Batch)
	if len(v) > 0 && v[0] == '{' {
		if err := json.Unmarshal(v, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	if len(v) == 0 || v[0] != batchBinaryV1 {
		return nil, fmt.Errorf("%w: unknown form", errBadRecord)
	}
	r := recordReader{v: v[1:]}
	for _, s := range []*string{&b.ID, &b.ProductType, &b.IdempotencyKey, &b.LeaseOwner} {
		*s = r.string()
	}
	for _, t := range []*time.Time{&b.Uploaded, &b.Finished, &b.NextPoll, &b.LeaseUntil, &b.Updated} {
		*t = r.time()
	}
	b.State = State(r.byte())
	b.Polls = int(r.uvarint())
	b.Revision = r.uvarint()
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.v)) { // each document takes a byte at least
		r.err = errBadRecord
	}
	if r.err == nil && n > 0 {
		b.Documents = make([]Document, n)
		for i := range b.Documents {
			d := &b.Documents[i]
			d.ID, d.FileUUID = r.string(), r.string()
			d.Source = Source(r.string())
			d.ErrorCode, d.DeliveryID = r.string(), r.string()
			d.State = DocState(r.byte())
			d.At = r.time()
		}
	}
	if r.err == nil && len(r.v) != 0 {
		r.err = fmt.Errorf("%w: %d bytes left over", errBadRecord, len(r.v))
	}
	if r.err != nil {
		return nil, r.err
	}
	return b, nil
}

// recordReader reads a binary record; the first failure sticks in err.
type recordReader struct {
	v   []byte
	err error
}

func (r *recordReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	x, n := binary.Uvarint(r.v)
	if n <= 0 {
		r.err = errBadRecord
		return 0
	}
	r.v = r.v[n:]
	return x
}

func (r *recordReader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.v)) {
		r.err = errBadRecord
		return ""
	}
	s := string(r.v[:n])
	r.v = r.v[n:]
	return s
}

func (r *recordReader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.v) == 0 {
		r.err = errBadRecord
		return 0
	}
	c := r.v[0]
	r.v = r.v[1:]
	return c
}

func (r *recordReader) time() time.Time {
	if r.err != nil {
		return time.Time{}
	}
	x, n := binary.Varint(r.v)
	if n <= 0 {
		r.err = errBadRecord
		return time.Time{}
	}
	r.v = r.v[n:]
	if x == 0 {
		return time.Time{}
	}
	return time.Unix(0, x).UTC()
}
