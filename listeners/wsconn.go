package listeners

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// wsReadBufferSize is the read buffer of a WebSocket connection: enough for
// any control frame with its header. Larger payloads are read straight
// into the caller's buffer.
const wsReadBufferSize = 512

// Errors of WebSocket connections.
var (
	ErrWebSocketProtocol = errors.New("listeners: WebSocket protocol error")
	ErrWebSocketText     = errors.New("listeners: WebSocket text frame (MQTT uses binary frames)")
)

// wsConn presents a WebSocket's binary frames as a byte stream: Read returns
// payload bytes regardless of frame boundaries, so an MQTT packet may span
// frames and a frame may hold several packets; each Write is sent as one
// binary frame. Ping, pong and close frames are handled inside Read.
//
// Read state is owned by the reading goroutine; a read that times out
// leaves the state intact (headers are peeked whole before being consumed).
type wsConn struct {
	net.Conn
	br     *bufio.Reader
	client bool // the client side: writes are masked, reads are not

	// Reading.
	hr        bytes.Reader
	hbuf      [ws.MaxHeaderSize]byte
	remaining int64
	mask      [4]byte
	masked    bool
	pos       int
	inMessage bool // a fragmented binary message goes on
	rerr      error

	// Writing.
	wmu       sync.Mutex
	closeSent bool
	wbuf      []byte
}

func newWSConn(c net.Conn, br *bufio.Reader, client bool) *wsConn {
	if br == nil {
		br = bufio.NewReaderSize(c, wsReadBufferSize)
	}
	return &wsConn{Conn: c, br: br, client: client}
}

// Read implements net.Conn.
func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if len(p) == 0 {
			return 0, nil
		}
		if c.remaining > 0 {
			n := len(p)
			if int64(n) > c.remaining {
				n = int(c.remaining)
			}
			n, err := c.br.Read(p[:n])
			if c.masked {
				ws.Cipher(p[:n], c.mask, c.pos)
			}
			c.pos += n
			c.remaining -= int64(n)
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
				c.rerr = err
			}
			return n, err
		}
		h, err := c.nextHeader()
		if err != nil {
			return 0, err
		}
		switch {
		case h.Rsv != 0:
			return 0, c.fail(ws.StatusProtocolError, ErrWebSocketProtocol)
		case h.Masked == c.client: // clients mask, servers do not (RFC 6455 5.1)
			return 0, c.fail(ws.StatusProtocolError, ErrWebSocketProtocol)
		case h.OpCode.IsControl():
			if err := c.control(h); err != nil {
				return 0, err
			}
			continue
		case h.OpCode == ws.OpText:
			return 0, c.fail(ws.StatusUnsupportedData, ErrWebSocketText)
		case h.OpCode == ws.OpBinary && !c.inMessage,
			h.OpCode == ws.OpContinuation && c.inMessage:
			c.inMessage = !h.Fin
		default:
			return 0, c.fail(ws.StatusProtocolError, ErrWebSocketProtocol)
		}
		c.remaining, c.mask, c.masked, c.pos = h.Length, h.Mask, h.Masked, 0
	}
}

// nextHeader reads the next frame header. It consumes nothing unless the
// whole header is there, so a read deadline can expire safely.
func (c *wsConn) nextHeader() (ws.Header, error) {
	b, err := c.br.Peek(2)
	if err != nil {
		return ws.Header{}, c.readErr(err, len(b))
	}
	size := 2
	if b[1]&0x80 != 0 {
		size += 4
	}
	switch b[1] & 0x7f {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	b, err = c.br.Peek(size)
	if err != nil {
		return ws.Header{}, c.readErr(err, len(b))
	}
	c.hr.Reset(b)
	h, err := ws.ReadHeaderBuffer(&c.hr, c.hbuf[:0])
	if err != nil {
		return h, c.fail(ws.StatusProtocolError, err)
	}
	if h.OpCode.IsControl() && h.Length <= 125 {
		// A control frame is consumed whole, payload included.
		if b, err = c.br.Peek(size + int(h.Length)); err != nil {
			return ws.Header{}, c.readErr(err, len(b))
		}
	}
	c.br.Discard(size)
	return h, nil
}

// readErr classifies a read error: timeouts leave the connection usable;
// anything else ends it.
func (c *wsConn) readErr(err error, buffered int) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	if err == io.EOF && buffered > 0 {
		err = io.ErrUnexpectedEOF
	}
	c.rerr = err
	return err
}

// control handles a ping, pong or close frame.
func (c *wsConn) control(h ws.Header) error {
	if !h.Fin || h.Length > 125 {
		return c.fail(ws.StatusProtocolError, ErrWebSocketProtocol)
	}
	n := int(h.Length)
	b, _ := c.br.Peek(n) // buffered by nextHeader
	payload := append([]byte(nil), b...)
	c.br.Discard(n)
	if h.Masked {
		ws.Cipher(payload, h.Mask, 0)
	}
	switch h.OpCode {
	case ws.OpPing:
		c.writeControl(ws.OpPong, payload)
	case ws.OpClose:
		code, _ := ws.ParseCloseFrameData(payload)
		if code.Empty() {
			code = ws.StatusNormalClosure
		}
		c.sendClose(code) // echo the status (RFC 6455 5.5.1)
		c.rerr = io.EOF
		return io.EOF
	case ws.OpPong:
	default:
		return c.fail(ws.StatusProtocolError, ErrWebSocketProtocol)
	}
	return nil
}

// fail sends a close frame with code and makes err sticky.
func (c *wsConn) fail(code ws.StatusCode, err error) error {
	c.sendClose(code)
	c.rerr = err
	return err
}

// sendClose sends a close frame unless one was sent.
func (c *wsConn) sendClose(code ws.StatusCode) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.sendCloseLocked(code)
}

func (c *wsConn) sendCloseLocked(code ws.StatusCode) {
	if c.closeSent {
		return
	}
	c.closeSent = true
	c.writeFrameLocked(ws.OpClose, ws.NewCloseFrameBody(code, ""))
}

func (c *wsConn) writeControl(op ws.OpCode, payload []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.closeSent {
		c.writeFrameLocked(op, payload)
	}
}

// Write implements net.Conn: p goes out as one binary frame.
func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent {
		return 0, net.ErrClosed
	}
	n, err := c.writeFrameLocked(ws.OpBinary, p)
	return n, err
}

// sliceWriter appends to a byte slice.
type sliceWriter struct{ b []byte }

// Write implements io.Writer.
func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// writeFrameLocked writes one frame with a single write to the connection.
// It returns how many payload bytes were written.
func (c *wsConn) writeFrameLocked(op ws.OpCode, p []byte) (int, error) {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(p))}
	if c.client {
		h.Masked, h.Mask = true, ws.NewMask()
	}
	w := sliceWriter{b: c.wbuf[:0]}
	if err := ws.WriteHeader(&w, h); err != nil {
		return 0, err
	}
	hl := len(w.b)
	w.b = append(w.b, p...)
	if c.client {
		ws.Cipher(w.b[hl:], h.Mask, 0)
	}
	n, err := c.Conn.Write(w.b)
	if cap(w.b) <= 64<<10 {
		c.wbuf = w.b[:0]
	} else {
		c.wbuf = nil
	}
	return max(n-hl, 0), err
}

// CloseWrite sends a close frame and shuts down the writing side of the
// connection underneath, so the peer reads everything sent before it.
func (c *wsConn) CloseWrite() error {
	c.sendClose(ws.StatusNormalClosure)
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close sends a close frame, unless a write is in progress, and closes the
// connection.
func (c *wsConn) Close() error {
	if c.wmu.TryLock() {
		if !c.closeSent {
			c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			c.sendCloseLocked(ws.StatusNormalClosure)
		}
		c.wmu.Unlock()
	}
	return c.Conn.Close()
}

// NetConn returns the connection underneath: TCP, or a *TLSConn for a
// secure WebSocket.
func (c *wsConn) NetConn() net.Conn { return c.Conn }

// Identity implements [Identity] for secure WebSocket connections.
func (c *wsConn) Identity() string {
	if id, ok := c.Conn.(Identity); ok {
		return id.Identity()
	}
	return ""
}

// PeerCertificates implements [Identity].
func (c *wsConn) PeerCertificates() []*x509.Certificate {
	if id, ok := c.Conn.(Identity); ok {
		return id.PeerCertificates()
	}
	return nil
}

// DialWebSocket connects to an MQTT-over-WebSocket server at url
// ("ws://host:8083/mqtt" or "wss://..."), negotiating the "mqtt"
// subprotocol, and returns the connection as a byte stream for an MQTT
// client library. tlsConfig is used for wss URLs (nil: defaults).
func DialWebSocket(ctx context.Context, url string, tlsConfig *tls.Config) (net.Conn, error) {
	d := ws.Dialer{Protocols: []string{"mqtt"}, TLSConfig: tlsConfig}
	conn, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if hs.Protocol != "mqtt" {
		conn.Close()
		return nil, fmt.Errorf("listeners: server did not agree to the mqtt subprotocol (got %q)", hs.Protocol)
	}
	return newWSConn(conn, br, true), nil
}
