// Package batchmetrics holds the collectors of the ledger of batches
// that both channels of results feed: the callback route and the
// reconciler's polls.
//
//	caddy_atlas_batch_documents_received_total{source}  documents of known batches received, by source: callback, poll
//	caddy_atlas_batch_upload_to_complete_seconds        time from a batch's upload to its completion
//
// They are created once for the process and registered in each config's
// registry.
package batchmetrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-atlas/caddy-atlas/internal/metricsreg"
	"github.com/caddy-atlas/caddy-atlas/ledger"
)

// UploadToCompleteBuckets are the buckets of the upload-to-complete
// histogram, in seconds: 5 s to 3 days (give_up_after's default).
var UploadToCompleteBuckets = []float64{5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800, 259200}

var (
	once             sync.Once
	received         *prometheus.CounterVec
	uploadToComplete prometheus.Histogram
)

func collectors() {
	once.Do(func() {
		ns, sub := metricsreg.Namespace, metricsreg.Subsystem
		received = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "batch_documents_received_total",
			Help: "Documents of known batches received (claimed for a delivery to the app), by source: callback, poll."}, []string{"source"})
		// Every source has a series from the start, so that rates and
		// alerts see zeros rather than nothing.
		for _, s := range []ledger.Source{ledger.SourceCallback, ledger.SourcePoll} {
			received.WithLabelValues(string(s))
		}
		uploadToComplete = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "batch_upload_to_complete_seconds",
			Help:    "Time from a batch's upload to its completion (its last document received or failed), on the ledger's clock.",
			Buckets: UploadToCompleteBuckets})
	})
}

// Register registers the collectors in registry (nil: none).
func Register(registry *prometheus.Registry) {
	collectors()
	metricsreg.Register(registry, received)
	metricsreg.Register(registry, uploadToComplete)
}

// Received counts n documents received through source.
func Received(source ledger.Source, n int) {
	if n <= 0 {
		return
	}
	collectors()
	received.WithLabelValues(string(source)).Add(float64(n))
}

// Completed records a batch's completion, d after its upload.
func Completed(d time.Duration) {
	collectors()
	uploadToComplete.Observe(max(d, 0).Seconds())
}

// Claimed records what a claim of source did: the documents it took from
// pending and, if it completed the batch, the batch's time from upload
// to completion.
func Claimed(source ledger.Source, cr ledger.ClaimResult) {
	Received(source, cr.Claimed)
	if cr.Completed && cr.Batch != nil {
		Completed(cr.Batch.Finished.Sub(cr.Batch.Uploaded))
	}
}
