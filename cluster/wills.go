package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
)

// Wills of the clients of a node that dies. The node that takes a CONNECT
// writes the will to tern_wills under "<node>.<hash>" before the CONNACK,
// with its properties, its delay, the session expiry interval and the
// registry epoch the CONNECT won, and removes it when the connection ends:
// the node itself then publishes, delays or drops the will, as a single
// server does (a delayed will waits in the node's own store, and is lost
// with the node only if it never comes back).
//
// When a node is gone, each of the others tries to take each will it left
// by deleting it with compare-and-set, so exactly one does. A will with no
// delay is published at once: the connection ended without a DISCONNECT
// [MQTT-3.1.2-8]. A delayed one waits min(Will Delay Interval, session
// expiry interval) from then, adopted: written under the taker's own
// name, so that if the taker dies in turn the next one takes it, and
// published when due unless the client connected again meanwhile (its
// registry epoch moved on) [MQTT-3.1.3-9].
//
// A node that starts takes the wills its previous run left the same way,
// before it accepts clients: a restart quicker than the others' notice
// would leave them to nobody.

// willKey is the client value holding the will record of its CONNECT.
type willKey struct{}

// willOwner is the client value holding the revision of its will's record
// in tern_wills.
type willOwner struct{}

func willKVKey(node, clientID string) string { return node + "." + hashKey(clientID) }

// willRecord is a will in tern_wills.
type willRecord struct {
	clientID, username string
	will               *packets.Will // Properties.WillDelay kept; other properties as storage keeps them
	expiry             uint32        // the session expiry interval of the connection
	epoch              uint64        // the registry epoch its CONNECT won (the revision of its tern_sessions entry)
	due                int64         // unix milliseconds when an adopted will is due; 0 while its client is connected
}

// delay is how long after the connection's end the will waits.
func (r *willRecord) delay() time.Duration {
	return time.Duration(min(r.will.Properties.WillDelay, r.expiry)) * time.Second
}

func encodeWill(r *willRecord) []byte {
	b := []byte{wireVersion}
	b = appendStr(b, r.clientID)
	b = appendStr(b, r.username)
	b = binary.AppendUvarint(b, uint64(r.will.Properties.WillDelay))
	b = binary.AppendUvarint(b, uint64(r.expiry))
	b = binary.AppendUvarint(b, r.epoch)
	b = binary.AppendVarint(b, r.due)
	p := r.will.Properties
	m := &storage.Message{Topic: r.will.Topic, Payload: r.will.Payload, QoS: r.will.QoS, Retain: r.will.Retain, Properties: &p}
	return storage.AppendMessage(b, m)
}

func decodeWill(b []byte) (*willRecord, error) {
	rd := reader{b: b}
	if !wireOK(rd.byte()) {
		return nil, errors.New("cluster: will of another wire version")
	}
	r := &willRecord{clientID: rd.str(), username: rd.str()}
	delay := rd.uvarint()
	r.expiry, r.epoch = uint32(rd.uvarint()), rd.uvarint()
	if rd.err {
		return nil, errCorrupt
	}
	due, n := binary.Varint(rd.b)
	if n <= 0 {
		return nil, errCorrupt
	}
	r.due = due
	var m storage.Message
	if err := storage.DecodeMessage(rd.b[n:], &m); err != nil {
		return nil, err
	}
	r.will = &packets.Will{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain}
	if m.Properties != nil {
		r.will.Properties = *m.Properties
	}
	r.will.Properties.WillDelay = uint32(delay)
	return r, nil
}

// CheckConnect implements tern.ConnectGate: it keeps the CONNECT's will
// for AttachSession. It refuses nothing.
func (c *Cluster) CheckConnect(cl *tern.Client, pk *packets.Connect) packets.ReasonCode {
	if pk.Will != nil {
		cl.SetValue(willKey{}, &willRecord{clientID: cl.ID(), username: cl.Username(), will: pk.Will})
	}
	return packets.Success
}

// pendingWill is a delayed will adopted from a gone node.
type pendingWill struct {
	rev   uint64 // of its record under this node's name; 0: none
	timer *time.Timer
}

// willTable is this node's side of tern_wills.
type willTable struct {
	mu      sync.Mutex
	live    map[string]*tern.Client // connected clients whose will is in tern_wills
	pending map[string]*pendingWill // client identifier -> its adopted will
}

// storeWill writes the will of a client this node accepts, if it has one
// (expiry is its session expiry interval, epoch what its CONNECT won). A
// delayed will of the client adopted here is cancelled: the new
// connection came before its delay passed [MQTT-3.1.3-9].
func (c *Cluster) storeWill(ctx context.Context, cl *tern.Client, expiry uint32, epoch uint64) error {
	id := cl.ID()
	key := willKVKey(c.opts.Node, id)
	t := &c.willTab
	t.mu.Lock()
	old := t.pending[id]
	delete(t.pending, id)
	t.mu.Unlock()
	if old != nil {
		old.timer.Stop()
	}
	rec, _ := cl.Value(willKey{}).(*willRecord)
	if rec == nil {
		if old != nil && old.rev != 0 {
			c.kvWills.Delete(ctx, key, jetstream.LastRevision(old.rev))
		}
		return nil
	}
	rec.expiry, rec.epoch = expiry, epoch
	rev, err := c.kvWills.Put(ctx, key, encodeWill(rec))
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.live[id] = cl
	t.mu.Unlock()
	cl.SetValue(willOwner{}, rev)
	return nil
}

// OnDisconnect implements tern.DisconnectObserver: the will of a
// connection that ended is this node's to handle.
func (c *Cluster) OnDisconnect(cl *tern.Client, _ error) {
	rev, _ := cl.Value(willOwner{}).(uint64)
	if rev == 0 {
		return
	}
	id := cl.ID()
	t := &c.willTab
	t.mu.Lock()
	if t.live[id] != cl {
		t.mu.Unlock()
		return // a newer connection of the client wrote its own
	}
	delete(t.live, id)
	t.mu.Unlock()
	key := willKVKey(c.opts.Node, id)
	c.goTracked(func() {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		c.kvWills.Delete(ctx, key, jetstream.LastRevision(rev)) // not a newer connection's
	})
}

// reapWills takes the wills node left: those of a gone node, or at start
// those this node's previous run left.
func (c *Cluster) reapWills(node string) {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	keys, err := c.kvWills.ListKeysFiltered(ctx, node+".>")
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) {
			c.log.Warn("wills of a gone node not read", "peer", node, "err", err)
		}
		return
	}
	published, adopted := 0, 0
	for k := range keys.Keys() {
		e, err := c.kvWills.Get(ctx, k)
		if err != nil {
			continue
		}
		rec, err := decodeWill(e.Value())
		if err != nil {
			c.log.Warn("will of a gone node unreadable: dropped", "peer", node, "err", err)
			c.kvWills.Delete(ctx, k, jetstream.LastRevision(e.Revision()))
			continue
		}
		if err := c.kvWills.Delete(ctx, k, jetstream.LastRevision(e.Revision())); err != nil {
			continue // another node took it, or the node is back and wrote it again
		}
		if rec.due == 0 { // connected when the node went: the delay runs from now
			rec.due = time.Now().Add(rec.delay()).UnixMilli()
		}
		if time.Now().UnixMilli() >= rec.due {
			if c.publishReaped(ctx, rec) {
				published++
			}
			continue
		}
		if c.adoptWill(ctx, rec) {
			adopted++
		}
	}
	if published+adopted > 0 {
		c.log.Info("took the wills of a gone node's clients", "peer", node, "published", published, "delayed", adopted)
	}
}

// publishReaped publishes a will taken from a gone node, unless it was
// delayed and its client connected again meanwhile.
func (c *Cluster) publishReaped(ctx context.Context, rec *willRecord) bool {
	if rec.delay() > 0 {
		e, err := c.kvSess.Get(ctx, sessionKey(rec.clientID))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return false // claimed since, and ended
		case err != nil:
			c.log.Warn("client registry unreachable: delayed will published unchecked", "client", rec.clientID, "err", err)
		default:
			if e.Revision() != rec.epoch { // only a CONNECT writes the entry
				return false // a new connection came before the delay passed [MQTT-3.1.3-9]
			}
		}
	}
	if err := c.srv.PublishWill(rec.clientID, rec.username, rec.will); err != nil {
		c.log.Warn("will of a gone node's client refused", "client", rec.clientID, "topic", rec.will.Topic, "err", err)
		return false
	}
	return true
}

// adoptWill keeps a delayed will taken from a gone node under this node's
// name and publishes it when due.
func (c *Cluster) adoptWill(ctx context.Context, rec *willRecord) bool {
	key := willKVKey(c.opts.Node, rec.clientID)
	rev, err := c.kvWills.Create(ctx, key, encodeWill(rec))
	if err != nil {
		// The client is connected here again (its own will is there), or
		// the bucket is unreachable: either way publish when due from
		// memory only, with the same check.
		rev = 0
	}
	p := &pendingWill{rev: rev}
	t := &c.willTab
	t.mu.Lock()
	if t.pending[rec.clientID] != nil || t.live[rec.clientID] != nil {
		t.mu.Unlock()
		if rev != 0 {
			c.kvWills.Delete(ctx, key, jetstream.LastRevision(rev))
		}
		return false // the client is here again: the will is cancelled
	}
	t.pending[rec.clientID] = p
	p.timer = time.AfterFunc(time.Until(time.UnixMilli(rec.due)), func() {
		t.mu.Lock()
		mine := t.pending[rec.clientID] == p
		if mine {
			delete(t.pending, rec.clientID)
		}
		t.mu.Unlock()
		if !mine || c.ctx.Err() != nil {
			return // replaced, or stopping: the record stays for the next taker
		}
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		c.publishReaped(ctx, rec)
		if p.rev != 0 {
			c.kvWills.Delete(ctx, key, jetstream.LastRevision(p.rev))
		}
	})
	t.mu.Unlock()
	return true
}

// stopWills stops the timers of adopted wills; their records stay for
// the node that takes this one's wills.
func (c *Cluster) stopWills() {
	t := &c.willTab
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pending {
		if p.timer != nil {
			p.timer.Stop()
		}
	}
}
