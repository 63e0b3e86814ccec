package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// openTestBolt opens a ledger in a temporary directory, without fsync,
// closed at the test's end.
func openTestBolt(t *testing.T) *BoltStore {
	t.Helper()
	s, err := Open(t.TempDir(), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A change whose write fails is rolled back alone: the changes
// committed with it run again and are committed; a change's own refusal
// leaves the others as they are.
func TestGroupCommitAbort(t *testing.T) {
	s := openTestBolt(t)
	put := func(key string) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error { return abort(tx.Bucket(bktBatches).Put([]byte(key), []byte("v"))) }
	}
	writeFailed := errors.New("disk on fire")
	refused := fmt.Errorf("%w: refused", ErrNotFound)
	runs := map[string]int{}
	count := func(key string, fn func(*bolt.Tx) error) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error { runs[key]++; return fn(tx) }
	}
	done := make([]chan error, 4)
	group := []*change{
		{fn: count("a", put("a"))},
		{fn: count("bad", func(tx *bolt.Tx) error {
			if err := tx.Bucket(bktBatches).Put([]byte("bad"), []byte("v")); err != nil {
				return abort(err)
			}
			return abort(writeFailed)
		})},
		{fn: count("no", func(*bolt.Tx) error { return refused })},
		{fn: count("c", put("c"))},
	}
	for i, c := range group {
		done[i] = make(chan error, 1)
		c.done = done[i]
	}
	s.commit(group)
	for i, want := range []error{nil, writeFailed, refused, nil} {
		if err := <-done[i]; !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("change %d: %v, want %v", i, err, want)
		}
	}
	if runs["a"] != 2 || runs["bad"] != 1 || runs["c"] != 1 {
		t.Errorf("runs %v: want a twice (before and after the rollback), bad and c once", runs)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktBatches)
		if b.Get([]byte("a")) == nil || b.Get([]byte("c")) == nil || b.Get([]byte("bad")) != nil {
			return errors.New("want a and c written, bad rolled back")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Concurrent creates are committed together and all recorded.
func TestGroupCommitConcurrent(t *testing.T) {
	s := openTestBolt(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			if _, err := s.Create(ctx, &Batch{ID: fmt.Sprintf("B%d", i), Documents: []Document{{ID: fmt.Sprintf("d%d", i)}}}); err != nil {
				t.Error(err)
			}
			if _, err := s.Create(ctx, &Batch{ID: fmt.Sprintf("B%d", i), Documents: []Document{{ID: "x"}}}); !errors.Is(err, ErrExists) {
				t.Errorf("second create of B%d: %v", i, err)
			}
		})
	}
	wg.Wait()
	st, err := s.Stats(ctx)
	if err != nil || st.Processing != 64 {
		t.Fatalf("%+v, %v: want 64 processing", st, err)
	}
}

// A document index entry written as JSON (by a ledger before the
// binary form) is read as before, and rewritten in the binary form by
// the next change of its batch.
func TestDocEntryJSON(t *testing.T) {
	s := openTestBolt(t)
	ctx := context.Background()
	b, err := s.Create(ctx, &Batch{ID: "B", Documents: []Document{{ID: "d1"}, {ID: "d2"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		docs := tx.Bucket(bktDocs)
		if err := docs.Put(docKey("d1", b.Uploaded, "B"), []byte(`{"s":"received","d":"cb-old"}`)); err != nil {
			return err
		}
		return docs.Put(docKey("d2", b.Uploaded, "B"), []byte(`{"s":"pending"}`))
	}); err != nil {
		t.Fatal(err)
	}
	refs, err := s.LookupEach(ctx, []string{"d1", "d2", "d3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(refs[0]) != 1 || refs[0][0].State != DocReceived || refs[0][0].DeliveryID != "cb-old" ||
		len(refs[1]) != 1 || refs[1][0].State != DocPending || refs[1][0].BatchID != "B" || len(refs[2]) != 0 {
		t.Fatalf("%+v", refs)
	}
	if _, err := s.Claim(ctx, "B", Claim{Source: SourceCallback, DeliveryID: "cb-new", Results: []Result{{DocumentID: "d2"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bktDocs).Get(docKey("d2", b.Uploaded, "B")); len(v) == 0 || v[0] != docEntryBinary {
			return fmt.Errorf("d2's entry after the claim: %q", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	refs, err = s.LookupEach(ctx, []string{"d2"})
	if err != nil || refs[0][0].State != DocReceived || refs[0][0].DeliveryID != "cb-new" {
		t.Fatalf("%+v, %v", refs, err)
	}
}

// A change that panics panics in its caller's goroutine; the committer
// and the changes committed with it carry on.
func TestGroupCommitPanic(t *testing.T) {
	s := openTestBolt(t)
	ctx := context.Background()
	if _, err := s.Create(ctx, &Batch{ID: "B", Documents: []Document{{ID: "d"}}}); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("recovered %v, want boom", v)
			}
		}()
		_, _ = s.Update(ctx, "B", func(*Batch) (bool, error) { panic("boom") })
		t.Error("Update returned")
	}()
	b, err := s.Update(ctx, "B", func(b *Batch) (bool, error) { b.Polls = 7; return true, nil })
	if err != nil || b.Polls != 7 {
		t.Fatalf("the next change: %+v, %v", b, err)
	}
}
