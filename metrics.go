package caddyatlas

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-atlas/caddy-atlas/internal/metricsreg"
)

// outboundMetrics are the outbound API routes' collectors. They are
// created once per process and registered in each config's registry.
type outboundMetrics struct {
	tokenFetches       *prometheus.CounterVec
	tokenFetchDuration prometheus.Histogram
	tokenAge           prometheus.Collector
	replays            prometheus.Counter
	upstreamRequests   *prometheus.CounterVec
	upstreamDuration   *prometheus.HistogramVec
	// routes holds each route's children of the two vectors, looked up
	// once: WithLabelValues hashes its labels on every call. Read-only
	// once built.
	routes map[string]*routeMetrics
}

// routeMetrics are one route's upstream collectors.
type routeMetrics struct {
	duration prometheus.Observer
	requests [len(statusClasses)]prometheus.Counter // by statusClassIndex
}

// statusClasses are the values of the class label.
var statusClasses = [...]string{"error", "1xx", "2xx", "3xx", "4xx", "5xx"}

var (
	outboundMetricsOnce sync.Once
	outboundCollectors  *outboundMetrics

	// liveTokenSources holds the token sources in use, for the token age
	// gauge; keys are *sharedTokenSource.
	liveTokenSources sync.Map
)

const metricsNamespace, metricsSubsystem = metricsreg.Namespace, metricsreg.Subsystem

// provisionOutboundMetrics creates the collectors on first use and
// registers them in registry, tolerating an earlier registration.
func provisionOutboundMetrics(registry *prometheus.Registry) *outboundMetrics {
	outboundMetricsOnce.Do(func() {
		opts := func(name, help string) prometheus.Opts {
			return prometheus.Opts{Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: name, Help: help}
		}
		outboundCollectors = &outboundMetrics{
			tokenFetches: prometheus.NewCounterVec(prometheus.CounterOpts(opts(
				"token_fetches_total", "Calls to Atlas's authtoken endpoint, by outcome (success, credentials_rejected, error).")),
				[]string{"outcome"}),
			tokenFetchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
				Namespace: metricsNamespace, Subsystem: metricsSubsystem,
				Name: "token_fetch_duration_seconds", Help: "Duration of calls to Atlas's authtoken endpoint.",
				Buckets: prometheus.DefBuckets,
			}),
			tokenAge: tokenAgeCollector{desc: prometheus.NewDesc(
				prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "token_age_seconds"),
				"Seconds since the token in use was fetched, by client_id.",
				[]string{"client_id"}, nil)},
			replays: prometheus.NewCounter(prometheus.CounterOpts(opts(
				"token_replays_total", "Requests replayed once with a fresh token after Atlas answered 401."))),
			upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts(opts(
				"upstream_requests_total", "Requests to Atlas by route (extracts, upload) and status class (2xx..5xx, error).")),
				[]string{"route", "class"}),
			upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Namespace: metricsNamespace, Subsystem: metricsSubsystem,
				Name: "upstream_duration_seconds", Help: "Time to Atlas's response headers, by route.",
				Buckets: prometheus.DefBuckets,
			}, []string{"route"}),
		}
		outboundCollectors.routes = map[string]*routeMetrics{}
		for _, route := range []string{routeExtracts, routeUpload} {
			rm := &routeMetrics{duration: outboundCollectors.upstreamDuration.WithLabelValues(route)}
			for i, class := range statusClasses {
				rm.requests[i] = outboundCollectors.upstreamRequests.WithLabelValues(route, class)
			}
			outboundCollectors.routes[route] = rm
		}
	})
	for _, c := range []prometheus.Collector{
		outboundCollectors.tokenFetches, outboundCollectors.tokenFetchDuration, outboundCollectors.tokenAge,
		outboundCollectors.replays, outboundCollectors.upstreamRequests, outboundCollectors.upstreamDuration,
	} {
		metricsreg.Register(registry, c)
	}
	return outboundCollectors
}

// observeUpstream records one upstream exchange of a route.
func (m *outboundMetrics) observeUpstream(route string, status int, took time.Duration) {
	if rm := m.routes[route]; rm != nil {
		rm.requests[statusClassIndex(status)].Inc()
		rm.duration.Observe(took.Seconds())
		return
	}
	m.upstreamRequests.WithLabelValues(route, statusClass(status)).Inc()
	m.upstreamDuration.WithLabelValues(route).Observe(took.Seconds())
}

// statusClass names the class of an HTTP status, or "error" when there
// was no response.
func statusClass(status int) string {
	return statusClasses[statusClassIndex(status)]
}

// statusClassIndex is the index in statusClasses of status's class.
func statusClassIndex(status int) int {
	switch {
	case status >= 500 && status < 600:
		return 5
	case status >= 400:
		return 4
	case status >= 300:
		return 3
	case status >= 200:
		return 2
	case status >= 100:
		return 1
	}
	return 0
}

// tokenAgeCollector reports the age of each live token source's token.
type tokenAgeCollector struct {
	desc *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c tokenAgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c tokenAgeCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	seen := make(map[string]bool)
	liveTokenSources.Range(func(key, _ any) bool {
		s := key.(*sharedTokenSource)
		last := s.lastFetch.Load()
		if last == 0 || seen[s.clientID] {
			return true
		}
		seen[s.clientID] = true
		age := now.Sub(time.Unix(0, last)).Seconds()
		if m, err := prometheus.NewConstMetric(c.desc, prometheus.GaugeValue, age, s.clientID); err == nil {
			ch <- m
		}
		return true
	})
}
