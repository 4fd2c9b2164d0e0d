package bridge

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
)

// mqttConn is one side of a bridge: an MQTT connection whose packets are
// read by one goroutine and written, by any goroutine, through a buffer
// that a writer goroutine flushes, many packets per write. Appending never
// blocks, so the two sides of a bridge can never wait on each other; what
// the buffer can hold is bounded by the inflight windows, except for QoS 0
// messages, which are dropped past maxQoS0Backlog (see sendQoS0).
type mqttConn struct {
	nc      net.Conn
	r       *bufio.Reader
	version byte
	maxIn   int // largest packet read; 0: no limit

	mu      sync.Mutex
	buf     []byte
	closed  bool
	err     error
	kick    chan struct{}
	done    chan struct{} // closed when the writer has ended
	lastOut atomic.Int64  // when a packet was last queued, unix ns (keep alive)
	lastIn  atomic.Int64  // when a packet was last read, unix ns
}

// maxQoS0Backlog is how many bytes may wait for a slow connection before
// QoS 0 messages for it are dropped.
const maxQoS0Backlog = 4 << 20

func newMQTTConn(nc net.Conn, version byte) *mqttConn {
	c := &mqttConn{nc: nc, r: bufio.NewReaderSize(nc, 64<<10), version: version,
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	now := time.Now().UnixNano()
	c.lastIn.Store(now)
	c.lastOut.Store(now)
	return c
}

// start starts the writer.
func (c *mqttConn) start() { go c.writeLoop() }

// send encodes pk into the output buffer.
func (c *mqttConn) send(pk packets.Packet) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.errLocked()
	}
	b, err := pk.Encode(c.buf, c.version)
	if err != nil {
		return err
	}
	c.buf = b
	c.lastOut.Store(time.Now().UnixNano())
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return nil
}

// sendQoS0 sends a QoS 0 PUBLISH unless too much already waits, in which
// case it reports false.
func (c *mqttConn) sendQoS0(pk *packets.Publish) (bool, error) {
	c.mu.Lock()
	full := len(c.buf) > maxQoS0Backlog
	c.mu.Unlock()
	if full {
		return false, nil
	}
	return true, c.send(pk)
}

func (c *mqttConn) errLocked() error {
	if c.err != nil {
		return c.err
	}
	return net.ErrClosed
}

func (c *mqttConn) writeLoop() {
	defer close(c.done)
	var spare []byte
	for range c.kick {
		for {
			c.mu.Lock()
			if len(c.buf) == 0 {
				closed := c.closed
				c.mu.Unlock()
				if closed {
					return
				}
				break
			}
			out := c.buf
			c.buf = spare[:0]
			c.mu.Unlock()
			if _, err := c.nc.Write(out); err != nil {
				c.fail(err)
				c.nc.Close()
				return
			}
			spare = nil
			if cap(out) <= 1<<20 {
				spare = out
			}
		}
	}
}

// fail records the connection's first error and stops further sends.
func (c *mqttConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.closed = true
	c.mu.Unlock()
}

// flushClose writes what is buffered (within d) and closes the connection.
func (c *mqttConn) flushClose(d time.Duration) {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	t := time.NewTimer(d)
	select {
	case <-c.done:
	case <-t.C:
	}
	t.Stop()
	c.nc.Close()
}

// close closes the connection at once.
func (c *mqttConn) close() {
	c.fail(net.ErrClosed)
	select {
	case c.kick <- struct{}{}:
	default:
	}
	c.nc.Close()
}

// read reads the next packet.
func (c *mqttConn) read() (packets.Packet, error) {
	pk, err := packets.ReadPacket(c.r, c.version, c.maxIn)
	if err == nil {
		c.lastIn.Store(time.Now().UnixNano())
	}
	return pk, err
}

// handshake sends CONNECT and reads the CONNACK within timeout.
func (c *mqttConn) handshake(cp *packets.Connect, timeout time.Duration) (*packets.Connack, error) {
	deadline := time.Now().Add(timeout)
	c.nc.SetDeadline(deadline)
	defer c.nc.SetDeadline(time.Time{})
	b, err := cp.Encode(nil, c.version)
	if err != nil {
		return nil, err
	}
	if _, err := c.nc.Write(b); err != nil {
		return nil, err
	}
	for {
		pk, err := c.read()
		if err != nil {
			return nil, fmt.Errorf("waiting for CONNACK: %w", err)
		}
		switch p := pk.(type) {
		case *packets.Connack:
			if p.ReasonCode.IsError() {
				return p, &refusedError{code: p.ReasonCode, v: c.version, reason: p.Properties.ReasonString}
			}
			return p, nil
		case *packets.Auth:
			return nil, errors.New("the remote asks for enhanced authentication, which bridges do not support")
		default:
			return nil, fmt.Errorf("expected CONNACK, got %s", pk.Type())
		}
	}
}

// refusedError is a CONNACK refusal.
type refusedError struct {
	code   packets.ReasonCode
	v      byte
	reason string
}

func (e *refusedError) Error() string {
	s := fmt.Sprintf("connection refused: 0x%02X %s", byte(e.code), e.code.String())
	if e.v != packets.V5 {
		s = fmt.Sprintf("connection refused: return code %d (%s)", packets.ConnackCodeV3(e.code), e.code.String())
	}
	if e.reason != "" {
		s += ": " + e.reason
	}
	return s
}

// dial opens a network connection to a remote address.
func dial(ctx context.Context, a address, tlsCfg *tls.Config, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch a.scheme {
	case "ws", "wss":
		if a.scheme == "wss" && tlsCfg == nil {
			tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		return listeners.DialWebSocket(ctx, a.url, tlsCfg)
	case "tls":
		cfg := tlsCfg
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			host, _, _ := net.SplitHostPort(a.host)
			cfg.ServerName = host
		}
		d := &tls.Dialer{NetDialer: &net.Dialer{KeepAlive: 30 * time.Second}, Config: cfg}
		return d.DialContext(ctx, "tcp", a.host)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", a.host)
	if err == nil {
		nc.(*net.TCPConn).SetNoDelay(true)
	}
	return nc, err
}
