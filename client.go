package tern

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
)

// Client is one network connection of an MQTT client. Hooks receive it;
// its accessors are safe to call from any goroutine.
type Client struct {
	srv      *Server
	conn     net.Conn
	listener string
	remote   string

	// Set by the CONNECT handshake, read-only afterwards.
	id          string
	username    string
	version     byte
	cleanStart  bool
	keepAlive   uint16
	sess        *session
	connectedAt time.Time
	sendQuota   int    // most QoS 1/2 messages unacknowledged towards the client
	maxPacket   int    // the client's Maximum Packet Size; 0 = no limit
	aliasMaxOut uint16 // the client's Topic Alias Maximum
	problemInfo bool   // the client's Request Problem Information
	authMethod  string
	will        atomic.Pointer[packets.Will]
	willDelay   uint32

	// Owned by the reading goroutine (which may change while the
	// connection is parked, see park_linux.go).
	rd        packetReader
	aliasesIn map[uint16]string
	rate      tokenBucket // PUBLISH packets, for MaxPublishRate
	byteRate  tokenBucket // PUBLISH bytes, for MaxPublishBytesRate
	fd        int         // descriptor for the idle poller, or -1

	// Guarded by the poller's lock.
	pollRegistered bool
	parkDeadline   int64 // unix nanoseconds when a parked connection's keep alive runs out; 0 = none
	reauthing      bool  // a re-authentication awaits the client's AUTH 0x18

	// Guarded by sess.mu (before the session is attached, by the handshake).
	out        []byte  // bytes waiting to be written
	outBuf     *[]byte // the pooled buffer behind out, nil when there is none
	flushing   bool
	closing    bool // write what is in out, then close
	aliasesOut map[string]uint16
	resend     []uint16 // inflight ids of a resumed session still to be sent again, oldest first
	subIDBuf   [1]uint32
	needSync   bool // out holds packets that may go only once the store has committed

	acksWaiting atomic.Int32 // publisher acknowledgements waiting for a commit
	events      []hookEvent  // hook calls to make once the lock is released

	stopping atomic.Bool // the server is ending the connection: ignore further packets

	// established is set once the handshake is complete; from then on the
	// fields it set may be read from any goroutine that has seen it set
	// (see inspect.go).
	established atomic.Bool

	closed     atomic.Bool
	disconnErr atomic.Pointer[error]
}

// ID returns the client identifier.
func (c *Client) ID() string { return c.id }

// Username returns the user name the client connected with.
func (c *Client) Username() string { return c.username }

// RemoteAddr returns the client's network address.
func (c *Client) RemoteAddr() string { return c.remote }

// Listener returns the ID of the listener the client connected through.
func (c *Client) Listener() string { return c.listener }

// ProtocolVersion returns 3 (MQTT 3.1), 4 (3.1.1) or 5.
func (c *Client) ProtocolVersion() byte { return c.version }

// IsInline reports whether c is the server's in-process client.
func (c *Client) IsInline() bool { return c.conn == nil && c.listener == inlineListener }

// Conn returns the client's network connection, for hooks that need TLS
// state; do not read from or write to it.
func (c *Client) Conn() net.Conn { return c.conn }

// ConnectedAt returns when the client's session was established.
func (c *Client) ConnectedAt() time.Time { return c.connectedAt }

// Errors that end connections.
var (
	errKeepAlive      = &packets.Error{Code: packets.KeepAliveTimeout, Msg: "keep alive timeout"}
	errClientDisconn  = errors.New("tern: client disconnected")
	errUnexpectedPack = &packets.Error{Code: packets.ProtocolError, Msg: "unexpected packet type"}
)

// kickLocked starts the writer if it is not running.
func (c *Client) kickLocked() {
	if !c.flushing && !c.closed.Load() {
		c.flushing = true
		c.srv.goTracked(c.flush)
	}
}

// lock locks the client's session (or nothing before it has one).
func (c *Client) lock() {
	if c.sess != nil {
		c.sess.mu.Lock()
	}
}

func (c *Client) unlock() {
	if c.sess != nil {
		c.sess.mu.Unlock()
	}
}

// flush is the writer: it moves queued messages into the output buffer as
// the inflight window allows and writes the buffer, many packets per write,
// until there is nothing left; then it ends. An idle client has no writer
// and holds no write buffer.
//
// Two pooled buffers take turns: while the writer writes one without the
// lock, others append to the other.
func (c *Client) flush() {
	s := c.srv
	var mine *[]byte       // the buffer this goroutine owns between writes
	var deadline time.Time // the write deadline in force
	for {
		if mine == nil {
			mine = writeBufs.Get().(*[]byte)
		}
		now := time.Now()
		c.lock()
		// Nothing from the queue before the CONNACK is in the buffer, and
		// nothing for a closed connection.
		if c.established.Load() && c.sess != nil && c.sess.client == c && !c.closed.Load() {
			c.fillLocked(now.UnixNano())
		}
		if len(c.out) == 0 {
			c.flushing = false
			closing := c.closing
			c.releaseBuffersLocked()
			events := c.takeEventsLocked()
			c.unlock()
			writeBufs.Put(mine)
			c.fire(events)
			if closing {
				c.shutdownWrite()
			}
			return
		}
		events := c.takeEventsLocked()
		full := c.outBuf
		*full = c.out // keep the array if appends grew it
		*mine = (*mine)[:0]
		c.outBuf, c.out = mine, *mine
		needSync := c.needSync
		c.needSync = false
		c.unlock()
		c.fire(events)
		if needSync {
			// QoS 2 handovers in this buffer must be durable (fsync'd, in
			// either mode) before they are on the wire, so a restart cannot
			// deliver a message twice.
			if err := s.persist.waitDurable(); err != nil {
				c.closeWith(err)
			}
		}

		// Moving the deadline reads the clock and updates a timer: do it
		// only when a quarter of the timeout has gone by.
		if now.Add(s.cfg.WriteTimeout - s.cfg.WriteTimeout/4).After(deadline) {
			deadline = now.Add(s.cfg.WriteTimeout)
			c.conn.SetWriteDeadline(deadline)
		}
		n, err := c.conn.Write(*full)
		s.stats.BytesSent.Add(int64(n))
		mine = nil
		if cap(*full) <= maxPooledCap {
			mine = full
		}
		if err != nil {
			c.lock()
			c.flushing = false
			c.out = c.out[:0]
			c.releaseBuffersLocked()
			c.unlock()
			if mine != nil {
				writeBufs.Put(mine)
			}
			c.closeWith(err)
			return
		}
	}
}

// ensureOutLocked gives the client an output buffer from the pool.
func (c *Client) ensureOutLocked() {
	if c.outBuf == nil {
		c.outBuf = writeBufs.Get().(*[]byte)
		c.out = (*c.outBuf)[:0]
	}
}

func (c *Client) releaseBuffersLocked() {
	if c.outBuf != nil {
		if cap(c.out) <= maxPooledCap {
			*c.outBuf = c.out[:0]
			writeBufs.Put(c.outBuf)
		}
		c.outBuf = nil
	}
	c.out = nil
}

// shutdownWrite ends a connection the server is closing: the write side is
// shut so the client reads everything sent, including a DISCONNECT, and the
// reader drains for a moment before the connection closes.
func (c *Client) shutdownWrite() {
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		return
	}
	c.conn.Close()
}

// closeWith closes the connection at once, recording why.
func (c *Client) closeWith(err error) {
	if err != nil {
		c.disconnErr.CompareAndSwap(nil, &err)
	}
	if c.closed.CompareAndSwap(false, true) {
		taken := poller.take(c)
		c.conn.Close()
		if taken {
			go c.resume() // the reader ends the connection
		}
	}
}

// disconnect ends the connection with a reason: v5 clients get a
// DISCONNECT with the code first. What is already queued to be written is
// written first.
func (c *Client) disconnect(code packets.ReasonCode) {
	err := error(code)
	c.disconnErr.CompareAndSwap(nil, &err)
	c.stopping.Store(true)
	if !c.established.Load() { // still in its handshake: just close
		c.closeWith(err)
		return
	}
	c.lock()
	defer c.unlock()
	if c.closing || c.closed.Load() {
		return
	}
	c.closing = true
	if c.version == packets.V5 && c.sess != nil {
		pk := packets.Disconnect{ReasonCode: code}
		c.ensureOutLocked()
		c.out, _ = pk.Encode(c.out, packets.V5)
	}
	if c.sess == nil {
		c.closeWith(err)
		return
	}
	c.kickLocked()
	c.wakeReader()
}

// wakeReader resumes reading on a parked connection, so that it sees the
// end the server is giving it.
func (c *Client) wakeReader() {
	if poller.take(c) {
		go c.resume()
	}
}

// writeLocked encodes a packet into the output buffer and wakes the writer.
func (c *Client) writeLocked(pk packets.Packet) {
	if c.closing {
		return
	}
	c.ensureOutLocked()
	out, err := pk.Encode(c.out, c.version)
	if err != nil {
		c.srv.log.Error("encoding packet", "client", c.id, "type", pk.Type().String(), "err", err)
		return
	}
	if c.maxPacket > 0 && len(out)-len(c.out) > c.maxPacket {
		return // [MQTT-3.1.2-24]: never send a packet larger than the client allows
	}
	c.out = out
	c.kickLocked()
}

// writeAckLocked encodes a PUBACK, PUBREC, PUBREL or PUBCOMP without
// allocating, and wakes the writer.
func (c *Client) writeAckLocked(t packets.Type, id uint16, code packets.ReasonCode) {
	if c.closing {
		return
	}
	c.ensureOutLocked()
	a := packets.Ack{PacketID: id, ReasonCode: code}
	var out []byte
	var err error
	switch t {
	case packets.PUBACK:
		out, err = (*packets.Puback)(&a).Encode(c.out, c.version)
	case packets.PUBREC:
		out, err = (*packets.Pubrec)(&a).Encode(c.out, c.version)
	case packets.PUBREL:
		out, err = (*packets.Pubrel)(&a).Encode(c.out, c.version)
	default:
		out, err = (*packets.Pubcomp)(&a).Encode(c.out, c.version)
	}
	if err != nil {
		c.srv.log.Error("encoding acknowledgement", "client", c.id, "type", t.String(), "err", err)
		return
	}
	c.out = out
	c.kickLocked()
}

// send writes a packet to the client.
func (c *Client) send(pk packets.Packet) {
	c.lock()
	c.writeLocked(pk)
	c.unlock()
}

// fillLocked moves queued deliveries onto the wire while the inflight window
// has room, up to flushChunk bytes.
func (c *Client) fillLocked(now int64) {
	ss := c.sess
	if !c.resendPendingLocked(now) {
		return // what was inflight goes before anything new
	}
	for ss.q.len() > 0 && len(c.out) < flushChunk && !c.closing {
		d := ss.q.peek()
		if d.msg.expired(now) {
			d := ss.q.pop()
			ss.unaccountLocked(&d)
			ss.forgetLocked(&d)
			c.droppedLocked(d.msg, DropExpired)
			continue
		}
		if d.qos > 0 && len(ss.inflight) >= c.sendQuota {
			return
		}
		dv := ss.q.pop()
		ss.unaccountLocked(&dv)
		var id uint16
		if dv.qos > 0 {
			id = ss.nextPacketIDLocked()
		}
		if !c.writePublishLocked(&dv, id, false, now) {
			ss.forgetLocked(&dv)
			continue
		}
		if ss.storeInflightLocked(&dv, id, false) {
			c.needSync = true
		}
		if dv.qos > 0 {
			ss.seq++
			ss.inflight[id] = &inflightMsg{delivery: dv, id: id, seq: ss.seq}
			c.srv.stats.InflightOut.Add(1)
		}
	}
}

// resendPendingLocked sends again, oldest first and as the send quota
// allows, the messages resendLocked held back. It reports whether none is
// left. Every id in c.resend is in ss.inflight.
func (c *Client) resendPendingLocked(now int64) bool {
	ss := c.sess
	for len(c.resend) > 0 && len(ss.inflight)-len(c.resend) < c.sendQuota && len(c.out) < flushChunk && !c.closing {
		id := c.resend[0]
		c.resend = c.resend[1:]
		if m := ss.inflight[id]; m != nil && !c.writePublishLocked(&m.delivery, id, true, now) {
			delete(ss.inflight, id)
			ss.forgetLocked(&m.delivery)
			c.srv.stats.InflightOut.Add(-1)
		}
	}
	return len(c.resend) == 0
}

// unpendLocked forgets a held-back message the client acknowledged before
// it was sent again (it had received it on the previous connection).
func (c *Client) unpendLocked(id uint16) {
	if i := slices.Index(c.resend, id); i >= 0 {
		c.resend = slices.Delete(c.resend, i, i+1)
	}
}

// writePublishLocked encodes one delivery as a PUBLISH. It reports false
// when the packet would be larger than the client accepts, in which case
// the message is dropped as if delivered [MQTT-3.1.2-25].
func (c *Client) writePublishLocked(d *delivery, id uint16, dup bool, now int64) bool {
	m := d.msg
	pk := packets.Publish{
		Dup:      dup,
		QoS:      d.qos,
		Retain:   d.retain,
		Topic:    m.Topic,
		PacketID: id,
		Payload:  m.Payload,
	}
	var newAlias uint16
	if c.version == packets.V5 {
		if m.Properties != nil {
			pk.Properties = *m.Properties
			pk.Properties.MessageExpiry = m.remainingExpiry(now)
		}
		switch {
		case d.subIDs != nil:
			pk.Properties.SubscriptionIDs = d.subIDs
		case d.subID != 0:
			c.subIDBuf[0] = d.subID
			pk.Properties.SubscriptionIDs = c.subIDBuf[:]
		}
		if c.aliasMaxOut > 0 {
			if a, ok := c.aliasesOut[m.Topic]; ok {
				pk.Topic, pk.Properties.TopicAlias = "", a
			} else if len(c.aliasesOut) < int(c.aliasMaxOut) {
				newAlias = uint16(len(c.aliasesOut) + 1)
				pk.Properties.TopicAlias = newAlias
			}
		}
	}
	if c.maxPacket > 0 && pk.Size(c.version) > c.maxPacket {
		c.droppedLocked(m, DropTooLarge)
		return false
	}
	c.ensureOutLocked()
	out, err := pk.Encode(c.out, c.version)
	if err != nil {
		c.srv.log.Error("encoding PUBLISH", "client", c.id, "err", err)
		return false
	}
	c.out = out
	if newAlias != 0 {
		if c.aliasesOut == nil {
			c.aliasesOut = make(map[string]uint16)
		}
		c.aliasesOut[strings.Clone(m.Topic)] = newAlias // do not pin the message
	}
	c.srv.stats.MessagesSent.Add(1)
	if len(c.srv.hooks.publishes) > 0 {
		c.events = append(c.events, hookEvent{msg: m})
	}
	return true
}

// hookEvent is a delivery or a drop to report to hooks after the session
// lock is released, so that hooks may call back into the server.
type hookEvent struct {
	msg  *Message
	drop DropReason // "" for a delivery
}

// droppedLocked counts a drop now and reports it to hooks later.
func (c *Client) droppedLocked(m *Message, why DropReason) {
	c.srv.countDrop(why)
	if len(c.srv.hooks.drops) > 0 {
		c.events = append(c.events, hookEvent{msg: m, drop: why})
	}
}

func (c *Client) takeEventsLocked() []hookEvent {
	if len(c.events) == 0 {
		return nil
	}
	ev := c.events
	c.events = nil
	return ev
}

// fire reports deliveries and drops to hooks.
func (c *Client) fire(events []hookEvent) {
	s := c.srv
	for _, e := range events {
		if e.drop != "" {
			for _, h := range s.hooks.drops {
				h.OnMessageDropped(c.id, e.msg, e.drop)
			}
			continue
		}
		for _, h := range s.hooks.publishes {
			h.OnDelivered(c.id, e.msg)
		}
	}
}
