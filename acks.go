package tern

import "github.com/ternmq/tern/packets"

// A publisher's acknowledgements (PUBACK, PUBREC) go in the order of its
// PUBLISH packets [MQTT-4.6.0-2], [MQTT-4.6.0-3], but each may have to wait
// for something first: the store committing what the message changed
// (see persist.go), and remote targets holding it (Remote.Forward, for a
// cluster: the other nodes acknowledging it). An acknowledgement with
// nothing to wait for, behind none that waits, is written at once; the
// others queue in the client's ackQueue until what they wait for is done
// and every one before them is written.

// pendingAck is an acknowledgement waiting in a client's ackQueue.
type pendingAck struct {
	t     packets.Type
	id    uint16
	code  packets.ReasonCode
	waits int   // conditions not yet met; guarded by the session lock
	err   error // the first condition that failed; guarded by the session lock
}

// sendAck sends a publisher's acknowledgement: at once, or, when the
// message went to the store (durable), a remote target holds it (remote
// not nil) or an earlier acknowledgement is still waiting, once all of
// that is done, in the order the PUBLISH packets came. If a condition
// fails (the commit, a remote) the connection is closed instead: nothing
// is acknowledged that was not made safe, and the client sends it again.
func (c *Client) sendAck(t packets.Type, id uint16, code packets.ReasonCode, durable bool, remote *Ack) {
	p := c.srv.persist
	if p == nil {
		durable = false
	}
	if !durable && remote == nil && c.acksWaiting.Load() == 0 {
		c.lock()
		c.writeAckLocked(t, id, code)
		c.unlock()
		return
	}
	e := &pendingAck{t: t, id: id, code: code}
	none := !durable && remote == nil // only behind others
	if durable {
		e.waits++
	}
	if remote != nil {
		e.waits++
	}
	c.acksWaiting.Add(1) // until written, so no later ack can overtake it
	c.lock()
	x := c.outExtraLocked()
	x.ackQueue = append(x.ackQueue, e)
	c.unlock()
	if durable {
		// A PUBCOMP that releases a stored packet identifier waits for an
		// fsync in either durability mode: the client reuses the
		// identifier at once, and a release lost in a crash would make
		// the broker take the next message with it for a resend of the
		// old one and drop it.
		register := p.after
		if t == packets.PUBCOMP {
			register = p.afterDurable
		}
		register(func(err error) { c.ackMet(e, err) })
	}
	if remote != nil {
		remote.fire = func(err error) { c.ackMet(e, err) }
		remote.Release(nil) // the server's own hold, taken by newAck
	}
	if none {
		c.ackMet(nil, nil)
	}
}

// ackMet records that one condition of e was met (err nil) or failed, and
// writes the acknowledgements at the head of the queue that wait for
// nothing more. A nil e only writes.
func (c *Client) ackMet(e *pendingAck, err error) {
	failed := false
	c.lock()
	if e != nil {
		e.waits--
		if err != nil && e.err == nil {
			e.err = err
		}
	}
	n := 0
	var queue []*pendingAck
	if c.ox != nil {
		queue = c.ox.ackQueue
	}
	for _, h := range queue {
		if h.waits > 0 {
			break
		}
		if h.err != nil {
			failed = true
			// No PUBREC goes from here on (the connection closes), and
			// the client sends these messages again: each is taken for
			// a new one and routed again, or a destination that did not
			// get it the first time (a node whose share could not be
			// parked) never would. [MQTT-4.3.3-10] (a resend before
			// PUBREL is not delivered again) is for a message
			// acknowledged with PUBREC. Destinations that got one get it
			// twice.
			if c.sess != nil {
				for _, q := range queue[n:] {
					if q.t == packets.PUBREC {
						c.forgetQoS2Locked(q.id)
					}
				}
			}
			break
		}
		c.writeAckLocked(h.t, h.id, h.code)
		if h.t == packets.PUBREC && c.sess != nil {
			if in, ok := c.sess.inQoS2[h.id]; ok && in.pending {
				in.pending = false // the other nodes have it
				c.sess.inQoS2[h.id] = in
			}
		}
		n++
	}
	if n > 0 {
		clear(queue[:n])
		c.ox.ackQueue = queue[n:]
	}
	c.unlock()
	c.acksWaiting.Add(int32(-n))
	if failed {
		c.disconnect(packets.ImplementationSpecificError)
	}
}
