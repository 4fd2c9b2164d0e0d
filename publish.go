package tern

import (
	"strings"
	"sync"
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
	s.stats.MessagesReceived.Add(1)
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
				t, ok := c.aliasesIn[a]
				if !ok {
					return &packets.Error{Code: packets.ProtocolError, Msg: "unknown topic alias"} // [MQTT-3.3.2-?]
				}
				pk.Topic = t
			} else {
				if c.aliasesIn == nil {
					c.aliasesIn = make(map[uint16]string)
				}
				c.aliasesIn[a] = strings.Clone(pk.Topic) // do not pin the message's buffer
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
		_, dup := ss.inQoS2[pk.PacketID]
		persistent := ss.persistentLocked()
		if !dup && len(ss.inQoS2) >= int(cfg.ReceiveMaximum) {
			ss.mu.Unlock()
			return &packets.Error{Code: packets.ReceiveMaximumExceeded, Msg: "receive maximum exceeded"} // [MQTT-3.3.4-7]
		}
		ss.mu.Unlock()
		if dup {
			// Already received and routed: acknowledge again, deliver once
			// [MQTT-4.3.3-11]. The first PUBREC may still wait for its
			// commit: this one waits too.
			c.sendAck(packets.PUBREC, pk.PacketID, packets.Success, persistent)
			return nil
		}
	}

	code := packets.Success
	durable := false
	inbound := false // the QoS 2 packet id is recorded
	if !s.hooks.authorize(c, pk.Topic, Write) {
		code = packets.NotAuthorized
	} else {
		for _, h := range s.hooks.interceptors {
			if err := h.OnPublish(c, pk); err != nil {
				code = packets.CodeOf(err)
				if !code.IsError() || !code.ValidFor(packets.PUBACK) {
					code = packets.UnspecifiedError
				}
				break
			}
		}
	}
	if code.IsError() {
		s.stats.PublishDenied.Add(1)
		s.log.Debug("publish refused", "client", c.id, "topic", pk.Topic, "reason", code.String())
		if len(s.hooks.drops) > 0 {
			s.dropped(c.id, newMessage(pk, c.id, time.Now()), DropNotAuthorized)
		} else {
			s.stats.MessagesDropped.Add(1)
		}
	} else {
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
			durable = c.receivedQoS2(pk.PacketID)
			inbound = true
		}
		m := newMessage(pk, c.id, c.rd.at) // the time of the read: no clock read per message
		n := s.route(m)
		if inbound {
			s.persist.release()
		}
		if n == 0 {
			code = packets.NoMatchingSubscribers
		}
		durable = durable || s.persist.touched(m)
		for _, h := range s.hooks.publishes {
			h.OnPublished(c, m)
		}
	}
	if c.version != packets.V5 {
		// 3.1.1 has no negative acknowledgement: a refused message is
		// acknowledged and dropped, as Mosquitto does.
		code = packets.Success
	}

	switch pk.QoS {
	case 1:
		c.sendAck(packets.PUBACK, pk.PacketID, code, durable)
	case 2:
		if !code.IsError() && !inbound {
			// A 3.1.1 refusal is acknowledged as a success and completed
			// like one. An error PUBREC ends the exchange [MQTT-4.3.3-?].
			durable = c.receivedQoS2(pk.PacketID) || durable
		}
		c.sendAck(packets.PUBREC, pk.PacketID, code, durable)
	}
	return nil
}

// receivedQoS2 records the packet id of a QoS 2 PUBLISH awaiting PUBREL,
// in the store too for a persistent session, and reports whether it went
// to the store.
func (c *Client) receivedQoS2(id uint16) bool {
	ss := c.sess
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.inQoS2 == nil {
		ss.inQoS2 = make(map[uint16]struct{})
	}
	ss.inQoS2[id] = struct{}{}
	if !ss.persistentLocked() {
		return false
	}
	ss.srv.persist.change(func(b storage.Batch) { b.PutInbound(ss.id, id) })
	return true
}

// checkRates charges a PUBLISH to the client's rate limits. A client over a
// limit is disconnected: 0x96 Message rate too high for the packet rate,
// 0x97 Quota exceeded for the byte rate.
func (c *Client) checkRates(pk *packets.Publish) error {
	cfg := c.srv.cfg
	if cfg.MaxPublishRate > 0 && !c.rate.take(1, cfg.MaxPublishRate, cfg.MaxPublishRate, c.rd.at) {
		c.srv.stats.RateLimited.Add(1)
		c.srv.log.Warn("client over max publish rate: disconnecting", "client", c.id, "remote", c.remote, "max_publish_rate", cfg.MaxPublishRate)
		return &packets.Error{Code: packets.MessageRateTooHigh, Msg: "publish rate limit"}
	}
	if r := cfg.MaxPublishBytesRate; r > 0 {
		n := float64(len(pk.Topic) + len(pk.Payload))
		if !c.byteRate.take(n, r, max(r, float64(cfg.MaxPacketSize)), c.rd.at) {
			c.srv.stats.RateLimited.Add(1)
			c.srv.log.Warn("client over max publish bytes rate: disconnecting", "client", c.id, "remote", c.remote, "max_publish_bytes_rate", r)
			return &packets.Error{Code: packets.QuotaExceeded, Msg: "publish bandwidth limit"}
		}
	}
	return nil
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

// sendAck sends a publisher's acknowledgement: at once, or, when the
// message went to the store or an earlier acknowledgement is still
// waiting, once the store has committed, in the order the PUBLISH packets
// came [MQTT-4.6.0-2]. If the commit fails the connection is closed
// instead: nothing is acknowledged that was not stored.
//
// A PUBCOMP that releases a stored packet identifier waits for an fsync in
// either durability mode: the client reuses the identifier at once, and a
// release lost in a crash would make the broker take the next message
// with it for a resend of the old one and drop it.
func (c *Client) sendAck(t packets.Type, id uint16, code packets.ReasonCode, durable bool) {
	p := c.srv.persist
	if p == nil || !durable && c.acksWaiting.Load() == 0 {
		c.lock()
		c.writeAckLocked(t, id, code)
		c.unlock()
		return
	}
	register := p.after
	if t == packets.PUBCOMP && durable {
		register = p.afterDurable
	}
	c.acksWaiting.Add(1)
	register(func(err error) {
		if err != nil {
			c.acksWaiting.Add(-1)
			c.disconnect(packets.ImplementationSpecificError)
			return
		}
		c.lock()
		c.writeAckLocked(t, id, code)
		c.acksWaiting.Add(-1) // only once written, so no later ack can overtake it
		c.unlock()
	})
}

// route delivers a message to the retained store and every matching
// subscription and returns how many sessions it went to.
func (s *Server) route(m *Message) int {
	if m.Retain {
		s.storeRetained(m)
	}
	res := s.index.Match(m.Topic)
	n := s.routeSubscriptions(m, res.Subscriptions)
	for _, g := range res.Shared {
		if s.routeShared(m, g, "") {
			n++
		}
	}
	return n
}

// storeRetained keeps, replaces or deletes (empty payload) the retained
// message of the topic [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-7].
func (s *Server) storeRetained(m *Message) {
	s.retainMu.Lock() // so the replaced message is known, for the store
	defer s.retainMu.Unlock()
	old, had := s.retained.Get(m.Topic)
	if len(m.Payload) == 0 {
		if had && s.retained.Delete(m.Topic) {
			s.stats.Retained.Add(-1)
			if s.persistRetained(m.Topic, nil, old) {
				// The clear went to the store: the PUBACK waits for it.
				m.stored.Store(true)
			}
		}
		return
	}
	if !had {
		s.stats.Retained.Add(1)
	}
	s.retained.Set(m.Topic, m)
	s.persistRetained(m.Topic, m, old)
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
func (s *Server) routeSubscriptions(m *Message, subs []*topics.Subscription) int {
	if len(subs) == 0 {
		return 0
	}
	rs := routeScratchPool.Get().(*routeScratch)
	for _, sub := range subs {
		if sub.NoLocal && sub.ClientID == m.Origin { // [MQTT-3.8.3-3]
			continue
		}
		d := s.deliveryFor(m, sub)
		if i := rs.find(sub.ClientID, len(subs)); i >= 0 {
			rs.ds[i].merge(d)
			continue
		}
		rs.add(sub.ClientID, d, len(subs))
	}
	n := 0
	for i, d := range rs.ds {
		if s.deliver(rs.ids[i], d, false) {
			n++
		}
	}
	rs.reset()
	routeScratchPool.Put(rs)
	return n
}

// routeScratch collects one delivery per client while routing a message.
type routeScratch struct {
	ids []string
	ds  []delivery
	idx map[string]int // used when there are many subscriptions
}

var routeScratchPool = sync.Pool{New: func() any { return new(routeScratch) }}

const linearRouteLimit = 16

func (rs *routeScratch) find(id string, n int) int {
	if n > linearRouteLimit {
		if i, ok := rs.idx[id]; ok {
			return i
		}
		return -1
	}
	for i, x := range rs.ids {
		if x == id {
			return i
		}
	}
	return -1
}

func (rs *routeScratch) add(id string, d delivery, n int) {
	if n > linearRouteLimit {
		if rs.idx == nil {
			rs.idx = make(map[string]int)
		}
		rs.idx[id] = len(rs.ids)
	}
	rs.ids = append(rs.ids, id)
	rs.ds = append(rs.ds, d)
}

func (rs *routeScratch) reset() {
	clear(rs.ids)
	clear(rs.ds)
	rs.ids, rs.ds = rs.ids[:0], rs.ds[:0]
	if len(rs.idx) > 0 {
		clear(rs.idx)
	}
}

// merge folds another matching subscription of the same client into d.
func (d *delivery) merge(o delivery) {
	d.qos = max(d.qos, o.qos)
	d.retain = d.retain || o.retain
	if o.subID != 0 {
		if d.subID != 0 && d.subIDs == nil {
			d.subIDs = []uint32{d.subID}
		}
		if d.subIDs != nil {
			d.subIDs = append(d.subIDs, o.subID)
		} else {
			d.subID = o.subID
		}
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

// deliver hands a delivery to the session of clientID. With authorizers
// added, a delivery to a network client they deny (Deliver) is skipped,
// counted in DeliveriesDenied, and deliver reports false.
func (s *Server) deliver(clientID string, d delivery, force bool) bool {
	if s.inline.handles(clientID) {
		s.inline.deliver(clientID, d)
		return true
	}
	ss := s.session(clientID)
	if ss == nil {
		return false
	}
	if len(s.hooks.authorizers) > 0 && !s.deliverable(ss, d.msg) {
		s.stats.DeliveriesDenied.Add(1)
		return false
	}
	ss.enqueue(d, force)
	return true
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
	return s.hooks.authorize(c, m.Topic, Deliver)
}

// routeShared delivers m to one member of a shared group, round-robin among
// the members that are online, skipping the client exclude and members
// the authorizers deny it to (Deliver). It falls back to an offline member
// when none is online.
func (s *Server) routeShared(m *Message, g *topics.SharedGroup, exclude string) bool {
	n := uint32(len(g.Members))
	start := g.Next()
	var fallback *topics.Subscription
	denied := false
	for i := uint32(0); i < n; i++ {
		sub := g.Members[(start+i)%n]
		if sub.ClientID == exclude {
			continue
		}
		if sub.NoLocal && sub.ClientID == m.Origin {
			continue
		}
		if len(s.hooks.authorizers) > 0 && !s.inline.handles(sub.ClientID) {
			// A member the authorizers deny the message to is passed over.
			if ss := s.session(sub.ClientID); ss != nil && !s.deliverable(ss, m) {
				denied = true
				continue
			}
		}
		if s.inline.handles(sub.ClientID) || s.online(sub.ClientID) {
			d := s.deliveryFor(m, sub)
			d.share = g
			return s.deliver(sub.ClientID, d, false)
		}
		if fallback == nil {
			fallback = sub
		}
	}
	if fallback != nil {
		d := s.deliveryFor(m, fallback)
		d.share = g
		return s.deliver(fallback.ClientID, d, false)
	}
	if denied {
		s.stats.DeliveriesDenied.Add(1)
	}
	return false
}

func (s *Server) online(clientID string) bool {
	ss := s.session(clientID)
	if ss == nil {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.client != nil && !ss.client.closing && !ss.client.closed.Load()
}

// redeliverShared sends messages a departed member of a shared group did
// not acknowledge to another member of the group.
func (s *Server) redeliverShared(from string, ds []delivery) {
	for _, d := range ds {
		var group *topics.SharedGroup
		for _, g := range s.index.Match(d.msg.Topic).Shared {
			if g.Name == d.share.Name && g.Filter == d.share.Filter {
				group = g
				break
			}
		}
		if group == nil || !s.routeShared(d.msg, group, from) {
			if d.qos > 0 {
				s.dropped(from, d.msg, DropSessionEnded)
			}
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
// be gone), subject to the authorizers as that client.
func (s *Server) publishWill(c *Client, m *Message) {
	if c == nil { // a will restored from the store
		c = &Client{srv: s, id: m.Origin, fd: -1}
	}
	clientID := c.id
	if !s.hooks.authorize(c, m.Topic, Write) {
		s.log.Info("will refused by ACL", "client", clientID, "topic", m.Topic)
		return
	}
	s.stats.WillsSent.Add(1)
	s.route(m)
	for _, h := range s.hooks.wills {
		h.OnWillSent(clientID, m)
	}
}
