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
}

func newRouteTable(c *Cluster) *routeTable {
	return &routeTable{c: c, remote: make(map[string]route), local: make(map[string]bool)}
}

// routeKey is the key of a node's route to (group, filter).
func routeKey(node, group, filter string) string { return node + "." + hashKey(group, filter) }

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
		local[k] = route{c.opts.Node, group, filter}
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
			t.mu.Lock()
			_, had := t.remote[key]
			t.remote[key] = route{node, group, filter}
			t.mu.Unlock()
			if !had {
				if err := c.srv.AddRemoteRoute(node, c.nodes.remote(node), group, filter); err != nil {
					c.log.Warn("route of another node refused", "peer", node, "filter", filter, "err", err)
				}
			}
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
	if r.byte() != wireVersion {
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
	go func() {
		if err == nil {
			select {
			case <-fut.Ok():
			case err = <-fut.Err():
			}
		}
		if err != nil {
			// JetStream without a leader for the bucket (an election after
			// a node died): the live nodes get the route directly, the
			// bucket (for nodes that start later) when it answers again.
			c.log.Warn("route not written to the bucket yet; retrying", "filter", filter, "err", err)
			t.retrying.Add(1)
			c.goTracked(func() {
				defer t.retrying.Add(-1)
				t.retryPut(key, group, filter)
			})
		}
		t.tell(true, group, filter)
		done(nil)
	}()
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

// tell sends a route change of this node to every live node over core
// NATS, which applies it at once: the bucket's watchers (JetStream) may
// lag for seconds while a stream leader is elected after a node died. For
// an addition it waits for their answers (a node that does not answer in
// time is logged, not waited for: it is dying, or loads the route from
// the bucket when it is back).
func (t *routeTable) tell(add bool, group, filter string) {
	c := t.c
	others := c.nodes.liveOthers()
	req := []byte{wireVersion, 'd'}
	if add {
		req[1] = 'a'
	}
	req = appendStr(req, c.opts.Node)
	req = appendStr(req, group)
	req = appendStr(req, filter)
	if !add {
		for _, n := range others {
			c.nc.Publish("tern.n."+n+".route", req)
		}
		return
	}
	var wg sync.WaitGroup
	for _, n := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.nc.Request("tern.n."+n+".route", req, c.opts.ForwardTimeout)
			if err != nil && err != nats.ErrNoResponders {
				c.log.Warn("a node did not confirm a new route in time", "peer", n, "err", err)
			}
		}()
	}
	wg.Wait()
}

// routeRequest applies another node's route change sent by tell.
func (t *routeTable) routeRequest(msg *nats.Msg) {
	c := t.c
	r := reader{b: msg.Data}
	v, op := r.byte(), r.byte()
	node, group, filter := r.str(), r.str(), r.str()
	if r.err || v != wireVersion || node == c.opts.Node {
		return
	}
	key := routeKey(node, group, filter)
	t.mu.Lock()
	_, had := t.remote[key]
	if op == 'a' {
		t.remote[key] = route{node, group, filter}
	} else {
		delete(t.remote, key)
	}
	t.mu.Unlock()
	switch {
	case op == 'a' && !had:
		if err := c.srv.AddRemoteRoute(node, c.nodes.remote(node), group, filter); err != nil {
			c.log.Warn("route of another node refused", "peer", node, "filter", filter, "err", err)
		}
	case op != 'a' && had:
		c.srv.RemoveRemoteRoute(node, group, filter)
	}
	if msg.Reply != "" {
		msg.Respond(nil)
	}
}

// FilterRemoved implements tern.FilterObserver.
func (c *Cluster) FilterRemoved(group, filter string) {
	if !c.routes.started.Load() {
		return
	}
	c.routes.setLocal(routeKey(c.opts.Node, group, filter), false)
	msg := nats.NewMsg("$KV.tern_routes." + routeKey(c.opts.Node, group, filter))
	msg.Header.Set("KV-Operation", "DEL")
	c.fwd.cnt.routeWrites.Add(1)
	if _, err := c.js.PublishMsgAsync(msg); err != nil && c.ctx.Err() == nil {
		c.log.Warn("route not removed", "filter", filter, "err", err)
	}
	c.routes.tell(false, group, filter)
}
