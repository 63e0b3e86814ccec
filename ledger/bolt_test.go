package ledger_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"

	"github.com/caddy-atlas/caddy-atlas/ledger"
	"github.com/caddy-atlas/caddy-atlas/ledger/ledgertest"
)

// TestConformance runs the Store suite shared with the other
// implementations.
func TestConformance(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) ledgertest.Opener {
		dir := t.TempDir()
		return func(t *testing.T, o ledgertest.Options) ledger.Store {
			s, err := ledger.Open(dir, ledger.Options{Policy: o.Policy, Now: o.Now})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	})
}

// TestOpenTwice: a ledger file open elsewhere is refused after
// LockTimeout, saying so, and opens once released.
func TestOpenTwice(t *testing.T) {
	dir := t.TempDir()
	s, err := ledger.Open(dir, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ledger.Open(dir, ledger.Options{LockTimeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "open in another process") {
		t.Fatalf("second Open: %v", err)
	}
	s.Close()
	s, err = ledger.Open(dir, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, ledger.FileName)); err != nil {
		t.Fatal(err)
	}
}

// TestWatchGoroutinesEnd: the goroutines of watches whose context is
// never done end when the store closes.
func TestWatchGoroutinesEnd(t *testing.T) {
	s, err := ledger.Open(t.TempDir(), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(context.Background(), &ledger.Batch{ID: "B", Documents: []ledger.Document{{ID: "a"}}}); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for range 50 {
		if _, err := s.Watch(context.Background(), "B"); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	testutil.WaitFor(t, 5*time.Second, "the watch goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TestLeaseNearGiveUp: a lease taken shortly before the batch's give-up
// time keeps it out of Due until the lease ends (invariant 7), rather
// than listing a batch whose lease is held.
func TestLeaseNearGiveUp(t *testing.T) {
	ctx := context.Background()
	clock := testutil.NewClock(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	s, err := ledger.Open(t.TempDir(), ledger.Options{
		Policy: ledger.Policy{PollAfter: time.Minute, PollEvery: time.Minute, GiveUpAfter: time.Hour},
		Now:    clock.Now, NoSync: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Create(ctx, &ledger.Batch{ID: "BATCH-1", Documents: []ledger.Document{{ID: "pan-1"}}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour - time.Minute) // a minute before giving up
	if _, err := s.TakeLease(ctx, "BATCH-1", "owner-1", 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute) // past give-up, the lease still held
	due, err := s.Due(ctx, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 0 {
		t.Errorf("Due lists %v while its lease is held", due)
	}
	clock.Advance(4 * time.Minute) // the lease has ended
	if due, _ := s.Due(ctx, 10, ""); len(due) != 1 {
		t.Errorf("Due after the lease ended: %v, want the batch", due)
	}
}

// TestUnclaim: the documents a delivery claimed are pending again, and
// the batch due, once the delivery is released; another delivery's
// claims stand.
func TestUnclaim(t *testing.T) {
	ctx := context.Background()
	s, err := ledger.Open(t.TempDir(), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Create(ctx, &ledger.Batch{ID: "B", Documents: []ledger.Document{{ID: "d1"}, {ID: "d2"}}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []ledger.Claim{
		{Source: ledger.SourceCallback, DeliveryID: "cb-1", Results: []ledger.Result{{DocumentID: "d1"}}},
		{Source: ledger.SourcePoll, DeliveryID: "poll-1", Results: []ledger.Result{{DocumentID: "d2"}}},
	} {
		if _, err := s.Claim(ctx, "B", c); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := s.Get(ctx, "B"); b.State != ledger.StateComplete {
		t.Fatalf("before: %+v", b)
	}
	if err := ledger.Unclaim(ctx, s, "B", "cb-1"); err != nil {
		t.Fatal(err)
	}
	b, _ := s.Get(ctx, "B")
	if b.State != ledger.StateProcessing || b.Documents[0].State != ledger.DocPending || b.Documents[1].State != ledger.DocReceived {
		t.Errorf("after: %+v", b)
	}
	if due, _ := s.Due(ctx, 10, ""); len(due) != 1 {
		t.Errorf("the released batch is not due: %v", due)
	}
	// A claim by another delivery now wins d1.
	if r, err := s.Claim(ctx, "B", ledger.Claim{Source: ledger.SourcePoll, DeliveryID: "poll-2", Results: []ledger.Result{{DocumentID: "d1"}}}); err != nil || len(r.Won) != 1 {
		t.Errorf("claim after unclaim: %+v %v", r, err)
	}
}
