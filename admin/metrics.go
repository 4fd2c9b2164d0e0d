package admin

import (
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin/history"
)

// Observer is a hook that counts and times what the server's Stats do not:
// ended connections by reason, the time CONNECT packets take to handle,
// and (sampled) how long messages take from their PUBLISH to their
// subscribers. Add it to the server (AddHook) before Serve and give it to
// New in Options.
//
// The Observer also samples the broker once a second while it runs, for
// /api/v1/metrics/history and /api/v1/metrics/stream (see live.go).
type Observer struct {
	disconnects sync.Map // tern.DisconnectReason label -> *atomic.Int64
	live        sampler

	connectSeconds prometheus.Histogram
	deliverSeconds prometheus.Histogram
	sampleEvery    uint64
	deliveries     atomic.Uint64
}

var (
	_ tern.DisconnectObserver = (*Observer)(nil)
	_ tern.ConnectObserver    = (*Observer)(nil)
	_ tern.PublishObserver    = (*Observer)(nil)
	_ tern.Starter            = (*Observer)(nil)
	_ tern.Stopper            = (*Observer)(nil)
)

// DeliverySampling is how many deliveries the Observer lets pass between
// two it times (tern_delivery_latency_seconds): timing one reads the
// clock.
const DeliverySampling = 64

// NewObserver returns an Observer with every counter at 0.
func NewObserver() *Observer {
	return &Observer{
		live:        sampler{hist: history.New(historySeries...)},
		sampleEvery: DeliverySampling,
		connectSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tern_connect_handling_seconds",
			Help: "Time from a CONNECT read to its CONNACK queued (authentication and session set-up), for accepted connections.",
			// 50 µs (memory, no auth) to 2.5 s (a slow authentication backend).
			Buckets: prometheus.ExponentialBucketsRange(50e-6, 2.5, 16),
		}),
		deliverSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tern_delivery_latency_seconds",
			Help: fmt.Sprintf("Time from a PUBLISH read to the message handed to a subscriber's connection, for one delivery in %d.", DeliverySampling),
			// 10 µs to 10 s: a queued message of a slow or offline client waits long.
			Buckets: prometheus.ExponentialBucketsRange(10e-6, 10, 16),
		}),
	}
}

// ID implements tern.Hook.
func (o *Observer) ID() string { return "admin-metrics" }

// OnDisconnect implements tern.DisconnectObserver.
func (o *Observer) OnDisconnect(_ *tern.Client, err error) {
	counter(&o.disconnects, tern.DisconnectReason(err)).Add(1)
}

// OnSessionEstablished implements tern.ConnectObserver.
func (o *Observer) OnSessionEstablished(c *tern.Client, _ bool) {
	o.connectSeconds.Observe(c.ConnectDuration().Seconds())
}

// OnPublished implements tern.PublishObserver.
func (o *Observer) OnPublished(*tern.Client, *tern.Message) {}

// OnDelivered implements tern.PublishObserver: it times one delivery in
// DeliverySampling.
func (o *Observer) OnDelivered(_ string, m *tern.Message) {
	if o.deliveries.Add(1)%o.sampleEvery != 0 {
		return
	}
	if d := time.Since(m.Created); d >= 0 {
		o.deliverSeconds.Observe(d.Seconds())
	}
}

func counter(m *sync.Map, label string) *atomic.Int64 {
	if v, ok := m.Load(label); ok {
		return v.(*atomic.Int64)
	}
	v, _ := m.LoadOrStore(label, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// labelled is one value of a labelled counter.
type labelled struct {
	label string
	value int64
}

// snapshot returns the counters of m, sorted by label.
func snapshot(m *sync.Map) []labelled {
	var out []labelled
	m.Range(func(k, v any) bool {
		out = append(out, labelled{k.(string), v.(*atomic.Int64).Load()})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].label < out[j].label })
	return out
}

// statMetric is one metric read from tern.Stats at each scrape.
type statMetric struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	get  func(*tern.Stats) int64
}

func newStatMetric(name, help string, kind prometheus.ValueType, get func(*tern.Stats) int64) statMetric {
	return statMetric{prometheus.NewDesc("tern_"+name, help, nil, nil), kind, get}
}

var (
	counterT = prometheus.CounterValue
	gaugeT   = prometheus.GaugeValue
)

// statMetrics are the server's counters and gauges, in base units.
var statMetrics = []statMetric{
	newStatMetric("clients_connected", "Clients connected now.", gaugeT, func(s *tern.Stats) int64 { return s.ClientsConnected }),
	newStatMetric("clients_maximum", "Most clients connected at once since the start.", gaugeT, func(s *tern.Stats) int64 { return s.ClientsMaximum }),
	newStatMetric("sessions", "Sessions now, online and offline.", gaugeT, func(s *tern.Stats) int64 { return s.ClientsTotal }),
	newStatMetric("sessions_expired_total", "Sessions ended by expiry.", counterT, func(s *tern.Stats) int64 { return s.ClientsExpired }),
	newStatMetric("connections_accepted_total", "Network connections accepted.", counterT, func(s *tern.Stats) int64 { return s.ConnectionsAccepted }),
	newStatMetric("connects_refused_total", "CONNECT packets refused, for any reason.", counterT, func(s *tern.Stats) int64 { return s.ConnectsRefused }),
	newStatMetric("auth_failures_total", "CONNECT packets refused by authentication.", counterT, func(s *tern.Stats) int64 { return s.AuthFailures }),
	newStatMetric("protocol_errors_total", "Connections closed for a malformed or invalid packet.", counterT, func(s *tern.Stats) int64 { return s.ProtocolErrors }),
	newStatMetric("connections_rejected_total", "Connections closed at accept by a connection limit.", counterT, func(s *tern.Stats) int64 { return s.ConnectionsRejected }),
	newStatMetric("rate_limited_total", "Clients disconnected for exceeding a publish rate or bandwidth limit.", counterT, func(s *tern.Stats) int64 { return s.RateLimited }),
	newStatMetric("subscriptions_refused_total", "Subscriptions refused by the per-client subscription limit.", counterT, func(s *tern.Stats) int64 { return s.SubscriptionsRefused }),
	newStatMetric("messages_received_total", "PUBLISH packets received, in-process publishes included.", counterT, func(s *tern.Stats) int64 { return s.MessagesReceived }),
	newStatMetric("messages_sent_total", "PUBLISH packets sent.", counterT, func(s *tern.Stats) int64 { return s.MessagesSent }),
	newStatMetric("publish_denied_total", "PUBLISH packets refused by an authorizer or interceptor.", counterT, func(s *tern.Stats) int64 { return s.PublishDenied }),
	newStatMetric("deliveries_denied_total", "Deliveries skipped because an authorizer denied the message to the subscriber.", counterT, func(s *tern.Stats) int64 { return s.DeliveriesDenied }),
	newStatMetric("received_bytes_total", "Bytes of MQTT packets received.", counterT, func(s *tern.Stats) int64 { return s.BytesReceived }),
	newStatMetric("sent_bytes_total", "Bytes written to clients.", counterT, func(s *tern.Stats) int64 { return s.BytesSent }),
	newStatMetric("publish_received_bytes_total", "Payload bytes of the PUBLISH packets received, in-process publishes included.", counterT, func(s *tern.Stats) int64 { return s.PublishBytesReceived }),
	newStatMetric("publish_sent_bytes_total", "Payload bytes of the PUBLISH packets sent.", counterT, func(s *tern.Stats) int64 { return s.PublishBytesSent }),
	newStatMetric("connects_total", "CONNECTs that established a session.", counterT, func(s *tern.Stats) int64 { return s.Connects }),
	newStatMetric("retained_messages", "Retained messages stored now.", gaugeT, func(s *tern.Stats) int64 { return s.Retained }),
	newStatMetric("subscriptions", "Subscriptions now.", gaugeT, func(s *tern.Stats) int64 { return s.Subscriptions }),
	newStatMetric("inflight_messages", "QoS 1 and 2 messages sent and not yet acknowledged.", gaugeT, func(s *tern.Stats) int64 { return s.InflightOut }),
	newStatMetric("queued_messages", "Messages waiting in session queues, paged ones included.", gaugeT, func(s *tern.Stats) int64 { return s.Queued }),
	newStatMetric("paged_messages", "Queued messages of persistent sessions kept only in the store (paged out of memory).", gaugeT, func(s *tern.Stats) int64 { return s.Paged }),
	newStatMetric("page_in_total", "Paged messages read back from the store into a session's queue.", counterT, func(s *tern.Stats) int64 { return s.PageIns }),
	newStatMetric("retained_refused_total", "Retained messages refused for max_retained_messages or max_retained_bytes.", counterT, func(s *tern.Stats) int64 { return s.RetainedRefused }),
	newStatMetric("write_timeouts_total", "Connections reset because the client took nothing for write_timeout.", counterT, func(s *tern.Stats) int64 { return s.WriteTimeouts }),
	newStatMetric("store_failures_total", "Store commits that failed; the acknowledgements waiting on them were withheld.", counterT, func(s *tern.Stats) int64 { return s.StoreFailures }),
	newStatMetric("store_refused_total", "Operations refused because the store could not write (a full or failing disk): connects, publishes, subscribes, unsubscribes.", counterT, func(s *tern.Stats) int64 { return s.StoreRefused }),
	newStatMetric("wills_sent_total", "Will messages published.", counterT, func(s *tern.Stats) int64 { return s.WillsSent }),
	newStatMetric("duplicates_skipped_total", "QoS 1/2 messages not queued again for a session that already had them (a cluster session that came from another node).", counterT, func(s *tern.Stats) int64 { return s.DuplicatesSkipped }),
}

var (
	droppedDesc = prometheus.NewDesc("tern_messages_dropped_total",
		"Messages dropped instead of delivered, by reason (queue_full, slow_consumer, memory_full, expired, ...).", []string{"reason"}, nil)
	disconnectsDesc = prometheus.NewDesc("tern_disconnects_total",
		"Established connections ended, by reason (client_disconnect, connection_closed, keep_alive_timeout, ...).", []string{"reason"}, nil)
	memoryDesc      = prometheus.NewDesc("tern_message_memory_bytes", "Memory held by queued and inflight messages (max_message_memory counts it).", nil, nil)
	memoryLimitDesc = prometheus.NewDesc("tern_message_memory_limit_bytes", "max_message_memory; 0: no limit.", nil, nil)
	startDesc       = prometheus.NewDesc("tern_start_time_seconds", "When the broker started, in seconds since the Unix epoch.", nil, nil)
	storeDesc       = prometheus.NewDesc("tern_store_available", "1 while the store writes (or there is none), 0 while it cannot (a full or failing disk) and the broker refuses what needs it.", nil, nil)
	infoDesc        = prometheus.NewDesc("tern_build_info", "Always 1; the version is a label.", []string{"version"}, nil)
)

// collector reads the server's Stats at each scrape: nothing is copied
// between scrapes.
type collector struct {
	a   *Server
	obs *Observer
}

var (
	certNotAfterDesc = prometheus.NewDesc("tern_tls_certificate_not_after_seconds",
		"When a TLS certificate in use expires, in seconds since the Unix epoch: alert well before it.", []string{"name", "file"}, nil)
	certNotBeforeDesc = prometheus.NewDesc("tern_tls_certificate_not_before_seconds",
		"When a TLS certificate in use becomes valid, in seconds since the Unix epoch.", []string{"name", "file"}, nil)
	restoreRecordsDesc = prometheus.NewDesc("tern_restore_records",
		"Records read from the store by the restore at start (while it runs, then its total).", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range statMetrics {
		ch <- m.desc
	}
	ch <- droppedDesc
	ch <- memoryDesc
	ch <- memoryLimitDesc
	ch <- startDesc
	ch <- storeDesc
	ch <- infoDesc
	ch <- certNotAfterDesc
	ch <- certNotBeforeDesc
	ch <- restoreRecordsDesc
	if c.obs != nil {
		ch <- disconnectsDesc
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(infoDesc, gaugeT, 1, tern.Version)
	if certs := c.a.opts.Certificates; certs != nil {
		for _, ct := range certs() {
			ch <- prometheus.MustNewConstMetric(certNotAfterDesc, gaugeT, float64(ct.NotAfter.Unix()), ct.Name, ct.File)
			ch <- prometheus.MustNewConstMetric(certNotBeforeDesc, gaugeT, float64(ct.NotBefore.Unix()), ct.Name, ct.File)
		}
	}
	if p, ok := c.a.RestoreProgress(); ok {
		ch <- prometheus.MustNewConstMetric(restoreRecordsDesc, gaugeT, float64(p.Records))
	}
	srv := c.a.server()
	if srv == nil {
		return // starting: the broker's metrics come once it exists
	}
	st := srv.Stats()
	for _, m := range statMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, float64(m.get(&st)))
	}
	for _, r := range tern.DropReasons {
		ch <- prometheus.MustNewConstMetric(droppedDesc, counterT, float64(st.Dropped(r)), string(r))
	}
	if c.obs != nil {
		for _, d := range snapshot(&c.obs.disconnects) {
			ch <- prometheus.MustNewConstMetric(disconnectsDesc, counterT, float64(d.value), d.label)
		}
	}
	used, limit := srv.MessageMemory()
	ch <- prometheus.MustNewConstMetric(memoryDesc, gaugeT, float64(used))
	ch <- prometheus.MustNewConstMetric(memoryLimitDesc, gaugeT, float64(limit))
	ch <- prometheus.MustNewConstMetric(startDesc, gaugeT, float64(srv.StartedAt().UnixNano())/1e9)
	available := 1.0
	if srv.StoreHealth() != nil {
		available = 0
	}
	ch <- prometheus.MustNewConstMetric(storeDesc, gaugeT, available)
}

func newRegistry(a *Server) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	a.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tern_store_commit_seconds",
		Help: "Time a store commit takes (a group of changes, fsync included in sync durability).",
		// 20 µs (periodic durability, page cache) to 5 s (a stalled disk).
		Buckets: prometheus.ExponentialBucketsRange(20e-6, 5, 16),
	})
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{a: a, obs: a.opts.Observer},
		a.commitSeconds,
	)
	if o := a.opts.Observer; o != nil {
		reg.MustRegister(o.connectSeconds, o.deliverSeconds)
		h := &o.live.hub
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tern_admin_metric_streams",
				Help: "Open /api/v1/metrics/stream requests (dashboards showing the overview)."},
				func() float64 { return float64(h.open()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tern_admin_metric_streams_refused_total",
				Help: "/api/v1/metrics/stream requests refused: MaxMetricStreams were open."},
				func() float64 { return float64(h.refused.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tern_admin_stream_events_dropped_total",
				Help: "Samples not sent to a metrics stream whose reader fell behind."},
				func() float64 { return float64(h.dropped.Load()) }))
	}
	return reg
}

func metricsHandler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg,
		EnableOpenMetrics: true,
	})
}
