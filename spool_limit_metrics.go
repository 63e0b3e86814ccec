package caddyatlas

import "github.com/prometheus/client_golang/prometheus"

// spoolLimit reports the max_spool_size of each open spool, so that an
// alert can compare caddy_atlas_spool_disk_bytes with the limit beyond
// which Atlas gets 503:
//
//	caddy_atlas_spool_max_bytes{spool}   the spool's max_spool_size
//
// The value is that of the callback route whose settings are in effect
// (the one provisioned last). Registered by every atlas handler.
var spoolLimit = spoolLimitCollector{desc: prometheus.NewDesc(
	prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "spool_max_bytes"),
	"The spool's max_spool_size: beyond it callbacks are refused with 503.",
	[]string{"spool"}, nil)}

// spoolLimitCollector reports the live spools' size limits when scraped.
type spoolLimitCollector struct {
	desc *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c spoolLimitCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c spoolLimitCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range liveSpools() {
		s.mu.Lock()
		var limit int64
		if n := len(s.owners); n > 0 {
			limit = s.owners[n-1].durable.maxSpoolSize
		}
		s.mu.Unlock()
		if limit > 0 {
			gauge(ch, c.desc, float64(limit), s.dir)
		}
	}
}

// Interface guard
var _ prometheus.Collector = spoolLimitCollector{}
