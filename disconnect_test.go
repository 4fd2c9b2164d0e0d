package tern_test

// Raw-packet tests of what a client's DISCONNECT does to its will and its
// session when the DISCONNECT is not a plain normal one.

import (
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// connectWithWill connects a v5 client with a QoS 1 will on topic and the
// session expiry interval given.
func connectWithWill(t *testing.T, srv *terntest.Server, id, topic string, expiry uint32) *terntest.Conn {
	t.Helper()
	c := srv.Dial(t, packets.V5)
	cp := &packets.Connect{ClientID: id, CleanStart: true,
		Will: &packets.Will{Topic: topic, Payload: []byte("gone"), QoS: 1}}
	if expiry != 0 {
		cp.Properties.SessionExpiry = &expiry
	}
	if ack := c.Connect(cp); ack.ReasonCode != packets.Success {
		t.Fatalf("CONNACK %v", ack.ReasonCode)
	}
	return c
}

// [MQTT-3.1.2-8]: the will is published when the connection closes
// unless the server deleted it on a DISCONNECT 0x00; [MQTT-3.14.4-3]: only
// a DISCONNECT with reason 0x00 (Normal disconnection) discards it. A
// DISCONNECT that is itself a Protocol Error (a Session Expiry Interval
// above 0 after 0 at CONNECT, [MQTT-3.14.2-2]) is answered with
// DISCONNECT 0x82 [MQTT-4.13.1-1] and the will is published; so it is
// after a client's DISCONNECT with an error reason code (0x80).
func TestDisconnectWill(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	watch := mustConnect(t, srv, packets.V5, "will-watcher")
	subscribeRaw(t, watch, 1, packets.Subscription{Filter: "dw/#", QoS: 1})
	expectWill := func(t *testing.T, topic string) {
		t.Helper()
		m := recvAs[*packets.Publish](t, watch)
		if m.Topic != topic || string(m.Payload) != "gone" {
			t.Fatalf("got %q %q, want the will on %s", m.Topic, m.Payload, topic)
		}
		watch.Send(&packets.Puback{PacketID: m.PacketID})
	}

	t.Run("protocol error DISCONNECT", func(t *testing.T) {
		c := connectWithWill(t, srv, "dw-protoerr", "dw/protoerr", 0)
		expiry := uint32(60)
		c.Send(&packets.Disconnect{Properties: packets.Properties{SessionExpiry: &expiry}})
		expectProtocolClose(t, c, packets.ProtocolError)
		expectWill(t, "dw/protoerr")
	})
	t.Run("DISCONNECT 0x80", func(t *testing.T) {
		c := connectWithWill(t, srv, "dw-err", "dw/err", 0)
		c.Send(&packets.Disconnect{ReasonCode: packets.UnspecifiedError})
		c.ExpectClosed()
		expectWill(t, "dw/err")
	})
	t.Run("DISCONNECT 0x04", func(t *testing.T) {
		c := connectWithWill(t, srv, "dw-with", "dw/with", 0)
		c.Send(&packets.Disconnect{ReasonCode: packets.DisconnectWithWill})
		c.ExpectClosed()
		expectWill(t, "dw/with")
	})
	t.Run("DISCONNECT 0x00", func(t *testing.T) {
		c := connectWithWill(t, srv, "dw-normal", "dw/normal", 0)
		c.Send(&packets.Disconnect{})
		c.ExpectClosed()
		// The session ending is the last thing the server does with the
		// connection; the will, were it sent, would be routed before it.
		terntest.Eventually(t, "session ended", func() bool {
			_, ok := srv.SessionInfo("dw-normal")
			return !ok
		})
		expectNothing(t, watch, "a will after DISCONNECT 0x00")
	})
	t.Run("DISCONNECT 0x00 lowering the expiry", func(t *testing.T) {
		c := connectWithWill(t, srv, "dw-lower", "dw/lower", 60)
		zero := uint32(0)
		c.Send(&packets.Disconnect{Properties: packets.Properties{SessionExpiry: &zero}})
		c.ExpectClosed()
		terntest.Eventually(t, "session ended", func() bool {
			_, ok := srv.SessionInfo("dw-lower")
			return !ok
		})
		expectNothing(t, watch, "a will after DISCONNECT 0x00")
	})
}

// Messages queued for a session whose expiry is 0 are not kept when its
// DISCONNECT asks for an expiry above 0: that DISCONNECT is a Protocol
// Error [MQTT-3.14.2-2], the interval stays the one of the CONNECT
// (section 3.14.2.2.2), and the session ends with the connection
// [MQTT-3.1.2-23], its queued messages dropped as session_ended. The client
// finds no session when it comes back ([MQTT-3.2.2-2]: session present 0).
func TestDisconnectRaisingExpiryKeepsNothing(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	sub := srv.Dial(t, packets.V5)
	// Receive Maximum 1: the second and third messages wait in the queue.
	sub.Connect(&packets.Connect{ClientID: "raise", CleanStart: true, Properties: packets.Properties{ReceiveMaximum: 1}})
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "raise/#", QoS: 1})
	pub := mustConnect(t, srv, packets.V5, "raise-pub")
	for i := uint16(1); i <= 3; i++ {
		pub.Send(&packets.Publish{Topic: "raise/x", QoS: 1, PacketID: i, Payload: []byte("m")})
		recvAs[*packets.Puback](t, pub)
	}
	recvAs[*packets.Publish](t, sub) // the first, left unacknowledged
	terntest.Eventually(t, "two messages queued", func() bool {
		si, ok := srv.SessionInfo("raise")
		return ok && si.Queued == 2
	})
	before := srv.Stats().Dropped(tern.DropSessionEnded)

	expiry := uint32(3600)
	sub.Send(&packets.Disconnect{Properties: packets.Properties{SessionExpiry: &expiry}})
	expectProtocolClose(t, sub, packets.ProtocolError)
	terntest.Eventually(t, "session ended", func() bool {
		_, ok := srv.SessionInfo("raise")
		return !ok
	})
	// Counted once the session's end is over, a little after it is gone
	// from the table.
	terntest.Eventually(t, "the 2 queued messages (and the inflight one) dropped as session_ended", func() bool {
		return srv.Stats().Dropped(tern.DropSessionEnded)-before >= 2
	})

	again := srv.Dial(t, packets.V5)
	ack := again.Connect(&packets.Connect{ClientID: "raise", Properties: packets.Properties{SessionExpiry: &expiry}})
	if ack.SessionPresent {
		t.Fatal("session present after a DISCONNECT that raised the expiry from 0")
	}
	expectNothing(t, again, "a message of the ended session")
}
