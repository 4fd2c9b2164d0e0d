package tern_test

// Tests of the memory bounds under clients that do not play along: a
// subscriber that stops reading, a client that never reads its replies,
// floods of retained messages, unfinished packets, huge filters, and the
// broker-wide message memory budget. They assert structure (what is held
// never passes its cap, every message not delivered is counted), never
// timings.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// boundSlack is what a client's pending output may pass MaxPendingBytes by:
// the writer encodes in chunks of up to 32 KiB, two buffers take turns.
const boundSlack = 80 << 10

// smallBuffers is a listener whose connections have small kernel send
// buffers, so that a client that stops reading fills them with kilobytes,
// not megabytes: the tests then reach their limits quickly.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

// newSmallBufferServer is terntest.NewServer with smallBuffers.
func newSmallBufferServer(t *testing.T, opts *tern.Options) *terntest.Server {
	t.Helper()
	o := *opts
	o.SysInterval = -1
	srv, err := tern.New(&o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewTCPFromListener("tcp", smallBuffers{ln})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &terntest.Server{Server: srv, Addr: ln.Addr().String()}
}

// stuckSubscriber connects a v5 client with a persistent session that
// subscribes to filter and then never reads its socket again. Its receive
// buffer is kept small, so the broker's writes to it block soon.
func stuckSubscriber(t *testing.T, srv *terntest.Server, id, filter string, qos byte) *terntest.Conn {
	t.Helper()
	c := srv.Dial(t, packets.V5)
	c.NetConn().(*net.TCPConn).SetReadBuffer(4096)
	pk := &packets.Connect{ClientID: id, CleanStart: true}
	pk.Properties.ReceiveMaximum = 10
	pk.Properties.SessionExpiry = new(uint32(300))
	if ack := c.Connect(pk); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %v", ack.ReasonCode)
	}
	subscribeRaw(t, c, 1, packets.Subscription{Filter: filter, QoS: qos})
	return c
}

// reader counts the PUBLISH packets a subscriber receives, acknowledging
// QoS 1 ones, on its own goroutine.
type reader struct {
	n    atomic.Int64
	done chan struct{}
}

func startReader(c *terntest.Conn) *reader {
	r := &reader{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			pk, err := c.TryRecv(terntest.Timeout)
			if err != nil {
				return
			}
			if p, ok := pk.(*packets.Publish); ok {
				if p.QoS == 1 {
					c.Send(&packets.Puback{PacketID: p.PacketID})
				}
				r.n.Add(1)
			}
		}
	}()
	return r
}

// A subscriber that stops reading gets QoS 0 messages only up to
// Options.MaxPendingBytes; the rest are dropped for it and counted
// (slow_consumer), while a healthy subscriber to the same topic gets every
// message. Once its socket has taken nothing for WriteTimeout the stuck
// client is disconnected (a reset, so the kernel drops what it held).
func TestBoundsStuckSubscriberQoS0(t *testing.T) {
	t.Parallel()
	const pending = 256 << 10
	srv := newSmallBufferServer(t, &tern.Options{MaxPendingBytes: pending, WriteTimeout: time.Second})
	stuck := stuckSubscriber(t, srv, "stuck", "s/t", 0)
	healthy := mustConnect(t, srv, packets.V311, "healthy")
	subscribeRaw(t, healthy, 1, packets.Subscription{Filter: "s/t"})
	got := startReader(healthy)

	pub := mustConnect(t, srv, packets.V311, "pub")
	const n, size = 20_000, 1000
	payload := bytes.Repeat([]byte("x"), size)
	maxPending := 0
	for i := 1; i <= n; i++ {
		pub.Send(&packets.Publish{Topic: "s/t", Payload: payload})
		if i%100 == 0 {
			// End-to-end flow control for the healthy subscriber only.
			terntest.Eventually(t, "the healthy subscriber to catch up", func() bool { return got.n.Load() == int64(i) })
			if ci, ok := srv.ClientInfo("stuck"); ok {
				maxPending = max(maxPending, ci.PendingBytes)
			}
		}
	}
	if maxPending > pending+boundSlack {
		t.Fatalf("stuck client's pending output reached %d bytes, cap %d", maxPending, pending)
	}
	terntest.Eventually(t, "the stuck client to be disconnected", func() bool {
		_, ok := srv.ClientInfo("stuck")
		return !ok
	})
	stuck.ExpectClosed()
	if n := srv.Stats().WriteTimeouts; n != 1 {
		t.Fatalf("WriteTimeouts = %d, want 1", n)
	}
	// Every message the stuck client did not get is counted: it was
	// written towards it, dropped while it was connected (slow_consumer),
	// queued for its session once it was gone, or dropped then
	// (queue_full).
	si, _ := srv.SessionInfo("stuck")
	d := si.Dropped
	sent := srv.Stats().MessagesSent - n
	if sent+d[tern.DropSlowConsumer]+d[tern.DropQueueFull]+int64(si.Queued) != n || d[tern.DropSlowConsumer] == 0 {
		t.Fatalf("stuck client: %d sent, %d queued, dropped %v; want %d in all, some dropped as slow_consumer", sent, si.Queued, d, n)
	}
	if ci, ok := srv.ClientInfo("healthy"); !ok || ci.Dropped != nil {
		t.Fatalf("healthy subscriber: connected %v, dropped %v", ok, ci.Dropped)
	}
}

// A QoS 1 subscriber that stops reading holds its inflight window and
// MaxQueuedMessages queued messages; the rest are dropped and counted
// (queue_full), for the session and by reason. When the queue of the only
// subscriber is full, a v5 publisher gets 0x97 Quota exceeded: the message
// went nowhere; a 3.1.1 publisher gets its PUBACK (it has no negative
// acknowledgement).
func TestBoundsStuckSubscriberQoS1(t *testing.T) {
	for _, ver := range bothVersions {
		t.Run(ver.name, func(t *testing.T) {
			srv := terntest.NewServer(t, &tern.Options{MaxQueuedMessages: 50})
			stuckSubscriber(t, srv, "stuck1", "s1/t", 1) // Receive Maximum 10
			pub := mustConnect(t, srv, ver.v, "pub1")
			var codes []packets.ReasonCode
			for i := 1; i <= 100; i++ {
				pub.Send(&packets.Publish{Topic: "s1/t", QoS: 1, PacketID: uint16(i), Payload: []byte(strconv.Itoa(i))})
				codes = append(codes, recvAs[*packets.Puback](t, pub).ReasonCode)
				if i == 10 { // the writer fills the window on its own goroutine
					terntest.Eventually(t, "a full inflight window", func() bool {
						ci, _ := srv.ClientInfo("stuck1")
						return ci.Inflight == 10
					})
				}
			}
			full := packets.QuotaExceeded
			if ver.v != packets.V5 {
				full = packets.Success
			}
			for i, code := range codes {
				want := packets.Success
				if i >= 60 { // 10 inflight, 50 queued
					want = full
				}
				if code != want {
					t.Fatalf("PUBACK %d: %v, want %v", i+1, code, want)
				}
			}
			ci, _ := srv.ClientInfo("stuck1")
			if ci.Inflight != 10 || ci.Queued != 50 || ci.Dropped[tern.DropQueueFull] != 40 {
				t.Fatalf("stuck client: %d inflight, %d queued, dropped %v; want 10, 50, 40 queue_full", ci.Inflight, ci.Queued, ci.Dropped)
			}
			if n := srv.Stats().Dropped(tern.DropQueueFull); n != 40 {
				t.Fatalf("Stats().Dropped(queue_full) = %d, want 40", n)
			}
		})
	}
}

// QueueFullPolicy DropOldest: a returning client gets the newest
// MaxQueuedMessages messages; the older ones are counted as dropped.
func TestBoundsDropOldest(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxQueuedMessages: 3, QueueFullPolicy: tern.DropOldest})
	c, _ := connectPersistent(t, srv, packets.V5, "old", true)
	subscribeRaw(t, c, 1, packets.Subscription{Filter: "o/t", QoS: 1})
	goOffline(t, c)
	pub := mustConnect(t, srv, packets.V5, "old-pub")
	for i := 1; i <= 5; i++ {
		pub.Send(&packets.Publish{Topic: "o/t", QoS: 1, PacketID: uint16(i), Payload: []byte(strconv.Itoa(i))})
		if code := recvAs[*packets.Puback](t, pub).ReasonCode; code != packets.Success {
			t.Fatalf("PUBACK %d: %v: with DropOldest a message always has room", i, code)
		}
	}
	c, _ = connectPersistent(t, srv, packets.V5, "old", false)
	for _, want := range []string{"3", "4", "5"} {
		m := recvAs[*packets.Publish](t, c)
		if string(m.Payload) != want {
			t.Fatalf("got %q, want %q", m.Payload, want)
		}
		c.Send(&packets.Puback{PacketID: m.PacketID})
	}
	expectNothing(t, c, "dropped messages")
	if si, _ := srv.SessionInfo("old"); si.Dropped[tern.DropQueueFull] != 2 {
		t.Fatalf("session dropped %v, want 2 queue_full", si.Dropped)
	}
}

// Options.MaxMessageMemory caps the memory of queued and inflight messages
// broker-wide, however the sessions' own limits are set: each message
// counts once however many sessions hold it. At the cap new messages are
// dropped (memory_full) and a v5 publisher whose message could be queued
// nowhere gets 0x97. When the sessions drain, the memory is given back.
func TestBoundsMessageMemory(t *testing.T) {
	t.Parallel()
	const limit = 256 << 10
	srv := terntest.NewServer(t, &tern.Options{MaxMessageMemory: limit, MaxQueuedMessages: -1, MaxQueuedBytes: -1})
	for i := range 3 {
		c, _ := connectPersistent(t, srv, packets.V5, fmt.Sprint("mem", i), true)
		subscribeRaw(t, c, 1, packets.Subscription{Filter: "m/t", QoS: 1})
		goOffline(t, c)
	}
	pub := mustConnect(t, srv, packets.V5, "mem-pub")
	payload := bytes.Repeat([]byte("m"), 1000)
	accepted := 0
	for i := 1; ; i++ {
		pub.Send(&packets.Publish{Topic: "m/t", QoS: 1, PacketID: uint16(i), Payload: payload})
		code := recvAs[*packets.Puback](t, pub).ReasonCode
		if used, _ := srv.MessageMemory(); used > limit {
			t.Fatalf("message memory %d passed its cap %d", used, limit)
		}
		if code == packets.QuotaExceeded {
			break
		}
		if code != packets.Success || i > 1000 {
			t.Fatalf("PUBACK %d: %v", i, code)
		}
		accepted++
	}
	// Shared by three sessions, each message counted once: far more fit
	// than if each queued copy counted its payload.
	if accepted < limit/(1000+3*64+500) {
		t.Fatalf("only %d messages of 1000 bytes fit in %d bytes for 3 sessions", accepted, limit)
	}
	// Each session that could not take a message counted it.
	var perSession int64
	for i := range 3 {
		si, _ := srv.SessionInfo(fmt.Sprint("mem", i))
		perSession += si.Dropped[tern.DropMemoryFull]
	}
	if n := srv.Stats().Dropped(tern.DropMemoryFull); n < 3 || n != perSession {
		t.Fatalf("Stats().Dropped(memory_full) = %d, sessions counted %d; want the same, at least 3", n, perSession)
	}
	for i := range 3 {
		c, _ := connectPersistent(t, srv, packets.V5, fmt.Sprint("mem", i), false)
		got := 0
		for {
			pk, err := c.TryRecv(quietFor)
			if err != nil {
				break
			}
			m := pk.(*packets.Publish)
			c.Send(&packets.Puback{PacketID: m.PacketID})
			got++
		}
		if got < accepted {
			t.Fatalf("session %d got %d messages, want at least the %d all sessions took", i, got, accepted)
		}
		c.Send(&packets.Pingreq{})
		recvAs[*packets.Pingresp](t, c) // the PUBACKs have been handled
	}
	if used, _ := srv.MessageMemory(); used != 0 {
		t.Fatalf("message memory %d after every session drained, want 0", used)
	}
}

// A client that sends requests and never reads the replies (PINGRESP,
// PUBACK) is not read from once its pending output passes
// MaxPendingBytes, so it cannot make the broker hold more for it; it is
// then disconnected by the write timeout.
func TestBoundsRepliesNotRead(t *testing.T) {
	t.Parallel()
	const pending = 8 << 10
	srv := newSmallBufferServer(t, &tern.Options{MaxPendingBytes: pending, WriteTimeout: 500 * time.Millisecond})
	c := srv.Dial(t, packets.V311)
	c.NetConn().(*net.TCPConn).SetReadBuffer(4096)
	c.MustConnect("deaf")
	nc := c.NetConn()
	pings := bytes.Repeat([]byte{0xC0, 0x00}, 4096)
	go func() { // until the broker stops reading and the socket fills
		nc.SetWriteDeadline(time.Now().Add(terntest.Timeout))
		for range 2000 { // until the small buffers fill
			if _, err := nc.Write(pings); err != nil {
				return
			}
		}
	}()
	maxPending := 0
	terntest.Eventually(t, "the deaf client to be disconnected", func() bool {
		ci, ok := srv.ClientInfo("deaf")
		maxPending = max(maxPending, ci.PendingBytes)
		return !ok
	})
	if maxPending > pending+boundSlack {
		t.Fatalf("pending output reached %d bytes, cap %d", maxPending, pending)
	}
	if srv.Stats().WriteTimeouts != 1 {
		t.Fatalf("WriteTimeouts = %d, want 1", srv.Stats().WriteTimeouts)
	}
}

// Retained messages matching a subscription are sent from a stream, one at
// a time as the window allows, not queued all at once: a client that
// subscribes to "#" again and again without reading holds no more than its
// pending output. A client that reads gets every retained message, with
// RETAIN set [MQTT-3.3.1-8], before a message published after its
// SUBSCRIBE: a topic's newer value never comes before its older retained
// one, and it does not come twice.
func TestBoundsRetainedStreams(t *testing.T) {
	t.Parallel()
	const pending, n = 16 << 10, 3000
	srv := terntest.NewServer(t, &tern.Options{MaxPendingBytes: pending, MaxInflight: 100})
	pub := mustConnect(t, srv, packets.V5, "ret-pub")
	payload := bytes.Repeat([]byte("r"), 100)
	for i := range n {
		pub.Send(&packets.Publish{Topic: "r/" + strconv.Itoa(i), QoS: 1, PacketID: 1, Retain: true, Payload: payload})
		recvAs[*packets.Puback](t, pub)
	}

	t.Run("flood", func(t *testing.T) {
		c := srv.Dial(t, packets.V311)
		c.NetConn().(*net.TCPConn).SetReadBuffer(4096)
		c.MustConnect("flood")
		var b []byte
		for i := range 500 {
			sub := &packets.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packets.Subscription{{Filter: "#", QoS: 1}}}
			b, _ = sub.Encode(b, packets.V311)
		}
		c.SendRaw(b)
		maxPending, maxMem := 0, int64(0)
		for range 50 {
			ci, _ := srv.ClientInfo("flood")
			maxPending = max(maxPending, ci.PendingBytes)
			used, _ := srv.MessageMemory()
			maxMem = max(maxMem, used)
			time.Sleep(10 * time.Millisecond) // sampling: there is no event
		}
		if maxPending > pending+boundSlack || maxMem > 64<<10 {
			t.Fatalf("pending output %d (cap %d), message memory %d: %d SUBSCRIBEs of %d retained messages were queued",
				maxPending, pending, maxMem, 500, n)
		}
		c.Close()
	})

	t.Run("order", func(t *testing.T) {
		c := srv.Dial(t, packets.V5)
		pk := &packets.Connect{ClientID: "ordered", CleanStart: true}
		pk.Properties.ReceiveMaximum = 5
		c.Connect(pk)
		subscribeRaw(t, c, 1, packets.Subscription{Filter: "r/#", QoS: 1})
		first := recvAs[*packets.Publish](t, c) // the stream has started
		// A newer value of r/7 while the stream is still being sent.
		pub.Send(&packets.Publish{Topic: "r/7", QoS: 1, PacketID: 2, Retain: true, Payload: []byte("new")})
		recvAs[*packets.Puback](t, pub)
		seen := map[string]int{}
		for i := range n + 1 {
			m := first
			if i > 0 {
				m = recvAs[*packets.Publish](t, c)
			}
			c.Send(&packets.Puback{PacketID: m.PacketID})
			if seen[m.Topic] == 1 && !(m.Topic == "r/7" && string(m.Payload) == "new" && !m.Retain) {
				t.Fatalf("%s twice: %q retain %v", m.Topic, m.Payload, m.Retain)
			}
			if seen[m.Topic] == 0 && !(m.Retain && bytes.Equal(m.Payload, payload)) {
				t.Fatalf("%s first as %q retain %v, want its older retained value", m.Topic, m.Payload, m.Retain)
			}
			seen[m.Topic]++
		}
		if len(seen) != n || seen["r/7"] != 2 {
			t.Fatalf("%d topics, r/7 %d times; want %d topics, r/7 twice", len(seen), seen["r/7"], n)
		}
		expectNothing(t, c, "more than the retained messages")
	})
}

// Keep alive counts from the last complete packet: a connection that sends
// the start of a packet and then nothing is closed after 1.5 times its keep
// alive ([MQTT-3.1.2-24] in 3.1.1, [MQTT-3.1.2-22] in 5.0), whether the
// partial packet came with the CONNECT or after it.
func TestBoundsKeepAliveWithPartialPacket(t *testing.T) {
	connect, _ := (&packets.Connect{ProtocolVersion: packets.V311, ClientID: "partial", KeepAlive: 1, CleanStart: true}).Encode(nil, packets.V311)
	partial := []byte{0x30, 0x7F, 0x00} // a PUBLISH of 127 bytes, 1 sent
	for _, tc := range []struct {
		name     string
		together bool
	}{{"with CONNECT", true}, {"after CONNACK", false}} {
		t.Run(tc.name, func(t *testing.T) {
			inBubble(t, nil, func(t *testing.T, srv *tern.Server) {
				c := dialBubble(t, srv, packets.V311)
				if tc.together {
					c.SendRaw(append(append([]byte(nil), connect...), partial...))
					recvAs[*packets.Connack](t, c)
				} else {
					c.SendRaw(connect)
					recvAs[*packets.Connack](t, c)
					c.SendRaw(partial)
				}
				start := time.Now()
				c.ExpectClosed()
				if d := time.Since(start); d != 1500*time.Millisecond {
					t.Fatalf("closed %v after the CONNECT, want 1.5 s", d)
				}
			})
		})
	}
}

// A packet larger than the read buffer reserves its size from the message
// memory budget before its body is read; with no room, the connection
// waits, then is refused (v5: DISCONNECT 0x97), so unfinished packets
// cannot take more memory than the budget.
func TestBoundsUnfinishedPackets(t *testing.T) {
	defer tern.SetReserveWait(200 * time.Millisecond)()
	srv := terntest.NewServer(t, &tern.Options{MaxMessageMemory: 300 << 10, MaxPacketSize: 1 << 20})
	header := func(size int) []byte {
		return append([]byte{0x30}, encodeVBI(size)...)
	}
	first := srv.Dial(t, packets.V5)
	first.MustConnect("big1")
	first.SendRaw(append(header(200<<10), make([]byte, 100<<10)...)) // holds 200 KiB
	terntest.Eventually(t, "the first packet's reservation", func() bool {
		used, _ := srv.MessageMemory()
		return used >= 200<<10
	})
	second := srv.Dial(t, packets.V5)
	second.MustConnect("big2")
	second.SendRaw(append(header(200<<10), make([]byte, 1000)...))
	expectProtocolClose(t, second, packets.QuotaExceeded)
	first.Close()
	terntest.Eventually(t, "the reservation to be given back", func() bool {
		used, _ := srv.MessageMemory()
		return used == 0
	})
}

// A packet larger than the read buffer whose body comes slowly, in parts
// further apart than the moment an idle connection parks, arrives whole.
func TestBoundsLargePacketInParts(t *testing.T) {
	t.Parallel()
	srv := terntest.NewServer(t, nil)
	sub := mustConnect(t, srv, packets.V311, "parts-sub")
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "parts"})
	pub := mustConnect(t, srv, packets.V311, "parts-pub")
	payload := bytes.Repeat([]byte("0123456789"), 10_000)
	b, _ := (&packets.Publish{Topic: "parts", Payload: payload}).Encode(nil, packets.V311)
	pub.SendRaw(b[:len(b)/2])
	time.Sleep(400 * time.Millisecond) // longer than a connection waits before it parks
	pub.SendRaw(b[len(b)/2:])
	if m := recvAs[*packets.Publish](t, sub); !bytes.Equal(m.Payload, payload) {
		t.Fatalf("got %d bytes, want the %d sent", len(m.Payload), len(payload))
	}
}

// Options.MaxTopicLevels is 128 by default: a filter with more levels gets
// 0x8F Topic filter invalid (3.1.1: 0x80 failure) for that filter; a
// PUBLISH to a topic with more is a malformed packet (v5 DISCONNECT
// 0x90). With the limit lifted a filter of 65,531 levels, the most a
// filter can have, is accepted and matched.
func TestBoundsTopicLevels(t *testing.T) {
	long := strings.Repeat("a/", 128) + "a"
	for _, ver := range bothVersions {
		t.Run(ver.name, func(t *testing.T) {
			srv := terntest.NewServer(t, nil)
			c := mustConnect(t, srv, ver.v, "levels")
			codes := subscribeRaw(t, c, 1, packets.Subscription{Filter: long}, packets.Subscription{Filter: long[2:]})
			refused := packets.TopicFilterInvalid
			if ver.v != packets.V5 {
				refused = 0x80
			}
			if codes[0] != refused || codes[1] != 0 {
				t.Fatalf("SUBACK %v, want [%v 0]", codes, refused)
			}
			c.Send(&packets.Publish{Topic: long, Payload: []byte("x")})
			expectProtocolClose(t, c, packets.TopicNameInvalid)
		})
	}
	t.Run("lifted", func(t *testing.T) {
		srv := terntest.NewServer(t, &tern.Options{MaxTopicLevels: -1, MaxPacketSize: 1 << 20})
		deep := strings.Repeat("/", 65530) // 65,531 empty levels: the most a filter can have
		c := mustConnect(t, srv, packets.V5, "deep")
		if codes := subscribeRaw(t, c, 1, packets.Subscription{Filter: deep}); codes[0] != 0 {
			t.Fatalf("SUBACK %v", codes)
		}
		pub := mustConnect(t, srv, packets.V5, "deep-pub")
		pub.Send(&packets.Publish{Topic: deep, Payload: []byte("deep")})
		if m := recvAs[*packets.Publish](t, c); string(m.Payload) != "deep" {
			t.Fatalf("got %q", m.Payload)
		}
	})
}

// Options.MaxRetainedMessages and MaxRetainedBytes: a retained message
// over a cap is refused. A v5 QoS 1 publisher gets 0x97 and the message
// goes nowhere; a 3.1.1 publisher's is delivered but not retained.
// Replacing a retained message within the caps and deleting one always
// work; refusals are counted.
func TestBoundsRetainedLimits(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxRetainedMessages: 2, MaxRetainedBytes: 100})
	sub := mustConnect(t, srv, packets.V5, "ret-sub")
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "rl/#"})
	v5 := mustConnect(t, srv, packets.V5, "ret-v5")
	v3 := mustConnect(t, srv, packets.V311, "ret-v3")
	publish := func(c *terntest.Conn, topic, payload string) packets.ReasonCode {
		c.Send(&packets.Publish{Topic: topic, QoS: 1, PacketID: 1, Retain: true, Payload: []byte(payload)})
		return recvAs[*packets.Puback](t, c).ReasonCode
	}
	expectAt := func(payload string) {
		if m := recvAs[*packets.Publish](t, sub); string(m.Payload) != payload {
			t.Fatalf("subscriber got %q, want %q", m.Payload, payload)
		}
	}
	for _, step := range []struct {
		c              *terntest.Conn
		topic, payload string
		want           packets.ReasonCode
		delivered      bool
	}{
		{v5, "rl/a", strings.Repeat("a", 40), 0, true},
		{v5, "rl/b", strings.Repeat("b", 40), 0, true},
		{v5, "rl/c", "c", packets.QuotaExceeded, false},                     // a third message
		{v3, "rl/c", "c", 0, true},                                          // delivered, not retained
		{v5, "rl/a", strings.Repeat("A", 50), 0, true},                      // replaced within the bytes
		{v5, "rl/b", strings.Repeat("B", 60), packets.QuotaExceeded, false}, // 118 bytes in all
		{v5, "rl/b", "", 0, true},                                           // deleted (and delivered, as any message)
	} {
		got := publish(step.c, step.topic, step.payload)
		if got != step.want {
			t.Fatalf("publish %s %d bytes: %v, want %v", step.topic, len(step.payload), got, step.want)
		}
		if step.delivered {
			expectAt(step.payload)
		}
	}
	if n := srv.Stats().RetainedRefused; n != 3 {
		t.Fatalf("RetainedRefused = %d, want 3", n)
	}
	if publish(v5, "rl/c", "c") != 0 { // room again after the delete
		t.Fatal("retained message refused after a delete made room")
	}
	expectAt("c")
	got, _ := srv.RetainedMessages("rl/#")
	if len(got) != 2 || got[0].Topic != "rl/a" || got[1].Topic != "rl/c" {
		t.Fatalf("retained: %d messages", len(got))
	}
	expectNothing(t, sub, "refused messages")
}

// A client with many filters (100,000 here; TERN_BIG=1: 1,000,000) costs
// a bounded amount of memory per filter, and when it leaves the heap
// returns to where it was (within 10 %).
func TestBoundsManyFiltersMemory(t *testing.T) {
	n := 100_000
	if os.Getenv("TERN_BIG") != "" {
		n = 1_000_000
	}
	srv := terntest.NewServer(t, nil)
	live := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	c := mustConnect(t, srv, packets.V311, "many")
	before := live()
	var b []byte
	const batch = 1000
	for i := 0; i < n; i += batch {
		sub := &packets.Subscribe{PacketID: uint16(i/batch%65535 + 1)}
		for j := i; j < i+batch && j < n; j++ {
			sub.Subscriptions = append(sub.Subscriptions, packets.Subscription{Filter: "many/" + strconv.Itoa(j) + "/+"})
		}
		b, _ = sub.Encode(b[:0], packets.V311)
		c.SendRaw(b)
		recvAs[*packets.Suback](t, c)
	}
	during := live()
	perFilter := (int64(during) - int64(before)) / int64(n)
	t.Logf("%d filters: %d bytes of heap each", n, perFilter)
	if perFilter > 400 {
		t.Fatalf("%d bytes of heap per filter, want at most 400", perFilter)
	}
	c.Send(&packets.Disconnect{})
	c.ExpectClosed()
	terntest.Eventually(t, "the session to end", func() bool { return srv.Stats().Subscriptions == 0 })
	// Back to where it was: within 10 % of the heap before, or, as the heap
	// of this test's broker is small, within 1 % of what the filters took.
	if after := live(); after > before+max(before/10, (during-before)/100) {
		t.Fatalf("heap %d after the client left, %d before it subscribed, %d with the filters", after, before, during)
	}
}
