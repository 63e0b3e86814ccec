package spool

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// benchDir returns a directory for a benchmark on the disk under test:
// $SPOOL_BENCH_DIR if set, else the test's temporary directory.
func benchDir(b *testing.B) string {
	if d := os.Getenv("SPOOL_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "spool-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// BenchmarkAppendDurable measures acknowledged appends per second: many
// concurrent appends of 16 KiB bodies, each returning only once fsynced
// (group commit). Compare with BenchmarkFsyncSingleWriter.
func BenchmarkAppendDurable(b *testing.B) {
	obs := &countingObserver{}
	s, err := Open(benchDir(b), Options{Observer: obs, MaxDiskBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	elapsed := appendParallel(b, s, 32)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
	if f := obs.fsyncs.Load(); f > 0 {
		b.ReportMetric(float64(obs.syncedAppend.Load())/float64(f), "appends/fsync")
	}
}

// BenchmarkAppendDurablePipelined is BenchmarkAppendDurable at 8 and 32
// appenders per core, with the writer's fsyncs pipelined (the writer goes
// on writing while an fsync runs) and serial (it waits for each fsync
// before taking the next batch, as it did before), in one run:
//
//	go test -run xxx -bench BenchmarkAppendDurablePipelined -count 4 ./spool/
func BenchmarkAppendDurablePipelined(b *testing.B) {
	for _, par := range []int{8, 32} {
		for _, serial := range []bool{true, false} {
			name := fmt.Sprintf("appenders-%d/pipelined", par*runtimeProcs())
			if serial {
				name = fmt.Sprintf("appenders-%d/serial", par*runtimeProcs())
			}
			b.Run(name, func(b *testing.B) {
				obs := &countingObserver{}
				s, err := Open(benchDir(b), Options{Observer: obs, MaxDiskBytes: 1 << 40})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close(context.Background())
				s.w.serialSync = serial
				elapsed := appendParallel(b, s, par)
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
				if f := obs.fsyncs.Load(); f > 0 {
					b.ReportMetric(float64(obs.syncedAppend.Load())/float64(f), "appends/fsync")
				}
			})
		}
	}
}

// BenchmarkFsyncSingleWriter is the one-fsync-per-request baseline: one
// writer appending 16 KiB and fsyncing per operation, on the same disk.
func BenchmarkFsyncSingleWriter(b *testing.B) {
	f, err := os.Create(filepath.Join(benchDir(b), "baseline"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 16<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "fsyncs/s")
}

// BenchmarkAppendDurableDelivering is BenchmarkAppendDurable in the
// realistic case: the appended callbacks are delivered meanwhile, by
// HTTPDeliverer, to a fast app (httptest), so that appends compete with
// the delivery workers (body reads, state records, the index lock) as
// they do in the callback route. Reports acknowledged appends per
// second, appends per fsync, and deliveries per second.
func BenchmarkAppendDurableDelivering(b *testing.B) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	defer app.Close()
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	defer transport.CloseIdleConnections()
	obs := &timingObserver{}
	s, err := Open(benchDir(b), Options{
		Observer:     obs,
		MaxDiskBytes: 1 << 40,
		Deliver:      (&queue.HTTPDeliverer{URL: app.URL, Client: &http.Client{Transport: transport}}).Deliver,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	elapsed := appendParallel(b, s, 32)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
	if f := obs.fsyncs.Load(); f > 0 {
		b.ReportMetric(float64(obs.syncedAppend.Load())/float64(f), "appends/fsync")
	}
	b.ReportMetric(float64(obs.outcome(queue.OutcomeDelivered))/elapsed.Seconds(), "deliveries/s")
	if f := obs.fsyncs.Load() + obs.lazyFsyncs.Load(); f > 0 {
		b.ReportMetric(float64(obs.fsyncNanos.Load())/float64(f)/1e6, "ms/fsync")
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// timingObserver is a countingObserver that also adds up fsync times.
type timingObserver struct {
	countingObserver
	fsyncNanos atomic.Int64
}

func (o *timingObserver) FsyncDone(d time.Duration, appends int) {
	o.fsyncNanos.Add(int64(d))
	o.countingObserver.FsyncDone(d, appends)
}

// appendParallel appends b.N distinct 16 KiB callbacks to s from par x
// GOMAXPROCS goroutines and returns how long that took.
func appendParallel(b *testing.B, s *FileSpool, par int) time.Duration {
	body := testEntry(0, 16<<10)
	var n atomic.Int64
	b.SetBytes(16 << 10)
	b.SetParallelism(par)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e := body
			e.ID = fmt.Sprintf("bench-%d", n.Add(1))
			if _, err := s.Append(context.Background(), e); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	return elapsed
}

// BenchmarkAppendDurableThink models the callback route in front of the
// spool: 16 appenders that each spend 200 µs of CPU (the request's
// validation) before every append, so that the callers just answered take
// a while to come back. It compares, in one run, the writer as it was
// (serial), fsyncs pipelined without holding (no-hold), and the next fsync
// held for the callers just answered for at most 2 ms (the default) or
// 10 ms:
//
//	SPOOL_BENCH_DIR=bench/.bin go test -run xxx -bench BenchmarkAppendDurableThink -benchtime 2s -count 2 ./spool/
func BenchmarkAppendDurableThink(b *testing.B) {
	for _, v := range []struct {
		name    string
		serial  bool
		holdCap time.Duration
	}{{"serial", true, 0}, {"no-hold", false, -1}, {"hold-2ms", false, 0}, {"hold-10ms", false, 10 * time.Millisecond}} {
		b.Run(v.name, func(b *testing.B) {
			obs := &countingObserver{}
			s, err := Open(benchDir(b), Options{Observer: obs, MaxDiskBytes: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			s.w.serialSync, s.w.holdCap = v.serial, v.holdCap
			body := testEntry(0, 16<<10)
			var n atomic.Int64
			b.SetBytes(16 << 10)
			b.SetParallelism(8)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					for spin := time.Now(); time.Since(spin) < 200*time.Microsecond; {
					}
					e := body
					e.ID = fmt.Sprintf("bench-%d", n.Add(1))
					if _, err := s.Append(context.Background(), e); err != nil {
						b.Error(err)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
			if f := obs.fsyncs.Load(); f > 0 {
				b.ReportMetric(float64(obs.syncedAppend.Load())/float64(f), "appends/fsync")
			}
		})
	}
}
