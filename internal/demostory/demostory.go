// Package demostory prints the demo's story: what the Atlas simulator
// (standing in for Atlas) and the stand-in app see, one plain line each,
// on standard output, while Caddy's own logs go to files
// (scripts/run.sh, example.Caddyfile).
//
// It also keeps the demo's record of the batches uploaded, as a real app
// keeps the batch ids its uploads returned: the simulator writes it, the
// stand-in app reads it to name the batch a callback completes.
//
// FOR DEMOS ONLY: used by the simulator and demoapp modules, which are
// built into cmd/caddy, not into a production Caddy.
package demostory

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
)

// Output is where the lines go: standard output, or nil for
// os.Stdout. Tests may replace it.
var Output io.Writer

var out sync.Mutex

// Printf prints one line, format and args as fmt.Sprintf's, with a
// newline added.
func Printf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	out.Lock()
	defer out.Unlock()
	w := Output
	if w == nil {
		w = os.Stdout
	}
	_, _ = io.WriteString(w, strings.TrimRight(line, "\n")+"\n")
}

// Short is the first 8 characters of a long id, with an ellipsis.
func Short(id string) string {
	if len(id) <= 12 {
		return id
	}
	return id[:8] + "…"
}

// List is ids joined with ", ", the first few of them when there are
// many.
func List(ids []string) string {
	const most = 5
	if len(ids) > most {
		return strings.Join(ids[:most], ", ") + fmt.Sprintf(", and %d more", len(ids)-most)
	}
	return strings.Join(ids, ", ")
}

// keepBatches bounds the record of uploaded batches.
const keepBatches = 1000

var ledger struct {
	mu      sync.Mutex
	batches []batch // oldest first
}

type batch struct {
	id   string
	docs []string
}

// Uploaded records that batch id holds the documents docs.
func Uploaded(id string, docs []string) {
	ledger.mu.Lock()
	defer ledger.mu.Unlock()
	ledger.batches = append(ledger.batches, batch{id: id, docs: slices.Clone(docs)})
	if len(ledger.batches) > keepBatches {
		ledger.batches = slices.Delete(ledger.batches, 0, len(ledger.batches)-keepBatches)
	}
}

// BatchOf returns the batch most recently uploaded that holds every
// document of docs, and how many documents it holds; ok is false when
// no recorded batch does (an upload to another Atlas, or before a
// restart).
func BatchOf(docs []string) (id string, total int, ok bool) {
	if len(docs) == 0 {
		return "", 0, false
	}
	ledger.mu.Lock()
	defer ledger.mu.Unlock()
	for i := len(ledger.batches) - 1; i >= 0; i-- {
		b := ledger.batches[i]
		if containsAll(b.docs, docs) {
			return b.id, len(b.docs), true
		}
	}
	return "", 0, false
}

func containsAll(set, docs []string) bool {
	for _, d := range docs {
		if !slices.Contains(set, d) {
			return false
		}
	}
	return true
}
