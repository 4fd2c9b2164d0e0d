package bench

import (
	"context"
	"time"

	"github.com/ternmq/tern/packets"
)

// runRetained publishes Count retained messages at QoS 1, each on its own
// topic "<prefix>/<i>", then times their delivery to a new subscriber to
// "#" (reading the broker's memory once they are delivered), and finally
// clears them unless KeepRetained is set.
func (r *runner) runRetained(ctx context.Context, res *Result, rss *RSSStats) {
	cfg := &r.cfg
	p := r.retainedPublisher(0, int64(cfg.Count))
	pc := r.connectMany(ctx, 1, "p", true, func(_ int, c *client) error { p.attach(c); return nil })
	if pc[0] == nil || ctx.Err() != nil {
		return
	}
	r.pubs = []*publisher{p}
	res.Publishers = 1

	r.phase.Store(phaseMeasure)
	start := time.Now()
	r.started.Store(start.UnixNano())
	p.loop(start, start.Add(cfg.Duration), ctx.Done())
	r.waitAcked(ctx, p)
	stats := &RetainedStats{Stored: p.acked.Load(), StoreSeconds: time.Since(start).Seconds()}
	res.Retained = stats

	var sub *subscriber
	sc := r.connectMany(ctx, 1, "s", true, func(_ int, c *client) error {
		sub = newSubscriber(c, "#", []*publisher{p})
		return nil
	})
	if sc[0] == nil || ctx.Err() != nil {
		return
	}
	r.subs = []*subscriber{sub}
	res.Subscribers = 1
	r.phase.Store(phaseMeasure)
	t0 := time.Now()
	r.started.Store(t0.UnixNano())
	sub.c.queue(func(b []byte) []byte {
		s := packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "#", QoS: cfg.QoS}}}
		b, _ = s.Encode(b, cfg.Version)
		return b
	})
	if err := sub.c.waitSubAck(); err != nil {
		r.fail(err)
	}
	t := sub.known[0]
	end := t0.Add(cfg.Duration)
	for t.distinct.Load() < p.sent.Load() && time.Now().Before(end) && ctx.Err() == nil && !sub.c.dead.Load() {
		sleepCtx(ctx, time.Millisecond)
	}
	stats.Delivered = t.distinct.Load()
	if rss != nil {
		rss.AfterKiB = readRSS(cfg.BrokerPID)
	}
	if last := sub.lastAt.Load(); last > 0 && stats.Delivered > 0 {
		stats.Seconds = time.Duration(last - t0.UnixNano()).Seconds()
		stats.Rate = float64(stats.Delivered) / stats.Seconds
	}
	res.Seconds = stats.Seconds
	res.SendRate = float64(stats.Stored) / stats.StoreSeconds
	res.RecvRate = stats.Rate

	if cfg.KeepRetained || p.inflight.Load() != 0 || ctx.Err() != nil {
		return
	}
	// Clear the messages: an empty retained message deletes one. The
	// subscriber goes first so that it does not count the deletions.
	sub.c.close()
	clear := r.retainedPublisher(1, p.sent.Load())
	clear.empty = true
	clear.attach(p.c)
	now := time.Now()
	clear.loop(now, now.Add(cfg.Duration), ctx.Done())
	r.waitAcked(ctx, clear)
}

// retainedPublisher returns a QoS 1 publisher of limit retained messages,
// one per topic, without flow control.
func (r *runner) retainedPublisher(n uint32, limit int64) *publisher {
	p := newPublisher(n, r.cfg.TopicPrefix, &r.cfg)
	p.qos, p.retain, p.perMessage, p.limit, p.flow = 1, true, true, limit, 0
	return p
}

// waitAcked waits, at most Drain, for p's outstanding acknowledgements.
func (r *runner) waitAcked(ctx context.Context, p *publisher) {
	deadline := time.Now().Add(r.cfg.Drain)
	for p.inflight.Load() > 0 && !p.c.dead.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		sleepCtx(ctx, time.Millisecond)
	}
}
