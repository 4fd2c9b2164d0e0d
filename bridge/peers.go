package bridge

import (
	"strconv"
	"strings"
	"sync"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// Links configured on both sides. When broker A has a bridge to B and B a
// bridge to A, a message published on A could reach B twice: exported by
// A's bridge, and imported by B's. Tern bridges avoid it: a v5 Tern bridge
// announces in its CONNECT, in "tern-pull" user properties, the remote
// filters it imports without renaming them ("QoS filter"), and the remote's
// Manager remembers them while that bridge is connected. A's bridge to B
// then leaves to B's bridge the messages B's bridge pulls anyway at the
// same topic and at least the same QoS (counted as "peer_link"). While B's
// bridge is not connected, A's bridge exports them, and B's bridge also
// gets them from its session queue on A when it comes back: an outage may
// duplicate, never lose.

// PullProperty is the user property of a bridge's CONNECT announcing a
// filter it imports without renaming topics.
const PullProperty = "tern-pull"

// pull is one announced filter.
type pull struct {
	filter string
	qos    byte
}

// peerTable holds the pulls of the Tern bridges connected to this broker,
// by their node id.
type peerTable struct {
	mu    sync.RWMutex
	nodes map[string]map[*tern.Client][]pull
}

// pulls reports whether a bridge from node connected here imports topic
// unrenamed at QoS qos or more.
func (pt *peerTable) pulls(node, topic string, qos byte) bool {
	if pt == nil {
		return false
	}
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	for _, ps := range pt.nodes[node] {
		for _, p := range ps {
			if p.qos >= qos && topics.Match(p.filter, topic) {
				return true
			}
		}
	}
	return false
}

// connected records the pulls of a Tern bridge that connected with a
// persistent session (one with clean start would lose what it misses).
func (pt *peerTable) connected(c *tern.Client, persistent bool) {
	var node string
	var ps []pull
	for _, u := range c.UserProperties() {
		switch u.Key {
		case tern.NodeProperty:
			node = u.Value
		case PullProperty:
			q, f, ok := strings.Cut(u.Value, " ")
			n, err := strconv.Atoi(q)
			if ok && err == nil && n >= 0 && n <= 2 && topics.ValidateFilter(f) == nil {
				ps = append(ps, pull{filter: f, qos: byte(n)})
			}
		}
	}
	if node == "" || len(ps) == 0 || !persistent {
		return
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.nodes == nil {
		pt.nodes = make(map[string]map[*tern.Client][]pull)
	}
	if pt.nodes[node] == nil {
		pt.nodes[node] = make(map[*tern.Client][]pull)
	}
	pt.nodes[node][c] = ps
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

// pullProperties returns the tern-pull properties of a bridge's CONNECT.
func (s *settings) pullProperties() []packets.UserProperty {
	var out []packets.UserProperty
	for _, r := range s.rules {
		if r.Direction.in() && r.identity() {
			out = append(out, packets.UserProperty{Key: PullProperty, Value: strconv.Itoa(int(r.QoS)) + " " + r.remoteFilter})
		}
	}
	return out
}

var (
	_ tern.ConnectObserver    = (*Manager)(nil)
	_ tern.DisconnectObserver = (*Manager)(nil)
)

// OnSessionEstablished implements tern.ConnectObserver: it notes the
// Tern bridges that connect to this broker (see PullProperty).
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
