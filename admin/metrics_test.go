package admin_test

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// scrape reads /metrics and returns each sample by name and labels, as
// `name` or `name{label="value"}`.
func (e *env) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	code, _, body := e.do(t, "GET", "/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	return parseMetrics(t, body)
}

func parseMetrics(t *testing.T, body []byte) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	out := make(map[string]float64)
	for name, f := range fams {
		for _, m := range f.Metric {
			key := name
			for _, l := range m.Label {
				key += "{" + l.GetName() + "=\"" + l.GetValue() + "\"}"
			}
			out[key] = value(f.GetType(), m)
		}
	}
	return out
}

func value(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.Counter.GetValue()
	case dto.MetricType_GAUGE:
		return m.Gauge.GetValue()
	case dto.MetricType_UNTYPED:
		return m.Untyped.GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

// denyUser refuses the user name "intruder".
type denyUser struct{}

func (denyUser) ID() string { return "deny-intruder" }
func (denyUser) Authenticate(_ *tern.Client, pk *packets.Connect) tern.Decision {
	if pk.Username == "intruder" {
		return tern.Deny
	}
	return tern.Allow
}

func TestMetricsFollowTraffic(t *testing.T) {
	e := newEnv(t, nil, admin.Options{}, denyUser{})
	before := e.scrape(t)
	for _, name := range []string{
		"tern_clients_connected", "tern_sessions", "tern_subscriptions", "tern_retained_messages", "tern_inflight_messages",
		"tern_queued_messages", "tern_paged_messages", "tern_page_in_total", "tern_messages_received_total", "tern_messages_sent_total", "tern_received_bytes_total",
		"tern_sent_bytes_total", "tern_auth_failures_total", "tern_protocol_errors_total", "tern_connections_accepted_total",
		`tern_messages_dropped_total{reason="queue_full"}`, `tern_messages_dropped_total{reason="packet_too_large"}`,
		`tern_build_info{version="` + tern.Version + `"}`, "tern_start_time_seconds", "go_goroutines", "process_start_time_seconds",
	} {
		if _, ok := before[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
	for name := range before {
		if strings.HasPrefix(name, "tern_") && strings.Contains(name, "_total") && !strings.HasSuffix(strings.SplitN(name, "{", 2)[0], "_total") {
			t.Errorf("counter name %s", name)
		}
	}

	// A subscriber, a publisher, a refused login, a drop and a kick.
	sub := e.ts.Dial(t, packets.V5)
	maxPacket := uint32(64)
	sub.Connect(&packets.Connect{ClientID: "sub", CleanStart: true, Properties: packets.Properties{MaximumPacketSize: maxPacket}})
	subscribe(t, sub, packets.Subscription{Filter: "m/#", QoS: 1})
	pub := e.ts.Dial(t, packets.V311)
	pub.MustConnect("pub")
	for i := range 3 {
		pub.Send(&packets.Publish{Topic: "m/x", QoS: 1, PacketID: uint16(i + 1), Payload: []byte("hello")})
		pub.Recv() // PUBACK: the message was routed
		got, ok := sub.Recv().(*packets.Publish)
		if !ok {
			t.Fatal("subscriber got no PUBLISH")
		}
		sub.Send(&packets.Puback{PacketID: got.PacketID})
	}
	pub.Send(&packets.Publish{Topic: "m/big", Payload: bytes.Repeat([]byte("x"), 100)}) // too large for sub
	pub.Send(&packets.Publish{Topic: "m/x", QoS: 1, PacketID: 9, Payload: []byte("sync")})
	pub.Recv()
	sub.Recv() // "sync": the big one was dropped before it
	bad := e.ts.Dial(t, packets.V5)
	if ack := bad.Connect(&packets.Connect{ClientID: "bad", CleanStart: true, UsernameFlag: true, Username: "intruder"}); ack.ReasonCode != packets.BadUserNameOrPassword {
		t.Fatalf("intruder: %v", ack.ReasonCode)
	}
	e.getJSON(t, "DELETE", "/api/v1/clients/pub", "", 204, nil)
	pub.ExpectClosed()
	pub.Close() // ends the server's drain of the connection at once

	var after map[string]float64
	terntest.Eventually(t, "the kick and the refusal to be counted", func() bool { // both counted after the client is told
		after = e.scrape(t)
		// The kick is counted as the client is told; its connection and
		// clean session go a moment later.
		return after[`tern_disconnects_total{reason="administrative_action"}`] == 1 &&
			after["tern_connects_refused_total"] == before["tern_connects_refused_total"]+1 &&
			after["tern_clients_connected"] == 1 && after["tern_sessions"] == 1
	})
	grew := func(name string, by float64) {
		t.Helper()
		if d := after[name] - before[name]; d != by {
			t.Errorf("%s grew by %v, want %v", name, d, by)
		}
	}
	grew("tern_messages_received_total", 5)
	grew("tern_messages_sent_total", 4)
	grew("tern_auth_failures_total", 1)
	grew("tern_connects_refused_total", 1)
	grew("tern_connections_accepted_total", 3)
	grew(`tern_messages_dropped_total{reason="packet_too_large"}`, 1)
	if after["tern_received_bytes_total"] <= before["tern_received_bytes_total"] || after["tern_sent_bytes_total"] <= before["tern_sent_bytes_total"] {
		t.Error("byte counters did not move")
	}
	for name, want := range map[string]float64{"tern_clients_connected": 1, "tern_subscriptions": 1, "tern_sessions": 1} {
		if after[name] != want {
			t.Errorf("%s = %v, want %v", name, after[name], want)
		}
	}
}

// Without the Observer hook, drops are still counted by reason (the server
// counts them), and disconnections are not broken down.
func TestMetricsWithoutObserver(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	plain := admin.New(e.ts.Server, admin.Options{})
	rec := httptest.NewRecorder()
	plain.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost/metrics", nil))
	m := parseMetrics(t, rec.Body.Bytes())
	for _, r := range tern.DropReasons {
		if name := `tern_messages_dropped_total{reason="` + string(r) + `"}`; !hasMetric(m, name) {
			t.Errorf("no %s", name)
		}
	}
	for _, name := range []string{"tern_message_memory_bytes", "tern_message_memory_limit_bytes", "tern_write_timeouts_total", "tern_retained_refused_total"} {
		if !hasMetric(m, name) {
			t.Errorf("no %s", name)
		}
	}
	for name := range m {
		if strings.HasPrefix(name, "tern_disconnects_total") {
			t.Errorf("%s without an Observer", name)
		}
	}
}

func hasMetric(m map[string]float64, name string) bool {
	_, ok := m[name]
	return ok
}
