package bridge

import (
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/auth"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// With the remote down, twice the queue limit published: exactly the
// overflow is dropped and counted (queue_full), the broker's message
// memory holds only the queue, and other clients are served meanwhile.
// When the remote returns, the queued messages arrive.
func TestBoundedQueue(t *testing.T) {
	t.Parallel()
	const limit = 300
	b := newNode(t, "B", newMemStore())
	b.stop()
	a := newNode(t, "A", nil, fast(Config{Name: "ab", Addresses: []string{b.addr},
		Queue: Queue{MaxMessages: limit}, Topics: []Topic{{Pattern: "data/#", QoS: 1}}}))
	terntest.Eventually(t, "the bridge's session", func() bool { return len(a.srv.Subscriptions("$bridge/ab")) == 1 })
	payload := strings.Repeat("p", 1000)
	pub := dialClient(t, a.addr, "pub", packets.V5, true, 0)
	for range 2 * limit {
		pub.publish("data/x", payload, 1, false)
	}
	br, _ := a.m.Bridge("ab")
	st := br.Status()
	if st.Queued != limit || st.Dropped["queue_full"] != limit {
		t.Fatalf("queued %d, dropped %v; want %d and %d queue_full", st.Queued, st.Dropped, limit, limit)
	}
	if used, _ := a.srv.MessageMemory(); used > 2*limit*(1000+200) {
		t.Errorf("message memory %d bytes for %d queued messages of 1000 bytes", used, limit)
	}
	// Other clients are served.
	other := dialClient(t, a.addr, "other", packets.V5, true, 0)
	other.subscribe("chat", 1)
	pub.publish("chat", "hello", 1, false)
	other.expect(1)

	b.start()
	sub := newCounter(t, func() string { return b.addr }, "sub", "data/#")
	_ = sub
	terntest.Eventually(t, "the queue to drain", func() bool {
		st := br.Status()
		return st.Queued == 0 && st.Inflight == 0 && st.Sent == limit
	})
}

// Two addresses, failover primary: when the primary fails the bridge moves
// to the secondary within reconnect max, and goes back to the primary once
// it answers again (probed every reconnect max). Round robin moves on at
// each failure and stays.
func TestFailover(t *testing.T) {
	t.Parallel()
	primary := newNode(t, "P", nil)
	secondary := newNode(t, "S", nil)
	const max = 500 * time.Millisecond
	a := newNode(t, "A", nil, Config{Name: "ab", Addresses: []string{primary.addr, secondary.addr},
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: max, ConnectTimeout: time.Second,
		Topics: []Topic{{Pattern: "#", Direction: Both, QoS: 1}}})
	br, _ := a.m.Bridge("ab")
	connectedTo := func(addr string) func() bool {
		return func() bool { st := br.Status(); return st.State == StateConnected && st.Address == addr }
	}
	terntest.Eventually(t, "the bridge to connect to the primary", connectedTo(primary.addr))
	primary.stop()
	start := time.Now()
	terntest.Eventually(t, "the bridge to fail over", connectedTo(secondary.addr))
	if d := time.Since(start); d > max+time.Second {
		t.Errorf("failover took %v, more than reconnect max %v + 1 s", d, max)
	}
	primary.start()
	start = time.Now()
	terntest.Eventually(t, "the bridge to go back to the primary", connectedTo(primary.addr))
	if d := time.Since(start); d > 2*max+time.Second {
		t.Errorf("going back took %v", d)
	}

	// Round robin: a failure moves to the next address, and it stays.
	a.m.Update([]Config{{Name: "ab", Addresses: []string{primary.addr, secondary.addr}, Failover: FailoverRoundRobin,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: max, ConnectTimeout: time.Second,
		Topics: []Topic{{Pattern: "#", Direction: Both, QoS: 1}}}})
	br, _ = a.m.Bridge("ab")
	terntest.Eventually(t, "the bridge to connect", connectedTo(primary.addr))
	secondary.srv.Disconnect(br.s.ClientID, packets.ServerShuttingDown) // not connected there: no effect
	primary.srv.Disconnect(br.s.ClientID, packets.UseAnotherServer)
	terntest.Eventually(t, "the bridge to move on", connectedTo(secondary.addr))
	time.Sleep(3 * max)
	if !connectedTo(secondary.addr)() {
		t.Errorf("round robin went back: %+v", br.Status())
	}
}

// The remote's password, and a local broker that requires passwords: the
// bridge's local side is trusted, its remote side logs in; a wrong
// password leaves it in state error with the CONNACK's reason.
func TestCredentials(t *testing.T) {
	t.Parallel()
	pw := t.TempDir() + "/passwd"
	h, _ := auth.HashPassword("right")
	writeTestFile(t, pw, "edge:"+h+"\n")
	hook, err := auth.NewPasswordFile(pw, auth.PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	acl, err := auth.NewACL(writeTestFile(t, t.TempDir()+"/acl", "user edge\ntopic readwrite up/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := terntest.NewServer(t, &tern.Options{NodeID: "B", Logger: testLog()}, hook, acl)
	a, m := broker(t, "A", nil, fast(Config{Name: "good", Addresses: []string{b.Addr}, Username: "edge", Password: "right",
		Topics: []Topic{{Pattern: "up/#", QoS: 1}}}), fast(Config{Name: "bad", Addresses: []string{b.Addr}, Username: "edge",
		Password: "wrong", Topics: []Topic{{Pattern: "up/#", QoS: 1}}}))
	_ = a
	good, _ := m.Bridge("good")
	bad, _ := m.Bridge("bad")
	terntest.Eventually(t, "good to connect", func() bool { return good.Status().State == StateConnected })
	terntest.Eventually(t, "bad to fail", func() bool { return bad.Status().State == StateError })
	if st := bad.Status(); !strings.Contains(st.LastError, "0x86") {
		t.Errorf("last error %q", st.LastError)
	}
}

// Retained messages keep their flag across the bridge, both ways; QoS 2
// messages arrive exactly once at QoS 2; message properties pass through
// with the hop list added.
func TestRetainQoS2Properties(t *testing.T) {
	t.Parallel()
	b, _ := broker(t, "B", nil)
	a, m := broker(t, "A", nil, fast(Config{Name: "ab", Addresses: []string{b.Addr},
		Topics: []Topic{{Pattern: "#", Direction: Both, QoS: 2}}}))
	waitConnected(t, m)
	pubA := dialClient(t, a.Addr, "pubA", packets.V5, true, 0)
	pubA.publish("r/a", "retained on A", 1, true)
	pubB := dialClient(t, b.Addr, "pubB", packets.V5, true, 0)
	pubB.publish("r/b", "retained on B", 1, true)
	terntest.Eventually(t, "the retained messages to cross", func() bool {
		_, okB := b.RetainedMessage("r/a")
		_, okA := a.RetainedMessage("r/b")
		return okA && okB
	})
	late := dialClient(t, b.Addr, "late", packets.V5, true, 0)
	late.subscribe("r/#", 1)
	for _, p := range late.expect(2) {
		if !p.Retain {
			t.Errorf("%s without RETAIN", p.Topic)
		}
	}

	subB := dialClient(t, b.Addr, "subB", packets.V5, true, 0)
	subB.subscribe("q2/#", 2)
	subA := dialClient(t, a.Addr, "subA", packets.V5, true, 0)
	subA.subscribe("q2/#", 2)
	time.Sleep(100 * time.Millisecond)
	id, ch := pubA.id()
	pk := &packets.Publish{Topic: "q2/x", QoS: 2, PacketID: id, Payload: []byte("two")}
	pk.Properties.ContentType = "text/plain"
	pk.Properties.User = []packets.UserProperty{{Key: "k", Value: "v"}}
	pk.Properties.CorrelationData = []byte("c")
	pubA.c.send(pk)
	pubA.wait(ch, "PUBCOMP")
	got := subB.expect(1)[0]
	if got.QoS != 2 || got.Properties.ContentType != "text/plain" || string(got.Properties.CorrelationData) != "c" ||
		len(got.Properties.User) != 2 || got.Properties.User[1] != (packets.UserProperty{Key: ViaProperty, Value: "A"}) {
		t.Errorf("at B: %+v", got)
	}
	subA.expect(1)
	pubB.publish("q2/y", "back", 2, false)
	if got := subA.expect(1)[0]; got.QoS != 2 || got.Topic != "q2/y" {
		t.Errorf("at A: %+v", got)
	}
	subB.expect(1)
	subA.expectNone(300 * time.Millisecond)
	subB.expectNone(10 * time.Millisecond)
}

// A message larger than the remote's Maximum Packet Size is not sent; it
// is counted (packet_too_large) and the bridge goes on.
func TestRemoteMaxPacketSize(t *testing.T) {
	t.Parallel()
	b, _ := broker(t, "B", &tern.Options{MaxPacketSize: 1024})
	a, m := broker(t, "A", nil, fast(Config{Name: "ab", Addresses: []string{b.Addr}, Topics: []Topic{{Pattern: "#", QoS: 1}}}))
	waitConnected(t, m)
	sub := dialClient(t, b.Addr, "sub", packets.V5, true, 0)
	sub.subscribe("#", 1)
	time.Sleep(100 * time.Millisecond)
	pub := dialClient(t, a.Addr, "pub", packets.V5, true, 0)
	pub.publish("big", strings.Repeat("x", 2000), 1, false)
	pub.publish("small", "x", 1, false)
	if got := sub.expect(1)[0]; got.Topic != "small" {
		t.Errorf("got %s", got.Topic)
	}
	br, _ := m.Bridge("ab")
	if n := br.Status().Dropped["packet_too_large"]; n != 1 {
		t.Errorf("packet_too_large %d, want 1", n)
	}
}

// Notifications: retained "1" on the notification topic, here and on the
// remote, while connected; "0" when the bridge stops.
func TestNotifications(t *testing.T) {
	t.Parallel()
	b, _ := broker(t, "B", nil)
	a := newNode(t, "A", nil, fast(Config{Name: "ab", ClientID: "edge.ab", Addresses: []string{b.Addr},
		Topics: []Topic{{Pattern: "x/#", QoS: 1}}}))
	waitConnected(t, a.m)
	const topic = "$SYS/broker/connection/edge.ab/state"
	state := func(srv *tern.Server) string {
		m, ok := srv.RetainedMessage(topic)
		if !ok {
			return ""
		}
		return string(m.Payload)
	}
	terntest.Eventually(t, "state 1 on both sides", func() bool { return state(a.srv) == "1" && state(b.Server) == "1" })
	a.stop()
	terntest.Eventually(t, "state 0 on the remote", func() bool { return state(b.Server) == "0" })
}

// A rule changed from in to out by a reload: the remote kept the old
// subscription in the bridge's session there, so the bridge unsubscribes
// (Mosquitto's bridge_attempt_unsubscribe) and nothing more comes in.
func TestReloadUnsubscribesRemote(t *testing.T) {
	t.Parallel()
	b, _ := broker(t, "B", nil)
	a, m := broker(t, "A", nil)
	cfg := func(d Direction) []Config {
		return []Config{fast(Config{Name: "ab", Addresses: []string{b.Addr}, Notifications: new(false),
			Topics: []Topic{{Pattern: "cmd/#", Direction: d, QoS: 1}}})}
	}
	if err := m.Update(cfg(In)); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, m)
	sub := dialClient(t, a.Addr, "sub", packets.V5, true, 0)
	sub.subscribe("cmd/#", 1)
	pub := dialClient(t, b.Addr, "pub", packets.V5, true, 0)
	terntest.Eventually(t, "the remote subscription", func() bool { return len(b.Subscriptions("")) > 0 })
	pub.publish("cmd/1", "in", 1, false)
	sub.expect(1)
	old, _ := m.Bridge("ab")
	// The remote has the bridge's PUBACK: otherwise it sends cmd/1 again
	// when the new bridge resumes the session [MQTT-4.4.0-1], and the new
	// bridge, which takes nothing in, drops it.
	terntest.Eventually(t, "the remote to have the bridge's PUBACK", func() bool {
		ci, ok := b.ClientInfo(old.s.ClientID)
		return ok && ci.Inflight == 0
	})
	if err := m.Update(cfg(Out)); err != nil {
		t.Fatal(err)
	}
	br, _ := m.Bridge("ab")
	if br == old {
		t.Fatal("the changed bridge was not replaced")
	}
	waitConnected(t, m)
	terntest.Eventually(t, "the remote subscription to go", func() bool {
		for _, s := range b.Subscriptions("") {
			if s.ClientID == br.s.ClientID {
				return false
			}
		}
		return true
	})
	pub.publish("cmd/2", "not any more", 1, false)
	sub.expectNone(300 * time.Millisecond)
	if n := br.Status().Dropped[ReasonUnmappable]; n != 0 {
		t.Errorf("%d messages came in and were dropped", n)
	}
}

// Brokers that impose a keep alive (Server Keep Alive, limits.max_keepalive)
// on both sides: the bridge pings each side as it asks, and an idle link
// stays up.
func TestServerKeepAlive(t *testing.T) {
	t.Parallel()
	b, _ := broker(t, "B", &tern.Options{MaxKeepAlive: 1})
	_, m := broker(t, "A", &tern.Options{MaxKeepAlive: 1}, fast(Config{Name: "ab", Addresses: []string{b.Addr},
		Topics: []Topic{{Pattern: "#", Direction: Both, QoS: 1}}}))
	waitConnected(t, m)
	time.Sleep(3500 * time.Millisecond)
	br, _ := m.Bridge("ab")
	if st := br.Status(); st.State != StateConnected || st.Reconnects != 0 {
		t.Errorf("after 3.5 s idle with keep alives of 1 s: %+v", st)
	}
}

// A remote that lost the bridge's session (no persistence, restarted)
// hands out packet ids afresh; the local session may still hold one as a
// QoS 2 id awaiting PUBREL from the old session. The bridge clears it
// before the first message with that id, which then arrives instead of
// being taken for a duplicate.
func TestFreshRemoteSessionQoS2(t *testing.T) {
	t.Parallel()
	a, m := broker(t, "A", nil)
	// A stale QoS 2 receipt, id 1, in the bridge's local session.
	stale := a.Dial(t, packets.V5)
	cp := &packets.Connect{ClientID: LocalClientID("ab")}
	cp.Properties.SessionExpiry = packets.Uint32(600)
	stale.Connect(cp)
	stale.Send(&packets.Publish{Topic: "old", QoS: 2, PacketID: 1})
	if _, ok := stale.Recv().(*packets.Pubrec); !ok {
		t.Fatal("no PUBREC")
	}
	stale.Close()
	terntest.Eventually(t, "the stale connection to end", func() bool { return len(a.Clients()) == 0 })

	b, _ := broker(t, "B", nil) // no store: a new session for the bridge
	if err := m.Update([]Config{fast(Config{Name: "ab", Addresses: []string{b.Addr}, Notifications: new(false),
		Topics: []Topic{{Pattern: "cmd/#", Direction: In, QoS: 2}}})}); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, m)
	sub := dialClient(t, a.Addr, "sub", packets.V5, true, 0)
	sub.subscribe("cmd/#", 2)
	terntest.Eventually(t, "the remote subscription", func() bool { return len(b.Subscriptions("")) > 0 })
	pub := dialClient(t, b.Addr, "pub", packets.V5, true, 0)
	pub.publish("cmd/1", "first", 2, false) // packet id 1 towards the bridge
	if got := sub.expect(1)[0]; got.Topic != "cmd/1" {
		t.Fatalf("got %s", got.Topic)
	}
	pub.publish("cmd/2", "second", 2, false)
	sub.expect(1)
}
