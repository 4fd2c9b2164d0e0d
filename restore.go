package tern

import (
	"fmt"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/topics"
)

// restorer rebuilds the server's state from the store on start.
type restorer struct {
	s        *Server
	now      time.Time
	messages map[uint64]*Message
	sessions map[string]*session
	version  map[string]byte
	offline  map[string]int64  // when each session went offline, unix ns; 0 = cut off by a crash
	mapping  map[*Message]bool // those in toMap
	maxID    uint64
	skipped  int                   // records that refer to something missing
	junk     []func(storage.Batch) // their deletions
	expired  []func(storage.Batch) // deletions of deliveries whose message expired
	toMap    []*Message            // messages of paged deliveries (see persister.mapLocked)
	timers   []func()              // will and expiry timers, started once everything is restored
	counts   struct{ sessions, subscriptions, deliveries, retained, wills int }
}

func (r *restorer) Message(m *storage.Message) error {
	msg := &Message{
		Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Properties: m.Properties,
		Origin: m.Origin, Created: time.Unix(0, m.Created), expireAt: m.ExpireAt, id: m.ID,
	}
	msg.stored.Store(true)
	r.messages[m.ID] = msg
	r.maxID = max(r.maxID, m.ID)
	return nil
}

func (r *restorer) Session(rec *storage.Session) error {
	ss := newSession(r.s, rec.ClientID)
	ss.expiry = rec.Expiry
	ss.idHigh = rec.HighIDs
	if rec.LastImport != "" {
		ss.offLocked().lastImport = rec.LastImport
	}
	ss.stored = true
	if rec.Username != "" {
		// Authorizers are asked about its deliveries as this user until the
		// client comes back.
		ss.identity = &Client{srv: r.s, id: rec.ClientID, username: rec.Username, version: rec.Version, fd: -1}
	}
	ss.offlineSince = rec.DisconnectedAt
	r.sessions[rec.ClientID] = ss
	r.version[rec.ClientID] = rec.Version
	r.offline[rec.ClientID] = rec.DisconnectedAt
	r.counts.sessions++
	return nil
}

// skip counts a record that refers to something missing and deletes it,
// so that it cannot come back to life when what it refers to is created
// again (a new session of the client, a message id used again).
func (r *restorer) skip(del func(storage.Batch)) {
	r.skipped++
	r.junk = append(r.junk, del)
}

func (r *restorer) Subscription(rec *storage.Subscription) error {
	if r.sessions[rec.ClientID] == nil {
		r.skip(func(b storage.Batch) { b.DeleteSubscription(rec.ClientID, rec.Group, rec.Filter) })
		return nil
	}
	r.s.index.Subscribe(topics.Subscription{
		Target:   r.sessions[rec.ClientID],
		ClientID: rec.ClientID, Group: rec.Group, Filter: rec.Filter, QoS: rec.QoS, NoLocal: rec.NoLocal,
		RetainAsPublished: rec.RetainAsPublished, RetainHandling: rec.RetainHandling, Identifier: rec.Identifier,
	})
	r.s.stats.Subscriptions.Add(1)
	r.counts.subscriptions++
	return nil
}

func (r *restorer) Delivery(rec *storage.Delivery) error {
	ss := r.sessions[rec.ClientID]
	m := r.messages[rec.MessageID]
	if ss == nil || m == nil {
		r.skip(func(b storage.Batch) { b.DeleteDelivery(rec.ClientID, rec.Seq) })
		return nil
	}
	d := queuedDelivery(rec, m)
	d.pseq = rec.Seq
	if rec.PacketID == 0 && ss.pageableLocked(&d) {
		if m.expired(r.now.UnixNano()) {
			// Past the newest sequence number all the same: the next
			// delivery stored must not take its number.
			ss.pseq = max(ss.pseq, rec.Seq)
			id, seq := rec.ClientID, rec.Seq
			r.expired = append(r.expired, func(b storage.Batch) { b.DeleteDelivery(id, seq) })
			return nil
		}
		if ss.shouldPageLocked(&d) {
			// Left in the store: only counted (see paging.go).
			if ss.pg == nil {
				ss.pg = &pagedQueue{}
			}
			pq := ss.pg
			if !pq.active() {
				pq.cursor, pq.last, pq.held = ss.pseq, ss.pseq, nil
			}
			n := m.size()
			pq.n++
			pq.bytes += n
			ss.qBytes += n
			pq.last = rec.Seq
			ss.pseq = max(ss.pseq, rec.Seq)
			r.s.stats.Paged.Add(1)
			if !r.mapping[m] {
				r.mapping[m] = true
				r.toMap = append(r.toMap, m)
			}
			m.refs++
			r.counts.deliveries++
			return nil
		}
	}
	r.s.mem.add(r.s.mem.hold(m))
	m.refs++
	ss.holdStoredLocked(rec.Seq)
	ss.pseq = max(ss.pseq, rec.Seq)
	if rec.PacketID != 0 {
		ss.seq++
		ss.addInflightLocked(inflightMsg{delivery: d, id: rec.PacketID, seq: ss.seq, released: rec.Released})
		ss.nextID = rec.PacketID
		r.s.stats.InflightOut.Add(1)
	} else {
		ss.q.push(d)
		ss.accountLocked(&d)
	}
	r.counts.deliveries++
	return nil
}

func (r *restorer) Inbound(clientID string, packetID uint16, created int64) error {
	ss := r.sessions[clientID]
	if ss == nil {
		r.skip(func(b storage.Batch) { b.DeleteInbound(clientID, packetID) })
		return nil
	}
	if ss.inQoS2 == nil {
		ss.inQoS2 = make(map[uint16]inboundQoS2)
	}
	ss.inQoS2[packetID] = inboundQoS2{created: created, again: againRemote}
	return nil
}

func (r *restorer) Retained(topic string, id uint64) error {
	m := r.messages[id]
	if m == nil {
		r.skip(func(b storage.Batch) { b.DeleteRetained(topic) })
		return nil
	}
	m.refs++
	r.s.retained.Set(topic, m)
	r.s.stats.Retained.Add(1)
	r.s.retainedBytes += int64(m.size())
	r.counts.retained++
	return nil
}

func (r *restorer) Will(w *storage.Will) error {
	ss := r.sessions[w.ClientID]
	if ss == nil {
		r.skip(func(b storage.Batch) { b.DeleteWill(w.ClientID) })
		return nil
	}
	var m storage.Message = w.Message
	pk := packets.Publish{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain}
	if m.Properties != nil {
		pk.Properties = *m.Properties
	}
	msg := newMessage(&pk, w.ClientID, time.Unix(0, m.Created))
	msg.expireAt = m.ExpireAt
	ss.offLocked().pendingWill = msg
	fire := time.Until(time.Unix(0, w.FireAt))
	r.timers = append(r.timers, func() {
		ss.mu.Lock()
		ss.offLocked().willTimer = time.AfterFunc(max(fire, 0), func() { r.s.willDelayPassed(ss, msg) })
		ss.mu.Unlock()
	})
	r.counts.wills++
	return nil
}

// restore loads the store into the server: run once by New.
func (s *Server) restore() error {
	start := time.Now()
	r := &restorer{s: s, now: start, messages: make(map[uint64]*Message),
		sessions: make(map[string]*session), version: make(map[string]byte), offline: make(map[string]int64),
		mapping: make(map[*Message]bool)}
	if err := s.cfg.Store.Load(r); err != nil {
		return fmt.Errorf("tern: restoring from the store: %w", err)
	}
	p := s.persist
	p.nextID = r.maxID + 1
	expired := r.expired
	// Sessions: offline now; they expire counting from when they went
	// offline (or from now, for those the crash cut off).
	for id, ss := range r.sessions {
		s.sessions.put(ss)
		s.stats.ClientsTotal.Add(1)
		// Expired messages are dropped now.
		for i, n := 0, ss.q.len(); i < n; i++ {
			d := ss.q.pop()
			if d.msg.expired(start.UnixNano()) {
				ss.unaccountLocked(&d)
				s.mem.add(-s.mem.release(d.msg))
				seq := d.pseq
				expired = append(expired, func(b storage.Batch) { b.DeleteDelivery(id, seq) })
				d.msg.refs--
				continue
			}
			ss.q.push(d)
		}
		since := start
		if at := r.offline[id]; at != 0 {
			since = time.Unix(0, at)
		}
		ss.storeSessionLocked(r.version[id], since) // offline, since then
		if ss.expiry != NeverExpire {
			left := time.Duration(ss.expiry)*time.Second - start.Sub(since)
			r.timers = append(r.timers, func() {
				ss.mu.Lock()
				ss.offLocked().expiryTimer = time.AfterFunc(max(left, 0), func() { s.expire(ss) })
				ss.mu.Unlock()
			})
		}
	}
	// Messages nothing refers to any more are garbage. The clean-up goes
	// through the persister like any change: New does not wait for it (the
	// store may be unable to write for now, see Server.StoreHealth).
	var orphans []uint64
	for id, m := range r.messages {
		if m.refs <= 0 {
			orphans = append(orphans, id)
		}
	}
	p.mu.Lock()
	for _, m := range r.toMap {
		p.mapLocked(m)
	}
	p.mu.Unlock()
	p.change(func(b storage.Batch) {
		for _, del := range expired {
			del(b)
		}
		for _, del := range r.junk {
			del(b)
		}
		for _, id := range orphans {
			b.DeleteMessage(id)
		}
	})
	for _, start := range r.timers { // only now: a timer already due fires at once
		start()
	}
	s.log.Info("restored state from the store",
		"sessions", r.counts.sessions, "subscriptions", r.counts.subscriptions,
		"queued_or_inflight", r.counts.deliveries, "paged", s.stats.Paged.Load(), "retained", r.counts.retained,
		"wills", r.counts.wills, "messages", len(r.messages)-len(orphans), "orphans_removed", len(orphans),
		"skipped", r.skipped, "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}
