// Package outbound builds the transport of the plugin's own outbound
// connections.
package outbound

import (
	"net"
	"net/http"
	"time"
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
