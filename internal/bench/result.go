package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Result is the summary of a run. Rates are per second over the
// measurement window: from the moment publishing starts until Duration has
// passed (the drain that follows counts towards delivery, not rates).
type Result struct {
	Scenario    Scenario `json:"scenario"`
	Broker      string   `json:"broker"`
	Version     byte     `json:"protocol_version"`
	QoS         byte     `json:"qos"`
	PayloadSize int      `json:"payload_size"`
	Window      int      `json:"window,omitempty"`
	Flow        int      `json:"flow,omitempty"`
	Publishers  int      `json:"publishers"`
	Subscribers int      `json:"subscribers"`

	Connect ConnectStats `json:"connect"`

	// Seconds is the length of the measurement window.
	Seconds float64 `json:"seconds"`
	// Sent counts messages queued by publishers; Acked those the broker
	// acknowledged (QoS 1: PUBACK, QoS 2: PUBCOMP); Refused those it
	// acknowledged with a failure reason code.
	Sent    int64 `json:"sent"`
	Acked   int64 `json:"acked"`
	Refused int64 `json:"refused,omitempty"`
	// Expected counts deliveries subscribers should have received (for each
	// subscriber, what its publishers sent); Received those they received,
	// duplicates included; Lost those expected but never received by the
	// end of the drain; Duplicates and OutOfOrder are per publisher and
	// sequence number. Unexpected counts messages from no publisher of the
	// run (or without the bench header).
	Expected   int64 `json:"expected"`
	Received   int64 `json:"received"`
	Lost       int64 `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	OutOfOrder int64 `json:"out_of_order"`
	Unexpected int64 `json:"unexpected"`
	// SendRate and RecvRate are messages per second sent and received
	// during the window: RecvRate is the throughput.
	SendRate float64 `json:"send_rate"`
	RecvRate float64 `json:"recv_rate"`
	// Drained is the time the drain took, in seconds.
	Drained float64 `json:"drain_seconds"`

	Latency   *LatencyStats  `json:"latency,omitempty"`
	Retained  *RetainedStats `json:"retained,omitempty"`
	BrokerRSS *RSSStats      `json:"broker_rss,omitempty"`

	Stuck    *StuckStats    `json:"stuck,omitempty"`
	RetFlood *RetFloodStats `json:"retflood,omitempty"`
	Partial  *PartialStats  `json:"partial,omitempty"`
	Filters  *FiltersStats  `json:"filters,omitempty"`

	// Errors counts failures: connections refused or failed (also counted
	// in Connect.Failed) and connections lost during the run; FirstError
	// describes the first.
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
}

// ConnectStats describes the connect phase.
type ConnectStats struct {
	Attempted int     `json:"attempted"`
	Succeeded int     `json:"succeeded"`
	Failed    int     `json:"failed"`
	Seconds   float64 `json:"seconds"`
	// Rate is successful connections per second (subscriptions included).
	Rate float64 `json:"rate"`
}

// LatencyStats are end-to-end latency percentiles in microseconds, from
// the publisher queueing a message to the subscriber reading it.
type LatencyStats struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
}

// RetainedStats describes the Retained scenario.
type RetainedStats struct {
	// Stored is how many retained messages were published and acknowledged,
	// in StoreSeconds.
	Stored       int64   `json:"stored"`
	StoreSeconds float64 `json:"store_seconds"`
	// Delivered is how many distinct ones the new subscriber received, the
	// last one Seconds after it sent SUBSCRIBE.
	Delivered int64   `json:"delivered"`
	Seconds   float64 `json:"seconds"`
	Rate      float64 `json:"rate"`
}

// RSSStats is the broker's resident memory in KiB before the clients
// connected and after (Conn: once all were connected; Retained: once the
// messages were delivered; otherwise at the end of the window), and for
// Conn the difference per connection in bytes. The stress scenarios sample
// it throughout: PeakKiB is the largest sample, AfterKiB the last (once the
// clients have left and the memory has had time to settle), and
// LimitExceeded tells that the load stopped early because the broker passed
// Stress.RSSLimit. For Conn, HeldKiB is the memory at the end of the
// hold, once the connect burst's garbage has had time to go, and
// PerConnectionHeld the difference per connection then.
type RSSStats struct {
	BeforeKiB         int64   `json:"before_kib"`
	AfterKiB          int64   `json:"after_kib"`
	PerConnection     float64 `json:"per_connection_bytes"`
	HeldKiB           int64   `json:"held_kib,omitempty"`
	PerConnectionHeld float64 `json:"per_connection_held_bytes,omitempty"`
	PeakKiB           int64   `json:"peak_kib,omitempty"`
	LimitExceeded     bool    `json:"limit_exceeded,omitempty"`
}

func latencyStats(h *histogram) *LatencyStats {
	if h.n == 0 {
		return nil
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return &LatencyStats{
		Count: h.n,
		P50:   us(h.quantile(0.50)),
		P90:   us(h.quantile(0.90)),
		P99:   us(h.quantile(0.99)),
		P999:  us(h.quantile(0.999)),
		Max:   us(time.Duration(h.max)),
	}
}

// WriteText writes the result for people.
func (r *Result) WriteText(w io.Writer) {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("scenario %s against %s: MQTT level %d, QoS %d, %d-byte payloads", r.Scenario, r.Broker, r.Version, r.QoS, r.PayloadSize)
	switch {
	case r.Scenario == Retained:
		p(" (stored at QoS 1, window %d)", r.Window)
	case r.Scenario == Conn, r.Scenario == Partial, r.Scenario == Filters, r.Scenario == RetFlood:
	case r.Scenario == Stuck:
		p(", QoS 0 then QoS 1 (window %d), open loop", r.Window)
	default:
		if r.QoS > 0 {
			p(", window %d", r.Window)
		}
		if r.Flow > 0 && r.Publishers > 0 && r.Subscribers > 0 {
			p(", flow %d", r.Flow)
		}
	}
	p("\n")
	c := r.Connect
	if c.Seconds > 0 {
		p("connections  %d of %d connected in %.2f s (%s/s), %d failed\n", c.Succeeded, c.Attempted, c.Seconds, human(c.Rate), c.Failed)
	} else {
		p("connections  %d of %d connected, %d failed\n", c.Succeeded, c.Attempted, c.Failed)
	}
	switch {
	case r.Stuck != nil:
		r.Stuck.write(p)
	case r.RetFlood != nil:
		r.RetFlood.write(p)
	case r.Partial != nil:
		r.Partial.write(p)
	case r.Filters != nil:
		r.Filters.write(p)
	}
	if r.Publishers+r.Subscribers > 0 && !isStress(r.Scenario) {
		p("clients      %d publishers, %d subscribers, window %.2f s, drain %.2f s\n", r.Publishers, r.Subscribers, r.Seconds, r.Drained)
		p("sent         %d (%s msg/s)", r.Sent, human(r.SendRate))
		if r.QoS > 0 {
			p(", acked %d", r.Acked)
			if r.Refused > 0 {
				p(", refused %d", r.Refused)
			}
		}
		p("\n")
		p("received     %d (%s msg/s) of %d expected\n", r.Received, human(r.RecvRate), r.Expected)
		p("lost %d, duplicates %d, out of order %d, unexpected %d\n", r.Lost, r.Duplicates, r.OutOfOrder, r.Unexpected)
	}
	if l := r.Latency; l != nil {
		p("latency      p50 %s  p90 %s  p99 %s  p99.9 %s  max %s (%d samples)\n",
			us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max), l.Count)
	}
	if rt := r.Retained; rt != nil {
		p("retained     %d stored in %.2f s; %d delivered to a new subscriber in %.3f s (%s msg/s)\n",
			rt.Stored, rt.StoreSeconds, rt.Delivered, rt.Seconds, human(rt.Rate))
	}
	if m := r.BrokerRSS; m != nil {
		p("broker RSS   %d KiB before, %d KiB after", m.BeforeKiB, m.AfterKiB)
		if m.PerConnection != 0 {
			p(", %.0f bytes per connection", m.PerConnection)
		}
		if m.HeldKiB != 0 {
			p("; %d KiB at the end of the hold, %.0f bytes per connection", m.HeldKiB, m.PerConnectionHeld)
		}
		if m.PeakKiB != 0 {
			p(", peak %d KiB", m.PeakKiB)
		}
		if m.LimitExceeded {
			p(" (passed the limit: the load stopped early)")
		}
		p("\n")
	}
	p("errors       %d", r.Errors)
	if r.FirstError != "" {
		p(" (first: %s)", r.FirstError)
	}
	p("\n")
	io.WriteString(w, b.String())
}

// human formats a rate with a k or M suffix.
func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// us formats microseconds.
func us(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fs", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.2fms", v/1e3)
	}
	return fmt.Sprintf("%.0fµs", v)
}
