package bridge

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternmq/tern"
)

var (
	upDesc  = prometheus.NewDesc("tern_bridge_up", "1 while the bridge is connected to its remote.", []string{"bridge"}, nil)
	msgDesc = prometheus.NewDesc("tern_bridge_messages_total",
		"Messages forwarded by the bridge, by direction (out: to the remote, in: from it).", []string{"bridge", "direction"}, nil)
	queuedDesc   = prometheus.NewDesc("tern_bridge_queued_messages", "Messages waiting for the remote.", []string{"bridge"}, nil)
	inflightDesc = prometheus.NewDesc("tern_bridge_inflight_messages", "Messages sent to the remote and not yet acknowledged.", []string{"bridge"}, nil)
	droppedDesc  = prometheus.NewDesc("tern_bridge_dropped_total",
		"Messages the bridge did not forward, by reason (queue_full, loop, packet_too_large, ...).", []string{"bridge", "reason"}, nil)
	reconnectsDesc = prometheus.NewDesc("tern_bridge_reconnects_total", "Connections of the bridge that ended.", []string{"bridge"}, nil)
	redundantDesc  = prometheus.NewDesc("tern_bridge_redundant_discarded_total",
		"Messages other brokers' bridges sent by a longer path than a direct link from their origin, discarded.", nil, nil)
)

// Collector returns a Prometheus collector of the bridges' metrics, read
// from Status at each scrape: tern_bridge_up, tern_bridge_messages_total,
// tern_bridge_queued_messages, tern_bridge_inflight_messages,
// tern_bridge_dropped_total and tern_bridge_reconnects_total, each with a
// "bridge" label.
func (m *Manager) Collector() prometheus.Collector { return collector{m} }

type collector struct{ m *Manager }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upDesc, msgDesc, queuedDesc, inflightDesc, droppedDesc, reconnectsDesc, redundantDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(redundantDesc, prometheus.CounterValue, float64(c.m.Redundant()))
	for _, s := range c.m.Status() {
		up := 0.0
		if s.State == StateConnected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up, s.Name)
		ch <- prometheus.MustNewConstMetric(msgDesc, prometheus.CounterValue, float64(s.Sent), s.Name, "out")
		ch <- prometheus.MustNewConstMetric(msgDesc, prometheus.CounterValue, float64(s.Received), s.Name, "in")
		ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(s.Queued), s.Name)
		ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(s.Inflight), s.Name)
		for _, r := range allReasons() {
			ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(s.Dropped[r]), s.Name, r)
		}
		ch <- prometheus.MustNewConstMetric(reconnectsDesc, prometheus.CounterValue, float64(s.Reconnects), s.Name)
	}
}

// allReasons lists the bridge's drop reasons and the session's.
func allReasons() []string {
	out := append([]string(nil), reasons[:]...)
	for _, r := range sessionReasons {
		dup := false
		for _, x := range out {
			dup = dup || x == r
		}
		if !dup {
			out = append(out, r)
		}
	}
	return out
}

// sessionReasons are the drop reasons of the local session that concern a
// bridge.
var sessionReasons = func() []string {
	var out []string
	for _, r := range tern.DropReasons {
		out = append(out, string(r))
	}
	return out
}()
