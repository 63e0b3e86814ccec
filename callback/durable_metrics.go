package callback

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-atlas/caddy-atlas/internal/metricsreg"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/spool"
)

// spoolMetrics are the collectors of the callback route's durable mode:
//
//	caddy_atlas_spool_callbacks{spool,state}            callbacks in each spool: pending, dead, delivered (within retention)
//	caddy_atlas_spool_oldest_pending_age_seconds{spool} age of the oldest pending callback (0 if none): the delivery lag
//	caddy_atlas_spool_disk_bytes{spool}                 size of the spool's log on disk
//	caddy_atlas_spool_max_bytes{spool}                  the spool's max_spool_size: beyond it, Atlas gets 503
//	caddy_atlas_spool_callbacks_by_key{spool,key_id}    pending and dead callbacks by encryption key id ("plaintext": unencrypted)
//	caddy_atlas_delivery_attempts_total{outcome}        delivery attempts: delivered, failed, timeout, canceled
//	caddy_atlas_delivery_duration_seconds               duration of delivery attempts
//	caddy_atlas_dead_letters_total                      callbacks that ran out of attempts
//	caddy_atlas_dead_letters_expired_total              dead letters purged at the end of dead_letter_retention
//	caddy_atlas_spool_fsync_seconds                     latency of the spool's fsyncs
//	caddy_atlas_spool_commit_batch_size                 callbacks made durable by one fsync (group commit)
//
// They are created once for the process and registered in each config's
// registry; the gauges read the live spools when scraped.
type spoolMetrics struct {
	gauges           spoolGaugeCollector
	deliveryAttempts *prometheus.CounterVec
	deliveryDuration prometheus.Histogram
	deadLetters      prometheus.Counter
	deadExpired      prometheus.Counter
	fsyncSeconds     prometheus.Histogram
	commitBatch      prometheus.Histogram
}

var (
	spoolMetricsOnce sync.Once
	spoolCollectors  *spoolMetrics
)

// registerSpoolMetrics creates the collectors on first use and registers
// them in registry (when not nil), tolerating an earlier registration.
func registerSpoolMetrics(registry *prometheus.Registry) *spoolMetrics {
	spoolMetricsOnce.Do(func() {
		name := func(n string) string { return prometheus.BuildFQName(metricsreg.Namespace, metricsreg.Subsystem, n) }
		spoolCollectors = &spoolMetrics{
			gauges: spoolGaugeCollector{
				callbacks: prometheus.NewDesc(name("spool_callbacks"),
					"Callbacks in the spool, by state (pending, dead, delivered within the retention window).",
					[]string{"spool", "state"}, nil),
				oldestAge: prometheus.NewDesc(name("spool_oldest_pending_age_seconds"),
					"Age of the oldest pending callback in the spool, 0 if there is none.",
					[]string{"spool"}, nil),
				diskBytes: prometheus.NewDesc(name("spool_disk_bytes"),
					"Size of the spool's log on disk.", []string{"spool"}, nil),
				maxBytes: prometheus.NewDesc(name("spool_max_bytes"),
					"The spool's max_spool_size: beyond it callbacks are refused with 503.", []string{"spool"}, nil),
				byKey: prometheus.NewDesc(name("spool_callbacks_by_key"),
					"Pending and dead callbacks in the spool by the id of the key that encrypts them (plaintext: unencrypted).",
					[]string{"spool", "key_id"}, nil),
			},
			deliveryAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
				Namespace: metricsreg.Namespace, Subsystem: metricsreg.Subsystem, Name: "delivery_attempts_total",
				Help: "Delivery attempts of spooled callbacks, by outcome (delivered, failed, timeout, canceled).",
			}, []string{"outcome"}),
			deliveryDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
				Namespace: metricsreg.Namespace, Subsystem: metricsreg.Subsystem, Name: "delivery_duration_seconds",
				Help:    "Duration of the delivery attempts of spooled callbacks.",
				Buckets: prometheus.DefBuckets,
			}),
			deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
				Namespace: metricsreg.Namespace, Subsystem: metricsreg.Subsystem, Name: "dead_letters_total",
				Help: "Spooled callbacks that ran out of delivery attempts.",
			}),
			deadExpired: prometheus.NewCounter(prometheus.CounterOpts{
				Namespace: metricsreg.Namespace, Subsystem: metricsreg.Subsystem, Name: "dead_letters_expired_total",
				Help: "Dead letters purged, body included, at the end of the dead letter retention.",
			}),
			fsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
				Namespace: metricsreg.Namespace, Subsystem: metricsreg.Subsystem, Name: "spool_fsync_seconds",
				Help:    "Latency of the spool's fsyncs.",
				Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
			}),
			commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
				Namespace: metricsreg.Namespace, Subsystem: metricsreg.Subsystem, Name: "spool_commit_batch_size",
				Help:    "Callbacks made durable by one fsync of the spool (group commit).",
				Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
			}),
		}
	})
	m := spoolCollectors
	for _, c := range []prometheus.Collector{m.gauges, m.deliveryAttempts, m.deliveryDuration, m.deadLetters, m.deadExpired, m.fsyncSeconds, m.commitBatch} {
		metricsreg.Register(registry, c)
	}
	return m
}

// spoolObserver feeds the spools' events into the metrics.
type spoolObserver struct {
	m *spoolMetrics
}

// FsyncDone implements queue.Observer.
func (o spoolObserver) FsyncDone(d time.Duration, appends int) {
	o.m.fsyncSeconds.Observe(d.Seconds())
	if appends > 0 {
		o.m.commitBatch.Observe(float64(appends))
	}
}

// DeliveryAttempt implements queue.Observer.
func (o spoolObserver) DeliveryAttempt(outcome queue.Outcome, d time.Duration) {
	o.m.deliveryAttempts.WithLabelValues(string(outcome)).Inc()
	o.m.deliveryDuration.Observe(d.Seconds())
}

// DeadLettered implements queue.Observer.
func (o spoolObserver) DeadLettered() { o.m.deadLetters.Inc() }

// DeadLetterExpired implements spool.RetentionObserver.
func (o spoolObserver) DeadLetterExpired() { o.m.deadExpired.Inc() }

// spoolGaugeCollector reports the counts of the live spools when
// scraped.
type spoolGaugeCollector struct {
	callbacks *prometheus.Desc
	oldestAge *prometheus.Desc
	diskBytes *prometheus.Desc
	maxBytes  *prometheus.Desc
	byKey     *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c spoolGaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.callbacks
	ch <- c.oldestAge
	ch <- c.diskBytes
	ch <- c.maxBytes
	ch <- c.byKey
}

// Collect implements prometheus.Collector.
func (c spoolGaugeCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, s := range OpenQueues() {
		st := s.Store.Stats()
		gauge(ch, c.callbacks, float64(st.Pending), s.Name, "pending")
		gauge(ch, c.callbacks, float64(st.Dead), s.Name, "dead")
		gauge(ch, c.callbacks, float64(st.Delivered), s.Name, "delivered")
		var age float64
		if !st.OldestPending.IsZero() {
			age = max(now.Sub(st.OldestPending).Seconds(), 0)
		}
		gauge(ch, c.oldestAge, age, s.Name)
		gauge(ch, c.diskBytes, float64(st.DiskBytes), s.Name)
		if limit := s.MaxBytes; limit > 0 {
			gauge(ch, c.maxBytes, float64(limit), s.Name)
		}
		for id, n := range st.Keys {
			gauge(ch, c.byKey, float64(n), s.Name, id)
		}
	}
}

// maxBytes returns the max_spool_size in effect: that of the route
// provisioned last, 0 if no route uses the spool.
func (s *sharedSpool) maxBytes() int64 {
	if c := s.routes.current(); c != nil {
		return c.durable.maxSpoolSize
	}
	return 0
}

// gauge sends one gauge value.
func gauge(ch chan<- prometheus.Metric, desc *prometheus.Desc, v float64, labels ...string) {
	if m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, v, labels...); err == nil {
		ch <- m
	}
}

// Interface guards
var (
	_ queue.Observer          = spoolObserver{}
	_ spool.RetentionObserver = spoolObserver{}
	_ prometheus.Collector    = spoolGaugeCollector{}
)
