package ledger

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
)

// crashChildEnv names the ledger directory of the child process of
// TestKillAfterCreate.
const crashChildEnv = "LEDGER_CRASH_CHILD_DIR"

// TestKillAfterCreate records batches and claims their documents in a
// child process, kills it with SIGKILL at a random moment, and checks
// that every batch whose Create returned, and every claim that returned,
// is there after a reopen. Repeated on the same file, so that each round
// also opens what the previous kill left.
func TestKillAfterCreate(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	created := map[string]bool{}
	claimed := map[string]bool{}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillAfterCreate$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, fmt.Sprintf("LEDGER_CRASH_ROUND=%d", round))
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
		record := func(l string) {
			if id, ok := strings.CutPrefix(l, "created "); ok {
				created[id] = true
			} else if id, ok := strings.CutPrefix(l, "claimed "); ok {
				claimed[id] = true
			}
		}
		target := 20 + rand.IntN(200)
		n := 0
		timeout := time.After(30 * time.Second)
	read:
		for n < target {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				record(l)
				n++
			case <-timeout:
				t.Fatal("child too slow")
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for l := range lines {
			record(l)
		}
		cmd.Wait()

		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		for id := range created {
			b, err := s.Get(context.Background(), id)
			if err != nil {
				t.Fatalf("round %d: batch %s, acknowledged, lost: %v", round, id, err)
			}
			if claimed[id] && b.Documents[0].DeliveryID != "cb-"+id {
				t.Fatalf("round %d: claim of %s, acknowledged, lost", round, id)
			}
		}
		st, _ := s.Stats(context.Background())
		s.Close()
		t.Logf("round %d: %d batches, %d claims acknowledged so far; %+v", round, len(created), len(claimed), st)
	}
}

// crashChild creates batches and claims their first document from 4
// goroutines, printing "created <id>" and "claimed <id>" once each call
// returned, until it is killed.
func crashChild(dir string) {
	round := os.Getenv("LEDGER_CRASH_ROUND")
	s, err := Open(dir, Options{LockTimeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(f string, a ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, f, a...)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			ctx := context.Background()
			for i := 0; ; i++ {
				id := fmt.Sprintf("BATCH-r%s-w%d-%d", round, w, i)
				if _, err := s.Create(ctx, &Batch{ID: id, Documents: []Document{{ID: "a"}, {ID: fmt.Sprintf("doc-%d", i)}}}); err != nil {
					fmt.Fprintln(os.Stderr, "child: create:", err)
					os.Exit(2)
				}
				say("created %s\n", id)
				if _, err := s.Claim(ctx, id, Claim{Source: SourceCallback, DeliveryID: "cb-" + id, Results: []Result{{DocumentID: "a"}}}); err != nil {
					fmt.Fprintln(os.Stderr, "child: claim:", err)
					os.Exit(2)
				}
				say("claimed %s\n", id)
			}
		})
	}
	wg.Wait()
}
