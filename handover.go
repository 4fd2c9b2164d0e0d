package tern

// Sessions that move between servers: the seam a cluster uses when a
// client connects to one node while its session lives on another. The
// node the client connected to asks its SessionGate hooks before it
// attaches the session; a cluster's gate claims the client identifier
// (compare-and-set in a replicated registry), has the old node take the
// session out with ExportSession and puts it in here with ImportSession,
// all before the CONNACK.

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/topics"
)

// SessionGate is asked about every CONNECT that passed authentication,
// before the client's session is looked up and attached: the point where
// a cluster claims the client identifier and brings the session over from
// another node (ImportSession). It runs on the connection's goroutine and
// may block, within its own bounds (a replicated compare-and-set, a
// handover from another node). It returns Success, or the CONNACK error
// code to refuse the client with: 0x88 Server unavailable while the
// session's node cannot be reached, 0x9C Use another server (with
// Client.SetServerReference) while this node is fenced or draining.
type SessionGate interface {
	Hook
	AttachSession(c *Client, cleanStart bool, expiry uint32) packets.ReasonCode
}

// attachGate runs the session gates; it returns Success or the first
// refusal.
func (hs *hookSet) attachGate(c *Client, expiry uint32) packets.ReasonCode {
	for _, g := range hs.sessionGates {
		if code := g.AttachSession(c, c.cleanStart, expiry); code != packets.Success {
			if !code.IsError() || !code.ValidFor(packets.CONNACK) {
				code = packets.ServerUnavailable
			}
			return code
		}
	}
	return packets.Success
}

// CleanStart reports whether the client connected with Clean Start (3.1.1:
// Clean Session).
func (c *Client) CleanStart() bool { return c.cleanStart }

// serverRefKey is the client value holding the Server Reference of a
// refusal.
type serverRefKey struct{}

// SetServerReference sets the MQTT 5 Server Reference (property 0x1C)
// sent with the CONNACK that refuses the client (0x9C Use another server,
// 0x9D Server moved): the address of another node it should use. Call it
// before refusing from a ConnectGate or SessionGate; 3.1.1 clients are not
// told.
func (c *Client) SetServerReference(ref string) { c.SetValue(serverRefKey{}, ref) }

// partialSessionKey is the client value MarkSessionPartial sets.
type partialSessionKey struct{}

// MarkSessionPartial makes the server answer this CONNECT with Session
// Present 0 even though a session is there: call it from a SessionGate
// that rebuilt only part of the client's session (a cluster restores a
// session's subscriptions when the node that held its messages in flight
// is gone). Session Present 1 would tell the client to keep its own
// session state, among it the packet identifiers of QoS 2 messages it
// received and never saw released; the server, not knowing them, would
// reuse them, and the client would take new messages for resends and drop
// them. With 0 the client discards that state; its subscriptions are in
// place (subscribing again is harmless) [MQTT-3.2.2-2].
func (c *Client) MarkSessionPartial() { c.SetValue(partialSessionKey{}, true) }

// serverReference returns the reference set with SetServerReference.
func (c *Client) serverReference() string {
	ref, _ := c.Value(serverRefKey{}).(string)
	return ref
}

// DisconnectAll disconnects every connected client with the reason code
// (sent to MQTT 5 clients; a code that is not a DISCONNECT reason is sent
// as 0x98 Administrative action) and, when ref is not empty, the Server
// Reference ref: with 0x9C Use another server, to move clients to another
// node while this one drains. It returns how many it disconnected. What is
// already queued for a client is written first.
func (s *Server) DisconnectAll(code packets.ReasonCode, ref string) int {
	if !code.ValidFor(packets.DISCONNECT) || !code.IsError() {
		code = packets.AdministrativeAction
	}
	s.mu.Lock()
	clients := make([]*Client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	n := 0
	for _, c := range clients {
		if c.established.Load() && !c.closed.Load() && !c.stopping.Load() {
			c.disconnectRef(code, ref)
			n++
		}
	}
	return n
}

// SessionState is a session on its way from one server to another: what
// ExportSession takes out and ImportSession puts in. It is made of storage
// records, so it travels in their encoding (storage.AppendMessage, ...).
type SessionState struct {
	// Session holds the client identifier, protocol version, expiry
	// interval and user name.
	Session storage.Session
	// Subscriptions are the session's subscriptions.
	Subscriptions []storage.Subscription
	// Messages are the messages Deliveries refer to, by ID (IDs local to
	// this state).
	Messages []storage.Message
	// Deliveries are the QoS 1 and 2 messages in flight (PacketID set; a
	// QoS 2 one Released once PUBREC came) and those queued, oldest
	// first.
	Deliveries []storage.Delivery
	// Inbound are the packet identifiers of QoS 2 messages received from
	// the client and not yet released.
	Inbound []uint16
	// Again holds those of Inbound the session's node restored from its
	// store, or imported so, whose PUBLISH the client did not send again
	// since, with their messages' creation times (unix nanoseconds, 0
	// when not known): a client that never had their PUBREC sends them
	// again, and the server that has the session then routes them again
	// to every target, not knowing which had them.
	Again map[uint16]int64
	// DuplicateWindow, when set, makes ImportSession open a duplicate
	// window of that length on the session (ExpectDuplicates) before its
	// subscriptions and deliveries take effect. It is not exported.
	DuplicateWindow time.Duration
	// Token, when set, names this state (a part of a session a node
	// ships): ImportSession records it with the session (in the store
	// too, after what it imports), and does nothing but return
	// ErrImported when given the token the session recorded last. A node
	// that ships a part again because its request went unanswered (the
	// receiver died after taking it, and restarted) does not deliver it
	// twice. It is not exported.
	Token string
}

// Errors of the handover.
var (
	ErrSessionOnline = errors.New("tern: session is connected here")
	// ErrImported is returned by ImportSession for a state whose Token the
	// session took already.
	ErrImported = errors.New("tern: session state imported already")
	// ErrStoreUnavailable is returned by ExportSession while the store
	// cannot write (see Server.StoreHealth) and part of the session's
	// queue, paged out of memory, is only in a commit waiting for it: the
	// session stays here (offline) and the caller tries again later. It
	// wraps storage.ErrUnavailable.
	ErrStoreUnavailable = fmt.Errorf("tern: %w: paged messages of the session wait for it", storage.ErrUnavailable)
)

// takeOverLocked takes the session old from its connection for a new one
// (cleanStart as the new CONNECT asks), as [MQTT-3.1.4-3] says: the
// existing connection is closed with 0x8E Session taken over and its will
// published unless the session goes on and the will has a delay; a
// pending will is dropped if the session goes on. The caller holds s.mu;
// wills go to afters, to publish once it is released.
func (s *Server) takeOverLocked(old *session, cleanStart bool, by string, afters *[]func()) {
	old.mu.Lock()
	prev := old.client
	old.client = nil
	old.stopTimersLocked(true, false)
	if !cleanStart {
		// A new connection before the will delay passed: no will [MQTT-3.1.3-9].
		if w, _ := old.takePendingWillLocked(); w != nil {
			old.storeWillLocked(nil, time.Time{})
		}
		old.stopTimersLocked(false, true)
	}
	old.mu.Unlock()
	if prev != nil {
		if w := prev.will.Swap(nil); w != nil && (cleanStart || w.Properties.WillDelay == 0) {
			*afters = append(*afters, func() { s.publishWill(prev, willMessage(prev.id, w)) })
		}
		prev.disconnect(packets.SessionTakenOver)
		s.log.Info("session taken over", "client", old.id, "old_remote", prev.RemoteAddr(), "by", by)
	}
}

// ExportSession takes the session of clientID out of this server for
// another node, where its client just connected with cleanStart. Its
// connection here, if any, ends with 0x8E Session taken over, and wills
// go as for a takeover on one server [MQTT-3.1.4-3]. With cleanStart the
// session ends here (a pending will is published [MQTT-3.1.2-8]) and the
// state is nil; otherwise the state is returned and the session removed
// without a will, drops or SessionObserver calls: it lives on elsewhere.
// A nil state and nil error also mean there was no session here. While
// the store cannot write, a session whose paged messages wait for their
// commit is not exported: ErrStoreUnavailable, the session stays here,
// offline, and the caller tries again.
//
// When moved is not nil, the session's subscriptions stay here for drain,
// passing what matches them to moved (Remote.Forward, with
// Delivery.ClientID set) instead of queueing it, so that nothing published
// here while the other nodes learn where the session went is lost; so do
// deliveries already on their way. For the first passOn of drain (until
// StopPassingOn cuts it short) they also pass on the QoS 1/2 messages
// other nodes route here (Inject, InjectTo): those nodes send them to the
// session's new node only once they know its subscriptions there, and
// until then this node is the only one that gets them (the new node gets
// some twice, which a duplicate window drops: ExpectDuplicates). Without
// passOn those are left to the other nodes (a session shipped back long
// after its new node took it over, say). FilterObservers see the filters
// go only after drain.
func (s *Server) ExportSession(clientID string, cleanStart bool, moved Remote, drain, passOn time.Duration) (*SessionState, error) {
	var afters []func()
	defer func() {
		for _, fn := range afters {
			fn()
		}
	}()
	s.mu.Lock()
	old := s.session(clientID)
	if old == nil {
		s.mu.Unlock()
		return nil, nil
	}
	s.takeOverLocked(old, cleanStart, "another node", &afters)
	if cleanStart {
		afters = append(afters, s.endSessionLocked(old, false))
		s.mu.Unlock()
		return nil, nil
	}
	var mt *remoteTarget
	if moved != nil {
		mt = &remoteTarget{r: moved}
		if passOn = min(passOn, drain); passOn > 0 {
			mt.passOn.Store(time.Now().Add(passOn).UnixNano())
		}
	}
	st, err := old.exportLocked(mt, &afters)
	if err != nil {
		old.mu.Lock()
		old.expireLaterLocked() // taken over: offline here
		end := old.expiry == 0
		old.mu.Unlock()
		if end {
			afters = append(afters, s.endSessionLocked(old, false))
		}
		s.mu.Unlock()
		return nil, err
	}
	s.sessions.remove(old)
	s.stats.ClientsTotal.Add(-1)

	var gone []filterKey
	var subs []topics.Subscription
	s.index.ClientSubscriptions(clientID, func(sub *topics.Subscription) bool {
		subs = append(subs, *sub)
		return true
	})
	s.stats.Subscriptions.Add(-int64(len(subs)))
	for i := range subs {
		st.Subscriptions = append(st.Subscriptions, subscriptionRecord(&subs[i]))
	}
	if mt != nil && drain > 0 {
		for _, sub := range subs {
			sub.Target = mt
			s.index.Subscribe(sub)
		}
		time.AfterFunc(drain, func() { s.endDrain(clientID, mt) })
	} else {
		gone = s.subscriptionsOf(clientID)
		s.index.UnsubscribeAll(clientID)
	}
	s.mu.Unlock()
	s.filtersRemoved(gone)
	return st, nil
}

// expireLaterLocked starts the expiry of a session taken over from its
// connection and left here offline (ExportSession that failed): the
// connection's end, which would have, finds the session taken.
func (ss *session) expireLaterLocked() {
	if ss.ended || ss.client != nil {
		return
	}
	if c := ss.identity; c != nil {
		ss.storeSessionLocked(c.version, time.Now())
	}
	if ss.expiry != 0 && ss.expiry != NeverExpire {
		s := ss.srv
		ss.offLocked().expiryTimer = time.AfterFunc(time.Duration(ss.expiry)*time.Second, func() { s.expire(ss) })
	}
}

// StopPassingOn ends, after grace, the passing on of messages from other
// nodes to the session of clientID, which moved to another node (see
// ExportSession): for a cluster that learned that every node routes to
// the session's new node now; grace covers what they routed here before.
func (s *Server) StopPassingOn(clientID string, grace time.Duration) {
	end := time.Now().Add(grace).UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index.ClientSubscriptions(clientID, func(sub *topics.Subscription) bool {
		if t, ok := sub.Target.(*remoteTarget); ok && t.route == "" {
			if v := t.passOn.Load(); v > end {
				t.passOn.CompareAndSwap(v, end)
			}
		}
		return true
	})
}

// endDrain removes the subscriptions a moved session left behind, unless
// the session came back here meanwhile.
func (s *Server) endDrain(clientID string, mt *remoteTarget) {
	var gone []filterKey
	s.mu.Lock()
	s.index.ClientSubscriptions(clientID, func(sub *topics.Subscription) bool {
		if sub.Target == mt {
			gone = append(gone, filterKey{sub.Group, sub.Filter})
		}
		return true
	})
	for _, k := range gone {
		s.index.Unsubscribe(clientID, k.group, k.filter)
	}
	s.mu.Unlock()
	s.filtersRemoved(gone)
}

// exportLocked takes the session's state out and leaves it ended
// (deliveries still on their way go to moved, when not nil). What was
// queued under shared subscriptions moves with the session; retained
// messages still to be sent for a new subscription (a retained stream) do
// not. The caller holds s.mu. Drop hooks for paged deliveries skipped to
// make room go to afters. It fails, changing nothing, while the store
// cannot write and paged deliveries wait for their commit: reading back
// what is committed would leave them out.
func (ss *session) exportLocked(moved *remoteTarget, afters *[]func()) (*SessionState, error) {
	s := ss.srv
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if pq := ss.pg; pq.active() && !s.persist.committedRound(pq.round) && s.persist.health() != nil {
		return nil, ErrStoreUnavailable
	}
	// Read first: the lock is released meanwhile, and deliveries that
	// come then go to moved.
	ss.offLocked().moved = moved
	var paged []storage.QueueEntry
	var skipped []hookEvent
	pagedIDs := s.takePagedLocked(ss, func(e *storage.QueueEntry, skip bool) {
		switch {
		case !skip:
			paged = append(paged, *e)
		case len(s.hooks.drops) > 0:
			skipped = append(skipped, hookEvent{msg: MessageFromRecord(e.Message), drop: DropQueueFull})
		}
	})
	if len(skipped) > 0 {
		*afters = append(*afters, func() { s.fireDrops(ss.id, skipped) })
	}
	st := &SessionState{Session: storage.Session{ClientID: ss.id, Expiry: ss.expiry, HighIDs: ss.idHigh}}
	if c := ss.identity; c != nil {
		st.Session.Username, st.Session.Version = c.username, c.version
	}
	ids := make(map[*Message]uint64)
	add := func(d *delivery, packetID uint16, released bool) {
		id, ok := ids[d.msg]
		if !ok {
			id = uint64(len(ids) + 1)
			ids[d.msg] = id
			r := d.msg.record()
			r.ID = id
			st.Messages = append(st.Messages, *r)
		}
		rec := ss.deliveryRecord(d, packetID, released)
		rec.MessageID, rec.Seq = id, uint64(len(st.Deliveries)+1)
		st.Deliveries = append(st.Deliveries, *rec)
	}
	for _, m := range ss.sortedInflightLocked() {
		add(&m.delivery, m.id, m.released)
		ss.finishLocked(&m.delivery)
	}
	s.stats.InflightOut.Add(-int64(len(ss.inflight)))
	ss.inflight = nil
	for _, d := range ss.q.drain() {
		if d.msg == nil { // a retained stream
			continue
		}
		add(&d, 0, false)
		ss.unaccountLocked(&d)
		ss.finishLocked(&d)
	}
	// Paged deliveries, read back from the store, go after those in
	// memory: they are newer.
	msgs := make(map[*storage.Message]*Message)
	for i := range paged {
		r := paged[i].Message
		m := msgs[r]
		if m == nil {
			m = MessageFromRecord(r)
			msgs[r] = m
		}
		d := queuedDelivery(&paged[i].Delivery, m)
		add(&d, 0, false)
	}
	ss.streams = 0
	for id, in := range ss.inQoS2 {
		st.Inbound = append(st.Inbound, id)
		if in.again != againNone {
			if st.Again == nil {
				st.Again = make(map[uint16]int64)
			}
			st.Again[id] = in.created
		}
	}
	slices.Sort(st.Inbound)
	ss.inQoS2 = nil
	ss.ended = true
	ss.offLocked().moved = moved
	ss.stopTimersLocked(false, true)
	if ss.stored && s.persist != nil {
		ss.stored = false
		s.persist.change(func(b storage.Batch) { b.DeleteSession(ss.id) })
	}
	s.persist.unrefPaged(pagedIDs)
	return st, nil
}

// versionLocked returns the protocol version of the session's client: of
// its connection, or its last one, else def.
func (ss *session) versionLocked(def byte) byte {
	switch {
	case ss.client != nil:
		return ss.client.version
	case ss.identity != nil && ss.identity.version != 0:
		return ss.identity.version
	}
	return def
}

// offlineSinceLocked returns when the session's client went offline for
// its store record: zero while one is attached, now when not known.
func (ss *session) offlineSinceLocked() time.Time {
	switch {
	case ss.client != nil:
		return time.Time{}
	case ss.offlineSince != 0:
		return time.Unix(0, ss.offlineSince)
	}
	return time.Now()
}

// ImportSession puts a session another node exported (ExportSession) into
// this server, offline, for its client that is about to attach: call it
// from a SessionGate. Its subscriptions are made (FilterObservers are
// waited for, so the other nodes route to this one before the CONNACK),
// its messages queued, in-flight ones with their packet identifiers, and
// everything stored when it is persistent. A session of that client
// already here (messages a node shipped late) is merged into: messages are
// appended to its queue; the shipped session's inbound QoS 2 packet
// identifiers are dropped (see below).
func (s *Server) ImportSession(st *SessionState) error {
	id := st.Session.ClientID
	if id == "" || id[0] == 0 {
		return errors.New("tern: importing a session without a client identifier")
	}
	msgs := make(map[uint64]*Message, len(st.Messages))
	for i := range st.Messages {
		msgs[st.Messages[i].ID] = MessageFromRecord(&st.Messages[i])
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	ss := s.session(id)
	fresh := ss == nil
	if !fresh && st.Token != "" {
		ss.mu.Lock()
		taken := ss.off != nil && ss.off.lastImport == st.Token
		ss.mu.Unlock()
		if taken {
			s.mu.Unlock()
			return ErrImported
		}
	}
	if fresh {
		ss = newSession(s, id)
		ss.expiry = st.Session.Expiry
		if st.Session.Username != "" {
			ss.identity = &Client{srv: s, id: id, username: st.Session.Username, version: st.Session.Version, fd: -1}
		}
		s.sessions.put(ss)
		s.stats.ClientsTotal.Add(1)
	}
	if st.DuplicateWindow > 0 {
		ss.mu.Lock()
		ss.expectDuplicatesLocked(st.DuplicateWindow)
		ss.mu.Unlock()
	}
	var subs []topics.Subscription
	var added []filterKey
	for _, r := range st.Subscriptions {
		sub := topics.Subscription{ClientID: id, Group: r.Group, Filter: r.Filter, QoS: r.QoS, NoLocal: r.NoLocal,
			RetainAsPublished: r.RetainAsPublished, RetainHandling: r.RetainHandling, Identifier: r.Identifier, Target: ss}
		old, had := s.index.Get(id, r.Group, r.Filter)
		if !had {
			added = append(added, filterKey{r.Group, r.Filter})
		}
		if !had || targetKind(old.Target) == KindRemote { // new, or replacing what a move left behind
			s.stats.Subscriptions.Add(1)
		}
		s.index.Subscribe(sub)
		subs = append(subs, sub)
	}
	var charge int64
	ss.mu.Lock()
	// The packet identifier half of a session made here, handed over or
	// restored, is the one it comes with; a late ship (no subscriptions)
	// does not change it.
	if high := st.Session.HighIDs; fresh || len(st.Subscriptions) > 0 && high != ss.idHigh {
		ss.idHigh = high
		ss.storeSessionLocked(ss.versionLocked(st.Session.Version), ss.offlineSinceLocked())
	}
	for _, r := range st.Deliveries {
		m := msgs[r.MessageID]
		if m == nil {
			continue
		}
		d := queuedDelivery(&r, m)
		_, used := ss.inflight[r.PacketID]
		otherHalf := r.PacketID != 0 && !used && !fresh && highPacketID(r.PacketID) != ss.idHigh
		key, check := ss.dupKeyLocked(&d)
		if check && ss.seenLocked(key) {
			s.stats.DuplicatesSkipped.Add(1)
			if !otherHalf || r.QoS != 2 {
				continue // it came another way already (ExpectDuplicates)
			}
			// The client may hold its packet identifier from the node
			// that sent it: only released (a PUBREL), not sent again.
			r.Released = true
		}
		if check {
			ss.recordLocked(key)
		}
		// In flight with its packet identifier: into a session made here
		// now, or one here already (a late ship) if the identifier is of
		// the other half than this session's: the node that sent it died,
		// and this one took the session over with Session Present 1 and
		// the other half (storage.Session.HighIDs), so the client may
		// still hold the identifier. Sent again with it, a QoS 2 message
		// the client received already is not delivered twice
		// [MQTT-4.3.3-10]; a released one gets its PUBREL.
		if r.PacketID != 0 && !used && (fresh && ss.client == nil || otherHalf) {
			ss.storeQueuedLocked(&d)
			ss.storeInflightLocked(&d, r.PacketID, r.Released)
			ss.seq++
			im := inflightMsg{delivery: d, id: r.PacketID, seq: ss.seq, released: r.Released}
			ss.addInflightLocked(im)
			if fresh {
				ss.nextID = max(ss.nextID, r.PacketID)
			}
			s.stats.InflightOut.Add(1)
			charge += s.mem.hold(m)
			if c := ss.client; c != nil && c.established.Load() {
				c.sendAgainLocked(&im) // before that, the CONNACK's resend sends it
			}
			continue
		}
		if r.Released {
			continue // received by the client already: its PUBREL went with the old connection
		}
		charge += ss.pushLocked(d)
	}
	// The packet identifiers of QoS 2 messages the client sent and did not
	// release yet, only into a session made here now: one already here
	// (a late ship) has since seen the client, which released them or
	// dropped them with its session; kept, they would make the client's
	// next messages with those identifiers look like resends, acknowledged
	// and never delivered ([MQTT-4.3.3-10] makes a receiver acknowledge
	// such a resend without delivering it again).
	for _, pid := range st.Inbound {
		if !fresh {
			break
		}
		if ss.inQoS2 == nil {
			ss.inQoS2 = make(map[uint16]inboundQoS2)
		}
		in := inboundQoS2{}
		if created, ok := st.Again[pid]; ok {
			in = inboundQoS2{created: created, again: againAll}
		}
		ss.inQoS2[pid] = in
		if ss.persistentLocked() {
			p := pid
			s.persist.change(func(b storage.Batch) { b.PutInbound(id, p, in.created) })
		}
	}
	if st.Token != "" {
		// After the deliveries: stored in the same commit or a later one.
		ss.offLocked().lastImport = st.Token
		ss.storeSessionLocked(ss.versionLocked(st.Session.Version), ss.offlineSinceLocked())
	}
	if fresh && ss.client == nil && ss.expiry != 0 && ss.expiry != NeverExpire {
		ss.offLocked().expiryTimer = time.AfterFunc(time.Duration(ss.expiry)*time.Second, func() { s.expire(ss) })
	}
	ss.mu.Unlock()
	s.mem.add(charge)
	s.mu.Unlock()
	for i := range subs {
		ss.storeSubscription(&subs[i], false)
	}
	var err error
	for _, k := range added {
		if e := s.waitFilter(s.filterAdd(k.group, k.filter), k.group, k.filter); e != nil && err == nil {
			err = e
		}
	}
	if fresh && st.Session.Expiry == 0 && len(subs) == 0 && len(st.Deliveries) == 0 {
		return err
	}
	if s.persist != nil && ss.expiry > 0 {
		if e := s.persist.wait(); e != nil && err == nil {
			err = e
		}
	}
	return err
}
