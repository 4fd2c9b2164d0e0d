package tern

import (
	"slices"
	"sync"
	"sync/atomic"
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
	qBytes   int                    // what the queued deliveries count towards MaxQueuedBytes
	qQoS0    int                    // queued QoS 0 deliveries
	q0Bytes  int                    // what the queued QoS 0 deliveries count towards MaxPendingBytes
	inflight map[uint16]inflightMsg // by value: no allocation per message sent
	seq      uint64                 // send order of inflight messages
	inQoS2   map[uint16]inboundQoS2 // inbound QoS 2 packet ids awaiting PUBREL
	// The small fields together, leaving no padding (TestStructSizes).
	nextID  uint16
	stored  bool // a session record is in the store
	ended   bool
	streams int32                       // retained streams in the queue
	expiry  uint32                      // session expiry interval, seconds
	bridge  bool                        // the local session of a bridge (see KindBridge)
	idHigh  bool                        // new messages get packet identifiers from the high half (see storage.Session.HighIDs)
	pseq    uint64                      // last storage key given to a delivery
	pg      *pagedQueue                 // the part of the queue that lives only in the store (paging.go); nil when none
	off     *sessionOff                 // timers, a delayed will, where it moved; nil until needed (offLocked)
	limits  atomic.Pointer[queueLimits] // its own queue limits (Server.SetSessionLimits); nil: the server's

	drops    atomic.Pointer[sessionDrops] // messages dropped instead of delivered; nil until the first
	qos0Full atomic.Bool                  // the online client's pending output is full: QoS 0 is dropped without the lock
	qFull    atomic.Bool                  // the queue is full and nothing in it can make room: dropped without the lock

	// offlineSince is when the last connection ended (unix nanoseconds; 0
	// while online or when unknown), for listings. Guarded by mu.
	offlineSince int64
}

// sessionOff is what a session needs once offline or ending, kept out of
// the session (TestStructSizes): an online one has none of it unless it
// was offline before. Guarded by the session's mu; set once, never taken
// away, so that moved may be read without the lock by whoever saw it set.
type sessionOff struct {
	expiryTimer     *time.Timer
	pendingWill     *Message // will waiting for its delay to pass
	pendingWillFrom *Client  // the connection that set it
	willTimer       *time.Timer
	moved           *remoteTarget // set when it ended by moving to another node: where late deliveries go
	recent          *recentSet    // the duplicate window (ExpectDuplicates); nil when none
	lastImport      string        // the Token of the last SessionState imported into it (storage.Session.LastImport)
}

// offLocked returns ss.off, allocating it. The caller holds ss.mu (or
// has the session to itself: a restore).
func (ss *session) offLocked() *sessionOff {
	if ss.off == nil {
		ss.off = new(sessionOff)
	}
	return ss.off
}

// stopTimersLocked stops the expiry and will timers. The caller holds ss.mu.
func (ss *session) stopTimersLocked(expiry, will bool) {
	if o := ss.off; o != nil {
		if expiry && o.expiryTimer != nil {
			o.expiryTimer.Stop()
		}
		if will && o.willTimer != nil {
			o.willTimer.Stop()
		}
	}
}

// takePendingWillLocked returns the delayed will waiting, if any, and the
// connection that set it, and forgets them. The caller holds ss.mu.
func (ss *session) takePendingWillLocked() (*Message, *Client) {
	o := ss.off
	if o == nil {
		return nil, nil
	}
	m, from := o.pendingWill, o.pendingWillFrom
	o.pendingWill, o.pendingWillFrom = nil, nil
	return m, from
}

// movedTo returns where the session moved to, nil when it did not.
func (ss *session) movedTo() *remoteTarget {
	if o := ss.off; o != nil {
		return o.moved
	}
	return nil
}

// inflightMsg is a QoS 1 or 2 message sent and not yet fully acknowledged.
type inflightMsg struct {
	delivery
	id       uint16
	seq      uint64
	released bool // QoS 2: PUBREC received and PUBREL sent
}

func newSession(s *Server, id string) *session {
	ss := &session{srv: s, id: id}
	if l, ok := s.sessionLimits.Load(id); ok {
		ss.limits.Store(l.(*queueLimits))
	}
	return ss
}

// addInflightLocked records a message sent and not yet acknowledged.
func (ss *session) addInflightLocked(m inflightMsg) {
	if ss.inflight == nil {
		ss.inflight = make(map[uint16]inflightMsg)
	}
	ss.inflight[m.id] = m
}

// nextPacketIDLocked returns a packet identifier not in use, from the
// session's half of them: 1-32767, or 32768-65535 with idHigh (a cluster
// node that took over the session of a node that died uses the half that
// node did not, see storage.Session.HighIDs). Only if that half is all in
// flight (MaxInflight above 32,767) does it take one from the other.
func (ss *session) nextPacketIDLocked() uint16 {
	lo, hi := uint16(1), uint16(packetIDHalf-1)
	if ss.idHigh {
		lo, hi = packetIDHalf, 0xFFFF
	}
	for range int(hi-lo) + 1 {
		if ss.nextID < lo || ss.nextID >= hi {
			ss.nextID = lo
		} else {
			ss.nextID++
		}
		if _, used := ss.inflight[ss.nextID]; !used {
			return ss.nextID
		}
	}
	for id := uint16(1); ; id++ {
		if _, used := ss.inflight[id]; !used && id != 0 {
			ss.nextID = id
			return id
		}
	}
}

// packetIDHalf is the first packet identifier of the high half.
const packetIDHalf = 0x8000

// highPacketID reports whether id is in the high half.
func highPacketID(id uint16) bool { return id >= packetIDHalf }

// enqueue adds a delivery to the session's queue and wakes the attached
// connection's writer. It returns "" when the delivery was queued, and
// otherwise why a message was dropped: the new one, or, when it made room
// for the new one, the one dropped (which it also returns). The caller
// counts and reports the drop.
//
// The limits, in the order they apply:
//   - a QoS 0 message for an online client whose pending output (bytes
//     encoded and not yet taken by its socket, plus queued QoS 0 messages)
//     would pass MaxPendingBytes is dropped: slow_consumer;
//   - a session holding MaxQueuedMessages or MaxQueuedBytes applies
//     QueueFullPolicy: queue_full;
//   - with the broker-wide message memory at MaxMessageMemory, a QoS 0
//     message is dropped and a QoS 1 or 2 one makes room as
//     QueueFullPolicy says, in its own session: memory_full.
//
// What the queued delivery costs in memory is added to *charge, for the
// caller to add to the budget once for all the deliveries of a message.
func (ss *session) enqueue(d delivery, charge *int64) (why DropReason, dropped *Message) {
	s := ss.srv
	cfg := s.cfg
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended || ss.pg.isEnding() {
		if ss.movedTo() != nil {
			return dropMoved, d.msg // not a drop: the caller forwards it
		}
		return DropSessionEnded, d.msg
	}
	if ss.off != nil && ss.off.recent != nil { // a duplicate window (ExpectDuplicates)
		if key, ok := ss.dupKeyLocked(&d); ok {
			if ss.seenLocked(key) {
				return dropDuplicate, d.msg // not a drop: the session has it
			}
			defer func() {
				if dropped != d.msg { // the session took it
					ss.recordLocked(key)
				}
			}()
		}
	}
	c := ss.client
	if c == nil && d.qos == 0 && !cfg.queueQoS0Offline {
		return DropOfflineQoS0, d.msg
	}
	size := d.msg.size()
	maxMsgs, maxBytes := cfg.MaxQueuedMessages, cfg.MaxQueuedBytes
	if l := ss.limits.Load(); l != nil {
		maxMsgs, maxBytes = l.maxMessages, l.maxBytes
	}
	switch {
	case d.qos == 0 && c != nil && c.pendingLocked()+size > cfg.MaxPendingBytes:
		why = DropSlowConsumer
		ss.qos0Full.Store(true) // until the writer drains: see Client.outDrainedLocked
	case ss.queuedLocked() >= maxMsgs || ss.qBytes+size > maxBytes:
		why = DropQueueFull
	case ss.pageableLocked(&d) && ss.shouldPageLocked(&d):
		ss.pageOutLocked(&d) // in the store only: nothing held in memory
		return "", nil
	case s.mem.full(d.msg):
		why = DropMemoryFull
	default:
		*charge += ss.pushLocked(d)
		return "", nil
	}
	// Make room by the policy, or drop the new message.
	victim, evicted := ss.makeRoomLocked(d, charge)
	if !evicted {
		if why == DropQueueFull && !ss.dropOldestLocked() && ss.qQoS0 == 0 {
			// Nothing can make room until the queue shrinks: drop
			// without the lock until then (see unaccountLocked).
			ss.qFull.Store(true)
		}
		return why, d.msg
	}
	*charge += ss.pushLocked(d)
	if victim.msg == nil {
		return "", nil // a paged delivery made room: counted already
	}
	return why, victim.msg
}

// makeRoomLocked removes a queued delivery to make room for d, as
// QueueFullPolicy says, and reports whether it did. DropNew: a QoS 1 or 2
// message takes the place of the oldest queued QoS 0 one. DropOldest: the
// oldest queued QoS 0 message goes, or for a QoS 1 or 2 message the oldest
// queued message of any QoS. A QoS 0 message never takes the place of a
// QoS 1 or 2 one.
func (ss *session) makeRoomLocked(d delivery, charge *int64) (delivery, bool) {
	oldest := ss.dropOldestLocked()
	if d.qos == 0 && !oldest {
		return delivery{}, false
	}
	victim, ok := ss.q.removeOldestQoS0()
	if !ok && d.qos > 0 && oldest {
		victim, ok = ss.q.removeOldest()
		if !ok && ss.skipPagedLocked() {
			// The oldest is paged: counted now, reported to hooks when
			// it is read back.
			ss.srv.countDrop(ss, DropQueueFull)
			return delivery{}, true
		}
	}
	if !ok {
		return delivery{}, false
	}
	ss.unaccountLocked(&victim)
	*charge -= ss.endLocked(&victim)
	return victim, true
}

// pushLocked appends a delivery to the queue, stored first if the session
// is persistent and counted towards the session's limits, and returns what
// it costs in memory (see memBudget.hold).
func (ss *session) pushLocked(d delivery) int64 {
	if ss.pageableLocked(&d) && ss.shouldPageLocked(&d) {
		ss.pageOutLocked(&d)
		return 0
	}
	ss.storeQueuedLocked(&d)
	ss.q.push(d)
	ss.accountLocked(&d)
	if c := ss.client; c != nil {
		c.kickLocked()
	}
	return ss.srv.mem.hold(d.msg)
}

// accountLocked counts a delivery just put in the queue towards the
// session's limits.
func (ss *session) accountLocked(d *delivery) {
	n := d.msg.size()
	ss.qBytes += n
	if d.qos == 0 {
		ss.qQoS0++
		ss.q0Bytes += n
	}
}

// unaccountLocked undoes accountLocked for a delivery taken from the
// queue.
func (ss *session) unaccountLocked(d *delivery) {
	if ss.qFull.Load() {
		ss.qFull.Store(false)
	}
	n := d.msg.size()
	ss.qBytes -= n
	if d.qos == 0 {
		ss.qQoS0--
		ss.q0Bytes -= n
	}
}

// endLocked ends a delivery's life in the session, taken from the queue or
// the inflight window: acknowledged, sent at QoS 0, dropped or moved. Its
// store record goes, and it returns the memory it gives back, for the
// caller to take from the budget; finishLocked does that at once.
func (ss *session) endLocked(d *delivery) int64 {
	ss.forgetLocked(d)
	return ss.srv.mem.release(d.msg)
}

// finishLocked is endLocked for a single delivery.
func (ss *session) finishLocked(d *delivery) {
	ss.srv.mem.add(-ss.endLocked(d))
}

// sortedInflightLocked returns the inflight messages in the order they were
// first sent.
func (ss *session) sortedInflightLocked() []inflightMsg {
	out := make([]inflightMsg, 0, len(ss.inflight))
	for _, m := range ss.inflight {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b inflightMsg) int { return int(a.seq - b.seq) })
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
		if m.share() != nil && !m.released && m.qos < 2 {
			delete(ss.inflight, m.id)
			ss.srv.stats.InflightOut.Add(-1)
			ss.finishLocked(&m.delivery)
			out = append(out, m.delivery)
		}
	}
	for i, n := 0, ss.q.len(); i < n; i++ {
		d := ss.q.pop()
		if d.share() != nil {
			ss.unaccountLocked(&d)
			ss.finishLocked(&d)
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
	ss.stopTimersLocked(true, true)
}

// endSessionLocked removes the session: its subscriptions, queue and timers. A pending
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
	// Its paged deliveries are dropped: counted, all of them, and reported
	// to hooks (which need their messages) once s.mu is released, those
	// read back from the store (all, unless it cannot write). Those
	// skipped to make room were counted then: hooks hear of them now.
	pagedDrops := ss.pg.count()
	var paged, skipped []*Message
	pagedIDs := s.takePagedLocked(ss, func(e *storage.QueueEntry, skip bool) { // releases ss.mu for a while
		switch {
		case len(s.hooks.drops) == 0:
		case skip:
			skipped = append(skipped, MessageFromRecord(e.Message))
		default:
			paged = append(paged, MessageFromRecord(e.Message))
		}
	})
	ss.ended = true
	ss.stopTimersLocked(true, true)
	will, from := ss.takePendingWillLocked()
	last := ss.identity
	shared := ss.takeSharedLocked()
	rest := ss.q.drain()
	ss.streams = 0
	for i := range rest {
		if rest[i].msg == nil { // a retained stream
			continue
		}
		ss.unaccountLocked(&rest[i])
		ss.finishLocked(&rest[i])
	}
	for _, m := range ss.inflight {
		ss.finishLocked(&m.delivery)
	}
	s.stats.InflightOut.Add(-int64(len(ss.inflight)))
	ss.inflight = nil
	if ss.stored && s.persist != nil {
		ss.stored = false
		s.persist.change(func(b storage.Batch) { b.DeleteSession(ss.id) })
	}
	s.persist.unrefPaged(pagedIDs) // their deliveries went with the session
	ss.mu.Unlock()

	s.sessions.remove(ss)
	s.stats.ClientsTotal.Add(-1)
	if expired {
		s.stats.ClientsExpired.Add(1)
	}
	gone := s.subscriptionsOf(ss.id)
	n := s.index.UnsubscribeAll(ss.id)
	s.stats.Subscriptions.Add(-int64(n))
	return func() {
		s.filtersRemoved(gone)
		if will != nil {
			s.publishWill(from, will)
		}
		s.redeliverShared(ss, shared)
		for _, d := range rest {
			if d.msg != nil && d.qos > 0 {
				s.dropped(ss, d.msg, DropSessionEnded)
			}
		}
		for _, m := range skipped {
			for _, h := range s.hooks.drops {
				h.OnMessageDropped(ss.id, m, DropQueueFull)
			}
		}
		for _, m := range paged[:min(len(paged), pagedDrops)] {
			s.sessionDropped(ss, m, DropSessionEnded)
		}
		s.stats.drops[dropIndex(DropSessionEnded)].Add(int64(pagedDrops))
		for range pagedDrops - min(len(paged), pagedDrops) {
			ss.countDrop(dropIndex(DropSessionEnded), false)
		}
		for _, h := range s.hooks.sessions {
			h.OnSessionEnded(ss.id)
		}
		s.sessionEnded(ss.id, last)
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
