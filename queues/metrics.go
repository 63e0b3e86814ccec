package queues

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-atlas/caddy-atlas/internal/metricsreg"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/spool"
)

// spoolMetrics are the collectors of the durable queues:
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
	metricsOnce sync.Once
	collectors  *spoolMetrics
)

// registerMetrics creates the collectors on first use and registers
// them in registry (when not nil), tolerating an earlier registration.
func registerMetrics(registry *prometheus.Registry) *spoolMetrics {
	metricsOnce.Do(func() {
		name := func(n string) string { return prometheus.BuildFQName(metricsreg.Namespace, metricsreg.Subsystem, n) }
		collectors = &spoolMetrics{
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
	m := collectors
	for _, c := range []prometheus.Collector{m.gauges, m.deliveryAttempts, m.deliveryDuration, m.deadLetters, m.deadExpired, m.fsyncSeconds, m.commitBatch} {
		metricsreg.Register(registry, c)
	}
	return m
}

// observer feeds the spools' events into the metrics.
type observer struct {
	m *spoolMetrics
}

// FsyncDone implements queue.Observer.
func (o observer) FsyncDone(d time.Duration, appends int) {
	o.m.fsyncSeconds.Observe(d.Seconds())
	if appends > 0 {
		o.m.commitBatch.Observe(float64(appends))
	}
}

// DeliveryAttempt implements queue.Observer.
func (o observer) DeliveryAttempt(outcome queue.Outcome, d time.Duration) {
	o.m.deliveryAttempts.WithLabelValues(string(outcome)).Inc()
	o.m.deliveryDuration.Observe(d.Seconds())
}

// DeadLettered implements queue.Observer.
func (o observer) DeadLettered() { o.m.deadLetters.Inc() }

// DeadLetterExpired implements spool.RetentionObserver.
func (o observer) DeadLetterExpired() { o.m.deadExpired.Inc() }

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
	for _, s := range Open() {
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

// gauge sends one gauge value.
func gauge(ch chan<- prometheus.Metric, desc *prometheus.Desc, v float64, labels ...string) {
	if m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, v, labels...); err == nil {
		ch <- m
	}
}

// jetStreamMetrics is the collector of the JetStream backend:
//
//	caddy_atlas_jetstream_publish_seconds   time from publish to the servers' ack of a callback
//
// The delivery metrics (attempts, duration, dead letters) are the
// spool's, and the queue's gauges are the spool gauges with the queue's
// name, jetstream:<stream>, as the spool label.
type jetStreamMetrics struct {
	publishSeconds prometheus.Histogram
}

var (
	jetStreamMetricsOnce sync.Once
	jetStreamCollectors  *jetStreamMetrics
)

func registerJetStreamMetrics(registry *prometheus.Registry) *jetStreamMetrics {
	jetStreamMetricsOnce.Do(func() {
		jetStreamCollectors = &jetStreamMetrics{
			publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
				Namespace: metricsreg.Namespace, Subsystem: metricsreg.Subsystem, Name: "jetstream_publish_seconds",
				Help:    "Time from the publish of a callback to the JetStream servers' ack.",
				Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
			}),
		}
	})
	metricsreg.Register(registry, jetStreamCollectors.publishSeconds)
	return jetStreamCollectors
}

// jetStreamObserver feeds a JetStream queue's events into the metrics:
// the delivery ones as for a spool, the publish acks into their own
// histogram (they are no fsyncs).
type jetStreamObserver struct {
	observer
	js *jetStreamMetrics
}

// FsyncDone implements queue.Observer: for this backend, an ack.
func (o jetStreamObserver) FsyncDone(d time.Duration, _ int) {
	o.js.publishSeconds.Observe(d.Seconds())
}

// Interface guards
var (
	_ queue.Observer          = observer{}
	_ spool.RetentionObserver = observer{}
	_ prometheus.Collector    = spoolGaugeCollector{}
	_ queue.Observer          = jetStreamObserver{}
)
