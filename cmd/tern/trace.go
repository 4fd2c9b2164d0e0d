package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/ternmq/tern/packets"
)

// traceConn is a connection that prints, for -d, each MQTT packet it
// carries, as mosquitto_pub -d and mosquitto_sub -d do: "Client ID sending
// CONNECT", "Client ID received PUBLISH (d0, q1, r0, m1, 't', ... (5
// bytes))".
type traceConn struct {
	net.Conn
	id  string
	out io.Writer

	mu       sync.Mutex
	version  byte
	in, sent []byte // bytes of packets not yet complete
}

func newTraceConn(c net.Conn, id string, out io.Writer) *traceConn {
	return &traceConn{Conn: c, id: id, out: out, version: packets.V5}
}

func (c *traceConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.feed(&c.in, p[:n], "received")
	}
	return n, err
}

func (c *traceConn) Write(p []byte) (int, error) {
	c.feed(&c.sent, p, "sending")
	return c.Conn.Write(p)
}

// feed adds bytes seen in one direction and prints the packets they
// complete.
func (c *traceConn) feed(buf *[]byte, b []byte, dir string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*buf = append(*buf, b...)
	for {
		h, n, err := packets.DecodeFixedHeader(*buf, 0)
		if errors.Is(err, packets.ErrIncomplete) || err == nil && len(*buf) < n+h.Remaining {
			return
		}
		if err != nil {
			fmt.Fprintf(c.out, "Client %s %s a packet that does not decode: %v\n", c.id, dir, err)
			*buf = nil
			return
		}
		body := (*buf)[n : n+h.Remaining]
		pk, err := packets.Decode(h, body, c.version)
		*buf = (*buf)[n+h.Remaining:]
		if err != nil {
			fmt.Fprintf(c.out, "Client %s %s %s (malformed: %v)\n", c.id, dir, h.Type, err)
			continue
		}
		if cp, ok := pk.(*packets.Connect); ok {
			c.version = cp.ProtocolVersion
		}
		fmt.Fprintf(c.out, "Client %s %s %s\n", c.id, dir, describePacket(pk))
	}
}

// describePacket writes a packet as mosquitto's clients log it.
func describePacket(pk packets.Packet) string {
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	switch p := pk.(type) {
	case *packets.Connack:
		return fmt.Sprintf("CONNACK (%d)", byte(p.ReasonCode))
	case *packets.Publish:
		return fmt.Sprintf("PUBLISH (d%d, q%d, r%d, m%d, '%s', ... (%d bytes))", b(p.Dup), p.QoS, b(p.Retain), p.PacketID, p.Topic, len(p.Payload))
	case *packets.Puback:
		return fmt.Sprintf("PUBACK (Mid: %d, RC:%d)", p.PacketID, byte(p.ReasonCode))
	case *packets.Pubrec:
		return fmt.Sprintf("PUBREC (Mid: %d, RC:%d)", p.PacketID, byte(p.ReasonCode))
	case *packets.Pubrel:
		return fmt.Sprintf("PUBREL (Mid: %d)", p.PacketID)
	case *packets.Pubcomp:
		return fmt.Sprintf("PUBCOMP (Mid: %d, RC:%d)", p.PacketID, byte(p.ReasonCode))
	case *packets.Subscribe:
		s := "SUBSCRIBE"
		for _, f := range p.Subscriptions {
			opts := f.QoS | byte(b(f.NoLocal))<<2 | byte(b(f.RetainAsPublished))<<3 | f.RetainHandling<<4
			s += fmt.Sprintf(" (Mid: %d, Topic: %s, QoS: %d, Options: 0x%02x)", p.PacketID, f.Filter, f.QoS, opts)
		}
		return s
	case *packets.Suback:
		s := fmt.Sprintf("SUBACK (Mid: %d", p.PacketID)
		for _, c := range p.ReasonCodes {
			s += fmt.Sprintf(", %d", byte(c))
		}
		return s + ")"
	case *packets.Unsubscribe:
		return fmt.Sprintf("UNSUBSCRIBE (Mid: %d, Topics: %v)", p.PacketID, p.Filters)
	case *packets.Disconnect:
		if p.ReasonCode != 0 {
			return fmt.Sprintf("DISCONNECT (%d %s)", byte(p.ReasonCode), p.ReasonCode)
		}
	}
	return pk.Type().String()
}
