package events

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/topics"
)

// WebhookOptions configure a webhook. URL is required.
type WebhookOptions struct {
	// Name labels the webhook's metrics and logs; default the URL's host.
	Name string
	URL  string
	// Events are the events sent (EventNames); empty sends all.
	Events []string
	// Topics are topic filters that message events must match; empty
	// matches every topic but those starting with '$'.
	Topics []string
	// Headers are added to every request (Authorization, ...).
	Headers map[string]string
	// NoPayload leaves message payloads out of message events.
	NoPayload bool

	// QueueSize is the most events waiting to be sent; default 10000. A
	// full queue drops new events (counted: reason queue_full).
	QueueSize int
	// QueueBytes bounds the memory the waiting events hold (their topics
	// and payloads, roughly); default 64 MiB.
	QueueBytes int
	// BatchSize is the most events per request; default 1000 (measured:
	// with 100 a loaded machine spent its time on requests, see
	// BENCHMARKS.md).
	BatchSize int
	// BatchDelay is the longest an event waits for its batch to fill;
	// default 1s.
	BatchDelay time.Duration
	// Timeout bounds each request; default 5s.
	Timeout time.Duration
	// MaxRetries is how often a failed batch is sent again before it is
	// dropped (reason retries); 0 retries for as long as it takes. Either
	// way the queue keeps filling meanwhile, within its bounds.
	MaxRetries int
	// RetryBackoff is the wait after the first failure, doubled after each
	// further one up to MaxBackoff; defaults 1s and 30s.
	RetryBackoff time.Duration
	MaxBackoff   time.Duration
	// TLS configures HTTPS to the endpoint; nil uses the system's roots.
	TLS *tls.Config
	// Node names the broker in the events ("" is the host name).
	Node string
	// Logger receives the webhook's logs; nil uses slog.Default().
	Logger *slog.Logger
}

// Drop reasons of a webhook's events.
const (
	DropQueueFull = "queue_full" // the queue was full (or past QueueBytes)
	DropRejected  = "rejected"   // the endpoint answered 4xx (not 408 or 429): retrying would not help
	DropRetries   = "retries"    // MaxRetries failures
	DropShutdown  = "shutdown"   // still queued when the broker stopped
)

var dropReasons = []string{DropQueueFull, DropRejected, DropRetries, DropShutdown}

// Webhook sends the broker's events to an HTTP endpoint. Add the hooks
// Hooks returns to the server (tern serve does), before Serve.
//
// Each request is a POST of a JSON array of event objects, in the order
// the broker raised them, with EMQX's fields (a message's
// message.delivered may come before its message.publish: the
// subscriber's writer and the publisher's goroutine raise them):
//
//	[{"event":"client.connected","clientid":"dev1","username":"alice",
//	  "peername":"192.0.2.7:50432","sockname":"10.0.0.1:1883",
//	  "proto_name":"MQTT","proto_ver":5,"keepalive":60,"clean_start":true,
//	  "expiry_interval":0,"connected_at":1767225600000,
//	  "timestamp":1767225600001,"node":"broker-1"},
//	 {"event":"message.publish","clientid":"dev1","username":"alice",
//	  "peerhost":"192.0.2.7","topic":"dev/1/up","qos":1,"retain":false,
//	  "payload":"21.5","publish_received_at":1767225600123,
//	  "timestamp":1767225600123,"node":"broker-1"}]
//
// client.disconnected carries "reason" (tern.DisconnectReason's labels)
// and "disconnected_at"; session.subscribed and session.unsubscribed
// "topic" (and "qos"); message.delivered and message.dropped the
// receiving "clientid" and the publisher's "from_clientid", and
// message.dropped "reason" (tern.DropReason). A payload that is not UTF-8
// is sent in base64 with "payload_encoding":"base64". Times are Unix
// milliseconds.
//
// A 2xx answer means the batch was delivered. Otherwise (a connection
// error, a timeout, 5xx, 408 or 429) it is sent again after a backoff,
// while new events keep queueing; any other 4xx drops the batch. Every
// event is either delivered or counted as dropped, by reason.
type Webhook struct {
	name    string
	opts    WebhookOptions
	node    string
	want    [numKinds]bool
	filters []string
	client  *http.Client
	log     *slog.Logger
	srv     atomic.Pointer[tern.Server]

	mu     sync.Mutex
	q      queue
	bytes  int
	closed bool // Stop began: new events are dropped

	wake       chan struct{}
	stop       chan struct{}   // closed by Stop: flush and end
	hardStop   <-chan struct{} // closed when Stop's time is up
	hardCtx    context.Context // done at hardStop: cuts requests short
	hardCancel context.CancelFunc
	done       chan struct{}
	started    bool

	sent    atomic.Int64
	dropped [4]atomic.Int64 // by dropReasons
	posts   [2]atomic.Int64 // ok, failed
	metrics webhookMetrics
}

// NewWebhook returns a webhook; Start (called by Serve) starts its sender.
func NewWebhook(opts WebhookOptions) (*Webhook, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("events: webhook URL %q is not an http or https URL", opts.URL)
	}
	if opts.Name == "" {
		opts.Name = u.Host
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&opts.QueueSize, 10_000)
	def(&opts.QueueBytes, 64<<20)
	def(&opts.BatchSize, 1000)
	defD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	defD(&opts.BatchDelay, time.Second)
	defD(&opts.Timeout, 5*time.Second)
	defD(&opts.RetryBackoff, time.Second)
	defD(&opts.MaxBackoff, 30*time.Second)
	w := &Webhook{name: opts.Name, opts: opts, node: NodeName(opts.Node), log: opts.Logger.With("webhook", opts.Name),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	w.hardCtx, w.hardCancel = context.WithCancel(context.Background())
	w.hardStop = w.hardCtx.Done()
	if len(opts.Events) == 0 {
		for k := range w.want {
			w.want[k] = true
		}
	}
	for _, name := range opts.Events {
		found := false
		for k, n := range EventNames {
			if n == name {
				w.want[k], found = true, true
			}
		}
		if !found {
			return nil, fmt.Errorf("events: unknown event %q (want one of %s)", name, strings.Join(EventNames, ", "))
		}
	}
	for _, f := range opts.Topics {
		if err := topics.ValidateFilter(f); err != nil {
			return nil, fmt.Errorf("events: topic filter %q: %w", f, err)
		}
	}
	w.filters = opts.Topics
	w.client = &http.Client{Timeout: opts.Timeout, Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: opts.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     opts.TLS,
		TLSHandshakeTimeout: opts.Timeout,
		MaxConnsPerHost:     2,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	w.metrics = newWebhookMetrics(w)
	return w, nil
}

// Hooks returns the hooks to add to the server: the webhook itself (its
// start, stop and metrics) and an observer for each group of events it
// sends, so that the broker calls it for nothing else.
func (w *Webhook) Hooks() []tern.Hook {
	hs := []tern.Hook{w}
	if w.want[kConnected] || w.want[kDisconnected] {
		hs = append(hs, connObserver{w})
	}
	if w.want[kSubscribed] || w.want[kUnsubscribed] {
		hs = append(hs, subObserver{w})
	}
	if w.want[kPublish] || w.want[kDelivered] {
		hs = append(hs, pubObserver{w})
	}
	if w.want[kDropped] {
		hs = append(hs, dropObserver{w})
	}
	return hs
}

// ID implements tern.Hook.
func (w *Webhook) ID() string { return "webhook:" + w.name }

var (
	_ tern.Starter = (*Webhook)(nil)
	_ tern.Stopper = (*Webhook)(nil)
)

// Start implements tern.Starter: it starts the sender.
func (w *Webhook) Start(s *tern.Server) error {
	w.srv.Store(s)
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return errors.New("events: webhook started twice")
	}
	w.started = true
	w.mu.Unlock()
	go w.run()
	return nil
}

// Stop implements tern.Stopper: it stops queueing, sends what is queued
// with one last try (within the webhook's timeout and ctx), and counts
// what could not be sent as dropped (reason shutdown).
func (w *Webhook) Stop(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	started := w.started
	w.mu.Unlock()
	defer w.hardCancel()
	close(w.stop)
	if !started {
		w.hardCancel()
		w.dropRest()
		return nil
	}
	t := time.NewTimer(w.opts.Timeout)
	defer t.Stop()
	select {
	case <-w.done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	w.hardCancel()
	<-w.done
	return nil
}

// Stats are a webhook's counters.
type Stats struct {
	Queued    int
	Sent      int64
	Dropped   map[string]int64 // by reason
	PostsOK   int64
	PostsFail int64
}

// Stats returns the webhook's counters.
func (w *Webhook) Stats() Stats {
	w.mu.Lock()
	q := w.q.n
	w.mu.Unlock()
	s := Stats{Queued: q, Sent: w.sent.Load(), Dropped: make(map[string]int64), PostsOK: w.posts[0].Load(), PostsFail: w.posts[1].Load()}
	for i, r := range dropReasons {
		s.Dropped[r] = w.dropped[i].Load()
	}
	return s
}

// matches reports whether a message event on topic is wanted.
func (w *Webhook) matches(topic string) bool {
	if len(w.filters) == 0 {
		return topic == "" || topic[0] != '$'
	}
	for _, f := range w.filters {
		if topics.Match(f, topic) {
			return true
		}
	}
	return false
}

// push queues an event, or drops it when the queue is full.
func (w *Webhook) push(e event) {
	size := e.size()
	w.mu.Lock()
	n := w.q.n
	if w.closed || n >= w.opts.QueueSize || w.bytes+size > w.opts.QueueBytes {
		closed := w.closed
		w.mu.Unlock()
		if closed {
			w.drop(DropShutdown, 1)
		} else {
			w.drop(DropQueueFull, 1)
		}
		return
	}
	w.q.push(&e)
	w.bytes += size
	n++
	w.mu.Unlock()
	if n == 1 || n == w.opts.BatchSize {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (w *Webhook) drop(reason string, n int) {
	for i, r := range dropReasons {
		if r == reason {
			w.dropped[i].Add(int64(n))
		}
	}
}

// take moves up to max events from the queue into batch.
func (w *Webhook) take(batch []event, max int) []event {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(batch) < max && w.q.n > 0 {
		e := w.q.pop()
		w.bytes -= e.size()
		batch = append(batch, e)
	}
	return batch
}

func (w *Webhook) queued() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.q.n
}

// queue is a FIFO of events in fixed-size chunks, so that it neither
// copies events as it grows nor holds memory for more than it has.
type queue struct {
	head, tail *chunk
	first      int // index of the head chunk's first event
	n          int
}

const chunkSize = 512

type chunk struct {
	ev   [chunkSize]event
	used int // events written into ev
	next *chunk
}

var chunks = sync.Pool{New: func() any { return new(chunk) }}

func (q *queue) push(e *event) {
	if q.tail == nil || q.tail.used == chunkSize {
		c := chunks.Get().(*chunk)
		if q.tail == nil {
			q.head, q.first = c, 0
		} else {
			q.tail.next = c
		}
		q.tail = c
	}
	q.tail.ev[q.tail.used] = *e
	q.tail.used++
	q.n++
}

func (q *queue) pop() event {
	c := q.head
	e := c.ev[q.first]
	c.ev[q.first] = event{} // let go of the message
	q.first++
	q.n--
	if q.first == c.used && (c.used == chunkSize || q.n == 0) {
		q.head, q.first = c.next, 0
		if q.head == nil {
			q.tail = nil
		}
		c.used, c.next = 0, nil
		chunks.Put(c)
	}
	return e
}

// dropRest counts what is still queued as dropped at shutdown.
func (w *Webhook) dropRest() {
	var rest []event
	for {
		rest = w.take(rest[:0], 1<<20)
		if len(rest) == 0 {
			return
		}
		w.drop(DropShutdown, len(rest))
	}
}

// run is the sender: it waits for a batch, sends it, and again, until
// Stop.
func (w *Webhook) run() {
	defer close(w.done)
	var batch []event
	body := make([]byte, 0, 64<<10)
	for w.waitBatch() {
		batch = w.take(batch[:0], w.opts.BatchSize)
		if len(batch) == 0 {
			continue
		}
		body = body[:0]
		body = append(body, '[')
		for i := range batch {
			if i > 0 {
				body = append(body, ',')
			}
			body = batch[i].appendJSON(body, w.node, !w.opts.NoPayload)
		}
		body = append(body, ']')
		clear(batch)
		w.send(body, len(batch))
		if cap(body) > 4<<20 {
			body = make([]byte, 0, 64<<10) // do not keep a huge buffer
		}
	}
	w.dropRest()
}

// waitBatch waits until a batch is full, or the oldest event has waited
// BatchDelay, or Stop flushes; it reports false when the sender should
// end.
func (w *Webhook) waitBatch() bool {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var expired <-chan time.Time
	for {
		n := w.queued()
		select {
		case <-w.hardStop:
			return false
		default:
		}
		stopping := false
		select {
		case <-w.stop:
			stopping = true
		default:
		}
		switch {
		case n >= w.opts.BatchSize, n > 0 && stopping:
			return true
		case n == 0 && stopping:
			return false
		case n > 0 && timer == nil:
			timer = time.NewTimer(w.opts.BatchDelay)
			expired = timer.C
		}
		select {
		case <-w.wake:
		case <-expired:
			return true
		case <-w.stop:
		case <-w.hardStop:
			return false
		}
	}
}

// send posts a batch until it is delivered, rejected, out of retries or
// out of time at shutdown.
func (w *Webhook) send(body []byte, n int) {
	backoff := w.opts.RetryBackoff
	for attempt := 1; ; attempt++ {
		status, err := w.post(body)
		if err == nil && status/100 == 2 {
			w.posts[0].Add(1)
			w.sent.Add(int64(n))
			if attempt > 1 {
				w.log.Info("webhook delivered again", "events", n, "attempts", attempt)
			}
			return
		}
		w.posts[1].Add(1)
		if err == nil && status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests {
			w.drop(DropRejected, n)
			w.log.Warn("webhook rejected a batch: dropped", "status", status, "events", n)
			return
		}
		if w.opts.MaxRetries > 0 && attempt > w.opts.MaxRetries {
			w.drop(DropRetries, n)
			w.log.Warn("webhook failed too often: batch dropped", "events", n, "attempts", attempt, "err", err, "status", status)
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			w.log.Warn("webhook failed; retrying", "attempt", attempt, "backoff", backoff.String(), "err", err, "status", status, "queued", w.queued())
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-w.stop:
			// Shutting down: one more try right away, then give up.
			t.Stop()
			select {
			case <-w.hardStop:
				w.drop(DropShutdown, n)
				return
			default:
			}
			if status, err := w.post(body); err == nil && status/100 == 2 {
				w.posts[0].Add(1)
				w.sent.Add(int64(n))
			} else {
				w.posts[1].Add(1)
				w.drop(DropShutdown, n)
			}
			return
		case <-w.hardStop:
			t.Stop()
			w.drop(DropShutdown, n)
			return
		}
		backoff = min(2*backoff, w.opts.MaxBackoff)
	}
}

// post sends one request.
func (w *Webhook) post(body []byte) (int, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(w.hardCtx, w.opts.Timeout) // Stop's deadline cuts it short
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.opts.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range w.opts.Headers {
		req.Header.Set(k, v)
	}
	resp, err := w.client.Do(req)
	w.metrics.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// The observers, one per group of events.

type connObserver struct{ w *Webhook }

func (o connObserver) ID() string { return o.w.ID() + ":connections" }

func (o connObserver) OnSessionEstablished(c *tern.Client, _ bool) {
	w := o.w
	if !w.want[kConnected] {
		return
	}
	if srv := w.srv.Load(); srv != nil {
		w.push(connectedEvent(srv, c))
	}
}

func (o connObserver) OnDisconnect(c *tern.Client, err error) {
	w := o.w
	if !w.want[kDisconnected] {
		return
	}
	w.push(event{kind: kDisconnected, at: nowMillis(), clientID: c.ID(), username: c.Username(), peer: c.RemoteAddr(),
		sock: localAddr(c), text: tern.DisconnectReason(err)})
}

type subObserver struct{ w *Webhook }

func (o subObserver) ID() string { return o.w.ID() + ":subscriptions" }

func (o subObserver) OnSubscribed(c *tern.Client, sub topics.Subscription) {
	w := o.w
	if c == nil || !w.want[kSubscribed] {
		return // the in-process client's own
	}
	filter := sub.Filter
	if sub.Group != "" {
		filter = "$share/" + sub.Group + "/" + filter
	}
	w.push(event{kind: kSubscribed, at: nowMillis(), clientID: c.ID(), username: c.Username(), peer: c.RemoteAddr(), text: filter, qos: sub.QoS})
}

func (o subObserver) OnUnsubscribed(c *tern.Client, group, filter string) {
	w := o.w
	if c == nil || !w.want[kUnsubscribed] {
		return
	}
	if group != "" {
		filter = "$share/" + group + "/" + filter
	}
	w.push(event{kind: kUnsubscribed, at: nowMillis(), clientID: c.ID(), username: c.Username(), peer: c.RemoteAddr(), text: filter})
}

type pubObserver struct{ w *Webhook }

func (o pubObserver) ID() string { return o.w.ID() + ":messages" }

func (o pubObserver) OnPublished(c *tern.Client, m *tern.Message) {
	w := o.w
	if !w.want[kPublish] || !w.matches(m.Topic) {
		return
	}
	at := m.Created.UnixMilli() // received just now: no clock read on the publish path
	e := event{kind: kPublish, at: at, clientID: m.Origin, since: at, msg: m}
	if c != nil && !c.IsInline() {
		e.username = c.Username()
		if conn := c.Conn(); conn != nil {
			e.peerAddr = conn.RemoteAddr()
		}
	}
	w.push(e)
}

func (o pubObserver) OnDelivered(clientID string, m *tern.Message) {
	w := o.w
	if !w.want[kDelivered] || clientID == "" || clientID[0] == 0 || !w.matches(m.Topic) {
		return // in-process subscribers' ids start with NUL
	}
	w.push(event{kind: kDelivered, at: nowMillis(), clientID: clientID, since: m.Created.UnixMilli(), msg: m})
}

type dropObserver struct{ w *Webhook }

func (o dropObserver) ID() string { return o.w.ID() + ":drops" }

func (o dropObserver) OnMessageDropped(clientID string, m *tern.Message, reason tern.DropReason) {
	w := o.w
	if clientID != "" && clientID[0] == 0 || !w.matches(m.Topic) {
		return
	}
	w.push(event{kind: kDropped, at: nowMillis(), clientID: clientID, since: m.Created.UnixMilli(), msg: m, text: string(reason)})
}

// webhookMetrics are a webhook's Prometheus metrics.
type webhookMetrics struct {
	events, dropped, queue, posts *prometheus.Desc
	latency                       prometheus.Histogram
}

func newWebhookMetrics(w *Webhook) webhookMetrics {
	l := prometheus.Labels{"webhook": w.name}
	return webhookMetrics{
		events:  prometheus.NewDesc("tern_webhook_events_sent_total", "Events a webhook delivered.", nil, l),
		dropped: prometheus.NewDesc("tern_webhook_events_dropped_total", "Events a webhook dropped, by reason.", []string{"reason"}, l),
		queue:   prometheus.NewDesc("tern_webhook_queue_events", "Events waiting to be sent by a webhook.", nil, l),
		posts:   prometheus.NewDesc("tern_webhook_requests_total", "Requests a webhook made, by result (ok: a 2xx answer).", []string{"result"}, l),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tern_webhook_request_seconds",
			Help: "Time a webhook's requests took.", ConstLabels: l, Buckets: prometheus.DefBuckets}),
	}
}

// Describe implements prometheus.Collector.
func (w *Webhook) Describe(ch chan<- *prometheus.Desc) {
	m := &w.metrics
	ch <- m.events
	ch <- m.dropped
	ch <- m.queue
	ch <- m.posts
	m.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (w *Webhook) Collect(ch chan<- prometheus.Metric) {
	m := &w.metrics
	s := w.Stats()
	ch <- prometheus.MustNewConstMetric(m.events, prometheus.CounterValue, float64(s.Sent))
	for _, r := range dropReasons {
		ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, float64(s.Dropped[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(m.queue, prometheus.GaugeValue, float64(s.Queued))
	ch <- prometheus.MustNewConstMetric(m.posts, prometheus.CounterValue, float64(s.PostsOK), "ok")
	ch <- prometheus.MustNewConstMetric(m.posts, prometheus.CounterValue, float64(s.PostsFail), "error")
	m.latency.Collect(ch)
}
