package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ternmq/tern/packets"
)

// lease is what a node writes in tern_nodes under its name, renewed every
// LeaseTTL/4; the bucket's TTL removes it when the node stops renewing.
type lease struct {
	Version  string `json:"version"`
	Instance string `json:"instance"`
	MQTT     string `json:"mqtt,omitempty"`
	Started  int64  `json:"started"`
}

// NodeInfo describes a node of the cluster as this node sees it.
type NodeInfo struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	MQTT    string    `json:"mqtt_advertise,omitempty"`
	Alive   bool      `json:"alive"`
	Self    bool      `json:"self"`
	Renewed time.Time `json:"renewed"`
}

// nodeTable follows tern_nodes: which nodes hold a lease.
type nodeTable struct {
	c       *Cluster
	mu      sync.Mutex
	nodes   map[string]*NodeInfo
	remotes map[string]*nodeRemote
	renewed time.Time // this node's last successful renewal
	watch   jetstream.KeyWatcher
}

func newNodeTable(c *Cluster) *nodeTable {
	return &nodeTable{c: c, nodes: make(map[string]*NodeInfo), remotes: make(map[string]*nodeRemote)}
}

// remote returns the tern.Remote of a node, made once.
func (t *nodeTable) remote(node string) *nodeRemote {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.remotes[node]
	if r == nil {
		r = &nodeRemote{c: t.c, node: node, subject: "tern.n." + node + ".d"}
		if n := t.nodes[node]; n != nil && n.Alive {
			r.alive.Store(true)
		}
		t.remotes[node] = r
	}
	return r
}

// liveOthers returns the other nodes that hold a lease.
func (t *nodeTable) liveOthers() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for name, n := range t.nodes {
		if n.Alive && name != t.c.opts.Node {
			out = append(out, name)
		}
	}
	return out
}

func (t *nodeTable) liveCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, i := range t.nodes {
		if i.Alive {
			n++
		}
	}
	return n
}

// list returns the nodes known, sorted by name.
func (t *nodeTable) list() []NodeInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]NodeInfo, 0, len(t.nodes))
	for _, n := range t.nodes {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// reference returns the MQTT address of another live node, for a Server
// Reference; "" when none is known.
func (t *nodeTable) reference() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	for name, n := range t.nodes {
		if n.Alive && name != t.c.opts.Node && n.MQTT != "" {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return t.nodes[names[0]].MQTT
}

// start checks that no live node has this node's name, writes the lease,
// loads the others' and watches them.
func (t *nodeTable) start(ctx context.Context) error {
	c := t.c
	if t.watch != nil {
		return nil
	}
	if e, err := c.kvNodes.Get(ctx, c.opts.Node); err == nil {
		var l lease
		if json.Unmarshal(e.Value(), &l) == nil && l.Instance != c.instance && l.Version != Version {
			c.log.Warn("this node's name was last used by another Tern version", "theirs", l.Version, "ours", Version)
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	if err := t.renew(ctx); err != nil {
		return err
	}
	// The watcher's context is the cluster's, not setup's.
	w, err := c.kvNodes.WatchAll(c.ctx)
	if err != nil {
		return err
	}
	// Initial values, up to the nil marker.
	for e := range w.Updates() {
		if e == nil {
			break
		}
		t.apply(e)
	}
	t.watch = w
	c.goTracked(t.loop)
	c.goTracked(t.renewLoop)
	return nil
}

// renew writes this node's lease.
func (t *nodeTable) renew(ctx context.Context) error {
	c := t.c
	if f := c.faults.Load(); f != nil && (*f)() {
		return errors.New("lease renewal cut by a fault injection")
	}
	b, _ := json.Marshal(lease{Version: Version, Instance: c.instance, MQTT: c.opts.MQTTAdvertise, Started: c.started.UnixMilli()})
	if _, err := c.kvNodes.Put(ctx, c.opts.Node, b); err != nil {
		return err
	}
	t.mu.Lock()
	t.renewed = time.Now()
	t.mu.Unlock()
	return nil
}

// renewLoop renews the lease every LeaseTTL/4 and fences the node when
// it has not managed to for 2/3 of LeaseTTL: the others take it for dead
// after LeaseTTL, so by then it serves no client.
func (t *nodeTable) renewLoop() {
	c := t.c
	every := c.opts.LeaseTTL / 4
	fenceAfter := c.opts.LeaseTTL * 2 / 3
	tick := time.NewTicker(every / 2)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
		t.mu.Lock()
		renewed := t.renewed
		t.mu.Unlock()
		if time.Since(renewed) >= every {
			ctx, cancel := context.WithTimeout(c.ctx, every)
			err := t.renew(ctx)
			cancel()
			if err == nil {
				renewed = time.Now()
			} else if c.ctx.Err() == nil && time.Since(last) > time.Second {
				c.log.Warn("lease not renewed", "err", err, "since", time.Since(renewed).Round(time.Millisecond).String())
				last = time.Now()
			}
		}
		switch age := time.Since(renewed); {
		case age >= fenceAfter && !c.fenced.Load():
			c.fence(age)
		case age < fenceAfter && c.fenced.Load():
			c.fenced.Store(false)
			c.log.Warn("lease renewed: fence lifted, accepting clients again")
			c.routes.reassert()
		}
	}
}

// fence stops this node serving clients: it has lost its lease, so the
// others may soon take its sessions.
func (c *Cluster) fence(age time.Duration) {
	c.fenced.Store(true)
	ref := c.nodes.reference()
	n := c.srv.DisconnectAll(packets.UseAnotherServer, ref)
	c.log.Error("lease lost: node fenced, clients disconnected and refused until it is renewed",
		"lease_age", age.Round(time.Millisecond).String(), "disconnected", n, "server_reference", ref)
}

// loop applies the lease changes.
func (t *nodeTable) loop() {
	for e := range t.watch.Updates() {
		if e != nil {
			t.apply(e)
		}
	}
}

// apply takes one change of tern_nodes.
func (t *nodeTable) apply(e jetstream.KeyValueEntry) {
	c := t.c
	name := e.Key()
	self := name == c.opts.Node
	t.mu.Lock()
	n := t.nodes[name]
	if n == nil {
		n = &NodeInfo{Name: name, Self: self}
		t.nodes[name] = n
	}
	wasAlive := n.Alive
	var l lease
	switch e.Operation() {
	case jetstream.KeyValuePut:
		if json.Unmarshal(e.Value(), &l) == nil {
			n.Version, n.MQTT = l.Version, l.MQTT
		}
		n.Alive, n.Renewed = true, e.Created()
	default: // deleted (left) or expired
		n.Alive = false
	}
	r := t.remotes[name]
	alive := n.Alive
	t.mu.Unlock()
	if r != nil {
		r.alive.Store(alive)
	}
	if self || wasAlive == alive {
		return
	}
	if alive {
		if l.Version != Version {
			c.log.Error("a node of another Tern version joined: mixed versions are not supported", "peer", name,
				"peer_version", l.Version, "version", Version)
		}
		c.log.Info("node joined", "peer", name, "mqtt", l.MQTT)
		return
	}
	reason := "left"
	if e.Operation() == jetstream.KeyValuePurge {
		reason = "lease expired"
	}
	c.log.Warn("node gone", "peer", name, "reason", reason)
}
