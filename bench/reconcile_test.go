package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/ledger"
	"github.com/caddy-atlas/caddy-atlas/reconcile"
)

// reconcileNow is the reconciler benchmark's clock at the start.
var reconcileNow = time.Date(2026, 3, 9, 12, 0, 0, 0, time.UTC)

// reconcilePolicy polls a batch a day after its upload: the batches
// that are not due stay so for 288 cycles.
var reconcilePolicy = ledger.Policy{PollAfter: 24 * time.Hour, PollEvery: 5 * time.Minute, GiveUpAfter: 72 * time.Hour}

// reconcileDue batches of every benchmark ledger are due, whatever its
// size, so that a cycle's cost can be compared across sizes.
const reconcileDue = 500

// openBatches builds, in a temporary directory, a ledger of n open
// batches of 4 documents, reconcileDue of them due at reconcileNow
// (without fsync: building it is not what is measured).
func openBatches(b *testing.B, n int) string {
	dir := b.TempDir()
	s, err := ledger.Open(dir, ledger.Options{Policy: reconcilePolicy, Now: func() time.Time { return reconcileNow }, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range n {
		up := reconcileNow.Add(time.Duration(i) * time.Microsecond) // due in a day
		if i%(n/reconcileDue) == 0 {
			up = reconcileNow.Add(-25 * time.Hour).Add(time.Duration(i) * time.Microsecond) // due now
		}
		ds := make([]ledger.Document, 4)
		for j := range ds {
			ds[j] = ledger.Document{ID: fmt.Sprintf("doc-%d-%d", i, j), FileUUID: "0b7e4c36-9c1e-4c3a-9a53-1d2f6e0c7b11"}
		}
		if _, err := s.Create(ctx, &ledger.Batch{ID: fmt.Sprintf("BATCH-%08d-BBRSS-20260309081408", i), ProductType: "LOAN_APP", Uploaded: up, Documents: ds}); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return dir
}

// rssMiB is the process's resident memory (VmRSS), in MiB; 0 where
// /proc is not there.
func rssMiB() float64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkReconcilerPollCycle is one poll cycle of the reconciler over
// a ledger (bbolt, fsynced as in production) holding 10k, then 100k open
// batches, of which 500 are due in each: the due scan (pages of 100),
// then, for each due batch, Get, TakeLease, one extracts page (a fetcher
// answering at once that every document is still pending) and
// ReleaseLease, four at a time. The clock moves on by PollEvery after
// each cycle, so that the same batches are due again. Reported beside
// time and allocations per cycle: CPU time per cycle, the Go heap in use
// and the process's resident memory after the cycles, and how much the
// cycles added to it (bbolt's pages are mapped: those read count in the
// RSS, not the heap; memory freed is given back before each reading),
// and the extracts
// pages fetched, which must be 500 a cycle. The cost of a cycle, and the
// memory, must not grow from 10k to 100k.
//
//	go test -run xxx -bench BenchmarkReconcilerPollCycle -benchtime 20x ./bench/
func BenchmarkReconcilerPollCycle(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("open=%dk", n/1000), func(b *testing.B) {
			dir := openBatches(b, n)
			var now atomic.Int64
			now.Store(reconcileNow.UnixNano())
			clock := func() time.Time { return time.Unix(0, now.Add(1)) } // a nanosecond a reading
			s, err := ledger.Open(dir, ledger.Options{Policy: reconcilePolicy, Now: clock})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var pages atomic.Int64
			fetch := reconcile.FetcherFunc(func(context.Context, string, int) (reconcile.PageResult, error) {
				pages.Add(1)
				data := make([]json.RawMessage, 4)
				for j := range data {
					data[j] = json.RawMessage(`{"document_id":"x"}`)
				}
				return reconcile.PageResult{Data: data, Page: 1, TotalPages: 1, TotalItems: 4}, nil
			})
			r, err := reconcile.New(reconcile.Options{Store: s, Fetcher: fetch,
				Enqueuer: reconcile.EnqueueFunc(func(context.Context, reconcile.Delivery) error { return nil }),
				Rate:     1e9, Now: clock, Tick: time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			debug.FreeOSMemory()
			rss0 := rssMiB()
			cpu0 := cpuTime()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				got, err := r.Scan(ctx)
				if err != nil {
					b.Fatal(err)
				}
				r.Wait()
				if got != reconcileDue {
					b.Fatalf("%d polls, want %d", got, reconcileDue)
				}
				now.Add(int64(reconcilePolicy.PollEvery))
			}
			b.StopTimer()
			if int(pages.Load()) != reconcileDue*b.N {
				b.Fatalf("%d extracts pages fetched, want %d", pages.Load(), reconcileDue*b.N)
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/cycle")
			b.ReportMetric(float64(pages.Load())/float64(b.N), "pages/cycle")
			debug.FreeOSMemory()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
			rss := rssMiB()
			b.ReportMetric(rss, "rss-MiB")
			b.ReportMetric(rss-rss0, "rss-growth-MiB")
		})
	}
}

// cpuTime is the CPU time, user and system, that the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReconcilerIdleScan is a scan that finds nothing due among
// 100k open batches: what the reconciler costs between polls.
//
//	go test -run xxx -bench BenchmarkReconcilerIdleScan -benchmem ./bench/
func BenchmarkReconcilerIdleScan(b *testing.B) {
	dir := openBatches(b, 100_000)
	at := reconcileNow.Add(-2 * time.Hour) // before anything is due
	s, err := ledger.Open(dir, ledger.Options{Policy: reconcilePolicy, Now: func() time.Time { return at }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	r, err := reconcile.New(reconcile.Options{Store: s,
		Fetcher: reconcile.FetcherFunc(func(context.Context, string, int) (reconcile.PageResult, error) {
			return reconcile.PageResult{}, errors.New("polled a batch that is not due")
		}),
		Enqueuer: reconcile.EnqueueFunc(func(context.Context, reconcile.Delivery) error { return nil })})
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
