package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

func fullBatch() *Batch {
	at := time.Date(2026, 3, 9, 8, 14, 8, 123456789, time.UTC)
	return &Batch{
		ID: "BATCH-69469-BBRSS-20260309081408", ProductType: "LOAN_APP", Uploaded: at, IdempotencyKey: "key-1",
		Documents: []Document{
			{ID: "pan-1", FileUUID: "0b7e4c36", State: DocReceived, Source: SourceCallback, At: at.Add(time.Second), DeliveryID: "cb-1"},
			{ID: "aadhaar-2", State: DocFailed, Source: SourcePoll, At: at.Add(2 * time.Second), ErrorCode: "UNRECOGNISED", DeliveryID: "poll-2"},
			{ID: "passport-3", State: DocPending},
		},
		State: StateProcessing, NextPoll: at.Add(time.Hour), Polls: 3,
		LeaseOwner: "i-1~requeue", LeaseUntil: at.Add(2 * time.Hour), Updated: at.Add(time.Minute), Revision: 42,
	}
}

// A batch record reads back as written, and a JSON record (from a
// ledger before the binary form) reads as the same batch.
func TestBoltBatchRecord(t *testing.T) {
	for _, b := range []*Batch{fullBatch(), {ID: "B", State: StateComplete, Finished: time.Unix(1, 0).UTC()}} {
		got, err := decodeBoltBatch(encodeBoltBatch(b))
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(b, got); d != "" {
			t.Errorf("binary round trip (-want +got):\n%s", d)
		}
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err = decodeBoltBatch(j)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(b, got); d != "" {
			t.Errorf("JSON record (-want +got):\n%s", d)
		}
	}
	v := encodeBoltBatch(fullBatch())
	for _, bad := range [][]byte{nil, {0x02}, v[:len(v)-1], append(append([]byte(nil), v...), 0)} {
		if _, err := decodeBoltBatch(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

// A ledger's JSON batch record is claimed as a binary one is, and
// rewritten in the binary form.
func TestBoltBatchRecordJSONClaimed(t *testing.T) {
	s := openTestBolt(t)
	ctx := context.Background()
	b, err := s.Create(ctx, &Batch{ID: "B", Documents: []Document{{ID: "d1"}, {ID: "d2"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		return tx.Bucket(bktBatches).Put([]byte("B"), j)
	}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Claim(ctx, "B", Claim{Source: SourceCallback, DeliveryID: "cb", Results: []Result{{DocumentID: "d1"}, {DocumentID: "d2"}}})
	if err != nil || !r.Completed || r.Batch.Revision != b.Revision+1 {
		t.Fatalf("%+v, %v", r, err)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bktBatches).Get([]byte("B")); len(v) == 0 || v[0] != batchBinaryV1 {
			t.Errorf("the record after the claim: %q", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeBoltBatch: no record, however damaged, makes the decoder
// panic or allocate beyond its size; what decodes encodes back the same.
func FuzzDecodeBoltBatch(f *testing.F) {
	f.Add(encodeBoltBatch(fullBatch()))
	f.Add(encodeBoltBatch(&Batch{ID: "B"}))
	j, _ := json.Marshal(fullBatch())
	f.Add(j)
	f.Add([]byte{batchBinaryV1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, v []byte) {
		b, err := decodeBoltBatch(v)
		if err != nil || len(v) == 0 || v[0] != batchBinaryV1 {
			return
		}
		again, err := decodeBoltBatch(encodeBoltBatch(b))
		if err != nil {
			t.Fatalf("re-encoded record: %v", err)
		}
		if d := cmp.Diff(b, again); d != "" {
			t.Fatalf("re-encoded record differs:\n%s", d)
		}
	})
}

// BenchmarkBatchRecord encodes and decodes the record of a 35-document
// batch, half of them received, in the binary form and in the JSON of
// earlier ledgers.
//
//	go test -run xxx -bench BenchmarkBatchRecord -benchmem ./ledger/
func BenchmarkBatchRecord(b *testing.B) {
	at := time.Date(2026, 3, 9, 8, 14, 8, 123456789, time.UTC)
	batch := &Batch{ID: "BATCH-69469-BBRSS-20260309081408", ProductType: "LOAN_APP", Uploaded: at, State: StateProcessing,
		NextPoll: at.Add(time.Hour), Updated: at, Revision: 3}
	for j := range 35 {
		d := Document{ID: fmt.Sprintf("c12345-aadhaar-%04d", j), FileUUID: "0b7e4c36-9c1e-4c3a-9a53-1d2f6e0c7b11", State: DocPending}
		if j%2 == 0 {
			d.State, d.Source, d.At, d.DeliveryID = DocReceived, SourceCallback, at.Add(time.Minute), "cb-0b7e4c369c1e4c3a9a53"
		}
		batch.Documents = append(batch.Documents, d)
	}
	j, _ := json.Marshal(batch)
	v := encodeBoltBatch(batch)
	b.Logf("record: %d bytes binary, %d bytes JSON", len(v), len(j))
	b.Run("encode/binary", func(b *testing.B) {
		for b.Loop() {
			encodeBoltBatch(batch)
		}
	})
	b.Run("encode/json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/binary", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeBoltBatch(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/json", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeBoltBatch(j); err != nil {
				b.Fatal(err)
			}
		}
	})
}
