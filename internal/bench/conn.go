package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
)

// Read buffer sizes: connections that carry messages read in large chunks;
// idle ones (the Conn scenario) keep only a small buffer.
const (
	busyReadBuffer = 64 << 10
	idleReadBuffer = 256
)

// maxOut is how many bytes may wait in a connection's outbound buffer before
// its publisher pauses.
const maxOut = 256 << 10

// client is one MQTT connection of the generator. One goroutine reads it
// (readLoop); writes are queued in out and sent by one writer goroutine
// (writeLoop) in as few system calls as possible. Idle connections have no
// writer: their rare pings are written directly.
type client struct {
	r       *runner
	id      string
	nc      net.Conn
	br      *bufio.Reader
	version byte
	recvMax int // the server's Receive Maximum (v5), 0 if none

	pub *publisher  // set when the client publishes
	sub *subscriber // set when the client subscribes

	// Owned by the reading goroutine.
	skip    int    // bytes of the previous packet still in br
	scratch []byte // bodies of packets larger than br's buffer
	ack     packets.Ack
	publish packets.Publish

	mu    sync.Mutex
	out   []byte // queued bytes, guarded by mu
	spare []byte // the writer's previous buffer, guarded by mu

	kick     chan struct{} // wakes the writer; nil for idle connections
	room     chan struct{} // signalled after every write
	quit     chan struct{} // closed to stop the writer once it has flushed
	written  chan struct{} // closed when the writer has ended
	subAck   chan []packets.ReasonCode
	closing  atomic.Bool // the runner is closing the connection
	dead     atomic.Bool // the connection failed or was closed
	quitOnce sync.Once
	routines sync.WaitGroup
}

// dial opens a connection, sends CONNECT and waits for a successful CONNACK,
// all within the connect timeout.
func (r *runner) dial(ctx context.Context, id string, busy bool) (*client, error) {
	cfg := &r.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	nc, _, err := r.dialNet(ctx)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	size := idleReadBuffer
	if busy {
		size = busyReadBuffer
	}
	c := &client{r: r, id: id, nc: nc, br: bufio.NewReaderSize(nc, size), version: cfg.Version}
	conn := r.connectPacket(id, cfg.KeepAlive, cfg.Persistent)
	b, err := conn.Encode(nil, cfg.Version)
	if err == nil {
		_, err = nc.Write(b)
	}
	if err == nil {
		err = c.readConnack()
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c.subAck = make(chan []packets.ReasonCode, 1)
	if busy {
		c.kick = make(chan struct{}, 1)
		c.room = make(chan struct{}, 1)
		c.quit = make(chan struct{})
		c.written = make(chan struct{})
	}
	return c, nil
}

func (c *client) readConnack() error {
	h, body, err := c.next()
	if err != nil {
		return err
	}
	if h.Type != packets.CONNACK {
		return fmt.Errorf("bench: expected CONNACK, got %s", h.Type)
	}
	var ack packets.Connack
	if err := ack.Decode(h, body, c.version); err != nil {
		return err
	}
	if ack.ReasonCode != packets.Success {
		return fmt.Errorf("bench: connection refused: %w", ack.ReasonCode)
	}
	c.recvMax = int(ack.Properties.ReceiveMaximum)
	return nil
}

// next reads the next packet. The body stays valid until the next call.
func (c *client) next() (packets.FixedHeader, []byte, error) {
	if c.skip > 0 {
		c.br.Discard(c.skip)
		c.skip = 0
	}
	var h packets.FixedHeader
	var n int
	for k := 2; ; k++ {
		b, err := c.br.Peek(k)
		if err != nil {
			if err == io.EOF && k > 2 {
				err = io.ErrUnexpectedEOF
			}
			return h, nil, err
		}
		h, n, err = packets.DecodeFixedHeader(b, 0)
		if err == nil {
			break
		}
		if err != packets.ErrIncomplete || k == 5 {
			return h, nil, err
		}
	}
	total := n + h.Remaining
	if total <= c.br.Size() {
		b, err := c.br.Peek(total)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return h, nil, err
		}
		c.skip = total
		return h, b[n:], nil
	}
	c.br.Discard(n)
	if cap(c.scratch) < h.Remaining {
		c.scratch = make([]byte, h.Remaining)
	}
	body := c.scratch[:h.Remaining]
	if _, err := io.ReadFull(c.br, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return h, nil, err
	}
	return h, body, nil
}

// start launches the connection's reader, and its writer when it has one.
func (c *client) start() {
	c.routines.Add(1)
	go c.readLoop()
	if c.kick != nil {
		go c.writeLoop()
	}
}

// queue appends bytes produced by fn to the outbound buffer and wakes the
// writer. Idle connections write at once.
func (c *client) queue(fn func([]byte) []byte) {
	c.mu.Lock()
	if c.kick == nil {
		b := fn(nil)
		c.nc.SetWriteDeadline(time.Now().Add(c.r.cfg.ConnectTimeout))
		_, err := c.nc.Write(b)
		c.mu.Unlock()
		if err != nil {
			c.failed(err)
		}
		return
	}
	c.out = fn(c.out)
	c.mu.Unlock()
	c.wakeWriter()
}

func (c *client) wakeWriter() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// outLen returns the number of bytes waiting to be written.
func (c *client) outLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out)
}

// writeLoop sends whatever has been queued each time it is woken, and a
// last time when quit is closed.
func (c *client) writeLoop() {
	defer close(c.written)
	for {
		select {
		case <-c.kick:
		case <-c.quit:
			c.flush()
			return
		}
		if !c.flush() {
			return
		}
	}
}

// flush writes the outbound buffer until it is empty, and reports whether
// the connection is still usable. Two buffers alternate: one is written
// while the other collects new packets.
func (c *client) flush() bool {
	for {
		c.mu.Lock()
		if len(c.out) == 0 {
			c.mu.Unlock()
			return !c.dead.Load()
		}
		buf := c.out
		c.out = c.spare[:0]
		c.mu.Unlock()
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		c.spare = buf[:0]
		c.mu.Unlock()
		select {
		case c.room <- struct{}{}:
		default:
		}
		if err != nil {
			c.failed(err)
			return false
		}
	}
}

// failed records a connection failure unless the runner is closing it, and
// wakes whoever waits on the connection.
func (c *client) failed(err error) {
	if c.dead.Swap(true) {
		return
	}
	if !c.closing.Load() {
		c.r.fail(fmt.Errorf("%s: %w", c.id, err))
	}
	c.nc.Close()
	if c.kick != nil {
		c.wakeWriter()
	}
	if c.pub != nil {
		c.pub.wakeUp()
	}
}

// close sends DISCONNECT (giving the writer a second to send what is
// queued), closes the connection and waits for its goroutines to end.
func (c *client) close() {
	c.closing.Store(true)
	if !c.dead.Load() {
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		c.queue(func(b []byte) []byte {
			b, _ = (&packets.Disconnect{}).Encode(b, c.version)
			return b
		})
	}
	if c.quit != nil {
		c.quitOnce.Do(func() { close(c.quit) })
		<-c.written
	}
	c.dead.Store(true)
	c.nc.Close()
	c.routines.Wait()
}

// readLoop handles incoming packets until the connection ends.
func (c *client) readLoop() {
	defer c.routines.Done()
	for {
		h, body, err := c.next()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || c.closing.Load() {
				c.dead.Store(true)
				return
			}
			c.failed(err)
			return
		}
		if err := c.handle(h, body); err != nil {
			c.failed(err)
			return
		}
		if c.br.Buffered() == c.skip && c.kick != nil && c.outLen() > 0 {
			c.wakeWriter()
		}
	}
}

func (c *client) handle(h packets.FixedHeader, body []byte) error {
	switch h.Type {
	case packets.PUBLISH:
		if err := c.publish.Decode(h, body, c.version); err != nil {
			return err
		}
		if c.sub == nil {
			return errors.New("bench: PUBLISH on a connection that did not subscribe")
		}
		c.sub.receive(&c.publish)
		switch c.publish.QoS {
		case 1:
			c.appendAck(&packets.Puback{PacketID: c.publish.PacketID})
		case 2:
			c.appendAck(&packets.Pubrec{PacketID: c.publish.PacketID})
		}
		return nil
	case packets.PUBREL:
		if err := (*packets.Pubrel)(&c.ack).Decode(h, body, c.version); err != nil {
			return err
		}
		c.appendAck(&packets.Pubcomp{PacketID: c.ack.PacketID})
		return nil
	case packets.PUBACK, packets.PUBREC, packets.PUBCOMP:
		if err := decodeAck(&c.ack, h, body, c.version); err != nil {
			return err
		}
		if c.pub == nil {
			return fmt.Errorf("bench: %s on a connection that does not publish", h.Type)
		}
		return c.pub.acknowledged(h.Type, &c.ack)
	case packets.SUBACK:
		var ack packets.Suback
		if err := ack.Decode(h, body, c.version); err != nil {
			return err
		}
		select {
		case c.subAck <- ack.ReasonCodes:
		default:
		}
		return nil
	case packets.PINGRESP:
		return nil
	case packets.DISCONNECT:
		var d packets.Disconnect
		d.Decode(h, body, c.version)
		return fmt.Errorf("bench: server sent DISCONNECT: %w", d.ReasonCode)
	}
	return fmt.Errorf("bench: unexpected %s from the server", h.Type)
}

func decodeAck(a *packets.Ack, h packets.FixedHeader, body []byte, v byte) error {
	switch h.Type {
	case packets.PUBACK:
		return (*packets.Puback)(a).Decode(h, body, v)
	case packets.PUBREC:
		return (*packets.Pubrec)(a).Decode(h, body, v)
	}
	return (*packets.Pubcomp)(a).Decode(h, body, v)
}

// appendAck queues an acknowledgement; the read loop wakes the writer once
// it has handled everything buffered.
func (c *client) appendAck(p packets.Packet) {
	c.mu.Lock()
	c.out, _ = p.Encode(c.out, c.version)
	c.mu.Unlock()
}

// subscribe sends SUBSCRIBE and waits for the SUBACK within the connect
// timeout. The read loop must be running.
func (c *client) subscribe(filter string, qos byte) error {
	c.queue(func(b []byte) []byte {
		s := packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: qos}}}
		b, _ = s.Encode(b, c.version)
		return b
	})
	return c.waitSubAck()
}

func (c *client) waitSubAck() error {
	t := time.NewTimer(c.r.cfg.ConnectTimeout)
	defer t.Stop()
	select {
	case codes := <-c.subAck:
		if len(codes) != 1 || codes[0].IsError() {
			return fmt.Errorf("bench: subscription refused: %v", codes)
		}
		return nil
	case <-t.C:
		return errors.New("bench: no SUBACK in time")
	}
}

// ping sends PINGREQ.
func (c *client) ping() {
	if c.dead.Load() {
		return
	}
	c.queue(func(b []byte) []byte {
		b, _ = (&packets.Pingreq{}).Encode(b, c.version)
		return b
	})
}
