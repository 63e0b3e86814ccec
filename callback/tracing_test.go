package callback

import (
	"context"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/caddy-atlas/caddy-atlas/callback/callbacktest"
	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// TestDurableDeliveryContinuesTrace checks that a callback spooled within
// a trace is delivered in a span of that trace, a child of the request's
// span and linked to it, whose traceparent the app receives, and that no
// span attribute holds the token or a value of the payload.
func TestDurableDeliveryContinuesTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	rc := callbacktest.NewReceiver(t)
	c, _ := durableTestCallback(t, rc, nil)
	tok := callbackAuthToken(t, c)
	body := payloadtest.Sample(2)
	id := ID(body)

	req := callbackTestRequest(c.Path, tok, body)
	ctx, reqSpan := tp.Tracer("test").Start(req.Context(), "callback request")
	if rec, _ := serveTestCallback(t, c, req.WithContext(ctx)); rec.Code != 202 {
		t.Fatalf("status %d %s", rec.Code, rec.Body)
	}
	reqSpan.End()
	rc.WaitDelivered(t, 1, 5*time.Second)

	var delivery sdktrace.ReadOnlySpan
	testutil.WaitFor(t, 5*time.Second, "the delivery span", func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == "atlas callback delivery" {
				delivery = s
				return true
			}
		}
		return false
	})
	want := reqSpan.SpanContext()
	if delivery.SpanContext().TraceID() != want.TraceID() || delivery.Parent().SpanID() != want.SpanID() {
		t.Errorf("the delivery span is not a child of the request's span")
	}
	if links := delivery.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != want.SpanID() {
		t.Errorf("the delivery span links %v, want the request's span", links)
	}
	// The app sees the trace: a traceparent of this trace, from a span of
	// the delivery (the client span under it), not the request's own.
	tp0 := rc.Header(id).Get("Traceparent")
	if !strings.HasPrefix(tp0, "00-"+want.TraceID().String()+"-") || strings.Contains(tp0, want.SpanID().String()) {
		t.Errorf("the app got traceparent %q, want one of trace %s under the delivery", tp0, want.TraceID())
	}
	for _, s := range rec.Ended() {
		for _, kv := range s.Attributes() {
			v := kv.Value.String()
			for _, secret := range []string{tok, "ABCDE1234F", "RAVI KUMAR", testHMACSecret} {
				if strings.Contains(v, secret) {
					t.Errorf("span %q attribute %s holds %q", s.Name(), kv.Key, secret)
				}
			}
		}
	}
}

// TestDurableDeliveryWithoutTrace checks that a callback spooled outside
// any trace is delivered without a traceparent.
func TestDurableDeliveryWithoutTrace(t *testing.T) {
	rc := callbacktest.NewReceiver(t)
	c, _ := durableTestCallback(t, rc, nil)
	body := payloadtest.Sample(1)
	if rec, _ := serveTestCallback(t, c, callbackTestRequest(c.Path, callbackAuthToken(t, c), body)); rec.Code != 202 {
		t.Fatalf("status %d %s", rec.Code, rec.Body)
	}
	rc.WaitDelivered(t, 1, 5*time.Second)
	if got := rc.Header(ID(body)).Get("Traceparent"); got != "" {
		t.Errorf("traceparent %q without a trace", got)
	}
}
