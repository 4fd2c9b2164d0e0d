package tern

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
)

// parkAfter is how long a connection stays quiet before it gives up its
// reading goroutine and buffers to the idle poller. Short, so that a burst
// of new connections that then sit idle never holds many goroutines; a
// client that publishes less often than this pays a few microseconds per
// packet to be resumed.
const parkAfter = 200 * time.Millisecond

// readLoop reads and handles packets until the connection ends, and
// returns why it ended; or until the connection goes idle and is parked,
// when it returns parked = true and the caller must not touch c again.
func (c *Client) readLoop() (err error, parked bool) {
	var keepAlive time.Duration
	if c.keepAlive > 0 {
		keepAlive = time.Duration(c.keepAlive) * time.Second * 3 / 2 // [MQTT-3.1.2-22]
	}
	start := time.Now() // parking is measured from here at the earliest
	if c.rd.at.IsZero() {
		c.rd.at = start
	}
	if c.rd.pktAt.IsZero() {
		c.rd.pktAt = c.rd.at
	}
	// The read deadline is the keep alive, or sooner the moment to park. It
	// is measured from when bytes last arrived (c.rd.at, read once per
	// read call, not per packet) and moved only when it must come earlier
	// or has fallen deadlineSlack behind: each move reads the clock and
	// updates a timer.
	var deadlineSet time.Time
	defer func() {
		if !parked { // a parked connection belongs to whoever resumes it
			c.flushCounts()
		}
	}()
	for {
		if c.rd.empty() {
			c.flushCounts() // about to wait for the socket: the batch is done
		}
		if !c.stopping.Load() { // stopping: keep the drain deadline
			want := c.readDeadline(keepAlive, c.rd.empty(), start)
			if !want.Equal(deadlineSet) && (want.IsZero() || deadlineSet.IsZero() ||
				want.Before(deadlineSet) || want.Sub(deadlineSet) > deadlineSlack) {
				c.conn.SetReadDeadline(want)
				deadlineSet = want
				if c.stopping.Load() { // raced with shutdownWrite: keep the drain brief
					c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				}
			}
		}
		pk, err := c.readPacket()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !c.stopping.Load() {
				switch {
				case keepAlive > 0 && time.Since(c.rd.pktAt) >= keepAlive:
					// No complete packet for 1.5 times the keep alive, even if
					// part of one arrived [MQTT-3.1.2-24].
					return c.readFailed(err), false
				case c.rd.empty() && c.fd >= 0 && time.Since(c.rd.at) >= parkAfter && time.Since(start) >= parkAfter:
					c.flushCounts() // the batch ends here, before c goes to the poller
					if c.park(keepAlive) {
						return nil, true
					}
					// Not parked (its writer was busy): the next try is
					// parkAfter from now, not a deadline already past.
					start = time.Now()
				}
				// The deadline fell behind the traffic (or parking failed): set
				// a fresh one and go on reading.
				deadlineSet = c.readDeadline(keepAlive, c.rd.empty(), time.Now())
				c.conn.SetReadDeadline(deadlineSet)
				continue
			}
			return c.readFailed(err), false
		}
		if c.stopping.Load() {
			continue // the server is closing this connection: drain, do not act
		}
		err = c.handle(pk)
		releasePacket(pk)
		if err != nil {
			if err == errClientDisconn || err == errStoreRefused {
				return err, false
			}
			return c.protocolFailure(err), false
		}
		if c.closed.Load() {
			return nil, false
		}
		if c.outFull.Load() {
			c.waitOutput() // the client does not read its replies: read nothing more from it
		}
	}
}

// flushCounts adds what the reader counted since the last time to the
// server's Stats, and gives the memory of acknowledged messages back to the
// budget: one shared atomic update each per read batch, not per packet.
func (c *Client) flushCounts() {
	rd := c.rd
	if rd == nil {
		return // parked, or ended: counted already
	}
	if rd.inMsgs != 0 {
		c.srv.stats.MessagesReceived.Add(rd.inMsgs)
		c.counts.msgsIn.Add(rd.inMsgs)
		c.srv.stats.PublishBytesReceived.Add(rd.inPayload)
		rd.inMsgs, rd.inPayload = 0, 0
	}
	if rd.inBytes != 0 {
		c.srv.stats.BytesReceived.Add(rd.inBytes)
		c.counts.bytesIn.Add(rd.inBytes)
		rd.inBytes = 0
	}
	if rd.inAcked != 0 {
		c.srv.stats.InflightOut.Add(-rd.inAcked)
		c.srv.mem.add(-rd.inFreed)
		rd.inAcked, rd.inFreed = 0, 0
	}
}

// deadlineSlack is how far the read deadline may lag behind the traffic
// before it is moved.
const deadlineSlack = 50 * time.Millisecond

// readDeadline returns the read deadline: the keep alive, counted from the
// last complete packet, or sooner, when parking is possible, the moment to
// park: parkAfter past the later of the last bytes and since (so that a
// connection just resumed does not park again at once).
func (c *Client) readDeadline(keepAlive time.Duration, mayPark bool, since time.Time) time.Time {
	var d time.Time
	if keepAlive > 0 {
		d = c.rd.pktAt.Add(keepAlive)
	}
	if mayPark && c.fd >= 0 {
		base := c.rd.at
		if since.After(base) {
			base = since
		}
		if p := base.Add(parkAfter); d.IsZero() || p.Before(d) {
			d = p
		}
	}
	return d
}

// park gives the idle connection to the poller: its buffers go back to the
// pools and its goroutine ends. The poller wakes it when bytes arrive or
// when its keep alive runs out, so the timeout is still enforced.
func (c *Client) park(keepAlive time.Duration) bool {
	c.conn.SetReadDeadline(time.Time{})
	rd := c.rd
	var deadline int64
	if keepAlive > 0 {
		deadline = rd.pktAt.Add(keepAlive).UnixNano()
	}
	c.lastPacket = rd.pktAt.UnixNano()
	c.flushCounts()
	c.shed()
	rd.release()
	c.rd = nil
	trimTLS(c.conn)
	if c.srv.poller.park(c, deadline) {
		putReader(rd) // c belongs to whoever resumes it now
		return true
	}
	c.rd = rd
	c.revive() // it may have been detached; if it cannot be, the next read fails
	c.srv.poller.refused.Add(1)
	return false
}

// shed lets go of what the session and the writer keep for reuse, before
// the connection parks: the ring of an empty queue (a retained stream at
// SUBSCRIBE leaves one of 16 slots, 512 bytes) and the writer's less
// common state when nothing is left in it (outgoing topic aliases are
// kept: the client remembers them).
func (c *Client) shed() {
	ss := c.sess
	if ss == nil {
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.q.releaseEmpty()
	if x := c.ox; x != nil && len(x.aliasesOut) == 0 && len(x.resend) == 0 && x.wantSnapshot == nil &&
		len(x.events) == 0 && len(x.ackQueue) == 0 {
		c.ox = nil
	}
}

// readFailed turns a read or decode error into the connection's end.
func (c *Client) readFailed(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return err
	case errors.As(err, &ne) && ne.Timeout():
		c.lock()
		closing := c.closing
		c.unlock()
		if closing {
			return err
		}
		c.srv.log.Info("keep alive timeout", "client", c.id, "remote", c.RemoteAddr())
		c.disconnect(packets.KeepAliveTimeout)
		if c.version == packets.V5 {
			c.drain() // the DISCONNECT must be written before the close
		}
		return errKeepAlive
	}
	var pe *packets.Error
	if errors.As(err, &pe) {
		return c.protocolFailure(err)
	}
	return err
}

// protocolFailure ends the connection for a bad packet: v5 clients get a
// DISCONNECT with the reason code [MQTT-4.13.1-1]; v3 connections are
// closed.
func (c *Client) protocolFailure(err error) error {
	code := packets.CodeOf(err)
	if !code.IsError() {
		code = packets.ProtocolError
	}
	if _, limit := err.(rateLimitError); !limit { // counted and logged by checkRates
		c.srv.stats.ProtocolErrors.Add(1)
		c.srv.log.Info("closing connection: protocol error", "client", c.id, "remote", c.RemoteAddr(), "err", err)
	}
	if c.version == packets.V5 && packets.DisconnectWithWill != code && code.ValidFor(packets.DISCONNECT) {
		c.disconnect(code)
		c.drain()
	}
	return err
}

// drain reads and discards until the client closes or the drain deadline
// passes, so the client reads our DISCONNECT rather than a reset.
func (c *Client) drain() {
	c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.Copy(io.Discard, c.conn)
}

// handle handles one packet from a connected client.
func (c *Client) handle(pk packets.Packet) error {
	switch p := pk.(type) {
	case *packets.Publish:
		return c.handlePublish(p)
	case *packets.Puback:
		return c.handleAck(p.PacketID, false, packets.PUBACK)
	case *packets.Pubrec:
		if p.ReasonCode.IsError() { // an error PUBREC ends the exchange (section 4.3.3)
			return c.handleAck(p.PacketID, false, packets.PUBREC)
		}
		return c.handlePubrec(p.PacketID)
	case *packets.Pubcomp:
		return c.handleAck(p.PacketID, true, packets.PUBCOMP)
	case *packets.Pubrel:
		return c.handlePubrel(p.PacketID)
	case *packets.Subscribe:
		return c.handleSubscribe(p)
	case *packets.Unsubscribe:
		return c.handleUnsubscribe(p)
	case *packets.Pingreq:
		c.send(&packets.Pingresp{}) // [MQTT-3.12.4-1]
		return nil
	case *packets.Disconnect:
		return c.handleDisconnect(p)
	case *packets.Auth:
		return c.handleAuth(p)
	case *packets.Connect:
		return &packets.Error{Code: packets.ProtocolError, Msg: "second CONNECT"} // [MQTT-3.1.0-2]
	}
	return errUnexpectedPack
}

// handleAck completes an outbound QoS 1 (PUBACK) or QoS 2 (PUBCOMP) message,
// or one the client refused with an error PUBREC.
func (c *Client) handleAck(id uint16, comp bool, t packets.Type) error {
	ss := c.sess
	ss.mu.Lock()
	m, ok := ss.inflight[id]
	if ok && (m.released == comp) && (t != packets.PUBACK || m.qos == 1) {
		c.unpendLocked(id)
		c.rd.inFreed += ss.endLocked(&m.delivery) // given back in flushCounts
		delete(ss.inflight, id)
		c.rd.inAcked++
		if ss.q.len() > 0 || c.resendingLocked() || ss.pg.active() {
			c.kickLocked() // the window has room again
		}
	}
	ss.mu.Unlock()
	return nil // an unknown packet id is ignored, as most brokers do
}

// handlePubrec answers PUBREC with PUBREL [MQTT-4.3.3-4].
func (c *Client) handlePubrec(id uint16) error {
	ss := c.sess
	ss.mu.Lock()
	defer ss.mu.Unlock()
	m, ok := ss.inflight[id]
	code := packets.Success
	if !ok || m.qos != 2 {
		code = packets.PacketIdentifierNotFound
	} else {
		m.released = true
		ss.inflight[id] = m
		c.unpendLocked(id)
		if ss.storeInflightLocked(&m.delivery, id, true) {
			c.needSync = true // PUBREL only once the release is durable
		}
	}
	c.writeAckLocked(packets.PUBREL, id, code)
	return nil
}

// handlePubrel completes an inbound QoS 2 message with PUBCOMP. The
// PUBCOMP frees the packet identifier for a new message at once
// [MQTT-4.3.3-13]: for a persistent session it is sent only once the
// release is durable, so that a restart cannot take the new message for a
// resend of the old one.
func (c *Client) handlePubrel(id uint16) error {
	ss := c.sess
	ss.mu.Lock()
	code := packets.Success
	durable := false
	if _, ok := ss.inQoS2[id]; ok {
		delete(ss.inQoS2, id)
		if ss.persistentLocked() {
			ss.srv.persist.change(func(b storage.Batch) { b.DeleteInbound(ss.id, id) })
			durable = true
		}
	} else {
		code = packets.PacketIdentifierNotFound
	}
	ss.mu.Unlock()
	c.sendAck(packets.PUBCOMP, id, code, durable, nil)
	return nil
}

// handleDisconnect handles the client's DISCONNECT. Only a normal one
// (0x00) discards the will [MQTT-3.14.4-3]: with any other reason, 0x04
// Disconnect with Will Message or an error, it is published
// [MQTT-3.1.2-8]. A v5 client may change its session expiry interval, but
// not from 0 [MQTT-3.14.2-2]: such a DISCONNECT is a Protocol Error, which
// the server answers with DISCONNECT 0x82 and handles as a connection
// closed in error, so the will is published; the expiry stays 0, so the
// session ends with the connection and the messages queued for it are
// dropped (reason session_ended): the client asked for them to be kept
// too late, and only CONNECT can ask.
func (c *Client) handleDisconnect(p *packets.Disconnect) error {
	if e := p.Properties.SessionExpiry; e != nil {
		ss := c.sess
		ss.mu.Lock()
		was := ss.expiry
		if was != 0 {
			ss.expiry = *e
			if m := c.srv.cfg.MaxSessionExpiry; m != 0 && ss.expiry > m {
				ss.expiry = m
			}
		}
		ss.mu.Unlock()
		if was == 0 && *e != 0 {
			return &packets.Error{Code: packets.ProtocolError, Msg: "session expiry set on DISCONNECT after 0 at CONNECT"}
		}
	}
	if p.ReasonCode == packets.Success {
		c.will.Store(nil)
	}
	return errClientDisconn
}

// handleAuth handles re-authentication (section 4.12.1).
func (c *Client) handleAuth(p *packets.Auth) error {
	if c.authMethod() == "" || p.Properties.AuthMethod != c.authMethod() {
		return &packets.Error{Code: packets.ProtocolError, Msg: "AUTH with another method"} // [MQTT-4.12.1-1]
	}
	if p.ReasonCode != packets.ReAuthenticate && p.ReasonCode != packets.ContinueAuthentication {
		return &packets.Error{Code: packets.ProtocolError, Msg: "unexpected AUTH reason"}
	}
	if (p.ReasonCode == packets.ContinueAuthentication) != c.reauthing {
		// 0x18 answers the server's AUTH 0x18, and only it does [MQTT-4.12.0-3].
		return &packets.Error{Code: packets.ProtocolError, Msg: "AUTH out of sequence"}
	}
	h := c.srv.hooks.enhancedFor(c.authMethod())
	if h == nil {
		return &packets.Error{Code: packets.BadAuthenticationMethod, Msg: "method no longer supported"}
	}
	data, code := c.enhancedAuth(h, p.Properties.AuthData, true)
	if code.IsError() {
		c.srv.stats.AuthFailures.Add(1)
		if !code.ValidFor(packets.DISCONNECT) { // 0x86, 0x8C: CONNACK-only codes
			code = packets.NotAuthorized
		}
		return &packets.Error{Code: code, Msg: "re-authentication failed"} // [MQTT-4.12.1-2]
	}
	c.reauthing = code == packets.ContinueAuthentication
	out := &packets.Auth{ReasonCode: code}
	out.Properties.AuthMethod = c.authMethod()
	out.Properties.AuthData = data
	c.send(out)
	return nil
}
