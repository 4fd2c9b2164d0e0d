package tern

import (
	"strings"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/topics"
)

// handlePublish handles a PUBLISH from a client: topic alias, limits,
// authorization, interceptors, routing and the acknowledgement.
func (c *Client) handlePublish(pk *packets.Publish) error {
	s := c.srv
	cfg := s.cfg
	c.rd.inMsgs++ // added to Stats once per read batch: flushCounts
	c.rd.inPayload += int64(len(pk.Payload))
	if err := c.checkRates(pk); err != nil {
		return err
	}
	if c.version == packets.V5 {
		if len(pk.Properties.SubscriptionIDs) > 0 {
			return &packets.Error{Code: packets.ProtocolError, Msg: "subscription identifier from a client"} // [MQTT-3.3.4-6]
		}
		if a := pk.Properties.TopicAlias; a != 0 {
			if a > cfg.topicAliasMaximum {
				return &packets.Error{Code: packets.TopicAliasInvalid, Msg: "topic alias above maximum"} // [MQTT-3.3.2-9]
			}
			if pk.Topic == "" {
				var t string
				ok := false
				if c.in != nil {
					t, ok = c.in.aliases[a]
				}
				if !ok {
					return &packets.Error{Code: packets.ProtocolError, Msg: "unknown topic alias"} // section 3.3.2.3.4: a Protocol Error
				}
				pk.Topic = t
			} else {
				in := c.inExtra()
				if in.aliases == nil {
					in.aliases = make(map[uint16]string)
				}
				in.aliases[a] = strings.Clone(pk.Topic) // do not pin the message's buffer
			}
			pk.Properties.TopicAlias = 0
		}
	}
	if err := topics.ValidateName(pk.Topic); err != nil || c.tooManyLevels(pk.Topic) {
		return &packets.Error{Code: packets.TopicNameInvalid, Msg: "invalid topic name"}
	}
	if pk.QoS > cfg.maxQoS {
		return &packets.Error{Code: packets.QoSNotSupported, Msg: "QoS above maximum"} // [MQTT-3.2.2-11]
	}
	if pk.Retain && !cfg.retainAvailable {
		return &packets.Error{Code: packets.RetainNotSupported, Msg: "retain not available"} // [MQTT-3.2.2-14]
	}
	ss := c.sess
	if pk.QoS == 2 {
		ss.mu.Lock()
		in, dup := ss.inQoS2[pk.PacketID]
		if in.pending && in.again == againNone {
			// Sent again on a new connection while the first one's PUBREC
			// still waited for other nodes: they may never take it, and
			// this PUBREC must not say otherwise.
			in.again = againRemote
		}
		if in.again != againNone {
			ss.inQoS2[pk.PacketID] = inboundQoS2{} // routed again once only
		}
		persistent := ss.persistentLocked()
		if !dup && len(ss.inQoS2) >= int(cfg.ReceiveMaximum) {
			ss.mu.Unlock()
			return &packets.Error{Code: packets.ReceiveMaximumExceeded, Msg: "receive maximum exceeded"} // [MQTT-3.3.4-7]
		}
		ss.mu.Unlock()
		if dup {
			// Already received and routed: acknowledge again, deliver once
			// [MQTT-4.3.3-10]. The first PUBREC may still wait for its
			// commit: this one waits too.
			var remote *Ack
			if in.again != againNone {
				remote = s.routeAgain(c, pk, in)
			}
			c.sendAck(packets.PUBREC, pk.PacketID, packets.Success, persistent, remote)
			return nil
		}
	}

	// A v5 publisher learns that its retained message was refused for the
	// retained limits; others' are delivered, not retained.
	strict := c.version == packets.V5 && pk.QoS > 0
	res := s.admitPublish(c, pk, c.rd.publishedAt()) // the time of the read: no clock read per message
	code, durable, inbound := res.code, false, false
	if code == packets.Success && !res.discarded {
		if refused, err := c.refusePublish(pk); refused {
			return err // the store cannot write: see storehealth.go
		}
		if pk.QoS == 2 {
			// The packet id goes to the store in one commit with every
			// delivery of the message: a PUBLISH resent with DUP after a
			// crash is then either known and delivered, or unknown and not
			// delivered, never known and lost or unknown and delivered
			// again.
			s.persist.hold()
			durable = c.receivedQoS2(pk.PacketID, res.m.Created.UnixNano())
			inbound = true
		}
		s.routePublished(c, pk, &res, strict, inbound && durable)
		r := &res.r
		switch {
		case r.retainRefused && strict:
			code = packets.QuotaExceeded
		case r.queued == 0 && r.full > 0:
			code = packets.QuotaExceeded // it could go nowhere: every queue was full
		case r.queued == 0:
			code = packets.NoMatchingSubscribers
		}
		if inbound && code.IsError() && c.version == packets.V5 {
			// An error PUBREC ends the exchange (section 4.3.3): the id
			// is free again, in the same commit.
			c.forgetQoS2(pk.PacketID)
		} else if inbound && r.ack != nil {
			c.pendingQoS2(pk.PacketID)
		}
		if inbound {
			s.persist.release()
			s.forwardAfterCommit(r.deferred)
		}
		durable = durable || s.persist.touched(res.m)
	}
	if c.version != packets.V5 {
		// 3.1.1 has no negative acknowledgement: a refused message is
		// acknowledged and dropped, as Mosquitto does.
		code = packets.Success
	}

	switch pk.QoS {
	case 1:
		c.sendAck(packets.PUBACK, pk.PacketID, code, durable, res.r.ack)
	case 2:
		if !code.IsError() && !inbound {
			// A 3.1.1 refusal is acknowledged as a success and completed
			// like one. An error PUBREC ends the exchange (section 4.3.3).
			durable = c.receivedQoS2(pk.PacketID, 0) || durable
		}
		c.sendAck(packets.PUBREC, pk.PacketID, code, durable, res.r.ack)
	}
	return nil
}

// inboundQoS2 is the state of an inbound QoS 2 packet id awaiting PUBREL
// (session.inQoS2); the zero value is one received here on a live
// connection.
type inboundQoS2 struct {
	created int64 // the message's creation time, unix nanoseconds; 0 when not known
	again   againMode
	pending bool // its PUBREC waits for other nodes to take the message (cleared once written)
}

// againMode says how a QoS 2 message the client sends again is routed
// again (routeAgain), its packet id having come with the session from the
// store or another node.
type againMode uint8

const (
	againNone   againMode = iota
	againRemote           // restored from the store: its deliveries here were stored with the id; other nodes' targets only
	againAll              // imported from another node (which restarted): where it went is not known here; every target
)

// routeAgain routes again a QoS 2 message the client sent again with a
// packet id it had no PUBREC for, and returns what that PUBREC waits for.
// The id went to the store in one commit with the message's deliveries
// on this server, but the PUBREC also waited for other nodes to take it:
// after a restart they may not have it. Restored from this server's
// store (againRemote), the message goes to other nodes' targets only;
// come with the session from another node that had restored it
// (againAll), to every target, as this server's may not have it either.
// The message keeps its first creation time when the store had it, and
// its deliveries to other nodes say it comes again (Delivery.Again): a
// target that had it gets it twice (unless a duplicate window knows it),
// rather than one that had not never getting it.
func (s *Server) routeAgain(c *Client, pk *packets.Publish, in inboundQoS2) *Ack {
	at := time.Unix(0, in.created)
	if in.created <= 0 {
		at = c.rd.publishedAt()
	}
	res := s.admitPublish(c, pk, at)
	if res.code.IsError() || res.discarded {
		return nil
	}
	// After the store's next commit, as a first routing: the first one's
	// commit may not be made yet (a resend while its PUBREC waits).
	r := s.routeMsg(res.m, routeOpts{acks: true, remote: in.again == againRemote, again: true, afterCommit: true})
	s.forwardAfterCommit(r.deferred)
	s.log.Debug("QoS 2 message sent again after a restart: routed again",
		"client", c.id, "packet_id", pk.PacketID, "topic", pk.Topic, "other_nodes_only", in.again == againRemote, "deliveries", r.queued)
	return r.ack
}

// receivedQoS2 records the packet id of a QoS 2 PUBLISH awaiting PUBREL,
// in the store too for a persistent session with the message's creation
// time (0: none, the message went nowhere), and reports whether it went
// to the store.
func (c *Client) receivedQoS2(id uint16, created int64) bool {
	ss := c.sess
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.inQoS2 == nil {
		ss.inQoS2 = make(map[uint16]inboundQoS2)
	}
	ss.inQoS2[id] = inboundQoS2{created: created}
	if !ss.persistentLocked() {
		return false
	}
	ss.srv.persist.change(func(b storage.Batch) { b.PutInbound(ss.id, id, created) })
	return true
}

// pendingQoS2 marks the inbound QoS 2 packet id as waiting for other nodes
// before its PUBREC: sent again on another connection meanwhile, the
// message is routed to them again (see handlePublish).
func (c *Client) pendingQoS2(id uint16) {
	ss := c.sess
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if in, ok := ss.inQoS2[id]; ok {
		in.pending = true
		ss.inQoS2[id] = in
	}
}

// forgetQoS2 undoes receivedQoS2 for a message refused with an error
// PUBREC.
func (c *Client) forgetQoS2(id uint16) {
	c.sess.mu.Lock()
	defer c.sess.mu.Unlock()
	c.forgetQoS2Locked(id)
}

// forgetQoS2Locked is forgetQoS2 with the session lock held.
func (c *Client) forgetQoS2Locked(id uint16) {
	ss := c.sess
	delete(ss.inQoS2, id)
	if ss.persistentLocked() {
		ss.srv.persist.change(func(b storage.Batch) { b.DeleteInbound(ss.id, id) })
	}
}

// published is what became of a message on the publish path.
type published struct {
	code      packets.ReasonCode // Success, or why it was refused (for a PUBACK or PUBREC)
	err       error              // the interceptor's error, when one refused it
	discarded bool               // an interceptor discarded it quietly
	m         *Message           // the message routed; nil when refused or discarded
	r         routed
}

// publish is the path every message a client publishes takes, over the
// network (handlePublish, which routes between the two halves so that a
// QoS 2 packet id is stored with the deliveries) or in-process (Publish):
// admitPublish, then routePublished. With strict set a retained message
// the retained limits refuse goes nowhere (see route). The caller has
// validated the topic and QoS.
func (s *Server) publish(c *Client, pk *packets.Publish, now time.Time, strict bool) published {
	res := s.admitPublish(c, pk, now)
	if res.code == packets.Success && !res.discarded {
		s.routePublished(c, pk, &res, strict, false)
	}
	return res
}

// admitPublish runs authorization (Write) and the interceptors on a
// message. A refusal is counted and reported to drop observers here.
func (s *Server) admitPublish(c *Client, pk *packets.Publish, now time.Time) (res published) {
	res.code = packets.Success
	if !s.hooks.authorizeRequest(c, AccessRequest{Topic: pk.Topic, Access: Write, QoS: pk.QoS, Retain: pk.Retain}) {
		res.code = packets.NotAuthorized
	} else {
		for _, h := range s.hooks.interceptors {
			err := h.OnPublish(c, pk)
			if err == nil {
				continue
			}
			if err == ErrDiscard {
				res.discarded = true
				return res
			}
			res.err = err
			res.code = packets.CodeOf(err)
			if !res.code.IsError() || !res.code.ValidFor(packets.PUBACK) {
				res.code = packets.UnspecifiedError
			}
			break
		}
	}
	if res.code.IsError() {
		s.stats.PublishDenied.Add(1)
		s.log.Debug("publish refused", "client", c.id, "topic", pk.Topic, "reason", res.code.String())
		if len(s.hooks.drops) > 0 {
			s.dropped(nil, newMessage(pk, c.id, now), DropNotAuthorized)
		} else {
			s.countDrop(nil, DropNotAuthorized)
		}
		return res
	}
	res.m = newMessage(pk, c.id, now)
	return res
}

// routePublished routes an admitted message and tells the observers.
//
// With afterCommit set (a QoS 2 message whose packet id goes to the store
// in the commit being made), the message goes to remote targets only once
// that commit is made (forwardAfterCommit): a server killed before it
// forgets the packet id, and the client's copy sent again after the
// restart is a new message, with a new identity, that the other nodes
// could not tell from the first had they had it.
func (s *Server) routePublished(c *Client, pk *packets.Publish, res *published, strict, afterCommit bool) {
	m := res.m
	res.r = s.routeMsg(m, routeOpts{strict: strict, acks: pk.QoS > 0 && c.conn != nil, afterCommit: afterCommit})
	if !(res.r.retainRefused && strict) {
		for _, h := range s.hooks.publishes {
			h.OnPublished(c, m)
		}
	}
}

// checkRates charges a PUBLISH to the client's rate limits. A client over a
// limit is disconnected: 0x96 Message rate too high for the packet rate,
// 0x97 Quota exceeded for the byte rate.
func (c *Client) checkRates(pk *packets.Publish) error {
	cfg := c.srv.cfg
	if cfg.MaxPublishRate == 0 && cfg.MaxPublishBytesRate == 0 {
		return nil
	}
	rates := &c.inExtra().rates
	if cfg.MaxPublishRate > 0 && !rates.packets.take(1, cfg.MaxPublishRate, cfg.MaxPublishRate, c.rd.at) {
		c.srv.stats.RateLimited.Add(1)
		c.srv.log.Warn("client over max publish rate: disconnecting", "client", c.id, "remote", c.RemoteAddr(), "max_publish_rate", cfg.MaxPublishRate)
		return rateLimited(packets.MessageRateTooHigh, "publish rate limit")
	}
	if r := cfg.MaxPublishBytesRate; r > 0 {
		n := float64(len(pk.Topic) + len(pk.Payload))
		if !rates.bytes.take(n, r, max(r, float64(cfg.MaxPacketSize)), c.rd.at) {
			c.srv.stats.RateLimited.Add(1)
			c.srv.log.Warn("client over max publish bytes rate: disconnecting", "client", c.id, "remote", c.RemoteAddr(), "max_publish_bytes_rate", r)
			return rateLimited(packets.QuotaExceeded, "publish bandwidth limit")
		}
	}
	return nil
}

// clientRates are a client's publish rate limits.
type clientRates struct {
	packets tokenBucket // PUBLISH packets, for MaxPublishRate
	bytes   tokenBucket // PUBLISH bytes, for MaxPublishBytesRate
}

// tokenBucket is a rate limit: tokens refill at rate per second up to
// burst, and each event takes some.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

// take takes n tokens at time now and reports whether there were enough.
func (b *tokenBucket) take(n, rate, burst float64, now time.Time) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else if d := now.Sub(b.last).Seconds(); d > 0 {
		b.tokens = min(burst, b.tokens+d*rate)
	}
	b.last = now
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

// routed is what became of a routed message.
type routed struct {
	queued        int   // sessions, handlers and remote targets it went to
	full          int   // sessions that dropped it for a limit (queue, memory, pending output)
	retainRefused bool  // retained, but over MaxRetainedMessages or MaxRetainedBytes
	charge        int64 // memory the queued deliveries hold, added to the budget at the end
	ack           *Ack  // what the publisher's acknowledgement waits for; nil when nothing
	// deferred are the forwards to remote targets that wait for the
	// store's commit (routeOpts.afterCommit), each holding ack.
	deferred []deferredForward

	drops [numDropReasons]int32 // drops by reason, added to the server's counts at the end
	opts  routeOpts
}

// routeOpts says how to route a message.
type routeOpts struct {
	strict bool // a retained message the retained limits refuse goes nowhere
	acks   bool // a publisher waits for an acknowledgement: remote targets may hold it
	local  bool // this server's own targets only, the retained store untouched: a message from another node
	remote bool // other nodes' targets only, the retained message kept again only if none is newer: see routeAgain
	again  bool // a message sent again (routeAgain): deliveries to other nodes say so (Delivery.Again)
	moved  bool // with local: sessions that moved to another node (draining here) are targets too (InjectParked)
	// afterCommit defers the forwards to remote targets until the store
	// committed what the routing changed (see routePublished).
	afterCommit bool
	// group and filter restrict a local route to one member of that
	// shared group (a message another node chose this one for).
	group, filter string
}

// done adds what the routing of a message changed to the server's counts,
// once for all its deliveries.
func (s *Server) routeDone(r *routed) {
	s.mem.add(r.charge)
	for i, n := range r.drops {
		if n != 0 {
			s.stats.drops[i].Add(int64(n))
		}
	}
}

// route delivers a message to the retained store and every matching
// subscription. With strict set a message the retained store refuses
// goes nowhere; otherwise it is delivered without being retained.
func (s *Server) route(m *Message, strict bool) routed {
	return s.routeMsg(m, routeOpts{strict: strict})
}

// routeMsg routes m as o says: see route and routeOpts.
func (s *Server) routeMsg(m *Message, o routeOpts) routed {
	r := routed{opts: o}
	if m.Retain && o.again {
		s.retainAgain(m, &r)
	} else if m.Retain && !o.local {
		if !s.storeRetained(m) {
			r.retainRefused = true
			if o.strict {
				return r
			}
		} else if !m.sys {
			s.retainedChanged(m, &r)
		}
	}
	res := s.index.Match(m.Topic)
	if o.group == "" {
		s.routeSubscriptions(m, res.Subscriptions, &r)
	}
	for _, g := range res.Shared {
		// A message from another node goes to a shared group only when
		// that node chose this one for the group (group set): it chose a
		// member of every group among all nodes' members.
		if !o.local && o.group == "" || g.Name == o.group && g.Filter == o.filter {
			s.routeShared(m, g, "", &r)
		}
	}
	s.routeDone(&r)
	return r
}

// retainAgain keeps and hands to the RetainObservers again the retained
// message m of a QoS 2 message sent again after a restart (routeAgain):
// its first PUBREC also waited for them (other nodes), which may not have
// had it, and the restart may have put an older message of theirs back
// here. A newer retained message of the topic stays.
func (s *Server) retainAgain(m *Message, r *routed) {
	s.retainMu.Lock()
	cur, had := s.retained.Get(m.Topic)
	s.retainMu.Unlock()
	switch {
	case had && cur.Origin == m.Origin && cur.Created.Equal(m.Created):
		// Still here: the other nodes may not have it.
	case had && !cur.Created.Before(m.Created):
		return // a newer one since
	case !s.storeRetained(m):
		r.retainRefused = true
		return
	}
	if !m.sys {
		s.retainedChanged(m, r)
	}
}

// storeRetained keeps, replaces or deletes (empty payload) the retained
// message of the topic [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-7]. It
// reports false, counting it, when a new or larger message would pass
// MaxRetainedMessages or MaxRetainedBytes; deleting is always possible.
func (s *Server) storeRetained(m *Message) bool {
	s.retainMu.Lock() // so the replaced message is known, for the store
	defer s.retainMu.Unlock()
	old, had := s.retained.Get(m.Topic)
	if len(m.Payload) == 0 {
		if had && s.retained.Delete(m.Topic) {
			s.stats.Retained.Add(-1)
			s.retainedBytes -= int64(old.size())
			if s.persistRetained(m.Topic, nil, old) {
				// The clear went to the store: the PUBACK waits for it.
				m.stored.Store(true)
			}
		}
		return true
	}
	grow := int64(m.size())
	if had {
		grow -= int64(old.size())
	}
	if !m.sys && (!had && s.stats.Retained.Load() >= int64(s.cfg.MaxRetainedMessages) ||
		grow > 0 && s.retainedBytes+grow > s.cfg.MaxRetainedBytes) {
		s.stats.RetainedRefused.Add(1)
		if now := time.Now(); now.Sub(s.retainLog) > dropLogInterval {
			s.retainLog = now
			s.log.Warn("retained message refused: retained limit reached", "client", m.Origin, "topic", m.Topic,
				"retained", s.stats.Retained.Load(), "retained_bytes", s.retainedBytes,
				"max_retained_messages", s.cfg.MaxRetainedMessages, "max_retained_bytes", s.cfg.MaxRetainedBytes)
		}
		return false
	}
	if !had {
		s.stats.Retained.Add(1)
	}
	s.retainedBytes += grow
	s.retained.Set(m.Topic, m)
	s.persistRetained(m.Topic, m, old)
	return true
}

// persistRetained tells the store that topic's retained message is now m
// (nil: none) instead of old (nil: none), and reports whether the store
// changed. $SYS messages are never stored, so they count for neither side.
func (s *Server) persistRetained(topic string, m, old *Message) bool {
	if m != nil && m.sys {
		m = nil
	}
	if old != nil && old.sys {
		old = nil
	}
	if s.persist == nil || m == nil && old == nil {
		return false
	}
	s.persist.retain(topic, m, old)
	return true
}

// routeSubscriptions delivers m to the sessions of the matching non-shared
// subscriptions. A client with several matching subscriptions gets one
// copy at the highest QoS, carrying every subscription identifier
// [MQTT-3.3.4-2], [MQTT-3.3.4-3].
func (s *Server) routeSubscriptions(m *Message, subs []*topics.Subscription, r *routed) {
	// subs is sorted by client: a client's subscriptions are side by side.
	var d delivery
	var target any
	id := ""
	for _, sub := range subs {
		if sub.NoLocal && sub.ClientID == m.Origin { // [MQTT-3.8.3-3]
			continue
		}
		if d.msg != nil && sub.ClientID == id {
			d.merge(s.deliveryFor(m, sub))
			continue
		}
		if d.msg != nil {
			s.deliver(id, target, d, r)
		}
		d, id, target = s.deliveryFor(m, sub), sub.ClientID, sub.Target
	}
	if d.msg != nil {
		s.deliver(id, target, d, r)
	}
}

// merge folds another matching subscription of the same client into d.
func (d *delivery) merge(o delivery) {
	d.qos = max(d.qos, o.qos)
	d.retain = d.retain || o.retain
	if o.subID == 0 {
		return
	}
	switch {
	case d.subID == 0:
		d.subID = o.subID
	case d.ext == nil:
		d.ext = &deliveryExt{subIDs: []uint32{d.subID, o.subID}}
	default:
		d.ext.subIDs = append(d.ext.subIDs, o.subID)
	}
}

// deliveryFor returns the delivery of m to one subscription: QoS downgraded
// to the granted maximum [MQTT-3.8.4-8] and the retain flag cleared unless
// Retain As Published is set [MQTT-3.3.1-12], [MQTT-3.3.1-13].
func (s *Server) deliveryFor(m *Message, sub *topics.Subscription) delivery {
	return delivery{
		msg:    m,
		qos:    min(m.QoS, sub.QoS),
		retain: m.Retain && sub.RetainAsPublished,
		subID:  sub.Identifier,
	}
}

// deliver hands a delivery to its target (a subscription's Target: see
// targets.go), and records the outcome in r. With authorizers added, a
// delivery to a client they deny (Deliver) is skipped and counted in
// DeliveriesDenied.
func (s *Server) deliver(clientID string, t any, d delivery, r *routed) {
	switch x := t.(type) {
	case *session:
		if !r.opts.remote {
			s.deliverSession(x, d, r)
		}
	case *handlerTarget:
		if r.opts.remote {
			return
		}
		s.deliverHandler(x, d)
		r.queued++
	case *remoteTarget:
		if x.skipped(&r.opts, d.msg, d.qos, d.share() != nil) {
			return
		}
		s.forward(x, clientID, d, r)
		r.queued++
	}
}

// deliverSession queues a delivery for a session.
func (s *Server) deliverSession(ss *session, d delivery, r *routed) {
	if d.qos == 0 && ss.qos0Full.Load() || ss.qFull.Load() {
		// The client is not taking its messages: drop without the lock.
		why := DropQueueFull
		if d.qos == 0 && ss.qos0Full.Load() {
			why = DropSlowConsumer
		}
		r.drops[dropIndex(why)]++
		r.full++
		s.sessionDropped(ss, d.msg, why)
		return
	}
	if len(s.hooks.authorizers) > 0 && !s.deliverable(ss, d.msg) {
		s.stats.DeliveriesDenied.Add(1)
		return
	}
	why, dropped := ss.enqueue(d, &r.charge)
	switch why {
	case dropMoved: // the session moved to another node while this was on its way
		s.forward(ss.movedTo(), ss.id, d, r)
		r.queued++
		return
	case dropDuplicate: // it came another way already
		s.stats.DuplicatesSkipped.Add(1)
		r.queued++
		return
	}
	if dropped != d.msg {
		r.queued++
	} else if why.overload() {
		r.full++
	}
	if dropped != nil {
		r.drops[dropIndex(why)]++
		s.sessionDropped(ss, dropped, why)
	}
}

// forward hands a delivery to a remote target. The publisher's
// acknowledgement, when it waits, is made on the first remote that needs
// it and shared by the others.
func (s *Server) forward(rt *remoteTarget, clientID string, d delivery, r *routed) {
	dv := Delivery{Route: rt.route, QoS: d.msg.QoS, Retain: d.msg.Retain}
	if rt.route == "" { // a moved session: what its subscriptions made of it
		dv.ClientID, dv.QoS, dv.Retain, dv.SubID, dv.SubIDs = clientID, d.qos, d.retain, d.subID, d.subIDList()
	}
	if g := d.share(); g != nil {
		dv.Group, dv.Filter = g.Name, g.Filter
	}
	dv.Again = r.opts.again
	var a *Ack
	if r.opts.acks && dv.QoS > 0 {
		if r.ack == nil {
			r.ack = newAck()
		}
		a = r.ack
	}
	if r.opts.afterCommit {
		if a != nil {
			a.Hold() // released once forwarded: the PUBREC waits
		}
		r.deferred = append(r.deferred, deferredForward{r: rt.r, m: d.msg, d: dv, ack: a})
		return
	}
	rt.r.Forward(d.msg, dv, a)
}

// deferredForward is a forward to a remote target waiting for the
// store's commit (routeOpts.afterCommit); ack, when not nil, holds for it.
type deferredForward struct {
	r   Remote
	m   *Message
	d   Delivery
	ack *Ack
}

// forwardAfterCommit makes the forwards fs once the store committed what
// was changed so far, or fails their acknowledgements if it could not.
func (s *Server) forwardAfterCommit(fs []deferredForward) {
	if len(fs) == 0 {
		return
	}
	s.AfterStore(func(err error) {
		for _, f := range fs {
			if err == nil {
				f.r.Forward(f.m, f.d, f.ack)
			}
			if f.ack != nil {
				f.ack.Release(err)
			}
		}
	})
}

// deliverHandler calls an in-process handler, on the routing goroutine; a
// handler that panics is logged, not fatal.
func (s *Server) deliverHandler(h *handlerTarget, d delivery) {
	if d.msg.expired(time.Now().UnixNano()) {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("in-process message handler panicked", "subscriber", h.id, "panic", p)
		}
	}()
	h.h(d.msg)
}

// deliverable asks the authorizers whether m may be delivered to the
// client of session ss, as the client of its last connection. A session
// restored from the store and not connected since has no user name known:
// it is checked as a client with its identifier only. Call it only when
// there are authorizers, with no session lock held.
func (s *Server) deliverable(ss *session, m *Message) bool {
	ss.mu.Lock()
	c := ss.identity
	ss.mu.Unlock()
	if c == nil {
		// A session restored from the store, of an anonymous client (or
		// stored before user names were), whose client has not come back.
		// Its subscriptions were authorized when they were made; deliver
		// rather than drop what the broker already acknowledged.
		return true
	}
	return s.hooks.authorizeRequest(c, AccessRequest{Topic: m.Topic, Access: Deliver, QoS: m.QoS, Retain: m.Retain})
}

// routeShared delivers m to one member of a shared group, skipping the
// client exclude and members the authorizers deny it to (Deliver). It
// tries the members in order from the one a SharedChooser names (by
// default Options.SharedStrategy's choice) and prefers: members here that
// are online (and in-process handlers), then remote members that are
// reachable, then offline members here, then remote members that are not
// reachable. The outcome goes to r.
func (s *Server) routeShared(m *Message, g *topics.SharedGroup, exclude string, r *routed) {
	n := uint32(len(g.Members))
	start := s.hooks.chooseShared(m, g, s.cfg.SharedStrategy)
	var remote, offline, unreachable *topics.Subscription
	denied := false
	for i := uint32(0); i < n; i++ {
		sub := g.Members[(start+i)%n]
		if sub.ClientID == exclude {
			continue
		}
		if sub.NoLocal && sub.ClientID == m.Origin {
			continue
		}
		switch t := sub.Target.(type) {
		case *session:
			if r.opts.remote {
				continue // routed again to other nodes only (routeAgain)
			}
			if len(s.hooks.authorizers) > 0 && !s.deliverable(t, m) {
				// A member the authorizers deny the message to is passed over.
				denied = true
				continue
			}
			if t.online() {
				s.deliver(sub.ClientID, t, s.sharedDelivery(m, sub, g), r)
				return
			}
			if offline == nil {
				offline = sub
			}
		case *handlerTarget:
			if r.opts.remote {
				continue
			}
			s.deliver(sub.ClientID, t, s.sharedDelivery(m, sub, g), r)
			return
		case *remoteTarget:
			switch {
			case t.skipped(&r.opts, m, min(m.QoS, sub.QoS), true):
			case t.r.Reachable():
				if remote == nil {
					remote = sub
				}
			case unreachable == nil:
				unreachable = sub
			}
		}
	}
	for _, sub := range [...]*topics.Subscription{remote, offline, unreachable} {
		if sub != nil {
			s.deliver(sub.ClientID, sub.Target, s.sharedDelivery(m, sub, g), r)
			return
		}
	}
	if denied {
		s.stats.DeliveriesDenied.Add(1)
	}
}

// sharedDelivery returns the delivery of m to a member of the shared group
// g.
func (s *Server) sharedDelivery(m *Message, sub *topics.Subscription, g *topics.SharedGroup) delivery {
	d := s.deliveryFor(m, sub)
	d.ext = &deliveryExt{share: g}
	return d
}

// online reports whether the session has a connection that is not
// closing.
func (ss *session) online() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.client != nil && !ss.client.closing && !ss.client.closed.Load()
}

// redeliverShared sends messages a departed member of a shared group did
// not acknowledge to another member of the group.
func (s *Server) redeliverShared(from *session, ds []delivery) {
	for _, d := range ds {
		share := d.share()
		var group *topics.SharedGroup
		for _, g := range s.index.Match(d.msg.Topic).Shared {
			if g.Name == share.Name && g.Filter == share.Filter {
				group = g
				break
			}
		}
		var r routed
		if group != nil {
			s.routeShared(d.msg, group, from.id, &r)
			s.routeDone(&r)
		}
		if r.queued == 0 && d.qos > 0 {
			s.dropped(from, d.msg, DropSessionEnded)
		}
	}
}

// willMessage turns a will into the message published for it.
func willMessage(clientID string, w *packets.Will) *Message {
	pk := packets.Publish{Topic: w.Topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain, Properties: w.Properties}
	pk.Properties.WillDelay = 0
	return newMessage(&pk, clientID, time.Now())
}

// publishWill publishes the will message of client c (whose connection may
// be gone), subject to the authorizers as that client, and reports whether
// they allowed it.
func (s *Server) publishWill(c *Client, m *Message) bool {
	if c == nil { // a will restored from the store
		c = &Client{srv: s, id: m.Origin, fd: -1}
	}
	clientID := c.id
	if !s.hooks.authorizeRequest(c, AccessRequest{Topic: m.Topic, Access: Write, QoS: m.QoS, Retain: m.Retain}) {
		s.log.Info("will refused by ACL", "client", clientID, "topic", m.Topic)
		return false
	}
	s.stats.WillsSent.Add(1)
	s.route(m, false)
	for _, h := range s.hooks.wills {
		h.OnWillSent(clientID, m)
	}
	return true
}
