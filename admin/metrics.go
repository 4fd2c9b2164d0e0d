package admin

import (
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/ternmq/tern"
)

// Observer is a hook that counts what the server's Stats do not break
// down: ended connections by reason. Add it to the server (AddHook) before
// Serve and give it to New in Options.
type Observer struct {
	disconnects sync.Map // tern.DisconnectReason label -> *atomic.Int64
}

var _ tern.DisconnectObserver = (*Observer)(nil)

// NewObserver returns an Observer with every counter at 0.
func NewObserver() *Observer { return &Observer{} }

// ID implements tern.Hook.
func (o *Observer) ID() string { return "admin-metrics" }

// OnDisconnect implements tern.DisconnectObserver.
func (o *Observer) OnDisconnect(_ *tern.Client, err error) {
	counter(&o.disconnects, tern.DisconnectReason(err)).Add(1)
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
	newStatMetric("retained_messages", "Retained messages stored now.", gaugeT, func(s *tern.Stats) int64 { return s.Retained }),
	newStatMetric("subscriptions", "Subscriptions now.", gaugeT, func(s *tern.Stats) int64 { return s.Subscriptions }),
	newStatMetric("inflight_messages", "QoS 1 and 2 messages sent and not yet acknowledged.", gaugeT, func(s *tern.Stats) int64 { return s.InflightOut }),
	newStatMetric("queued_messages", "Messages waiting in session queues.", gaugeT, func(s *tern.Stats) int64 { return s.Queued }),
	newStatMetric("retained_refused_total", "Retained messages refused for max_retained_messages or max_retained_bytes.", counterT, func(s *tern.Stats) int64 { return s.RetainedRefused }),
	newStatMetric("write_timeouts_total", "Connections reset because the client took nothing for write_timeout.", counterT, func(s *tern.Stats) int64 { return s.WriteTimeouts }),
	newStatMetric("store_failures_total", "Store commits that failed; the acknowledgements waiting on them were withheld.", counterT, func(s *tern.Stats) int64 { return s.StoreFailures }),
	newStatMetric("store_refused_total", "Operations refused because the store could not write (a full or failing disk): connects, publishes, subscribes, unsubscribes.", counterT, func(s *tern.Stats) int64 { return s.StoreRefused }),
	newStatMetric("wills_sent_total", "Will messages published.", counterT, func(s *tern.Stats) int64 { return s.WillsSent }),
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
	srv *tern.Server
	obs *Observer
}

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
	if c.obs != nil {
		ch <- disconnectsDesc
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
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
	used, limit := c.srv.MessageMemory()
	ch <- prometheus.MustNewConstMetric(memoryDesc, gaugeT, float64(used))
	ch <- prometheus.MustNewConstMetric(memoryLimitDesc, gaugeT, float64(limit))
	ch <- prometheus.MustNewConstMetric(startDesc, gaugeT, float64(c.srv.StartedAt().UnixNano())/1e9)
	available := 1.0
	if c.srv.StoreHealth() != nil {
		available = 0
	}
	ch <- prometheus.MustNewConstMetric(storeDesc, gaugeT, available)
	ch <- prometheus.MustNewConstMetric(infoDesc, gaugeT, 1, tern.Version)
}

func newRegistry(srv *tern.Server, obs *Observer) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{srv: srv, obs: obs},
	)
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
