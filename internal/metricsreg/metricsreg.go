// Package metricsreg holds the namespace of the plugin's metrics and
// registers collectors the way every route does.
package metricsreg

import "github.com/prometheus/client_golang/prometheus"

// Namespace and Subsystem of every metric of the plugin: caddy_atlas_*.
const Namespace, Subsystem = "caddy", "atlas"

// Register registers c in registry, if there is one, tolerating an
// earlier registration.
func Register(registry *prometheus.Registry, c prometheus.Collector) {
	if registry == nil {
		return
	}
	// An AlreadyRegisteredError is expected (reloads, several handlers).
	// Any other error would be a mistake in the collectors' definitions,
	// which are fixed at compile time; metrics never stop the server.
	_ = registry.Register(c)
}
