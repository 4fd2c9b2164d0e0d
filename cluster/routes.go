package cluster

import (
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// route is one entry of tern_routes: a node has local subscribers to
// (group, filter).
type route struct {
	node, group, filter string
	added               int64 // unix nanoseconds: in the index since
}

// syncWaiter is a route synchronisation request waiting for the watcher.
type syncWaiter struct {
	rev   uint64
	reply string
}

// routeTable keeps tern_routes and the local index's remote routes in
// step: this node's filters go into the bucket, the other nodes' come out
// of it as remote routes.
type routeTable struct {
	c       *Cluster
	started atomic.Bool
	mu      sync.Mutex
	remote  map[string]route // key -> the route of another node
	local   map[string]bool  // keys of this node's routes
	applied uint64           // revision of the bucket applied so far
	waiters []syncWaiter
	watch   jetstream.KeyWatcher
	// retrying counts the route writes being retried (retryPut), failed
	// those given up: until they are in the bucket, a node that starts
	// does not know the route.
	retrying atomic.Int64
	failed   atomic.Uint64

	// addHook, when set (by tests), is called with the node before a
	// route of another node is applied (remoteAdded).
	addHook atomic.Pointer[func(node string)]

	tmu        sync.Mutex // held while new routes or a removal are sent
	amu        sync.Mutex
	pending    []newRoute // new routes not announced yet (announce)
	announcing bool       // announceLoop runs
}

func newRouteTable(c *Cluster) *routeTable {
	return &routeTable{c: c, remote: make(map[string]route), local: make(map[string]bool)}
}

// routeKey is the key of a node's route to (group, filter).
func routeKey(node, group, filter string) string { return node + "." + hashKey(group, filter) }

// addedAt returns since when the route key of another node is in the
// index (unix nanoseconds), 0 if it is not.
func (t *routeTable) addedAt(key string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.remote[key].added
}

// count returns how many routes of other nodes are known.
func (t *routeTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.remote)
}

// start loads the other nodes' routes, writes this node's (removing the
// ones it no longer has) and follows the bucket.
func (t *routeTable) start(ctx context.Context) error {
	c := t.c
	if t.watch != nil {
		return nil
	}
	w, err := c.kvRoute.WatchAll(c.ctx)
	if err != nil {
		return err
	}
	own := map[string]bool{}
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if strings.HasPrefix(e.Key(), c.opts.Node+".") {
			if e.Operation() == jetstream.KeyValuePut {
				own[e.Key()] = true
			} else {
				delete(own, e.Key())
			}
		}
		t.apply(e)
	}
	t.watch = w
	c.goTracked(t.loop)
	t.started.Store(true)
	local := map[string]route{}
	c.srv.LocalFilters(func(group, filter string) {
		k := routeKey(c.opts.Node, group, filter)
		local[k] = route{node: c.opts.Node, group: group, filter: filter}
		t.setLocal(k, true)
	})
	for k := range own {
		if _, ok := local[k]; !ok {
			c.kvRoute.Delete(ctx, k)
		}
	}
	for k, r := range local {
		if !own[k] {
			if _, err := c.kvRoute.Put(ctx, k, routeValue(r.group, r.filter)); err != nil {
				return err
			}
		}
	}
	return nil
}

// reassert writes every local filter again (after a fence, whose
// partition may have lost writes).
func (t *routeTable) reassert() {
	c := t.c
	c.srv.LocalFilters(func(group, filter string) {
		c.js.PublishAsync("$KV.tern_routes."+routeKey(c.opts.Node, group, filter), routeValue(group, filter))
	})
}

func routeValue(group, filter string) []byte { return []byte(group + "\x00" + filter) }

// loop applies the bucket's changes.
func (t *routeTable) loop() {
	for e := range t.watch.Updates() {
		if e != nil {
			t.apply(e)
		}
	}
}

// apply takes one change of tern_routes into the local index and answers
// the synchronisation requests it satisfies.
func (t *routeTable) apply(e jetstream.KeyValueEntry) {
	c := t.c
	key := e.Key()
	node, _, ok := strings.Cut(key, ".")
	if ok && node != c.opts.Node {
		if e.Operation() == jetstream.KeyValuePut {
			group, filter, _ := strings.Cut(string(e.Value()), "\x00")
			t.remoteAdded(node, group, filter)
		} else {
			t.mu.Lock()
			r, had := t.remote[key]
			delete(t.remote, key)
			t.mu.Unlock()
			if had {
				c.srv.RemoveRemoteRoute(r.node, r.group, r.filter)
			}
		}
	}
	t.mu.Lock()
	if rev := e.Revision(); rev > t.applied {
		t.applied = rev
	}
	var ready []string
	kept := t.waiters[:0]
	for _, w := range t.waiters {
		if w.rev <= t.applied {
			ready = append(ready, w.reply)
		} else {
			kept = append(kept, w)
		}
	}
	t.waiters = kept
	t.mu.Unlock()
	for _, r := range ready {
		c.nc.Publish(r, nil)
	}
}

// syncRequest answers another node once the route it wrote (the revision
// in the request) is in this node's index.
func (t *routeTable) syncRequest(msg *nats.Msg) {
	rev, _ := binary.Uvarint(msg.Data)
	t.mu.Lock()
	if rev > t.applied {
		t.waiters = append(t.waiters, syncWaiter{rev, msg.Reply})
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	msg.Respond(nil)
}

// hasRequest answers another node with this node's clock (unix
// nanoseconds, a varint) when every route key it lists is in this node's
// index, with nothing otherwise.
func (t *routeTable) hasRequest(msg *nats.Msg) {
	r := reader{b: msg.Data}
	if !wireOK(r.byte()) {
		msg.Respond(nil)
		return
	}
	node := r.str()
	n := r.uvarint()
	if r.err || n > uint64(len(r.b)) {
		msg.Respond(nil)
		return
	}
	if node == t.c.opts.Node {
		msg.Respond(binary.AppendVarint(nil, time.Now().UnixNano()))
		return
	}
	t.mu.Lock()
	all := true
	for range n {
		if _, ok := t.remote[r.str()]; !ok {
			all = false
		}
	}
	t.mu.Unlock()
	if !all || r.err {
		msg.Respond(nil)
		return
	}
	msg.Respond(binary.AppendVarint(nil, time.Now().UnixNano()))
}

// FilterAdded implements tern.FilterObserver: the route goes into
// tern_routes and to every live node directly, and done is called once
// every live node has it in its index, so that a message published
// anywhere after the SUBACK reaches the new subscriber.
func (c *Cluster) FilterAdded(group, filter string, done func(error)) {
	t := c.routes
	if !t.started.Load() {
		done(nil) // written with the others when the node joins
		return
	}
	key := routeKey(c.opts.Node, group, filter)
	t.setLocal(key, true)
	fut, err := c.js.PublishAsync("$KV.tern_routes."+key, routeValue(group, filter))
	c.fwd.cnt.routeWrites.Add(1)
	t.announce(newRoute{group: group, filter: filter, key: key, fut: fut, err: err, done: done})
}

// newRoute is a route of this node waiting to be announced (announce).
type newRoute struct {
	group, filter, key string
	fut                jetstream.PubAckFuture // its write to tern_routes
	err                error                  // or the error of that write
	done               func(error)
}

// announce queues a new route for the live nodes. One goroutine at a time
// sends what is queued, in one request per node (op 'A'), while the
// bucket writes are in flight: a SUBSCRIBE of many filters costs a few
// round trips, not one per filter and node.
func (t *routeTable) announce(r newRoute) {
	t.amu.Lock()
	t.pending = append(t.pending, r)
	if t.announcing {
		t.amu.Unlock()
		return
	}
	t.announcing = true
	t.amu.Unlock()
	go t.announceLoop()
}

// announceLoop sends the queued routes until none is left.
func (t *routeTable) announceLoop() {
	for {
		t.amu.Lock()
		batch := t.pending
		t.pending = nil
		if len(batch) == 0 {
			t.announcing = false
			t.amu.Unlock()
			return
		}
		t.amu.Unlock()
		for len(batch) > 0 {
			n := min(len(batch), maxAnnounce)
			t.tellAdded(batch[:n])
			for _, r := range batch[:n] {
				t.written(r)
				r.done(nil)
			}
			batch = batch[n:]
		}
	}
}

// maxAnnounce bounds the routes in one announcement (op 'A').
const maxAnnounce = 1024

// written waits for a new route's write to tern_routes and, when it
// failed (JetStream without a leader for the bucket, an election after a
// node died), retries it in the background: the live nodes already have
// the route, the bucket (for nodes that start later) gets it when it
// answers again.
func (t *routeTable) written(r newRoute) {
	c := t.c
	err := r.err
	if err == nil {
		select {
		case <-r.fut.Ok():
		case err = <-r.fut.Err():
		}
	}
	if err == nil {
		return
	}
	c.log.Warn("route not written to the bucket yet; retrying", "filter", r.filter, "err", err)
	t.retrying.Add(1)
	c.goTracked(func() {
		defer t.retrying.Add(-1)
		t.retryPut(r.key, r.group, r.filter)
	})
}

// setLocal records whether this node has subscribers to a route key.
func (t *routeTable) setLocal(key string, on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if on {
		t.local[key] = true
	} else {
		delete(t.local, key)
	}
}

// retryPut writes a route to the bucket until it works, while the route
// is still this node's.
func (t *routeTable) retryPut(key, group, filter string) {
	c := t.c
	for range 60 {
		t.mu.Lock()
		on := t.local[key]
		t.mu.Unlock()
		if !on {
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		_, err := c.kvRoute.Put(ctx, key, routeValue(group, filter))
		cancel()
		if err == nil || c.ctx.Err() != nil {
			return
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	t.failed.Add(1)
	c.log.Error("route never written to the bucket: nodes that start later will not know it", "filter", filter)
}

// tellAdded sends new routes of this node to every live node over core
// NATS, which applies them at once (the bucket's watchers, JetStream, may
// lag for seconds while a stream leader is elected after a node died),
// and waits for their answers: for a node that does not answer in time,
// until its lease expired (it is dead, or fenced, and loads the routes
// from the bucket when it is back). Routes removed meanwhile are left out; the
// check and the send hold tmu, as a removal does, so that a node never
// gets a route's addition after its removal.
func (t *routeTable) tellAdded(rs []newRoute) {
	c := t.c
	others := c.nodes.liveOthers()
	if len(others) == 0 {
		return
	}
	inbox := c.nc.NewInbox()
	answers := make(chan *nats.Msg, 2*len(others))
	sub, err := c.nc.ChanSubscribe(inbox+".*", answers)
	if err != nil {
		c.log.Warn("new routes not announced", "routes", len(rs), "err", err)
		return
	}
	defer sub.Unsubscribe()
	sent := t.sendAdded(rs, others, inbox)
	if sent == 0 {
		return
	}
	timeout := time.NewTimer(c.opts.ForwardTimeout)
	defer timeout.Stop()
	confirmed := map[string]bool{}
wait:
	for len(confirmed) < len(others) {
		select {
		case m := <-answers:
			if m.Header.Get("Status") != "503" { // 503: no responders, the node's routes are gone
				confirmed[strings.TrimPrefix(m.Subject, inbox+".")] = true
			}
		case <-timeout.C:
			break wait
		case <-c.ctx.Done():
			return
		}
	}
	// A node that did not confirm may be cut off rather than dead: until
	// it fences itself it acknowledges publishes without routing them
	// here. The SUBACK waits until its lease expired.
	for _, n := range others {
		if !confirmed[n] {
			c.log.Warn("a node did not confirm new routes in time: waiting for its lease to expire", "peer", n, "routes", sent)
			c.nodes.waitGone(n)
		}
	}
}

// sendAdded sends the routes of rs still local to the nodes in others,
// answers to inbox.<node>, and returns how many it sent.
func (t *routeTable) sendAdded(rs []newRoute, others []string, inbox string) int {
	t.tmu.Lock()
	defer t.tmu.Unlock()
	t.mu.Lock()
	var on []newRoute
	for _, r := range rs {
		if t.local[r.key] {
			on = append(on, r)
		}
	}
	t.mu.Unlock()
	if len(on) == 0 {
		return 0
	}
	req := []byte{wireVersion, 'A'}
	req = appendStr(req, t.c.opts.Node)
	req = binary.AppendUvarint(req, uint64(len(on)))
	for _, r := range on {
		req = appendStr(req, r.group)
		req = appendStr(req, r.filter)
	}
	for _, n := range others {
		t.c.nc.PublishRequest("tern.n."+n+".route", inbox+"."+n, req)
	}
	return len(on)
}

// tellRemoved marks a route of this node gone and sends its removal to
// every live node (the bucket's delete reaches them too, later).
func (t *routeTable) tellRemoved(key, group, filter string) {
	c := t.c
	req := []byte{wireVersion, 'd'}
	req = appendStr(req, c.opts.Node)
	req = appendStr(req, group)
	req = appendStr(req, filter)
	t.tmu.Lock()
	defer t.tmu.Unlock()
	t.setLocal(key, false)
	for _, n := range c.nodes.liveOthers() {
		c.nc.Publish("tern.n."+n+".route", req)
	}
}

// routeRequest applies another node's route changes: op 'A' (new
// routes, answered once in the index, tellAdded) or 'd' (a removal,
// tellRemoved).
func (t *routeTable) routeRequest(msg *nats.Msg) {
	c := t.c
	r := reader{b: msg.Data}
	v, op := r.byte(), r.byte()
	node := r.str()
	if r.err || !wireOK(v) || node == c.opts.Node {
		return
	}
	switch op {
	case 'A':
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			return
		}
		for range n {
			group, filter := r.str(), r.str()
			if r.err {
				return
			}
			t.remoteAdded(node, group, filter)
		}
		if msg.Reply != "" {
			msg.Respond(nil)
		}
	case 'd':
		group, filter := r.str(), r.str()
		if r.err {
			return
		}
		key := routeKey(node, group, filter)
		t.mu.Lock()
		_, had := t.remote[key]
		delete(t.remote, key)
		t.mu.Unlock()
		if had {
			c.srv.RemoveRemoteRoute(node, group, filter)
		}
	}
}

// remoteAdded puts another node's route into the index, if it is not
// there yet.
func (t *routeTable) remoteAdded(node, group, filter string) {
	if h := t.addHook.Load(); h != nil {
		(*h)(node)
	}
	key := routeKey(node, group, filter)
	t.mu.Lock()
	_, had := t.remote[key]
	if !had {
		t.remote[key] = route{node, group, filter, time.Now().UnixNano()}
	}
	t.mu.Unlock()
	if !had {
		if err := t.c.srv.AddRemoteRoute(node, t.c.nodes.remote(node), group, filter); err != nil {
			t.c.log.Warn("route of another node refused", "peer", node, "filter", filter, "err", err)
		}
	}
}

// FilterRemoved implements tern.FilterObserver.
func (c *Cluster) FilterRemoved(group, filter string) {
	if !c.routes.started.Load() {
		return
	}
	key := routeKey(c.opts.Node, group, filter)
	c.routes.tellRemoved(key, group, filter)
	msg := nats.NewMsg("$KV.tern_routes." + key)
	msg.Header.Set("KV-Operation", "DEL")
	c.fwd.cnt.routeWrites.Add(1)
	if _, err := c.js.PublishMsgAsync(msg); err != nil && c.ctx.Err() == nil {
		c.log.Warn("route not removed", "filter", filter, "err", err)
	}
}
