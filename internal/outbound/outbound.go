// Package outbound builds the transport of the plugin's own outbound
// connections.
package outbound

import (
	"net"
	"net/http"
	"path"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// NewTransport returns the transport of the plugin's own outbound
// connections (to Atlas, and from a durable queue to the app): pooled
// keep-alive connections with bounded dial and TLS handshake times.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
}

// Traced returns a transport that sends a request whose context holds a
// trace span (Caddy's `tracing` directive puts one there) through an
// OpenTelemetry client span, a child of that span, named "atlas " and the
// last element of the URL path (e.g. "atlas authtoken"), with the W3C
// traceparent header injected. A request without a span goes to base
// untouched, at no cost. The span records the method, URL, and status,
// as otelhttp does: no header, so neither a token nor a credential.
func Traced(base http.RoundTripper) http.RoundTripper {
	return &tracedTransport{
		base: base,
		traced: otelhttp.NewTransport(base,
			otelhttp.WithPropagators(propagation.TraceContext{}),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
				return "atlas " + path.Base(r.URL.Path)
			}),
		),
	}
}

type tracedTransport struct {
	base, traced http.RoundTripper
}

func (t *tracedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if trace.SpanContextFromContext(r.Context()).IsValid() {
		return t.traced.RoundTrip(r)
	}
	return t.base.RoundTrip(r)
}
