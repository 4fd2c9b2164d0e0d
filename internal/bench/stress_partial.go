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

// PartialStats describes a Partial run; a part that did not run is nil.
type PartialStats struct {
	// KeepAlive is the keep alive, in seconds, every connection sent in
	// CONNECT; none of them ever pings.
	KeepAlive int       `json:"keepalive_s"`
	A         *PartialA `json:"a,omitempty"`
	B         *PartialB `json:"b,omitempty"`
	C         *PartialC `json:"c,omitempty"`
}

// PartialA describes part (a): connections that send the first 3 bytes of
// a PUBLISH (its fixed header) and nothing more.
type PartialA struct {
	Connections int `json:"connections"`
	Connected   int `json:"connected"`
	// Closes are the times from the partial bytes to the broker's closing
	// each connection, for those it closed within BoundSeconds; StillOpen
	// counts the others.
	BoundSeconds float64 `json:"bound_s"`
	Closes       Spread  `json:"closes"`
	StillOpen    int     `json:"still_open"`
}

// PartialB describes part (b): connections that send a PUBLISH fixed
// header declaring Declared bytes, then Body bytes of it, and hold.
type PartialB struct {
	Connections int `json:"connections"`
	Connected   int `json:"connected"`
	Declared    int `json:"declared"`
	Body        int `json:"body"`
	// Complete counts connections that wrote their whole Body within the
	// connect timeout; Written is the bytes written over all.
	Complete int   `json:"complete"`
	Written  int64 `json:"written_bytes"`
	// Broker memory in KiB: before the connections, 1 s after the last
	// write, the peak while holding and at the end of the hold.
	BeforeRSSKiB int64 `json:"before_rss_kib,omitempty"`
	AfterRSSKiB  int64 `json:"after_rss_kib,omitempty"`
	PeakRSSKiB   int64 `json:"peak_rss_kib,omitempty"`
	EndRSSKiB    int64 `json:"end_rss_kib,omitempty"`
	// PerConnection is (After - Before) / Connected, in bytes.
	PerConnection float64 `json:"per_connection_bytes,omitempty"`
	// HeldSeconds is the hold; Closes are the times from a connection's
	// last write to the broker's closing it, for those it closed.
	HeldSeconds float64 `json:"held_s"`
	Closes      Spread  `json:"closes"`
}

// PartialC describes part (c): one connection that drips a PUBLISH
// declaring Declared bytes at one byte a second.
type PartialC struct {
	Declared     int     `json:"declared"`
	BoundSeconds float64 `json:"bound_s"`
	// Dripped counts the bytes sent; Closed tells whether the broker closed
	// the connection within the bound, ClosedAfter when.
	Dripped     int     `json:"dripped"`
	Closed      bool    `json:"closed"`
	ClosedAfter float64 `json:"closed_after_s,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// runPartial runs the Partial scenario: part (c) throughout, parts (a)
// then (b) meanwhile.
func (r *runner) runPartial(ctx context.Context, res *Result, rss *RSSStats) {
	cfg := &r.cfg
	sc := &cfg.Stress
	loadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	sampler := startRSS(cfg.BrokerPID, sc.RSSInterval, sc.RSSLimit, cancel)
	defer sampler.close(rss)
	stats := &PartialStats{KeepAlive: int(cfg.KeepAlive / time.Second)}
	res.Partial = stats
	r.phase.Store(phaseStress)

	var drip sync.WaitGroup
	if strings.Contains(sc.Parts, "c") {
		stats.C = &PartialC{Declared: sc.Declared, BoundSeconds: sc.DripMax.Seconds()}
		drip.Add(1)
		go func() { defer drip.Done(); r.partialDrip(loadCtx, stats.C) }()
	}
	if strings.Contains(sc.Parts, "a") {
		stats.A = r.partialHeaders(loadCtx)
		if strings.Contains(sc.Parts, "b") {
			sleepCtx(loadCtx, sc.Settle)
		}
	}
	if strings.Contains(sc.Parts, "b") && loadCtx.Err() == nil {
		stats.B = r.partialBodies(loadCtx, sampler)
	}
	drip.Wait()
	sleepCtx(ctx, sc.Settle)
	if rss != nil {
		rss.AfterKiB = sampler.sample()
	}
}

// partialPublish returns the bytes of a PUBLISH of Declared remaining
// length (topic, then payload 'x's), up to n bytes of its body.
func (r *runner) partialPublish(declared, n int) []byte {
	topic := r.cfg.TopicPrefix + "/partial"
	b := []byte{0x30}
	for v := declared; ; {
		d := byte(v % 128)
		v /= 128
		if v > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if v == 0 {
			break
		}
	}
	body := make([]byte, 0, n)
	body = append(body, byte(len(topic)>>8), byte(len(topic)))
	body = append(body, topic...)
	for len(body) < n {
		body = append(body, 'x')
	}
	return append(b, body[:n]...)
}

// partialHeaders runs part (a).
func (r *runner) partialHeaders(ctx context.Context) *PartialA {
	cfg := &r.cfg
	a := &PartialA{Connections: cfg.Count, BoundSeconds: cfg.Stress.CloseBound.Seconds()}
	pk := packets.Publish{Topic: cfg.TopicPrefix + "/partial", Payload: make([]byte, cfg.PayloadSize)}
	full, _ := pk.Encode(nil, cfg.Version)
	head := full[:3]
	var (
		mu     sync.Mutex
		closes []time.Duration
		open   int
		conns  []*rawConn
		wg     sync.WaitGroup
		status atomic.Int64
	)
	r.setStatus(func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("partial (a)  %d connected, %d closed by the broker, %d errors", status.Load(), len(closes), r.errs.Load())
	})
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.nc.SetReadDeadline(time.Now())
		}
	})
	defer stop()
	forEach(ctx, cfg.Count, cfg.Parallel, func(i int) {
		c, err := r.dialRaw(ctx, r.clientID("a", i), cfg.KeepAlive, false)
		r.countConnect(err)
		if err != nil {
			return
		}
		c.nc.SetWriteDeadline(time.Now().Add(cfg.ConnectTimeout))
		if _, err := c.nc.Write(head); err != nil {
			r.fail(fmt.Errorf("partial (a): %w", err))
			c.nc.Close()
			return
		}
		sent := time.Now()
		status.Add(1)
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := c.waitClosed(sent.Add(cfg.Stress.CloseBound))
			mu.Lock()
			defer mu.Unlock()
			if at.IsZero() {
				open++
			} else {
				closes = append(closes, at.Sub(sent))
			}
		}()
	})
	wg.Wait()
	for _, c := range conns {
		c.nc.Close()
	}
	a.Connected = int(status.Load())
	a.Closes = spreadOf(closes)
	a.StillOpen = open
	return a
}

// partialBodies runs part (b).
func (r *runner) partialBodies(ctx context.Context, sampler *rssSampler) *PartialB {
	cfg := &r.cfg
	sc := &cfg.Stress
	b := &PartialB{Connections: sc.Large, Declared: sc.Declared, Body: sc.Body}
	b.BeforeRSSKiB = max(sampler.sample(), 0)
	data := r.partialPublish(sc.Declared, sc.Body)
	var (
		mu       sync.Mutex
		conns    []*rawConn
		lastSent []time.Time
		written  atomic.Int64
		complete atomic.Int64
	)
	r.setStatus(func() string {
		return fmt.Sprintf("partial (b)  %d connected, %d complete, %d MiB written, errors %d",
			r.connects.Load(), complete.Load(), written.Load()>>20, r.errs.Load())
	})
	forEach(ctx, sc.Large, cfg.Parallel, func(i int) {
		c, err := r.dialRaw(ctx, r.clientID("b", i), cfg.KeepAlive, false)
		r.countConnect(err)
		if err != nil {
			return
		}
		c.nc.SetWriteDeadline(time.Now().Add(cfg.ConnectTimeout))
		n, err := c.nc.Write(data)
		written.Add(int64(n))
		if err == nil {
			complete.Add(1)
		}
		mu.Lock()
		conns = append(conns, c)
		lastSent = append(lastSent, time.Now())
		mu.Unlock()
	})
	b.Connected, b.Complete, b.Written = len(conns), int(complete.Load()), written.Load()
	sleepCtx(ctx, time.Second)
	b.AfterRSSKiB = max(sampler.sample(), 0)
	sampler.window()
	if b.Connected > 0 && b.AfterRSSKiB > 0 {
		b.PerConnection = float64(b.AfterRSSKiB-b.BeforeRSSKiB) * 1024 / float64(b.Connected)
	}
	start := time.Now()
	end := start.Add(cfg.Duration)
	stop := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			c.nc.SetReadDeadline(time.Now())
		}
	})
	defer stop()
	var closes []time.Duration
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if at := c.waitClosed(end); !at.IsZero() {
				mu.Lock()
				closes = append(closes, at.Sub(lastSent[i]))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	b.HeldSeconds = time.Since(start).Seconds()
	b.PeakRSSKiB = max(sampler.window(), 0)
	b.EndRSSKiB = max(sampler.sample(), 0)
	for _, c := range conns {
		c.nc.Close()
	}
	b.Closes = spreadOf(closes)
	return b
}

// partialDrip runs part (c).
func (r *runner) partialDrip(ctx context.Context, c *PartialC) {
	cfg := &r.cfg
	conn, err := r.dialRaw(ctx, r.clientID("c", 0), cfg.KeepAlive, false)
	r.countConnect(err)
	if err != nil {
		c.Error = err.Error()
		return
	}
	defer conn.nc.Close()
	data := r.partialPublish(cfg.Stress.Declared, 64)
	start := time.Now()
	end := start.Add(cfg.Stress.DripMax)
	closed := make(chan time.Time, 1)
	go func() { closed <- conn.waitClosed(end) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; ; i++ {
		if i < len(data) {
			conn.nc.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := conn.nc.Write(data[i : i+1]); err == nil {
				c.Dripped++
			}
		}
		select {
		case at := <-closed:
			if !at.IsZero() {
				c.Closed, c.ClosedAfter = true, at.Sub(start).Seconds()
			}
			return
		case <-ctx.Done():
			conn.nc.SetReadDeadline(time.Now())
			<-closed
			return
		case <-tick.C:
		}
	}
}

// countConnect counts a connection attempt of a stress scenario.
func (r *runner) countConnect(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connect.Attempted++
	if err != nil {
		r.connect.Failed++
		r.failures.Add(1)
		r.errMu.Lock()
		if r.firstErr == nil {
			r.firstErr = fmt.Errorf("connect: %w", err)
		}
		r.errMu.Unlock()
		return
	}
	r.connect.Succeeded++
	r.connects.Add(1)
}

// write writes the Partial part of the summary.
func (s *PartialStats) write(p func(string, ...any)) {
	if a := s.A; a != nil {
		p("partial (a)  %d of %d connections sent a PUBLISH fixed header and stopped (keep alive %d s)\n", a.Connected, a.Connections, s.KeepAlive)
		p("             closed by the broker: %s; still open after %.0f s: %d\n", a.Closes, a.BoundSeconds, a.StillOpen)
	}
	if b := s.B; b != nil {
		p("partial (b)  %d of %d connections declared %d bytes and sent %d (%d complete, %.1f MiB in all)\n",
			b.Connected, b.Connections, b.Declared, b.Body, b.Complete, float64(b.Written)/(1<<20))
		p("             broker RSS %s before, %s after (%.0f bytes per connection), peak %s, %s after holding %.1f s\n",
			kib(b.BeforeRSSKiB), kib(b.AfterRSSKiB), b.PerConnection, kib(b.PeakRSSKiB), kib(b.EndRSSKiB), b.HeldSeconds)
		p("             closed by the broker: %s\n", b.Closes)
	}
	if c := s.C; c != nil {
		p("partial (c)  dripped %d bytes of a PUBLISH declaring %d at 1 byte/s: ", c.Dripped, c.Declared)
		switch {
		case c.Error != "":
			p("could not run: %s\n", c.Error)
		case c.Closed:
			p("closed by the broker after %.1f s\n", c.ClosedAfter)
		default:
			p("still open after %.0f s\n", c.BoundSeconds)
		}
	}
}
