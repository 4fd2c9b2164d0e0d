package events

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

var discard = slog.New(slog.DiscardHandler)

// receiver is a webhook endpoint that collects events; while down it
// answers status down.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	events   []map[string]any
	requests atomic.Int64
	down     atomic.Int32 // a status to answer instead of taking the batch; 0: up
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		if s := r.down.Load(); s != 0 {
			io.Copy(io.Discard, req.Body)
			w.WriteHeader(int(s))
			return
		}
		var batch []map[string]any
		if err := json.NewDecoder(req.Body).Decode(&batch); err != nil {
			t.Errorf("webhook body is not a JSON array: %v", err)
			w.WriteHeader(400)
			return
		}
		if req.Header.Get("X-Test") != "yes" {
			t.Errorf("header missing")
		}
		r.mu.Lock()
		r.events = append(r.events, batch...)
		r.mu.Unlock()
		w.WriteHeader(204)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) got() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.events...)
}

func newWebhook(t testing.TB, url string, change func(*WebhookOptions)) *Webhook {
	t.Helper()
	o := WebhookOptions{URL: url, Name: "test", Node: "node1", BatchDelay: 20 * time.Millisecond, RetryBackoff: 20 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond, Timeout: 2 * time.Second, Headers: map[string]string{"X-Test": "yes"}, Logger: discard}
	if change != nil {
		change(&o)
	}
	w, err := NewWebhook(o)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func server(t testing.TB, opts *tern.Options, hooks ...tern.Hook) *terntest.Server {
	o := tern.Options{Logger: discard}
	if opts != nil {
		o = *opts
		o.Logger = discard
	}
	return terntest.NewServer(t, &o, hooks...)
}

// Presence events on $SYS/brokers/<node>/clients/<id>/connected and
// /disconnected, with EMQX's fields.
func TestPresence(t *testing.T) {
	p := NewPresence("node1")
	srv := server(t, nil, p)
	got := make(chan *tern.Message, 4)
	if err := srv.Subscribe("$SYS/brokers/+/clients/#", 1, func(m *tern.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	c := srv.Dial(t, packets.V5)
	c.Connect(&packets.Connect{ClientID: "dev1", CleanStart: true, KeepAlive: 30, UsernameFlag: true, Username: "alice"})
	m := <-got
	if m.Topic != "$SYS/brokers/node1/clients/dev1/connected" || m.Retain || m.QoS != 0 {
		t.Fatalf("connected event on %s (retain %v qos %d)", m.Topic, m.Retain, m.QoS)
	}
	var ev map[string]any
	if err := json.Unmarshal(m.Payload, &ev); err != nil {
		t.Fatalf("%s: %v", m.Payload, err)
	}
	for k, want := range map[string]any{"clientid": "dev1", "username": "alice", "ipaddress": "127.0.0.1", "proto_name": "MQTT",
		"proto_ver": 5.0, "keepalive": 30.0, "clean_start": true, "expiry_interval": 0.0, "connack": 0.0} {
		if ev[k] != want {
			t.Errorf("connected %s = %v, want %v", k, ev[k], want)
		}
	}
	if ev["sockport"].(float64) == 0 || ev["connected_at"].(float64) < float64(time.Now().Add(-time.Minute).UnixMilli()) {
		t.Errorf("connected event %s", m.Payload)
	}
	c.Send(&packets.Disconnect{})
	m = <-got
	json.Unmarshal(m.Payload, &ev)
	if m.Topic != "$SYS/brokers/node1/clients/dev1/disconnected" || ev["reason"] != "client_disconnect" || ev["username"] != "alice" {
		t.Fatalf("disconnected event on %s: %s", m.Topic, m.Payload)
	}
}

// Every kind of event reaches the webhook once, in the order the broker
// raised them.
func TestWebhookEvents(t *testing.T) {
	r := newReceiver(t)
	w := newWebhook(t, r.URL, nil)
	no := false
	srv := server(t, &tern.Options{QueueQoS0Offline: &no}, w.Hooks()...)
	c := srv.Dial(t, packets.V5)
	connect := &packets.Connect{ClientID: "dev1", CleanStart: true, KeepAlive: 60, UsernameFlag: true, Username: "alice"}
	connect.Properties.SessionExpiry = packets.Uint32(300)
	c.Connect(connect)
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t/#", QoS: 1}}})
	c.Recv()
	c.Send(&packets.Publish{Topic: "t/1", QoS: 1, PacketID: 2, Payload: []byte("hello \"world\"\n")})
	for n := 0; n < 2; n++ {
		if p, ok := c.Recv().(*packets.Publish); ok {
			c.Send(&packets.Puback{PacketID: p.PacketID})
		}
	}
	c.Send(&packets.Publish{Topic: "t/bin", Payload: []byte{0xff, 0x00, 0xfe}})
	c.Recv()
	c.Send(&packets.Unsubscribe{PacketID: 3, Filters: []string{"t/#"}})
	c.Recv()
	c.Send(&packets.Subscribe{PacketID: 4, Subscriptions: []packets.Subscription{{Filter: "off/#"}}})
	c.Recv()
	c.Send(&packets.Disconnect{})
	c.ExpectClosed()
	terntest.Eventually(t, "the session to be offline", func() bool { _, on := srv.ClientInfo("dev1"); return !on })
	// Dropped (QoS 0 for an offline session) while it is routed, so before
	// the broker reports it published.
	srv.Publish("off/x", []byte("for an offline session"), false, 0)
	want := []string{ClientConnected, SessionSubscribed, MessagePublish, MessageDelivered, MessagePublish, MessageDelivered,
		SessionUnsubscribed, SessionSubscribed, ClientDisconnected, MessageDropped, MessagePublish}
	terntest.Eventually(t, "every event", func() bool { return len(r.got()) >= len(want) })
	got := r.got()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %v", len(got), len(want), got)
	}
	// A delivery is reported by the subscriber's writer, which may run
	// before the publisher's goroutine reports the message published: the
	// two may come in either order.
	for _, i := range []int{2, 4} {
		if got[i]["event"] == MessageDelivered && got[i+1]["event"] == MessagePublish {
			got[i], got[i+1] = got[i+1], got[i]
		}
	}
	for i, e := range got {
		if e["event"] != want[i] || e["node"] != "node1" || e["timestamp"] == nil {
			t.Errorf("event %d: %v, want %s", i, e, want[i])
		}
	}
	check := func(i int, fields map[string]any) {
		t.Helper()
		for k, v := range fields {
			if got[i][k] != v {
				t.Errorf("%s %s = %v, want %v", got[i]["event"], k, got[i][k], v)
			}
		}
	}
	check(0, map[string]any{"clientid": "dev1", "username": "alice", "proto_ver": 5.0, "keepalive": 60.0, "clean_start": true, "expiry_interval": 300.0})
	check(1, map[string]any{"topic": "t/#", "qos": 1.0, "peerhost": "127.0.0.1"})
	check(2, map[string]any{"clientid": "dev1", "topic": "t/1", "qos": 1.0, "retain": false, "payload": "hello \"world\"\n"})
	check(3, map[string]any{"clientid": "dev1", "from_clientid": "dev1", "topic": "t/1"})
	check(4, map[string]any{"payload_encoding": "base64", "payload": "/wD+"})
	check(6, map[string]any{"topic": "t/#"})
	check(8, map[string]any{"reason": "client_disconnect"})
	check(9, map[string]any{"clientid": "dev1", "from_clientid": "$inline", "reason": "offline_qos0", "topic": "off/x"})
	check(10, map[string]any{"clientid": "$inline", "topic": "off/x"})
	// The receiver has the batch before the webhook reads its answer.
	terntest.Eventually(t, "the sent count", func() bool { return w.Stats().Sent == int64(len(want)) })
	if s := w.Stats(); s.Dropped[DropQueueFull] != 0 {
		t.Errorf("stats %+v", s)
	}
}

// Only the events and topics asked for are sent; $ topics only when a
// filter names them.
func TestWebhookFilters(t *testing.T) {
	r := newReceiver(t)
	w := newWebhook(t, r.URL, func(o *WebhookOptions) { o.Events = []string{MessagePublish}; o.Topics = []string{"sensors/#"} })
	if hs := w.Hooks(); len(hs) != 2 {
		t.Fatalf("%d hooks for message.publish alone, want the webhook and one observer", len(hs))
	}
	srv := server(t, nil, w.Hooks()...)
	for _, topic := range []string{"sensors/a", "other/b", "sensors/c/d", "$SYS/x"} {
		srv.Publish(topic, []byte("v"), false, 0)
	}
	mustConnect(t, srv, "c1") // no client events asked for
	terntest.Eventually(t, "2 events", func() bool { return len(r.got()) >= 2 })
	time.Sleep(50 * time.Millisecond)
	if got := r.got(); len(got) != 2 || got[0]["topic"] != "sensors/a" || got[1]["topic"] != "sensors/c/d" {
		t.Fatalf("events %v", got)
	}
	if _, err := NewWebhook(WebhookOptions{URL: r.URL, Events: []string{"client.exploded"}}); err == nil {
		t.Error("unknown event accepted")
	}
	if _, err := NewWebhook(WebhookOptions{URL: "mqtt://x"}); err == nil {
		t.Error("bad URL accepted")
	}
}

func mustConnect(t *testing.T, srv *terntest.Server, id string) *terntest.Conn {
	c := srv.Dial(t, packets.V5)
	c.MustConnect(id)
	return c
}

// With the endpoint down, events queue (within the queue's bound) and are
// all delivered once it is back, in order; beyond the bound they are
// counted as dropped. Every event is delivered or counted.
// TERN_LONG_TESTS=1 keeps the endpoint down for 30 s, as the acceptance
// test of issue 18 asks; by default 2 s.
func TestWebhookEndpointDown(t *testing.T) {
	down := 2 * time.Second
	if os.Getenv("TERN_LONG_TESTS") != "" {
		down = 30 * time.Second
	}
	const events = 10_000
	for _, queue := range []int{10_000, 4_000} {
		t.Run("queue "+strconv.Itoa(queue), func(t *testing.T) {
			r := newReceiver(t)
			r.down.Store(503)
			w := newWebhook(t, r.URL, func(o *WebhookOptions) {
				o.QueueSize = queue
				o.Events = []string{MessagePublish}
				o.RetryBackoff, o.MaxBackoff = 100*time.Millisecond, time.Second
			})
			srv := server(t, nil, w.Hooks()...)
			for i := 0; i < events; i++ {
				srv.Publish("seq", []byte(strconv.Itoa(i)), false, 0)
			}
			time.Sleep(down)
			r.down.Store(0)
			terntest.Eventually(t, "the queue to drain", func() bool { s := w.Stats(); return s.Sent+s.Dropped[DropQueueFull] == events })
			s := w.Stats()
			got := r.got()
			t.Logf("down %v: %d events, %d delivered, %d dropped (queue full), %d requests (%d failed)",
				down, events, s.Sent, s.Dropped[DropQueueFull], r.requests.Load(), s.PostsFail)
			if int64(len(got)) != s.Sent {
				t.Fatalf("receiver got %d, webhook counted %d sent", len(got), s.Sent)
			}
			if queue >= events && s.Sent != events {
				t.Fatalf("%d delivered, want all %d", s.Sent, events)
			}
			if queue < events && (s.Sent < int64(queue) || s.Dropped[DropQueueFull] == 0) {
				t.Fatalf("%d delivered and %d dropped with a queue of %d", s.Sent, s.Dropped[DropQueueFull], queue)
			}
			prev := -1
			for _, e := range got {
				n, _ := strconv.Atoi(e["payload"].(string))
				if n <= prev {
					t.Fatalf("event %d after %d: out of order", n, prev)
				}
				prev = n
			}
		})
	}
}

// A 4xx answer drops the batch; MaxRetries bounds retries; Stop counts
// what is left as dropped, and returns within the timeout.
func TestWebhookFailures(t *testing.T) {
	r := newReceiver(t)
	r.down.Store(400)
	w := newWebhook(t, r.URL, func(o *WebhookOptions) { o.Events = []string{MessagePublish} })
	srv := server(t, nil, w.Hooks()...)
	srv.Publish("a", []byte("x"), false, 0)
	terntest.Eventually(t, "the rejected batch", func() bool { return w.Stats().Dropped[DropRejected] == 1 })

	r.down.Store(500)
	w2 := newWebhook(t, r.URL, func(o *WebhookOptions) { o.Events = []string{MessagePublish}; o.MaxRetries = 2 })
	srv2 := server(t, nil, w2.Hooks()...)
	srv2.Publish("a", []byte("x"), false, 0)
	terntest.Eventually(t, "the batch out of retries", func() bool { return w2.Stats().Dropped[DropRetries] == 1 })
	if s := w2.Stats(); s.PostsFail != 3 {
		t.Errorf("%d failed requests, want 3 (one and two retries)", s.PostsFail)
	}

	w3 := newWebhook(t, r.URL, func(o *WebhookOptions) { o.Events = []string{MessagePublish}; o.Timeout = 300 * time.Millisecond })
	srv3 := server(t, nil, w3.Hooks()...)
	for i := 0; i < 500; i++ {
		srv3.Publish("a", []byte("x"), false, 0)
	}
	start := time.Now()
	srv3.Shutdown(context.Background())
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v with the endpoint down", d)
	}
	if s := w3.Stats(); s.Sent != 0 || s.Dropped[DropShutdown] != 500 {
		t.Errorf("after shutdown with the endpoint down: %+v", s)
	}
}

// The JSON encoder agrees with encoding/json on any string.
func TestAppendString(t *testing.T) {
	cases := []string{"", "plain", "quote\" back\\slash", "ctl\x00\x01\x1f\n\r\t", "ünïcödé ✓", "bad \xff\xfe utf8", "\u2028\u2029", "</script>"}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		b := make([]byte, rng.IntN(20))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		out := appendString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q encoded as %s: %v", s, out, err)
		}
		want, _ := json.Marshal(s)
		var wantBack string
		json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Fatalf("%q: decoded %q, encoding/json gives %q", s, back, wantBack)
		}
	}
}
