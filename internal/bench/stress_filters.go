package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
)

// maxFilterBytes is the longest topic filter MQTT can encode.
const maxFilterBytes = 65535

// FiltersStats describes a Filters run; a part that did not run is nil.
type FiltersStats struct {
	Deep *DeepFilters `json:"deep,omitempty"`
	Many *ManyFilters `json:"many,omitempty"`
}

// DeepFilters describes part (a): subscriptions to one filter of Levels
// levels (FilterBytes long), first from one client, then from Clients
// more, each with its own first level.
type DeepFilters struct {
	Levels      int `json:"levels"`
	FilterBytes int `json:"filter_bytes"`
	// PacketBytes is the size of the SUBSCRIBE; BrokerMaxPacket the
	// broker's Maximum Packet Size from a v5 CONNACK (0: none given). A
	// SUBSCRIBE above it is sent all the same.
	PacketBytes     int    `json:"packet_bytes"`
	BrokerMaxPacket uint32 `json:"broker_max_packet,omitempty"`
	// First is the answer to the first client: a reason code such as
	// "0x00" or "0x80", or what happened instead ("closed", "timeout");
	// FirstSeconds how long it took.
	First        string  `json:"first"`
	FirstSeconds float64 `json:"first_seconds"`
	// Clients is the number of further clients; Answers counts their
	// answers as First does; Seconds is how long they all took.
	Clients int            `json:"clients"`
	Answers map[string]int `json:"answers"`
	Seconds float64        `json:"seconds"`
	// Broker memory in KiB: before, 1 s after the first SUBACK, 1 s after
	// the others, the peak, and Settle after every client left.
	BeforeRSSKiB int64 `json:"before_rss_kib,omitempty"`
	OneRSSKiB    int64 `json:"one_rss_kib,omitempty"`
	AllRSSKiB    int64 `json:"all_rss_kib,omitempty"`
	PeakRSSKiB   int64 `json:"peak_rss_kib,omitempty"`
	LeftRSSKiB   int64 `json:"left_rss_kib,omitempty"`
}

// ManyFilters describes part (b): one client subscribing to Filters
// distinct filters, Batch to a SUBSCRIBE, at most Window SUBSCRIBEs
// awaiting their SUBACK.
type ManyFilters struct {
	Filters int `json:"filters"`
	Batch   int `json:"batch"`
	Window  int `json:"window"`
	// Sent counts filters sent, Granted and Refused those acknowledged
	// with a success or a failure code, by the end (Seconds after the
	// first SUBSCRIBE); Closed tells that the broker closed the connection.
	Sent    int64   `json:"sent"`
	Granted int64   `json:"granted"`
	Refused int64   `json:"refused"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	Closed  bool    `json:"closed,omitempty"`
	Error   string  `json:"error,omitempty"`
	// Broker memory in KiB: before, 1 s after the last SUBACK, the peak,
	// and Settle after the client left; PerFilter is (After - Before) /
	// Granted in bytes.
	BeforeRSSKiB int64   `json:"before_rss_kib,omitempty"`
	AfterRSSKiB  int64   `json:"after_rss_kib,omitempty"`
	PeakRSSKiB   int64   `json:"peak_rss_kib,omitempty"`
	LeftRSSKiB   int64   `json:"left_rss_kib,omitempty"`
	PerFilter    float64 `json:"per_filter_bytes,omitempty"`
}

// deepFilter returns a filter of levels levels that starts with first:
// the other levels are "a" as long as the filter stays within 65,535
// bytes, then empty.
func deepFilter(first string, levels int) (string, error) {
	room := maxFilterBytes - (levels - 1) - len(first) // bytes left for the "a"s
	if room < 0 {
		return "", fmt.Errorf("bench: %d levels do not fit in a %d-byte filter", levels, maxFilterBytes)
	}
	var b strings.Builder
	b.Grow(maxFilterBytes)
	b.WriteString(first)
	for i := 1; i < levels; i++ {
		b.WriteByte('/')
		if i <= room {
			b.WriteByte('a')
		}
	}
	return b.String(), nil
}

// runFilters runs the Filters scenario.
func (r *runner) runFilters(ctx context.Context, res *Result, rss *RSSStats) {
	cfg := &r.cfg
	sc := &cfg.Stress
	loadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	sampler := startRSS(cfg.BrokerPID, sc.RSSInterval, sc.RSSLimit, cancel)
	defer sampler.close(rss)
	stats := &FiltersStats{}
	res.Filters = stats
	r.phase.Store(phaseStress)
	if strings.Contains(sc.Parts, "a") {
		stats.Deep = r.deepFilters(loadCtx, sampler)
		sleepCtx(ctx, sc.Settle)
		stats.Deep.LeftRSSKiB = max(sampler.sample(), 0)
	}
	if strings.Contains(sc.Parts, "b") && loadCtx.Err() == nil {
		stats.Many = r.manyFilters(loadCtx, sampler)
		sleepCtx(ctx, sc.Settle)
		stats.Many.LeftRSSKiB = max(sampler.sample(), 0)
	}
	if rss != nil {
		rss.AfterKiB = sampler.sample()
	}
}

// subscribeAnswer sends SUBSCRIBE to filter on c and describes the
// answer: the reason code, or what happened instead, within d.
func subscribeAnswer(c *rawConn, filter string, qos byte, d time.Duration) string {
	c.nc.SetWriteDeadline(time.Now().Add(d))
	err := c.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: qos}}})
	if err != nil {
		return answerOf(err)
	}
	pk, err := c.readUntil(packets.SUBACK, d)
	if err != nil {
		return answerOf(err)
	}
	codes := pk.(*packets.Suback).ReasonCodes
	if len(codes) != 1 {
		return fmt.Sprintf("%d codes", len(codes))
	}
	return fmt.Sprintf("0x%02X", byte(codes[0]))
}

// answerOf describes an error in place of a SUBACK.
func answerOf(err error) string {
	switch {
	case isTimeout(err):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), isReset(err):
		return "closed"
	}
	var pe *packets.Error
	if errors.As(err, &pe) || strings.Contains(err.Error(), "DISCONNECT") {
		return "disconnect: " + err.Error()
	}
	return "error: " + err.Error()
}

// deepFilters runs part (a).
func (r *runner) deepFilters(ctx context.Context, sampler *rssSampler) *DeepFilters {
	cfg := &r.cfg
	sc := &cfg.Stress
	d := &DeepFilters{Levels: sc.Levels, Clients: cfg.Count, Answers: map[string]int{}}
	first, err := deepFilter("a", sc.Levels)
	if err != nil {
		d.First = err.Error()
		return d
	}
	d.FilterBytes = len(first)
	r.setStatus(func() string {
		return fmt.Sprintf("filters (a)  %d levels, %d connected", sc.Levels, r.connects.Load())
	})
	d.BeforeRSSKiB = max(sampler.sample(), 0)
	sampler.window()
	var conns []*rawConn
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()
	c, err := r.dialRaw(ctx, r.clientID("d", 0), cfg.KeepAlive, false)
	r.countConnect(err)
	if err != nil {
		d.First = answerOf(err)
		return d
	}
	conns = append(conns, c)
	if b, err := (&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: first, QoS: cfg.QoS}}}).Encode(nil, cfg.Version); err == nil {
		d.PacketBytes = len(b)
	}
	d.BrokerMaxPacket = c.connack.Properties.MaximumPacketSize
	t0 := time.Now()
	d.First = subscribeAnswer(c, first, cfg.QoS, cfg.Duration)
	d.FirstSeconds = time.Since(t0).Seconds()
	sleepCtx(ctx, time.Second)
	d.OneRSSKiB = max(sampler.sample(), 0)

	var mu sync.Mutex
	t1 := time.Now()
	forEach(ctx, cfg.Count, cfg.Parallel, func(i int) {
		var answer string
		c, err := r.dialRaw(ctx, r.clientID("d", i+1), cfg.KeepAlive, false)
		r.countConnect(err)
		if err != nil {
			answer = "connect: " + answerOf(err)
		} else {
			f, err := deepFilter("c"+strconv.Itoa(i), sc.Levels)
			if err != nil {
				answer = err.Error()
			} else {
				answer = subscribeAnswer(c, f, cfg.QoS, cfg.Duration)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		d.Answers[answer]++
		if c != nil {
			conns = append(conns, c)
		}
	})
	d.Seconds = time.Since(t1).Seconds()
	sleepCtx(ctx, time.Second)
	d.AllRSSKiB = max(sampler.sample(), 0)
	d.PeakRSSKiB = max(sampler.window(), 0)
	return d
}

// manyFilters runs part (b).
func (r *runner) manyFilters(ctx context.Context, sampler *rssSampler) *ManyFilters {
	cfg := &r.cfg
	sc := &cfg.Stress
	m := &ManyFilters{Filters: sc.Filters, Batch: sc.Batch, Window: sc.SubWindow}
	var granted, refused, sent atomic.Int64
	r.setStatus(func() string {
		return fmt.Sprintf("filters (b)  %d sent, %d granted, %d refused", sent.Load(), granted.Load(), refused.Load())
	})
	c, err := r.dialRaw(ctx, r.clientID("m", 0), cfg.KeepAlive, false)
	r.countConnect(err)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	defer c.close()
	m.BeforeRSSKiB = max(sampler.sample(), 0)
	sampler.window()
	start := time.Now()
	end := start.Add(cfg.Duration)
	slots := make(chan struct{}, sc.SubWindow)
	readErr := make(chan error, 1)
	go func() {
		c.nc.SetReadDeadline(end)
		for {
			pk, err := c.read()
			if err != nil {
				readErr <- err
				return
			}
			if ack, ok := pk.(*packets.Suback); ok {
				for _, code := range ack.ReasonCodes {
					if code.IsError() {
						refused.Add(1)
					} else {
						granted.Add(1)
					}
				}
				select {
				case <-slots:
				default:
				}
			}
		}
	}()
	var buf []byte
	var writeErr error
	timer := time.NewTimer(time.Until(end))
	defer timer.Stop()
send:
	for i, id := 0, 0; i < sc.Filters; id++ {
		select {
		case slots <- struct{}{}:
		case <-timer.C:
			break send
		case <-ctx.Done():
			break send
		}
		s := packets.Subscribe{PacketID: uint16(id%65535 + 1)}
		for ; i < sc.Filters && len(s.Subscriptions) < sc.Batch; i++ {
			s.Subscriptions = append(s.Subscriptions, packets.Subscription{Filter: cfg.TopicPrefix + "/f/" + strconv.Itoa(i), QoS: cfg.QoS})
		}
		buf, _ = s.Encode(buf[:0], cfg.Version)
		c.nc.SetWriteDeadline(end)
		if _, writeErr = c.nc.Write(buf); writeErr != nil {
			break
		}
		sent.Add(int64(len(s.Subscriptions)))
	}
	// Wait for the outstanding SUBACKs.
	var readFailed error
wait:
	for granted.Load()+refused.Load() < sent.Load() && time.Now().Before(end) && ctx.Err() == nil {
		select {
		case readFailed = <-readErr:
			break wait
		case <-time.After(5 * time.Millisecond):
		}
	}
	m.Seconds = time.Since(start).Seconds()
	m.Sent, m.Granted, m.Refused = sent.Load(), granted.Load(), refused.Load()
	if m.Seconds > 0 {
		m.Rate = float64(m.Granted+m.Refused) / m.Seconds
	}
	if readFailed == nil {
		select {
		case readFailed = <-readErr:
		default:
		}
	}
	if readFailed != nil && !isTimeout(readFailed) {
		m.Closed, m.Error = true, answerOf(readFailed)
	}
	if writeErr != nil && m.Error == "" {
		m.Error = "write: " + answerOf(writeErr)
	}
	sleepCtx(ctx, time.Second)
	m.AfterRSSKiB = max(sampler.sample(), 0)
	m.PeakRSSKiB = max(sampler.window(), 0)
	if m.Granted > 0 && m.AfterRSSKiB > 0 {
		m.PerFilter = float64(m.AfterRSSKiB-m.BeforeRSSKiB) * 1024 / float64(m.Granted)
	}
	return m
}

// write writes the Filters part of the summary.
func (s *FiltersStats) write(p func(string, ...any)) {
	if d := s.Deep; d != nil {
		p("deep filter  %d levels (%d bytes, a %d-byte SUBSCRIBE", d.Levels, d.FilterBytes, d.PacketBytes)
		if d.BrokerMaxPacket > 0 {
			p("; the broker's maximum packet size is %d", d.BrokerMaxPacket)
		}
		p("): first client answered %s in %.3f s; broker RSS %s before, %s after\n",
			d.First, d.FirstSeconds, kib(d.BeforeRSSKiB), kib(d.OneRSSKiB))
		var answers []string
		for _, k := range slices.Sorted(maps.Keys(d.Answers)) {
			answers = append(answers, fmt.Sprintf("%s ×%d", k, d.Answers[k]))
		}
		p("             %d more clients in %.2f s: %s; broker RSS %s after, peak %s, %s after they left\n",
			d.Clients, d.Seconds, strings.Join(answers, ", "), kib(d.AllRSSKiB), kib(d.PeakRSSKiB), kib(d.LeftRSSKiB))
	}
	if m := s.Many; m != nil {
		p("many filters %d of %d sent (%d a SUBSCRIBE, window %d), %d granted, %d refused in %.2f s (%s/s)",
			m.Sent, m.Filters, m.Batch, m.Window, m.Granted, m.Refused, m.Seconds, human(m.Rate))
		if m.Error != "" {
			p("; %s", m.Error)
		}
		p("\n             broker RSS %s before, %s after (%.0f bytes per filter), peak %s, %s after the client left\n",
			kib(m.BeforeRSSKiB), kib(m.AfterRSSKiB), m.PerFilter, kib(m.PeakRSSKiB), kib(m.LeftRSSKiB))
	}
}
