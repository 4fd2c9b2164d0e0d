package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/ternmq/tern/packets"
)

// RetFloodStats describes a RetFlood run. Memory is in KiB, 0 when not
// measured.
type RetFloodStats struct {
	// Stored counts the retained messages published and acknowledged, in
	// StoreSeconds.
	Stored       int64   `json:"stored"`
	StoreSeconds float64 `json:"store_seconds"`
	// Repeat is the number of SUBSCRIBE "#" packets to send; Written those
	// the client managed to write (the broker stops reading when it
	// stops), the last after WriteSeconds.
	Repeat       int     `json:"repeat"`
	QoS          byte    `json:"qos"`
	Written      int     `json:"written"`
	WriteSeconds float64 `json:"write_seconds"`
	// Held is how long the client stayed connected; ClosedByBroker tells
	// whether the broker closed it first, ClosedAfter when (seconds from
	// the first SUBSCRIBE).
	Held           float64 `json:"held_seconds"`
	ClosedByBroker bool    `json:"closed_by_broker"`
	ClosedAfter    float64 `json:"closed_after_s,omitempty"`
	// StoredRSSKiB is the broker's memory once the messages were stored;
	// PeakRSSKiB its peak while the client was connected; LeftRSSKiB when
	// the client left; AfterRSSKiB Settle later.
	StoredRSSKiB int64 `json:"stored_rss_kib,omitempty"`
	PeakRSSKiB   int64 `json:"peak_rss_kib,omitempty"`
	LeftRSSKiB   int64 `json:"left_rss_kib,omitempty"`
	AfterRSSKiB  int64 `json:"after_rss_kib,omitempty"`
	// Cleared counts the retained messages deleted at the end.
	Cleared int64 `json:"cleared"`
}

// runRetFlood runs the RetFlood scenario.
func (r *runner) runRetFlood(ctx context.Context, res *Result, rss *RSSStats) {
	cfg := &r.cfg
	sc := &cfg.Stress
	loadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	sampler := startRSS(cfg.BrokerPID, sc.RSSInterval, sc.RSSLimit, cancel)
	defer sampler.close(rss)
	stats := &RetFloodStats{Repeat: sc.Repeat, QoS: cfg.QoS}
	res.RetFlood = stats

	p := r.retainedPublisher(0, int64(cfg.Count))
	pc := r.connectMany(loadCtx, 1, "p", true, func(_ int, c *client) error { p.attach(c); return nil })
	if pc[0] == nil || loadCtx.Err() != nil {
		return
	}
	r.pubs = []*publisher{p}
	res.Publishers = 1
	r.phase.Store(phaseMeasure)
	start := time.Now()
	r.started.Store(start.UnixNano())
	p.loop(start, start.Add(max(cfg.Duration, time.Minute)), loadCtx.Done())
	r.waitAcked(loadCtx, p)
	stats.Stored, stats.StoreSeconds = p.acked.Load(), time.Since(start).Seconds()
	res.Sent, res.SendRate = p.sent.Load(), float64(stats.Stored)/stats.StoreSeconds
	sampler.window()
	stats.StoredRSSKiB = max(sampler.sample(), 0)

	if loadCtx.Err() == nil {
		r.flood(loadCtx, stats, sampler)
		res.Subscribers = 1
	}
	sleepCtx(ctx, sc.Settle)
	stats.AfterRSSKiB = max(sampler.sample(), 0)
	if rss != nil {
		rss.AfterKiB = stats.AfterRSSKiB
	}

	if cfg.KeepRetained || ctx.Err() != nil {
		return
	}
	clear := r.retainedPublisher(1, p.sent.Load())
	clear.empty = true
	if p.c.dead.Load() {
		cc := r.connectMany(ctx, 1, "q", true, func(_ int, c *client) error { clear.attach(c); return nil })
		if cc[0] == nil {
			return
		}
	} else {
		clear.attach(p.c)
	}
	now := time.Now()
	clear.loop(now, now.Add(max(cfg.Duration, time.Minute)), ctx.Done())
	r.waitAcked(ctx, clear)
	stats.Cleared = clear.acked.Load()
}

// flood connects the flooding client, sends Repeat SUBSCRIBE "#" packets
// without ever reading, holds the connection for Duration (less if the
// broker closes it or passes the memory limit) and closes it.
func (r *runner) flood(ctx context.Context, stats *RetFloodStats, sampler *rssSampler) {
	cfg := &r.cfg
	c, err := r.dialRaw(ctx, r.clientID("f", 0), cfg.KeepAlive, false)
	if err != nil {
		r.fail(fmt.Errorf("flooding client: %w", err))
		return
	}
	r.mu.Lock()
	r.connect.Attempted++
	r.connect.Succeeded++
	r.mu.Unlock()
	var buf []byte
	for i := range stats.Repeat {
		s := packets.Subscribe{PacketID: uint16(i%65535 + 1), Subscriptions: []packets.Subscription{{Filter: "#", QoS: cfg.QoS}}}
		buf, _ = s.Encode(buf, cfg.Version)
	}
	size := len(buf) / stats.Repeat // every packet has the same length
	start := time.Now()
	end := start.Add(cfg.Duration)
	written := make(chan int, 1)
	go func() {
		c.nc.SetWriteDeadline(end)
		n, _ := c.nc.Write(buf)
		written <- n
	}()
	w := watchCloses([]*rawConn{c}, start, closeCheckInterval)
	t := time.NewTimer(cfg.Duration)
	defer t.Stop()
	tick := time.NewTicker(closeCheckInterval)
	defer tick.Stop()
	gotWritten := false
wait:
	for {
		select {
		case n := <-written:
			stats.Written, stats.WriteSeconds = n/size, time.Since(start).Seconds()
			gotWritten = true
		case <-tick.C:
			if w.closed.Load() > 0 {
				break wait
			}
		case <-t.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	stats.Held = time.Since(start).Seconds()
	stats.PeakRSSKiB = max(sampler.window(), 0)
	stats.LeftRSSKiB = max(sampler.sample(), 0)
	closes := w.finish() // before closing: the descriptor must still be ours
	c.nc.Close()
	if len(closes) > 0 {
		stats.ClosedByBroker, stats.ClosedAfter = true, closes[0].Seconds()
	}
	if !gotWritten {
		n := <-written
		stats.Written, stats.WriteSeconds = n/size, time.Since(start).Seconds()
	}
}

// write writes the RetFlood part of the summary.
func (s *RetFloodStats) write(p func(string, ...any)) {
	p("retained     %d stored in %.2f s; broker RSS then %s\n", s.Stored, s.StoreSeconds, kib(s.StoredRSSKiB))
	p("flood        %d of %d SUBSCRIBE \"#\" (QoS %d) written in %.2f s, never reading; held %.1f s",
		s.Written, s.Repeat, s.QoS, s.WriteSeconds, s.Held)
	if s.ClosedByBroker {
		p(", closed by the broker after %.1f s", s.ClosedAfter)
	}
	p("\n")
	p("broker RSS   peak %s while connected, %s when it left, %s after settling\n", kib(s.PeakRSSKiB), kib(s.LeftRSSKiB), kib(s.AfterRSSKiB))
	p("cleared      %d retained messages\n", s.Cleared)
}
