package tern_test

// Tests of what the core does for bridges (bridging.go) and of per-session
// queue limits (session_limits.go).

import (
	"strings"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// A 3.1.1 or 3.1 CONNECT with the bridge bit in its protocol level (0x84,
// 0x83: Mosquitto's try_private) is accepted, and the client's
// subscriptions behave as No Local [MQTT-3.8.3-3] and Retain As Published
// [MQTT-3.8.3-4]: it does not get back what it published, and retained
// messages keep their RETAIN flag (a plain 3.1.1 subscriber gets it
// cleared for a message published while it is subscribed [MQTT-3.3.1-9]).
func TestBridgeBitClient(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	for _, v := range []byte{packets.V311, packets.V31} {
		c := srv.Dial(t, v)
		ack := c.Connect(&packets.Connect{ProtocolVersion: v, Bridge: true, ClientID: "mosq.bridge", KeepAlive: 60})
		if ack.ReasonCode != packets.Success {
			t.Fatalf("v%d bridge CONNECT refused: %v", v, ack.ReasonCode)
		}
		if ci, ok := srv.ClientInfo("mosq.bridge"); !ok || !ci.Bridge || ci.ProtocolVersion != v {
			t.Fatalf("ClientInfo %+v", ci)
		}
		subscribeRaw(t, c, 1, packets.Subscription{Filter: "b/#", QoS: 1})
		other := mustConnect(t, srv, packets.V311, "plain")
		subscribeRaw(t, other, 1, packets.Subscription{Filter: "b/#", QoS: 1})

		// Its own message does not come back; the plain subscriber gets it.
		c.Send(&packets.Publish{Topic: "b/own", QoS: 1, PacketID: 7, Payload: []byte("x")})
		if a := recvAs[*packets.Puback](t, c); a.PacketID != 7 {
			t.Fatalf("PUBACK %+v", a)
		}
		if p := recvAs[*packets.Publish](t, other); p.Topic != "b/own" {
			t.Fatalf("plain subscriber got %+v", p)
		}
		other.Send(&packets.Puback{PacketID: 1})
		expectNothing(t, c, "the bridge's own message")

		// A shared subscription is allowed (No Local is not applied to it).
		if codes := subscribeRaw(t, c, 2, packets.Subscription{Filter: "$share/g/s/#", QoS: 1}); codes[0].IsError() {
			t.Fatalf("shared subscription of a bridge: %v", codes[0])
		}

		// A retained message from someone else keeps its flag for the
		// bridge, not for the plain subscriber.
		other.Send(&packets.Publish{Topic: "b/r", Retain: true, Payload: []byte("r")})
		if p := recvAs[*packets.Publish](t, c); p.Topic != "b/r" || !p.Retain {
			t.Fatalf("bridge got %+v, want b/r with RETAIN", p)
		}
		if p := recvAs[*packets.Publish](t, other); p.Retain {
			t.Fatalf("plain subscriber got RETAIN set on a live message")
		}
		srv.DeleteRetained("b/r")
		c.Close()
		other.Close()
		terntest.Eventually(t, "the clients to go", func() bool { return len(srv.Clients()) == 0 })
	}
}

// A v5 CONNECT carrying the user property tern-node gets the broker's node
// id in the same property of its CONNACK; others get no such property.
func TestNodeIDInConnack(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{NodeID: "edge-7"})
	c := srv.Dial(t, packets.V5)
	cp := &packets.Connect{ClientID: "b", CleanStart: true}
	cp.Properties.User = []packets.UserProperty{{Key: tern.NodeProperty, Value: "cloud"}}
	ack := c.Connect(cp)
	if len(ack.Properties.User) != 1 || ack.Properties.User[0] != (packets.UserProperty{Key: tern.NodeProperty, Value: "edge-7"}) {
		t.Fatalf("CONNACK user properties %+v", ack.Properties.User)
	}
	if srv.NodeID() != "edge-7" {
		t.Fatalf("NodeID %q", srv.NodeID())
	}
	plain := srv.Dial(t, packets.V5)
	if ack := plain.Connect(&packets.Connect{ClientID: "p", CleanStart: true}); len(ack.Properties.User) != 0 {
		t.Fatalf("CONNACK to a plain client has user properties %+v", ack.Properties.User)
	}
}

// SetSessionLimits gives one session its own queue size and policy, also
// for a session created after the call; the others keep the server's.
func TestSessionLimits(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxQueuedMessages: 100})
	srv.SetSessionLimits("small", &tern.SessionLimits{MaxQueuedMessages: 3, QueueFullPolicy: tern.DropOldest})
	for _, id := range []string{"small", "big"} {
		c := srv.Dial(t, packets.V5)
		cp := &packets.Connect{ClientID: id, CleanStart: true}
		cp.Properties.SessionExpiry = packets.Uint32(600)
		c.Connect(cp)
		subscribeRaw(t, c, 1, packets.Subscription{Filter: "q/#", QoS: 1})
		c.Close()
	}
	terntest.Eventually(t, "the sessions to go offline", func() bool { return len(srv.Clients()) == 0 })
	for i := range 5 {
		if err := srv.Publish("q/t", []byte{byte('0' + i)}, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	small, _ := srv.SessionInfo("small")
	big, _ := srv.SessionInfo("big")
	if small.Queued != 3 || small.Dropped[tern.DropQueueFull] != 2 || big.Queued != 5 {
		t.Fatalf("small %+v, big %+v", small, big)
	}
	// Drop oldest: the last three remain.
	c := srv.Dial(t, packets.V5)
	cp := &packets.Connect{ClientID: "small"}
	cp.Properties.SessionExpiry = packets.Uint32(600)
	c.Connect(cp)
	for _, want := range []string{"2", "3", "4"} {
		p := recvAs[*packets.Publish](t, c)
		if string(p.Payload) != want {
			t.Fatalf("got %q, want %q", p.Payload, want)
		}
		c.Send(&packets.Puback{PacketID: p.PacketID})
	}
	// Back to the server's limits.
	srv.SetSessionLimits("small", nil)
	c.Close()
	terntest.Eventually(t, "small to go offline", func() bool { return len(srv.Clients()) == 0 })
	for range 10 {
		srv.Publish("q/t", []byte("x"), false, 1)
	}
	if small, _ := srv.SessionInfo("small"); small.Queued != 10 {
		t.Fatalf("after reset: %+v", small)
	}
}

// discarder drops messages on topic "drop/..." quietly.
type discarder struct{}

func (discarder) ID() string { return "discarder" }
func (discarder) OnPublish(_ *tern.Client, pk *packets.Publish) error {
	if strings.HasPrefix(pk.Topic, "drop/") {
		return tern.ErrDiscard
	}
	return nil
}

// A PublishInterceptor that returns ErrDiscard drops the message quietly:
// the publisher gets a success acknowledgement (v5: 0x00, not an error
// code), nothing is routed, nothing counted as refused.
func TestInterceptorDiscard(t *testing.T) {
	srv := terntest.NewServer(t, nil, discarder{})
	sub := mustConnect(t, srv, packets.V5, "sub")
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "#", QoS: 1})
	pub := mustConnect(t, srv, packets.V5, "pub")
	pub.Send(&packets.Publish{Topic: "drop/x", QoS: 1, PacketID: 1})
	if a := recvAs[*packets.Puback](t, pub); a.ReasonCode != packets.Success {
		t.Fatalf("PUBACK %v", a.ReasonCode)
	}
	pub.Send(&packets.Publish{Topic: "drop/y", QoS: 2, PacketID: 2})
	if a := recvAs[*packets.Pubrec](t, pub); a.ReasonCode != packets.Success {
		t.Fatalf("PUBREC %v", a.ReasonCode)
	}
	pub.Send(&packets.Pubrel{PacketID: 2})
	recvAs[*packets.Pubcomp](t, pub)
	if err := srv.Publish("drop/z", nil, false, 0); err != nil {
		t.Fatalf("in-process publish: %v", err)
	}
	pub.Send(&packets.Publish{Topic: "keep", QoS: 1, PacketID: 3})
	recvAs[*packets.Puback](t, pub)
	if p := recvAs[*packets.Publish](t, sub); p.Topic != "keep" {
		t.Fatalf("subscriber got %s", p.Topic)
	}
	if n := srv.Stats().PublishDenied; n != 0 {
		t.Errorf("PublishDenied %d", n)
	}
}
