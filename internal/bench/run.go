package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Run phases, for progress lines.
const (
	phaseConnect int32 = iota
	phaseMeasure
	phaseDrain
	phaseDone
	phaseStress // a stress scenario's own status line (runner.status)
)

// runner holds the state of one run.
type runner struct {
	cfg   Config
	runID uint32

	errs     atomic.Int64
	errMu    sync.Mutex
	firstErr error

	mu       sync.Mutex
	clients  []*client // every connected client, for pings and closing
	connect  ConnectStats
	connects atomic.Int64 // successful connections, for progress
	failures atomic.Int64 // failed connections, for progress

	pubs []*publisher
	subs []*subscriber

	phase   atomic.Int32
	started atomic.Int64 // Unix nanoseconds when the window started
	status  atomic.Value // func() string: the progress line in phaseStress
}

// setStatus makes fn give the progress lines from now on.
func (r *runner) setStatus(fn func() string) {
	r.status.Store(fn)
	r.phase.Store(phaseStress)
}

// Run runs one benchmark and returns its summary. It returns an error only
// for an invalid configuration; failures during the run are counted in the
// result. Cancelling ctx ends the run early, still with a result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, runID: rand.Uint32()}
	res := &Result{
		Scenario: cfg.Scenario, Broker: cfg.Addr, Version: cfg.Version, QoS: cfg.QoS,
		PayloadSize: cfg.PayloadSize,
	}
	if cfg.QoS > 0 || cfg.Scenario == Retained || cfg.Scenario == Stuck {
		res.Window = cfg.Window
	}
	if cfg.Flow > 0 {
		res.Flow = cfg.Flow
	}
	var rss *RSSStats
	if cfg.BrokerPID > 0 {
		rss = &RSSStats{BeforeKiB: readRSS(cfg.BrokerPID)}
	}
	done := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); r.progress(done) }()
	go func() { defer bg.Done(); r.keepAlive(done) }()

	switch cfg.Scenario {
	case Conn:
		r.runConn(ctx, res, rss)
	case Retained:
		r.runRetained(ctx, res, rss)
	case Stuck:
		r.runStuck(ctx, res, rss)
	case RetFlood:
		r.runRetFlood(ctx, res, rss)
	case Partial:
		r.runPartial(ctx, res, rss)
	case Filters:
		r.runFilters(ctx, res, rss)
	default:
		r.runPubSub(ctx, res, rss)
	}
	r.phase.Store(phaseDone)
	close(done)
	bg.Wait()
	r.closeAll()
	r.collect(res)
	if cfg.Scenario == Retained {
		res.Latency = nil // the messages were published long before
	}
	if rss != nil {
		res.BrokerRSS = rss
	}
	return res, nil
}

// fail counts an error during the run.
func (r *runner) fail(err error) {
	r.errs.Add(1)
	r.errMu.Lock()
	if r.firstErr == nil {
		r.firstErr = err
	}
	r.errMu.Unlock()
}

func (r *runner) clientID(role string, i int) string {
	return r.cfg.ClientPrefix + "-" + fmt.Sprintf("%08x", r.runID) + "-" + role + strconv.Itoa(i)
}

// connectMany opens n connections, at most Parallel at a time and one every
// ConnectInterval, running setup on each once its read loop runs. It returns
// the clients by index, nil where connecting or setup failed.
func (r *runner) connectMany(ctx context.Context, n int, role string, busy bool, setup func(i int, c *client) error) []*client {
	cfg := &r.cfg
	r.phase.Store(phaseConnect)
	start := time.Now()
	out := make([]*client, n)
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	var pace *time.Ticker
	if cfg.ConnectInterval > 0 {
		pace = time.NewTicker(cfg.ConnectInterval)
		defer pace.Stop()
	}
loop:
	for i := range n {
		if pace != nil && i > 0 {
			select {
			case <-pace.C:
			case <-ctx.Done():
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			r.failures.Add(int64(n - i))
			r.mu.Lock()
			r.connect.Attempted += n - i
			r.connect.Failed += n - i
			r.mu.Unlock()
			break loop
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := r.dial(ctx, r.clientID(role, i), busy)
			if err == nil {
				c.start()
				if setup != nil {
					if err = setup(i, c); err != nil {
						c.close()
					}
				}
			}
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
			r.clients = append(r.clients, c)
			out[i] = c
		}()
	}
	wg.Wait()
	r.mu.Lock()
	r.connect.Seconds += time.Since(start).Seconds()
	r.mu.Unlock()
	return out
}

// runConn opens Count idle connections and holds them for Duration.
func (r *runner) runConn(ctx context.Context, res *Result, rss *RSSStats) {
	cfg := &r.cfg
	var setup func(i int, c *client) error
	if cfg.ConnSubscribe {
		setup = func(i int, c *client) error {
			return c.subscribe(fmt.Sprintf("%s/%d", cfg.TopicPrefix, i), cfg.QoS)
		}
	}
	r.connectMany(ctx, cfg.Count, "c", false, setup)
	r.phase.Store(phaseMeasure)
	start := time.Now()
	r.started.Store(start.UnixNano())
	settle := min(time.Second, cfg.Duration/2)
	if rss != nil {
		sleepCtx(ctx, settle)
		rss.AfterKiB = readRSS(cfg.BrokerPID)
		if n := r.connects.Load(); n > 0 {
			rss.PerConnection = float64(rss.AfterKiB-rss.BeforeKiB) * 1024 / float64(n)
		}
	}
	sleepCtx(ctx, cfg.Duration-time.Since(start))
	if rss != nil && ctx.Err() == nil {
		rss.HeldKiB = readRSS(cfg.BrokerPID)
		if n := r.connects.Load(); n > 0 {
			rss.PerConnectionHeld = float64(rss.HeldKiB-rss.BeforeKiB) * 1024 / float64(n)
		}
	}
	res.Seconds = time.Since(start).Seconds()
}

// topology returns the publishers and the subscribers' filters and expected
// publishers of a publish/subscribe scenario.
func (r *runner) topology() (pubs []*publisher, filters []string, expects [][]*publisher) {
	cfg := &r.cfg
	topic := func(i int) string { return cfg.TopicPrefix + "/" + strconv.Itoa(i) }
	nPub := 0
	switch cfg.Scenario {
	case Pub, FanIn, Pairs, Latency:
		nPub = cfg.Count
	case FanOut:
		nPub = 1
	}
	pubs = make([]*publisher, nPub)
	rate := cfg.perPublisherRate(nPub)
	for i := range pubs {
		p := newPublisher(uint32(i), topic(i), cfg)
		p.rate = rate
		p.phase = 1 - float64(i)/float64(nPub)
		p.limit = max(cfg.Limit, 0)
		pubs[i] = p
	}
	switch cfg.Scenario {
	case Sub:
		for range cfg.Count {
			filters = append(filters, cfg.Filter)
			expects = append(expects, nil)
		}
	case FanIn:
		filters = []string{cfg.TopicPrefix + "/+"}
		expects = [][]*publisher{pubs}
	case FanOut:
		for range cfg.Count {
			filters = append(filters, topic(0))
			expects = append(expects, pubs)
		}
	case Pairs, Latency:
		for i := range cfg.Count {
			filters = append(filters, topic(i))
			expects = append(expects, pubs[i:i+1])
		}
	}
	return pubs, filters, expects
}

// runPubSub runs the Pub, Sub, FanIn, FanOut, Pairs and Latency scenarios:
// subscribers connect and subscribe, publishers connect, then publishers
// publish for Duration, then the run drains.
func (r *runner) runPubSub(ctx context.Context, res *Result, rss *RSSStats) {
	cfg := &r.cfg
	pubs, filters, expects := r.topology()
	subs := make([]*subscriber, len(filters))
	clients := r.connectMany(ctx, len(filters), "s", true, func(i int, c *client) error {
		s := newSubscriber(c, filters[i], expects[i])
		s.dynamic = cfg.Scenario == Sub
		subs[i] = s
		return c.subscribe(filters[i], cfg.QoS)
	})
	for i, c := range clients {
		if c == nil {
			continue
		}
		s := subs[i]
		r.subs = append(r.subs, s)
		for _, t := range s.known {
			t.pub.subs = append(t.pub.subs, t)
		}
	}
	clients = r.connectMany(ctx, len(pubs), "p", true, func(i int, c *client) error {
		pubs[i].attach(c)
		return nil
	})
	for i, c := range clients {
		if c != nil {
			r.pubs = append(r.pubs, pubs[i])
		}
	}
	res.Publishers, res.Subscribers = len(r.pubs), len(r.subs)
	if ctx.Err() != nil {
		return
	}
	if cfg.Ready != nil {
		cfg.Ready()
	}

	r.phase.Store(phaseMeasure)
	start := time.Now()
	end := start.Add(cfg.Duration)
	r.started.Store(start.UnixNano())
	var wg sync.WaitGroup
	for _, p := range r.pubs {
		wg.Add(1)
		go func() { defer wg.Done(); p.loop(start, end, ctx.Done()) }()
	}
	pubsDone := make(chan struct{})
	go func() { wg.Wait(); close(pubsDone) }()
	r.waitWindow(ctx, end, pubsDone)
	res.Seconds = time.Since(start).Seconds()
	sent, _, recv := r.totals()
	res.SendRate = float64(sent) / res.Seconds
	res.RecvRate = float64(recv) / res.Seconds
	if rss != nil {
		rss.AfterKiB = readRSS(cfg.BrokerPID)
	}
	wg.Wait()
	res.Drained = r.drain(ctx).Seconds()
}

// waitWindow waits until end, ctx's end, all publishers' reaching their
// limit or, for Sub with a Limit, the limit's being reached.
func (r *runner) waitWindow(ctx context.Context, end time.Time, pubsDone <-chan struct{}) {
	if r.cfg.Scenario != Sub || r.cfg.Limit <= 0 {
		if len(r.pubs) == 0 || r.cfg.Limit <= 0 {
			sleepCtx(ctx, time.Until(end))
			return
		}
		t := time.NewTimer(time.Until(end))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-pubsDone:
		}
		return
	}
	for time.Now().Before(end) && ctx.Err() == nil {
		_, _, recv := r.totals()
		if recv >= r.cfg.Limit {
			return
		}
		sleepCtx(ctx, min(10*time.Millisecond, time.Until(end)))
	}
}

// outstanding returns the acknowledgements and deliveries still awaited.
func (r *runner) outstanding() int64 {
	var n int64
	for _, p := range r.pubs {
		if !p.c.dead.Load() {
			n += p.inflight.Load()
		}
	}
	for _, s := range r.subs {
		if s.c.dead.Load() {
			continue
		}
		for _, t := range s.known {
			if t != nil {
				n += max(0, t.pub.sent.Load()-t.distinct.Load())
			}
		}
	}
	return n
}

// drain waits, at most Drain, for everything outstanding to arrive.
func (r *runner) drain(ctx context.Context) time.Duration {
	r.phase.Store(phaseDrain)
	start := time.Now()
	deadline := start.Add(r.cfg.Drain)
	for r.outstanding() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		sleepCtx(ctx, 5*time.Millisecond)
	}
	return time.Since(start)
}

// totals returns messages sent, acknowledged and received so far.
func (r *runner) totals() (sent, acked, recv int64) {
	for _, p := range r.pubs {
		sent += p.sent.Load()
		acked += p.acked.Load()
	}
	for _, s := range r.subs {
		recv += s.received.Load()
	}
	return sent, acked, recv
}

// closeAll closes every connection, many at a time.
func (r *runner) closeAll() {
	r.mu.Lock()
	clients := r.clients
	r.mu.Unlock()
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, c := range clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.close()
			<-sem
		}()
	}
	wg.Wait()
}

// collect fills in the result's counts once every connection has ended.
func (r *runner) collect(res *Result) {
	r.mu.Lock()
	res.Connect = r.connect
	r.mu.Unlock()
	if res.Connect.Seconds > 0 {
		res.Connect.Rate = float64(res.Connect.Succeeded) / res.Connect.Seconds
	}
	var lat histogram
	for _, p := range r.pubs {
		res.Sent += p.sent.Load()
		res.Acked += p.acked.Load()
		res.Refused += p.refused.Load()
	}
	for _, s := range r.subs {
		res.Received += s.received.Load()
		res.Unexpected += s.unexpected.Load()
		lat.merge(&s.latency)
		s.trackers(func(t *tracker) {
			exp := t.expected()
			res.Expected += exp
			res.Lost += max(0, exp-t.distinct.Load())
			res.Duplicates += t.dups
			res.OutOfOrder += t.outOfOrder
		})
	}
	res.Latency = latencyStats(&lat)
	res.Errors = r.errs.Load() + int64(res.Connect.Failed)
	r.errMu.Lock()
	if r.firstErr != nil {
		res.FirstError = r.firstErr.Error()
	}
	r.errMu.Unlock()
}

// progress writes a line every second until done is closed.
func (r *runner) progress(done <-chan struct{}) {
	w := r.cfg.Progress
	if w == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastSent, lastAcked, lastRecv int64
	var lastAt time.Time
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		switch r.phase.Load() {
		case phaseConnect:
			fmt.Fprintf(w, "connecting  %d connected, %d failed\n", r.connects.Load(), r.failures.Load())
		case phaseMeasure:
			now := time.Now()
			start := time.Unix(0, r.started.Load())
			if lastAt.Before(start) {
				lastAt, lastSent, lastAcked, lastRecv = start, 0, 0, 0
			}
			sent, acked, recv := r.totals()
			per := func(n int64) string { return human(float64(n) / now.Sub(lastAt).Seconds()) }
			line := fmt.Sprintf("%5.1fs  sent %8s/s  recv %8s/s", now.Sub(start).Seconds(), per(sent-lastSent), per(recv-lastRecv))
			if r.cfg.QoS > 0 {
				line += fmt.Sprintf("  acked %8s/s", per(acked-lastAcked))
			}
			line += fmt.Sprintf("  conns %d  errors %d\n", r.connects.Load(), r.errs.Load())
			io.WriteString(w, line)
			lastAt, lastSent, lastAcked, lastRecv = now, sent, acked, recv
		case phaseDrain:
			fmt.Fprintf(w, "draining    %d outstanding, errors %d\n", r.outstanding(), r.errs.Load())
		case phaseStress:
			if fn, ok := r.status.Load().(func() string); ok {
				fmt.Fprintln(w, fn())
			}
		}
	}
}

// keepAlive pings every connection at half the keep alive until done.
func (r *runner) keepAlive(done <-chan struct{}) {
	t := time.NewTicker(r.cfg.KeepAlive / 2)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		r.mu.Lock()
		clients := r.clients
		r.mu.Unlock()
		for _, c := range clients {
			c.ping()
		}
	}
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
