package ledger

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// benchNow is the benchmarks' clock.
var benchNow = time.Date(2026, 3, 9, 12, 0, 0, 0, time.UTC)

// benchPolicy: polls an hour after the upload.
var benchPolicy = Policy{PollAfter: time.Hour, PollEvery: 5 * time.Minute, GiveUpAfter: 24 * time.Hour}

// benchDue is the number of due batches in every benchmark ledger,
// whatever its size, so that a cycle's cost can be compared across sizes.
const benchDue = 500

var (
	benchMu   sync.Mutex
	benchDirs = map[int]string{}
)

// benchLedger returns a ledger directory holding n open batches of 4
// documents, benchDue of them due at benchNow, built once per size and
// process (with NoSync: building it is not what is measured).
func benchLedger(b *testing.B, n int) string {
	benchMu.Lock()
	defer benchMu.Unlock()
	if d, ok := benchDirs[n]; ok {
		return d
	}
	dir, err := os.MkdirTemp("", "ledger-bench-")
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(dir, Options{Policy: benchPolicy, Now: func() time.Time { return benchNow }, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range n {
		up := benchNow.Add(-30 * time.Minute).Add(time.Duration(i) * time.Microsecond) // due in 30 minutes
		if i%(n/benchDue) == 0 {
			up = benchNow.Add(-2 * time.Hour).Add(time.Duration(i) * time.Microsecond) // due an hour ago
		}
		ds := make([]Document, 4)
		for j := range ds {
			ds[j] = Document{ID: fmt.Sprintf("doc-%d-%d", i, j), FileUUID: "0b7e4c36-9c1e-4c3a-9a53-1d2f6e0c7b11"}
		}
		if _, err := s.Create(ctx, &Batch{ID: fmt.Sprintf("BATCH-%08d-BBRSS-20260309081408", i), ProductType: "LOAN_APP", Uploaded: up, Documents: ds}); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	benchDirs[n] = dir
	return dir
}

// TestMain removes the benchmark ledgers.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range benchDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkDueScan is the reconciler's scan in one poll cycle: the due
// batches, read 100 a page until the index has no more due, among 10k
// and 100k open batches of which 500 are due. Time, allocations and
// bytes per cycle must not grow with the number of batches kept; the
// heap after the cycle ("heap-MiB") neither: bbolt's pages are mapped,
// not on the Go heap.
//
//	go test -run xxx -bench BenchmarkDueScan -benchmem ./ledger/
func BenchmarkDueScan(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("batches=%d", n), func(b *testing.B) {
			s, err := Open(benchLedger(b, n), Options{Policy: benchPolicy, Now: func() time.Time { return benchNow }})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			base := heapInUse()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				got, cursor := 0, ""
				for {
					page, err := s.Due(ctx, 100, cursor)
					if err != nil {
						b.Fatal(err)
					}
					got += len(page)
					if len(page) < 100 {
						break
					}
					cursor = page[len(page)-1].Cursor
				}
				if got != benchDue {
					b.Fatalf("%d due, want %d", got, benchDue)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(int64(heapInUse())-int64(base))/(1<<20), "heap-growth-MiB")
			b.ReportMetric(float64(heapInUse())/(1<<20), "heap-MiB")
		})
	}
}

// BenchmarkPollCycle is a whole cycle without the poll itself: the due
// scan, then TakeLease and ReleaseLease of each due batch (two
// read-write transactions each, fsynced as in production), with the
// clock moved back so that the same batches are due again next cycle.
func BenchmarkPollCycle(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("batches=%d", n), func(b *testing.B) {
			src := benchLedger(b, n)
			dir := b.TempDir()
			data, err := os.ReadFile(src + "/" + FileName)
			if err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(dir+"/"+FileName, data, 0o600); err != nil {
				b.Fatal(err)
			}
			now := benchNow
			var mu sync.Mutex
			s, err := Open(dir, Options{Policy: benchPolicy, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				page, err := s.Due(ctx, benchDue, "")
				if err != nil {
					b.Fatal(err)
				}
				if len(page) != benchDue {
					b.Fatalf("%d due, want %d", len(page), benchDue)
				}
				for _, d := range page {
					if _, err := s.TakeLease(ctx, d.BatchID, "bench", time.Minute); err != nil {
						b.Fatal(err)
					}
					if _, err := s.ReleaseLease(ctx, d.BatchID, "bench"); err != nil {
						b.Fatal(err)
					}
				}
				mu.Lock()
				now = now.Add(benchPolicy.PollEvery) // the same batches, due again
				mu.Unlock()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchDue, "ns/batch")
		})
	}
}

// BenchmarkCreate records batches of 35 documents, as the upload route
// does, from 16 goroutines, with each commit fsynced (the default), in a
// ledger that grows as it runs.
//
//	go test -run xxx -bench BenchmarkCreate -benchmem ./ledger/
func BenchmarkCreate(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(dir, Options{Policy: benchPolicy})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var seq sync.Mutex
	n := 0
	next := func() int {
		seq.Lock()
		defer seq.Unlock()
		n++
		return n
	}
	b.SetParallelism(8) // 16 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			i := next()
			ds := make([]Document, 35)
			for j := range ds {
				ds[j] = Document{ID: fmt.Sprintf("c%d-doc-%04d", i, j), FileUUID: fmt.Sprintf("%08d-%04d", i, j)}
			}
			if _, err := s.Create(ctx, &Batch{ID: fmt.Sprintf("BATCH-%d-BENCH-20260309081408", i), ProductType: "LOAN_APP", Documents: ds}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMatchClaims claims the 35 documents of a callback, as the
// callback route does (MatchClaims: a Lookup per document, then a Claim
// of their batch), from 16 goroutines, each callback completing a
// distinct batch of a ledger of 20k batches of 35 documents, fsynced.
//
//	go test -run xxx -bench BenchmarkMatchClaims -benchmem ./ledger/
func BenchmarkMatchClaims(b *testing.B) {
	const batches = 20_000
	dir := b.TempDir()
	s, err := Open(dir, Options{Policy: benchPolicy, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	results := make([][]Result, batches)
	var wg sync.WaitGroup
	for w := range 16 { // 16 writers: their creates share commits
		wg.Go(func() {
			for i := w; i < batches; i += 16 {
				ds := make([]Document, 35)
				results[i] = make([]Result, 35)
				for j := range ds {
					ds[j] = Document{ID: fmt.Sprintf("m%d-%s-%04d", i, []string{"pan", "aadhaar", "passport", "gstin", "dl"}[j%5], j)}
					results[i][j] = Result{DocumentID: ds[j].ID}
				}
				if _, err := s.Create(ctx, &Batch{ID: fmt.Sprintf("BATCH-%d-BENCH-20260309081408", i), ProductType: "LOAN_APP", Documents: ds}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s.Close()
	if s, err = Open(dir, Options{Policy: benchPolicy}); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var mu sync.Mutex
	n := 0
	next := func() int {
		mu.Lock()
		defer mu.Unlock()
		n++
		return n - 1
	}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next()
			if i >= batches {
				b.Error("ran out of batches")
				return
			}
			m, err := MatchClaims(ctx, s, Claim{Source: SourceCallback, DeliveryID: fmt.Sprintf("cb-%d", i), Results: results[i]})
			if err != nil || len(m.Claims) != 1 || !m.Claims[0].Completed {
				b.Errorf("callback %d: %+v, %v", i, m, err)
				return
			}
		}
	})
}
