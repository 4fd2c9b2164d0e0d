package listeners_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
)

func newWebSocket(t *testing.T) (*listeners.WebSocket, string) {
	t.Helper()
	l := listeners.NewWebSocket("ws", "127.0.0.1:0")
	startServer(t, l)
	return l, "ws://" + l.Addr().String() + "/mqtt"
}

func dialWS(t *testing.T, url string, cfg *tls.Config) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := listeners.DialWebSocket(ctx, url, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

func TestWebSocketPahoQoS1And2(t *testing.T) {
	_, url := newWebSocket(t)
	sub, msgs := pahoClient(t, dialWS(t, url, nil), "sub")
	pub, _ := pahoClient(t, dialWS(t, url, nil), "pub")
	exchange(t, pub, sub, msgs, "ws/qos1", 1, 30)
	exchange(t, pub, sub, msgs, "ws/qos2", 2, 30)
}

func TestSecureWebSocket(t *testing.T) {
	s := newTLSSetup(t, listeners.TLSOptions{})
	l := listeners.NewWebSocket("wss", "127.0.0.1:0")
	l.TLSConfig = s.st.Config()
	l.Path = "/custom"
	startServer(t, l)
	url := "wss://" + l.Addr().String() + "/custom"
	cfg := &tls.Config{RootCAs: s.ca.Pool}
	sub, msgs := pahoClient(t, dialWS(t, url, cfg.Clone()), "sub")
	pub, _ := pahoClient(t, dialWS(t, url, cfg.Clone()), "pub")
	exchange(t, pub, sub, msgs, "wss/test", 1, 20)
}

// rawWS is a WebSocket client that writes frames as the test says and
// reads the server's frames.
type rawWS struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRawWS(t *testing.T, url string, protocols ...string) (*rawWS, ws.Handshake, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nc, br, hs, err := ws.Dialer{Protocols: protocols}.Dial(ctx, url)
	if err != nil {
		return nil, hs, err
	}
	t.Cleanup(func() { nc.Close() })
	if br == nil {
		br = bufio.NewReader(nc)
	}
	return &rawWS{t: t, nc: nc, br: br}, hs, nil
}

func (c *rawWS) frame(op ws.OpCode, fin bool, payload []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(timeout))
	if err := ws.WriteFrame(c.nc, ws.MaskFrame(ws.NewFrame(op, fin, payload))); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawWS) readFrame() ws.Frame {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	if h.Masked {
		c.t.Fatal("server frame is masked")
	}
	if h.Length > 1<<20 {
		c.t.Fatalf("server frame of %d bytes", h.Length)
	}
	f := ws.Frame{Header: h, Payload: make([]byte, h.Length)}
	if _, err := io.ReadFull(c.br, f.Payload); err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

// packets reads binary frames until they hold n whole packets.
func (c *rawWS) packets(n int) []packets.Packet {
	c.t.Helper()
	var buf []byte
	var out []packets.Packet
	for len(out) < n {
		f := c.readFrame()
		if f.Header.OpCode != ws.OpBinary {
			c.t.Fatalf("frame opcode %v, want binary", f.Header.OpCode)
		}
		buf = append(buf, f.Payload...)
		r := bufio.NewReader(strings.NewReader(string(buf)))
		out = out[:0]
		for {
			pk, err := packets.ReadPacket(r, packets.V5, 0)
			if err != nil {
				break
			}
			out = append(out, pk)
		}
	}
	return out
}

func encode(t *testing.T, pks ...packets.Packet) []byte {
	t.Helper()
	var b []byte
	for _, pk := range pks {
		var err error
		if b, err = pk.Encode(b, packets.V5); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestWebSocketFraming(t *testing.T) {
	_, url := newWebSocket(t)
	c, hs, err := dialRawWS(t, url, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	if hs.Protocol != "mqtt" {
		t.Errorf("subprotocol %q, want mqtt", hs.Protocol)
	}

	// A CONNECT split across two frames.
	connect := encode(t, &packets.Connect{ProtocolVersion: packets.V5, ClientID: "raw", CleanStart: true, KeepAlive: 60})
	c.frame(ws.OpBinary, true, connect[:3])
	c.frame(ws.OpBinary, true, connect[3:])
	if ack, ok := c.packets(1)[0].(*packets.Connack); !ok || ack.ReasonCode != packets.Success {
		t.Fatalf("CONNACK %#v", ack)
	}

	// Two packets in one frame.
	c.frame(ws.OpBinary, true, encode(t,
		&packets.Subscribe{PacketID: 7, Subscriptions: []packets.Subscription{{Filter: "frag/#"}}},
		&packets.Pingreq{}))
	got := c.packets(2)
	if sa, ok := got[0].(*packets.Suback); !ok || sa.PacketID != 7 {
		t.Fatalf("got %#v, want SUBACK 7", got[0])
	}
	if _, ok := got[1].(*packets.Pingresp); !ok {
		t.Fatalf("got %#v, want PINGRESP", got[1])
	}

	// A fragmented message with a ping in the middle; the pong comes first.
	pub := encode(t, &packets.Publish{Topic: "frag/x", Payload: []byte("hello")})
	c.frame(ws.OpBinary, false, pub[:4])
	c.frame(ws.OpPing, true, []byte("are you there"))
	c.frame(ws.OpContinuation, true, pub[4:])
	if f := c.readFrame(); f.Header.OpCode != ws.OpPong || string(f.Payload) != "are you there" {
		t.Fatalf("got %v %q, want the pong", f.Header.OpCode, f.Payload)
	}
	if p, ok := c.packets(1)[0].(*packets.Publish); !ok || p.Topic != "frag/x" || string(p.Payload) != "hello" {
		t.Fatalf("got %#v, want the PUBLISH", p)
	}

	// A close frame is answered with one, and the connection ends.
	c.frame(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	if f := c.readFrame(); f.Header.OpCode != ws.OpClose {
		t.Fatalf("got %v, want close", f.Header.OpCode)
	}
	expectClosed(t, c.nc)
}

func TestWebSocketTextFrameRefused(t *testing.T) {
	_, url := newWebSocket(t)
	c, _, err := dialRawWS(t, url, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	c.frame(ws.OpText, true, []byte("hello"))
	f := c.readFrame()
	if code, _ := ws.ParseCloseFrameData(f.Payload); f.Header.OpCode != ws.OpClose || code != ws.StatusUnsupportedData {
		t.Fatalf("got %v %v, want close 1003", f.Header.OpCode, code)
	}
	expectClosed(t, c.nc)
}

func TestWebSocketHandshakeRefusals(t *testing.T) {
	l, url := newWebSocket(t)
	base := "ws://" + l.Addr().String()
	if _, _, err := dialRawWS(t, base+"/other", "mqtt"); err == nil || !strings.Contains(err.Error(), "404") && !strings.Contains(err.Error(), "status") {
		t.Errorf("wrong path: %v, want 404", err)
	}
	if _, _, err := dialRawWS(t, base+"/mqtt?x=1", "mqtt"); err != nil {
		t.Errorf("query string: %v", err)
	}
	_, hs, err := (ws.Dialer{Protocols: []string{"chat"}}).Upgrade(mustDial(t, l.Addr().String()), mustURL(t, url))
	if err == nil && hs.Protocol != "" {
		t.Errorf("a client offering only another subprotocol was answered with %q", hs.Protocol)
	}
	// Plain HTTP is not answered with an upgrade.
	nc := mustDial(t, l.Addr().String())
	io.WriteString(nc, "GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
	nc.SetReadDeadline(time.Now().Add(timeout))
	line, _ := bufio.NewReader(nc).ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 4") {
		t.Errorf("plain GET answered %q", line)
	}
}

// When the server ends a connection (here, a session taken over) the
// client reads the DISCONNECT, then a close frame.
func TestWebSocketServerDisconnect(t *testing.T) {
	_, url := newWebSocket(t)
	a, _, err := dialRawWS(t, url, "mqtt")
	if err != nil {
		t.Fatal(err)
	}
	a.frame(ws.OpBinary, true, encode(t, &packets.Connect{ProtocolVersion: packets.V5, ClientID: "same", CleanStart: true}))
	a.packets(1)
	b := newRaw(t, dialWS(t, url, nil), packets.V5)
	b.connect("same")
	if d, ok := a.packets(1)[0].(*packets.Disconnect); !ok || d.ReasonCode != packets.SessionTakenOver {
		t.Fatalf("got %#v, want DISCONNECT 0x8E", d)
	}
	if f := a.readFrame(); f.Header.OpCode != ws.OpClose {
		t.Fatalf("got %v, want close", f.Header.OpCode)
	}
}
