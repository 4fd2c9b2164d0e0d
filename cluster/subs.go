package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/topics"
)

// The subscriptions of persistent sessions (Session Expiry above 0; 3.1.1:
// Clean Session 0) are replicated in the KV bucket tern_subs, key
// "c.<hash of the client identifier>" as in tern_sessions, so that a node
// can give them back to a client whose session was on a node that is gone
// (design/cluster.md 4.3, step 3 of a CONNECT): the client gets Session
// Present 1 and its subscriptions [MQTT-3.2.2-2]; what the dead node had
// queued for it comes later, when that node is back (shipLost).
//
// The node that owns the session writes its whole subscription list after
// each SUBSCRIBE or UNSUBSCRIBE, before the SUBACK or UNSUBACK
// (tern.SessionReplicator), and when the session comes to it from another
// node. Writes are compare-and-set on the record's revision; a node that
// finds the record changed under it checks that its CONNECT still owns the
// client identifier in tern_sessions, and writes nothing more if not. The
// record goes, with the tern_sessions entry, when the session ends.
//
// A record is at most maxSubsRecord bytes (some thousands of
// subscriptions): a longer list is written as "too large", and a client
// whose session is restored from it gets Session Present 0 and no
// subscriptions, as without this bucket, and must subscribe again.

// maxSubsRecord bounds a tern_subs record: below the 1 MiB of NATS's
// default maximum payload, with room for the message's headers.
const maxSubsRecord = 512 << 10

// defaultShipMargin is added to the moment T after which every node
// alive routes what it receives for a session to the node B that restored
// it from tern_subs (markRestored, routedSince), before the node A it was
// on, back, ships what it kept for it: messages received after
// T + margin, on a topic a (not shared) subscription of the session's
// record matches, reached B directly (A's routes stay while it is gone,
// so they were parked for A too) and are not shipped again
// (skipDelivered). T is the latest of the nodes' clocks, each read after
// the node had B's routes, and a message's time is its publishing node's
// clock: no clock is compared with another's, and the margin only covers
// a node's clock stepping back (by less than the margin) between a
// message it received and the restore. Two kinds of node did not route
// to B from T: A itself, after its restart (its own messages reached B
// only once A had B's route: shipRule), and a node that started after
// the restore while B's route writes were still retried (then nothing is
// skipped). Messages received before T + margin are shipped: those
// received once their node had B's routes reach the client twice (QoS 1
// at least once holds; a QoS 2 message is delivered twice, with two
// packet identifiers). So are all, with no skipping, when T is not in the
// record when A ships (a node did not answer) or the session moved on
// from B.
const defaultShipMargin = 20 * time.Millisecond

// subsRecord is a tern_subs value.
type subsRecord struct {
	epoch    uint64 // the tern_sessions revision of the writer's CONNECT
	node     string // the writer
	restored int64  // unix nanoseconds: node restored the session from this bucket, and routes to it since (markRestored); 0: not known
	settled  int64  // unix nanoseconds: the routes of the restore were in tern_routes (for nodes that start later) by then; 0: not known
	// confirmed holds, for each other node that had the restore's routes
	// in its index when asked, its clock then; slow lists the nodes asked
	// that did not confirm in time (routedSince).
	confirmed map[string]int64
	slow      []string
	tooLarge  bool // the list was longer than maxSubsRecord
	// high says the session numbers its messages from the high half of
	// the packet identifiers (storage.Session.HighIDs); pending that the
	// client may still hold identifiers of the other half, from the node
	// it was restored from (from), until that node shipped what it had
	// in flight and the client acknowledged it (see restoreSubs). Every
	// write keeps them; clearPending clears pending.
	high, pending bool
	from          string
	subs          []storage.Subscription
}

// The flags of a tern_subs record (its second byte).
const (
	subsTooLarge = 1 << iota // subsRecord.tooLarge
	subsHigh                 // subsRecord.high
	subsPending              // subsRecord.pending
)

func encodeSubsRecord(id string, r *subsRecord) []byte {
	var high byte
	if r.high {
		high = subsHigh
	}
	if r.pending {
		high |= subsPending
	}
	b := []byte{wireVersion, high}
	b = binary.AppendUvarint(b, r.epoch)
	b = appendStr(b, r.node)
	b = appendRestore(b, r)
	b = append(b, encodeSession(&tern.SessionState{Session: storage.Session{ClientID: id}, Subscriptions: r.subs})...)
	if len(b) > maxSubsRecord {
		b = []byte{wireVersion, subsTooLarge | high}
		b = binary.AppendUvarint(b, r.epoch)
		b = appendStr(b, r.node)
		b = appendRestore(b, r)
	}
	return b
}

// copyRestore sets the restore times of r to those of from (none if nil).
func (r *subsRecord) copyRestore(from *subsRecord) {
	if from == nil {
		return
	}
	r.restored, r.settled, r.confirmed, r.slow = from.restored, from.settled, from.confirmed, from.slow
}

// appendRestore encodes the restore times of a subsRecord.
func appendRestore(b []byte, r *subsRecord) []byte {
	b = binary.AppendUvarint(b, uint64(r.restored))
	b = binary.AppendUvarint(b, uint64(r.settled))
	b = binary.AppendUvarint(b, uint64(len(r.confirmed)))
	for _, n := range slices.Sorted(maps.Keys(r.confirmed)) {
		b = appendStr(b, n)
		b = binary.AppendUvarint(b, uint64(r.confirmed[n]))
	}
	b = binary.AppendUvarint(b, uint64(len(r.slow)))
	for _, n := range r.slow {
		b = appendStr(b, n)
	}
	return appendStr(b, r.from)
}

func decodeSubsRecord(b []byte) (*subsRecord, error) {
	rd := reader{b: b}
	v := rd.byte()
	if !wireOK(v) {
		return nil, errors.New("cluster: subscriptions record of another wire version")
	}
	f := rd.byte()
	r := &subsRecord{tooLarge: f&subsTooLarge != 0, high: f&subsHigh != 0, pending: f&subsPending != 0}
	r.epoch = rd.uvarint()
	r.node = rd.str()
	r.restored = int64(rd.uvarint())
	r.settled = int64(rd.uvarint())
	n := rd.uvarint()
	if n > uint64(len(rd.b)) {
		return nil, errCorrupt
	}
	if n > 0 {
		r.confirmed = make(map[string]int64, n)
	}
	for range n {
		node := rd.str()
		r.confirmed[node] = int64(rd.uvarint())
	}
	n = rd.uvarint()
	if n > uint64(len(rd.b)) {
		return nil, errCorrupt
	}
	for range n {
		r.slow = append(r.slow, rd.str())
	}
	if v >= 3 {
		r.from = rd.str()
	}
	if rd.err {
		return nil, errCorrupt
	}
	if r.tooLarge {
		return r, nil
	}
	st, err := decodeSession(rd.b)
	if err != nil {
		return nil, err
	}
	r.subs = st.Subscriptions
	return r, nil
}

// subsKey is the client value holding its *subsState.
type subsKey struct{}

// subsState is what a connection knows of its session's tern_subs record.
// Its writes are made one at a time (a SUBACK waits for the last).
type subsState struct {
	mu      sync.Mutex
	rev     uint64      // revision of the record last written; 0: unknown
	restore *subsRecord // the restore times written (restored, settled, confirmed, slow); nil: none
	lost    bool        // another CONNECT owns the client identifier now
	// high, pending and from are the record's (subsRecord): taken from it
	// when it is read, or chosen by restoreSubs for the first write.
	high, pending, chosen bool
	from                  string
	// owner is the node the session was on before this CONNECT (the
	// registry's): a record another node wrote is out of date.
	owner string
	// persistent: the CONNECT asked for a session that outlives it; one
	// that did not has no record (its expiry cannot rise later).
	persistent bool
}

// errOwnerLost ends the writes of a connection whose client identifier
// another CONNECT claimed.
var errOwnerLost = errors.New("cluster: the client identifier was claimed by a newer connection")

// writeSubs writes the subscription list of the session of id for the
// CONNECT that won epoch.
func (c *Cluster) writeSubs(ctx context.Context, id string, epoch uint64, st *subsState, subs []storage.Subscription) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.lost {
		return errOwnerLost
	}
	key := sessionKey(id)
	for range 5 {
		rec := &subsRecord{epoch: epoch, node: c.opts.Node, subs: subs, high: st.high, pending: st.pending, from: st.from}
		rec.copyRestore(st.restore)
		// The half is the session's own (it may have changed without the
		// record: a restore whose write failed).
		si, here := c.srv.SessionInfo(id)
		if here {
			rec.high = si.HighIDs
		}
		var rev uint64
		var err error
		if st.rev != 0 {
			rev, err = c.kvSubs.Update(ctx, key, encodeSubsRecord(id, rec), st.rev)
		} else {
			var val []byte
			var last uint64
			val, last, err = c.leaderGet(ctx, "tern_subs", key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				if !st.chosen && rec.high {
					// A session that was restored (it numbers from the high
					// half) whose record was removed meanwhile (it went on
					// with Session Expiry 0): whether the client still holds
					// identifiers of the other half is not known.
					st.pending, rec.pending = true, true
				}
				if last != 0 { // deleted
					rev, err = c.kvSubs.Update(ctx, key, encodeSubsRecord(id, rec), last)
				} else {
					rev, err = c.kvSubs.Create(ctx, key, encodeSubsRecord(id, rec))
				}
			case err == nil:
				old, derr := decodeSubsRecord(val)
				if derr == nil && old.epoch > epoch {
					st.lost = true
					return errOwnerLost
				}
				if derr == nil && !st.chosen {
					// Whether the client may hold identifiers of the other
					// half goes on (see restoreSubs), also after a
					// clearPending. A record neither this node's nor the
					// one's the session came from is out of date (a write
					// of that node failed): whether it may is not known.
					st.pending, st.from = old.pending, old.from
					if old.node != c.opts.Node && old.node != st.owner {
						st.pending = true
					}
					rec.pending, rec.from = st.pending, st.from
				}
				if derr == nil && old.node == c.opts.Node && st.restore == nil && old.restored != 0 {
					st.restore = old // still the session restored here
					rec.copyRestore(old)
				}
				rev, err = c.kvSubs.Update(ctx, key, encodeSubsRecord(id, rec), last)
			}
		}
		if err == nil {
			st.rev, st.chosen = rev, false
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		// Changed under this node: still the owner?
		_, rev, gerr := c.leaderGet(ctx, "tern_sessions", key)
		if gerr != nil && !errors.Is(gerr, jetstream.ErrKeyNotFound) {
			return err
		}
		if gerr != nil || rev != epoch {
			st.lost = true
			return errOwnerLost
		}
		st.rev = 0
	}
	return errors.New("cluster: subscriptions record: no compare-and-set won")
}

// SubscriptionsChanged implements tern.SessionReplicator: the list goes to
// tern_subs before the SUBACK or UNSUBACK.
func (c *Cluster) SubscriptionsChanged(cl *tern.Client, subs []storage.Subscription, done func(error)) {
	epoch, _ := cl.Value(epochKey{}).(uint64)
	st, _ := cl.Value(subsKey{}).(*subsState)
	if epoch == 0 || st == nil || !c.ready.Load() {
		done(nil) // not attached through this node's registry
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		defer cancel()
		err := c.writeSubs(ctx, cl.ID(), epoch, st, subs)
		if errors.Is(err, errOwnerLost) {
			c.log.Info("subscriptions not replicated: the client identifier moved to a newer connection", "client", cl.ID())
			err = nil
		}
		done(err)
	}()
}

// SessionEnded implements tern.SessionReplicator: the session's records in
// tern_subs and tern_sessions go, if no newer CONNECT (on any node) wrote
// them since the one of the session's last connection here.
func (c *Cluster) SessionEnded(cl *tern.Client) {
	if !c.ready.Load() || c.ctx.Err() != nil {
		return
	}
	id := cl.ID()
	epoch, _ := cl.Value(epochKey{}).(uint64)
	go func() {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		key := sessionKey(id)
		if epoch == 0 {
			// Restored from the store and not connected since this node
			// started: the registry tells whether it is still this node's.
			if c.reg.claimedLately(id) {
				return // a CONNECT here since: its session, not this one
			}
			val, rev, err := c.leaderGet(ctx, "tern_sessions", key)
			if err != nil {
				return
			}
			if owner, _ := parseOwner(val); owner != c.opts.Node {
				return
			}
			epoch = rev
		}
		// A CONNECT without a session that outlives it wrote no record.
		if st, _ := cl.Value(subsKey{}).(*subsState); st == nil || st.persistent {
			if val, rev, err := c.leaderGet(ctx, "tern_subs", key); err == nil {
				if r, err := decodeSubsRecord(val); err != nil || r.epoch <= epoch {
					c.kvSubs.Delete(ctx, key, jetstream.LastRevision(rev))
				}
			}
		}
		// Fails when another CONNECT claimed the identifier since.
		c.kvSess.Delete(ctx, key, jetstream.LastRevision(epoch))
	}()
}

// restoreSubs makes, on this node, the session of cl from its tern_subs
// record: its subscriptions, no messages (what the dead node had queued
// or in flight comes when it is back). It returns the record used, nil if
// there is none to restore from.
//
// The client keeps its own session state (Session Present 1), among it
// the packet identifiers of QoS 2 messages the dead node sent and never
// released. This node numbers new messages from the other half of the
// identifiers than that node did (storage.Session.HighIDs), and what that
// node had in flight, shipped when it is back, is sent again with its
// identifiers (tern.ImportSession), so that the client, which still holds
// them, does not deliver a message twice. The record says so (high,
// pending, from owner: written by bringSession before the CONNACK) until
// that ship came and the client acknowledged what it brought
// (watchPending). A session restored again before that gets Session
// Present 0 (MarkSessionPartial): the client discards its state, for both
// halves may be held.
func (c *Cluster) restoreSubs(cl *tern.Client, owner string, expiry uint32, st *subsState) (*subsRecord, error) {
	id := cl.ID()
	// The leader has the last write for certain; while one is elected
	// (it was on the dead node, say) a replica answers.
	lctx, cancel := context.WithTimeout(c.ctx, 1500*time.Millisecond)
	val, _, err := c.leaderGet(lctx, "tern_subs", sessionKey(id))
	cancel()
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		rctx, cancel := context.WithTimeout(c.ctx, 3*time.Second)
		var e jetstream.KeyValueEntry
		if e, err = c.kvSubs.Get(rctx, sessionKey(id)); err == nil {
			val = e.Value()
		}
		cancel()
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r, err := decodeSubsRecord(val)
	if err != nil {
		c.log.Warn("subscriptions record unreadable: session not restored", "client", id, "err", err)
		return nil, nil
	}
	if r.tooLarge {
		c.log.Warn("subscriptions record was too large to replicate: session not restored, the client must subscribe again", "client", id)
		return nil, nil
	}
	high := !r.high
	ss := &tern.SessionState{Session: storage.Session{ClientID: id, Version: cl.ProtocolVersion(), Expiry: expiry,
		Username: cl.Username(), HighIDs: high}, Subscriptions: r.subs, DuplicateWindow: dupWindow}
	if err := c.srv.ImportSession(ss); err != nil {
		c.log.Warn("session restored with an error", "client", id, "err", err)
	}
	st.mu.Lock()
	st.high, st.pending, st.from, st.chosen = high, true, owner, true
	st.mu.Unlock()
	if r.pending || r.node != owner {
		// The client may hold identifiers of both halves; or the record
		// is not the dead node's (its write failed, or a handover did not
		// write it), so its half may not be the session's.
		cl.MarkSessionPartial()
	}
	c.fwd.cnt.restored.Add(1)
	return r, nil
}

// markRestored records, once every node routes the session's messages to
// this node, since when (routedSince) in the session's tern_subs record,
// for the ship of the node it was on (defaultShipMargin). It runs in the
// background: the restored session's CONNACK does not wait for nodes
// whose JetStream stream leader was on the dead node. It gives up when
// the record changed hands meanwhile.
func (c *Cluster) markRestored(id string, epoch uint64, st *subsState, subs []storage.Subscription) {
	go func() {
		t := c.routes
		failed := t.failed.Load()
		rt := &subsRecord{restored: time.Now().UnixNano()} // the session is in this node's index
		rt.confirmed, rt.slow = c.routedSince(subs)
		if t.retrying.Load() == 0 {
			rt.settled = rt.restored
		}
		if !c.recordRestore(id, epoch, st, rt) || rt.settled != 0 {
			return
		}
		// Route writes of this node are being retried (a stream leader is
		// elected): a node that starts meanwhile does not know them. The
		// record says when they are all written. Polled: retryPut has no
		// event to wait on.
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(time.Minute); t.retrying.Load() > 0; {
			select {
			case <-c.ctx.Done():
				return
			case <-tick.C:
			}
			if time.Now().After(deadline) {
				return
			}
		}
		if t.failed.Load() != failed {
			c.log.Debug("restore not settled: a route write failed", "client", id)
			return
		}
		settled := *rt
		settled.settled = time.Now().UnixNano()
		c.recordRestore(id, epoch, st, &settled)
	}()
}

// recordRestore writes the restore times of the session of id into its
// record, if the record is still the one the CONNECT that won epoch wrote
// here; it reports whether it did.
func (c *Cluster) recordRestore(id string, epoch uint64, st *subsState, rt *subsRecord) bool {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	for range 20 {
		done, ok := c.tryRecordRestore(ctx, id, epoch, st, rt)
		if done {
			return ok
		}
		// No stream leader yet (an election after a node died), or the
		// record changed under the write: again, without holding st.mu
		// (the client's SUBSCRIBEs write the record too).
		select {
		case <-ctx.Done():
			return false
		case <-time.After(500 * time.Millisecond):
		}
	}
	return false
}

// tryRecordRestore is one attempt of recordRestore; done says whether it
// settled the matter, ok whether the times were written.
func (c *Cluster) tryRecordRestore(ctx context.Context, id string, epoch uint64, st *subsState, rt *subsRecord) (done, ok bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	key := sessionKey(id)
	val, rev, err := c.leaderGet(ctx, "tern_subs", key)
	if err != nil {
		return false, false
	}
	r, err := decodeSubsRecord(val)
	if err != nil || r.epoch != epoch || r.node != c.opts.Node || r.tooLarge {
		c.log.Debug("restore time not recorded: the record changed", "client", id)
		return true, false
	}
	r.copyRestore(rt)
	if rev, err = c.kvSubs.Update(ctx, key, encodeSubsRecord(id, r), rev); err != nil {
		return false, false
	}
	st.rev, st.restore = rev, rt
	return true, true
}

// routedSince asks every other node whether it has this node's routes for
// subs in its index (routes.hasRequest; asked again while it has not, for
// up to routedWait): confirmed holds the clock of each that had them
// (after which every message it receives for subs is routed here; a
// message's Created is its publishing node's clock, so no clock is
// compared with another's), slow the nodes that did not confirm in time.
// A node that is gone (no responders) is in neither: it reads the routes
// from tern_routes before it takes clients again (see shipRule).
func (c *Cluster) routedSince(subs []storage.Subscription) (confirmed map[string]int64, slow []string) {
	req := []byte{wireVersion}
	req = appendStr(req, c.opts.Node)
	req = binary.AppendUvarint(req, uint64(len(subs)))
	for _, sub := range subs {
		req = appendStr(req, routeKey(c.opts.Node, sub.Group, sub.Filter))
	}
	confirmed = map[string]int64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range c.nodes.list() {
		if n.Self {
			continue
		}
		wg.Go(func() {
			var clock int64
			for deadline := time.Now().Add(routedWait); clock == 0 && time.Now().Before(deadline) && c.ctx.Err() == nil; {
				resp, err := c.nc.Request("tern.n."+n.Name+".has", req, c.opts.ForwardTimeout)
				if errors.Is(err, nats.ErrNoResponders) {
					return // gone
				}
				if err == nil {
					if v, k := binary.Varint(resp.Data); k > 0 {
						clock = v
						break
					}
				}
				select { // not there yet: the node's bucket watcher lags, or it is starting
				case <-c.ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if clock == 0 {
				slow = append(slow, n.Name)
			} else {
				confirmed[n.Name] = clock
			}
		})
	}
	wg.Wait()
	slices.Sort(slow)
	return confirmed, slow
}

// routedWait bounds the wait for one node's confirmation in routedSince.
const routedWait = 5 * time.Second

// shipRule tells which messages of a session shipped late (skipDelivered)
// reached, directly, the node that restored the session from tern_subs.
type shipRule struct {
	// since: messages received at or after it (the margin included), on
	// a topic one of the record's own filters matches, were routed there
	// by the node that received them.
	since int64
	// selfStart is when the shipping node started (0: ignored): a message
	// received at or after it may be its own, which it routed there only
	// once it knew the route: from routedAt(group, filter) (0: not yet)
	// plus the margin. Before ownFrom (when it let clients in), its own
	// can only be from its in-process client (inline, the client id):
	// the others it has were parked for it.
	selfStart, ownFrom int64
	inline             string
	routedAt           func(group, filter string) int64
	margin             int64
}

// late reports whether the node that restored the session of rec had the
// message (topic, origin, created) directly: rec names a filter of its
// own that matches it (not a shared one), and the message came after
// every node routed there.
func (rule shipRule) late(rec *subsRecord, topic, origin string, created int64) bool {
	if rule.since == 0 || created < rule.since {
		return false
	}
	for _, sub := range rec.subs {
		if sub.Group != "" || !topics.Match(sub.Filter, topic) {
			continue
		}
		if rule.selfStart != 0 && created >= rule.selfStart && (created >= rule.ownFrom || origin == rule.inline) {
			at := rule.routedAt(sub.Group, sub.Filter)
			if at == 0 || created < at+rule.margin {
				continue // perhaps received here before this node routed it there
			}
		}
		return true
	}
	return false
}

// skipDelivered removes from st, a session shipped late to the node that
// restored it from rec, the deliveries that node had directly (rule), not
// for a shared subscription (a shared message goes to one node only). It
// returns how many deliveries it removed.
func skipDelivered(st *tern.SessionState, rec *subsRecord, rule shipRule) int {
	if rule.since == 0 {
		return 0
	}
	late := map[uint64]bool{}
	for _, m := range st.Messages {
		if rule.late(rec, m.Topic, m.Origin, m.Created) {
			late[m.ID] = true
		}
	}
	n := 0
	used := map[uint64]bool{}
	ds := st.Deliveries[:0]
	for _, d := range st.Deliveries {
		// A QoS 2 message the old node had in flight goes all the same:
		// the client may hold its packet identifier, which the new node
		// releases (ImportSession).
		if late[d.MessageID] && d.ShareGroup == "" && (d.PacketID == 0 || d.QoS != 2) {
			n++
			continue
		}
		used[d.MessageID] = true
		ds = append(ds, d)
	}
	st.Deliveries = ds
	msgs := st.Messages[:0]
	for _, m := range st.Messages {
		if used[m.ID] {
			msgs = append(msgs, m)
		}
	}
	st.Messages = msgs
	return n
}

// leaderGet reads the value of key in bucket, and its revision, from the
// leader of the bucket's stream: a KV Get may be answered by any replica,
// one that has not yet the write another node just made. A deleted key is
// jetstream.ErrKeyNotFound, with the revision of its deletion (for an
// Update: a Create may read the deletion from a lagging replica and fail).
func (c *Cluster) leaderGet(ctx context.Context, bucket, key string) ([]byte, uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		// A request nobody answers (the stream's leader changed under
		// it) would wait for good.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	msg, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return nil, 0, err
	}
	var resp struct {
		Message *struct {
			Seq  uint64 `json:"seq"`
			Hdrs []byte `json:"hdrs"`
			Data []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, 0, err
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return nil, 0, jetstream.ErrKeyNotFound
	case resp.Error != nil:
		return nil, 0, errors.New("cluster: reading " + bucket + ": " + resp.Error.Description)
	case resp.Message == nil:
		return nil, 0, errors.New("cluster: reading " + bucket + ": empty answer")
	case bytes.Contains(resp.Message.Hdrs, []byte("KV-Operation: DEL")), bytes.Contains(resp.Message.Hdrs, []byte("KV-Operation: PURGE")):
		return nil, resp.Message.Seq, jetstream.ErrKeyNotFound
	}
	return resp.Message.Data, resp.Message.Seq, nil
}

// pendingWait bounds how long watchPending waits for the client to
// acknowledge what a late ship brought in flight (it may be offline).
const pendingWait = 10 * time.Minute

// watchPending follows the session of id after from shipped into it what
// it had: once nothing of the other half of the packet identifiers is in
// flight any more (the client acknowledged what from had sent it), the
// client holds none of from's identifiers, and the session's record need
// no longer say so (clearPending): a later restore keeps the client's
// state again.
func (c *Cluster) watchPending(id, from string) {
	key := id + "\x00" + from
	if _, busy := c.watching.LoadOrStore(key, true); busy {
		return
	}
	c.goTracked(func() {
		defer c.watching.Delete(key)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for deadline := time.Now().Add(pendingWait); time.Now().Before(deadline); {
			si, ok := c.srv.SessionInfo(id)
			if !ok {
				return
			}
			if si.InflightOtherHalf == 0 {
				c.clearPending(id, from)
				return
			}
			select {
			case <-c.ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
}

// clearPending clears pending in the record of the session of id, if it
// is this node's and waits for from. The record may not be this node's
// yet (its write after the restore is being retried): it looks again for
// as long as that is retried.
func (c *Cluster) clearPending(id, from string) {
	key := sessionKey(id)
	for deadline := time.Now().Add(90 * time.Second); ; {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		val, rev, err := c.leaderGet(ctx, "tern_subs", key)
		if err == nil {
			var r *subsRecord
			switch r, err = decodeSubsRecord(val); {
			case err != nil:
				cancel()
				return
			case r.node == c.opts.Node && (!r.pending || r.from != from):
				cancel()
				return // nothing of from's to clear
			case r.node == c.opts.Node:
				r.pending, r.from = false, ""
				_, err = c.kvSubs.Update(ctx, key, encodeSubsRecord(id, r), rev)
			default:
				err = errors.New("the record is not this node's yet")
			}
		}
		cancel()
		if err == nil {
			c.log.Debug("the session's client holds no packet identifier of its former node any more", "client", id, "former", from)
			return
		}
		if errors.Is(err, jetstream.ErrKeyNotFound) || c.ctx.Err() != nil || time.Now().After(deadline) {
			return
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}
