package ledger

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
)

// benchNATSEnv names a nats-server for the JetStream benchmarks (e.g.
// nats://127.0.0.1:4222, a server started with -js): the heap measured
// is then the client's alone. Without it, a server runs in the test
// process, and the heap figures include the server's.
const benchNATSEnv = "LEDGER_BENCH_NATS_URL"

var (
	benchJSOnce sync.Once
	benchJSURL  string
)

// benchJS returns a JetStream context on the benchmarks' server, and
// whether that server runs in this process.
func benchJS(b *testing.B) (jetstream.JetStream, bool) {
	inProcess := false
	benchJSOnce.Do(func() {
		if benchJSURL = os.Getenv(benchNATSEnv); benchJSURL == "" {
			benchJSURL = natstest.Start(&benchTB{B: b}).URL()
		}
	})
	if os.Getenv(benchNATSEnv) == "" {
		inProcess = true
	}
	nc, err := nats.Connect(benchJSURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	return js, inProcess
}

// benchTB keeps the in-process server of the benchmarks for the whole
// run: its clean-ups (stop, remove the store) run at the end of the
// process, not of the first benchmark.
type benchTB struct {
	*testing.B
}

func (t *benchTB) Cleanup(func()) {}

func (t *benchTB) TempDir() string {
	d, err := os.MkdirTemp("", "ledger-bench-nats-")
	if err != nil {
		t.Fatal(err)
	}
	benchMu.Lock()
	benchDirs[-len(benchDirs)-1] = d // removed by TestMain
	benchMu.Unlock()
	return d
}

// benchJetStream opens the bucket of n open batches of 4 documents,
// benchDue of them due at benchNow (as benchLedger), building it if it is
// not there yet.
func benchJetStream(b *testing.B, js jetstream.JetStream, n int) *JetStreamStore {
	ctx := context.Background()
	s, err := OpenJetStream(ctx, js, JetStreamOptions{Policy: benchPolicy, Now: func() time.Time { return benchNow }, Bucket: fmt.Sprintf("BENCH%d", n), Replicas: 1})
	if err != nil {
		b.Fatal(err)
	}
	id := func(i int) string { return fmt.Sprintf("BATCH-%08d-BBRSS-20260309081408", i) }
	if _, err := s.Get(ctx, id(n-1)); err == nil {
		return s
	} else if !errors.Is(err, ErrNotFound) {
		b.Fatal(err)
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				up := benchNow.Add(-30 * time.Minute).Add(time.Duration(i) * time.Microsecond)
				if i%(n/benchDue) == 0 {
					up = benchNow.Add(-2 * time.Hour).Add(time.Duration(i) * time.Microsecond)
				}
				ds := make([]Document, 4)
				for j := range ds {
					ds[j] = Document{ID: fmt.Sprintf("doc-%d-%d", i, j), FileUUID: "0b7e4c36-9c1e-4c3a-9a53-1d2f6e0c7b11"}
				}
				if _, err := s.Create(ctx, &Batch{ID: id(i), ProductType: "LOAN_APP", Uploaded: up, Documents: ds}); err != nil && !errors.Is(err, ErrExists) {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.Logf("built %d batches in %v", n, time.Since(start).Round(time.Second))
	return s
}

// BenchmarkDueScanJetStream is BenchmarkDueScan against the JetStream
// store: the due batches, read 100 a page, among 10k and 100k open
// batches of which 500 are due. The time, allocations and bytes of a
// cycle must not grow with the batches kept, nor the heap after it
// ("heap-MiB"; the client's alone with LEDGER_BENCH_NATS_URL set, else
// the in-process server's included).
//
//	go test -run xxx -bench BenchmarkDueScanJetStream -benchmem -timeout 30m ./ledger/
func BenchmarkDueScanJetStream(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("batches=%d", n), func(b *testing.B) {
			js, _ := benchJS(b)
			s := benchJetStream(b, js, n)
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
