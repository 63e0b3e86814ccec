package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/ledger"
)

var benchNow = time.Date(2026, 3, 9, 12, 0, 0, 0, time.UTC)

var benchPolicy = ledger.Policy{PollAfter: time.Hour, PollEvery: 5 * time.Minute, GiveUpAfter: 72 * time.Hour}

// benchDue batches of every benchmark ledger are due.
const benchDue = 500

// benchLedger builds, in a temporary directory, a ledger of n open
// batches of 4 documents, benchDue of them due at benchNow.
func benchLedger(b *testing.B, n int) string {
	dir, err := os.MkdirTemp("", "reconcile-bench-")
	if err != nil {
		b.Fatal(err)
	}
	s, err := ledger.Open(dir, ledger.Options{Policy: benchPolicy, Now: func() time.Time { return benchNow }, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range n {
		up := benchNow.Add(-30 * time.Minute).Add(time.Duration(i) * time.Microsecond)
		if i%(n/benchDue) == 0 {
			up = benchNow.Add(-2 * time.Hour).Add(time.Duration(i) * time.Microsecond)
		}
		ds := make([]ledger.Document, 4)
		for j := range ds {
			ds[j] = ledger.Document{ID: fmt.Sprintf("doc-%d-%d", i, j)}
		}
		if _, err := s.Create(ctx, &ledger.Batch{ID: fmt.Sprintf("BATCH-%08d-BBRSS-20260309081408", i), Uploaded: up, Documents: ds}); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return dir
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkPollCycle is one cycle of the reconciler over 100k open
// batches of which 500 are due: the due scan (pages of 100), then, for
// each due batch, Get, TakeLease, one extracts page (a fake fetcher
// answering instantly: every document still pending) and ReleaseLease,
// four at a time, fsynced as in production. The clock moves on by
// PollEvery after each cycle, so that the same batches are due again.
// Reported: time and allocations per cycle and per due batch, the
// goroutines and the heap after the cycles.
//
//	go test -run xxx -bench BenchmarkPollCycle -benchmem ./reconcile/
func BenchmarkPollCycle(b *testing.B) {
	const n = 100_000
	dir := benchLedger(b, n)
	defer os.RemoveAll(dir)
	var now atomic.Int64
	now.Store(benchNow.UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Add(1)) } // a nanosecond a reading
	s, err := ledger.Open(dir, ledger.Options{Policy: benchPolicy, Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var pages atomic.Int64
	fetch := FetcherFunc(func(_ context.Context, batchID string, _ int) (PageResult, error) {
		pages.Add(1)
		data := make([]json.RawMessage, 4)
		for j := range data {
			data[j] = json.RawMessage(`{"document_id":"x"}`)
		}
		return PageResult{Data: data, Page: 1, TotalPages: 1, TotalItems: 4}, nil
	})
	r, err := New(Options{Store: s, Fetcher: fetch, Enqueuer: EnqueueFunc(func(context.Context, Delivery) error { return nil }), Rate: 1e9, Now: clock, Tick: time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	base, goroutines := heapInUse(), runtime.NumGoroutine()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := r.Scan(ctx)
		if err != nil {
			b.Fatal(err)
		}
		r.Wait()
		if got != benchDue {
			b.Fatalf("%d polls, want %d", got, benchDue)
		}
		now.Add(int64(benchPolicy.PollEvery))
	}
	b.StopTimer()
	if int(pages.Load()) != benchDue*b.N {
		b.Fatalf("%d pages, want %d", pages.Load(), benchDue*b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchDue, "ns/batch")
	b.ReportMetric(float64(int64(heapInUse())-int64(base))/(1<<20), "heap-growth-MiB")
	b.ReportMetric(float64(runtime.NumGoroutine()-goroutines), "goroutines-left")
}

// BenchmarkIdleScan is a scan that finds nothing due among 100k open
// batches: what the reconciler costs between polls.
func BenchmarkIdleScan(b *testing.B) {
	const n = 100_000
	dir := benchLedger(b, n)
	defer os.RemoveAll(dir)
	at := benchNow.Add(-90 * time.Minute) // before anything is due
	s, err := ledger.Open(dir, ledger.Options{Policy: benchPolicy, Now: func() time.Time { return at }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	r, err := New(Options{Store: s, Fetcher: FetcherFunc(func(context.Context, string, int) (PageResult, error) { panic("polled") }), Enqueuer: EnqueueFunc(func(context.Context, Delivery) error { return nil })})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if got, err := r.Scan(ctx); err != nil || got != 0 {
			b.Fatal(got, err)
		}
	}
}
