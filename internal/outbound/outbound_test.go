package outbound

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// headerSink records the headers of the requests it answers.
type headerSink struct {
	mu      sync.Mutex
	headers []http.Header
}

func (s *headerSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.headers = append(s.headers, r.Header.Clone())
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// TestTracedChildSpan checks that a request made within a span goes out
// as a child span named after the endpoint, with the W3C traceparent of
// that child, and that no attribute holds the credentials it carried.
func TestTracedChildSpan(t *testing.T) {
	sink := new(headerSink)
	srv := httptest.NewServer(sink)
	defer srv.Close()

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")

	const secret, token = "client-secret-marker", "token-marker"
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/docstream/authtoken?x=1", nil)
	req.Header.Set("Client-Secret", secret)
	req.Header.Set("Token", token)
	resp, err := (&http.Client{Transport: Traced(http.DefaultTransport)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	parent.End()

	var child sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "atlas authtoken" {
			child = s
		}
	}
	if child == nil {
		t.Fatalf("no span named \"atlas authtoken\" among %d", len(rec.Ended()))
	}
	if child.Parent().SpanID() != parent.SpanContext().SpanID() || child.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("the client span is not a child of the request's span")
	}
	want := "00-" + child.SpanContext().TraceID().String() + "-" + child.SpanContext().SpanID().String() + "-01"
	if got := sink.headers[0].Get("Traceparent"); got != want {
		t.Errorf("traceparent %q, want %q (the client span's)", got, want)
	}
	for _, kv := range child.Attributes() {
		if v := kv.Value.String(); strings.Contains(v, secret) || strings.Contains(v, token) {
			t.Errorf("attribute %s holds a credential: %q", kv.Key, v)
		}
	}
}

// TestTracedWithoutSpan checks that a request made outside any span goes
// out untouched: no traceparent.
func TestTracedWithoutSpan(t *testing.T) {
	sink := new(headerSink)
	srv := httptest.NewServer(sink)
	defer srv.Close()
	resp, err := (&http.Client{Transport: Traced(http.DefaultTransport)}).Get(srv.URL + "/v1/docstream/extracts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := sink.headers[0].Get("Traceparent"); got != "" {
		t.Errorf("traceparent %q sent without a span", got)
	}
}
