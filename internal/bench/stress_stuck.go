package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
)

// closeCheckInterval is how often the stuck subscribers' connections are
// checked for a close by the broker.
const closeCheckInterval = 500 * time.Millisecond

// StuckStats describes a Stuck run.
type StuckStats struct {
	// Stuck is how many stuck subscribers connected and subscribed (of
	// Requested); they never read after their SUBACK.
	Stuck     int  `json:"stuck"`
	Requested int  `json:"requested"`
	KeepAlive int  `json:"stuck_keepalive_s"`
	Persisted bool `json:"stuck_persistent,omitempty"`
	// Phases are the QoS 0 phase, then the QoS 1 phase.
	Phases []StuckPhase `json:"phases"`
	// Closed counts the stuck connections the broker closed, seen without
	// reading them (checked every 500 ms with poll(2), and, for a broker on
	// this machine, with its side's socket state in /proc/net/tcp, which
	// sees a close whose FIN waits behind unread data); ClosedAt are the times, in
	// seconds from the start of the first phase, at which they were seen
	// closed, in order.
	Closed   int       `json:"closed"`
	ClosedAt []float64 `json:"closed_at_s,omitempty"`
	// Closes summarises ClosedAt.
	Closes Spread `json:"closes"`
}

// StuckPhase is one phase of a Stuck run.
type StuckPhase struct {
	QoS byte `json:"qos"`
	// Seconds is the publishing window; Drained the wait after it for the
	// healthy subscriber to catch up.
	Seconds float64 `json:"seconds"`
	Drained float64 `json:"drain_seconds"`
	// Published counts messages the publisher sent, Acked those the broker
	// acknowledged (QoS 1), PublishRate the first per second of window.
	Published   int64   `json:"published"`
	Acked       int64   `json:"acked,omitempty"`
	PublishRate float64 `json:"publish_rate"`
	// Received counts distinct messages of the phase the healthy
	// subscriber received by the end of the drain; InWindow those it had
	// received by the end of the window, and Rate those per second.
	Received int64   `json:"received"`
	InWindow int64   `json:"received_in_window"`
	Rate     float64 `json:"rate"`
	// MaxGapMs is the longest time, in milliseconds, between two
	// deliveries to the healthy subscriber during the window (the start
	// and end of the window count as deliveries).
	MaxGapMs float64 `json:"max_gap_ms"`
	// PeakRSSKiB is the broker's largest resident memory during the phase
	// and its drain (0 when not measured).
	PeakRSSKiB int64 `json:"peak_rss_kib,omitempty"`
	// StuckClosed counts stuck connections seen closed during the phase
	// and its drain.
	StuckClosed int `json:"stuck_closed"`
}

// gapMeter measures the longest time between two deliveries to a
// subscriber within a window. The subscriber's reading goroutine records;
// the runner opens and closes windows.
type gapMeter struct {
	from, to atomic.Int64 // the window, Unix nanoseconds
	last     atomic.Int64
	max      atomic.Int64
}

// open starts a window from start to end.
func (g *gapMeter) open(start, end time.Time) {
	g.max.Store(0)
	g.last.Store(start.UnixNano())
	g.to.Store(end.UnixNano())
	g.from.Store(start.UnixNano())
}

// record notes a delivery at now (Unix nanoseconds).
func (g *gapMeter) record(now int64) {
	if now < g.from.Load() || now > g.to.Load() {
		return
	}
	if d := now - g.last.Swap(now); d > g.max.Load() {
		g.max.Store(d)
	}
}

// close ends the window at end and returns the longest gap.
func (g *gapMeter) close(end time.Time) time.Duration {
	e := min(end.UnixNano(), g.to.Load())
	g.to.Store(0) // no more recording
	gap := max(g.max.Load(), e-g.last.Load())
	return time.Duration(gap)
}

// runStuck runs the Stuck scenario.
func (r *runner) runStuck(ctx context.Context, res *Result, rss *RSSStats) {
	cfg := &r.cfg
	sc := &cfg.Stress
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sampler := startRSS(cfg.BrokerPID, sc.RSSInterval, sc.RSSLimit, cancel)
	defer sampler.close(rss)
	stats := &StuckStats{Requested: cfg.Count, KeepAlive: int(sc.StuckKeepAlive / time.Second), Persisted: sc.StuckPersistent}
	res.Stuck = stats
	topic := cfg.TopicPrefix + "/stuck"

	// Publisher 0 publishes the QoS 0 phase and publisher 1 the QoS 1 one,
	// both on one connection, open loop.
	pubs := []*publisher{newPublisher(0, topic, cfg), newPublisher(1, topic, cfg)}
	pubs[0].qos, pubs[1].qos = 0, 1
	for _, p := range pubs {
		p.flow = 0
		p.rate = cfg.perPublisherRate(1)
	}

	var healthy *subscriber
	gaps := &gapMeter{}
	hc := r.connectMany(ctx, 1, "h", true, func(_ int, c *client) error {
		healthy = newSubscriber(c, topic, pubs)
		healthy.gaps = gaps
		return c.subscribe(topic, 1)
	})
	if hc[0] == nil {
		return
	}
	r.subs = []*subscriber{healthy}

	stuck := r.connectStuck(ctx, topic)
	stats.Stuck = len(stuck)
	defer r.releaseStuck(stuck)

	pc := r.connectMany(ctx, 1, "p", true, func(_ int, c *client) error {
		pubs[0].attach(c)
		pubs[1].attach(c) // receives the acknowledgements: phase 0 has none
		return nil
	})
	if pc[0] == nil || ctx.Err() != nil {
		return
	}
	r.pubs = pubs
	res.Publishers, res.Subscribers = 1, 1+len(stuck)
	if cfg.Ready != nil {
		cfg.Ready()
	}

	r.phase.Store(phaseMeasure)
	t0 := time.Now()
	watcher := watchCloses(stuck, t0, closeCheckInterval)
	sampler.window()
	var window time.Duration
	for i, p := range pubs {
		if ctx.Err() != nil {
			break
		}
		ph := StuckPhase{QoS: p.qos}
		closedBefore := watcher.closed.Load()
		r.phase.Store(phaseMeasure)
		start := time.Now()
		end := start.Add(cfg.Duration)
		r.started.Store(start.UnixNano())
		gaps.open(start, end)
		p.loop(start, end, ctx.Done())
		stop := time.Now()
		ph.MaxGapMs = float64(gaps.close(stop)) / float64(time.Millisecond)
		ph.Seconds = stop.Sub(start).Seconds()
		ph.InWindow = healthy.known[i].distinct.Load()
		window += stop.Sub(start)

		r.phase.Store(phaseDrain)
		deadline := stop.Add(cfg.Drain)
		t := healthy.known[i]
		for (t.distinct.Load() < p.sent.Load() || p.inflight.Load() > 0) &&
			time.Now().Before(deadline) && ctx.Err() == nil && !healthy.c.dead.Load() && !p.c.dead.Load() {
			sleepCtx(ctx, 5*time.Millisecond)
		}
		ph.Drained = time.Since(stop).Seconds()
		ph.Published, ph.Acked = p.sent.Load(), p.acked.Load()
		ph.Received = t.distinct.Load()
		if ph.Seconds > 0 {
			ph.PublishRate = float64(ph.Published) / ph.Seconds
			ph.Rate = float64(ph.InWindow) / ph.Seconds
		}
		ph.PeakRSSKiB = max(sampler.window(), 0)
		ph.StuckClosed = int(watcher.closed.Load() - closedBefore)
		stats.Phases = append(stats.Phases, ph)
	}
	res.Seconds = window.Seconds()
	if rss != nil {
		rss.AfterKiB = sampler.sample()
	}
	for _, d := range watcher.finish() {
		stats.ClosedAt = append(stats.ClosedAt, d.Seconds())
	}
	stats.Closed = len(stats.ClosedAt)
	stats.Closes = spreadOf(secondsToDurations(stats.ClosedAt))
	if stats.Phases != nil {
		last := &stats.Phases[len(stats.Phases)-1]
		last.StuckClosed += stats.Closed - sumClosed(stats.Phases) // seen by the final check
	}
	if n := len(stats.Phases); n > 0 && res.Seconds > 0 {
		var sent, recv int64
		for _, ph := range stats.Phases {
			sent += ph.Published
			recv += ph.InWindow
		}
		res.SendRate, res.RecvRate = float64(sent)/res.Seconds, float64(recv)/res.Seconds
	}
}

func sumClosed(phases []StuckPhase) int {
	n := 0
	for _, ph := range phases {
		n += ph.StuckClosed
	}
	return n
}

func secondsToDurations(s []float64) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, v := range s {
		out[i] = time.Duration(v * float64(time.Second))
	}
	return out
}

// connectStuck connects Count subscribers to topic at QoS 1 that will never
// read after their SUBACK, and returns those that succeeded.
func (r *runner) connectStuck(ctx context.Context, topic string) []*rawConn {
	cfg := &r.cfg
	r.phase.Store(phaseConnect)
	start := time.Now()
	out := make([]*rawConn, cfg.Count)
	forEach(ctx, cfg.Count, cfg.Parallel, func(i int) {
		c, err := r.dialRaw(ctx, r.clientID("x", i), cfg.Stress.StuckKeepAlive, cfg.Stress.StuckPersistent)
		if err == nil {
			err = c.subscribeOne(topic, 1, cfg.ConnectTimeout)
			if err != nil {
				c.nc.Close()
			}
		}
		r.countConnect(err)
		if err == nil {
			out[i] = c
		}
	})
	r.mu.Lock()
	r.connect.Seconds += time.Since(start).Seconds()
	r.mu.Unlock()
	var ok []*rawConn
	for _, c := range out {
		if c != nil {
			ok = append(ok, c)
		}
	}
	return ok
}

// subscribeOne sends a SUBSCRIBE of one filter and waits, at most d, for a
// successful SUBACK.
func (c *rawConn) subscribeOne(filter string, qos byte, d time.Duration) error {
	c.nc.SetWriteDeadline(time.Now().Add(d))
	err := c.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: qos}}})
	c.nc.SetWriteDeadline(time.Time{})
	if err != nil {
		return err
	}
	pk, err := c.readUntil(packets.SUBACK, d)
	if err != nil {
		return err
	}
	if codes := pk.(*packets.Suback).ReasonCodes; len(codes) != 1 || codes[0].IsError() {
		return fmt.Errorf("bench: subscription refused: %v", codes)
	}
	return nil
}

// releaseStuck closes the stuck connections and, when their sessions were
// persistent, connects each client again with a clean session so that the
// broker drops what it kept for them.
func (r *runner) releaseStuck(conns []*rawConn) {
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); c.close() }()
	}
	wg.Wait()
	if !r.cfg.Stress.StuckPersistent {
		return
	}
	forEach(context.Background(), r.cfg.Count, r.cfg.Parallel, func(i int) {
		if c, err := r.dialRaw(context.Background(), r.clientID("x", i), 0, false); err == nil {
			c.close()
		}
	})
}

// writeStuck writes the Stuck part of the summary.
func (s *StuckStats) write(p func(string, ...any)) {
	ka := "no keep alive"
	if s.KeepAlive > 0 {
		ka = fmt.Sprintf("keep alive %d s", s.KeepAlive)
	}
	pers := ""
	if s.Persisted {
		pers = ", persistent sessions"
	}
	p("stuck        %d of %d subscribers stuck (%s%s)\n", s.Stuck, s.Requested, ka, pers)
	for _, ph := range s.Phases {
		p("QoS %d phase  published %d (%s msg/s)", ph.QoS, ph.Published, human(ph.PublishRate))
		if ph.QoS > 0 {
			p(", acked %d", ph.Acked)
		}
		p("; healthy subscriber received %d in the window (%s msg/s), %d after %.2f s of drain\n",
			ph.InWindow, human(ph.Rate), ph.Received, ph.Drained)
		p("             longest gap %.1f ms, broker peak RSS %s, stuck connections closed %d\n",
			ph.MaxGapMs, kib(ph.PeakRSSKiB), ph.StuckClosed)
	}
	p("closed       %d stuck connections closed by the broker", s.Closed)
	if s.Closed > 0 {
		at := make([]string, 0, 3)
		at = append(at, fmt.Sprintf("first %.1f s", s.Closes.Min), fmt.Sprintf("median %.1f s", s.Closes.Median), fmt.Sprintf("last %.1f s", s.Closes.Max))
		p(" (%s after publishing began)", strings.Join(at, ", "))
	}
	p("\n")
}
