package callback

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// callbackMetrics are the collectors of the callback route:
//
//	caddy_atlas_callback_tokens_issued_total          tokens issued at auth_path
//	caddy_atlas_callback_auth_failures_total{reason}  refused auth requests: invalid_credentials, throttled
//	caddy_atlas_callbacks_total{outcome}              callbacks: accepted, unauthorized, invalid, too_large,
//	                                                  and in durable mode duplicate, unavailable (answered 503)
//	caddy_atlas_callback_payload_bytes                sizes of the authenticated callback bodies read
//	caddy_atlas_callback_verify_seconds               time to verify a callback's token
//	caddy_atlas_callback_jwks_fetches_total{result}   JWKS fetches: ok, error
//	caddy_atlas_batch_late_duplicates_total           documents of known batches a callback brought again, acknowledged, not delivered
//	caddy_atlas_batch_unmatched_documents_total       documents of callbacks that the ledger of batches does not know
//
// With a ledger, the route also feeds the collectors of package
// internal/batchmetrics (documents received by source, upload to
// complete).
// A 415 counts as invalid. They are created once for the process and
// registered in each config's registry.
type callbackMetrics struct {
	tokensIssued  prometheus.Counter
	authFailures  *prometheus.CounterVec
	callbacks     *prometheus.CounterVec
	payloadBytes  prometheus.Histogram
	verifySeconds prometheus.Histogram
	jwksFetches   *prometheus.CounterVec
	// With the ledger of batches.
	lateDuplicates prometheus.Counter
	unmatched      prometheus.Counter
}

var (
	callbackMetricsOnce sync.Once
	callbackCollectors  *callbackMetrics
)

// registerCallbackMetrics creates the collectors on first use and
// registers them in registry; a collector already registered there is
// fine.
func registerCallbackMetrics(registry *prometheus.Registry) (*callbackMetrics, error) {
	callbackMetricsOnce.Do(func() {
		const ns, sub = "caddy", "atlas"
		callbackCollectors = &callbackMetrics{
			tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: "callback_tokens_issued_total",
				Help: "Tokens issued to Atlas at the callback auth_path.",
			}),
			authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: "callback_auth_failures_total",
				Help: "Requests refused at the callback auth_path, by reason.",
			}, []string{"reason"}),
			callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: "callbacks_total",
				Help: "Callbacks received, by outcome.",
			}, []string{"outcome"}),
			payloadBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
				Namespace: ns, Subsystem: sub, Name: "callback_payload_bytes",
				Help:    "Sizes of the authenticated callback bodies read.",
				Buckets: prometheus.ExponentialBuckets(1<<10, 4, 10), // 1 KiB .. 256 MiB
			}),
			verifySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
				Namespace: ns, Subsystem: sub, Name: "callback_verify_seconds",
				Help:    "Time to verify a callback's token.",
				Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
			}),
			jwksFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: "callback_jwks_fetches_total",
				Help: "Fetches of the callback jwks_url, by result.",
			}, []string{"result"}),
			lateDuplicates: prometheus.NewCounter(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: "batch_late_duplicates_total",
				Help: "Documents of known batches that a callback brought again after another delivery took them: acknowledged, not delivered.",
			}),
			unmatched: prometheus.NewCounter(prometheus.CounterOpts{
				Namespace: ns, Subsystem: sub, Name: "batch_unmatched_documents_total",
				Help: "Documents of callbacks that the ledger of batches does not know (uploaded around the gateway, or before the ledger): delivered as before.",
			}),
		}
	})
	m := callbackCollectors
	if registry == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.tokensIssued, m.authFailures, m.callbacks, m.payloadBytes, m.verifySeconds, m.jwksFetches} {
		if err := registry.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return nil, err
		}
	}
	return m, nil
}
