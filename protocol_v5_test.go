package tern_test

// Raw-packet tests of MQTT 5.0 features (flow control, topic aliases,
// reason codes, server DISCONNECT, enhanced authentication) and of the
// acknowledgement and subscription rules, with the 3.1.1 forms beside the
// v5 ones so that no v5 code leaks to a v3 client.

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// [MQTT-3.3.4-7]: a client must not exceed the Receive Maximum the server
// advertised; one that does gets DISCONNECT 0x93 (v5 section 3.3.4). The
// quota comes back with PUBCOMP ([MQTT-4.9.0-2], section 4.9).
func TestProtocolV5ReceiveMaximumEnforced(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{ReceiveMaximum: 3})
	c := srv.Dial(t, packets.V5)
	if ack := c.MustConnect("rm-in"); ack.Properties.ReceiveMaximum != 3 {
		t.Fatalf("CONNACK Receive Maximum %d, want 3 advertised", ack.Properties.ReceiveMaximum)
	}
	pub := func(id uint16) {
		c.Send(&packets.Publish{Topic: "rm/in", QoS: 2, PacketID: id, Payload: []byte("x")})
	}
	for id := uint16(1); id <= 3; id++ {
		pub(id)
		if rec := recvAs[*packets.Pubrec](t, c); rec.PacketID != id {
			t.Fatalf("PUBREC %d, want %d", rec.PacketID, id)
		}
	}
	c.Send(&packets.Pubrel{PacketID: 1})
	if comp := recvAs[*packets.Pubcomp](t, c); comp.PacketID != 1 || comp.ReasonCode != 0 {
		t.Fatalf("PUBCOMP %+v", comp)
	}
	pub(4) // the PUBCOMP for 1 freed one place
	if rec := recvAs[*packets.Pubrec](t, c); rec.PacketID != 4 {
		t.Fatalf("PUBREC %d, want 4", rec.PacketID)
	}
	pub(5) // four unacknowledged: one too many
	expectProtocolClose(t, c, packets.ReceiveMaximumExceeded)
}

// [MQTT-3.3.4-9], [MQTT-4.9.0-2]: the server sends no more unacknowledged
// QoS 1 PUBLISH packets than the client's Receive Maximum; each PUBACK lets
// the next one go. [MQTT-3.3.4-10]: other packets are not held back.
func TestProtocolV5ReceiveMaximumHonoured(t *testing.T) {
	t.Parallel()
	srv := terntest.NewServer(t, nil)
	sub := srv.Dial(t, packets.V5)
	sub.Connect(&packets.Connect{ClientID: "rm-out", CleanStart: true, Properties: packets.Properties{ReceiveMaximum: 2}})
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "rm/out", QoS: 1})
	pub := mustConnect(t, srv, packets.V5, "rm-out-pub")
	const n = 6
	for i := 1; i <= n; i++ {
		pub.Send(&packets.Publish{Topic: "rm/out", QoS: 1, PacketID: uint16(i), Payload: []byte(strconv.Itoa(i))})
		recvAs[*packets.Puback](t, pub)
	}
	var window []*packets.Publish
	next := 1
	take := func() {
		t.Helper()
		m := recvAs[*packets.Publish](t, sub)
		if string(m.Payload) != strconv.Itoa(next) {
			t.Fatalf("got message %q, want %d", m.Payload, next)
		}
		next++
		window = append(window, m)
	}
	take()
	take()
	expectNothing(t, sub, "third message with two unacknowledged")
	sub.Send(&packets.Pingreq{})
	recvAs[*packets.Pingresp](t, sub)
	for next <= n {
		sub.Send(&packets.Puback{PacketID: window[0].PacketID})
		window = window[1:]
		take()
		if len(window) > 2 {
			t.Fatalf("%d messages unacknowledged", len(window))
		}
	}
	expectNothing(t, sub, "after the last message")
}

// The send quota is not kept across connections: it starts again from the
// new connection's Receive Maximum (section 4.9), so the unacknowledged
// messages resent on resume ([MQTT-4.4.0-1], DUP set [MQTT-3.3.1-1]) are
// paced by it too [MQTT-3.3.4-9].
func TestProtocolV5ReceiveMaximumOnResume(t *testing.T) {
	t.Parallel()
	srv := terntest.NewServer(t, nil)
	connectRM := func(clean bool, rm uint16) (*terntest.Conn, *packets.Connack) {
		c := srv.Dial(t, packets.V5)
		return c, c.Connect(&packets.Connect{ClientID: "rm-resume", CleanStart: clean,
			Properties: packets.Properties{ReceiveMaximum: rm, SessionExpiry: new(uint32(300))}})
	}
	c, _ := connectRM(true, 5)
	subscribeRaw(t, c, 1, packets.Subscription{Filter: "rmr/t", QoS: 1})
	pub := mustConnect(t, srv, packets.V5, "rm-resume-pub")
	for i := 1; i <= 6; i++ {
		pub.Send(&packets.Publish{Topic: "rmr/t", QoS: 1, PacketID: uint16(i), Payload: []byte(strconv.Itoa(i))})
		recvAs[*packets.Puback](t, pub)
	}
	for range 5 {
		recvAs[*packets.Publish](t, c) // not acknowledged
	}
	goOffline(t, c)

	c, ack := connectRM(false, 2)
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	var window []*packets.Publish
	for want := 1; want <= 6; want++ {
		m := recvAs[*packets.Publish](t, c)
		if string(m.Payload) != strconv.Itoa(want) || m.Dup != (want <= 5) {
			t.Fatalf("got %q DUP %v, want message %d DUP %v", m.Payload, m.Dup, want, want <= 5)
		}
		window = append(window, m)
		if len(window) == 2 {
			expectNothing(t, c, "a third unacknowledged message")
			c.Send(&packets.Puback{PacketID: window[0].PacketID})
			window = window[1:]
		}
	}
}

// Topic aliases from client to server (v5 section 3.3.2.3.4).
func TestProtocolV5TopicAliasInbound(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{TopicAliasMaximum: new(uint16(10))})
	sub := mustConnect(t, srv, packets.V5, "alias-sub")
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "alias/#"})
	expect := func(topic, payload string) {
		t.Helper()
		m := recvAs[*packets.Publish](t, sub)
		if m.Topic != topic || string(m.Payload) != payload || m.Properties.TopicAlias != 0 {
			t.Fatalf("got %q %q alias %d, want %q %q without alias", m.Topic, m.Payload, m.Properties.TopicAlias, topic, payload)
		}
	}
	c := srv.Dial(t, packets.V5)
	if ack := c.MustConnect("alias-pub"); ack.Properties.TopicAliasMaximum != 10 {
		t.Fatalf("CONNACK Topic Alias Maximum %d, want 10", ack.Properties.TopicAliasMaximum)
	}
	send := func(topic string, alias uint16, payload string) {
		c.Send(&packets.Publish{Topic: topic, Properties: packets.Properties{TopicAlias: alias}, Payload: []byte(payload)})
	}
	// [MQTT-3.3.2-12]: aliases 1..10 are accepted.
	send("alias/one", 1, "a")
	expect("alias/one", "a")
	send("", 1, "b") // empty topic: use the alias
	expect("alias/one", "b")
	send("alias/ten", 10, "c")
	expect("alias/ten", "c")
	send("alias/two", 1, "d") // a new topic for alias 1 replaces the mapping
	expect("alias/two", "d")
	send("", 1, "e")
	expect("alias/two", "e")
	send("", 10, "f")
	expect("alias/ten", "f")

	t.Run("above maximum", func(t *testing.T) {
		// [MQTT-3.3.2-9], [MQTT-3.2.2-17]: 0x94 Topic Alias invalid.
		c := mustConnect(t, srv, packets.V5, "alias-big")
		c.Send(&packets.Publish{Topic: "alias/x", Properties: packets.Properties{TopicAlias: 11}})
		expectProtocolClose(t, c, packets.TopicAliasInvalid)
	})
	t.Run("unknown alias", func(t *testing.T) {
		// Section 3.3.2.3.4: an empty topic needs an alias the receiver
		// has a mapping for; mappings do not survive the connection
		// [MQTT-3.3.2-7], so alias 1 set above is unknown here.
		c := mustConnect(t, srv, packets.V5, "alias-unknown")
		c.Send(&packets.Publish{Properties: packets.Properties{TopicAlias: 1}})
		expectProtocolClose(t, c, packets.ProtocolError)
	})
	t.Run("aliases disabled", func(t *testing.T) {
		// [MQTT-3.2.2-18]: with Topic Alias Maximum 0 no alias is allowed.
		srv := terntest.NewServer(t, &tern.Options{TopicAliasMaximum: new(uint16(0))})
		c := srv.Dial(t, packets.V5)
		if ack := c.MustConnect("alias-off"); ack.Properties.TopicAliasMaximum != 0 {
			t.Fatalf("CONNACK Topic Alias Maximum %d, want absent", ack.Properties.TopicAliasMaximum)
		}
		c.Send(&packets.Publish{Topic: "alias/x", Properties: packets.Properties{TopicAlias: 1}})
		expectProtocolClose(t, c, packets.TopicAliasInvalid)
	})
	sub.Send(&packets.Pingreq{})
	recvAs[*packets.Pingresp](t, sub) // nothing else was delivered
}

// Topic aliases from server to client: [MQTT-3.1.2-26], [MQTT-3.3.2-11]
// (never above the client's Topic Alias Maximum), [MQTT-3.1.2-27] (none
// for a client without one).
func TestProtocolV5TopicAliasOutbound(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	sub := srv.Dial(t, packets.V5)
	sub.Connect(&packets.Connect{ClientID: "oalias", CleanStart: true, Properties: packets.Properties{TopicAliasMaximum: 2}})
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "oa/#", QoS: 1})
	plain := mustConnect(t, srv, packets.V5, "oalias-none")
	subscribeRaw(t, plain, 1, packets.Subscription{Filter: "oa/#"})
	pub := mustConnect(t, srv, packets.V5, "oalias-pub")

	aliases := map[uint16]string{} // as the client keeps them
	first := map[string]uint16{}   // the alias each topic got first
	for i, topic := range []string{"oa/x", "oa/x", "oa/y", "oa/x", "oa/z", "oa/y", "oa/z"} {
		pub.Send(&packets.Publish{Topic: topic, Payload: []byte{byte(i)}})
		m := recvAs[*packets.Publish](t, sub)
		a, wire := m.Properties.TopicAlias, m.Topic
		switch {
		case a > 2:
			t.Fatalf("message %d: alias %d above the client's maximum 2", i, a)
		case m.Topic != "" && a != 0:
			aliases[a] = m.Topic // a new mapping
		case m.Topic == "" && aliases[a] == "":
			t.Fatalf("message %d: empty topic with unknown alias %d", i, a)
		case m.Topic == "":
			m.Topic = aliases[a]
		}
		if m.Topic != topic || m.Payload[0] != byte(i) {
			t.Fatalf("message %d: got %q, want %q", i, m.Topic, topic)
		}
		if fa, seen := first[topic]; !seen {
			first[topic] = a
		} else if fa != 0 && (wire != "" || a != fa) {
			t.Fatalf("message %d on %q: topic %q alias %d, want an empty topic and alias %d", i, topic, wire, a, fa)
		}
		if p := recvAs[*packets.Publish](t, plain); p.Topic != topic || p.Properties.TopicAlias != 0 {
			t.Fatalf("client without Topic Alias Maximum got %q alias %d", p.Topic, p.Properties.TopicAlias)
		}
	}
	if first["oa/x"] == 0 || first["oa/y"] == 0 {
		t.Fatalf("first aliases %v: oa/x and oa/y should have had one", first)
	}
}

// Acknowledgements carry no properties unless there is something to say,
// never the PUBLISH's user properties (v5 sections 3.4.2.2, 3.5.2.2;
// ARCHITECTURE.md), with the short form for Success [MQTT-3.4.2-1]; 0x10
// when no one subscribes (section 3.4.2.1); 3.1.1 acks are always 2 bytes.
func TestProtocolAckEncoding(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	user := packets.Properties{User: []packets.UserProperty{{Key: "trace", Value: "1"}}, ContentType: "text/plain"}
	for _, ver := range bothVersions {
		t.Run(ver.name, func(t *testing.T) {
			v5 := ver.v == packets.V5
			c := mustConnect(t, srv, ver.v, "ack-"+ver.name)
			want := func(v5form, v3form []byte) {
				t.Helper()
				w := v3form
				if v5 {
					w = v5form
				}
				if got := c.RecvRaw(); !bytes.Equal(got, w) {
					t.Fatalf("got % X, want % X", got, w)
				}
			}
			// No subscriber.
			c.Send(&packets.Publish{Topic: "ack/none", QoS: 1, PacketID: 1, Properties: user})
			want([]byte{0x40, 0x03, 0x00, 0x01, 0x10}, []byte{0x40, 0x02, 0x00, 0x01})
			c.Send(&packets.Publish{Topic: "ack/none", QoS: 2, PacketID: 2, Properties: user})
			want([]byte{0x50, 0x03, 0x00, 0x02, 0x10}, []byte{0x50, 0x02, 0x00, 0x02})
			c.Send(&packets.Pubrel{PacketID: 2})
			want([]byte{0x70, 0x02, 0x00, 0x02}, []byte{0x70, 0x02, 0x00, 0x02}) // [MQTT-4.3.3-11]
			// With a subscriber (itself): Success in the two-byte form.
			subscribeRaw(t, c, 3, packets.Subscription{Filter: "ack/sub"})
			c.Send(&packets.Publish{Topic: "ack/sub", QoS: 1, PacketID: 4, Properties: user})
			var ack []byte
			for delivered := false; ack == nil || !delivered; { // in either order
				if b := c.RecvRaw(); b[0]>>4 == byte(packets.PUBACK) {
					ack = b
				} else {
					delivered = b[0]>>4 == byte(packets.PUBLISH)
				}
			}
			if !bytes.Equal(ack, []byte{0x40, 0x02, 0x00, 0x04}) {
				t.Fatalf("PUBACK % X, want 40 02 00 04", ack)
			}
			// PUBREL for an unknown packet id: v5 PUBCOMP 0x92 (section 3.7.2.1).
			c.Send(&packets.Pubrel{PacketID: 9})
			want([]byte{0x70, 0x03, 0x00, 0x09, 0x92}, []byte{0x70, 0x02, 0x00, 0x09})
		})
	}
}

// v5 [MQTT-4.3.3-10], 3.1.1 section 4.3.3: until PUBREL, a repeated QoS 2
// PUBLISH with the same packet id is acknowledged with PUBREC again but not
// delivered again; after PUBCOMP the id starts a new message
// ([MQTT-4.3.3-12]).
func TestProtocolQoS2Duplicate(t *testing.T) {
	t.Parallel()
	srv := terntest.NewServer(t, nil)
	for _, ver := range bothVersions {
		t.Run(ver.name, func(t *testing.T) {
			sub := mustConnect(t, srv, ver.v, "dup-sub-"+ver.name)
			subscribeRaw(t, sub, 1, packets.Subscription{Filter: "dup/" + ver.name})
			pub := mustConnect(t, srv, ver.v, "dup-pub-"+ver.name)
			m := &packets.Publish{Topic: "dup/" + ver.name, QoS: 2, PacketID: 7, Payload: []byte("once")}
			pub.Send(m)
			recvAs[*packets.Pubrec](t, pub)
			m.Dup = true
			pub.Send(m)
			if rec := recvAs[*packets.Pubrec](t, pub); rec.PacketID != 7 {
				t.Fatalf("PUBREC %d", rec.PacketID)
			}
			pub.Send(&packets.Pubrel{PacketID: 7})
			recvAs[*packets.Pubcomp](t, pub)
			if got := recvAs[*packets.Publish](t, sub); string(got.Payload) != "once" {
				t.Fatalf("got %q", got.Payload)
			}
			expectNothing(t, sub, "duplicate delivery")
			m.Dup, m.Payload = false, []byte("again")
			pub.Send(m)
			recvAs[*packets.Pubrec](t, pub)
			if got := recvAs[*packets.Publish](t, sub); string(got.Payload) != "again" {
				t.Fatalf("got %q, want the new message", got.Payload)
			}
		})
	}
}

// SUBSCRIBE is handled filter by filter [MQTT-3.8.4-5]: an invalid filter
// fails alone with 0x8F, a refused one with 0x87 (v5), both 0x80 in 3.1.1
// (3.1.1 [MQTT-3.9.3-2]), in order [MQTT-3.9.3-1]; the granted QoS is
// capped by Options.MaxQoS ([MQTT-3.2.2-10], [MQTT-3.8.4-7]).
func TestProtocolSubscribeReasonCodes(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxQoS: new(byte(1))}, denyFilter("secret/#"))
	subs := []packets.Subscription{
		{Filter: "ok/a", QoS: 2},
		{Filter: "bad/#/x", QoS: 1},     // [MQTT-4.7.1-1]
		{Filter: "ok/b", QoS: 0},        //
		{Filter: "bad+/x", QoS: 0},      // [MQTT-4.7.1-2]
		{Filter: "$share//x", QoS: 1},   // [MQTT-4.8.2-1]: empty ShareName
		{Filter: "$share/g+/x", QoS: 1}, // [MQTT-4.8.2-2]: '+' in ShareName
		{Filter: "$share/g", QoS: 1},    // [MQTT-4.8.2-2]: no filter after it
		{Filter: "ok/c", QoS: 1},
		{Filter: "secret/#", QoS: 1}, // refused by the authorizer
	}
	for _, ver := range bothVersions {
		t.Run(ver.name, func(t *testing.T) {
			c := mustConnect(t, srv, ver.v, "subrc-"+ver.name)
			bad, denied := byte(0x8F), byte(0x87)
			if ver.v != packets.V5 {
				bad, denied = 0x80, 0x80
			}
			c.Send(&packets.Subscribe{PacketID: 5, Subscriptions: subs})
			want := pkt(0x90, uint16Bytes(5), propsV5(ver.v), []byte{1, bad, 0, bad, bad, bad, bad, 1, denied})
			if got := c.RecvRaw(); !bytes.Equal(got, want) {
				t.Fatalf("SUBACK % X, want % X", got, want)
			}
			// [MQTT-3.8.4-8]: a QoS 1 message on a filter granted 1 comes at QoS 1.
			c.Send(&packets.Publish{Topic: "ok/a", QoS: 1, PacketID: 6})
			for got := false; !got; {
				if m, ok := c.Recv().(*packets.Publish); ok {
					got = m.Topic == "ok/a" && m.QoS == 1
					c.Send(&packets.Puback{PacketID: m.PacketID})
				}
			}
		})
	}
}

// [MQTT-3.8.4-3]: a SUBSCRIBE with a filter the session already has
// replaces the subscription: one copy of each message, at the new QoS.
// UNSUBSCRIBE of a filter never subscribed: v5 0x11 (section 3.11.3), and
// 3.1.1 still answers UNSUBACK ([MQTT-3.10.4-5]).
func TestProtocolResubscribeAndUnsubscribe(t *testing.T) {
	t.Parallel()
	srv := terntest.NewServer(t, nil)
	for _, ver := range bothVersions {
		t.Run(ver.name, func(t *testing.T) {
			c := mustConnect(t, srv, ver.v, "resub-"+ver.name)
			other := mustConnect(t, srv, ver.v, "resub-pub-"+ver.name)
			topic := "resub/" + ver.name
			subscribeRaw(t, c, 1, packets.Subscription{Filter: topic, QoS: 0})
			if codes := subscribeRaw(t, c, 2, packets.Subscription{Filter: topic, QoS: 1}); codes[0] != 1 {
				t.Fatalf("SUBACK %v", codes)
			}
			other.Send(&packets.Publish{Topic: topic, QoS: 1, PacketID: 1, Payload: []byte("one")})
			recvAs[*packets.Puback](t, other)
			m := recvAs[*packets.Publish](t, c)
			if m.QoS != 1 {
				t.Fatalf("delivered at QoS %d, want the replacing subscription's 1", m.QoS)
			}
			c.Send(&packets.Puback{PacketID: m.PacketID})
			expectNothing(t, c, "second copy")

			c.Send(&packets.Unsubscribe{PacketID: 3, Filters: []string{"never/" + ver.name, topic}})
			un := recvAs[*packets.Unsuback](t, c)
			if un.PacketID != 3 {
				t.Fatalf("UNSUBACK id %d", un.PacketID)
			}
			if ver.v == packets.V5 && (len(un.ReasonCodes) != 2 || un.ReasonCodes[0] != packets.NoSubscriptionExisted || un.ReasonCodes[1] != 0) {
				t.Fatalf("UNSUBACK codes %v, want [0x11 0x00]", un.ReasonCodes)
			}
			other.Send(&packets.Publish{Topic: topic, QoS: 1, PacketID: 2})
			recvAs[*packets.Puback](t, other)
			expectNothing(t, c, "message after UNSUBSCRIBE") // [MQTT-3.10.4-2]
		})
	}
}

// When the server ends a v5 connection it sends DISCONNECT with the reason
// (0x8B on shutdown, 0x8E on takeover [MQTT-3.1.4-3]), sends nothing after
// it [MQTT-3.14.4-1] and closes [MQTT-3.14.4-2]. It half-closes and drains,
// so a client that is still writing reads the DISCONNECT and then a clean
// EOF, not a connection reset.
func TestProtocolV5ServerDisconnect(t *testing.T) {
	t.Run("takeover", func(t *testing.T) {
		srv := terntest.NewServer(t, nil)
		old := mustConnect(t, srv, packets.V5, "taken")
		mustConnect(t, srv, packets.V5, "taken")
		expectProtocolClose(t, old, packets.SessionTakenOver)
	})
	t.Run("protocol error while writing", func(t *testing.T) {
		srv := terntest.NewServer(t, nil)
		c := mustConnect(t, srv, packets.V5, "writer")
		// A bad packet, then more data the server will not act on.
		c.SendRaw(append([]byte{0xC1, 0x00}, bytes.Repeat([]byte{0xC0, 0x00}, 32<<10)...))
		if d := recvAs[*packets.Disconnect](t, c); d.ReasonCode != packets.MalformedPacket {
			t.Fatalf("DISCONNECT %v, want 0x81", d.ReasonCode)
		}
		if pk, err := c.TryRecv(terntest.Timeout); !errors.Is(err, io.EOF) {
			t.Fatalf("after DISCONNECT got %v, %v; want EOF", pk, err)
		}
	})
	t.Run("lingering client", func(t *testing.T) {
		// The drain is brief: a client that reads the DISCONNECT, writes
		// once more and then neither writes nor closes does not hold the
		// connection open for its keep alive period (here 90 s), so Close
		// finishes well within its 5 s grace period.
		t.Parallel()
		srv := terntest.NewServer(t, nil)
		c := srv.Dial(t, packets.V5)
		c.Connect(&packets.Connect{ClientID: "linger", CleanStart: true, KeepAlive: 60})
		closed := make(chan error, 1)
		go func() { closed <- srv.Close() }()
		recvAs[*packets.Disconnect](t, c)
		c.Send(&packets.Pingreq{})
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("Close: %v (the connection outlived the drain)", err)
			}
		case <-time.After(terntest.Timeout):
			t.Fatal("Close did not return")
		}
	})
	t.Run("shutdown", func(t *testing.T) {
		srv := terntest.NewServer(t, nil)
		c := mustConnect(t, srv, packets.V5, "shut")
		subscribeRaw(t, c, 1, packets.Subscription{Filter: "shut/#"})
		v3 := mustConnect(t, srv, packets.V311, "shut3")
		closed := make(chan error, 1)
		go func() { closed <- srv.Close() }()
		// Keep writing while the server shuts down.
		burst := bytes.Repeat(pkt(0x30, str16("shut/t"), propsV5(packets.V5), bytes.Repeat([]byte("x"), 512)), 64)
		c.SendRaw(burst)
		var disc *packets.Disconnect
		for disc == nil {
			switch p := c.Recv().(type) {
			case *packets.Disconnect:
				disc = p
			case *packets.Publish: // delivered before the shutdown began
			default:
				t.Fatalf("got %s before DISCONNECT", p.Type())
			}
		}
		if disc.ReasonCode != packets.ServerShuttingDown {
			t.Fatalf("DISCONNECT %v, want 0x8B", disc.ReasonCode)
		}
		if pk, err := c.TryRecv(terntest.Timeout); !errors.Is(err, io.EOF) {
			t.Fatalf("after DISCONNECT got %v, %v; want EOF", pk, err)
		}
		c.Close()
		if got := v3.ExpectClosed(); len(got) != 0 { // no DISCONNECT in 3.1.1
			t.Fatalf("3.1.1 client got %s", got[0].Type())
		}
		v3.Close()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
		case <-time.After(terntest.Timeout):
			t.Fatal("Close did not return")
		}
	})
}

// challengeAuth is a two-step enhanced authenticator for method
// TEST-CHALLENGE: the first step answers any data with a challenge, the
// second accepts "answer:<challenge>" and refuses anything else.
type challengeAuth struct {
	mu      sync.Mutex
	pending map[*tern.Client]string
	n       int
}

func (*challengeAuth) ID() string                       { return "test-challenge" }
func (*challengeAuth) SupportsAuthMethod(m string) bool { return m == "TEST-CHALLENGE" }
func (a *challengeAuth) EnhancedAuth(c *tern.Client, method string, data []byte, reauth bool) tern.AuthResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	challenge, ok := a.pending[c]
	if !ok {
		a.n++
		challenge = "nonce-" + strconv.Itoa(a.n)
		a.pending[c] = challenge
		return tern.AuthResult{Data: []byte(challenge), Continue: true}
	}
	delete(a.pending, c)
	switch string(data) {
	case "answer:" + challenge:
		return tern.AuthResult{Data: []byte("welcome")}
	case "bad-password":
		return tern.AuthResult{Code: packets.BadUserNameOrPassword}
	}
	return tern.AuthResult{Code: packets.NotAuthorized}
}

// Enhanced authentication (v5 section 4.12).
func TestProtocolV5EnhancedAuth(t *testing.T) {
	auth := &challengeAuth{pending: map[*tern.Client]string{}}
	srv := terntest.NewServer(t, nil, auth)
	const method = "TEST-CHALLENGE"
	authPk := func(code packets.ReasonCode, data string) *packets.Auth {
		return &packets.Auth{ReasonCode: code, Properties: packets.Properties{AuthMethod: method, AuthData: []byte(data)}}
	}
	// start sends CONNECT and returns the challenge of the server's AUTH.
	start := func(t *testing.T, id string) (*terntest.Conn, string) {
		c := srv.Dial(t, packets.V5)
		c.Send(&packets.Connect{ProtocolVersion: packets.V5, ClientID: id, CleanStart: true,
			Properties: packets.Properties{AuthMethod: method, AuthData: []byte("hello")}})
		a := recvAs[*packets.Auth](t, c)
		// [MQTT-4.12.0-2]: 0x18; [MQTT-4.12.0-5]: the same method.
		if a.ReasonCode != packets.ContinueAuthentication || a.Properties.AuthMethod != method {
			t.Fatalf("AUTH %v method %q", a.ReasonCode, a.Properties.AuthMethod)
		}
		return c, string(a.Properties.AuthData)
	}
	t.Run("success and re-authentication", func(t *testing.T) {
		c, challenge := start(t, "ea-ok")
		c.Send(authPk(packets.ContinueAuthentication, "answer:"+challenge)) // [MQTT-4.12.0-3]
		ack := recvAs[*packets.Connack](t, c)
		if ack.ReasonCode != 0 || ack.Properties.AuthMethod != method || string(ack.Properties.AuthData) != "welcome" {
			t.Fatalf("CONNACK %v method %q data %q", ack.ReasonCode, ack.Properties.AuthMethod, ack.Properties.AuthData)
		}
		// [MQTT-4.12.1-1]: re-authentication with 0x19 and the same method.
		c.Send(authPk(packets.ReAuthenticate, "hello again"))
		a := recvAs[*packets.Auth](t, c)
		if a.ReasonCode != packets.ContinueAuthentication || a.Properties.AuthMethod != method {
			t.Fatalf("AUTH %v %q", a.ReasonCode, a.Properties.AuthMethod)
		}
		c.Send(authPk(packets.ContinueAuthentication, "answer:"+string(a.Properties.AuthData)))
		a = recvAs[*packets.Auth](t, c)
		if a.ReasonCode != packets.Success || a.Properties.AuthMethod != method {
			t.Fatalf("AUTH %v %q, want 0x00", a.ReasonCode, a.Properties.AuthMethod)
		}
		c.Send(&packets.Pingreq{})
		recvAs[*packets.Pingresp](t, c)
		// [MQTT-4.12.1-2]: a failed re-authentication ends the connection
		// with DISCONNECT; 0x86, a CONNACK-only code, becomes 0x87.
		for _, answer := range []string{"wrong", "bad-password"} {
			c, challenge := start(t, "ea-reauth-"+answer)
			c.Send(authPk(packets.ContinueAuthentication, "answer:"+challenge))
			recvAs[*packets.Connack](t, c)
			c.Send(authPk(packets.ReAuthenticate, "hello"))
			recvAs[*packets.Auth](t, c)
			c.Send(authPk(packets.ContinueAuthentication, answer))
			expectProtocolClose(t, c, packets.NotAuthorized)
		}
	})
	for _, tc := range []struct {
		answer string
		code   packets.ReasonCode
	}{{"wrong", packets.NotAuthorized}, {"bad-password", packets.BadUserNameOrPassword}} {
		// [MQTT-4.12.0-4]: refusal with a CONNACK 0x80 or above, then close.
		t.Run("refused "+tc.answer, func(t *testing.T) {
			c, _ := start(t, "ea-"+tc.answer)
			c.Send(authPk(packets.ContinueAuthentication, tc.answer))
			if ack := recvAs[*packets.Connack](t, c); ack.ReasonCode != tc.code {
				t.Fatalf("CONNACK %v, want %v", ack.ReasonCode, tc.code)
			}
			if got := c.ExpectClosed(); len(got) != 0 {
				t.Fatalf("got %s after the refusal", got[0].Type())
			}
		})
	}
	t.Run("unknown method", func(t *testing.T) {
		// [MQTT-4.12.0-1]: CONNACK 0x8C (or 0x87), then close.
		c := srv.Dial(t, packets.V5)
		ack := c.Connect(&packets.Connect{ClientID: "ea-unknown", CleanStart: true,
			Properties: packets.Properties{AuthMethod: "SCRAM-NOPE"}})
		if ack.ReasonCode != packets.BadAuthenticationMethod {
			t.Fatalf("CONNACK %v, want 0x8C", ack.ReasonCode)
		}
		if got := c.ExpectClosed(); len(got) != 0 {
			t.Fatalf("got %s after the refusal", got[0].Type())
		}
	})
	t.Run("continue without a challenge", func(t *testing.T) {
		// [MQTT-4.12.0-3], section 4.12.1: AUTH 0x18 only answers the
		// server's AUTH; sent unasked it is a Protocol Error.
		c, challenge := start(t, "ea-unasked")
		c.Send(authPk(packets.ContinueAuthentication, "answer:"+challenge))
		recvAs[*packets.Connack](t, c)
		c.Send(authPk(packets.ContinueAuthentication, "hello"))
		expectProtocolClose(t, c, packets.ProtocolError)
	})
	t.Run("re-authentication with another method", func(t *testing.T) {
		c, challenge := start(t, "ea-switch")
		c.Send(authPk(packets.ContinueAuthentication, "answer:"+challenge))
		recvAs[*packets.Connack](t, c)
		c.Send(&packets.Auth{ReasonCode: packets.ReAuthenticate, Properties: packets.Properties{AuthMethod: "OTHER"}})
		expectProtocolClose(t, c, packets.ProtocolError) // [MQTT-4.12.1-1]
	})
}

// 3.1.1 CONNACK return codes are only 0x00-0x05 (3.1.1 section 3.2.2.3);
// where none applies the connection closes without one (3.1.1
// [MQTT-3.2.2-6]). v5 clients get the v5 codes [MQTT-3.2.2-8]: 0x9B for a
// Will QoS above the maximum [MQTT-3.2.2-12], 0x9A for a retained will
// without retain support [MQTT-3.2.2-13].
func TestProtocolConnackCodesPerVersion(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxQoS: new(byte(1)), RetainAvailable: new(false)}, denyUser{})
	for _, tc := range []struct {
		name   string
		pk     packets.Connect
		v5, v3 byte // v3 0xFF: closed without CONNACK
	}{
		{"bad credentials", packets.Connect{ClientID: "u1", CleanStart: true, UsernameFlag: true, Username: "mallory"}, 0x86, 0x04},
		{"empty id without clean session", packets.Connect{}, 0x00, 0x02}, // v5 assigns an id
		{"will QoS above maximum", packets.Connect{ClientID: "u2", CleanStart: true, Will: &packets.Will{Topic: "w", QoS: 2}}, 0x9B, 0xFF},
		{"will retain unavailable", packets.Connect{ClientID: "u3", CleanStart: true, Will: &packets.Will{Topic: "w", Retain: true}}, 0x9A, 0xFF},
	} {
		for _, ver := range bothVersions {
			t.Run(tc.name+"/"+ver.name, func(t *testing.T) {
				c := srv.Dial(t, ver.v)
				pk := tc.pk
				pk.ProtocolVersion = ver.v
				c.Send(&pk)
				if ver.v == packets.V5 {
					if ack := recvAs[*packets.Connack](t, c); byte(ack.ReasonCode) != tc.v5 {
						t.Fatalf("CONNACK 0x%02X, want 0x%02X", byte(ack.ReasonCode), tc.v5)
					}
					return
				}
				if tc.v3 == 0xFF {
					if got := c.ExpectClosed(); len(got) != 0 {
						t.Fatalf("got %s, want close without CONNACK", got[0].Type())
					}
					return
				}
				if got, want := c.RecvRaw(), []byte{0x20, 0x02, 0x00, tc.v3}; !bytes.Equal(got, want) {
					t.Fatalf("CONNACK % X, want % X", got, want)
				}
				if got := c.ExpectClosed(); len(got) != 0 { // 3.1.1 [MQTT-3.2.2-5]
					t.Fatalf("got %s after the refusal", got[0].Type())
				}
			})
		}
	}
}

// denyUser refuses the user name "mallory" and lets everyone else in.
type denyUser struct{}

func (denyUser) ID() string { return "deny-user" }
func (denyUser) Authenticate(_ *tern.Client, pk *packets.Connect) tern.Decision {
	if pk.Username == "mallory" {
		return tern.Deny
	}
	return tern.Allow
}

// denyFilter is an Authorizer that refuses subscriptions to one filter.
type denyFilter string

func (denyFilter) ID() string { return "deny-filter" }
func (f denyFilter) Authorize(_ *tern.Client, topic string, a tern.Access) tern.Decision {
	if a == tern.Read && topic == string(f) {
		return tern.Deny
	}
	return tern.Abstain
}
