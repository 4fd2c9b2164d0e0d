// Package authmetrics holds the Prometheus metrics the external
// authentication hooks share, one set per backend (the backend label):
//
//	tern_auth_requests_total{backend,result}  checks made, by outcome
//	tern_auth_request_seconds{backend}        how long each took
//	tern_auth_cache_hits_total{backend}       answers found in a cache
//
// Each set is a prometheus.Collector; the hooks embed one and so are
// collectors themselves.
package authmetrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Results of a check, the values of the result label.
const (
	Allow   = "allow"   // the client or access was allowed
	Deny    = "deny"    // refused
	Ignore  = "ignore"  // the backend left the decision to the next hook
	Error   = "error"   // the backend failed (see on_error)
	Timeout = "timeout" // the backend did not answer in time
)

// Buckets of the latency histogram, in seconds: from a signature check
// (tens of microseconds) to a slow HTTP service.
var Buckets = []float64{0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Metrics are the metrics of one backend.
type Metrics struct {
	requests  *prometheus.CounterVec
	latency   prometheus.Histogram
	cacheHits prometheus.Counter
}

// New returns the metrics of the backend, every counter at 0.
func New(backend string) *Metrics {
	l := prometheus.Labels{"backend": backend}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tern_auth_requests_total",
			Help: "Authentication and authorization checks made by external backends, by result.", ConstLabels: l}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tern_auth_request_seconds",
			Help: "Time external authentication and authorization checks took.", ConstLabels: l, Buckets: Buckets}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "tern_auth_cache_hits_total",
			Help: "Authentication and authorization answers found in a cache instead of asked for.", ConstLabels: l}),
	}
	for _, r := range []string{Allow, Deny, Ignore, Error, Timeout} {
		m.requests.WithLabelValues(r) // present at 0
	}
	return m
}

// Observe records a check with its result and duration.
func (m *Metrics) Observe(result string, d time.Duration) {
	m.requests.WithLabelValues(result).Inc()
	m.latency.Observe(d.Seconds())
}

// Count records a check's result without a duration.
func (m *Metrics) Count(result string) { m.requests.WithLabelValues(result).Inc() }

// CacheHit records an answer found in a cache.
func (m *Metrics) CacheHit() { m.cacheHits.Inc() }

// Requests returns the number of checks with the result so far.
func (m *Metrics) Requests(result string) float64 {
	return CounterValue(m.requests.WithLabelValues(result))
}

// CacheHits returns the number of cache hits so far.
func (m *Metrics) CacheHits() float64 { return CounterValue(m.cacheHits) }

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.requests.Describe(ch)
	m.latency.Describe(ch)
	m.cacheHits.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.requests.Collect(ch)
	m.latency.Collect(ch)
	m.cacheHits.Collect(ch)
}

// CounterValue reads a counter, for tests and the hooks' own accessors.
func CounterValue(c prometheus.Counter) float64 {
	var out dto.Metric
	if err := c.Write(&out); err != nil || out.Counter == nil {
		return 0
	}
	return out.Counter.GetValue()
}
