package callback

import (
	"context"
	"net/http"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// tracerName names the plugin's tracer.
const tracerName = "github.com/caddy-atlas/caddy-atlas/callback"

// traceContext is the propagator of the trace context a durable callback
// is stored with: W3C traceparent and tracestate.
var traceContext propagation.TraceContext

// deliveryTracerProvider is the tracer provider of the latest traced
// callback stored in durable mode: Caddy's `tracing` directive keeps one
// provider per process, which deliveries, made outside any request, can
// only learn from the spans of traced requests.
var deliveryTracerProvider atomic.Pointer[tracerProviderBox]

type tracerProviderBox struct{ trace.TracerProvider }

// TracerProvider returns the tracer provider that deliveries, and the
// reconciler's polls, are recorded with: that of Caddy's `tracing`,
// learnt from the latest traced callback this process stored, else
// otel's global one (which records nothing unless set).
func TracerProvider() trace.TracerProvider {
	if b := deliveryTracerProvider.Load(); b != nil {
		return b.TracerProvider
	}
	return otel.GetTracerProvider()
}

// storeTraceContext adds the trace context of the span in ctx, if any, to
// the headers a durable callback is stored with, so that its deliveries,
// however much later and from whichever instance, continue that trace.
func storeTraceContext(ctx context.Context, hdr http.Header) {
	span := trace.SpanFromContext(ctx)
	if !span.SpanContext().IsValid() {
		return
	}
	if span.IsRecording() {
		deliveryTracerProvider.Store(&tracerProviderBox{span.TracerProvider()})
	}
	traceContext.Inject(ctx, propagation.HeaderCarrier(hdr))
}

// traceDeliveries wraps deliver so that each attempt to deliver a callback
// stored with a trace context is a span of that trace, a child of the
// span the callback arrived in and linked to it, whose context the
// delivery request carries (its transport injects it: outbound.Traced).
// The span's attributes are the callback id and the attempt number, never
// anything of the body.
func traceDeliveries(deliver queue.DeliverFunc) queue.DeliverFunc {
	return func(ctx context.Context, d queue.Delivery) error {
		stored := trace.SpanContextFromContext(traceContext.Extract(ctx, propagation.HeaderCarrier(d.Header)))
		if !stored.IsValid() {
			return deliver(ctx, d)
		}
		ctx, span := TracerProvider().Tracer(tracerName).Start(trace.ContextWithRemoteSpanContext(ctx, stored),
			"atlas callback delivery",
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithLinks(trace.Link{SpanContext: stored}),
			trace.WithAttributes(
				attribute.String("atlas.callback.id", d.ID),
				attribute.Int("atlas.callback.attempt", d.Attempt),
			))
		defer span.End()
		err := deliver(ctx, d)
		if err != nil {
			// The error may name the deliver_to URL; the status says
			// only that the attempt failed.
			span.SetStatus(codes.Error, "delivery attempt failed")
		}
		return err
	}
}
