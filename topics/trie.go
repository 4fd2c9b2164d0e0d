package topics

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// node is one step of the subscription trie. The path from the root spells
// a topic filter, so every subscription stored at a node has the same
// filter. A step is one level, or a chain of literal levels that nothing
// branches from (its label holds them joined by '/'), so a filter of
// thousands of levels costs one node, not one per level. Empty nodes are
// pruned, so the trie's size follows the live subscriptions.
type node struct {
	parent   *node
	label    string           // the levels from the parent: one level ("+", "#" or a literal), or several literal ones
	children map[string]*node // literal steps, keyed by the first level of their label (which may be "")
	subs     []*Subscription  // non-shared subscriptions, in no particular order
	x        *nodeExtra       // what few nodes need
}

// nodeExtra holds the parts of a node that most nodes do not need: most
// nodes are leaves of literal filters.
type nodeExtra struct {
	plus   *node          // the '+' level
	hash   *node          // the '#' level
	subPos map[string]int // client ID -> index in subs, once subs is long
	groups []*group       // shared subscription groups, usually few
}

// extra returns the node's extra part, making it if need be.
func (n *node) extra() *nodeExtra {
	if n.x == nil {
		n.x = &nodeExtra{}
	}
	return n.x
}

// wild returns the node's '+' and '#' children (nil when none).
func (n *node) wild() (plus, hash *node) {
	if n.x == nil {
		return nil, nil
	}
	return n.x.plus, n.x.hash
}

// subPosMin is the number of subscriptions at a node from which they are
// indexed by client ID; below it a scan is cheaper than a map.
const subPosMin = 16

// group is a shared subscription group at one node. Its snapshot is rebuilt
// on every membership change, so a Result can hold it without copying.
type group struct {
	snap   *SharedGroup
	memPos map[string]int // client ID -> index in snap.Members
}

// groups returns the node's shared groups.
func (n *node) groups() []*group {
	if n.x == nil {
		return nil
	}
	return n.x.groups
}

// group returns the index of the group named name in n.groups(), or -1.
func (n *node) group(name string) int {
	for i, g := range n.groups() {
		if g.snap.Name == name {
			return i
		}
	}
	return -1
}

func (n *node) empty() bool {
	return len(n.children) == 0 && len(n.subs) == 0 &&
		(n.x == nil || n.x.plus == nil && n.x.hash == nil && len(n.x.groups) == 0)
}

// tidy drops the node's extra part when it holds nothing.
func (n *node) tidy() {
	if x := n.x; x != nil && x.plus == nil && x.hash == nil && x.subPos == nil && len(x.groups) == 0 {
		n.x = nil
	}
}

// firstLevel returns the first level of a label.
func firstLevel(label string) string {
	l, _ := nextLevel(label, 0)
	return l
}

// literalEnd returns the end of the run of literal levels of filter that
// starts at offset i: the offset of the '/' after the last of them, or
// len(filter).
func literalEnd(filter string, i int) int {
	end := i
	for i <= len(filter) {
		level, next := nextLevel(filter, i)
		if level == "+" || level == "#" {
			break
		}
		end = next - 1
		i = next
	}
	return end
}

// matchLabel compares label with filter from offset i, level by level, and
// returns the offset in label just past the last level they share (at a
// '/' of label, or len(label)).
func matchLabel(label, filter string, i int) int {
	matched, p := 0, 0
	for p <= len(label) && i <= len(filter) {
		ll, lnext := nextLevel(label, p)
		fl, fnext := nextLevel(filter, i)
		if ll != fl {
			break
		}
		matched = lnext - 1
		p, i = lnext, fnext
	}
	return matched
}

// path returns the node spelling filter, or nil when there is none; with
// create set it makes the missing steps, splitting a chain where the
// filter leaves it.
func (n *node) path(filter string, create bool) *node {
	for i := 0; i <= len(filter); {
		level, next := nextLevel(filter, i)
		switch level {
		case "+", "#":
			plus, hash := n.wild()
			c := plus
			if level == "#" {
				c = hash
			}
			if c == nil {
				if !create {
					return nil
				}
				c = &node{parent: n, label: level}
				if level == "+" {
					n.extra().plus = c
				} else {
					n.extra().hash = c
				}
			}
			n, i = c, next
			continue
		}
		c := n.children[level]
		if c == nil {
			if !create {
				return nil
			}
			end := literalEnd(filter, i)
			c = &node{parent: n, label: filter[i:end]}
			if n.children == nil {
				n.children = make(map[string]*node)
			}
			n.children[level] = c
			n, i = c, end+1
			continue
		}
		m := matchLabel(c.label, filter, i)
		if m == len(c.label) {
			n, i = c, i+m+1
			continue
		}
		if !create {
			return nil
		}
		// The filter leaves the chain (or ends) inside it: split the chain.
		mid := &node{parent: n, label: c.label[:m]}
		n.children[level] = mid
		c.label = c.label[m+1:]
		c.parent = mid
		mid.children = map[string]*node{firstLevel(c.label): c}
		n, i = mid, i+m+1
	}
	return n
}

// insert stores s at the node for s.Filter, replacing the subscription of
// the same client (and group) there.
func (n *node) insert(s *Subscription) {
	n = n.path(s.Filter, true)
	if s.Group == "" {
		if i := n.subIndex(s.ClientID); i >= 0 {
			n.subs[i] = s
			return
		}
		n.subs = append(n.subs, s)
		if n.x != nil && n.x.subPos != nil {
			n.x.subPos[s.ClientID] = len(n.subs) - 1
		} else if len(n.subs) >= subPosMin {
			n.extra().subPos = make(map[string]int, len(n.subs))
			for i, x := range n.subs {
				n.x.subPos[x.ClientID] = i
			}
		}
		return
	}
	var g *group
	if i := n.group(s.Group); i >= 0 {
		g = n.x.groups[i]
	} else {
		g = &group{
			snap:   &SharedGroup{Name: s.Group, Filter: s.Filter, next: new(atomic.Uint32)},
			memPos: make(map[string]int),
		}
		x := n.extra()
		x.groups = append(x.groups, g)
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

// subIndex returns the index in n.subs of the client's subscription, or -1.
func (n *node) subIndex(clientID string) int {
	if n.x != nil && n.x.subPos != nil {
		if i, ok := n.x.subPos[clientID]; ok {
			return i
		}
		return -1
	}
	for i, x := range n.subs {
		if x.ClientID == clientID {
			return i
		}
	}
	return -1
}

// remove deletes s from the node for s.Filter and prunes emptied nodes.
func (n *node) remove(s *Subscription) {
	n = n.path(s.Filter, false)
	if n == nil {
		return
	}
	if s.Group == "" {
		i := n.subIndex(s.ClientID)
		if i < 0 {
			return
		}
		last := len(n.subs) - 1
		if i != last {
			n.subs[i] = n.subs[last]
			if n.x != nil && n.x.subPos != nil {
				n.x.subPos[n.subs[i].ClientID] = i
			}
		}
		n.subs[last] = nil
		n.subs = n.subs[:last]
		if n.x != nil && n.x.subPos != nil {
			delete(n.x.subPos, s.ClientID)
			if len(n.subs) < subPosMin/2 {
				n.x.subPos = nil // back to scanning; the map's memory goes
			}
		}
		if len(n.subs) == 0 {
			n.subs = nil
		} else if cap(n.subs) > 64 && len(n.subs) < cap(n.subs)/4 {
			n.subs = slices.Clip(slices.Clone(n.subs))
		}
	} else {
		gi := n.group(s.Group)
		if gi < 0 {
			return
		}
		g := n.x.groups[gi]
		i, ok := g.memPos[s.ClientID]
		if !ok {
			return
		}
		delete(g.memPos, s.ClientID)
		old := g.snap
		if len(old.Members) == 1 {
			n.x.groups = slices.Delete(n.x.groups, gi, gi+1)
			if len(n.x.groups) == 0 {
				n.x.groups = nil
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
	n.tidy()
	n.prune()
}

// prune detaches n and its ancestors from the trie while they are empty.
// (A chain split by a filter that has since gone stays split: that costs
// a node, not correctness.)
func (n *node) prune() {
	for n.parent != nil && n.empty() {
		p := n.parent
		switch plus, hash := p.wild(); {
		case plus == n:
			p.x.plus = nil
			p.tidy()
		case hash == n:
			p.x.hash = nil
			p.tidy()
		default:
			delete(p.children, firstLevel(n.label))
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
		plus, hash := n.wild()
		if i > len(topic) {
			m.add(n)
			if hash != nil {
				m.add(hash) // "a/#" matches "a" [MQTT-4.7.1-2]
			}
			return
		}
		wild := i > 0 || !dollar
		if wild && hash != nil {
			m.add(hash)
		}
		level, next := nextLevel(topic, i)
		if wild && plus != nil {
			plus.collect(topic, next, dollar, m)
		}
		c := n.children[level]
		if c == nil {
			return
		}
		if len(c.label) != len(level) {
			// A chain of levels: the topic must go on with all of them.
			end := i + len(c.label)
			if end > len(topic) || topic[i:end] != c.label || end < len(topic) && topic[end] != '/' {
				return
			}
			next = end + 1
		}
		n, i = c, next
	}
}

func (m *matchScratch) add(n *node) {
	m.subs = append(m.subs, n.subs...)
	for _, g := range n.groups() {
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
		if len(r.Subscriptions) > 1 {
			// A client's overlapping subscriptions side by side, so that a
			// caller merges them without a map.
			slices.SortFunc(r.Subscriptions, func(a, b *Subscription) int { return strings.Compare(a.ClientID, b.ClientID) })
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
