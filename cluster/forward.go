package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ternmq/tern"
)

// nodeRemote is another node as a delivery target of the local index.
type nodeRemote struct {
	c       *Cluster
	node    string
	subject string
	alive   atomic.Bool
	// out holds the batches not sent yet, the last one open; queued is
	// set while the node is in the forwarder's ready list (both guarded
	// by forwarder.omu).
	out    []*batch
	queued bool
	// unsent is the bytes of out (guarded by forwarder.omu), at most
	// maxUnsent: a node the sender cannot keep up with gets no more
	// QoS 0 messages and has its QoS 1/2 messages parked.
	unsent int
}

// maxUnsent bounds the bytes of messages waiting to be sent to one node.
const maxUnsent = 16 << 20

// Forward implements tern.Remote.
func (r *nodeRemote) Forward(m *tern.Message, d tern.Delivery, ack *tern.Ack) {
	r.c.fwd.send(r, m, d, ack)
}

// Reachable implements tern.Remote: the node was heard from within LeaseTTL.
func (r *nodeRemote) Reachable() bool { return r.alive.Load() }

// batch is messages for one node that travel as one NATS message: the
// forwarder's sender takes whatever accumulated since it last ran, so a
// burst costs one NATS message (and one reply) rather than one per
// message.
type batch struct {
	node, subject string
	// data is wireVersion, then one frame per message: its length (4
	// bytes, big-endian) and encodeForward's encoding.
	data []byte
	// held are the QoS 1/2 messages: parked when the batch cannot be
	// delivered, their acknowledgements (when not nil) released by the
	// node's reply.
	held []heldMsg
	acks int // held messages with an acknowledgement
	// onward says a message of the batch is for a session by name: one
	// this node passes on, whose sender may wait for it in turn (see
	// receive). Such a batch is parked after half of ForwardTimeout, so
	// that the sender has its answer before its own wait ends.
	onward bool
	// park says the batch is for the park stream, not for its node (gone,
	// or too far behind): its QoS 1/2 messages, parked together.
	park bool
}

// heldMsg is a QoS 1/2 message of a batch.
type heldMsg struct {
	ack      *tern.Ack
	off, end int // its encoding in batch.data
}

// batchLimit is the size past which a batch is closed and the next
// message starts another: the receiving node handles a batch while the
// next one travels.
const batchLimit = 64 << 10

var batchPool = sync.Pool{New: func() any { return &batch{data: make([]byte, 0, 4096)} }}

// parkHeld parks the held messages of b (all of them, or only those with
// an acknowledgement), releasing their acknowledgements once parked. b
// is not recycled: the park stream's publisher keeps its data for retries.
func (f *forwarder) parkHeld(b *batch, all bool) { f.parkHeldFrom(b, all, "") }

// parkHeldFrom is parkHeld for a batch sent with the reply subject ref
// (its node may have taken it, and answered too late): the parked
// messages name it, so that the node skips the copy if it did. They are
// parked as one message of the park stream (one Raft entry for the
// batch: parking at the rate messages are published would keep a
// replica that fell behind from ever catching up), unless the node is
// one that reads only single parked messages (an earlier version).
func (f *forwarder) parkHeldFrom(b *batch, all bool, ref string) {
	if !f.c.nodes.readsParkedBatches(b.node) {
		for _, h := range b.held {
			if h.ack != nil || all {
				f.parkMsgFrom(b.node, b.data[h.off:h.end], h.ack, ref)
			}
		}
		return
	}
	data := []byte{wireVersion}
	var acks []*tern.Ack
	n := 0
	for _, h := range b.held {
		if h.ack != nil || all {
			data = append(data, b.data[h.off-4:h.end]...) // the frame, its length included
			n++
			if h.ack != nil {
				acks = append(acks, h.ack)
			}
		}
	}
	if n == 0 {
		return
	}
	f.parkData(b.node, data, n, ref, func(err error) {
		for _, a := range acks {
			a.Release(err)
		}
	})
}

// release releases the acknowledgements of b with err and recycles it.
func (f *forwarder) release(b *batch, err error) {
	for _, h := range b.held {
		if h.ack != nil {
			h.ack.Release(err)
		}
	}
	f.recycle(b)
}

func (f *forwarder) recycle(b *batch) {
	if cap(b.data) > 4*batchLimit {
		return
	}
	clear(b.held)
	b.data, b.held, b.acks, b.onward = b.data[:0], b.held[:0], 0, false
	batchPool.Put(b)
}

// pending is a batch sent to another node whose reply the publishers'
// acknowledgements wait for.
type pending struct {
	b        *batch
	deadline time.Time
	id       uint64 // its reply subject's last token
}

// Counters of the forwarding, for the admin API and metrics.
type Counters struct {
	Sent        uint64 `json:"sent"`         // messages sent to other nodes
	Acked       uint64 `json:"acked"`        // QoS 1/2 sends another node acknowledged
	Timeouts    uint64 `json:"timeouts"`     // sends not acknowledged within ForwardTimeout
	Parked      uint64 `json:"parked"`       // messages parked for a node that was gone
	Received    uint64 `json:"received"`     // messages from other nodes
	Unparked    uint64 `json:"unparked"`     // parked messages this node took back
	Dropped     uint64 `json:"dropped"`      // QoS 0 messages for a node that was gone
	Failed      uint64 `json:"failed"`       // QoS 1/2 messages neither acknowledged nor parked
	ParkRetries uint64 `json:"park_retries"` // attempts to park a message again (no stream leader)
	ParkStalls  uint64 `json:"park_stalls"`  // times this node's park consumer stalled behind the stream leader, which was read instead
	Takeovers   uint64 `json:"takeovers"`    // sessions taken from another node
	HandedOver  uint64 `json:"handed_over"`  // sessions given to another node
	RouteWrites uint64 `json:"route_writes"` // route table changes written
	Restored    uint64 `json:"restored"`     // sessions restored from tern_subs (their node was gone)
	// RetainedSyncs counts the requests to tern_retained's stream leader
	// made before subscriptions read the retained messages (one serves
	// every SUBSCRIBE that came while the one before ran).
	RetainedSyncs uint64 `json:"retained_syncs"`
	// RetainedSyncFailed counts those after which subscriptions read the
	// retained messages this node had, without knowing they were the latest
	// (no answer from the leader, or no catching up, within 2 s each).
	RetainedSyncFailed uint64 `json:"retained_sync_failed"`
	// Orphaned counts QoS 1/2 messages from other nodes (or parked for
	// this one) that nothing here took: the session they were for had
	// moved on or ended, or no subscription matched any more.
	Orphaned uint64 `json:"orphaned"`
	// ParkedTaken counts messages parked for this node that it skipped:
	// copies of a batch it had taken and acknowledged, parked by a sender
	// that timed out before the answer came.
	ParkedTaken uint64 `json:"parked_taken"`
	// ParkCorrupt counts messages of the park stream for this node that
	// did not decode (a bug or a damaged store: what they held is lost).
	ParkCorrupt uint64 `json:"park_corrupt"`
	// OnceDropped counts QoS 2 messages from other nodes (or the park
	// stream) dropped as copies of one taken here before (see
	// Options.OnceEntries): sent again after their publisher's node
	// restarted, or parked as well.
	OnceDropped uint64 `json:"once_dropped"`
	// OnceEntries is the number of QoS 2 deliveries remembered for that;
	// OnceFull counts the times the oldest half was forgotten early, the
	// limit being reached.
	OnceEntries uint64 `json:"once_entries"`
	OnceFull    uint64 `json:"once_full"`
	// AgainReceived counts QoS 2 messages another node sent again after
	// its restart, their publisher having had no PUBREC
	// (tern.Delivery.Again): this node may have had them already, and
	// delivers them again unless a session's duplicate window knows them.
	AgainReceived uint64 `json:"again_received"`
	// PassedOn counts messages from other nodes this node passed on to
	// the node a session moved to, while those nodes still routed the
	// session's messages here (see tern.Server.ExportSession).
	PassedOn uint64 `json:"passed_on"`
	// TakenNotices counts the notices that a session this node held was
	// restored on another node while this one was thought gone (it is
	// shipped there), RoutedNotices those that every node routes a
	// session handed over by this node to its new node (passing on
	// stops).
	TakenNotices  uint64 `json:"taken_notices"`
	RoutedNotices uint64 `json:"routed_notices"`
	Shed          uint64 `json:"shed"` // QoS 0 messages dropped: this node was behind on other nodes' by maxBacklog, or another node behind on this one's by maxUnsent
}

// forwarder sends messages to other nodes and receives theirs.
type forwarder struct {
	c     *Cluster
	inbox string // prefix of the reply subjects
	seq   atomic.Uint64
	mu    sync.Mutex
	pend  map[uint64]*pending
	subs  []*nats.Subscription
	park  jetstream.Stream
	// acks are the acknowledgements owed to other nodes, by their reply
	// prefix: sent as one message per node once the messages waiting in
	// the subscription are handled (receive's goroutine only).
	acks    map[string][]byte
	dataSub *nats.Subscription
	cnt     struct {
		sent, acked, timeouts, parked, received, unparked, dropped, failed, parkRetries, parkStalls, takeovers, handedOver, routeWrites, restored, shed, retainedSyncs, retainedSyncFailed, orphaned, parkedTaken, parkCorrupt, onceDropped, againReceived, passedOn, takenNotices, routedNotices atomic.Uint64
	}
	parkSeq atomic.Uint64 // numbers the messages parked, for their message ids
	// omu guards the nodes' unsent batches (nodeRemote.out), ready (the
	// nodes that have some), busy (the sender was woken and has not found
	// ready empty since) and closed (the node stops: nothing more is
	// sent). wake wakes the sender.
	omu       sync.Mutex
	ready     []*nodeRemote
	busy      bool
	closed    bool
	wake      chan struct{}
	stopped   bool // guarded by mu: no more pending sends
	drainOnce sync.Once
	// onward holds the parked messages passed on to another node and not
	// yet safe there, by place in the park stream (takeParked), guarded
	// by onMu.
	onMu      sync.Mutex
	onward    map[parkKey]*parkedOnward
	onwardLog atomic.Int64 // when takeParked last logged a failure (unix nanoseconds)
	// orphanLog is when orphan last logged (unix nanoseconds).
	orphanLog atomic.Int64
	// parkSeen is the stream sequence of the last parked message taken.
	parkSeen atomic.Uint64
	// redrain asks drainPark to read the park stream again from there.
	redrain chan struct{}
	// taken remembers the batches from other nodes this node took and
	// acknowledged (by reply subject), for a while: a sender that timed
	// out before the answer came parked their messages for this node
	// too, and those copies are skipped (see tookBatch).
	taken batchesTaken
	// once remembers the QoS 2 messages taken here, to drop second copies.
	once *onceSet
}

// batchesTaken is a set of batch references kept for takenFor to
// takenFor*2: two generations, the older dropped when the newer is that
// old.
type batchesTaken struct {
	mu        sync.Mutex
	cur, prev map[string]struct{}
	since     time.Time // when cur was started
}

// takenFor is how long a taken batch is remembered at least: a parked
// copy of it comes within a forward's timeout and the park stream's
// latency, seconds at most while this node is up (a restarted node
// forgets, and takes the copies: delivered twice, not lost).
const takenFor = 30 * time.Second

// batchHeader names, on a message parked because its batch timed out,
// the batch it was sent in: its reply subject.
const batchHeader = "Tern-Batch"

// add remembers the batch ref.
func (t *batchesTaken) add(ref string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if t.cur == nil || now.Sub(t.since) > takenFor {
		t.prev, t.cur, t.since = t.cur, make(map[string]struct{}), now
	}
	t.cur[ref] = struct{}{}
}

// has reports whether the batch ref was taken here lately.
func (t *batchesTaken) has(ref string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, a := t.cur[ref]
	_, b := t.prev[ref]
	return a || b
}

func newForwarder(c *Cluster) *forwarder {
	return &forwarder{c: c, pend: make(map[uint64]*pending), acks: make(map[string][]byte), onward: make(map[parkKey]*parkedOnward), once: newOnceSet(c.opts.OnceEntries),
		redrain: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
}

func (f *forwarder) counters() Counters {
	entries, full := f.once.stats()
	return Counters{OnceEntries: uint64(entries), OnceFull: full, Sent: f.cnt.sent.Load(), Acked: f.cnt.acked.Load(), Timeouts: f.cnt.timeouts.Load(),
		Parked: f.cnt.parked.Load(), Received: f.cnt.received.Load(), Unparked: f.cnt.unparked.Load(),
		Dropped: f.cnt.dropped.Load(), Failed: f.cnt.failed.Load(), ParkRetries: f.cnt.parkRetries.Load(),
		ParkStalls: f.cnt.parkStalls.Load(), Takeovers: f.cnt.takeovers.Load(),
		HandedOver: f.cnt.handedOver.Load(), RouteWrites: f.cnt.routeWrites.Load(), Restored: f.cnt.restored.Load(),
		Shed: f.cnt.shed.Load(), Orphaned: f.cnt.orphaned.Load(), ParkedTaken: f.cnt.parkedTaken.Load(), ParkCorrupt: f.cnt.parkCorrupt.Load(), OnceDropped: f.cnt.onceDropped.Load(), AgainReceived: f.cnt.againReceived.Load(), PassedOn: f.cnt.passedOn.Load(),
		TakenNotices: f.cnt.takenNotices.Load(), RoutedNotices: f.cnt.routedNotices.Load(), RetainedSyncs: f.cnt.retainedSyncs.Load(), RetainedSyncFailed: f.cnt.retainedSyncFailed.Load()}
}

// subscribe listens to this node's subjects: messages, replies, route
// synchronisation and session handover.
func (f *forwarder) subscribe() error {
	c := f.c
	self := c.opts.Node
	f.inbox = "tern.r." + self + "." + c.instance + "."
	type sub struct {
		nc   *nats.Conn
		subj string
		h    nats.MsgHandler
	}
	for _, s := range []sub{
		{c.data, "tern.n." + self + ".d", f.receive},
		{c.data, f.inbox + "*", f.reply},
		{c.nc, "tern.n." + self + ".sync", c.routes.syncRequest},
		{c.nc, "tern.n." + self + ".has", c.routes.hasRequest},
		{c.nc, "tern.n." + self + ".route", c.routes.routeRequest},
		{c.nc, "tern.n." + self + ".ctl", c.reg.control},
	} {
		ns, err := s.nc.Subscribe(s.subj, s.h)
		if err != nil {
			return err
		}
		ns.SetPendingLimits(-1, -1) // never dropped: a QoS 1/2 sender would wait for ForwardTimeout
		f.subs = append(f.subs, ns)
		if s.subj == "tern.n."+self+".d" {
			f.dataSub = ns
		}
	}
	for _, nc := range []*nats.Conn{c.data, c.nc} {
		if err := nc.Flush(); err != nil {
			return err
		}
	}
	c.goTracked(f.sweep)
	c.goTracked(f.sender)
	return nil
}

// send forwards m to the node of r: into the node's open batch, for the
// sender. A QoS 1/2 message with an ack waits for the node's reply to
// the batch; a node that is gone gets it parked.
//
// A node that is gone (or too far behind: maxUnsent) gets no QoS 0
// messages (counted as dropped, or shed), and its QoS 1/2 messages go
// into batches for the park stream, parked by the sender.
func (f *forwarder) send(r *nodeRemote, m *tern.Message, d tern.Delivery, ack *tern.Ack) {
	park := !r.alive.Load()
	if park && d.QoS == 0 {
		f.cnt.dropped.Add(1)
		return
	}
	f.omu.Lock()
	if f.closed {
		f.omu.Unlock()
		if ack != nil && d.QoS > 0 {
			ack.Hold()
			ack.Release(errStopping)
		}
		return
	}
	if !park && r.unsent >= maxUnsent {
		if d.QoS == 0 {
			f.omu.Unlock()
			f.cnt.shed.Add(1)
			return
		}
		park = true
	}
	if !park {
		f.cnt.sent.Add(1)
	}
	var b *batch
	if n := len(r.out); n > 0 && len(r.out[n-1].data) < batchLimit && r.out[n-1].park == park {
		b = r.out[n-1]
	} else {
		b = batchPool.Get().(*batch)
		b.node, b.subject, b.park = r.node, r.subject, park
		b.data = append(b.data, wireVersion)
		r.out = append(r.out, b)
	}
	off := len(b.data)
	b.data = appendFrame(b.data, m, d)
	if !park {
		r.unsent += len(b.data) - off
	}
	if d.QoS > 0 {
		if ack != nil {
			ack.Hold()
			b.acks++
		}
		b.held = append(b.held, heldMsg{ack: ack, off: off + 4, end: len(b.data)})
		if d.ClientID != "" {
			b.onward = true
		}
	}
	if !r.queued {
		r.queued = true
		f.ready = append(f.ready, r)
	}
	wake := !f.busy
	f.busy = true
	f.omu.Unlock()
	if wake {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

var errStopping = errors.New("cluster: node stopping")

// sender publishes the batches, each as one NATS message, in the order
// they were filled, until none is left; on stop it fails what was not
// sent. Publishing here rather than on the routing goroutines keeps them
// from waiting for the NATS connection (its flusher holds the
// connection's lock while the embedded server reads), and lets a batch
// grow while the sender waits for a CPU: measured, twice the cross-node
// QoS 1 throughput of publishing the first message of a burst at once.
func (f *forwarder) sender() {
	var ready []*nodeRemote
	var out []*batch
	for {
		select {
		case <-f.c.ctx.Done():
		case <-f.wake:
		}
		for {
			stopping := f.c.ctx.Err() != nil
			f.omu.Lock()
			if len(f.ready) == 0 && !stopping {
				f.busy = false
				f.omu.Unlock()
				break
			}
			f.closed = stopping
			ready, f.ready = f.ready, ready[:0]
			for _, r := range ready {
				out = append(out, r.out...)
				clear(r.out)
				r.out, r.queued, r.unsent = r.out[:0], false, 0
			}
			f.omu.Unlock()
			clear(ready)
			for i, b := range out {
				if stopping {
					f.release(b, errStopping)
				} else {
					f.publish(b)
				}
				out[i] = nil
			}
			out = out[:0]
			if stopping {
				return
			}
		}
	}
}

// publish sends one batch: with a reply subject when publishers wait.
// A batch for the park stream is parked.
func (f *forwarder) publish(b *batch) {
	if b.park {
		f.parkHeld(b, true)
		return
	}
	if b.acks == 0 {
		if err := f.c.data.Publish(b.subject, b.data); err != nil {
			f.parkHeld(b, true)
			return
		}
		f.recycle(b)
		return
	}
	id := f.seq.Add(1)
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		f.release(b, errStopping)
		return
	}
	wait := f.c.opts.ForwardTimeout
	if b.onward {
		wait /= 2
	}
	f.pend[id] = &pending{b: b, deadline: time.Now().Add(wait), id: id}
	f.mu.Unlock()
	msg := &nats.Msg{Subject: b.subject, Reply: f.inbox + strconv.FormatUint(id, 10), Data: b.data}
	if err := f.c.data.PublishMsg(msg); err != nil {
		if p := f.take(id); p != nil {
			f.parkHeld(p.b, true)
		}
	}
}

// take removes and returns a pending send, nil if it was answered.
func (f *forwarder) take(id uint64) *pending {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pend[id]
	delete(f.pend, id)
	return p
}

// reply takes another node's answer to a QoS 1/2 send.
func (f *forwarder) reply(msg *nats.Msg) {
	suffix := msg.Subject[len(f.inbox):]
	if suffix == "b" {
		f.batchReply(msg.Data)
		return
	}
	id, err := strconv.ParseUint(suffix, 10, 64)
	if err != nil {
		return
	}
	p := f.take(id)
	if p == nil {
		return // timed out, parked already
	}
	if msg.Header.Get("Status") == "503" { // no responders: the node is gone
		f.parkHeld(p.b, true)
		return
	}
	f.cnt.acked.Add(uint64(p.b.acks))
	if len(msg.Data) > 0 {
		f.release(p.b, errors.New("cluster: node "+p.b.node+": "+string(msg.Data)))
		return
	}
	f.release(p.b, nil)
}

// batchReply takes another node's acknowledgement of several sends: their
// ids, in order.
func (f *forwarder) batchReply(b []byte) {
	for len(b) > 0 {
		id, n := binary.Uvarint(b)
		if n <= 0 {
			return
		}
		b = b[n:]
		if p := f.take(id); p != nil {
			f.cnt.acked.Add(uint64(p.b.acks))
			f.release(p.b, nil)
		}
	}
}

// sweep parks the sends not answered within ForwardTimeout.
func (f *forwarder) sweep() {
	every := max(f.c.opts.ForwardTimeout/4, 20*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-f.c.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var late []*pending
		f.mu.Lock()
		for id, p := range f.pend {
			if now.After(p.deadline) {
				late = append(late, p)
				delete(f.pend, id)
			}
		}
		f.mu.Unlock()
		for _, p := range late {
			f.cnt.timeouts.Add(uint64(p.b.acks))
			f.parkHeldFrom(p.b, false, f.inbox+strconv.FormatUint(p.id, 10))
		}
	}
}

// stop fails what still waits for a reply: the publishers' connections
// are closing anyway.
func (f *forwarder) stop() {
	f.mu.Lock()
	pend := f.pend
	f.pend = make(map[uint64]*pending)
	f.stopped = true
	f.mu.Unlock()
	for _, p := range pend {
		f.release(p.b, errStopping)
	}
}

// receive takes a message another node routed here.
func (f *forwarder) receive(msg *nats.Msg) {
	c := f.c
	defer func() {
		if len(f.acks) > 0 {
			// The message being handled still counts as pending.
			if n, _, _ := f.dataSub.Pending(); n <= 1 {
				f.flushAcks()
			}
		}
	}()
	stored, onward, astray, keys, err := f.receiveBatch(msg.Data)
	// The QoS 2 messages taken are remembered (onceSet) once safe here,
	// not before: a copy that comes meanwhile (its first answer an
	// error, or not sent yet) must be taken too.
	remember := func() { f.once.add(keys...) }
	if err != nil {
		c.log.Warn("messages from another node refused", "err", err)
		if msg.Reply != "" {
			c.data.Publish(msg.Reply, []byte(err.Error()))
		}
		return
	}
	if msg.Reply == "" {
		for _, in := range onward {
			in.Then(func(error) {})
		}
		if len(astray) > 0 {
			c.goTracked(func() { f.toOwners(astray, func(error) {}) })
		}
		if len(keys) > 0 && len(onward) == 0 && len(astray) == 0 {
			if stored {
				c.srv.AfterStore(func(err error) {
					if err == nil {
						remember()
					}
				})
			} else {
				remember()
			}
		}
		return
	}
	reply := msg.Reply
	respond := func(err error) {
		var b []byte
		if err != nil {
			b = []byte(err.Error())
		} else {
			f.taken.add(reply)
			remember()
		}
		c.data.Publish(reply, b)
	}
	if len(onward) > 0 || len(astray) > 0 {
		// Some went on to a session that moved to another node: answered
		// once that node has them, or this node could die with them
		// acknowledged.
		a := tern.NewAck(respond)
		for _, in := range onward {
			a.Hold()
			in.Then(a.Release)
		}
		if len(astray) > 0 {
			a.Hold()
			c.goTracked(func() { f.toOwners(astray, a.Release) })
		}
		if stored {
			a.Hold()
			c.srv.AfterStore(a.Release)
		}
		a.Release(nil)
		return
	}
	if stored {
		c.srv.AfterStore(respond)
		return
	}
	// Acknowledged in a batch, once the messages already waiting are
	// handled: one reply per node and burst rather than per message.
	if i := strings.LastIndexByte(reply, '.'); i > 0 && strings.HasPrefix(reply, "tern.r.") {
		if id, err := strconv.ParseUint(reply[i+1:], 10, 64); err == nil {
			prefix := reply[:i+1]
			f.taken.add(reply)
			remember()
			f.acks[prefix] = binary.AppendUvarint(f.acks[prefix], id)
			if len(f.acks[prefix]) > 64 { // about 20 batches: the sender's publishers wait for them
				f.flushAcks()
			}
			return
		}
	}
	respond(nil)
}

// maxBacklog bounds what may wait in the subscription to this node's
// messages before QoS 0 ones are dropped: a node that cannot keep up
// would otherwise queue them there without limit (a single node drops
// QoS 0 messages at its subscribers' MaxPendingBytes instead).
const maxBacklog = 16 << 20

// receiveBatch routes the messages of a batch (see batch) here and
// reports whether any went to the store, which were passed on to another
// node, and the QoS 1/2 ones sent for a session by name that is not here
// (it moved on while they were on their way: see toOwners). A batch that
// does not decode is refused from the bad frame on.
func (f *forwarder) receiveBatch(b []byte) (stored bool, onward []tern.Injected, astray []parkedOnward, keys []uint64, err error) {
	qos0 := true
	if _, bytes, _ := f.dataSub.Pending(); bytes > maxBacklog {
		qos0 = false
	}
	shed, err := decodeBatch(b, qos0, func(m *tern.Message, d tern.Delivery) {
		f.cnt.received.Add(1)
		if d.Again {
			f.cnt.againReceived.Add(1)
		}
		k, once := f.once.onceKey(m, d)
		if once && f.once.has(k) {
			f.cnt.onceDropped.Add(1) // taken here before: acknowledged, not delivered twice
			return
		}
		in := f.inject(m, d)
		if once && (in.Queued > 0 || in.Stored) {
			keys = append(keys, k) // remembered once the batch is safe here (receive)
		}
		if in.Stored {
			stored = true
		}
		switch {
		case in.Onward():
			f.cnt.passedOn.Add(1)
			onward = append(onward, in)
		case in.Queued > 0 || min(m.QoS, d.QoS) == 0:
		case d.ClientID != "":
			astray = append(astray, parkedOnward{m: m, d: d})
		default:
			f.orphan(m, d, "forward")
		}
	})
	if shed > 0 {
		f.cnt.shed.Add(uint64(shed))
	}
	return stored, onward, astray, keys, err
}

// toOwners passes messages sent here for sessions by name that are not
// here on to each session's owner of the moment (a session that moved on
// while they were on its way), and calls done once those nodes have them,
// with an error when one did not take them. While the registry does not
// answer (a stream leader being elected), they are parked for this node:
// taken back from the park stream, they go to the owner then (takeParked).
// What belongs to no session (it ended) is counted as orphaned.
func (f *forwarder) toOwners(astray []parkedOnward, done func(error)) {
	c := f.c
	a := tern.NewAck(done)
	type lookup struct {
		owner   string
		unknown bool // the registry did not answer
	}
	owners := make(map[string]lookup) // one registry read per session
	for _, x := range astray {
		id := x.d.ClientID
		l, ok := owners[id]
		if !ok {
			// Within half a forward's timeout: the sender waits for the
			// answer no longer than that.
			owner, err := c.reg.ownerWithin(id, "", c.opts.ForwardTimeout/2)
			l = lookup{owner: owner, unknown: err != nil}
			owners[id] = l
		}
		switch owner := l.owner; {
		case l.unknown:
			a.Hold()
			f.parkMsg(c.opts.Node, encodeForward(x.m, x.d), a)
		case owner == "" || owner == c.opts.Node:
			f.orphan(x.m, x.d, "forward")
		default:
			c.nodes.remote(owner).Forward(x.m, x.d, a)
		}
	}
	a.Release(nil)
}

// flushAcks sends the batched acknowledgements.
func (f *forwarder) flushAcks() {
	for prefix, b := range f.acks {
		f.c.data.Publish(prefix+"b", b)
		delete(f.acks, prefix)
	}
}

// orphan counts a QoS 1/2 message from another node (or the park stream)
// that nothing here took: the session it was for is not here (it moved
// on, or ended), or no subscription matches it any more. Logged at most
// once a second.
func (f *forwarder) orphan(m *tern.Message, d tern.Delivery, via string) {
	f.cnt.orphaned.Add(1)
	if now := time.Now().UnixNano(); now-f.orphanLog.Load() > int64(time.Second) {
		f.orphanLog.Store(now)
		f.c.log.Warn("a message from another node found nothing here to take it", "via", via, "client", d.ClientID,
			"filter", d.Filter, "topic", m.Topic, "orphaned", f.cnt.orphaned.Load())
	}
}

// injectParked is inject for a message parked for this node: a session
// shipped since gets it at its new node (tern.Server.InjectParked; one
// for a session by name goes to the session's owner now). then calls
// back once what was passed on to another node is safe there.
func (f *forwarder) injectParked(m *tern.Message, d tern.Delivery) (in tern.Injected, then func(func(error))) {
	if d.ClientID == "" {
		in = f.c.srv.InjectParked(m, d.Group, d.Filter)
		return in, in.Then
	}
	in = f.inject(m, d)
	if in.Queued > 0 || min(m.QoS, d.QoS) == 0 {
		return in, in.Then
	}
	owner, err := f.c.reg.ownerNow(d.ClientID, "")
	if err != nil {
		// The registry does not answer (a stream leader being elected):
		// kept in the park stream and tried again (takeParked).
		in.Queued = 1
		return in, func(done func(error)) { done(fmt.Errorf("the owner of %s not known: %w", d.ClientID, err)) }
	}
	if owner != "" && owner != f.c.opts.Node {
		in.Queued = 1
		return in, func(done func(error)) {
			a := tern.NewAck(done)
			f.c.nodes.remote(owner).Forward(m, d, a)
			a.Release(nil)
		}
	}
	return in, in.Then
}

// parkedOnward is a parked message passed on to another node, not yet
// safe there: the park stream keeps it (drainPark purges below it).
type parkedOnward struct {
	m      *tern.Message
	d      tern.Delivery
	failed bool // the other node did not take it: passed on again
	// once and key: a QoS 2 message remembered in onceSet once safe.
	once bool
	key  uint64
}

// parkKey is the place of a parked message: the sequence of its message
// in the park stream, and its frame in it (0 for a single message).
type parkKey struct {
	seq   uint64
	frame int
}

// takeParkedOnce is takeParked for a parked message read from the
// stream, dropped when this node took it before (onceSet).
func (f *forwarder) takeParkedOnce(seq parkKey, m *tern.Message, d tern.Delivery) {
	f.cnt.unparked.Add(1)
	k, once := f.once.onceKey(m, d)
	if once && f.once.has(k) {
		f.cnt.onceDropped.Add(1)
		return
	}
	f.takeParked(seq, &parkedOnward{m: m, d: d, once: once, key: k})
}

// takeParked routes a parked message (seq in the park stream) here, or
// on to where its session went, and keeps it from the purge until it is
// safe there. A QoS 2 message taken (o.once) is remembered in onceSet
// then, not before: a copy that comes while it is not safe yet is taken
// too.
func (f *forwarder) takeParked(seq parkKey, o *parkedOnward) {
	m, d := o.m, o.d
	in, then := f.injectParked(m, d)
	if in.Queued == 0 && min(m.QoS, d.QoS) > 0 {
		f.orphan(m, d, "park")
	}
	taken := in.Queued > 0 || in.Stored
	f.onMu.Lock()
	o.failed = false
	f.onward[seq] = o
	f.onMu.Unlock()
	then(func(err error) {
		f.onMu.Lock()
		defer f.onMu.Unlock()
		if err == nil {
			delete(f.onward, seq)
			if o.once && taken {
				f.once.add(o.key)
			}
			return
		}
		f.onward[seq].failed = true
		if now := time.Now().UnixNano(); now-f.onwardLog.Load() > int64(time.Second) {
			f.onwardLog.Store(now)
			f.c.log.Warn("a parked message passed on to another node was not taken there: passing it on again", "seq", seq, "err", err)
		}
	})
}

// retryOnward passes on again the parked messages another node did not
// take.
func (f *forwarder) retryOnward() {
	f.onMu.Lock()
	var again []parkKey
	for seq, o := range f.onward {
		if o.failed {
			again = append(again, seq)
		}
	}
	f.onMu.Unlock()
	for _, seq := range again {
		f.onMu.Lock()
		o := f.onward[seq]
		f.onMu.Unlock()
		if o != nil {
			f.takeParked(seq, o)
		}
	}
}

// purgeable returns the last park sequence that may be purged: below
// every parked message still on its way to another node.
func (f *forwarder) purgeable(last uint64) uint64 {
	f.onMu.Lock()
	defer f.onMu.Unlock()
	for k := range f.onward {
		last = min(last, k.seq-1)
	}
	return last
}

// inject routes a message from another node to this node's subscribers,
// or to the session it was sent for.
func (f *forwarder) inject(m *tern.Message, d tern.Delivery) tern.Injected {
	if d.ClientID != "" {
		if f.c.reg.holdFor(d.ClientID, m, d) {
			return tern.Injected{Queued: 1}
		}
		if !f.c.srv.SubscribedTo(d.ClientID, m.Topic, d.Group, d.Filter) {
			// Not here (see toOwners), or not the session it was for.
			return tern.Injected{}
		}
		return f.c.srv.InjectTo(d.ClientID, m, d)
	}
	return f.c.srv.Inject(m, d.Group, d.Filter)
}

// parkStream is the stream of messages for nodes that were gone.
const parkStream = "tern_park"

// setupPark creates the park stream.
func (f *forwarder) setupPark(ctx context.Context, replicas int) error {
	if f.park != nil {
		return nil
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	s, err := f.c.js.Stream(lctx, parkStream)
	cancel()
	if errors.Is(err, jetstream.ErrStreamNotFound) && f.c.ns.JetStreamIsLeader() {
		s, err = f.c.js.CreateStream(ctx, jetstream.StreamConfig{Name: parkStream, Subjects: []string{"tern.park.>"},
			Replicas: replicas, Storage: jetstream.FileStorage, MaxAge: 7 * 24 * time.Hour,
			// The window in which a message id is kept to drop a second
			// copy: a retry of parkMsg comes within parkRetryFor; longer
			// would cost memory per parked message for nothing.
			Duplicates: parkRetryFor + 5*time.Second})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = f.c.js.Stream(ctx, parkStream)
		}
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", parkStream, err)
	}
	f.park = s
	return nil
}

// parkMsg stores a QoS 1/2 message for a node that did not take it, and
// releases ack (when not nil) once a quorum has it. A write the stream
// refuses (no leader: an election after a node died, which takes seconds)
// is tried again for up to parkRetryFor while the publisher waits for its
// acknowledgement: failing it would make the publisher send the message
// again, and whatever the first routing reached would get it twice. The
// attempts carry one message id, so the stream keeps one copy even when an
// attempt that timed out was stored after all.
func (f *forwarder) parkMsg(node string, data []byte, ack *tern.Ack) {
	f.parkMsgFrom(node, data, ack, "")
}

// parkMsgFrom is parkMsg for a message of the batch sent with the reply
// subject ref ("": none).
func (f *forwarder) parkMsgFrom(node string, data []byte, ack *tern.Ack, ref string) {
	f.parkData(node, data, 0, ref, func(err error) {
		if ack != nil {
			ack.Release(err)
		}
	})
}

// framesHeader marks a message of the park stream that holds several
// parked messages: a batch (see batch.data), with this many frames.
// Without it, the message is one encodeForward encoding.
const framesHeader = "Tern-Frames"

// parkData parks data for node: one message (frames 0), or a batch of
// frames messages. done is called once a quorum has it, or with the error
// that stopped parkMsg's attempts.
func (f *forwarder) parkData(node string, data []byte, frames int, ref string, done func(error)) {
	msg := &nats.Msg{Subject: "tern.park." + node, Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, f.c.instance+"."+strconv.FormatUint(f.parkSeq.Add(1), 36))
	if ref != "" {
		msg.Header.Set(batchHeader, ref)
	}
	if frames > 0 {
		msg.Header.Set(framesHeader, strconv.Itoa(frames))
	}
	count := uint64(max(frames, 1))
	fut, err := f.c.js.PublishMsgAsync(msg)
	go func() {
		if err == nil {
			select {
			case <-fut.Ok():
			case err = <-fut.Err():
			}
		}
		wait := 100 * time.Millisecond
		for deadline := time.Now().Add(parkRetryFor); err != nil && f.c.ctx.Err() == nil && time.Now().Before(deadline); {
			select {
			case <-f.c.ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, time.Second)
			f.cnt.parkRetries.Add(1)
			if fut, err = f.c.js.PublishMsgAsync(msg); err == nil {
				select {
				case <-fut.Ok():
				case err = <-fut.Err():
				}
			}
		}
		if err != nil {
			f.cnt.failed.Add(count)
			f.c.log.Warn("messages for a node that is gone could not be parked", "peer", node, "messages", count, "err", err)
		} else {
			f.cnt.parked.Add(count)
		}
		done(err)
	}()
}

// parkRetryFor bounds the attempts to park one message (parkMsg): longer
// than a JetStream election after a node died (a few seconds).
const parkRetryFor = 15 * time.Second

// startDrainPark takes back, from then on, what other nodes parked for
// this one, and removes it from the stream once stored here.
func (f *forwarder) startDrainPark() {
	f.drainOnce.Do(func() { f.c.goTracked(f.drainPark) })
}

func (f *forwarder) drainPark() {
	c := f.c
	subj := "tern.park." + c.opts.Node
	last := &f.parkSeen
	var cons jetstream.ConsumeContext
	// take routes one parked message here, once: the consumer's callback
	// and a read from the stream leader (catchUp) may both see it.
	var takeMu sync.Mutex
	take := func(seq uint64, data []byte, h nats.Header) {
		takeMu.Lock()
		defer takeMu.Unlock()
		if seq <= last.Load() {
			return
		}
		f.takeParkedMsg(seq, data, h)
		last.Store(seq)
	}
	// open starts reading after the last message taken. A short pull
	// expiry makes the consumer notice a lost route in seconds (missed
	// heartbeats) and start again, rather than in a minute.
	open := func() bool {
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{parkConsumeSubject(subj)}}
		if seq := last.Load(); seq > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq+1
		}
		oc, err := f.park.OrderedConsumer(c.ctx, cfg)
		if err == nil {
			cons, err = oc.Consume(func(msg jetstream.Msg) {
				md, err := msg.Metadata()
				if err != nil {
					return
				}
				take(md.Sequence.Stream, msg.Data(), msg.Headers())
			}, jetstream.PullExpiry(5*time.Second))
		}
		if err != nil && c.ctx.Err() == nil {
			c.log.Warn("reading the park stream", "err", err)
		}
		return err == nil
	}
	// The consumer is opened again a second after a failure, from the
	// loop below: meanwhile the watch goes on, and reads from the leader
	// when there is one and the consumer cannot be made.
	var nextOpen time.Time
	reopen := func() {
		if cons != nil {
			cons.Stop()
			cons = nil
		}
		if !open() {
			nextOpen = time.Now().Add(time.Second)
		}
	}
	reopen()
	defer func() {
		if cons != nil {
			cons.Stop()
		}
	}()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	watch := time.NewTicker(parkWatchEvery)
	defer watch.Stop()
	var purged uint64
	var w parkWatch
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-f.redrain:
			// Back from a partition: the consumer may not have noticed
			// what it missed yet.
			reopen()
			continue
		case <-watch.C:
			if f.parkStalled(&w, subj) {
				// The consumer reads a replica that does not catch up (a
				// node back from a partition or a restart can stay behind
				// for minutes): what the leader has is read from it.
				c.log.Warn("park stream consumer stalled behind the stream leader: reading from the leader",
					"taken", last.Load(), "leader_last", w.target)
				f.cnt.parkStalls.Add(1)
				if cons != nil {
					cons.Stop()
					cons = nil
				}
				f.catchUp(subj, w.target, take)
				reopen()
			}
			continue
		case <-t.C:
		}
		if cons == nil && time.Now().After(nextOpen) {
			reopen()
		}
		f.retryOnward()
		seq := f.purgeable(last.Load())
		if seq <= purged {
			continue
		}
		done := make(chan error, 1)
		c.srv.AfterStore(func(err error) { done <- err })
		select {
		case err := <-done:
			if err != nil {
				continue
			}
		case <-c.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		err := f.park.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(seq+1))
		cancel()
		if err == nil {
			purged = seq
		}
	}
}

// takeParkedMsg takes the message seq of the park stream, with data and
// the headers h: one parked message, or a batch of them (framesHeader).
// What does not decode is counted as corrupt and logged.
func (f *forwarder) takeParkedMsg(seq uint64, data []byte, h nats.Header) {
	v := h.Get(framesHeader)
	frames := 1
	if v != "" {
		frames, _ = strconv.Atoi(v)
	}
	if ref := h.Get(batchHeader); ref != "" && f.taken.has(ref) {
		// Its batch came and was taken here; the sender parked it too,
		// having timed out before the answer: a copy.
		f.cnt.parkedTaken.Add(uint64(max(frames, 0)))
		return
	}
	var err error
	if v == "" {
		var m *tern.Message
		var d tern.Delivery
		if m, d, err = decodeForward(data); err == nil {
			f.takeParkedOnce(parkKey{seq: seq}, m, d)
		}
	} else {
		i := 0
		_, err = decodeBatch(data, true, func(m *tern.Message, d tern.Delivery) {
			f.takeParkedOnce(parkKey{seq: seq, frame: i}, m, d)
			i++
		})
		if err == nil && i != frames {
			err = fmt.Errorf("%d messages in a batch that says %s", i, v)
		}
	}
	if err != nil {
		f.cnt.parkCorrupt.Add(1)
		f.c.log.Error("a message of the park stream does not decode: what it holds is lost", "seq", seq, "err", err)
	}
}

// parkConsumeSubject gives the subject drainPark's consumer reads: subj,
// but a test makes the consumer stall with another.
var parkConsumeSubject = func(subj string) string { return subj }

// parkWatchEvery is how often drainPark compares what it took with the
// last message the stream leader holds for this node; parkStallAfter how
// many looks in a row with no progress make the consumer stalled.
const (
	parkWatchEvery = 2 * time.Second
	parkStallAfter = 2
)

// parkWatch is drainPark's view of its consumer's progress.
type parkWatch struct {
	seen   uint64 // what was taken at the last look
	target uint64 // the leader's last message for this node then
	still  int    // looks in a row that found the consumer behind, with no progress
}

// parkStalled asks the stream leader for its last message parked for this
// node, and reports whether the consumer has been behind it without
// progress for parkStallAfter looks.
func (f *forwarder) parkStalled(w *parkWatch, subj string) bool {
	ctx, cancel := context.WithTimeout(f.c.ctx, parkWatchEvery)
	msg, err := f.park.GetLastMsgForSubject(ctx, subj) // the leader: tern_park has no direct gets
	cancel()
	seen := f.parkSeen.Load()
	switch {
	case err != nil || msg.Sequence <= seen:
		w.still = 0 // nothing parked, all of it taken, or no leader to ask
	case seen == w.seen:
		w.still++
	default:
		w.still = 1
	}
	w.seen, w.target = seen, 0
	if err == nil {
		w.target = msg.Sequence
	}
	if w.still < parkStallAfter {
		return false
	}
	w.still = 0
	return true
}

// catchUp reads what the stream leader holds for this node after the last
// message taken, one message at a time, into take, up to the message
// target (what comes after is for the consumer again).
func (f *forwarder) catchUp(subj string, target uint64, take func(seq uint64, data []byte, h nats.Header)) {
	c := f.c
	for c.ctx.Err() == nil && f.parkSeen.Load() < target {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		msg, err := f.park.GetMsg(ctx, f.parkSeen.Load()+1, jetstream.WithGetMsgSubject(subj))
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return
		case err != nil:
			c.log.Warn("reading the park stream from its leader", "err", err)
			return
		}
		take(msg.Sequence, msg.Data, msg.Header)
	}
}

// parkTaken waits, at most wait, until the messages parked for this node
// up to now have been taken into its sessions: after a partition, before
// the sessions that moved meanwhile are shipped with what they hold.
func (f *forwarder) parkTaken(wait time.Duration) bool {
	c := f.c
	select {
	case f.redrain <- struct{}{}:
	default:
	}
	ctx, cancel := context.WithTimeout(c.ctx, wait)
	defer cancel()
	var seq uint64
	for seq == 0 {
		msg, err := f.park.GetLastMsgForSubject(ctx, "tern.park."+c.opts.Node)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return true // nothing parked, or all of it taken and purged
		case err == nil:
			seq = msg.Sequence
		case ctx.Err() != nil:
			return false
		default:
			time.Sleep(100 * time.Millisecond) // JetStream still electing after the heal: asked again
		}
	}
	for f.parkSeen.Load() < seq {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond): // polled: the consumer's callback has no event to wait on
		}
	}
	return true
}
