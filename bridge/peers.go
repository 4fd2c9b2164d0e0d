package bridge

import (
	"strconv"
	"strings"
	"sync"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// Direct links between Tern brokers. A v5 Tern bridge announces in its
// CONNECT, as user properties "QoS filter", the filters it forwards without
// renaming topics: "tern-pull" for what it imports from the remote (filters
// on the remote), "tern-push" for what it exports to it (filters on its own
// broker, which are the same topics on the remote). The remote's Manager
// remembers them while that bridge is connected (with a persistent
// session: one with clean start would lose what it misses). Two things
// follow.
//
// Links configured on both sides. When A has a bridge to B and B one to A,
// a message published on A could reach B twice: exported by A's bridge and
// imported by B's. A's bridge leaves to B's the messages B's bridge pulls
// anyway at the same topic and at least the same QoS (counted as
// "peer_link").
//
// Meshes. In a cycle (A-B, B-C, C-A) a message from A reaches C directly
// and through B. A broker that has a direct link from a message's origin
// (the first broker in its hop list) for that topic, one of its own bridges
// pulling from it or a bridge of the origin pushing to it, drops the
// message when it comes by a longer path: a bridge does not import it
// ("redundant_path"), and a publish from another broker's bridge is
// acknowledged and discarded (tern.ErrDiscard; counted in
// Manager.Redundant, the metric tern_bridge_redundant_discarded_total).
//
// Either way, while the direct link is down the message takes the other
// path, and the direct link's session queue delivers it again when it
// returns: an outage may duplicate, never lose.

// User properties of a bridge's CONNECT announcing what it forwards without
// renaming topics.
const (
	PullProperty = "tern-pull"
	PushProperty = "tern-push"
)

// flow is one announced filter.
type flow struct {
	filter string
	qos    byte
}

// peerFlows are what a connected Tern bridge announced.
type peerFlows struct {
	pulls, pushes []flow
}

// peerTable holds the announcements of the Tern bridges connected to this
// broker, by their node id.
type peerTable struct {
	mu    sync.RWMutex
	nodes map[string]map[*tern.Client]*peerFlows
}

func matchFlows(fs []flow, topic string, qos byte) bool {
	for _, f := range fs {
		if f.qos >= qos && topics.Match(f.filter, topic) {
			return true
		}
	}
	return false
}

// pulls reports whether a bridge from node connected here imports topic
// unrenamed at QoS qos or more.
func (pt *peerTable) pulls(node, topic string, qos byte) bool {
	if pt == nil {
		return false
	}
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	for _, f := range pt.nodes[node] {
		if matchFlows(f.pulls, topic, qos) {
			return true
		}
	}
	return false
}

// pushes reports whether a bridge from node connected here exports topic
// to this broker unrenamed at QoS qos or more.
func (pt *peerTable) pushes(node, topic string, qos byte) bool {
	if pt == nil {
		return false
	}
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	for _, f := range pt.nodes[node] {
		if matchFlows(f.pushes, topic, qos) {
			return true
		}
	}
	return false
}

func parseFlow(v string) (flow, bool) {
	q, f, ok := strings.Cut(v, " ")
	n, err := strconv.Atoi(q)
	if !ok || err != nil || n < 0 || n > 2 || topics.ValidateFilter(f) != nil {
		return flow{}, false
	}
	return flow{filter: f, qos: byte(n)}, true
}

// connected records the announcements of a Tern bridge.
func (pt *peerTable) connected(c *tern.Client, persistent bool) {
	var node string
	fl := &peerFlows{}
	for _, u := range c.UserProperties() {
		switch u.Key {
		case tern.NodeProperty:
			node = u.Value
		case PullProperty:
			if f, ok := parseFlow(u.Value); ok {
				fl.pulls = append(fl.pulls, f)
			}
		case PushProperty:
			if f, ok := parseFlow(u.Value); ok {
				fl.pushes = append(fl.pushes, f)
			}
		}
	}
	if node == "" || len(fl.pulls)+len(fl.pushes) == 0 || !persistent {
		return
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.nodes == nil {
		pt.nodes = make(map[string]map[*tern.Client]*peerFlows)
	}
	if pt.nodes[node] == nil {
		pt.nodes[node] = make(map[*tern.Client]*peerFlows)
	}
	pt.nodes[node][c] = fl
}

func (pt *peerTable) disconnected(c *tern.Client) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	for node, cs := range pt.nodes {
		if _, ok := cs[c]; ok {
			delete(cs, c)
			if len(cs) == 0 {
				delete(pt.nodes, node)
			}
		}
	}
}

// identity reports whether the rule leaves topics as they are.
func (r *rule) identity() bool {
	return !r.capture && r.LocalPrefix == r.RemotePrefix
}

// flowProperties returns the tern-pull and tern-push properties of a
// bridge's CONNECT.
func (s *settings) flowProperties() []packets.UserProperty {
	var out []packets.UserProperty
	for _, r := range s.rules {
		if !r.identity() {
			continue
		}
		q := strconv.Itoa(int(r.QoS)) + " "
		if r.Direction.in() {
			out = append(out, packets.UserProperty{Key: PullProperty, Value: q + r.remoteFilter})
		}
		if r.Direction.out() {
			out = append(out, packets.UserProperty{Key: PushProperty, Value: q + r.localFilter})
		}
	}
	return out
}

// origin returns the first broker of a message's hop list and how many
// there are.
func origin(user []packets.UserProperty) (string, int) {
	first, n := "", 0
	for _, u := range user {
		if u.Key == ViaProperty {
			if n == 0 {
				first = u.Value
			}
			n++
		}
	}
	return first, n
}

// direct reports whether this broker has a direct link from node carrying
// topic unrenamed at QoS qos or more: one of its own connected bridges to
// node pulls it, or a connected bridge of node pushes it here.
func (m *Manager) direct(node, topic string, qos byte) bool {
	if m.peers.pushes(node, topic, qos) {
		return true
	}
	m.mu.Lock()
	bs := make([]*Bridge, 0, len(m.bridges))
	for _, b := range m.bridges {
		bs = append(bs, b)
	}
	m.mu.Unlock()
	for _, b := range bs {
		if b.pullsFrom(node, topic, qos) {
			return true
		}
	}
	return false
}

// pullsFrom reports whether the bridge is connected to node and imports
// topic unrenamed at QoS qos or more.
func (b *Bridge) pullsFrom(node, topic string, qos byte) bool {
	b.mu.Lock()
	ok := b.cur != nil && b.remoteNode == node
	b.mu.Unlock()
	if !ok {
		return false
	}
	for _, r := range b.s.rules {
		if r.Direction.in() && r.identity() && r.QoS >= qos && topics.Match(r.remoteFilter, topic) {
			return true
		}
	}
	return false
}

var (
	_ tern.ConnectObserver    = (*Manager)(nil)
	_ tern.DisconnectObserver = (*Manager)(nil)
	_ tern.PublishInterceptor = (*Manager)(nil)
)

// OnSessionEstablished implements tern.ConnectObserver: it notes the
// Tern bridges that connect to this broker.
func (m *Manager) OnSessionEstablished(c *tern.Client, _ bool) {
	if len(c.UserProperties()) == 0 {
		return
	}
	persistent := false
	if m.srv != nil {
		if si, ok := m.srv.SessionInfo(c.ID()); ok {
			persistent = si.Expiry > 0
		}
	}
	m.peers.connected(c, persistent)
}

// OnDisconnect implements tern.DisconnectObserver.
func (m *Manager) OnDisconnect(c *tern.Client, _ error) {
	if len(c.UserProperties()) != 0 {
		m.peers.disconnected(c)
	}
}

// OnPublish implements tern.PublishInterceptor: a message another broker's
// bridge publishes here, which has crossed more than one bridge, is
// discarded when this broker has a direct link from its origin for it. It
// costs nothing for messages without user properties.
func (m *Manager) OnPublish(_ *tern.Client, pk *packets.Publish) error {
	if len(pk.Properties.User) == 0 {
		return nil
	}
	if node, n := origin(pk.Properties.User); n >= 2 && m.direct(node, pk.Topic, pk.QoS) {
		m.redundant.Add(1)
		return tern.ErrDiscard
	}
	return nil
}

// Redundant returns how many messages other brokers' bridges sent here by
// a longer path than a direct link from their origin, and that were
// discarded (see peers.go).
func (m *Manager) Redundant() int64 { return m.redundant.Load() }
