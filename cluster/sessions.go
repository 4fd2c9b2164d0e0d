package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
)

// registry is this node's side of tern_sessions, the client identifier
// registry: which node holds each client's session, with an epoch that
// every CONNECT raises by compare-and-set. The last CONNECT wins, as
// MQTT wants, and two nodes never both think they won the same epoch.
type registry struct {
	c  *Cluster
	mu sync.Mutex
	// taken holds, for a while, the epochs other nodes claimed of client
	// identifiers this node handed over: a connection here that won an
	// older epoch must not stay.
	taken map[string]takenBy
	// claimed holds, for a while, the client identifiers CONNECTs on this
	// node claimed (SessionEnded of a session restored from the store).
	claimed map[string]time.Time
	puts    int
	// shipMargin: see defaultShipMargin.
	shipMargin time.Duration
	// parts holds the later parts of sessions handed over in several
	// (splitSession), until the new node fetches them.
	parts map[string]*handoverParts
	// attaching holds, by client identifier, what reached a session a
	// CONNECT here is bringing over (a late ship, messages its former node
	// passes on while it drains) before the session exists here; see
	// holdFor.
	attaching map[string]*attachHeld
	heldBytes int
}

// attachHeld is what reached a session while CONNECTs here were
// attaching it: parts of its queue shipped by a node it was on, and
// messages for it, in the order they came.
type attachHeld struct {
	refs   int // CONNECTs attaching it
	states []*tern.SessionState
	msgs   []attachMsg
	// shipped names the nodes whose whole ship (its last part) is held:
	// watchPending follows them once the parts are in.
	shipped []string
}

type attachMsg struct {
	m *tern.Message
	d tern.Delivery
}

// dupWindow is how long a session that came from another node (handed
// over, restored, or made of what was shipped) drops a second copy of a
// message it already took (tern.Server.ExpectDuplicates): its former node
// may pass messages on while its subscriptions drain, and ship what it
// kept once it is back (after its restart and up to parkWaitMax); the
// other nodes send the same messages directly meanwhile. A node down for
// longer ships after the window: its copies are delivered again.
const dupWindow = 3 * time.Minute

// maxHeldBytes bounds the payload held for sessions being attached (the
// seconds of a restore after a node died): what is shipped beyond it is
// refused, and its node tries again.
const maxHeldBytes = 64 << 20

// handoverParts are the parts of a session handed over that its new node
// has not fetched yet.
type handoverParts struct {
	parts []*tern.SessionState // the first one is sent with the answer
	at    time.Time
}

type takenBy struct {
	epoch uint64
	at    time.Time
}

func newRegistry(c *Cluster) *registry {
	return &registry{c: c, taken: make(map[string]takenBy), claimed: make(map[string]time.Time), shipMargin: defaultShipMargin,
		parts: make(map[string]*handoverParts), attaching: make(map[string]*attachHeld)}
}

// startAttach marks id as being attached here: what comes for its session
// until the CONNECT's gate ends is held (holdFor, holdState) and then put
// into it in order (endAttach), not dropped for want of a session.
func (r *registry) startAttach(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.attaching[id]
	if h == nil {
		h = &attachHeld{}
		r.attaching[id] = h
	}
	h.refs++
}

// holdFor keeps m for the session of id while a CONNECT here attaches it,
// and reports whether it did.
func (r *registry) holdFor(id string, m *tern.Message, d tern.Delivery) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.attaching[id]
	if h == nil {
		return false
	}
	if r.heldBytes+len(m.Payload) > maxHeldBytes {
		r.c.log.Warn("message for a session being attached not held: too much held for sessions being attached",
			"client", id, "held_bytes", r.heldBytes)
		return false
	}
	r.heldBytes += len(m.Payload)
	h.msgs = append(h.msgs, attachMsg{m, d})
	return true
}

// holdState keeps st, shipped for the session of id, while a CONNECT here
// attaches it. It reports whether it did, and an error when it cannot
// hold more (the shipping node tries again).
func (r *registry) holdState(id string, st *tern.SessionState, from string, last bool) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.attaching[id]
	if h == nil {
		return false, nil
	}
	n := 0
	for _, m := range st.Messages {
		n += len(m.Payload)
	}
	if r.heldBytes+n > maxHeldBytes {
		return true, errors.New("too much held for sessions being attached")
	}
	r.heldBytes += n
	h.states = append(h.states, st)
	if last {
		h.shipped = append(h.shipped, from)
	}
	return true, nil
}

// attachEnd is how a CONNECT's gate ended, for endAttach.
type attachEnd struct {
	id       string
	version  byte
	username string
	expiry   uint32
	accepted bool   // the gate let the client in
	won      bool   // its compare-and-set won the registry
	partial  func() // makes its CONNACK say Session Present 0 (nil: none)
}

// attachEnded describes how the gate of cl's CONNECT ended.
func attachEnded(cl *tern.Client, expiry uint32, code packets.ReasonCode) attachEnd {
	_, won := cl.Value(epochKey{}).(uint64)
	return attachEnd{id: cl.ID(), version: cl.ProtocolVersion(), username: cl.Username(), expiry: expiry,
		accepted: code == packets.Success, won: won, partial: cl.MarkSessionPartial}
}

// endAttach ends a CONNECT's attach of a session. What was held goes into
// the session, made here (offline, as the former node's, Session Present
// 0) if the CONNECT made none: when it was accepted, or refused after it
// won the registry for a session that outlives its connection (a CONNECT
// elsewhere then takes it from here). Otherwise what was held is dropped:
// this node does not own the session. While another CONNECT here attaches
// the session, what is held waits for that one.
func (r *registry) endAttach(e attachEnd) {
	c := r.c
	id := e.id
	keep := e.accepted || e.won && e.expiry > 0
	for first := true; ; first = false {
		r.mu.Lock()
		h := r.attaching[id]
		if h == nil {
			r.mu.Unlock()
			return
		}
		if first {
			h.refs--
		}
		if h.refs > 0 && !e.accepted {
			r.mu.Unlock()
			return // the other CONNECT takes it
		}
		states, msgs, shipped := h.states, h.msgs, h.shipped
		h.states, h.msgs, h.shipped = nil, nil, nil
		for _, st := range states {
			for _, m := range st.Messages {
				r.heldBytes -= len(m.Payload)
			}
		}
		for _, hm := range msgs {
			r.heldBytes -= len(hm.m.Payload)
		}
		if len(states) == 0 && len(msgs) == 0 {
			if h.refs <= 0 {
				delete(r.attaching, id)
			}
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		if !keep {
			c.log.Warn("what reached a session being attached dropped: its CONNECT was refused before it owned the session",
				"client", id, "parts", len(states), "messages", len(msgs))
			continue
		}
		if _, ok := c.srv.SessionInfo(id); !ok {
			if err := c.srv.ImportSession(&tern.SessionState{Session: storage.Session{ClientID: id, Version: e.version,
				Expiry: e.expiry, Username: e.username}, DuplicateWindow: dupWindow}); err != nil {
				c.log.Warn("session for what its former node shipped not made", "client", id, "err", err)
			}
			if e.partial != nil {
				e.partial()
			}
		}
		for _, st := range states {
			st.Subscriptions = nil
			st.DuplicateWindow = dupWindow
			if err := c.srv.ImportSession(st); err != nil && !errors.Is(err, tern.ErrImported) {
				c.log.Warn("shipped part of a session not imported", "client", id, "err", err)
			}
		}
		for _, hm := range msgs {
			c.srv.InjectTo(id, hm.m, hm.d)
		}
		for _, from := range shipped {
			c.watchPending(id, from)
		}
		c.log.Info("what reached a session while it was being attached went into it", "client", id, "parts", len(states),
			"messages", len(msgs))
	}
}

// takenAfter reports whether another node claimed id with an epoch above
// epoch.
func (r *registry) takenAfter(id string, epoch uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.taken[id].epoch > epoch
}

// noteTaken records that another node claimed id with epoch.
func (r *registry) noteTaken(id string, epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
	if r.taken[id].epoch < epoch {
		r.taken[id] = takenBy{epoch, time.Now()}
	}
}

// noteClaimed records that a CONNECT here is claiming id.
func (r *registry) noteClaimed(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
	r.claimed[id] = time.Now()
}

// claimedLately reports whether a CONNECT here claimed id within the last
// minute.
func (r *registry) claimedLately(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.claimed[id]
	return ok && time.Since(at) < time.Minute
}

// pruneLocked forgets, now and then, what is older than a minute.
func (r *registry) pruneLocked() {
	if r.puts++; r.puts%1024 != 0 {
		return
	}
	now := time.Now()
	for k, v := range r.taken {
		if now.Sub(v.at) > time.Minute {
			delete(r.taken, k)
		}
	}
	for k, at := range r.claimed {
		if now.Sub(at) > time.Minute {
			delete(r.claimed, k)
		}
	}
}

// epochKey is the client value holding the epoch its CONNECT won: the
// revision of the tern_sessions entry it wrote. Revisions only grow, also
// across a deleted entry, so a later CONNECT always has a higher epoch.
type epochKey struct{}

func sessionKey(clientID string) string { return "c." + hashKey(clientID) }

// ownerValue is a tern_sessions value: the node, and " p" when the
// session outlives its connection and so may have a tern_subs record.
func ownerValue(node string, persistent bool) []byte {
	if persistent {
		return []byte(node + " p")
	}
	return []byte(node)
}

// parseOwner reads a tern_sessions value: the node, and whether a
// tern_subs record may exist.
func parseOwner(b []byte) (string, bool) {
	node, flag, _ := strings.Cut(string(b), " ")
	return node, flag == "p"
}

// AttachSession implements tern.SessionGate: it claims the client
// identifier for this node and, when its session was on another node,
// brings it here before the CONNACK: handed over by that node, or, when
// that node is gone or does not answer, made again from the subscriptions
// in tern_subs (Session Present 1 [MQTT-3.2.2-2]; the messages the node
// kept come when it is back). A fenced node refuses with 0x9C Use another
// server (and a Server Reference), a node that has not joined yet or
// cannot reach the registry with 0x88 Server unavailable.
func (c *Cluster) AttachSession(cl *tern.Client, cleanStart bool, expiry uint32) (code packets.ReasonCode) {
	if c.fenced.Load() || c.draining.Load() {
		if ref := c.nodes.reference(); ref != "" {
			cl.SetServerReference(ref)
		}
		return packets.UseAnotherServer
	}
	if !c.ready.Load() {
		return packets.ServerUnavailable
	}
	id := cl.ID()
	key := sessionKey(id)
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	c.reg.noteClaimed(id)
	if !cleanStart {
		// While the session comes here, a node it was on may ship its
		// queue or pass messages on: they wait for it.
		c.reg.startAttach(id)
		defer func() { c.reg.endAttach(attachEnded(cl, expiry, code)) }()
	}
	persistent := expiry > 0
	fences := c.fences.Load()
	lost := false // a compare-and-set failed
	for range 50 {
		if c.fenced.Load() || c.fences.Load() != fences {
			// Fenced while this CONNECT waited for the registry (through
			// a partition, its client likely gone): its compare-and-set
			// could land once the partition heals, and take the session
			// from the connection the majority serves.
			if ref := c.nodes.reference(); ref != "" {
				cl.SetServerReference(ref)
			}
			return packets.UseAnotherServer
		}
		var owner string
		var hadSubs bool
		var rev uint64
		var val []byte
		var err error
		if lost {
			// The entry read last time was not the last one: this node's
			// replica may lag (just back from a partition, say), so the
			// leader is asked.
			val, rev, err = c.leaderGet(ctx, "tern_sessions", key)
		} else {
			var e jetstream.KeyValueEntry
			if e, err = c.kvSess.Get(ctx, key); err == nil {
				val, rev = e.Value(), e.Revision()
			}
		}
		switch {
		case err == nil:
			owner, hadSubs = parseOwner(val)
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// rev: 0, or from the leader the deletion's, which Update
			// takes (a Create may read the key from a lagging replica).
		default:
			c.log.Warn("client registry unreachable: CONNECT refused", "client", id, "err", err)
			return packets.ServerUnavailable
		}
		mine := ownerValue(c.opts.Node, persistent)
		var epoch uint64
		if rev == 0 {
			epoch, err = c.kvSess.Create(ctx, key, mine)
		} else {
			epoch, err = c.kvSess.Update(ctx, key, mine, rev)
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			lost = true
			continue // another node won this round: read again
		}
		if c.reg.takenAfter(id, epoch) {
			return packets.ServerUnavailable // a newer CONNECT on another node won meanwhile
		}
		if c.fences.Load() != fences {
			// The compare-and-set went out before a fence and landed
			// after the heal: the session is not taken.
			return packets.UseAnotherServer
		}
		cl.SetValue(epochKey{}, epoch)
		subs := &subsState{persistent: persistent}
		cl.SetValue(subsKey{}, subs)
		if err := c.storeWill(ctx, cl, expiry, epoch); err != nil {
			c.log.Warn("will not replicated: CONNECT refused", "client", id, "err", err)
			return packets.ServerUnavailable
		}
		if err := c.bringSession(cl, owner, hadSubs, cleanStart, expiry, epoch, subs); err != nil {
			c.log.Warn("subscriptions record unreachable: CONNECT refused", "client", id, "err", err)
			return packets.ServerUnavailable
		}
		return packets.Success
	}
	c.log.Warn("client registry: no compare-and-set won in time: CONNECT refused", "client", id)
	return packets.ServerUnavailable
}

// bringSession brings the session of a client whose CONNECT won epoch to
// this node from owner, the node that had it, and brings its tern_subs
// record up to date; hadSubs tells whether the record may exist. It
// fails only when the record cannot be read for a session to restore.
func (c *Cluster) bringSession(cl *tern.Client, owner string, hadSubs, cleanStart bool, expiry uint32,
	epoch uint64, subs *subsState) error {
	id := cl.ID()
	subs.mu.Lock()
	subs.owner = owner
	subs.mu.Unlock()
	var list []storage.Subscription
	write, restored := false, false
	switch {
	case owner == "" || owner == c.opts.Node:
		_, here := c.srv.SessionInfo(id)
		switch {
		case here && !cleanStart && expiry > 0 && hadSubs:
			return nil // the record is this session's
		case here && !cleanStart && expiry > 0:
			// Resumed, and outlives its connection from now on.
			list, write = c.subsList(id), true
		case !here && !cleanStart && hadSubs && expiry > 0:
			// This node lost it (a restart without a store): as from a
			// node that is gone.
			r, err := c.restoreSubs(cl, owner, expiry, subs)
			if err != nil {
				return err
			}
			if r != nil {
				list, write, restored = r.subs, true, true
			}
		}
	default:
		st, gone := c.reg.takeOver(owner, id, cleanStart, epoch)
		switch {
		case st != nil:
			list, write = st.Subscriptions, true
		case gone && !cleanStart && hadSubs:
			r, err := c.restoreSubs(cl, owner, expiry, subs)
			if err != nil {
				return err
			}
			if r != nil {
				list, write, restored = r.subs, true, true
				c.log.Info("session restored from the replicated subscriptions: its node is gone", "client", id,
					"peer", owner, "subscriptions", len(list))
				c.reg.tellTaken(owner, id, epoch)
			}
		}
	}
	// A time of its own: the registry may have taken most of the
	// CONNECT's while JetStream elected a leader after a node died.
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	switch {
	case write && expiry > 0:
		// A restore whose record is not written yet (retried below) keeps
		// Session Present 1: a restore from this node meanwhile finds the
		// record not this node's, and answers 0 (see restoreSubs).
		err := c.writeSubs(ctx, id, epoch, subs, list)
		switch {
		case err == nil && restored:
			c.markRestored(id, epoch, subs, list)
		case err != nil && !errors.Is(err, errOwnerLost):
			// The record keeps the former owner's list for now: the same
			// subscriptions, without this node's restore time (a stream
			// leader is elected after a node died).
			c.log.Warn("subscriptions record not updated yet; retrying", "client", id, "err", err)
			c.goTracked(func() { c.retrySubs(id, epoch, subs, restored) })
		}
	case hadSubs:
		// The session starts empty, or ends with its connection.
		if err := c.kvSubs.Delete(ctx, sessionKey(id)); err != nil {
			c.log.Warn("subscriptions record not removed", "client", id, "err", err)
		}
	}
	return nil
}

// subsList returns the subscriptions of the session of id here, as a
// tern_subs record lists them.
func (c *Cluster) subsList(id string) []storage.Subscription {
	var list []storage.Subscription
	for _, sub := range c.srv.Subscriptions(id) {
		list = append(list, storage.Subscription{ClientID: id, Group: sub.Group, Filter: sub.Filter, QoS: sub.QoS,
			NoLocal: sub.NoLocal, RetainAsPublished: sub.RetainAsPublished, RetainHandling: sub.RetainHandling,
			Identifier: sub.Identifier})
	}
	return list
}

// retrySubs writes the tern_subs record of the session of id, which the
// CONNECT that won epoch could not write in time, for up to a minute,
// with the subscriptions the session has then (the client may have
// subscribed meanwhile: a write of its own, which makes this one
// needless), and then, for a session restored here, records the restore.
func (c *Cluster) retrySubs(id string, epoch uint64, st *subsState, restored bool) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(time.Second):
		}
		st.mu.Lock()
		written, lost := st.rev != 0, st.lost
		st.mu.Unlock()
		if lost {
			return
		}
		list := c.subsList(id)
		err := error(nil)
		if !written {
			ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
			err = c.writeSubs(ctx, id, epoch, st, list)
			cancel()
		}
		switch {
		case errors.Is(err, errOwnerLost):
			return
		case err == nil:
			if restored {
				c.markRestored(id, epoch, st, list)
			}
			return
		}
	}
	c.log.Warn("subscriptions record not updated in a minute: a restore after this node's death would give the former list", "client", id)
}

// takeOver asks the node that held a session for it, and imports it. A
// node that does not answer gives nothing, and gone says that the session
// may be restored from tern_subs: the node is gone, or did not answer in
// time.
func (r *registry) takeOver(owner, id string, cleanStart bool, epoch uint64) (st *tern.SessionState, gone bool) {
	c := r.c
	if !c.nodes.remote(owner).Reachable() {
		c.log.Info("session not handed over: its node is gone", "client", id, "peer", owner)
		return nil, true
	}
	req := []byte{wireVersion, 'h', 0}
	if cleanStart {
		req[2] = 1
	}
	req = binary.AppendUvarint(req, epoch)
	req = appendStr(req, c.opts.Node)
	req = appendStr(req, id)
	t0 := time.Now()
	resp, err := c.nc.Request("tern.n."+owner+".ctl", req, c.handoverTimeout())
	if err != nil {
		c.log.Warn("session not handed over: its node did not answer", "client", id, "peer", owner, "err", err)
		// Cut off rather than dead, it may still serve the client until
		// it fences itself: the session is restored here once its lease
		// expired, not before (the same client must not be served on two
		// nodes).
		if !c.nodes.waitGone(owner) {
			c.log.Warn("session restored while its node is still heard from but does not answer", "client", id, "peer", owner)
		}
		return nil, true
	}
	if len(resp.Data) == 0 {
		return nil, false
	}
	switch resp.Data[0] {
	case 0: // no session there
		return nil, false
	case 1:
		c.log.Warn("session not handed over", "client", id, "peer", owner, "err", string(resp.Data[1:]))
		return nil, false
	}
	rd := reader{b: resp.Data[1:]}
	count := 1
	if resp.Data[0] == 3 { // in several parts: the count, then the first
		count = int(rd.uvarint())
	}
	st, err = decodeSession(rd.b)
	if err != nil || rd.err {
		c.log.Warn("session not handed over", "client", id, "peer", owner, "err", err)
		return nil, false
	}
	st.DuplicateWindow = dupWindow
	if err := c.srv.ImportSession(st); err != nil {
		c.log.Warn("session imported with an error", "client", id, "peer", owner, "err", err)
	} else {
		// Its subscriptions are routed here by every live node now
		// (ImportSession waited for FilterAdded): the former node may
		// stop passing on what the others send it for the session.
		req := []byte{wireVersion, 'r', 0}
		req = binary.AppendUvarint(req, epoch)
		req = appendStr(req, c.opts.Node)
		req = appendStr(req, id)
		c.nc.Publish("tern.n."+owner+".ctl", req)
	}
	for k := 1; k < count; k++ {
		// The rest of a large queue: merged in order, before the CONNACK.
		req := []byte{wireVersion, 'g', 0}
		req = binary.AppendUvarint(req, epoch)
		req = appendStr(req, c.opts.Node)
		req = appendStr(req, id)
		req = binary.AppendUvarint(req, uint64(k))
		resp, err := c.nc.Request("tern.n."+owner+".ctl", req, c.handoverTimeout())
		var part *tern.SessionState
		if err == nil && len(resp.Data) > 0 && resp.Data[0] == 2 {
			part, err = decodeSession(resp.Data[1:])
		} else if err == nil {
			err = errors.New("part not there")
		}
		if err == nil {
			err = c.srv.ImportSession(part)
		}
		if err != nil {
			c.log.Error("part of a session's queue lost in its handover", "client", id, "peer", owner, "part", k, "of", count, "err", err)
		}
	}
	c.fwd.cnt.takeovers.Add(1)
	c.log.Debug("session taken over", "client", id, "peer", owner, "deliveries", len(st.Deliveries),
		"took", time.Since(t0).String())
	return st, false
}

// handoverTimeout bounds the wait for a session's handover: a live node
// exporting a large session (parts of up to 8 MiB) on a busy machine may
// take longer than a forward; giving up restores the session from
// tern_subs, without what the node had in flight.
func (c *Cluster) handoverTimeout() time.Duration { return max(c.opts.ForwardTimeout, 5*time.Second) }

// control answers another node's requests: a handover of a session.
func (r *registry) control(msg *nats.Msg) {
	c := r.c
	rd := reader{b: msg.Data}
	var op byte
	if !wireOK(rd.byte()) {
		msg.Respond([]byte{1})
		return
	}
	op = rd.byte()
	clean := rd.byte() == 1 // 'i': the last part of a ship
	epoch := rd.uvarint()
	to := rd.str()
	id := rd.str()
	if rd.err || op != 'h' && op != 'i' && op != 'g' && op != 'r' && op != 't' {
		msg.Respond(append([]byte{1}, "bad request"...))
		return
	}
	if op == 'g' {
		msg.Respond(r.part(id, epoch, int(rd.uvarint())))
		return
	}
	if op == 't' {
		// Restored by node to while this node was thought gone: shipped
		// there if it is still here, which it is when this node came
		// back (and looked for such sessions) before to took it over.
		c.fwd.cnt.takenNotices.Add(1)
		c.goTracked(func() { r.shipTaken(id) })
		return
	}
	if op == 'r' {
		// The session handed over to node to is routed there by every
		// node now: what they routed here before comes within a forward's
		// timeout (or is parked for this node, and passed on from there).
		c.fwd.cnt.routedNotices.Add(1)
		c.srv.StopPassingOn(id, 2*c.opts.ForwardTimeout+time.Second)
		return
	}
	if op == 'i' {
		if err := r.imported(id, to, clean, rd.b); err != nil {
			msg.Respond(append([]byte{1}, err.Error()...))
			return
		}
		msg.Respond([]byte{0})
		return
	}
	r.noteTaken(id, epoch)
	var moved tern.Remote
	if !clean {
		moved = c.nodes.remote(to)
	}
	// Until the other nodes route to the new node (told by an 'r'), what
	// they send here for the session is passed on there.
	st, err := c.srv.ExportSession(id, clean, moved, c.opts.DrainTime, c.opts.DrainTime)
	switch {
	case err != nil:
		msg.Respond(append([]byte{1}, err.Error()...))
	case st == nil:
		msg.Respond([]byte{0})
	default:
		c.fwd.cnt.handedOver.Add(1)
		parts := splitSession(st, partLimit)
		if len(parts) == 1 {
			msg.Respond(append([]byte{2}, encodeSession(st)...))
			return
		}
		r.mu.Lock()
		now := time.Now()
		for k, p := range r.parts {
			if now.Sub(p.at) > time.Minute {
				delete(r.parts, k) // never fetched: its node died taking over
			}
		}
		r.parts[partsKey(id, epoch)] = &handoverParts{parts: parts, at: now}
		r.mu.Unlock()
		b := binary.AppendUvarint([]byte{3}, uint64(len(parts)))
		msg.Respond(append(b, encodeSession(parts[0])...))
	}
}

func partsKey(id string, epoch uint64) string { return id + "\x00" + strconv.FormatUint(epoch, 10) }

// part answers a new node's fetch of part k of a session handed over in
// several parts.
func (r *registry) part(id string, epoch uint64, k int) []byte {
	key := partsKey(id, epoch)
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.parts[key]
	if p == nil || k <= 0 || k >= len(p.parts) {
		return append([]byte{1}, "no such part"...)
	}
	if k == len(p.parts)-1 {
		delete(r.parts, key)
	}
	return append([]byte{2}, encodeSession(p.parts[k])...)
}

// OnSessionEstablished implements tern.ConnectObserver: a client whose
// identifier another node claimed while this one was attaching it is
// disconnected, so that only the newest connection stays.
func (c *Cluster) OnSessionEstablished(cl *tern.Client, _ bool) {
	e, _ := cl.Value(epochKey{}).(uint64)
	if e == 0 {
		return
	}
	if c.reg.takenAfter(cl.ID(), e) {
		c.srv.Disconnect(cl.ID(), packets.SessionTakenOver)
	}
}

// tellTaken tells owner, which was gone or cut off when this node
// restored the session of id (epoch) from tern_subs, that the session is
// this node's now: if owner is back already, it may have looked for
// sessions to ship before this node took it over (shipLost), and ships
// it on this notice instead (shipTaken). Not answered: an owner still
// gone ships it once back.
func (r *registry) tellTaken(owner, id string, epoch uint64) {
	c := r.c
	req := []byte{wireVersion, 't', 0}
	req = binary.AppendUvarint(req, epoch)
	req = appendStr(req, c.opts.Node)
	req = appendStr(req, id)
	c.nc.Publish("tern.n."+owner+".ctl", req)
}

// shipTaken ships the session of id, which another node restored (see
// tellTaken), if it is here and offline, once what was parked for this
// node is taken. A node not ready yet, or fenced, does nothing: shipLost
// runs once it is ready or the fence is lifted, and reads the registry
// after the notice's sender changed it.
func (r *registry) shipTaken(id string) {
	if !r.c.ready.Load() || r.c.fenced.Load() {
		return
	}
	if si, ok := r.c.srv.SessionInfo(id); !ok || si.Online {
		return
	}
	if r.waitParked() {
		// The other nodes routed to this node until they learned of the
		// restore; what they sent just before may still be on its way:
		// passed on for as long as an 'r' notice would grant.
		r.shipSessions([]string{id}, 2*r.c.opts.ForwardTimeout+time.Second)
	}
}

// shipLost hands the sessions this node holds but no longer owns (their
// clients connected elsewhere while it was down or cut off) to their
// owners, with what was queued for them here: late, not lost.
func (r *registry) shipLost() {
	c := r.c
	if !r.waitParked() {
		return
	}
	var todo []string
	for _, si := range c.srv.Sessions() {
		if !si.Online {
			todo = append(todo, si.ClientID)
		}
	}
	r.shipSessions(todo, 0)
}

// waitParked waits until what was parked for this node is taken (see
// shipLost), and reports false when the node is stopping.
func (r *registry) waitParked() bool {
	c := r.c
	// What was parked for this node while it was away goes into the
	// sessions first, and moves with them: up to the stream leader's last
	// message (a consumer on a lagging replica may see the end early). A
	// session shipped before gets the rest only while its subscriptions
	// drain here (shipDrain): waiting is better than losing it.
	t0 := time.Now()
	taken := c.fwd.parkTaken(30 * time.Second)
	if !taken && c.ctx.Err() == nil {
		c.log.Warn("messages parked for this node not all taken in 30s: waiting for them before the sessions that moved are shipped")
		taken = c.fwd.parkTaken(parkWaitMax - 30*time.Second)
	}
	switch {
	case c.ctx.Err() != nil:
		return false
	case taken:
		c.log.Info("messages parked for this node while it was away taken", "took", time.Since(t0).Round(time.Millisecond).String())
	default:
		c.log.Error("messages parked for this node not all taken: shipping sessions anyway, the rest may not reach them",
			"waited", parkWaitMax.String())
	}
	return true
}

// shipSessions ships the sessions of todo that another node owns to it
// (shipOne, with passOn), trying again those whose owner or shipment
// could not be settled.
func (r *registry) shipSessions(todo []string, passOn time.Duration) {
	c := r.c
	live := map[string]bool{} // owners that answered a ping
	alive := func(node string) bool {
		ok, asked := live[node]
		if !asked {
			_, err := c.nc.Request("tern.n."+node+".sync", []byte{0}, c.opts.ForwardTimeout)
			ok = err == nil
			live[node] = ok
			if ok { // before its first heartbeat here: what moves there must not be parked
				c.nodes.seen(node, lease{Version: Version, Wire: c.opts.wire})
			}
		}
		return ok
	}
	var starts map[string]int64 // tern_members' start times, read once when a restored session needs them
	memberStarts := func(ctx context.Context) (map[string]int64, error) {
		if starts != nil {
			return starts, nil
		}
		m, err := r.memberStarts(ctx)
		if err == nil {
			starts = m
		}
		return m, err
	}
	// A session whose owner or shipment could not be settled (JetStream
	// still electing after the heal, an owner that did not answer) is
	// tried again: left here, its messages would never reach its client.
	for attempt := 1; len(todo) > 0 && c.ctx.Err() == nil; attempt++ {
		shipped := 0
		var again []string
		for _, id := range todo {
			if si, ok := c.srv.SessionInfo(id); !ok || si.Online {
				continue // gone, or its client is back here: this node's again
			}
			done, err := r.shipOne(id, passOn, alive, memberStarts)
			switch {
			case err != nil:
				again = append(again, id)
				if attempt == 1 {
					c.log.Info("session taken over elsewhere not shipped yet: trying again", "client", id, "err", err)
				}
			case done:
				shipped++
			}
		}
		if shipped > 0 {
			c.log.Info("sessions taken over elsewhere while this node was away: shipped to their owners", "sessions", shipped)
		}
		if len(again) == 0 {
			return
		}
		if attempt == shipAttempts {
			c.log.Error("sessions taken over elsewhere could not be shipped to their owners: their messages stay here", "sessions", len(again),
				"first", again[0])
			return
		}
		todo = again
		clear(live) // asked again
		select {
		case <-c.ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// parkWaitMax bounds the wait for the messages parked for this node
// before the sessions that moved while it was away are shipped.
const parkWaitMax = 2 * time.Minute

// shipAttempts bounds shipLost's rounds, 2 s apart.
const shipAttempts = 30

// shipOne ships the offline session of id, when another node owns it, to
// that node. It reports whether it did; an error means it may yet, when
// tried again.
func (r *registry) shipOne(id string, passOn time.Duration, alive func(string) bool,
	memberStarts func(context.Context) (map[string]int64, error)) (bool, error) {
	c := r.c
	// From the leader: this node's own replica may still be catching up
	// after a partition or a restart, and name this node the owner.
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	val, rev, err := c.leaderGet(ctx, "tern_sessions", sessionKey(id))
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil // no owner: the session ended elsewhere, or is this node's
	case err != nil:
		return false, fmt.Errorf("registry: %w", err)
	}
	owner, _ := parseOwner(val)
	if owner == c.opts.Node {
		return false, nil
	}
	if !alive(owner) {
		return false, fmt.Errorf("owner %s does not answer", owner)
	}
	rec, rule := r.restoredRule(id, owner, memberStarts)
	// What was parked for this node and comes for the session while it
	// drains here goes on whole: a parked message the owner may have had
	// directly comes twice at worst (its duplicate window). What the other
	// nodes send goes on only for passOn: they route to the session's new
	// node since it restored it (long ago, after a restart of this node;
	// just now, for a 't' notice).
	st, err := c.srv.ExportSession(id, false, c.nodes.remote(owner), r.shipDrain(), passOn)
	if err != nil || st == nil {
		return false, err
	}
	if n := skipDelivered(st, rec, rule); n > 0 {
		c.log.Info("messages the session's new node received directly are not shipped again", "client", id,
			"peer", owner, "skipped", n, "shipped", len(st.Deliveries))
	}
	// From here the session is out of this server: each part is sent
	// until its owner takes it. A part's token makes a resend of one the
	// owner took (and did not answer: it died) harmless.
	shipped := time.Now().UnixNano()
	parts := splitSession(st, partLimit)
	for k, part := range parts { // in order, each merged into the session there
		part.Token = fmt.Sprintf("%s:%d:%d", c.opts.Node, shipped, k)
		var last byte // the third byte of an 'i' request: 1 on the ship's last part
		if k == len(parts)-1 {
			last = 1
		}
		req := []byte{wireVersion, 'i', last}
		req = binary.AppendUvarint(req, rev)
		req = appendStr(req, c.opts.Node)
		req = appendStr(req, id)
		req = append(req, encodeSession(part)...)
		var err error
		for try := 1; ; try++ {
			if try > 1 {
				// The owner may have changed since (its client moved on,
				// even to this node): the part goes to whoever owns the
				// session now, which takes only its own.
				owner, err = r.ownerNow(id, owner)
			}
			switch {
			case err != nil:
			case owner == "":
				c.log.Info("part of a session not shipped: the session ended", "client", id)
			case owner == c.opts.Node:
				err = r.imported(id, c.opts.Node, last == 1, encodeSession(part))
			default:
				var resp *nats.Msg
				resp, err = c.nc.Request("tern.n."+owner+".ctl", req, c.opts.ForwardTimeout)
				if err == nil && (len(resp.Data) == 0 || resp.Data[0] != 0) {
					err = fmt.Errorf("refused: %q", resp.Data)
				}
			}
			if err == nil || try == shipTries || c.ctx.Err() != nil {
				break
			}
			select {
			case <-c.ctx.Done():
			case <-time.After(time.Second):
			}
		}
		if err != nil {
			c.log.Error("part of a session's queue could not be shipped to its new node: those messages are lost", "client", id, "peer", owner,
				"deliveries", len(part.Deliveries), "messages", len(part.Messages), "err", err)
		}
	}
	return true, nil
}

// shipDrain is how long a shipped session's subscriptions stay here,
// passing what still matches them to its owner: at least until every
// message another node failed to forward here before it saw this node
// back is parked and taken (a park is retried for parkRetryFor while the
// park stream elects a leader). Messages taken from the park after that
// would match no subscription here and be lost.
func (r *registry) shipDrain() time.Duration {
	o := r.c.opts
	return max(o.DrainTime, o.ForwardTimeout+parkRetryFor+5*time.Second)
}

// shipTries bounds the attempts to ship one part of a session, a second
// apart: long enough for its owner to restart, or for its client to move
// to another node.
const shipTries = 60

// ownerNow returns the node that owns the session of id now, by the
// registry's stream leader ("" when it has none: the session ended); prev
// with the error when it cannot tell.
func (r *registry) ownerNow(id, prev string) (string, error) {
	return r.ownerWithin(id, prev, 3*time.Second)
}

// ownerWithin is ownerNow with its own bound on the wait.
func (r *registry) ownerWithin(id, prev string, wait time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(r.c.ctx, wait)
	defer cancel()
	val, _, err := r.c.leaderGet(ctx, "tern_sessions", sessionKey(id))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return "", nil
	case err != nil:
		return prev, err
	}
	owner, _ := parseOwner(val)
	return owner, nil
}

// errNotOwner refuses a part of a session shipped to a node that does not
// own the session (any more): its sender asks the registry again.
var errNotOwner = errors.New("cluster: the session is not this node's")

// restoredRule returns, for the session of id about to be shipped to
// owner, the rule telling what owner received directly since it restored
// the session from tern_subs (see defaultShipMargin), with the record it
// applies to; a zero rule when there is none (nothing is skipped).
func (r *registry) restoredRule(id, owner string,
	memberStarts func(context.Context) (map[string]int64, error)) (*subsRecord, shipRule) {
	c := r.c
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	val, _, err := c.leaderGet(ctx, "tern_subs", sessionKey(id))
	if err != nil {
		return nil, shipRule{}
	}
	rec, err := decodeSubsRecord(val)
	if err != nil || rec.node != owner || rec.restored == 0 {
		return nil, shipRule{}
	}
	starts, err := memberStarts(ctx)
	var since int64
	if err == nil {
		since, err = r.othersRouted(rec, starts)
	}
	if since == 0 {
		c.log.Info("messages of a session shipped whole: another node may not have routed to its new node", "client", id,
			"peer", owner, "err", err)
		return nil, shipRule{}
	}
	return rec, shipRule{since: since + int64(r.shipMargin), margin: int64(r.shipMargin),
		selfStart: c.started.UnixNano(), ownFrom: c.ownFrom.Load(), inline: c.srv.InlineClientID(),
		routedAt: func(group, filter string) int64 { return c.routes.addedAt(routeKey(owner, group, filter)) }}
}

// othersRouted returns the time after which every other node than this
// one routed the messages it received for the restored session of rec to
// the node that restored it, 0 if there is none: the latest clock of the
// nodes that confirmed it had the routes (rec.confirmed; this node's own
// messages are shipRule's), provided every other node did too, or was
// gone at the restore and started again only once the routes were in
// tern_routes, or has not started again (by the start times in
// tern_members).
func (r *registry) othersRouted(rec *subsRecord, starts map[string]int64) (int64, error) {
	c := r.c
	since := rec.restored
	for n, t := range rec.confirmed {
		if n != c.opts.Node {
			since = max(since, t)
		}
	}
	for k, started := range starts {
		if _, ok := rec.confirmed[k]; ok || k == c.opts.Node || k == rec.node {
			continue
		}
		afterSettled := rec.settled != 0 && started > rec.settled
		if !afterSettled && (slices.Contains(rec.slow, k) || started > rec.restored) {
			return 0, fmt.Errorf("node %s did not confirm the routes", k)
		}
	}
	return since, nil
}

// memberStarts returns the start time of every node in tern_members (unix
// nanoseconds, at or before the node's start: leases keep milliseconds).
func (r *registry) memberStarts(ctx context.Context) (map[string]int64, error) {
	c := r.c
	keys, err := c.kvNodes.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	starts := map[string]int64{}
	for k := range keys.Keys() {
		e, err := c.kvNodes.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		var l lease
		if err := json.Unmarshal(e.Value(), &l); err != nil {
			return nil, err
		}
		starts[k] = l.Started * int64(time.Millisecond)
	}
	return starts, nil
}

// imported takes a part of a session another node (from) shipped late:
// its messages are merged into the session here, if the client still has
// one. Its subscriptions are not: the client has had the session here
// since, and subscribed and unsubscribed here. A part taken already (its
// token) is not taken again. After the ship's last part, watchPending.
func (r *registry) imported(id, from string, last bool, data []byte) error {
	c := r.c
	st, err := decodeSession(data)
	if err != nil {
		return err
	}
	// Only into the owner's session: one left here while the client
	// moved on would keep the part for good.
	if owner, err := r.ownerNow(id, ""); err != nil {
		return err
	} else if owner != c.opts.Node && owner != "" {
		return errNotOwner
	}
	if held, err := r.holdState(id, st, from, last); held || err != nil {
		return err // a CONNECT here is bringing the session: it gets it
	}
	if _, ok := c.srv.SessionInfo(id); !ok {
		// Ended here meanwhile: nothing to deliver it to.
		if n := len(st.Deliveries); n > 0 {
			c.fwd.cnt.orphaned.Add(uint64(n))
			c.log.Warn("a shipped part of a session that ended here found nothing to take it", "client", id, "peer", from, "deliveries", n)
		}
		return nil
	}
	st.Subscriptions = nil
	if err := c.srv.ImportSession(st); errors.Is(err, tern.ErrImported) {
		c.log.Info("a part of a session shipped again was taken already", "client", id, "peer", from)
	} else if err != nil {
		return err
	}
	if last {
		c.watchPending(id, from) // once the whole ship is here
	}
	return nil
}
