package tern

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
)

// Client is one network connection of an MQTT client. Hooks receive it;
// its accessors are safe to call from any goroutine.
type Client struct {
	// The fields are ordered to leave no padding (TestStructSizes): an
	// idle connection is mostly this struct and its session's. Each says
	// what guards it.

	srv      *Server
	conn     net.Conn
	listener string

	// Set by the CONNECT handshake, read-only afterwards.
	id          string
	username    string
	sess        *session
	connectedAt int64 // unix nanoseconds
	connectRead int64 // when the CONNECT was read, unix nanoseconds
	maxPacket   int32 // the client's Maximum Packet Size; 0 = no limit
	sendQuota   int32 // most QoS 1/2 messages unacknowledged towards the client
	keepAlive   uint16
	aliasMaxOut uint16 // the client's Topic Alias Maximum
	version     byte
	cleanStart  bool
	bridge      bool // a 3.x bridge (protocol level with the bridge bit): see bridging.go
	problemInfo bool // the client's Request Problem Information

	reauthing bool // owned by the reader: a re-authentication awaits the client's AUTH 0x18

	// Guarded by the poller's lock.
	isParked       bool
	pollRegistered bool

	flushing bool  // guarded by sess.mu, as the four below
	heapPos  int32 // guarded by the poller's lock: 1 + index in its deadline heap; 0 when not in it

	// Guarded by sess.mu (before the session is attached, by the handshake).
	closing     bool // write what is in out, then close
	needSync    bool // out holds packets that may go only once the store has committed
	wantPage    bool // the writer is to read a page of the session's queue back from the store
	pageStalled bool // reading back made no progress: not again until the writer is kicked

	acksWaiting atomic.Int32 // acknowledgements queued and not yet written

	extra *clientExtra // set by the handshake; nil when the CONNECT had none of it
	will  atomic.Pointer[packets.Will]

	// Owned by the reading goroutine (which may change while the
	// connection is parked, see park_linux.go).
	rd         *packetReader // nil while the connection is parked
	lastPacket int64         // while parked: when the last complete packet came, unix nanoseconds
	in         *clientIn     // nil until a topic alias or a publish rate limit needs it

	parkDeadline int64 // guarded by the poller's lock: unix nanoseconds when a parked connection's keep alive runs out; 0 = none

	// Guarded by sess.mu (before the session is attached, by the handshake).
	out      []byte        // bytes waiting to be written
	outBuf   *[]byte       // the pooled buffer behind out, nil when there is none
	writing  int           // bytes of the buffer being written, not yet taken by the socket
	outWake  chan struct{} // closed when the output drains: the reader waits on it
	outMsgs  int64         // PUBLISH packets encoded, not yet added to Stats (per write)
	outBytes int64         // and their payload bytes
	ox       *clientOut    // nil until the writer's less common state is needed (outExtraLocked)

	fd       int         // descriptor for the idle poller, or -1; owned by the reading goroutine
	stopping atomic.Bool // the server is ending the connection: ignore further packets
	outFull  atomic.Bool // the output is past MaxPendingBytes: the reader waits

	// established is set once the handshake is complete; from then on the
	// fields it set may be read from any goroutine that has seen it set
	// (see inspect.go).
	established atomic.Bool
	closed      atomic.Bool

	values     atomic.Pointer[clientValues] // hooks' values (SetValue); nil until the first
	disconnErr atomic.Pointer[error]

	counts connCounts // messages and bytes in and out (listing.go)
}

// clientOut is the writer's state that an idle connection does not need,
// kept out of the Client (TestStructSizes) and allocated on first use by
// outExtraLocked; guarded by sess.mu, as the Client's output.
type clientOut struct {
	aliasesOut   map[string]uint16
	resend       []uint16        // inflight ids of a resumed session still to be sent again, oldest first
	wantSnapshot *retainedStream // a stream at the queue head that needs its messages
	events       []hookEvent     // hook calls to make once the lock is released
	ackQueue     []*pendingAck   // publisher acknowledgements waiting (see acks.go)
	subIDBuf     [1]uint32
}

// outExtraLocked returns c.ox, allocating it. The caller holds sess.mu
// (before the session is attached: the handshake).
func (c *Client) outExtraLocked() *clientOut {
	if c.ox == nil {
		c.ox = new(clientOut)
	}
	return c.ox
}

// resendingLocked reports whether messages of a resumed session wait to be
// sent again.
func (c *Client) resendingLocked() bool { return c.ox != nil && len(c.ox.resend) > 0 }

// clientIn is the reading goroutine's state that most connections do not
// need: allocated by the first topic alias or rate limited PUBLISH.
type clientIn struct {
	aliases map[uint16]string // topic aliases the client set (v5)
	rates   clientRates       // publish rate limits
}

// inExtra returns c.in, allocating it; for the reading goroutine.
func (c *Client) inExtra() *clientIn {
	if c.in == nil {
		c.in = new(clientIn)
	}
	return c.in
}

// clientExtra is what few CONNECTs carry, kept out of the Client.
type clientExtra struct {
	authMethod string                 // enhanced authentication (v5)
	user       []packets.UserProperty // the CONNECT's user properties (v5)
}

// extras returns c.extra, allocating it; for the handshake only.
func (c *Client) extras() *clientExtra {
	if c.extra == nil {
		c.extra = new(clientExtra)
	}
	return c.extra
}

// authMethod returns the enhanced authentication method the client
// connected with, or "".
func (c *Client) authMethod() string {
	if c.extra == nil {
		return ""
	}
	return c.extra.authMethod
}

// ID returns the client identifier.
func (c *Client) ID() string { return c.id }

// Username returns the user name the client connected with.
func (c *Client) Username() string { return c.username }

// RemoteAddr returns the client's network address ("" for the in-process
// client).
func (c *Client) RemoteAddr() string {
	if c.conn == nil {
		return ""
	}
	return c.conn.RemoteAddr().String()
}

// Listener returns the ID of the listener the client connected through.
func (c *Client) Listener() string { return c.listener }

// ProtocolVersion returns 3 (MQTT 3.1), 4 (3.1.1) or 5.
func (c *Client) ProtocolVersion() byte { return c.version }

// KeepAlive returns the keep alive in force, in seconds: the client's, or
// MaxKeepAlive when that replaced it.
func (c *Client) KeepAlive() uint16 { return c.keepAlive }

// IsInline reports whether c is the server's in-process client.
func (c *Client) IsInline() bool { return c.conn == nil && c.listener == inlineListener }

// Conn returns the client's network connection, for hooks that need TLS
// state or addresses; do not read from or write to it. A plain TCP
// connection is not a *net.TCPConn but a net.Conn of the server's own,
// which lets go of its socket's Go structures while the client is idle.
func (c *Client) Conn() net.Conn { return c.conn }

// ConnectedAt returns when the client's session was established.
func (c *Client) ConnectedAt() time.Time { return time.Unix(0, c.connectedAt) }

// ConnectDuration returns how long the server took to handle the client's
// CONNECT, from reading it to queueing the CONNACK: authentication and
// session set-up, the wait for a session taken over included.
func (c *Client) ConnectDuration() time.Duration {
	return time.Duration(c.connectedAt - c.connectRead)
}

// clientValues holds the values hooks attach to a client.
type clientValues struct {
	mu sync.Mutex
	m  map[any]any
}

// SetValue attaches v to the client under key, for hooks that keep
// something per client (a token's expiry, a cached authorization answer);
// a nil v removes it. Use a key of a type of your own, as with
// context.WithValue. Safe to call from any goroutine.
func (c *Client) SetValue(key, v any) {
	vs := c.values.Load()
	if vs == nil {
		c.values.CompareAndSwap(nil, &clientValues{m: make(map[any]any)})
		vs = c.values.Load()
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if v == nil {
		delete(vs.m, key)
		return
	}
	vs.m[key] = v
}

// Value returns the value attached to the client under key, or nil.
func (c *Client) Value(key any) any {
	vs := c.values.Load()
	if vs == nil {
		return nil
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.m[key]
}

// Errors that end connections.
var (
	errKeepAlive      = &packets.Error{Code: packets.KeepAliveTimeout, Msg: "keep alive timeout"}
	errClientDisconn  = errors.New("tern: client disconnected")
	errUnexpectedPack = &packets.Error{Code: packets.ProtocolError, Msg: "unexpected packet type"}
)

// kickLocked starts the writer if it is not running, and lets it read
// paged deliveries back again.
func (c *Client) kickLocked() {
	c.pageStalled = false
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
	var mine *[]byte // the buffer this goroutine owns between writes, nil when none
	w := progressWriter{conn: c.conn, timeout: s.cfg.WriteTimeout, partial: plainSocket(c.conn), stopBy: &s.stopBy}
	for {
		now := time.Now()
		c.lock()
		c.writing = 0
		// Nothing from the queue before the CONNACK is in the buffer, and
		// nothing for a closed connection.
		if c.established.Load() && c.sess != nil && c.sess.client == c && !c.closed.Load() {
			for {
				c.fillLocked(now.UnixNano())
				if c.wantPage {
					// Paged deliveries read back from the store, outside
					// the lock.
					c.wantPage = false
					c.unlock()
					ok := s.pageIn(c)
					c.lock()
					c.pageStalled = c.pageStalled || !ok
					if c.sess.client != c || c.closed.Load() {
						break
					}
					continue
				}
				if c.ox == nil || c.ox.wantSnapshot == nil {
					break
				}
				st := c.ox.wantSnapshot
				// Retained messages for a stream at the queue head: found
				// outside the lock, since it asks the authorizers.
				c.ox.wantSnapshot = nil
				c.unlock()
				msgs := s.retainedSnapshot(c.sess, st)
				c.lock()
				st.msgs, st.taken = msgs, true
				if c.sess.client != c || c.closed.Load() {
					break
				}
			}
		}
		c.outDrainedLocked()
		if len(c.out) == 0 {
			if c.outMsgs != 0 { // written by another writer's batch... or dropped before: count now
				s.stats.MessagesSent.Add(c.outMsgs)
				c.counts.msgsOut.Add(c.outMsgs)
				s.stats.PublishBytesSent.Add(c.outBytes)
				c.outMsgs, c.outBytes = 0, 0
			}
			c.flushing = false
			closing := c.closing
			c.releaseBuffersLocked()
			events := c.takeEventsLocked()
			c.unlock()
			if mine != nil {
				putWriteBuf(mine)
			}
			c.fire(events)
			if closing {
				c.shutdownWrite()
			}
			return
		}
		events := c.takeEventsLocked()
		if c.outMsgs != 0 {
			s.stats.MessagesSent.Add(c.outMsgs)
			c.counts.msgsOut.Add(c.outMsgs)
			s.stats.PublishBytesSent.Add(c.outBytes)
			c.outMsgs, c.outBytes = 0, 0
		}
		full := c.outBuf
		*full = c.out // keep the array if appends grew it
		if mine == nil {
			mine = getWriteBuf(0)
		}
		*mine = (*mine)[:0]
		c.outBuf, c.out = mine, *mine
		mine = nil
		c.writing = len(*full)
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

		n, err := c.writeOut(&w, *full, now)
		s.stats.BytesSent.Add(int64(n))
		c.counts.bytesOut.Add(int64(n))
		if cap(*full) <= maxPooledCap {
			mine = full // the next buffer to swap in
		}
		if err != nil {
			c.lock()
			c.flushing = false
			c.writing = 0
			c.out = c.out[:0]
			c.releaseBuffersLocked()
			c.outDrainedLocked()
			c.unlock()
			if mine != nil {
				putWriteBuf(mine)
			}
			if isTimeout(err) {
				// The client took nothing for WriteTimeout: reset the
				// connection, so that the kernel drops what it holds for it
				// and the client sees the end at once.
				s.stats.WriteTimeouts.Add(1)
				s.log.Info("write timeout: client not reading", "client", c.id, "remote", c.RemoteAddr(),
					"write_timeout", s.cfg.WriteTimeout.String())
				abortConn(c.conn)
			}
			c.closeWith(err)
			return
		}
	}
}

// writeOut writes b to the connection through w. A connection that let go
// of its socket while parked (idleConn) takes what its socket accepts at
// once without being revived; only for the rest, if any, is it revived.
func (c *Client) writeOut(w *progressWriter, b []byte, now time.Time) (int, error) {
	n := 0
	if dc, ok := c.conn.(interface{ writeDetached([]byte) (int, error) }); ok {
		var err error
		if n, err = dc.writeDetached(b); err != nil || n == len(b) {
			return n, err
		}
		c.ensureLive()
	} else {
		c.ensureLiveTLS(len(b))
	}
	m, err := w.write(b[n:], now)
	return n + m, err
}

// progressWriter writes a connection's output under WriteTimeout, measured
// from the last progress: a write that times out after the socket took
// part of the buffer goes on with the rest (plain sockets only: a TLS or
// WebSocket connection cannot go on after a write timeout).
type progressWriter struct {
	conn     net.Conn
	timeout  time.Duration
	partial  bool          // the connection survives a write timeout
	stopBy   *atomic.Int64 // when set (unix nanoseconds), the last deadline: the server is closing
	deadline time.Time     // the write deadline in force
}

func (w *progressWriter) write(b []byte, now time.Time) (int, error) {
	total := 0
	for {
		if stop := w.stopBy.Load(); stop != 0 {
			if d := time.Unix(0, stop); !d.Equal(w.deadline) {
				w.deadline = d
				w.conn.SetWriteDeadline(d)
			}
		} else if now.Add(w.timeout - w.timeout/4).After(w.deadline) {
			// Moving the deadline reads the clock and updates a timer: do
			// it only when a quarter of the timeout has gone by.
			w.deadline = now.Add(w.timeout)
			w.conn.SetWriteDeadline(w.deadline)
		}
		n, err := w.conn.Write(b)
		total += n
		if err == nil || n == 0 || !w.partial || !isTimeout(err) || w.stopBy.Load() != 0 {
			return total, err
		}
		b = b[n:] // progress: the timeout counts again from now
		now = time.Now()
	}
}

// plainSocket reports whether nc is a TCP or Unix socket with nothing
// above it.
func plainSocket(nc net.Conn) bool {
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn, interface{ setLingerZero() }:
		return true
	}
	return false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// abortConn makes the close of a TCP connection (under any TLS or
// WebSocket layer) a reset: unsent data is discarded instead of kept in
// the kernel for a peer that does not read.
func abortConn(nc net.Conn) {
	for nc != nil {
		switch x := nc.(type) {
		case *net.TCPConn:
			x.SetLinger(0)
			return
		case interface{ setLingerZero() }: // idleConn
			x.setLingerZero()
			return
		case interface{ NetConn() net.Conn }:
			nc = x.NetConn()
		default:
			return
		}
	}
}

// pendingLocked returns what waits to be written to the client, for
// MaxPendingBytes: encoded packets not yet taken by the socket and queued
// QoS 0 messages.
func (c *Client) pendingLocked() int {
	return len(c.out) + c.writing + c.sess.q0Bytes
}

// noteOutputLocked records that a reply was added to the output: past
// MaxPendingBytes the reader stops reading until the client takes its
// output (see waitOutput).
func (c *Client) noteOutputLocked() {
	if len(c.out)+c.writing > c.srv.cfg.MaxPendingBytes && !c.outFull.Load() {
		c.outFull.Store(true)
	}
}

// outDrainedLocked lets the reader go on once the output has fallen to
// half of MaxPendingBytes, and QoS 0 messages be queued again once the
// pending output (queued QoS 0 messages included) has.
func (c *Client) outDrainedLocked() {
	half := c.srv.cfg.MaxPendingBytes / 2
	if ss := c.sess; ss != nil && ss.qos0Full.Load() && ss.client == c && c.pendingLocked() <= half {
		ss.qos0Full.Store(false)
	}
	if c.outFull.Load() && len(c.out)+c.writing <= half {
		c.outFull.Store(false)
		if c.outWake != nil {
			close(c.outWake)
			c.outWake = nil
		}
	}
}

// waitOutput blocks the reader while the client's output is past
// MaxPendingBytes: a client that does not read its replies (acknowledgements,
// SUBACKs, PINGRESPs) is not read from either, so it cannot make the
// server hold more for it. The write timeout ends a client that never
// reads.
func (c *Client) waitOutput() {
	for c.outFull.Load() && !c.closed.Load() {
		c.lock()
		if !c.outFull.Load() {
			c.unlock()
			return
		}
		if c.outWake == nil {
			c.outWake = make(chan struct{})
		}
		ch := c.outWake
		c.unlock()
		t := time.NewTimer(time.Second) // re-check closed now and then
		select {
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// ensureOutLocked gives the client an output buffer from the pools with
// room for about n more bytes: a small one for a control packet, a large
// one (taking over what the small one holds) once messages are written.
func (c *Client) ensureOutLocked(n int) {
	switch {
	case c.outBuf == nil:
		c.outBuf = getWriteBuf(n)
		c.out = (*c.outBuf)[:0]
	case cap(c.out)-len(c.out) < n && cap(c.out) < largeWriteSize:
		b := getWriteBuf(largeWriteSize)
		*b = append((*b)[:0], c.out...)
		old := c.outBuf
		*old = c.out
		putWriteBuf(old)
		c.outBuf, c.out = b, *b
	}
}

func (c *Client) releaseBuffersLocked() {
	if c.outBuf != nil {
		*c.outBuf = c.out
		putWriteBuf(c.outBuf)
		c.outBuf = nil
	}
	c.out = nil
}

// shutdownWrite ends a connection the server is closing: the write side is
// shut so the client reads everything sent, including a DISCONNECT, and the
// reader drains for a moment before the connection closes.
func (c *Client) shutdownWrite() {
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		c.ensureLiveTLS(tlsAlertSize) // for the close_notify
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
		taken := c.srv.poller.take(c)
		c.conn.Close()
		if taken {
			go c.resume() // the reader ends the connection (counted in Server.wg since serveConn)
		}
	}
}

// disconnect ends the connection with a reason: v5 clients get a
// DISCONNECT with the code first. What is already queued to be written is
// written first.
func (c *Client) disconnect(code packets.ReasonCode) bool { return c.disconnectRef(code, "") }

// disconnectRef is disconnect with a Server Reference (property 0x1C) in
// the v5 DISCONNECT when ref is not empty. It reports whether this call
// began the disconnection.
func (c *Client) disconnectRef(code packets.ReasonCode, ref string) bool {
	err := error(code)
	first := c.disconnErr.CompareAndSwap(nil, &err)
	c.stopping.Store(true)
	if !c.established.Load() { // still in its handshake: just close
		c.closeWith(err)
		return first
	}
	c.lock()
	defer c.unlock()
	if c.closing || c.closed.Load() {
		return false
	}
	c.closing = true
	if c.version == packets.V5 && c.sess != nil {
		pk := packets.Disconnect{ReasonCode: code}
		pk.Properties.ServerReference = ref
		c.ensureOutLocked(64 + len(ref))
		c.out, _ = pk.Encode(c.out, packets.V5)
	}
	if c.sess == nil {
		c.closeWith(err)
		return first
	}
	c.kickLocked()
	c.wakeReader()
	return first
}

// wakeReader resumes reading on a parked connection, so that it sees the
// end the server is giving it.
func (c *Client) wakeReader() {
	if c.srv.poller.take(c) {
		go c.resume()
	}
}

// writeLocked encodes a packet into the output buffer and wakes the writer.
func (c *Client) writeLocked(pk packets.Packet) {
	if c.closing {
		return
	}
	c.ensureOutLocked(64)
	out, err := pk.Encode(c.out, c.version)
	if err != nil {
		c.srv.log.Error("encoding packet", "client", c.id, "type", pk.Type().String(), "err", err)
		return
	}
	if c.maxPacket > 0 && len(out)-len(c.out) > int(c.maxPacket) {
		return // [MQTT-3.1.2-24]: never send a packet larger than the client allows
	}
	c.out = out
	c.noteOutputLocked()
	c.kickLocked()
}

// writeAckLocked encodes a PUBACK, PUBREC, PUBREL or PUBCOMP without
// allocating, and wakes the writer.
func (c *Client) writeAckLocked(t packets.Type, id uint16, code packets.ReasonCode) {
	if c.closing {
		return
	}
	c.ensureOutLocked(64)
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
	c.noteOutputLocked()
	c.kickLocked()
}

// send writes a packet to the client.
func (c *Client) send(pk packets.Packet) {
	c.lock()
	c.writeLocked(pk)
	c.unlock()
}

// fillLocked moves queued deliveries onto the wire while the inflight window
// has room, up to flushChunk bytes. A retained stream at the head of the
// queue is expanded one message at a time; one whose messages are not yet
// known is left in c.ox.wantSnapshot for the writer to find without the lock.
func (c *Client) fillLocked(now int64) {
	ss := c.sess
	if !c.resendPendingLocked(now) {
		return // what was inflight goes before anything new
	}
	var freed int64 // memory given back, added to the budget once
	defer func() { c.srv.mem.add(-freed) }()
	if c.wantPageLocked() {
		c.wantPage = true // the writer reads a page back, then fills again
	}
	for ss.q.len() > 0 && len(c.out) < flushChunk && !c.closing {
		var dv delivery
		h := ss.q.peek()
		if st := h.stream(); st != nil {
			if !st.taken {
				c.outExtraLocked().wantSnapshot = st
				return
			}
			if st.next == len(st.msgs) {
				ss.q.pop()
				ss.removeStreamLocked(st)
				continue
			}
			m := st.msgs[st.next]
			qos := min(m.QoS, st.qos)
			if qos > 0 && len(ss.inflight) >= int(c.sendQuota) {
				return
			}
			st.msgs[st.next] = nil
			st.next++
			if m.expired(now) {
				continue
			}
			dv = delivery{msg: m, qos: qos, retain: true, subID: st.subID}
			freed -= ss.srv.mem.hold(m)
			ss.storeQueuedLocked(&dv)
		} else {
			if h.msg.expired(now) {
				d := ss.q.pop()
				ss.unaccountLocked(&d)
				freed += ss.endLocked(&d)
				c.droppedLocked(d.msg, DropExpired)
				continue
			}
			if h.qos > 0 && len(ss.inflight) >= int(c.sendQuota) {
				return
			}
			dv = ss.q.pop()
			ss.unaccountLocked(&dv)
		}
		var id uint16
		if dv.qos > 0 {
			id = ss.nextPacketIDLocked()
		}
		if !c.writePublishLocked(&dv, id, false, now) || dv.qos == 0 {
			freed += ss.endLocked(&dv) // a QoS 0 message is done once encoded
			continue
		}
		if ss.storeInflightLocked(&dv, id, false) {
			c.needSync = true
		}
		ss.seq++
		ss.addInflightLocked(inflightMsg{delivery: dv, id: id, seq: ss.seq})
		c.srv.stats.InflightOut.Add(1)
	}
}

// resendPendingLocked sends again, oldest first and as the send quota
// allows, the messages resendLocked held back. It reports whether none is
// left. Every id in c.ox.resend is in ss.inflight.
func (c *Client) resendPendingLocked(now int64) bool {
	if !c.resendingLocked() {
		return true
	}
	ss, x := c.sess, c.ox
	for len(x.resend) > 0 && len(ss.inflight)-len(x.resend) < int(c.sendQuota) && len(c.out) < flushChunk && !c.closing {
		id := x.resend[0]
		x.resend = x.resend[1:]
		if m, ok := ss.inflight[id]; ok && !c.writePublishLocked(&m.delivery, id, true, now) {
			c.releaseDroppedLocked(&m)
		}
	}
	return len(x.resend) == 0
}

// unpendLocked forgets a held-back message the client acknowledged before
// it was sent again (it had received it on the previous connection).
func (c *Client) unpendLocked(id uint16) {
	if !c.resendingLocked() {
		return
	}
	if i := slices.Index(c.ox.resend, id); i >= 0 {
		c.ox.resend = slices.Delete(c.ox.resend, i, i+1)
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
		case d.subIDList() != nil:
			pk.Properties.SubscriptionIDs = d.subIDList()
		case d.subID != 0:
			x := c.outExtraLocked()
			x.subIDBuf[0] = d.subID
			pk.Properties.SubscriptionIDs = x.subIDBuf[:]
		}
		if c.aliasMaxOut > 0 {
			x := c.outExtraLocked()
			if a, ok := x.aliasesOut[m.Topic]; ok {
				pk.Topic, pk.Properties.TopicAlias = "", a
			} else if len(x.aliasesOut) < int(c.aliasMaxOut) {
				newAlias = uint16(len(x.aliasesOut) + 1)
				pk.Properties.TopicAlias = newAlias
			}
		}
	}
	if c.maxPacket > 0 && pk.Size(c.version) > int(c.maxPacket) {
		c.droppedLocked(m, DropTooLarge)
		return false
	}
	need := len(m.Topic) + len(m.Payload) + 16 // about: the encoder grows the buffer if more
	if m.Properties != nil {
		need += 128
	}
	c.ensureOutLocked(need)
	out, err := pk.Encode(c.out, c.version)
	if err != nil {
		c.srv.log.Error("encoding PUBLISH", "client", c.id, "err", err)
		return false
	}
	c.out = out
	if newAlias != 0 {
		x := c.ox // set above: c.aliasMaxOut > 0
		if x.aliasesOut == nil {
			x.aliasesOut = make(map[string]uint16)
		}
		x.aliasesOut[strings.Clone(m.Topic)] = newAlias // do not pin the message
	}
	c.outMsgs++ // added to Stats once per write
	c.outBytes += int64(len(m.Payload))
	if len(c.srv.hooks.publishes) > 0 {
		x := c.outExtraLocked()
		x.events = append(x.events, hookEvent{msg: m})
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
	c.srv.countDrop(c.sess, why)
	if len(c.srv.hooks.drops) > 0 {
		x := c.outExtraLocked()
		x.events = append(x.events, hookEvent{msg: m, drop: why})
	}
}

func (c *Client) takeEventsLocked() []hookEvent {
	if c.ox == nil || len(c.ox.events) == 0 {
		return nil
	}
	ev := c.ox.events
	c.ox.events = nil
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
