package tern

import (
	"sync"
	"time"
	"weak"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/topics"
)

// Durability says when the server considers a change durable.
type Durability int

const (
	// DurabilitySync makes every change durable (fsync'd) before anything
	// that depends on it is acknowledged: PUBACK and PUBREC of a stored
	// message, PUBCOMP (the release of an inbound QoS 2 packet
	// identifier), SUBACK, UNSUBACK, the CONNACK of a persistent session
	// (or of a clean start that ended one), the PUBACK of a retained
	// message set or cleared, and the admin API's deletes. Every commit is
	// fsync'd, so changes nobody waits for (acknowledged deliveries, ended
	// sessions) are durable within one commit too. Commits are grouped, so
	// many acknowledgements share one fsync.
	DurabilitySync Durability = iota
	// DurabilityPeriodic writes changes at once but fsyncs every
	// SyncInterval: a crash (of the process or the machine) loses at most
	// what was acknowledged in the last SyncInterval, plus the commit in
	// progress. QoS 2 handovers to subscribers are still fsync'd before the
	// PUBLISH is sent, so no QoS 2 message is delivered twice.
	DurabilityPeriodic
)

// persister mirrors the state of persistent sessions (session expiry
// interval above 0), retained messages and pending wills into the Store.
//
// Every change goes through one FIFO committer, so changes reach the store
// in the order they were made; callers that must not answer before their
// change is durable register a waiter, called after the commit that holds
// it. Reference counts of stored messages live under the committer's lock
// so that a message's Put and Delete can never be reordered.
type persister struct {
	srv   *Server
	store storage.Store
	sync  bool

	mu       sync.Mutex
	batch    storage.Batch   // the batch changes go to
	full     []storage.Batch // earlier batches not yet committed, oldest first
	waiters  []func(error)
	syncNext bool // the pending batch must be fsync'd (periodic mode)
	holds    int  // open holds: the pending batch is not to be committed yet
	gate     bool // the committer waits for the holds to end: no new ones
	gateOpen *sync.Cond
	holdsEnd chan struct{} // closed when holds falls to 0 while gate is set
	running  bool
	nextID   uint64 // next message id
	// refs counts the stored references of messages that a paged delivery
	// refers to, by id: such a delivery holds no *Message, and a Message
	// read back for it may be a copy, so the count cannot live in one
	// Message (see mapLocked).
	refs   map[uint64]msgRef
	idle   *sync.Cond
	failed bool // a commit failed: logged once
	// rounds counts the rounds the committer took, and committed the
	// last of them committed without an error: the pending batch goes
	// in round rounds+1 (see pendingRoundLocked).
	rounds, committed uint64

	sh storeHealth
}

func newPersister(s *Server, st storage.Store, d Durability) *persister {
	p := &persister{srv: s, store: st, sync: d == DurabilitySync, nextID: 1}
	p.idle = sync.NewCond(&p.mu)
	p.gateOpen = sync.NewCond(&p.mu)
	if hr, ok := st.(storage.HealthReporter); ok {
		p.sh.reporter = hr
	}
	return p
}

// maxBatchOps is how many changes a batch takes before the next ones go
// to a new batch, committed after it in the same round. Pebble turns a
// batch of more than half a memtable into a table of its own, sorted and
// flushed at once; under load, with an fsync in progress, the changes
// waiting for the next commit can pass that, and committing them in parts
// keeps them in the memtable.
var maxBatchOps = 4096 // a variable for tests

// batchLocked returns the batch changes go to now; p.mu is held.
func (p *persister) batchLocked() storage.Batch {
	switch {
	case p.batch == nil:
		p.batch = p.store.NewBatch()
	case p.holds == 0 && p.batch.Len() >= maxBatchOps: // never inside a hold: it is one commit
		p.full = append(p.full, p.batch)
		p.batch = p.store.NewBatch()
	}
	if !p.running {
		p.running = true
		go p.commitLoop() // ends when no batch is pending; Shutdown waits for that (drain)
	}
	return p.batch
}

// change applies fn to the pending batch.
func (p *persister) change(fn func(b storage.Batch)) {
	p.mu.Lock()
	fn(p.batchLocked())
	p.mu.Unlock()
}

// after calls done once every change made so far is committed (durable in
// sync mode), on the committer's goroutine.
func (p *persister) after(done func(error)) {
	p.mu.Lock()
	p.batchLocked()
	p.waiters = append(p.waiters, done)
	p.mu.Unlock()
}

// pendingRoundLocked returns the round of commits that takes the changes
// made now; p.mu is held.
func (p *persister) pendingRoundLocked() uint64 { return p.rounds + 1 }

// committedRound reports whether the round of commits numbered round was
// committed (and so every change made before it was taken).
func (p *persister) committedRound(round uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.committed >= round
}

// wait blocks until every change made so far is committed.
func (p *persister) wait() error {
	ch := make(chan error, 1)
	p.after(func(err error) { ch <- err })
	return <-ch
}

// afterDurable is after, with the commit fsync'd in either mode.
func (p *persister) afterDurable(done func(error)) {
	p.mu.Lock()
	p.batchLocked()
	p.syncNext = true
	p.waiters = append(p.waiters, done)
	p.mu.Unlock()
}

// waitDurable blocks until every change made so far is fsync'd, in either
// mode.
func (p *persister) waitDurable() error {
	ch := make(chan error, 1)
	p.afterDurable(func(err error) { ch <- err })
	return <-ch
}

// hold keeps the changes made from now until release in one commit: the
// committer does not take the pending batch while a hold is open. It is
// what makes the packet id of an inbound QoS 2 message and every delivery
// of it one atomic change. Holds are short (one routing); a hold open for
// over holdLimit stops holding (logged), so that no hook can block the
// committer for ever. A nil persister holds nothing.
func (p *persister) hold() {
	if p == nil {
		return
	}
	p.mu.Lock()
	for p.gate {
		p.gateOpen.Wait()
	}
	p.holds++
	p.mu.Unlock()
}

// release ends a hold.
func (p *persister) release() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.holds--
	if p.holds == 0 && p.holdsEnd != nil {
		close(p.holdsEnd)
		p.holdsEnd = nil
	}
	p.mu.Unlock()
}

// holdLimit bounds how long the committer waits for holds to end.
const holdLimit = time.Second

// waitHoldsLocked waits, with p.mu held, until no hold is open, letting no
// new one start meanwhile.
func (p *persister) waitHoldsLocked() {
	if p.holds == 0 {
		return
	}
	p.gate = true
	end := make(chan struct{})
	p.holdsEnd = end
	p.mu.Unlock()
	t := time.NewTimer(holdLimit)
	select {
	case <-end:
	case <-t.C:
		p.srv.log.Warn("a routing held the store's commit for over a second: committing it in two parts")
	}
	t.Stop()
	p.mu.Lock()
	p.holdsEnd = nil
	p.gate = false
	p.gateOpen.Broadcast()
}

func (p *persister) commitLoop() {
	for {
		p.mu.Lock()
		p.waitHoldsLocked()
		bs, w, syncNext := p.full, p.waiters, p.syncNext
		if p.batch != nil {
			bs = append(bs, p.batch)
		}
		p.batch, p.full, p.waiters, p.syncNext = nil, nil, nil, false
		if len(bs) == 0 {
			p.running = false
			p.idle.Broadcast()
			p.mu.Unlock()
			return
		}
		p.rounds++
		round := p.rounds
		p.mu.Unlock()
		// In sync mode every commit is fsync'd: a change nobody waits for
		// (a deletion, most often) is durable within one commit, instead
		// of whenever the next acknowledgement comes. In periodic mode
		// only a QoS 2 handover asks for the fsync.
		// The parts of one round are committed in order, the last one
		// with the fsync that makes them all durable.
		fsync := p.sync || syncNext
		var err error
		for i, b := range bs {
			last := i == len(bs)-1
			if b.Len() > 0 || (last && fsync && len(w) > 0) {
				if err = p.store.Commit(b, fsync && last); err != nil {
					break // what follows cannot go before it
				}
			}
		}
		if err != nil {
			p.srv.stats.StoreFailures.Add(1)
			p.mu.Lock()
			first := !p.failed
			p.failed = true
			p.mu.Unlock()
			if first {
				p.srv.log.Error("storage commit failed: acknowledgements withheld", "err", err)
			}
		} else {
			p.mu.Lock()
			p.committed = round
			p.mu.Unlock()
		}
		for _, fn := range w {
			fn(err)
		}
	}
}

// drain waits for the committer to finish everything pending.
func (p *persister) drain() {
	p.mu.Lock()
	for p.running {
		p.idle.Wait()
	}
	p.mu.Unlock()
}

// refLocked records one more stored reference to m, storing the message on
// the first.
func (p *persister) refLocked(b storage.Batch, m *Message) {
	if m.mapped {
		r := p.refs[m.id]
		if r.n == 0 {
			b.PutMessage(m.record())
			r.live = weak.Make(m)
		}
		r.n++
		p.refs[m.id] = r
		return
	}
	if m.refs == 0 {
		if m.id == 0 {
			m.id = p.nextID
			p.nextID++
			m.stored.Store(true)
		}
		b.PutMessage(m.record())
	}
	m.refs++
}

// unrefLocked drops a stored reference to m, deleting the message with the
// last.
func (p *persister) unrefLocked(b storage.Batch, m *Message) {
	if m.mapped {
		p.unrefIDLocked(b, m.id)
		return
	}
	m.refs--
	if m.refs == 0 {
		b.DeleteMessage(m.id)
	}
}

// msgRef is the count of a mapped message's stored references, and a
// Message of that id still in memory, if any, for reading back.
type msgRef struct {
	n    int32
	live weak.Pointer[Message]
}

// unrefIDLocked drops a stored reference to the mapped message id.
func (p *persister) unrefIDLocked(b storage.Batch, id uint64) {
	switch r := p.refs[id]; {
	case r.n > 1:
		r.n--
		p.refs[id] = r
	case r.n == 1:
		delete(p.refs, id)
		b.DeleteMessage(id)
	}
}

// liveMessage returns the Message of a paged delivery read back: one
// still in memory with that id (so that its bytes count once), or else
// a copy made from r, which later reads find in turn.
func (p *persister) liveMessage(r *storage.Message) *Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	ref, ok := p.refs[r.ID]
	if m := ref.live.Value(); m != nil {
		return m
	}
	m := MessageFromRecord(r)
	m.id = r.ID
	m.mapped = true
	m.stored.Store(true)
	if ok {
		ref.live = weak.Make(m)
		p.refs[r.ID] = ref
	}
	return m
}

// mapLocked moves the count of m's stored references, which must have
// been stored, into p.refs, where the references of its paged deliveries
// are counted: from now on every Message of that id (the original and
// those read back from the store) counts there.
func (p *persister) mapLocked(m *Message) {
	if m.mapped {
		return
	}
	if p.refs == nil {
		p.refs = make(map[uint64]msgRef)
	}
	r := p.refs[m.id]
	r.n += m.refs
	r.live = weak.Make(m)
	p.refs[m.id] = r
	m.refs = 0
	m.mapped = true
}

// touched reports whether m went to the store, without the persister's
// lock: it is asked for every PUBLISH. A nil persister stores nothing.
func (p *persister) touched(m *Message) bool {
	return p != nil && m.stored.Load()
}

// retain records that topic's retained message is now m (nil: none),
// replacing old (nil: none). The caller serialises retained changes.
func (p *persister) retain(topic string, m, old *Message) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.batchLocked()
	if m != nil {
		p.refLocked(b, m)
		b.PutRetained(topic, m.id)
	} else {
		b.DeleteRetained(topic)
	}
	if old != nil {
		p.unrefLocked(b, old)
	}
}

// record returns the storage form of m.
func (m *Message) record() *storage.Message {
	return &storage.Message{
		ID: m.id, Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain,
		Properties: m.Properties, Origin: m.Origin, Created: m.Created.UnixNano(), ExpireAt: m.expireAt,
	}
}

// deliveryRecord returns the storage form of a delivery.
func (ss *session) deliveryRecord(d *delivery, packetID uint16, released bool) *storage.Delivery {
	r := &storage.Delivery{
		ClientID: ss.id, Seq: d.pseq, MessageID: d.msg.id, QoS: d.qos, Retain: d.retain,
		PacketID: packetID, Released: released,
	}
	switch {
	case d.subIDList() != nil:
		r.SubIDs = d.subIDList()
	case d.subID != 0:
		r.SubIDs = []uint32{d.subID}
	}
	if g := d.share(); g != nil {
		r.ShareGroup, r.ShareFilter = g.Name, g.Filter
	}
	return r
}

// persistentLocked reports whether the session's state goes to the store.
func (ss *session) persistentLocked() bool { return ss.srv.persist != nil && ss.expiry > 0 }

// storeQueuedLocked stores a QoS 1/2 delivery just queued on a persistent
// session.
func (ss *session) storeQueuedLocked(d *delivery) {
	if d.qos == 0 || !ss.persistentLocked() {
		return
	}
	ss.pseq++
	d.pseq = ss.pseq
	ss.holdStoredLocked(d.pseq)
	p := ss.srv.persist
	p.mu.Lock()
	b := p.batchLocked()
	p.refLocked(b, d.msg)
	b.PutDelivery(ss.deliveryRecord(d, 0, false))
	p.mu.Unlock()
}

// storeInflightLocked records the packet id a stored QoS 2 delivery went
// out with (or its release); the writer waits for it before writing, so a
// restart resends with the same id instead of delivering twice.
func (ss *session) storeInflightLocked(d *delivery, packetID uint16, released bool) bool {
	if d.pseq == 0 || d.qos < 2 || ss.srv.persist == nil {
		return false
	}
	ss.srv.persist.change(func(b storage.Batch) { b.PutDelivery(ss.deliveryRecord(d, packetID, released)) })
	return true
}

// forgetLocked deletes a stored delivery that was acknowledged, dropped or
// moved.
func (ss *session) forgetLocked(d *delivery) {
	if d.pseq == 0 || ss.srv.persist == nil {
		return
	}
	p := ss.srv.persist
	p.mu.Lock()
	b := p.batchLocked()
	b.DeleteDelivery(ss.id, d.pseq)
	p.unrefLocked(b, d.msg)
	p.mu.Unlock()
	d.pseq = 0
}

// storeSubscription stores (or deletes) a subscription of a persistent
// session.
func (ss *session) storeSubscription(sub *topics.Subscription, remove bool) {
	ss.mu.Lock()
	persistent := ss.persistentLocked()
	ss.mu.Unlock()
	if !persistent {
		return
	}
	if remove {
		ss.srv.persist.change(func(b storage.Batch) { b.DeleteSubscription(ss.id, sub.Group, sub.Filter) })
		return
	}
	rec := &storage.Subscription{
		ClientID: ss.id, Group: sub.Group, Filter: sub.Filter, QoS: sub.QoS, NoLocal: sub.NoLocal,
		RetainAsPublished: sub.RetainAsPublished, RetainHandling: sub.RetainHandling, Identifier: sub.Identifier,
	}
	ss.srv.persist.change(func(b storage.Batch) { b.PutSubscription(rec) })
}

// storeWillLocked records a will waiting for its delay (m nil: none).
func (ss *session) storeWillLocked(m *Message, fireAt time.Time) {
	p := ss.srv.persist
	if p == nil || !ss.stored {
		return
	}
	if m == nil {
		p.change(func(b storage.Batch) { b.DeleteWill(ss.id) })
		return
	}
	w := &storage.Will{ClientID: ss.id, Message: *m.record(), FireAt: fireAt.UnixNano()}
	w.Message.ID = 0
	p.change(func(b storage.Batch) { b.PutWill(w) })
}

// storeSessionLocked writes the session record (connected when at is zero).
func (ss *session) storeSessionLocked(version byte, disconnectedAt time.Time) {
	p := ss.srv.persist
	if p == nil {
		return
	}
	if ss.expiry == 0 {
		if ss.pg.active() {
			// Deleting the session would delete its paged deliveries
			// with it, unread: the session's end reads them back first,
			// then deletes it (endSessionLocked), and so does a resume
			// (unpageLocked).
			return
		}
		if ss.stored {
			ss.stored = false
			p.change(func(b storage.Batch) { b.DeleteSession(ss.id) })
		}
		return
	}
	ss.stored = true
	rec := &storage.Session{ClientID: ss.id, Version: version, Expiry: ss.expiry, HighIDs: ss.idHigh}
	if ss.off != nil {
		rec.LastImport = ss.off.lastImport
	}
	if ss.identity != nil {
		rec.Username = ss.identity.username
	}
	if !disconnectedAt.IsZero() {
		rec.DisconnectedAt = disconnectedAt.UnixNano()
	}
	p.change(func(b storage.Batch) { b.PutSession(rec) })
}

// settle waits until every change made so far is committed; without a
// store it returns at once.
func (p *persister) settle() error {
	if p == nil {
		return nil
	}
	return p.wait()
}

// sessionStored reports whether the client id has a session in the store.
func (p *persister) sessionStored(id string) bool {
	if p == nil {
		return false
	}
	ss := p.srv.session(id)
	if ss == nil {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.stored
}

// refuseAttached refuses a connection whose session is already attached
// (its CONNACK waited for the store, which failed): CONNACK with code, and
// the session detached as when a connection ends, without the will.
func (c *Client) refuseAttached(code packets.ReasonCode, err error) bool {
	s := c.srv
	s.log.Error("connection refused: storing its session failed", "client", c.id, "remote", c.RemoteAddr(), "err", err)
	c.writeConnack(&packets.Connack{ReasonCode: code})
	c.will.Store(nil)
	s.stats.ClientsConnected.Add(1) // connectionEnded counts it out
	s.connectionEnded(c)
	return false
}
