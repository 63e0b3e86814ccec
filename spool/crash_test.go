package spool

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// crashChildEnv names the spool directory of the child process of
// TestKillDuringAppends.
const crashChildEnv = "SPOOL_CRASH_CHILD_DIR"

// TestKillDuringAppends runs appends (and deliveries, and compactions) in
// a child process, kills it with SIGKILL at a random moment, and checks
// that every callback the child saw acknowledged is in the spool after a
// reopen. Repeated on the same directory, so that each run also recovers
// from the previous kill.
func TestKillDuringAppends(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir, false)
		return
	}
	killRounds(t, "TestKillDuringAppends")
}

// TestKillDuringSegmentCompaction is TestKillDuringAppends with the
// compactions the spool makes by itself, segment by segment (bodies let
// go due to leave the disk at once, small segments), instead of Compact.
func TestKillDuringSegmentCompaction(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir, true)
		return
	}
	killRounds(t, "TestKillDuringSegmentCompaction")
}

// killRounds runs the child of test name four times on one directory,
// killing it each time, and checks that nothing acknowledged is lost.
func killRounds(t *testing.T, name string) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	acked := map[string]bool{}
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, fmt.Sprintf("SPOOL_CRASH_ROUND=%d", round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Kill after a random number of acknowledgements.
		target := 50 + rand.IntN(300)
		n := 0
		timeout := time.After(20 * time.Second)
	read:
		for n < target {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				if id, ok := strings.CutPrefix(l, "ack "); ok {
					acked[id] = true
					n++
				}
			case <-timeout:
				t.Fatal("child too slow")
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for l := range lines { // complete lines written before the kill
			if id, ok := strings.CutPrefix(l, "ack "); ok {
				acked[id] = true
			}
		}
		cmd.Wait()

		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		missing := 0
		for id := range acked {
			if _, ok := s.Get(id); !ok {
				missing++
			}
		}
		st := s.Stats()
		s.Close(context.Background())
		t.Logf("round %d: %d acknowledged so far, %+v", round, len(acked), st)
		if missing > 0 {
			t.Fatalf("round %d: %d acknowledged callbacks lost", round, missing)
		}
	}
}

// crashChild appends callbacks from 8 goroutines, printing "ack <id>"
// for each acknowledged one, while delivering some and compacting (all of
// it, or segment by segment), until it is killed.
func crashChild(dir string, segments bool) {
	round := os.Getenv("SPOOL_CRASH_ROUND")
	purgeDelay, segmentSize := time.Duration(0), int64(256<<10)
	if segments {
		purgeDelay, segmentSize = time.Millisecond, 64<<10
	}
	s, err := Open(dir, Options{
		PurgeDelay: purgeDelay,
		Deliver: func(ctx context.Context, d queue.Delivery) error {
			time.Sleep(time.Millisecond)
			if d.ID[len(d.ID)-1]%2 == 0 {
				return fmt.Errorf("rejected")
			}
			return nil
		},
		BackoffMin: time.Millisecond, BackoffMax: 10 * time.Millisecond, MaxAttempts: 3,
		SegmentSize: segmentSize,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	go func() {
		for {
			time.Sleep(5 * time.Millisecond)
			compact := s.Compact
			if segments {
				compact = func(ctx context.Context) error { return s.compact(ctx, false) }
			}
			if err := compact(context.Background()); err != nil {
				fmt.Fprintln(os.Stderr, "child: compact:", err)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("r%s-w%d-%d", round, w, i)
				e := testEntry(i, 1<<10+rand.IntN(8<<10))
				e.ID = id
				if _, err := s.Append(context.Background(), e); err != nil {
					fmt.Fprintln(os.Stderr, "child: append:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "ack %s\n", id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
