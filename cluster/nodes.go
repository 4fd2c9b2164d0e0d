package cluster

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ternmq/tern/packets"
)

// lease is a node's heartbeat, sent on core NATS every LeaseTTL/6 (no
// JetStream: a Raft election, 4 to 9 s after a leader's death, must not
// stall it), and its entry in tern_members.
type lease struct {
	Version string `json:"version"`
	// Wire is the sender's protoVersion; absent (0) in nodes that predate
	// it, which spoke version 1.
	Wire int `json:"wire,omitempty"`
	// Park is parkFormat in nodes that read batches of parked messages;
	// absent (0) in earlier ones, which read single messages only.
	Park     int    `json:"park,omitempty"`
	Instance string `json:"instance"`
	MQTT     string `json:"mqtt,omitempty"`
	Started  int64  `json:"started"`
}

// NodeInfo describes a node of the cluster as this node sees it.
type NodeInfo struct {
	Name     string    `json:"name"`
	Version  string    `json:"version"`
	Wire     int       `json:"wire_version"`
	MQTT     string    `json:"mqtt_advertise,omitempty"`
	Alive    bool      `json:"alive"`
	Self     bool      `json:"self"`
	Renewed  time.Time `json:"last_heard"` // last heartbeat received
	instance string    // the process last heard under Name
	park     int       // the lease's Park
	// Incompatible is set while the node's heartbeats give another wire
	// version than this node's: it is not routed to and counts as absent
	// (so a node that sees only such nodes fences itself).
	Incompatible bool `json:"incompatible,omitempty"`
}

// nodeTable knows the members of the cluster and which are alive (heard
// from within LeaseTTL).
type nodeTable struct {
	c       *Cluster
	mu      sync.Mutex
	nodes   map[string]*NodeInfo
	remotes map[string]*nodeRemote
	renewed time.Time // this node's last heartbeat
	lost    time.Time // since when this node sees no majority; zero when it does
	hb      *nats.Subscription
	// dupWarned is set once another process's heartbeat had this node's
	// name.
	dupWarned atomic.Bool
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

// liveOthers returns the other nodes that are alive.
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
// Reference; when none is alive (this node is cut off), of the node heard
// from last; "" when none is known.
func (t *nodeTable) reference() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	var last *NodeInfo
	for name, n := range t.nodes {
		if name == t.c.opts.Node || n.MQTT == "" || n.Incompatible {
			continue
		}
		if n.Alive {
			names = append(names, name)
		}
		if last == nil || n.Renewed.After(last.Renewed) {
			last = n
		}
	}
	if len(names) == 0 {
		if last != nil {
			return last.MQTT
		}
		return ""
	}
	sort.Strings(names)
	return t.nodes[names[0]].MQTT
}

// waitGone waits until node's lease expired here: cut off rather than
// dead, it has fenced itself by then. It gives up (false) once the node
// was still heard from for a lease and a tick.
func (t *nodeTable) waitGone(node string) bool {
	c := t.c
	r := t.remote(node)
	deadline := time.Now().Add(c.opts.LeaseTTL + c.opts.LeaseTTL/3)
	for r.Reachable() {
		if time.Now().After(deadline) || c.ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond) // polled: the lease loop marks it gone at its next tick
	}
	return true
}

// start registers this node in tern_members (the nodes of the cluster,
// whose majority a node must see to serve), loads the members and starts
// the heartbeats.
func (t *nodeTable) start(ctx context.Context) error {
	c := t.c
	if t.hb != nil {
		return nil
	}
	b, _ := json.Marshal(t.lease())
	if _, err := c.kvNodes.Put(ctx, c.opts.Node, b); err != nil {
		return err
	}
	keys, err := c.kvNodes.ListKeys(ctx)
	if err != nil {
		return err
	}
	// A member's entry is its lease when it last started: what it reads
	// of the park stream, for a member gone now (readsParkedBatches).
	parks := make(map[string]int)
	for k := range keys.Keys() {
		var l lease
		if e, err := c.kvNodes.Get(ctx, k); err == nil && json.Unmarshal(e.Value(), &l) == nil {
			parks[k] = l.Park
		} else {
			parks[k] = 0
		}
	}
	t.mu.Lock()
	for k, park := range parks {
		if t.nodes[k] == nil {
			t.nodes[k] = &NodeInfo{Name: k, Self: k == c.opts.Node}
		}
		if t.nodes[k].park == 0 {
			t.nodes[k].park = park
		}
	}
	if t.nodes[c.opts.Node] == nil {
		t.nodes[c.opts.Node] = &NodeInfo{Name: c.opts.Node, Self: true}
	}
	t.nodes[c.opts.Node].Alive = true
	t.nodes[c.opts.Node].Version, t.nodes[c.opts.Node].Wire = Version, c.opts.wire
	t.mu.Unlock()
	if _, err := c.nc.Subscribe("tern.whois", t.whois); err != nil {
		return err
	}
	sub, err := c.nc.Subscribe("tern.hb", t.heartbeat)
	if err != nil {
		return err
	}
	t.hb = sub
	t.beat()
	c.goTracked(t.loop)
	return nil
}

func (t *nodeTable) lease() lease {
	c := t.c
	return lease{Version: Version, Wire: c.opts.wire, Park: parkFormat, Instance: c.instance, MQTT: c.opts.MQTTAdvertise, Started: c.started.UnixMilli()}
}

// parkFormat is given in heartbeats by nodes that read batches of parked
// messages (see framesHeader).
const parkFormat = 1

// readsParkedBatches reports whether node reads batches of parked
// messages, as far as its last heartbeat (or its entry in tern_members)
// tells: messages parked for a node of an earlier version are parked one
// by one.
func (t *nodeTable) readsParkedBatches(node string) bool {
	if node == t.c.opts.Node {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.nodes[node]
	return n != nil && n.park >= parkFormat
}

// beat sends this node's heartbeat to every node.
func (t *nodeTable) beat() {
	c := t.c
	if f := c.faults.Load(); f != nil && (*f)() {
		return // cut by a fault injection, as by a partition
	}
	msg := nats.NewMsg("tern.hb")
	msg.Header.Set("Node", c.opts.Node)
	msg.Data, _ = json.Marshal(t.lease())
	c.nc.PublishMsg(msg)
}

// leave tells the other nodes that this one stops, so that they take it
// for gone at once.
func (t *nodeTable) leave() {
	c := t.c
	msg := nats.NewMsg("tern.hb")
	msg.Header.Set("Node", c.opts.Node)
	msg.Header.Set("Leaving", "1")
	msg.Data, _ = json.Marshal(t.lease())
	c.nc.PublishMsg(msg)
	c.nc.FlushTimeout(time.Second)
}

// heartbeat takes another node's heartbeat.
func (t *nodeTable) heartbeat(msg *nats.Msg) {
	c := t.c
	var l lease
	if json.Unmarshal(msg.Data, &l) != nil {
		return
	}
	if f := c.faults.Load(); f != nil && (*f)() {
		return
	}
	name := msg.Header.Get("Node")
	if name == "" {
		return
	}
	if msg.Header.Get("Leaving") != "" {
		t.left(name)
		return
	}
	if name == c.opts.Node && l.Instance != c.instance {
		// Two processes with one node name would both claim its sessions.
		if t.dupWarned.CompareAndSwap(false, true) {
			c.log.Error("another process uses this node's name: give each node its own cluster.node", "node", name,
				"their_started", time.UnixMilli(l.Started).UTC().Format(time.RFC3339))
		}
		return
	}
	t.seen(name, l)
}

// seen records that node is alive, or that it speaks another wire
// version: then it is neither routed to nor counted as alive.
func (t *nodeTable) seen(name string, l lease) {
	c := t.c
	now := time.Now()
	if l.Wire == 0 {
		l.Wire = 1
	}
	compatible := l.Wire == c.opts.wire
	t.mu.Lock()
	n := t.nodes[name]
	if n == nil {
		n = &NodeInfo{Name: name, Self: name == c.opts.Node}
		t.nodes[name] = n
	}
	was, wasIncompatible := n.Alive, n.Incompatible
	n.Alive, n.Incompatible = compatible, !compatible
	n.Renewed, n.Version, n.Wire, n.MQTT, n.instance, n.park = now, l.Version, l.Wire, l.MQTT, l.Instance, l.Park
	r := t.remotes[name]
	t.mu.Unlock()
	if r != nil {
		r.alive.Store(compatible)
	}
	if name == c.opts.Node {
		return
	}
	if !compatible {
		if was || !wasIncompatible {
			c.log.Error("node of another wire version: not routed to, counted as absent (upgrade every node to one release)",
				"peer", name, "peer_wire_version", l.Wire, "wire_version", c.opts.wire,
				"peer_version", l.Version, "version", Version)
		}
		return
	}
	if was {
		return
	}
	if l.Version != Version {
		c.log.Warn("a node of another Tern version joined (same wire version): fine during an upgrade, not for long", "peer", name,
			"peer_version", l.Version, "version", Version)
	}
	c.log.Info("node joined", "peer", name, "mqtt", l.MQTT)
}

// left marks a node that said it stops as gone.
func (t *nodeTable) left(name string) {
	c := t.c
	if name == c.opts.Node {
		return
	}
	t.mu.Lock()
	n := t.nodes[name]
	was := n != nil && n.Alive
	if was {
		n.Alive = false
	}
	r := t.remotes[name]
	t.mu.Unlock()
	if r != nil {
		r.alive.Store(false)
	}
	if was {
		c.log.Info("node left", "peer", name)
		// Its clients are disconnected after its routes closed: their
		// wills are the others' to publish.
		c.goTracked(func() { c.reapWills(name) })
	}
}

// loop sends heartbeats every LeaseTTL/6, takes nodes not heard from for
// LeaseTTL for gone, and fences this node while it hears fewer than a
// majority of the members for 2/3 of LeaseTTL: the others take it for
// gone after LeaseTTL, so by then it serves no client.
func (t *nodeTable) loop() {
	c := t.c
	every := c.opts.LeaseTTL / 6
	fenceAfter := c.opts.LeaseTTL * 2 / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
		t.beat()
		now := time.Now()
		var gone []string
		fresh, members := 1, 0
		t.mu.Lock()
		t.renewed = now
		for name, n := range t.nodes {
			members++
			if name == c.opts.Node {
				continue
			}
			age := now.Sub(n.Renewed)
			if n.Alive && age > c.opts.LeaseTTL {
				n.Alive = false
				gone = append(gone, name)
				if r := t.remotes[name]; r != nil {
					r.alive.Store(false)
				}
			}
			if n.Alive && age <= fenceAfter {
				fresh++
			}
		}
		if fresh*2 <= members {
			if t.lost.IsZero() {
				t.lost = now
			}
		} else {
			t.lost = time.Time{}
		}
		lost := t.lost
		t.mu.Unlock()
		for _, name := range gone {
			c.log.Warn("node gone: no heartbeat", "peer", name, "for", c.opts.LeaseTTL.String())
			if !c.fenced.Load() {
				c.goTracked(func() { c.reapWills(name) })
			}
		}
		switch {
		case !lost.IsZero() && !c.fenced.Load():
			c.fence(fresh, members)
		case lost.IsZero() && c.fenced.Load():
			c.fenced.Store(false)
			c.log.Warn("a majority of the nodes is back: fence lifted, accepting clients again")
			c.routes.reassert()
			// What was parked for this node while it was cut off goes into
			// its sessions, then those that moved are shipped.
			c.goTracked(c.reg.shipLost)
		}
	}
}

// fence stops this node serving clients: it cannot see a majority of the
// cluster, so the others may soon take its sessions.
func (c *Cluster) fence(fresh, members int) {
	c.fences.Add(1)
	c.fenced.Store(true)
	ref := c.nodes.reference()
	n := c.srv.DisconnectAll(packets.UseAnotherServer, ref)
	c.log.Error("cut off from the majority: node fenced, clients disconnected and refused until it is back",
		"nodes_seen", fresh, "members", members, "disconnected", n, "server_reference", ref)
}
