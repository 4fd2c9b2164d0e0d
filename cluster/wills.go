package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
)

// Wills of the clients connected to a node that dies: the node that took
// the CONNECT writes the will to tern_wills under "<node>.<hash>" before
// the CONNACK and removes it when the connection ends (the node itself
// then publishes, delays or drops the will, as on a single server). When
// a node is gone, the others publish the wills it left: each deletes a
// will with compare-and-set first, so exactly one of them publishes it.
// A will's delay is not applied by the others, and a delayed will still
// pending on a node when it dies is lost with it.

// willKey is the client value holding its will, from its CONNECT.
type willKey struct{}

// willOwner is the client value saying that its will is in tern_wills.
type willOwner struct{}

func willKVKey(node, clientID string) string { return node + "." + hashKey(clientID) }

func encodeWill(w *packets.Will) []byte {
	b := []byte{wireVersion, w.QoS & 3}
	if w.Retain {
		b[1] |= 4
	}
	b = appendStr(b, w.Topic)
	return appendBytes(b, w.Payload)
}

func decodeWill(b []byte) (*packets.Will, error) {
	r := reader{b: b}
	if r.byte() != wireVersion {
		return nil, errors.New("cluster: will of another wire version")
	}
	f := r.byte()
	w := &packets.Will{QoS: f & 3, Retain: f&4 != 0, Topic: r.str(), Payload: r.bytes()}
	if r.err {
		return nil, errCorrupt
	}
	return w, nil
}

// CheckConnect implements tern.ConnectGate: it keeps the CONNECT's will
// for AttachSession. It refuses nothing.
func (c *Cluster) CheckConnect(cl *tern.Client, pk *packets.Connect) packets.ReasonCode {
	if pk.Will != nil {
		cl.SetValue(willKey{}, encodeWill(pk.Will))
	}
	return packets.Success
}

// storeWill writes the will of a client this node accepts, if it has one.
func (c *Cluster) storeWill(ctx context.Context, cl *tern.Client) error {
	w, _ := cl.Value(willKey{}).([]byte)
	if w == nil {
		return nil
	}
	if _, err := c.kvWills.Put(ctx, willKVKey(c.opts.Node, cl.ID()), w); err != nil {
		return err
	}
	c.wills.Store(cl.ID(), cl)
	cl.SetValue(willOwner{}, true)
	return nil
}

// OnDisconnect implements tern.DisconnectObserver: the will of a
// connection that ended is this node's to handle.
func (c *Cluster) OnDisconnect(cl *tern.Client, _ error) {
	if own, _ := cl.Value(willOwner{}).(bool); !own {
		return
	}
	if !c.wills.CompareAndDelete(cl.ID(), cl) {
		return // a newer connection of the client wrote its own
	}
	key := willKVKey(c.opts.Node, cl.ID())
	go func() {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		c.kvWills.Delete(ctx, key)
	}()
}

// reapWills publishes the wills a gone node left.
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
	n := 0
	for k := range keys.Keys() {
		e, err := c.kvWills.Get(ctx, k)
		if err != nil {
			continue
		}
		if err := c.kvWills.Delete(ctx, k, jetstream.LastRevision(e.Revision())); err != nil {
			continue // another node took it, or the node is back and wrote it again
		}
		w, err := decodeWill(e.Value())
		if err != nil {
			continue
		}
		if err := c.srv.Publish(w.Topic, w.Payload, w.Retain, w.QoS); err != nil {
			c.log.Warn("will of a gone node's client refused", "peer", node, "topic", w.Topic, "err", err)
			continue
		}
		n++
	}
	if n > 0 {
		c.log.Info("published the wills of a gone node's clients", "peer", node, "wills", n)
	}
}
