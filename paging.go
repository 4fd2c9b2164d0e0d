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
	round  uint64 // the persister's round of commits that takes the newest paged delivery
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
	pq.round = p.pendingRoundLocked()
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
	if ss.q.len()-ss.qQoS0-int(ss.streams) >= pageLow || len(ss.inflight) >= int(c.sendQuota) {
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
	after, round := ss.pg.cursor, ss.pg.round
	ss.mu.Unlock()
	es, sure, err := s.readPaged(ss.id, after, round)
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
		if cl := ss.client; cl != nil && cl != c && pq.active() {
			// The session was taken over meanwhile: its new writer, which
			// left the reading to this one, reads on.
			cl.kickLocked()
		}
	}()
	if err != nil {
		s.log.Error("reading a paged queue back from the store", "client", ss.id, "err", err)
		return false
	}
	if ss.ended || pq.ending || pq.cursor != after || !pq.active() {
		return false
	}
	full := s.takePageLocked(ss, pq, es, true, &c.outExtraLocked().events)
	if sure && !full && pq.cursor == after && pq.active() {
		s.forgetPagedLocked(ss, pq, after)
		return false
	}
	return pq.cursor != after
}

// readPaged reads a page of a session's paged deliveries after the
// sequence number after, the newest of them taken by the persister's
// round of commits round. The paged deliveries may still be in the
// persister's pending batch: it waits for their commit, unless the store
// cannot write (a full disk), which would hold the commit, and the caller
// with it: what is committed is read instead. sure reports whether every
// paged delivery was committed before the read, so that what the read
// misses is lost.
func (s *Server) readPaged(id string, after, round uint64) (es []storage.QueueEntry, sure bool, err error) {
	p := s.persist
	sure = p.committedRound(round)
	if !sure && p.health() == nil {
		if err = p.wait(); err != nil {
			return nil, false, err
		}
		sure = true
	}
	es, err = s.cfg.Store.ReadQueue(id, after, pageSize)
	return es, sure, err
}

// forgetPagedLocked gives up the paged part of a session, nothing of which
// a read after the sequence number after found although every paged
// delivery was committed: the store lost it. Forgetting it is better than
// trying for ever.
func (s *Server) forgetPagedLocked(ss *session, pq *pagedQueue, after uint64) {
	s.log.Error("paged deliveries missing from the store: forgotten", "client", ss.id,
		"paged", pq.n, "after_seq", after)
	s.stats.Paged.Add(-int64(pq.n))
	pq.n, pq.skip = 0, 0
	pq.settleLocked(ss)
}

// takePageLocked puts the deliveries of a page read back from the store
// into the session's queue, in order, and advances the cursor. limited,
// it stops at what the broker's budget and the session's share of it
// allow (but for one delivery, so that the queue moves) and reports
// whether it stopped there. Skipped deliveries and those whose message is
// missing are deleted from the store; drop hooks hear of the skipped ones
// (events).
func (s *Server) takePageLocked(ss *session, pq *pagedQueue, es []storage.QueueEntry, limited bool, events *[]hookEvent) (full bool) {
	var charge int64
	var in int64
	p := s.persist
	share := s.cfg.MaxQueueMemory
	for i := range es {
		rec := &es[i].Delivery
		if rec.Seq > pq.last {
			break // stored in memory after the paged part
		}
		var m *Message
		if _, held := pq.held[rec.Seq]; !held && pq.skip == 0 && es[i].Message != nil {
			m = p.liveMessage(es[i].Message)
			cost := int64(deliveryCost)
			if m.held.Load() == 0 {
				cost += m.cost()
			}
			if limited && ss.q.len()-ss.qQoS0-int(ss.streams) > 0 && (s.mem.limit != 0 && s.mem.used.Load()+charge+cost > s.mem.limit ||
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
					*events = append(*events, hookEvent{msg: MessageFromRecord(m), drop: DropQueueFull})
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
	// Held deliveries at or below the cursor were passed (or read back
	// before they were noted): forget them.
	for seq := range pq.held {
		if seq <= pq.cursor {
			delete(pq.held, seq)
		}
	}
	s.mem.add(charge)
	s.stats.Paged.Add(-in)
	s.stats.PageIns.Add(in)
	return full
}

// unpageLocked reads the whole paged part of a session back into its
// queue, however much memory that takes: the session stops being
// persistent (resumed with a Session Expiry of 0), and its stored
// deliveries, paged ones too, are about to be deleted. Deliveries that
// arrive meanwhile are paged after the others and read back too. It fails
// while the store cannot write and paged deliveries wait for their
// commit; the session keeps what was not read back then. The caller holds
// s.mu, so that the session cannot end, and ss.mu, released while the
// store is read. Drop hooks for skipped deliveries go to afters.
func (s *Server) unpageLocked(ss *session, afters *[]func()) error {
	var events []hookEvent
	defer func() {
		if len(events) > 0 {
			*afters = append(*afters, func() { s.fireDrops(ss.id, events) })
		}
	}()
	for {
		pq := ss.pg
		if !pq.active() {
			if pq != nil && !pq.reading {
				ss.pg = nil
			}
			return nil
		}
		after, round := pq.cursor, pq.round
		ss.mu.Unlock()
		var es []storage.QueueEntry
		sure := s.persist.committedRound(round)
		err := s.persist.health()
		if !sure && err == nil {
			err = s.persist.wait()
			sure = err == nil
		}
		if sure {
			es, err = s.cfg.Store.ReadQueue(ss.id, after, pageSize)
		}
		ss.mu.Lock()
		if err != nil {
			return err
		}
		if ss.pg != pq || pq.cursor != after {
			continue // the writer of a connection taken over read a page meanwhile
		}
		s.takePageLocked(ss, pq, es, false, &events)
		if pq.cursor == after && pq.active() {
			s.forgetPagedLocked(ss, pq, after)
		}
	}
}

// fireDrops reports drops found under a lock to hooks.
func (s *Server) fireDrops(id string, events []hookEvent) {
	for _, e := range events {
		for _, h := range s.hooks.drops {
			h.OnMessageDropped(id, e.msg, e.drop)
		}
	}
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
// the caller drops, and fn is called for the skipped ones too (skipped
// true), for drop hooks. The caller holds s.mu and ss.mu; ss.mu is
// released while the store is read, with the session marked ending so
// that nothing more is paged and the writer reads nothing back.
//
// The store is read with s.mu held: a session with a very large paged
// part holds the server lock for as long as reading it takes.
func (s *Server) takePagedLocked(ss *session, fn func(e *storage.QueueEntry, skipped bool)) (ids []uint64) {
	pq := ss.pg
	if !pq.active() {
		return nil
	}
	pq.ending = true
	after, last, skip := pq.cursor, pq.last, pq.skip
	held := maps.Clone(pq.held)
	round := pq.round
	ss.mu.Unlock()
	// The newest paged deliveries may wait in the pending batch. While the
	// store cannot write (a full disk), a commit waits for space: not
	// with s.mu held. What is committed is read, and the messages of the
	// rest stay in the store until the next start removes them.
	var err error
	if !s.persist.committedRound(round) {
		err = s.persist.health()
		if err == nil {
			err = s.persist.wait()
		}
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
			case e.Message == nil:
				if skip > 0 {
					skip--
				}
			case skip > 0:
				skip--
				fn(e, true)
			default:
				fn(e, false)
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
