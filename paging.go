package tern

import (
	"maps"

	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/topics"
)

// Paging. With a store, a persistent session's QoS 1 and 2 deliveries are
// stored anyway (persist.go); when holding them in memory too would pass
// MaxMessageMemory, or the session's own share of it (MaxQueueMemory),
// they stay only in the store. The session then holds a descriptor of
// that part of its queue (pagedQueue): how many, how many bytes, and the
// range of storage sequence numbers. Once paging starts, every later
// pageable delivery of the session is paged too, until the store part is
// read back, so the order of the queue is the order of the sequence
// numbers: the in-memory deliveries first, then the paged ones.
//
// The client's writer reads the paged deliveries back (Store.ReadQueue),
// a page at a time, outside the session lock, once the deliveries in
// memory run low and the inflight window has room; it first waits for
// the commit that holds them.
//
// A paged delivery holds no *Message, and the messages read back are new
// copies, so the stored references of a message any paged delivery
// refers to are counted by id in the persister (persister.mapLocked).
//
// Deliveries through shared subscriptions are never paged: they move to
// another member of the group when the session ends, which needs them in
// memory.

// pageSize is how many deliveries one read of the store takes, and
// pageLow how few in memory start the next read.
const (
	pageSize = 256
	pageLow  = 64
)

// pagedQueue describes the paged part of a session's queue: the stored
// deliveries of the session with a sequence number above cursor and up to
// last, except those in held.
type pagedQueue struct {
	n      int    // paged deliveries not yet read back, skipped ones excluded
	bytes  int    // what they count towards MaxQueuedBytes (included in session.qBytes)
	skip   int    // the oldest paged deliveries, dropped to make room (DropOldest): deleted when read
	cursor uint64 // the last sequence number read back (or passed)
	last   uint64 // the sequence number of the newest paged delivery
	// held are the sequence numbers above cursor of stored deliveries
	// that live in memory (through a shared subscription, retained, or
	// inflight when restored): reading back passes them.
	held    map[uint64]struct{}
	reading bool // the writer is reading a page, without the lock
	ending  bool // the session is ending: nothing more is paged or read back
}

// active reports whether part of the queue is paged. A session holds a
// pagedQueue only while it pages (or reads back), so that the many that
// never do pay 8 bytes for it: these methods take a nil one.
func (pq *pagedQueue) active() bool { return pq != nil && pq.n+pq.skip > 0 }

// count returns how many deliveries are paged.
func (pq *pagedQueue) count() int {
	if pq == nil {
		return 0
	}
	return pq.n
}

// size returns what the paged deliveries count towards MaxQueuedBytes.
func (pq *pagedQueue) size() int {
	if pq == nil {
		return 0
	}
	return pq.bytes
}

// isEnding reports whether the session is ending.
func (pq *pagedQueue) isEnding() bool { return pq != nil && pq.ending }

// pagingOn reports whether the server pages queues: it has a store and
// paging is not disabled.
func (s *Server) pagingOn() bool { return s.persist != nil && !s.cfg.DisablePaging }

// pageableLocked reports whether d can be paged: a QoS 1 or 2 delivery,
// not through a shared subscription, for a persistent session.
func (ss *session) pageableLocked(d *delivery) bool {
	return d.qos > 0 && d.msg != nil && d.share() == nil && ss.srv.pagingOn() && ss.persistentLocked()
}

// shouldPageLocked reports whether d, pageable, goes to the paged part:
// paging has started, or holding it would pass the broker's budget or the
// session's share of memory.
func (ss *session) shouldPageLocked(d *delivery) bool {
	if ss.pg.active() {
		return true
	}
	s := ss.srv
	if s.mem.full(d.msg) {
		return true
	}
	share := s.cfg.MaxQueueMemory
	return share > 0 && ss.heldBytesLocked()+deliveryCost+d.msg.size() > share
}

// heldBytesLocked is what the session's queue holds in memory, for
// MaxQueueMemory: the topic and payload bytes of the deliveries in memory
// and the cost of their queue slots.
func (ss *session) heldBytesLocked() int {
	return ss.qBytes - ss.pg.size() + ss.q.len()*deliveryCost
}

// pageOutLocked stores d, pageable, without holding it in memory.
func (ss *session) pageOutLocked(d *delivery) {
	pq := ss.pg
	if pq == nil { // kept while a page is being read back: see pageIn
		pq = &pagedQueue{}
		ss.pg = pq
	}
	if !pq.active() {
		// Every stored delivery in memory has a sequence number up to
		// here: the paged part starts after it.
		pq.cursor, pq.last, pq.held = ss.pseq, ss.pseq, nil
	}
	ss.pseq++
	d.pseq = ss.pseq
	p := ss.srv.persist
	p.mu.Lock()
	b := p.batchLocked()
	p.refLocked(b, d.msg)
	p.mapLocked(d.msg)
	b.PutDelivery(ss.deliveryRecord(d, 0, false))
	p.mu.Unlock()
	n := d.msg.size()
	pq.n++
	pq.bytes += n
	ss.qBytes += n
	pq.last = d.pseq
	ss.srv.stats.Paged.Add(1)
	if c := ss.client; c != nil {
		c.kickLocked()
	}
}

// holdStoredLocked notes that the stored delivery with sequence number seq
// lives in memory although it is above the paged part's cursor.
func (ss *session) holdStoredLocked(seq uint64) {
	pq := ss.pg
	if !pq.active() || seq <= pq.cursor {
		return
	}
	if pq.held == nil {
		pq.held = make(map[uint64]struct{})
	}
	pq.held[seq] = struct{}{}
}

// skipPagedLocked drops the oldest paged delivery to make room: it is
// counted now, and deleted from the store when reading back reaches it.
// Its size is not known until then: the average of the paged part is
// taken from the queue's bytes, made exact when the paged part empties.
func (ss *session) skipPagedLocked() bool {
	pq := ss.pg
	if pq == nil || pq.n == 0 || pq.ending {
		return false
	}
	est := pq.bytes / pq.n
	pq.n--
	pq.bytes -= est
	ss.qBytes -= est
	pq.skip++
	ss.srv.stats.Paged.Add(-1)
	pq.settleLocked(ss)
	return true
}

// settleLocked resets the descriptor once nothing is paged, so that the
// queue's bytes are exact again.
func (pq *pagedQueue) settleLocked(ss *session) {
	if pq.n == 0 {
		ss.qBytes -= pq.bytes
		pq.bytes = 0
		if pq.skip == 0 {
			pq.held = nil
		}
	}
}

// wantPageLocked reports whether the writer of c should read a page back
// now: part of the queue is paged, few deliveries wait in memory and the
// inflight window has room. It marks the read as started.
func (c *Client) wantPageLocked() bool {
	ss := c.sess
	pq := ss.pg
	if !pq.active() || pq.reading || pq.ending || c.pageStalled {
		return false
	}
	if ss.q.len()-ss.qQoS0-ss.streams >= pageLow || len(ss.inflight) >= int(c.sendQuota) {
		return false
	}
	pq.reading = true
	return true
}

// pageIn reads a page of c's session back from the store into its queue,
// on the writer's goroutine, with no lock held. It reports whether it
// made progress: without (a failure, logged, or no room in memory) the
// writer tries again when it is next woken (an acknowledgement, a new
// message).
func (s *Server) pageIn(c *Client) bool {
	ss := c.sess
	ss.mu.Lock()
	if ss.pg == nil { // the session ended since the read was asked for
		ss.mu.Unlock()
		return false
	}
	after := ss.pg.cursor
	ss.mu.Unlock()
	// The paged deliveries may still be in the persister's pending batch.
	// A store that cannot write (a full disk) would hold the commit, and
	// this writer with it: what is committed is read instead.
	var err error
	waited := s.persist.health() == nil
	if waited {
		err = s.persist.wait()
	}
	var es []storage.QueueEntry
	if err == nil {
		es, err = s.cfg.Store.ReadQueue(ss.id, after, pageSize)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	pq := ss.pg
	if pq == nil {
		return false // the session ended meanwhile
	}
	pq.reading = false
	defer func() {
		if !pq.active() && ss.pg == pq {
			ss.pg = nil // read back to the end: nothing left to describe
		}
	}()
	if err != nil {
		s.log.Error("reading a paged queue back from the store", "client", ss.id, "err", err)
		return false
	}
	if ss.ended || pq.ending || pq.cursor != after || !pq.active() {
		return false
	}
	var charge int64
	var in int64
	p := s.persist
	share := s.cfg.MaxQueueMemory
	full := false
	for i := range es {
		rec := &es[i].Delivery
		if rec.Seq > pq.last {
			break // stored in memory after the paged part
		}
		var m *Message
		if _, held := pq.held[rec.Seq]; !held && pq.skip == 0 && es[i].Message != nil {
			m = p.liveMessage(es[i].Message)
			// What is read back stays under the budget and the session's
			// share, but for one delivery, so that the queue moves.
			cost := int64(deliveryCost)
			if m.held.Load() == 0 {
				cost += m.cost()
			}
			if ss.q.len()-ss.qQoS0-ss.streams > 0 && (s.mem.limit != 0 && s.mem.used.Load()+charge+cost > s.mem.limit ||
				share > 0 && ss.heldBytesLocked()+deliveryCost+m.size() > share) {
				full = true
				break
			}
		}
		pq.cursor = rec.Seq
		if _, ok := pq.held[rec.Seq]; ok {
			delete(pq.held, rec.Seq)
			continue
		}
		if pq.skip > 0 || es[i].Message == nil {
			// Dropped to make room (counted then), or its message is
			// missing from the store: delete it.
			p.mu.Lock()
			b := p.batchLocked()
			b.DeleteDelivery(ss.id, rec.Seq)
			p.unrefIDLocked(b, rec.MessageID)
			p.mu.Unlock()
			if pq.skip > 0 {
				pq.skip--
				if m := es[i].Message; m != nil && len(s.hooks.drops) > 0 {
					c.events = append(c.events, hookEvent{msg: MessageFromRecord(m), drop: DropQueueFull})
				}
				continue
			}
			s.log.Error("a paged delivery's message is missing from the store: dropped", "client", ss.id,
				"seq", rec.Seq, "message_id", rec.MessageID)
			pq.n--
			s.stats.Paged.Add(-1)
			pq.settleLocked(ss)
			continue
		}
		d := queuedDelivery(rec, m)
		d.pseq = rec.Seq
		n := m.size()
		pq.n--
		pq.bytes -= n
		ss.qBytes -= n // counted again by accountLocked
		in++
		pq.settleLocked(ss)
		ss.q.push(d)
		ss.accountLocked(&d)
		charge += s.mem.hold(m)
		if !pq.active() {
			break
		}
	}
	s.mem.add(charge)
	s.stats.Paged.Add(-in)
	s.stats.PageIns.Add(in)
	if cl := ss.client; cl != nil && cl != c && in > 0 {
		cl.kickLocked() // the session was taken over meanwhile: its new writer sends them
	}
	if waited && !full && pq.cursor == after && pq.active() {
		// Nothing read back although part of the queue is paged: the
		// store lost it. Forget the paged part rather than try for ever.
		s.log.Error("paged deliveries missing from the store: forgotten", "client", ss.id,
			"paged", pq.n, "after_seq", after)
		s.stats.Paged.Add(-int64(pq.n))
		pq.n, pq.skip = 0, 0
		pq.settleLocked(ss)
		return false
	}
	return pq.cursor != after
}

// queuedDelivery returns the delivery of m that a record describes, not
// yet stored (pseq 0).
func queuedDelivery(rec *storage.Delivery, m *Message) delivery {
	d := delivery{msg: m, qos: rec.QoS, retain: rec.Retain}
	switch len(rec.SubIDs) {
	case 0:
	case 1:
		d.subID = rec.SubIDs[0]
	default:
		d.ext = &deliveryExt{subIDs: rec.SubIDs}
	}
	if rec.ShareGroup != "" {
		if d.ext == nil {
			d.ext = &deliveryExt{}
		}
		d.ext.share = &topics.SharedGroup{Name: rec.ShareGroup, Filter: rec.ShareFilter}
	}
	return d
}

// kickPaged wakes the writers of the online sessions that have a paged
// part, which may have stopped reading it back (see pageIn).
func (s *Server) kickPaged() {
	s.sessions.each(func(ss *session) {
		ss.mu.Lock()
		if c := ss.client; c != nil && ss.pg.active() {
			c.kickLocked()
		}
		ss.mu.Unlock()
	})
}

// takePagedLocked reads back every paged delivery of a session that is
// ending or moving, in order, a page at a time: fn is called with each
// (skipped ones, and those whose message is missing, left out). It returns
// the message ids of all of them, skipped ones included, whose references
// the caller drops. The caller holds s.mu and ss.mu; ss.mu is released
// while the store is read, with the session marked ending so that nothing
// more is paged and the writer reads nothing back.
func (s *Server) takePagedLocked(ss *session, fn func(e *storage.QueueEntry)) (ids []uint64) {
	pq := ss.pg
	if !pq.active() {
		return nil
	}
	pq.ending = true
	after, last, skip := pq.cursor, pq.last, pq.skip
	held := maps.Clone(pq.held)
	ss.mu.Unlock()
	// The newest paged deliveries may wait in the pending batch. While the
	// store cannot write (a full disk), a commit waits for space: not
	// with s.mu held. What is committed is read, and the messages of the
	// rest stay in the store until the next start removes them.
	err := s.persist.health()
	if err == nil {
		err = s.persist.wait()
	}
	if err != nil {
		s.log.Error("ending a paged session without waiting for the store: some of its messages stay in the store until restart",
			"client", ss.id, "err", err)
		err = nil
	}
	for err == nil && after < last {
		var page []storage.QueueEntry
		page, err = s.cfg.Store.ReadQueue(ss.id, after, 1024)
		if len(page) == 0 {
			break
		}
		for i := range page {
			e := &page[i]
			if e.Delivery.Seq > last {
				after = last
				break
			}
			after = e.Delivery.Seq
			if _, ok := held[e.Delivery.Seq]; ok {
				continue
			}
			ids = append(ids, e.Delivery.MessageID)
			switch {
			case skip > 0:
				skip--
			case e.Message != nil:
				fn(e)
			}
		}
	}
	if err != nil {
		s.log.Error("reading a paged queue from the store: its messages stay in the store until restart",
			"client", ss.id, "err", err)
	}
	ss.mu.Lock()
	s.stats.Paged.Add(-int64(pq.n))
	ss.qBytes -= pq.bytes
	ss.pg = nil // the caller ends the session under this lock
	return ids
}

// unrefPaged drops the stored references of the messages of paged
// deliveries that went with their session's records.
func (p *persister) unrefPaged(ids []uint64) {
	if len(ids) == 0 {
		return
	}
	p.mu.Lock()
	b := p.batchLocked()
	for _, id := range ids {
		p.unrefIDLocked(b, id)
	}
	p.mu.Unlock()
}
