package topics

import (
	"slices"
	"sync"
	"sync/atomic"
)

// node is one level of the subscription trie. The path from the root spells
// a topic filter, so every subscription stored at a node has the same filter.
// Empty nodes are pruned, so the trie's size follows the live subscriptions.
type node struct {
	parent   *node
	level    string           // this node's level in its parent: a literal, "+" or "#"
	children map[string]*node // literal levels, including ""
	plus     *node            // the '+' level
	hash     *node            // the '#' level

	subs   []*Subscription // non-shared subscriptions, in no particular order
	subPos map[string]int  // client ID -> index in subs
	groups []*group        // shared subscription groups, usually few
}

// group is a shared subscription group at one node. Its snapshot is rebuilt
// on every membership change, so a Result can hold it without copying.
type group struct {
	snap   *SharedGroup
	memPos map[string]int // client ID -> index in snap.Members
}

// group returns the index of the group named name in n.groups, or -1.
func (n *node) group(name string) int {
	for i, g := range n.groups {
		if g.snap.Name == name {
			return i
		}
	}
	return -1
}

func (n *node) empty() bool {
	return len(n.children) == 0 && n.plus == nil && n.hash == nil &&
		len(n.subs) == 0 && len(n.groups) == 0
}

// child returns the child of n for level, creating it if create is set.
func (n *node) child(level string, create bool) *node {
	var c *node
	switch level {
	case "+":
		c = n.plus
	case "#":
		c = n.hash
	default:
		c = n.children[level]
	}
	if c != nil || !create {
		return c
	}
	c = &node{parent: n, level: level}
	switch level {
	case "+":
		n.plus = c
	case "#":
		n.hash = c
	default:
		if n.children == nil {
			n.children = make(map[string]*node)
		}
		n.children[level] = c
	}
	return c
}

// find returns the node spelling filter, creating the path if create is set.
func (n *node) find(filter string, create bool) *node {
	for i := 0; i <= len(filter) && n != nil; {
		var level string
		level, i = nextLevel(filter, i)
		n = n.child(level, create)
	}
	return n
}

// insert stores s at the node for s.Filter, replacing the subscription of
// the same client (and group) there.
func (n *node) insert(s *Subscription) {
	n = n.find(s.Filter, true)
	if s.Group == "" {
		if i, ok := n.subPos[s.ClientID]; ok {
			n.subs[i] = s
			return
		}
		if n.subPos == nil {
			n.subPos = make(map[string]int)
		}
		n.subPos[s.ClientID] = len(n.subs)
		n.subs = append(n.subs, s)
		return
	}
	var g *group
	if i := n.group(s.Group); i >= 0 {
		g = n.groups[i]
	} else {
		g = &group{
			snap:   &SharedGroup{Name: s.Group, Filter: s.Filter, next: new(atomic.Uint32)},
			memPos: make(map[string]int),
		}
		n.groups = append(n.groups, g)
	}
	old := g.snap
	members := slices.Clone(old.Members)
	if i, ok := g.memPos[s.ClientID]; ok {
		members[i] = s
	} else {
		g.memPos[s.ClientID] = len(members)
		members = append(members, s)
	}
	g.snap = &SharedGroup{Name: old.Name, Filter: old.Filter, Members: members, next: old.next}
}

// remove deletes s from the node for s.Filter and prunes emptied nodes.
func (n *node) remove(s *Subscription) {
	n = n.find(s.Filter, false)
	if n == nil {
		return
	}
	if s.Group == "" {
		i, ok := n.subPos[s.ClientID]
		if !ok {
			return
		}
		last := len(n.subs) - 1
		if i != last {
			n.subs[i] = n.subs[last]
			n.subPos[n.subs[i].ClientID] = i
		}
		n.subs[last] = nil
		n.subs = n.subs[:last]
		delete(n.subPos, s.ClientID)
		if len(n.subs) == 0 {
			n.subs, n.subPos = nil, nil
		}
	} else {
		gi := n.group(s.Group)
		if gi < 0 {
			return
		}
		g := n.groups[gi]
		i, ok := g.memPos[s.ClientID]
		if !ok {
			return
		}
		delete(g.memPos, s.ClientID)
		old := g.snap
		if len(old.Members) == 1 {
			n.groups = slices.Delete(n.groups, gi, gi+1)
			if len(n.groups) == 0 {
				n.groups = nil
			}
		} else {
			// Copy-on-write: earlier snapshots may be in use. Keep member
			// order stable apart from the removed one.
			members := slices.Delete(slices.Clone(old.Members), i, i+1)
			for j := i; j < len(members); j++ {
				g.memPos[members[j].ClientID] = j
			}
			g.snap = &SharedGroup{Name: old.Name, Filter: old.Filter, Members: members, next: old.next}
		}
	}
	n.prune()
}

// prune detaches n and its ancestors from the trie while they are empty.
func (n *node) prune() {
	for n.parent != nil && n.empty() {
		p := n.parent
		switch {
		case p.plus == n:
			p.plus = nil
		case p.hash == n:
			p.hash = nil
		default:
			delete(p.children, n.level)
			if len(p.children) == 0 {
				p.children = nil
			}
		}
		n.parent = nil
		n = p
	}
}

// collect appends to m the subscriptions at or below n that match the
// levels of topic from byte offset i on (none left when i > len(topic)).
// Each node is visited at most once, so nothing is collected twice. dollar
// reports whether topic starts with '$', which wildcards at the root must
// not match [MQTT-4.7.2-1].
func (n *node) collect(topic string, i int, dollar bool, m *matchScratch) {
	for {
		if i > len(topic) {
			m.add(n)
			if n.hash != nil {
				m.add(n.hash) // "a/#" matches "a" [MQTT-4.7.1-2]
			}
			return
		}
		wild := i > 0 || !dollar
		if wild && n.hash != nil {
			m.add(n.hash)
		}
		level, next := nextLevel(topic, i)
		if wild && n.plus != nil {
			n.plus.collect(topic, next, dollar, m)
		}
		c := n.children[level]
		if c == nil {
			return
		}
		n, i = c, next
	}
}

func (m *matchScratch) add(n *node) {
	m.subs = append(m.subs, n.subs...)
	for _, g := range n.groups {
		m.shared = append(m.shared, g.snap)
	}
}

// matchPool recycles the scratch slices a cache miss collects matches in.
var matchPool = sync.Pool{New: func() any { return new(matchScratch) }}

type matchScratch struct {
	subs   []*Subscription
	shared []*SharedGroup
}

// match collects the subscriptions matching topic into a new Result.
func (root *node) match(topic string) *Result {
	m := matchPool.Get().(*matchScratch)
	dollar := topic != "" && topic[0] == '$'
	root.collect(topic, 0, dollar, m)
	r := emptyResult
	if len(m.subs) > 0 || len(m.shared) > 0 {
		r = &Result{
			Subscriptions: slices.Clone(m.subs),
			Shared:        slices.Clone(m.shared),
		}
	}
	clear(m.subs)
	clear(m.shared)
	m.subs, m.shared = m.subs[:0], m.shared[:0]
	if cap(m.subs) <= 1<<12 && cap(m.shared) <= 1<<12 {
		matchPool.Put(m)
	}
	return r
}
