package cluster

import (
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"

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
	applied uint64           // revision of the bucket applied so far
	waiters []syncWaiter
	watch   jetstream.KeyWatcher
}

func newRouteTable(c *Cluster) *routeTable {
	return &routeTable{c: c, remote: make(map[string]route)}
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
		local[routeKey(c.opts.Node, group, filter)] = route{c.opts.Node, group, filter}
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

// FilterAdded implements tern.FilterObserver: the route goes into
// tern_routes, and done is called once every live node has it in its
// index, so that a message published anywhere after the SUBACK reaches
// the new subscriber.
func (c *Cluster) FilterAdded(group, filter string, done func(error)) {
	t := c.routes
	if !t.started.Load() {
		done(nil) // written with the others when the node joins
		return
	}
	fut, err := c.js.PublishAsync("$KV.tern_routes."+routeKey(c.opts.Node, group, filter), routeValue(group, filter))
	if err != nil {
		done(err)
		return
	}
	c.fwd.cnt.routeWrites.Add(1)
	go func() {
		var rev uint64
		select {
		case ack := <-fut.Ok():
			rev = ack.Sequence
		case err := <-fut.Err():
			done(err)
			return
		}
		done(t.syncAll(rev))
	}()
}

// syncAll waits until every live node applied the bucket up to rev. A
// node that does not answer in time is logged, not waited for: it is
// dying, or will load the route when it is back.
func (t *routeTable) syncAll(rev uint64) error {
	c := t.c
	others := c.nodes.liveOthers()
	if len(others) == 0 {
		return nil
	}
	req := binary.AppendUvarint(nil, rev)
	var wg sync.WaitGroup
	for _, n := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.nc.Request("tern.n."+n+".sync", req, c.opts.ForwardTimeout)
			if err != nil && err != nats.ErrNoResponders {
				c.log.Warn("a node did not confirm a new route in time", "peer", n, "err", err)
			}
		}()
	}
	wg.Wait()
	return nil
}

// FilterRemoved implements tern.FilterObserver.
func (c *Cluster) FilterRemoved(group, filter string) {
	if !c.routes.started.Load() {
		return
	}
	msg := nats.NewMsg("$KV.tern_routes." + routeKey(c.opts.Node, group, filter))
	msg.Header.Set("KV-Operation", "DEL")
	c.fwd.cnt.routeWrites.Add(1)
	if _, err := c.js.PublishMsgAsync(msg); err != nil && c.ctx.Err() == nil {
		c.log.Warn("route not removed", "filter", filter, "err", err)
	}
}
