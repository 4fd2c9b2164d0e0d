package tern_test

// Raw-packet protocol tests shared by MQTT 3.1.1 and 5.0: the CONNECT
// rules and the broker's answer to malformed input on a live connection.
// Each case names the normative statement it checks: "v5" statements are
// from MQTT 5.0 (OASIS, 2019), "3.1.1" ones from MQTT 3.1.1 (OASIS, 2014).

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// quietFor bounds a wait for something that must NOT arrive. On loopback a
// packet the broker has decided to send arrives within microseconds, so
// 200 ms of silence reliably means "nothing was sent" without slowing the
// suite; there is no event to synchronise on for an absence.
const quietFor = 200 * time.Millisecond

var bothVersions = []struct {
	name string
	v    byte
}{{"v311", packets.V311}, {"v5", packets.V5}}

// encodeVBI encodes a Variable Byte Integer.
func encodeVBI(n int) []byte {
	var out []byte
	for {
		c := byte(n & 0x7F)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		out = append(out, c)
		if n == 0 {
			return out
		}
	}
}

// pkt assembles a packet from its first byte and its body, computing the
// remaining length.
func pkt(b0 byte, parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	return append(append([]byte{b0}, encodeVBI(len(body))...), body...)
}

// str16 is a two-byte length followed by the bytes of s, unchecked.
func str16(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func uint16Bytes(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// propsV5 is a v5 property block (length, then the properties given as raw
// bytes); for v3 it is nothing.
func propsV5(v byte, ps ...byte) []byte {
	if v != packets.V5 {
		return nil
	}
	return append(encodeVBI(len(ps)), ps...)
}

func mustConnect(t *testing.T, srv *terntest.Server, v byte, id string) *terntest.Conn {
	t.Helper()
	c := srv.Dial(t, v)
	c.MustConnect(id)
	return c
}

// recvAs reads the next packet and fails unless it is a T.
func recvAs[T packets.Packet](t testing.TB, c *terntest.Conn) T {
	t.Helper()
	pk := c.Recv()
	p, ok := pk.(T)
	if !ok {
		var want T
		t.Fatalf("expected %T, got %s %+v", want, pk.Type(), pk)
	}
	return p
}

func subscribeRaw(t testing.TB, c *terntest.Conn, id uint16, subs ...packets.Subscription) []packets.ReasonCode {
	t.Helper()
	c.Send(&packets.Subscribe{PacketID: id, Subscriptions: subs})
	ack := recvAs[*packets.Suback](t, c)
	if ack.PacketID != id { // [MQTT-3.8.4-2]
		t.Fatalf("SUBACK packet id %d, want %d", ack.PacketID, id)
	}
	return ack.ReasonCodes
}

// expectNothing checks that nothing arrives within quietFor (see quietFor).
func expectNothing(t testing.TB, c *terntest.Conn, what string) {
	t.Helper()
	pk, err := c.TryRecv(quietFor)
	if err == nil {
		t.Fatalf("%s: unexpected %s %+v", what, pk.Type(), pk)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%s: connection failed: %v", what, err)
	}
}

// expectProtocolClose checks how the broker ends a connection after a bad
// packet: a v5 client reads exactly one DISCONNECT with the code before the
// connection closes [MQTT-4.13.1-1]; a v3 client reads nothing, the
// connection just closes (3.1.1 [MQTT-4.8.0-1]).
func expectProtocolClose(t testing.TB, c *terntest.Conn, code packets.ReasonCode) {
	t.Helper()
	got := c.ExpectClosed()
	c.Close()
	if c.Version != packets.V5 {
		if len(got) != 0 {
			t.Fatalf("v3 connection got %s before closing, want nothing", got[0].Type())
		}
		return
	}
	if len(got) != 1 {
		t.Fatalf("got %d packets before close, want one DISCONNECT: %+v", len(got), got)
	}
	d, ok := got[0].(*packets.Disconnect)
	if !ok {
		t.Fatalf("got %s before close, want DISCONNECT", got[0].Type())
	}
	if d.ReasonCode != code {
		t.Fatalf("DISCONNECT reason %v, want %v", d.ReasonCode, code)
	}
}

// healthProbe is a healthy publisher and subscriber kept connected while other
// connections misbehave, to show that they are unaffected.
type healthProbe struct {
	pub, sub *terntest.Conn
	topic    string
	n        int
}

func newHealthProbe(t *testing.T, srv *terntest.Server, v byte, name string) *healthProbe {
	t.Helper()
	p := &healthProbe{topic: "probe/" + name}
	p.sub = mustConnect(t, srv, v, name+"-sub")
	subscribeRaw(t, p.sub, 1, packets.Subscription{Filter: p.topic, QoS: 1})
	p.pub = mustConnect(t, srv, v, name+"-pub")
	return p
}

// check publishes one QoS 1 message and expects it at the subscriber.
func (p *healthProbe) check(t testing.TB) {
	t.Helper()
	p.n++
	pub, sub := p.pub.WithT(t), p.sub.WithT(t)
	payload := []byte(strconv.Itoa(p.n))
	pub.Send(&packets.Publish{Topic: p.topic, QoS: 1, PacketID: uint16(p.n), Payload: payload})
	if ack := recvAs[*packets.Puback](t, pub); ack.PacketID != uint16(p.n) || ack.ReasonCode != packets.Success {
		t.Fatalf("probe PUBACK %+v", ack)
	}
	m := recvAs[*packets.Publish](t, sub)
	if m.Topic != p.topic || !bytes.Equal(m.Payload, payload) {
		t.Fatalf("probe got %q %q, want %q %q", m.Topic, m.Payload, p.topic, payload)
	}
	sub.Send(&packets.Puback{PacketID: m.PacketID})
}

// connectBytes builds a CONNECT with the given connect flags and payload
// fields, keep alive 60 and, for v5, no properties.
func connectBytes(v byte, flags byte, payload ...[]byte) []byte {
	name := "MQTT"
	if v == packets.V31 {
		name = "MQIsdp"
	}
	parts := [][]byte{str16(name), {v, flags, 0, 60}, propsV5(v)}
	return pkt(0x10, append(parts, payload...)...)
}

// [MQTT-3.1.0-1] (v5 and 3.1.1): the first packet must be CONNECT; the
// server closes a connection that starts with anything else, without a
// CONNACK.
func TestProtocolFirstPacketNotConnect(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	for _, ver := range bothVersions {
		for _, first := range []struct {
			name string
			b    []byte
		}{
			{"PINGREQ", []byte{0xC0, 0x00}},
			{"PUBLISH", pkt(0x30, str16("a/b"), propsV5(ver.v), []byte("x"))},
			{"SUBSCRIBE", pkt(0x82, uint16Bytes(1), propsV5(ver.v), str16("a"), []byte{0})},
			{"DISCONNECT", []byte{0xE0, 0x00}},
			{"garbage", []byte("GET / HTTP/1.1\r\n\r\n")},
		} {
			t.Run(ver.name+"/"+first.name, func(t *testing.T) {
				c := srv.Dial(t, ver.v)
				c.SendRaw(first.b)
				if got := c.ExpectClosed(); len(got) != 0 {
					t.Fatalf("got %s, want the connection closed without a packet", got[0].Type())
				}
			})
		}
	}
}

// [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error: v5 DISCONNECT 0x82,
// 3.1.1 closes the connection.
func TestProtocolSecondConnect(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	for _, ver := range bothVersions {
		t.Run(ver.name, func(t *testing.T) {
			c := mustConnect(t, srv, ver.v, "twice")
			c.Send(&packets.Connect{ProtocolVersion: ver.v, ClientID: "twice", CleanStart: true})
			expectProtocolClose(t, c, packets.ProtocolError)
		})
	}
}

// [MQTT-3.1.2-2] (3.1.1): an unsupported protocol level gets CONNACK return
// code 0x01, then the connection closes. A v5 server may answer the same
// way (v5 [MQTT-3.1.2-2]); 0x01 is the form every client version can read.
func TestProtocolUnsupportedProtocolLevel(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	for _, tc := range []struct {
		name  string
		proto string
		level byte
	}{
		{"MQTT level 6", "MQTT", 6},
		{"MQTT level 3", "MQTT", 3}, // level 3 is only valid with "MQIsdp"
		{"MQTT level 2", "MQTT", 2},
		{"MQIsdp level 4", "MQIsdp", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := srv.Dial(t, packets.V311)
			c.SendRaw(pkt(0x10, str16(tc.proto), []byte{tc.level, 0x02, 0, 60}, str16("old")))
			if got, want := c.RecvRaw(), []byte{0x20, 0x02, 0x00, 0x01}; !bytes.Equal(got, want) {
				t.Fatalf("got % X, want CONNACK % X", got, want)
			}
			if got := c.ExpectClosed(); len(got) != 0 {
				t.Fatalf("got %s after the refusal", got[0].Type())
			}
		})
	}
}

// Malformed CONNECT packets are refused by closing the connection: a 3.1.1
// server must not send a CONNACK (3.1.1 [MQTT-3.1.4-1]); a v5 server may
// send one with a code of 0x80 or above first (v5 [MQTT-3.1.4-1], 4.13).
func TestProtocolMalformedConnect(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	id := str16("bad")
	will := func(v byte) []byte { return bytes.Join([][]byte{propsV5(v), str16("will/t"), str16("bye")}, nil) }
	for _, ver := range bothVersions {
		v := ver.v
		for _, tc := range []struct {
			name string
			pk   []byte
		}{
			// [MQTT-3.1.2-3] (both): the reserved connect flag must be 0.
			{"reserved flag", connectBytes(v, 0x03, id)},
			// v5 [MQTT-3.1.2-11], 3.1.1 [MQTT-3.1.2-13]: no Will QoS without a will.
			{"will QoS without will", connectBytes(v, 0x02|0x08, id)},
			// v5 [MQTT-3.1.2-13], 3.1.1 [MQTT-3.1.2-15]: no Will Retain without a will.
			{"will retain without will", connectBytes(v, 0x02|0x20, id)},
			// v5 [MQTT-3.1.2-12], 3.1.1 [MQTT-3.1.2-14]: Will QoS 3.
			{"will QoS 3", connectBytes(v, 0x02|0x04|0x18, id, will(v))},
			// [MQTT-3.1.2-9] (both): the will flag promises the will fields.
			{"will flag without will fields", connectBytes(v, 0x02|0x04, id)},
			// v5 [MQTT-1.5.4-1], 3.1.1 [MQTT-1.5.3-1]: ill-formed UTF-8 client id.
			{"client id not UTF-8", connectBytes(v, 0x02, str16("a\xffb"))},
			// v5 [MQTT-1.5.4-2], 3.1.1 [MQTT-1.5.3-2]: U+0000 in the client id.
			{"client id with U+0000", connectBytes(v, 0x02, str16("a\x00b"))},
			// v5 [MQTT-3.1.2-17], 3.1.1 [MQTT-3.1.2-19]: the flag promises a user name.
			{"user name flag without user name", connectBytes(v, 0x02|0x80, id)},
			// v5 [MQTT-3.1.4-1], 3.1.1 [MQTT-3.1.4-1]: bytes after the last field.
			{"trailing bytes", connectBytes(v, 0x02, id, []byte{0xAA})},
			// [MQTT-2.1.3-1] v5 / [MQTT-2.2.2-2] 3.1.1: CONNECT flags nibble is reserved.
			{"fixed header flags", append([]byte{0x11}, connectBytes(v, 0x02, id)[1:]...)},
		} {
			t.Run(ver.name+"/"+tc.name, func(t *testing.T) {
				c := srv.Dial(t, v)
				c.SendRaw(tc.pk)
				got := c.ExpectClosed()
				if len(got) == 0 {
					return
				}
				ack, ok := got[0].(*packets.Connack)
				if v != packets.V5 || len(got) > 1 || !ok || !ack.ReasonCode.IsError() {
					t.Fatalf("got %+v, want the connection closed (v5: optionally after a failure CONNACK)", got)
				}
			})
		}
	}
	// 3.1.1 [MQTT-3.1.2-22]: a password without a user name is refused; v5
	// allows it (section 3.1.2.9).
	t.Run("v311/password without user name", func(t *testing.T) {
		c := srv.Dial(t, packets.V311)
		c.SendRaw(connectBytes(packets.V311, 0x02|0x40, id, str16("pw")))
		if got := c.ExpectClosed(); len(got) != 0 {
			t.Fatalf("got %s, want the connection closed without a CONNACK", got[0].Type())
		}
	})
	t.Run("v5/password without user name", func(t *testing.T) {
		c := srv.Dial(t, packets.V5)
		c.SendRaw(connectBytes(packets.V5, 0x02|0x40, id, str16("pw")))
		if ack := recvAs[*packets.Connack](t, c); ack.ReasonCode != packets.Success {
			t.Fatalf("CONNACK %v, want success", ack.ReasonCode)
		}
	})
}

// MQTT 3.1 ("MQIsdp", level 3) clients are accepted and served.
func TestProtocolMQTT31(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	c := srv.Dial(t, packets.V31)
	c.SendRaw(connectBytes(packets.V31, 0x02, str16("old-client")))
	// 3.1 has no session present flag: the CONNACK is exactly 20 02 00 00.
	if got, want := c.RecvRaw(), []byte{0x20, 0x02, 0x00, 0x00}; !bytes.Equal(got, want) {
		t.Fatalf("CONNACK % X, want % X", got, want)
	}
	if codes := subscribeRaw(t, c, 1, packets.Subscription{Filter: "old/+", QoS: 1}); codes[0] != 1 {
		t.Fatalf("SUBACK %v", codes)
	}
	c.Send(&packets.Publish{Topic: "old/t", QoS: 1, PacketID: 2, Payload: []byte("hi")})
	var gotAck, gotMsg bool
	for !gotAck || !gotMsg {
		switch p := c.Recv().(type) {
		case *packets.Puback:
			gotAck = p.PacketID == 2
		case *packets.Publish:
			gotMsg = p.Topic == "old/t" && string(p.Payload) == "hi"
			c.Send(&packets.Puback{PacketID: p.PacketID})
		}
	}
}

// inBubble runs fn in a synctest bubble with a broker made there, whose
// clients connect over memory (DialInProcess): time is virtual, so a test
// of timeouts takes no real time and may check durations exactly.
func inBubble(t *testing.T, opts *tern.Options, fn func(t *testing.T, srv *tern.Server)) {
	synctest.Test(t, func(t *testing.T) {
		o := tern.Options{SysInterval: -1}
		if opts != nil {
			o = *opts
			o.SysInterval = -1
		}
		srv, err := tern.New(&o)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		fn(t, srv)
	})
}

// dialBubble connects a scripted client over memory to a broker made by
// inBubble.
func dialBubble(t *testing.T, srv *tern.Server, v byte) *terntest.Conn {
	t.Helper()
	nc, err := srv.DialInProcess()
	if err != nil {
		t.Fatal(err)
	}
	return terntest.NewConn(t, nc, v)
}

// A connection that does not send CONNECT within Options.ConnectTimeout is
// closed, whether it sends nothing or stalls inside the packet, at the
// timeout (virtual time).
func TestProtocolConnectTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		{"partial CONNECT", connectBytes(packets.V311, 0x02, str16("slow"))[:6]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inBubble(t, &tern.Options{ConnectTimeout: timeout}, func(t *testing.T, srv *tern.Server) {
				c := dialBubble(t, srv, packets.V311)
				start := time.Now()
				if tc.send != nil {
					c.SendRaw(tc.send)
				}
				if got := c.ExpectClosed(); len(got) != 0 {
					t.Fatalf("got %s", got[0].Type())
				}
				if d := time.Since(start); d != timeout {
					t.Fatalf("closed after %v, want the %v connect timeout", d, timeout)
				}
			})
		})
	}
}

// v5 [MQTT-3.1.2-22], 3.1.1 [MQTT-3.1.2-24]: with keep alive 1 s, a client
// that goes silent is disconnected once 1.5 s pass without a packet (v5
// DISCONNECT 0x8D, section 3.14.2.1), and not before; each packet restarts
// the period. Time is virtual, so the durations are exact.
func TestProtocolKeepAlive(t *testing.T) {
	for _, ver := range bothVersions {
		t.Run(ver.name, func(t *testing.T) {
			inBubble(t, nil, func(t *testing.T, srv *tern.Server) {
				c := dialBubble(t, srv, ver.v)
				if ack := c.Connect(&packets.Connect{ClientID: "ka-" + ver.name, CleanStart: true, KeepAlive: 1}); ack.ReasonCode != 0 {
					t.Fatalf("CONNACK %v", ack.ReasonCode)
				}
				time.Sleep(time.Second) // a client whose ping timer fires after 1 s
				c.Send(&packets.Pingreq{})
				recvAs[*packets.Pingresp](t, c) // [MQTT-3.12.4-1]
				silent := time.Now()
				expectProtocolClose(t, c, packets.KeepAliveTimeout)
				if d := time.Since(silent); d != 1500*time.Millisecond {
					t.Fatalf("closed %v after the last packet, want 1.5 s", d)
				}
			})
		})
	}
}

// [MQTT-3.12.4-1]: PINGREQ is answered by PINGRESP (exactly D0 00).
func TestProtocolPing(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	for _, ver := range bothVersions {
		c := mustConnect(t, srv, ver.v, "ping-"+ver.name)
		for range 3 {
			c.SendRaw([]byte{0xC0, 0x00})
			if got := c.RecvRaw(); !bytes.Equal(got, []byte{0xD0, 0x00}) {
				t.Fatalf("%s: got % X, want D0 00", ver.name, got)
			}
		}
	}
}

// Malformed packets and protocol errors after a successful CONNECT: v5
// gets DISCONNECT with the reason code the specification gives, then the
// connection closes [MQTT-4.13.1-1]; 3.1.1 just closes (3.1.1
// [MQTT-4.8.0-1]). Connections of other clients carry on.
func TestProtocolMalformedAfterConnect(t *testing.T) {
	const (
		v3 = packets.V311
		v5 = packets.V5
	)
	pub := func(v, flags byte, topic string, rest ...[]byte) []byte {
		parts := [][]byte{str16(topic)}
		if flags&0x06 != 0 {
			parts = append(parts, uint16Bytes(1))
		}
		return pkt(0x30|flags, append(parts, rest...)...)
	}
	cases := []struct {
		name string
		only byte // 0: both versions
		pk   func(v byte) []byte
		code packets.ReasonCode // v5
	}{
		// v5 section 2.1.2, 3.1.1 section 2.2.1: packet type 0 is forbidden.
		{"packet type 0", 0, func(byte) []byte { return []byte{0x00, 0x00} }, packets.MalformedPacket},
		// [MQTT-3.3.1-4] (both): QoS 3.
		{"PUBLISH QoS 3", 0, func(v byte) []byte { return pub(v, 0x06, "a", propsV5(v)) }, packets.MalformedPacket},
		// [MQTT-3.3.1-2] (both): DUP set on QoS 0.
		{"PUBLISH DUP with QoS 0", 0, func(v byte) []byte { return pub(v, 0x08, "a", propsV5(v)) }, packets.MalformedPacket},
		// [MQTT-3.3.2-2] (both), v5 [MQTT-4.7.0-1]: no wildcards in a topic name.
		{"PUBLISH topic with +", 0, func(v byte) []byte { return pub(v, 0, "a/+", propsV5(v)) }, packets.TopicNameInvalid},
		{"PUBLISH topic with #", 0, func(v byte) []byte { return pub(v, 0, "a/#", propsV5(v)) }, packets.TopicNameInvalid},
		// v5 [MQTT-4.7.3-1] and section 3.3.2.1 (Protocol Error without a
		// topic alias), 3.1.1 [MQTT-4.7.3-1]: empty topic name.
		{"PUBLISH empty topic", 0, func(v byte) []byte { return pub(v, 0, "", propsV5(v)) }, packets.ProtocolError},
		// v5 [MQTT-2.2.1-3], 3.1.1 [MQTT-2.3.1-1]: packet identifier 0.
		{"PUBLISH packet id 0", 0, func(v byte) []byte { return pkt(0x32, str16("a"), uint16Bytes(0), propsV5(v)) }, packets.ProtocolError},
		// v5 [MQTT-1.5.4-1], 3.1.1 [MQTT-1.5.3-1]: ill-formed UTF-8.
		{"PUBLISH topic not UTF-8", 0, func(v byte) []byte { return pub(v, 0, "a/\xff", propsV5(v)) }, packets.MalformedPacket},
		{"PUBLISH topic with surrogate", 0, func(v byte) []byte { return pub(v, 0, "a/\xed\xa0\x80", propsV5(v)) }, packets.MalformedPacket},
		// v5 [MQTT-1.5.4-2], 3.1.1 [MQTT-1.5.3-2]: U+0000.
		{"PUBLISH topic with U+0000", 0, func(v byte) []byte { return pub(v, 0, "a\x00b", propsV5(v)) }, packets.MalformedPacket},
		// v5 section 1.5.5, 3.1.1 section 2.2.3: at most four length bytes.
		{"remaining length of 5 bytes", 0, func(byte) []byte { return []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F} }, packets.MalformedPacket},
		// [MQTT-1.5.5-1] (v5): the minimum number of bytes.
		{"remaining length not minimal", 0, func(byte) []byte { return []byte{0xC0, 0x80, 0x00} }, packets.MalformedPacket},
		// v5 section 2.1.4: the remaining length ends inside the topic.
		{"PUBLISH truncated", 0, func(byte) []byte { return []byte{0x30, 0x03, 0x00, 0x05, 'a'} }, packets.MalformedPacket},
		{"SUBSCRIBE truncated", 0, func(v byte) []byte { return pkt(0x82, uint16Bytes(1), propsV5(v), str16("a")) }, packets.MalformedPacket},
		// [MQTT-3.8.1-1] (both): SUBSCRIBE flags must be 0010.
		{"SUBSCRIBE flags", 0, func(v byte) []byte { return pkt(0x80, uint16Bytes(1), propsV5(v), str16("a"), []byte{0}) }, packets.MalformedPacket},
		// v5 [MQTT-3.8.3-2], 3.1.1 [MQTT-3.8.3-3]: at least one filter.
		{"SUBSCRIBE without filters", 0, func(v byte) []byte { return pkt(0x82, uint16Bytes(1), propsV5(v)) }, packets.ProtocolError},
		// v5 [MQTT-2.2.1-3], 3.1.1 [MQTT-2.3.1-1].
		{"SUBSCRIBE packet id 0", 0, func(v byte) []byte { return pkt(0x82, uint16Bytes(0), propsV5(v), str16("a"), []byte{0}) }, packets.ProtocolError},
		// v5 section 3.8.3.1 (Protocol Error), 3.1.1 [MQTT-3-8.3-4].
		{"SUBSCRIBE QoS 3", 0, func(v byte) []byte { return pkt(0x82, uint16Bytes(1), propsV5(v), str16("a"), []byte{3}) }, packets.ProtocolError},
		// v5 [MQTT-3.8.3-5], 3.1.1 [MQTT-3-8.3-4]: reserved option bits.
		{"SUBSCRIBE reserved option bits", 0, func(v byte) []byte { return pkt(0x82, uint16Bytes(1), propsV5(v), str16("a"), []byte{0x41}) }, packets.MalformedPacket},
		// v5 section 3.8.3.1: Retain Handling 3 is a Protocol Error.
		{"SUBSCRIBE retain handling 3", v5, func(v byte) []byte { return pkt(0x82, uint16Bytes(1), propsV5(v), str16("a"), []byte{0x30}) }, packets.ProtocolError},
		// [MQTT-3.8.3-4] (v5): No Local on a shared subscription.
		{"SUBSCRIBE shared with no local", v5, func(v byte) []byte { return pkt(0x82, uint16Bytes(1), propsV5(v), str16("$share/g/a"), []byte{0x04}) }, packets.ProtocolError},
		// [MQTT-3.10.1-1] (both): UNSUBSCRIBE flags must be 0010.
		{"UNSUBSCRIBE flags", 0, func(v byte) []byte { return pkt(0xA0, uint16Bytes(1), propsV5(v), str16("a")) }, packets.MalformedPacket},
		// [MQTT-3.10.3-2] (both): at least one filter.
		{"UNSUBSCRIBE without filters", 0, func(v byte) []byte { return pkt(0xA2, uint16Bytes(1), propsV5(v)) }, packets.ProtocolError},
		// [MQTT-3.6.1-1] (both): PUBREL flags must be 0010.
		{"PUBREL flags", 0, func(byte) []byte { return []byte{0x60, 0x02, 0x00, 0x01} }, packets.MalformedPacket},
		// v5 [MQTT-2.1.3-1], 3.1.1 [MQTT-2.2.2-2]: reserved flags.
		{"PINGREQ flags", 0, func(byte) []byte { return []byte{0xC1, 0x00} }, packets.MalformedPacket},
		{"DISCONNECT flags", 0, func(byte) []byte { return []byte{0xE1, 0x00} }, packets.MalformedPacket},
		// v5 section 3.12: PINGREQ has no variable header or payload.
		{"PINGREQ with a body", 0, func(byte) []byte { return []byte{0xC0, 0x01, 0x00} }, packets.MalformedPacket},
		// v5 section 2.1.2: CONNACK flows from server to client only.
		{"CONNACK from a client", 0, func(v byte) []byte { return pkt(0x20, []byte{0, 0}, propsV5(v)) }, packets.ProtocolError},
		// 3.1.1 section 2.2.1: type 15 is reserved before MQTT 5.
		{"AUTH in 3.1.1", v3, func(byte) []byte { return []byte{0xF0, 0x00} }, 0},
		// [MQTT-4.12.0-7] (v5): no AUTH without an Authentication Method at CONNECT.
		{"AUTH without enhanced auth", v5, func(v byte) []byte {
			return pkt(0xF0, []byte{0x19}, propsV5(v, append([]byte{0x15}, str16("X")...)...))
		}, packets.ProtocolError},
		// [MQTT-3.15.1-1] (v5): AUTH flags must be 0.
		{"AUTH flags", v5, func(byte) []byte { return []byte{0xF1, 0x00} }, packets.MalformedPacket},
		// [MQTT-3.3.2-8] (v5): Topic Alias 0.
		{"PUBLISH topic alias 0", v5, func(v byte) []byte { return pub(v, 0, "a", propsV5(v, 0x23, 0, 0)) }, packets.TopicAliasInvalid},
		// v5 section 2.2.2.2: a property not allowed in the packet type is
		// a Malformed Packet (Session Expiry Interval in PUBLISH).
		{"PUBLISH property not allowed", v5, func(v byte) []byte { return pub(v, 0, "a", propsV5(v, 0x11, 0, 0, 0, 1)) }, packets.MalformedPacket},
		// v5 section 3.3.2.3.2: Payload Format Indicator twice.
		{"PUBLISH duplicate property", v5, func(v byte) []byte { return pub(v, 0, "a", propsV5(v, 0x01, 1, 0x01, 1)) }, packets.ProtocolError},
		// [MQTT-3.3.4-6] (v5): no Subscription Identifier from a client.
		{"PUBLISH subscription identifier", v5, func(v byte) []byte { return pub(v, 0, "a", propsV5(v, 0x0B, 1)) }, packets.ProtocolError},
		// [MQTT-3.3.2-14] (v5): no wildcard in the Response Topic.
		{"PUBLISH response topic with wildcard", v5, func(v byte) []byte { return pub(v, 0, "a", propsV5(v, append([]byte{0x08}, str16("r/#")...)...)) }, packets.ProtocolError},
		// [MQTT-3.14.2-1] (v5): a reason code DISCONNECT may not carry (0x8C).
		{"DISCONNECT invalid reason code", v5, func(byte) []byte { return []byte{0xE0, 0x01, 0x8C} }, packets.MalformedPacket},
		// v5 section 3.14.2.2.2: a non-zero Session Expiry Interval on
		// DISCONNECT after 0 at CONNECT is a Protocol Error.
		{"DISCONNECT session expiry after 0", v5, func(byte) []byte { return []byte{0xE0, 0x07, 0x00, 0x05, 0x11, 0, 0, 0, 10} }, packets.ProtocolError},
		// [MQTT-3.4.2-1] (v5): a reason code PUBACK may not carry (0x8F).
		{"PUBACK invalid reason code", v5, func(byte) []byte { return []byte{0x40, 0x03, 0x00, 0x01, 0x8F} }, packets.MalformedPacket},
	}
	srv := terntest.NewServer(t, nil)
	for _, ver := range bothVersions {
		p := newHealthProbe(t, srv, ver.v, "malformed-"+ver.name)
		for i, tc := range cases {
			if tc.only != 0 && tc.only != ver.v {
				continue
			}
			t.Run(ver.name+"/"+tc.name, func(t *testing.T) {
				c := mustConnect(t, srv, ver.v, "bad-"+ver.name+"-"+strconv.Itoa(i))
				c.SendRaw(tc.pk(ver.v))
				expectProtocolClose(t, c, tc.code)
				p.check(t)
			})
		}
	}
	if n := srv.Stats().ProtocolErrors; n < int64(len(cases)) {
		t.Errorf("Stats().ProtocolErrors = %d, want at least %d", n, len(cases))
	}
}
