package callback

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/internal/batchmetrics"
	"github.com/caddy-atlas/caddy-atlas/ledger"
)

// batchCallback is a callback body with the given documents, each with
// fields.
func batchCallback(ids ...string) []byte {
	var els []string
	for _, id := range ids {
		els = append(els, fmt.Sprintf(`{"document_id": %q, "file_data": {"document_type": "PAN", "name": {"value": "A %s", "confidence_score": 0.9}}}`, id, id))
	}
	return []byte(`{"data": [` + strings.Join(els, ", ") + `], "page": 1, "per_page": 50, "total_pages": 1, "total_items": ` + fmt.Sprint(len(ids)) + `}`)
}

// TestDurableBatches checks the durable route with a ledger of batches:
// a callback's documents are claimed in their batches and delivered once
// per batch, named; a later callback that brings them again is
// acknowledged and not delivered; documents the ledger does not know are
// delivered as before; a callback that mixes new and delivered documents
// delivers only the new ones.
func TestDurableBatches(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	store, err := ledger.Open(t.TempDir(), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	for _, b := range []*ledger.Batch{
		{ID: "BATCH-A", Documents: []ledger.Document{{ID: "a1"}, {ID: "a2"}}},
		{ID: "BATCH-B", Documents: []ledger.Document{{ID: "b1"}, {ID: "b2"}}},
	} {
		if _, err := store.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := durableTestCallback(t, rc, func(c *Callback) {
		c.UseLedger(func() ledger.Store { return store })
	})
	reg := prometheus.NewRegistry()
	batchmetrics.Register(reg)
	received0, completed0 := gatherValue(t, reg, "caddy_atlas_batch_documents_received_total", "callback"),
		gatherValue(t, reg, "caddy_atlas_batch_upload_to_complete_seconds", "")

	// a1 and b1 (two batches) and an unknown document: three deliveries.
	first := batchCallback("a1", "b1", "x1")
	if ack := decodeAck(t, serveTestCallbackRec(t, c, first)); ack.Duplicate || ack.CallbackID != ID(first) {
		t.Fatalf("first callback: %+v", ack)
	}
	rc.WaitDelivered(t, 3, 5*time.Second)
	// The same documents again, in another callback: nothing delivered;
	// the unknown one's part is a duplicate of the first's, by its body.
	if ack := decodeAck(t, serveTestCallbackRec(t, c, batchCallback("b1", "a1", "x1"))); !ack.Duplicate {
		t.Errorf("a callback with nothing new: %+v, want a duplicate", ack)
	}
	// A mix: a2 new, a1 delivered already.
	decodeAck(t, serveTestCallbackRec(t, c, batchCallback("a1", "a2")))
	rc.WaitDelivered(t, 4, 5*time.Second)
	time.Sleep(200 * time.Millisecond)

	docs := map[string]int{}
	batches := map[string]string{}
	for _, id := range rc.Delivered() {
		var body struct {
			Data []struct {
				DocumentID string `json:"document_id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(rc.Body(id), &body); err != nil {
			t.Fatalf("delivery %s: %v", id, err)
		}
		h := rc.Header(id)
		for _, d := range body.Data {
			docs[d.DocumentID]++
			batches[d.DocumentID] = h.Get("X-Atlas-Batch-Id") + "/" + h.Get("X-Atlas-Result-Source")
		}
		if n := h.Get("X-Atlas-Document-Count"); n != fmt.Sprint(len(body.Data)) {
			t.Errorf("delivery %s: X-Atlas-Document-Count %s for %d documents", id, n, len(body.Data))
		}
	}
	for _, id := range []string{"a1", "a2", "b1", "x1"} {
		if docs[id] != 1 {
			t.Errorf("document %s delivered %d times, want once", id, docs[id])
		}
	}
	if batches["a1"] != "BATCH-A/callback" || batches["a2"] != "BATCH-A/callback" || batches["b1"] != "BATCH-B/callback" || batches["x1"] != "/" {
		t.Errorf("batches named: %v", batches)
	}
	b, err := store.Get(ctx, "BATCH-A")
	if err != nil || b.State != ledger.StateComplete {
		t.Errorf("batch A after its documents: %+v %v", b, err)
	}
	// a1, b1, a2 received by callback; batch A completed.
	if n := gatherValue(t, reg, "caddy_atlas_batch_documents_received_total", "callback") - received0; n != 3 {
		t.Errorf("documents received by callback: %v, want 3", n)
	}
	if n := gatherValue(t, reg, "caddy_atlas_batch_upload_to_complete_seconds", "") - completed0; n != 1 {
		t.Errorf("batches completed: %v, want 1", n)
	}
}

// gatherValue returns the value of the counter name{source=source} in
// reg, or the sample count of the histogram name.
func gatherValue(t *testing.T, reg *prometheus.Registry, name, source string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == source {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{source=%q} in the registry", name, source)
	return 0
}

// TestEnqueuePolled checks that polled results go through the route's
// queue and delivery, named as polled.
func TestEnqueuePolled(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	c, _ := durableTestCallback(t, rc, nil)
	if err := c.EnqueuePolled(context.Background(), "poll-1", "BATCH-P", 1, batchCallback("p1")); err != nil {
		t.Fatal(err)
	}
	rc.WaitDelivered(t, 1, 5*time.Second)
	h := rc.Header("poll-1")
	if h.Get("X-Atlas-Batch-Id") != "BATCH-P" || h.Get("X-Atlas-Result-Source") != "poll" || h.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", h)
	}
	if got := rc.Header("poll-1").Get("X-Atlas-Callback-Id"); got != "poll-1" {
		t.Errorf("callback id %q", got)
	}
	if tp := h.Get("Traceparent"); tp != "" {
		t.Errorf("a poll outside a trace delivered with traceparent %q", tp)
	}

	// Within a poll's span: the delivery carries the poll's trace.
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "atlas batch poll")
	if err := c.EnqueuePolled(ctx, "poll-2", "BATCH-P", 1, batchCallback("p2")); err != nil {
		t.Fatal(err)
	}
	span.End()
	rc.WaitDelivered(t, 2, 5*time.Second)
	if got := rc.Header("poll-2").Get("Traceparent"); !strings.HasPrefix(got, "00-"+span.SpanContext().TraceID().String()+"-") {
		t.Errorf("the polled delivery's traceparent %q, want one of the poll's trace %s", got, span.SpanContext().TraceID())
	}
	_ = http.StatusOK
}

// TestDurableBatchesQueueRefuses: a callback whose delivery the queue
// does not take is refused 503, and its claims are released: the
// documents are pending again, for Atlas's retry or a poll.
func TestDurableBatchesQueueRefuses(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	store, err := ledger.Open(t.TempDir(), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	if _, err := store.Create(ctx, &ledger.Batch{ID: "BATCH-F", Documents: []ledger.Document{{ID: "f1"}}}); err != nil {
		t.Fatal(err)
	}
	c, _ := durableTestCallback(t, rc, func(c *Callback) {
		c.MaxSpoolSize = 1 // every append refused: the spool is full
		c.UseLedger(func() ledger.Store { return store })
	})
	rec := serveTestCallbackRec(t, c, batchCallback("f1"))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	b, err := store.Get(ctx, "BATCH-F")
	if err != nil || b.Documents[0].State != ledger.DocPending || b.State != ledger.StateProcessing {
		t.Errorf("after the refusal: %+v %v", b, err)
	}
}
