// Package terntest provides an in-process Tern broker on a loopback port and
// a scripted raw-packet MQTT client, for tests, in the manner of
// net/http/httptest.
package terntest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
)

// Timeout bounds every wait in this package.
var Timeout = 10 * time.Second

// Server is a running broker listening on 127.0.0.1 at a free port.
type Server struct {
	*tern.Server
	// Addr is the TCP address, "127.0.0.1:port".
	Addr string
}

// NewServer starts a broker with opts (nil for defaults) and hooks, and
// closes it when the test ends. $SYS publishing is off unless opts sets
// SysInterval.
func NewServer(t testing.TB, opts *tern.Options, hooks ...tern.Hook) *Server {
	t.Helper()
	var o tern.Options
	if opts != nil {
		o = *opts
	}
	if o.SysInterval == 0 {
		o.SysInterval = -1
	}
	srv, err := tern.New(&o)
	if err != nil {
		t.Fatalf("tern.New: %v", err)
	}
	for _, h := range hooks {
		if err := srv.AddHook(h); err != nil {
			t.Fatalf("AddHook: %v", err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	if err := srv.AddListener(listeners.NewTCPFromListener("tcp", ln)); err != nil {
		t.Fatalf("AddListener: %v", err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return &Server{Server: srv, Addr: ln.Addr().String()}
}

// Conn is a raw MQTT connection that sends and receives packets as scripted.
type Conn struct {
	t       testing.TB
	nc      net.Conn
	r       *bufio.Reader
	Version byte
}

// Dial opens a raw connection to the server speaking the protocol version.
func (s *Server) Dial(t testing.TB, version byte) *Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.Addr, Timeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return &Conn{t: t, nc: nc, r: bufio.NewReader(nc), Version: version}
}

// NewConn wraps a connection made some other way (Server.DialInProcess,
// net.Pipe) as a scripted client speaking the protocol version.
func NewConn(t testing.TB, nc net.Conn, version byte) *Conn {
	t.Cleanup(func() { nc.Close() })
	return &Conn{t: t, nc: nc, r: bufio.NewReader(nc), Version: version}
}

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Send encodes and writes a packet.
func (c *Conn) Send(pk packets.Packet) {
	c.t.Helper()
	b, err := pk.Encode(nil, c.Version)
	if err != nil {
		c.t.Fatalf("encode %s: %v", pk.Type(), err)
	}
	c.SendRaw(b)
}

// SendRaw writes bytes as they are.
func (c *Conn) SendRaw(b []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(Timeout))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Recv reads the next packet, failing the test after Timeout.
func (c *Conn) Recv() packets.Packet {
	c.t.Helper()
	pk, err := c.TryRecv(Timeout)
	if err != nil {
		c.t.Fatalf("receive: %v", err)
	}
	return pk
}

// TryRecv reads the next packet within d.
func (c *Conn) TryRecv(d time.Duration) (packets.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	return packets.ReadPacket(c.r, c.Version, 0)
}

// Connect sends CONNECT (ProtocolVersion defaults to the Conn's version)
// and returns the CONNACK.
func (c *Conn) Connect(pk *packets.Connect) *packets.Connack {
	c.t.Helper()
	if pk.ProtocolVersion == 0 {
		pk.ProtocolVersion = c.Version
	}
	c.Send(pk)
	got := c.Recv()
	ack, ok := got.(*packets.Connack)
	if !ok {
		c.t.Fatalf("expected CONNACK, got %s", got.Type())
	}
	return ack
}

// MustConnect connects with the client id and clean start and fails the
// test unless the CONNACK is a success.
func (c *Conn) MustConnect(clientID string) *packets.Connack {
	c.t.Helper()
	ack := c.Connect(&packets.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 60})
	if ack.ReasonCode != packets.Success {
		c.t.Fatalf("CONNECT refused: %v", ack.ReasonCode)
	}
	return ack
}

// ExpectClosed waits for the server to close the connection, returning the
// packets it sent before closing (a v5 DISCONNECT, typically).
func (c *Conn) ExpectClosed() []packets.Packet {
	c.t.Helper()
	var got []packets.Packet
	deadline := time.Now().Add(Timeout)
	for time.Now().Before(deadline) {
		pk, err := c.TryRecv(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				return got
			}
			return got // any other read error also means the connection is gone
		}
		got = append(got, pk)
	}
	c.t.Fatalf("connection still open after %v (received %d packets)", Timeout, len(got))
	return nil
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// Close closes the connection.
func (c *Conn) Close() { c.nc.Close() }

// RecvRaw reads the next packet as bytes, fixed header included, failing
// the test after Timeout. Use it to check a packet's exact wire form.
func (c *Conn) RecvRaw() []byte {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(Timeout))
	b0, err := c.r.ReadByte()
	if err != nil {
		c.t.Fatalf("receive: %v", err)
	}
	out := []byte{b0}
	rem, mul := 0, 1
	for i := 0; ; i++ {
		b, err := c.r.ReadByte()
		if err != nil {
			c.t.Fatalf("receive: %v", err)
		}
		out = append(out, b)
		rem += int(b&0x7F) * mul
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			c.t.Fatalf("receive: remaining length longer than 4 bytes")
		}
		mul <<= 7
	}
	body := make([]byte, rem)
	if _, err := io.ReadFull(c.r, body); err != nil {
		c.t.Fatalf("receive: %v", err)
	}
	return append(out, body...)
}

// WithT returns a view of the connection that reports failures to t, for
// a connection opened by a parent test and used in a subtest.
func (c *Conn) WithT(t testing.TB) *Conn {
	cc := *c
	cc.t = t
	return &cc
}

// Eventually polls cond every few milliseconds until it holds, failing the
// test with what after Timeout. Use it where there is no event to wait on
// (a count the server keeps, a connection the server closes).
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", Timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
