package spool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// processWrittenBytes returns the bytes this process has passed to
// write(2) and its kin so far (wchar in /proc/self/io): every byte the
// writer and compaction put into segment and temporary files, counted
// whether or not it reaches the disk, plus the little the test itself
// writes (nothing here: no logger).
func processWrittenBytes(b *testing.B) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		b.Skip("no /proc/self/io:", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Skip("no wchar in /proc/self/io")
	return 0
}

// BenchmarkWriteAmplification measures the bytes written to the spool's
// files per byte of callback body accepted, with a standing backlog of
// 10,000 dead letters (4 KiB bodies, dead after one failed attempt) and
// then a steady stream of callbacks (4 KiB) delivered at once, 1,000 a
// second (4 MiB/s, paced) for 6 s,
// with a PurgeDelay of 1 s so that compactions run throughout; the
// measure ends once the bodies of the stream have been purged (two purge
// delays after the last append). Bytes written are the process's wchar
// (all write calls, segment files and compaction files alike); bytes
// accepted are the stream's bodies. The dead letters' own appends are
// not counted.
//
//	go test -run XXX -bench BenchmarkWriteAmplification -benchtime 1x ./spool/
func BenchmarkWriteAmplification(b *testing.B) {
	const (
		deadLetters = 10000
		bodySize    = 4 << 10
		streamFor   = 6 * time.Second
		streamRate  = 1000 // callbacks per second
		appenders   = 8
		purgeDelay  = time.Second
	)
	for range b.N {
		b.StopTimer()
		dir := benchDir(b)
		deliver := func(ctx context.Context, d queue.Delivery) error {
			if strings.HasPrefix(d.ID, "dead-") {
				return errors.New("rejected")
			}
			return nil
		}
		s, err := Open(dir, Options{Deliver: deliver, MaxAttempts: 1, PurgeDelay: purgeDelay,
			SegmentSize: 8 << 20, MaxDiskBytes: 1 << 40, Concurrency: 16})
		if err != nil {
			b.Fatal(err)
		}
		e := testEntry(0, bodySize)
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > deadLetters {
						return
					}
					e := e
					e.ID = fmt.Sprintf("dead-%d", i)
					if _, err := s.Append(context.Background(), e); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		for s.Stats().Dead < deadLetters {
			time.Sleep(10 * time.Millisecond)
		}
		// Let the compactions that the backlog itself causes pass.
		time.Sleep(2 * purgeDelay)

		b.StartTimer()
		written0 := processWrittenBytes(b)
		disk0 := s.Stats().DiskBytes
		var accepted atomic.Int64
		start := time.Now()
		stop := start.Add(streamFor)
		next.Store(0)
		for range appenders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					at := start.Add(time.Duration(i) * time.Second / streamRate)
					if at.After(stop) {
						return
					}
					time.Sleep(time.Until(at))
					e := e
					e.ID = fmt.Sprintf("ok-%d", i)
					if _, err := s.Append(context.Background(), e); err != nil {
						b.Error(err)
						return
					}
					accepted.Add(int64(len(e.Body)))
				}
			}()
		}
		wg.Wait()
		for st := s.Stats(); st.Pending > 0 || st.InFlight > 0; st = s.Stats() {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(2 * purgeDelay)
		written := processWrittenBytes(b) - written0
		b.StopTimer()
		st := s.Stats()
		s.Close(context.Background())

		b.ReportMetric(float64(written)/float64(accepted.Load()), "written/accepted")
		b.ReportMetric(float64(accepted.Load())/float64(1<<20), "MiB-accepted")
		b.ReportMetric(float64(written)/float64(1<<20), "MiB-written")
		b.ReportMetric(float64(disk0)/float64(1<<20), "MiB-disk-before")
		b.ReportMetric(float64(st.DiskBytes)/float64(1<<20), "MiB-disk-after")
		if st.Dead != deadLetters {
			b.Errorf("%d dead letters at the end, want %d", st.Dead, deadLetters)
		}
	}
}
