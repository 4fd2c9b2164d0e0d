package tern

import (
	"slices"
	"sync"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
)

// NeverExpire is the session expiry interval meaning the session never
// expires.
const NeverExpire = 0xFFFFFFFF

// session is the state the server keeps for one client identifier across
// connections: its queue, its inflight window and its QoS 2 receipts. Its
// subscriptions live in the server's index, keyed by the client identifier.
type session struct {
	srv *Server
	id  string

	mu       sync.Mutex
	client   *Client // the attached connection; nil while offline
	identity *Client // the last connection's client: user name and listener for ACL checks while offline
	q        queue
	qBytes   int
	qQoS0    int
	inflight map[uint16]*inflightMsg
	seq      uint64 // send order of inflight messages
	nextID   uint16
	inQoS2   map[uint16]struct{} // inbound QoS 2 packet ids awaiting PUBREL
	expiry   uint32              // session expiry interval, seconds
	pseq     uint64              // last storage key given to a delivery
	stored   bool                // a session record is in the store
	ended    bool
	dropLog  bool // a drop has been logged for this session

	expiryTimer     *time.Timer
	pendingWill     *Message // will waiting for its delay to pass
	pendingWillFrom *Client  // the connection that set it
	willTimer       *time.Timer
}

// inflightMsg is a QoS 1 or 2 message sent and not yet fully acknowledged.
type inflightMsg struct {
	delivery
	id       uint16
	seq      uint64
	released bool // QoS 2: PUBREC received and PUBREL sent
}

func newSession(s *Server, id string) *session {
	return &session{srv: s, id: id, inflight: make(map[uint16]*inflightMsg)}
}

// nextPacketIDLocked returns a packet identifier not in use.
func (ss *session) nextPacketIDLocked() uint16 {
	for {
		ss.nextID++
		if ss.nextID == 0 {
			ss.nextID = 1
		}
		if _, used := ss.inflight[ss.nextID]; !used {
			return ss.nextID
		}
	}
}

// enqueue adds a delivery to the session's queue, applying the queue limits
// unless force is set, and wakes the attached connection's writer.
func (ss *session) enqueue(d delivery, force bool) {
	s := ss.srv
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		s.dropped(ss.id, d.msg, DropSessionEnded)
		return
	}
	if ss.client == nil && d.qos == 0 && !s.cfg.queueQoS0Offline {
		ss.mu.Unlock()
		s.dropped(ss.id, d.msg, DropOfflineQoS0)
		return
	}
	if !force && (ss.q.len() >= s.cfg.MaxQueuedMessages || ss.qBytes+d.msg.size() > s.cfg.MaxQueuedBytes) {
		victim := d
		if d.qos > 0 && ss.qQoS0 > 0 { // make room by dropping the oldest QoS 0
			victim, _ = ss.q.removeOldestQoS0()
			ss.unaccountLocked(&victim)
			ss.forgetLocked(&victim)
			ss.pushLocked(d)
		}
		first := !ss.dropLog
		ss.dropLog = true
		ss.mu.Unlock()
		if first {
			s.log.Warn("session queue full: dropping messages", "client", ss.id,
				"max_queued_messages", s.cfg.MaxQueuedMessages, "max_queued_bytes", s.cfg.MaxQueuedBytes)
		}
		s.dropped(ss.id, victim.msg, DropQueueFull)
		return
	}
	ss.pushLocked(d)
	ss.mu.Unlock()
}

func (ss *session) pushLocked(d delivery) {
	ss.storeQueuedLocked(&d)
	ss.q.push(d)
	ss.qBytes += d.msg.size()
	if d.qos == 0 {
		ss.qQoS0++
	}
	ss.srv.stats.Queued.Add(1)
	if c := ss.client; c != nil {
		c.kickLocked()
	}
}

func (ss *session) unaccountLocked(d *delivery) {
	ss.qBytes -= d.msg.size()
	if d.qos == 0 {
		ss.qQoS0--
	}
	ss.srv.stats.Queued.Add(-1)
}

// sortedInflightLocked returns the inflight messages in the order they were
// first sent.
func (ss *session) sortedInflightLocked() []*inflightMsg {
	out := make([]*inflightMsg, 0, len(ss.inflight))
	for _, m := range ss.inflight {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *inflightMsg) int { return int(a.seq - b.seq) })
	return out
}

// takeSharedLocked removes the deliveries that came through a shared
// subscription and are not yet acknowledged, for redelivery to another
// member of their group. A QoS 2 message already sent stays: it is
// completed with this member when it reconnects [MQTT-4.8.2-4] and goes to
// no other member if the session ends [MQTT-4.8.2-5].
func (ss *session) takeSharedLocked() []delivery {
	var out []delivery
	for _, m := range ss.sortedInflightLocked() {
		if m.share != nil && !m.released && m.qos < 2 {
			delete(ss.inflight, m.id)
			ss.srv.stats.InflightOut.Add(-1)
			ss.forgetLocked(&m.delivery)
			out = append(out, m.delivery)
		}
	}
	for i, n := 0, ss.q.len(); i < n; i++ {
		d := ss.q.pop()
		if d.share != nil {
			ss.unaccountLocked(&d)
			ss.forgetLocked(&d)
			out = append(out, d)
		} else {
			ss.q.push(d)
		}
	}
	return out
}

// stopTimers stops the session's expiry and will timers.
func (ss *session) stopTimers() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.expiryTimer != nil {
		ss.expiryTimer.Stop()
	}
	if ss.willTimer != nil {
		ss.willTimer.Stop()
	}
}

// end removes the session: its subscriptions, queue and timers. A pending
// will is published first [MQTT-3.1.2-8]. The caller holds s.mu.
//
// It returns what remains to do once s.mu is released: publishing the will,
// handing shared messages to other members, reporting drops and calling
// hooks, none of which may run under the server lock.
func (s *Server) endSessionLocked(ss *session, expired bool) (after func()) {
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return func() {}
	}
	ss.ended = true
	if ss.expiryTimer != nil {
		ss.expiryTimer.Stop()
	}
	will, from := ss.pendingWill, ss.pendingWillFrom
	ss.pendingWill, ss.pendingWillFrom = nil, nil
	if ss.willTimer != nil {
		ss.willTimer.Stop()
	}
	shared := ss.takeSharedLocked()
	rest := ss.q.drain()
	for i := range rest {
		ss.unaccountLocked(&rest[i])
		ss.forgetLocked(&rest[i])
	}
	for _, m := range ss.inflight {
		ss.forgetLocked(&m.delivery)
	}
	s.stats.InflightOut.Add(-int64(len(ss.inflight)))
	ss.inflight = nil
	if ss.stored && s.persist != nil {
		ss.stored = false
		s.persist.change(func(b storage.Batch) { b.DeleteSession(ss.id) })
	}
	ss.mu.Unlock()

	s.sessions.CompareAndDelete(ss.id, ss)
	s.stats.ClientsTotal.Add(-1)
	if expired {
		s.stats.ClientsExpired.Add(1)
	}
	n := s.index.UnsubscribeAll(ss.id)
	s.stats.Subscriptions.Add(-int64(n))
	return func() {
		if will != nil {
			s.publishWill(from, will)
		}
		s.redeliverShared(ss.id, shared)
		for _, d := range rest {
			if d.qos > 0 {
				s.dropped(ss.id, d.msg, DropSessionEnded)
			}
		}
		for _, h := range s.hooks.sessions {
			h.OnSessionEnded(ss.id)
		}
	}
}

// expire is the session expiry timer's function.
func (s *Server) expire(ss *session) {
	if s.isClosing() {
		return // the store keeps the session; the next start expires it
	}
	s.mu.Lock()
	ss.mu.Lock()
	online := ss.client != nil
	ss.mu.Unlock()
	after := func() {}
	if !online {
		after = s.endSessionLocked(ss, true)
	}
	s.mu.Unlock()
	after()
}

// dropped counts and reports a message that will not be delivered.
func (s *Server) dropped(clientID string, m *Message, why DropReason) {
	s.countDrop(why)
	for _, h := range s.hooks.drops {
		h.OnMessageDropped(clientID, m, why)
	}
}

func (s *Server) countDrop(why DropReason) {
	s.stats.MessagesDropped.Add(1)
	if why == DropExpired {
		s.stats.MessagesExpired.Add(1)
	}
}

// sessionExpiry returns the session expiry interval a CONNECT asks for,
// capped by MaxSessionExpiry. v3 persistent sessions never expire.
func (s *Server) sessionExpiry(pk *packets.Connect) uint32 {
	var e uint32
	switch {
	case pk.ProtocolVersion == packets.V5:
		if pk.Properties.SessionExpiry != nil {
			e = *pk.Properties.SessionExpiry
		}
	case !pk.CleanStart:
		e = NeverExpire
	}
	if m := s.cfg.MaxSessionExpiry; m != 0 && e > m {
		e = m
	}
	return e
}
