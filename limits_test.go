package tern_test

// Raw-packet tests of the broker's limits: packet size both ways, session
// queue limits with counted (never silent) drops, QoS and retain limits.

import (
	"bytes"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// dropRecorder is a DropObserver that keeps every drop it is told of.
type dropRecorder struct {
	mu    sync.Mutex
	drops []recordedDrop
}

type recordedDrop struct {
	client, topic, payload string
	qos                    byte
	reason                 tern.DropReason
}

func (*dropRecorder) ID() string { return "drop-recorder" }

func (r *dropRecorder) OnMessageDropped(id string, m *tern.Message, why tern.DropReason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drops = append(r.drops, recordedDrop{id, m.Topic, string(m.Payload), m.QoS, why})
}

func (r *dropRecorder) get() []recordedDrop {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedDrop(nil), r.drops...)
}

// publishSized builds a QoS 1 PUBLISH whose whole encoded size is exactly
// size bytes for the version.
func publishSized(t *testing.T, v byte, topic string, id uint16, size int) *packets.Publish {
	t.Helper()
	pk := &packets.Publish{Topic: topic, QoS: 1, PacketID: id}
	for n := size; n >= 0; n-- {
		pk.Payload = make([]byte, n)
		if pk.Size(v) == size {
			return pk
		}
	}
	t.Fatalf("no PUBLISH of %d bytes", size)
	return nil
}

// The broker's Maximum Packet Size (Options.MaxPacketSize), advertised to
// v5 clients (section 3.2.2.3.6): a packet of exactly that size is accepted;
// one byte more is a Protocol Error, DISCONNECT 0x95 (section 3.2.2.3.6,
// [MQTT-3.2.2-15] is the client's side); 3.1.1 clients are disconnected.
// The check is made on the fixed header, before the body is read: a header
// announcing 200 MB is refused at once, without the body ever being sent.
func TestLimitInboundPacketSize(t *testing.T) {
	const maxSize = 256
	srv := terntest.NewServer(t, &tern.Options{MaxPacketSize: maxSize})
	for _, ver := range bothVersions {
		t.Run(ver.name, func(t *testing.T) {
			p := newHealthProbe(t, srv, ver.v, "size-"+ver.name)
			c := srv.Dial(t, ver.v)
			ack := c.MustConnect("big-" + ver.name)
			if ver.v == packets.V5 && ack.Properties.MaximumPacketSize != maxSize {
				t.Fatalf("CONNACK Maximum Packet Size %d, want %d", ack.Properties.MaximumPacketSize, maxSize)
			}
			c.Send(publishSized(t, ver.v, "size/t", 1, maxSize))
			if a := recvAs[*packets.Puback](t, c); a.PacketID != 1 {
				t.Fatalf("PUBACK %d", a.PacketID)
			}
			c.Send(publishSized(t, ver.v, "size/t", 2, maxSize+1))
			expectProtocolClose(t, c, packets.PacketTooLarge)
			p.check(t)

			c = mustConnect(t, srv, ver.v, "huge-"+ver.name)
			// PUBLISH QoS 0, remaining length 200,000,000 (80 84 AF 5F), and
			// nothing more: the body never comes.
			c.SendRaw([]byte{0x30, 0x80, 0x84, 0xAF, 0x5F})
			expectProtocolClose(t, c, packets.PacketTooLarge)
			p.check(t)
		})
	}
}

// [MQTT-3.1.2-24]: the server sends no packet larger than the client's
// Maximum Packet Size; [MQTT-3.1.2-25]: it discards such a message as if
// it had been sent, so later messages (and the QoS 1 flow) carry on. The
// discard is reported to DropObserver hooks as packet_too_large.
func TestLimitOutboundPacketSize(t *testing.T) {
	rec := &dropRecorder{}
	srv := terntest.NewServer(t, nil, rec)
	sub := srv.Dial(t, packets.V5)
	sub.Connect(&packets.Connect{ClientID: "small", CleanStart: true,
		Properties: packets.Properties{MaximumPacketSize: 100, ReceiveMaximum: 1}})
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "mps/#", QoS: 1})
	pub := mustConnect(t, srv, packets.V5, "mps-pub")
	for i, size := range []int{10, 500, 20, 98, 1000, 30} {
		pub.Send(&packets.Publish{Topic: "mps/t", QoS: 1, PacketID: uint16(i + 1), Payload: bytes.Repeat([]byte{'a' + byte(i)}, size)})
		recvAs[*packets.Puback](t, pub)
	}
	// With Receive Maximum 1, each message waits for the previous PUBACK:
	// a skipped one must not hold the window.
	for _, want := range []int{10, 20, 30} {
		raw := sub.RecvRaw()
		if len(raw) > 100 {
			t.Fatalf("got a %d-byte packet, over the client's maximum of 100", len(raw))
		}
		pk, err := packets.ReadPacket(bytes.NewReader(raw), packets.V5, 0)
		if err != nil {
			t.Fatal(err)
		}
		m := pk.(*packets.Publish)
		if len(m.Payload) != want {
			t.Fatalf("got a %d-byte payload, want %d", len(m.Payload), want)
		}
		sub.Send(&packets.Puback{PacketID: m.PacketID})
	}
	expectNothing(t, sub, "oversized messages")
	var tooLarge int
	for _, d := range rec.get() {
		if d.reason == tern.DropTooLarge && d.client == "small" {
			tooLarge++
		}
	}
	if tooLarge != 3 { // 500 and 1000 bytes, and 98 bytes of payload in a 108-byte packet
		t.Fatalf("%d packet_too_large drops reported, want 3: %+v", tooLarge, rec.get())
	}
}

// connectPersistent connects id with a session that outlives the
// connection: v5 Session Expiry 300 s (Clean Start as given), 3.1.1 Clean
// Session 0.
func connectPersistent(t *testing.T, srv *terntest.Server, v byte, id string, clean bool) (*terntest.Conn, *packets.Connack) {
	t.Helper()
	c := srv.Dial(t, v)
	pk := &packets.Connect{ClientID: id, KeepAlive: 60}
	if v == packets.V5 {
		pk.CleanStart = clean
		pk.Properties.SessionExpiry = new(uint32(300))
	}
	ack := c.Connect(pk)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %v", ack.ReasonCode)
	}
	return c, ack
}

// goOffline ends the connection with DISCONNECT and waits until the server
// has closed it.
func goOffline(t *testing.T, c *terntest.Conn) {
	t.Helper()
	c.Send(&packets.Disconnect{})
	c.ExpectClosed()
	c.Close()
}

// Options.MaxQueuedMessages: an offline session receiving 20 QoS 1
// messages keeps 10 and gets exactly those on return ([MQTT-3.1.2-5] v5,
// [MQTT-3.1.2-4] 3.1.1: the session resumes); the other 10 are not lost
// silently: Stats().MessagesDropped and DropObserver hooks (queue_full)
// count every one.
func TestLimitQueuedMessages(t *testing.T) {
	t.Parallel()
	for _, ver := range bothVersions {
		t.Run(ver.name, func(t *testing.T) {
			rec := &dropRecorder{}
			srv := terntest.NewServer(t, &tern.Options{MaxQueuedMessages: 10}, rec)
			c, _ := connectPersistent(t, srv, ver.v, "queued", true)
			subscribeRaw(t, c, 1, packets.Subscription{Filter: "q/t", QoS: 1})
			goOffline(t, c)

			pub := mustConnect(t, srv, ver.v, "q-pub")
			for i := 1; i <= 20; i++ {
				pub.Send(&packets.Publish{Topic: "q/t", QoS: 1, PacketID: uint16(i), Payload: []byte(strconv.Itoa(i))})
				recvAs[*packets.Puback](t, pub) // routed (and any drop reported) before the PUBACK
			}
			if n := srv.Stats().MessagesDropped; n != 10 {
				t.Fatalf("Stats().MessagesDropped = %d, want 10", n)
			}
			drops := rec.get()
			if len(drops) != 10 {
				t.Fatalf("%d drops reported to the hook, want 10: %+v", len(drops), drops)
			}
			for i, d := range drops {
				if d.reason != tern.DropQueueFull || d.client != "queued" || d.payload != strconv.Itoa(11+i) {
					t.Fatalf("drop %d: %+v, want message %d queue_full for \"queued\"", i, d, 11+i)
				}
			}

			c, ack := connectPersistent(t, srv, ver.v, "queued", false)
			if !ack.SessionPresent {
				t.Fatal("session not present")
			}
			for i := 1; i <= 10; i++ {
				m := recvAs[*packets.Publish](t, c)
				if string(m.Payload) != strconv.Itoa(i) || m.QoS != 1 {
					t.Fatalf("got %q QoS %d, want message %d at QoS 1", m.Payload, m.QoS, i)
				}
				c.Send(&packets.Puback{PacketID: m.PacketID})
			}
			expectNothing(t, c, "more than the 10 queued messages")
		})
	}
}

// When the queue is full, the oldest QoS 0 message makes room for a QoS 1
// one (Options.MaxQueuedMessages); with no QoS 0 left a new message is
// dropped. Every drop is counted and reported.
func TestLimitQueueDropsQoS0First(t *testing.T) {
	rec := &dropRecorder{}
	srv := terntest.NewServer(t, &tern.Options{MaxQueuedMessages: 10}, rec)
	c, _ := connectPersistent(t, srv, packets.V5, "q0", true)
	subscribeRaw(t, c, 1, packets.Subscription{Filter: "q0/#", QoS: 1})
	goOffline(t, c)

	pub := mustConnect(t, srv, packets.V5, "q0-pub")
	id := uint16(0)
	send := func(qos byte, payload string) {
		id++
		pub.Send(&packets.Publish{Topic: "q0/t", QoS: qos, PacketID: uint16(qos) * id, Payload: []byte(payload)})
		if qos > 0 {
			recvAs[*packets.Puback](t, pub)
		}
	}
	for i := range 5 {
		send(0, "a"+strconv.Itoa(i))
		send(1, "b"+strconv.Itoa(i))
	}
	for i := range 5 { // the queue is full: each evicts the oldest QoS 0
		send(1, "c"+strconv.Itoa(i))
	}
	send(0, "late")    // no room and nothing to evict: dropped
	send(1, "overrun") // nor for QoS 1 now
	// Synchronise: a PINGRESP comes after everything the PUBLISHes caused.
	pub.Send(&packets.Pingreq{})
	recvAs[*packets.Pingresp](t, pub)

	var got []string
	for _, d := range rec.get() {
		if d.reason != tern.DropQueueFull {
			t.Fatalf("drop %+v, want queue_full", d)
		}
		got = append(got, d.payload)
	}
	want := []string{"a0", "a1", "a2", "a3", "a4", "late", "overrun"}
	if !slices.Equal(got, want) {
		t.Fatalf("dropped %v, want %v", got, want)
	}
	if n := srv.Stats().MessagesDropped; n != int64(len(want)) {
		t.Fatalf("Stats().MessagesDropped = %d, want %d", n, len(want))
	}
	c, _ = connectPersistent(t, srv, packets.V5, "q0", false)
	for _, w := range []string{"b0", "b1", "b2", "b3", "b4", "c0", "c1", "c2", "c3", "c4"} {
		m := recvAs[*packets.Publish](t, c)
		if string(m.Payload) != w {
			t.Fatalf("got %q, want %q", m.Payload, w)
		}
		c.Send(&packets.Puback{PacketID: m.PacketID})
	}
	expectNothing(t, c, "dropped messages")
}

// A v5 client must not publish above the Maximum QoS or with RETAIN when
// Retain Available is 0 ([MQTT-3.2.2-11], [MQTT-3.2.2-14]); the server
// answers DISCONNECT 0x9B / 0x9A (sections 3.2.2.3.4, 3.2.2.3.5).
func TestLimitQoSAndRetainAvailability(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxQoS: new(byte(1)), RetainAvailable: new(false)})
	c := srv.Dial(t, packets.V5)
	ack := c.MustConnect("limits")
	if ack.Properties.MaximumQoS == nil || *ack.Properties.MaximumQoS != 1 ||
		ack.Properties.RetainAvailable == nil || *ack.Properties.RetainAvailable != 0 {
		t.Fatalf("CONNACK properties %+v, want Maximum QoS 1 and Retain Available 0", ack.Properties)
	}
	c.Send(&packets.Publish{Topic: "l/t", QoS: 2, PacketID: 1})
	expectProtocolClose(t, c, packets.QoSNotSupported)

	c = mustConnect(t, srv, packets.V5, "limits2")
	c.Send(&packets.Publish{Topic: "l/t", Retain: true, Payload: []byte("r")})
	expectProtocolClose(t, c, packets.RetainNotSupported)
}
