package topics

import (
	"slices"
	"strings"
	"sync"
)

// Retained is the retained-message index: at most one value of type T per
// topic name. Retained is safe for concurrent use. The zero value is empty
// and ready to use.
//
// Topic names are kept in a trie keyed by level, so a filter finds its
// matches without scanning every topic. The values themselves live in two
// dense slices, one for topics starting with '$' and one for all others, so
// that the common "#" subscription copies one slice instead of walking a
// trie of a million nodes.
type Retained[T any] struct {
	mu    sync.RWMutex
	root  rnode
	vals  [2][]match[T] // [plain] and [dollar] topics
	nodes [2][]*rnode   // nodes[d][i] holds vals[d][i]
}

const (
	plain  = 0 // index of vals for topics not starting with '$'
	dollar = 1 // index of vals for topics starting with '$'
)

// rnode is one level of the retained trie.
type rnode struct {
	parent   *rnode
	level    string
	children map[string]*rnode
	pos      int // 1 + index in Retained.vals of this node's value; 0 if none
}

// match is one retained (topic, value) pair.
type match[T any] struct {
	topic string
	v     T
}

// NewRetained returns an empty retained-message index.
func NewRetained[T any]() *Retained[T] {
	return new(Retained[T])
}

func kind(topic string) int {
	if isDollar(topic) {
		return dollar
	}
	return plain
}

func isDollar(s string) bool { return s != "" && s[0] == '$' }

// Set stores v as the retained value of topic, replacing any previous one
// [MQTT-3.3.1-5]. topic must be a valid topic name.
func (r *Retained[T]) Set(topic string, v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := kind(topic)
	if n := r.root.find(topic); n != nil && n.pos != 0 {
		r.vals[d][n.pos-1].v = v
		return
	}
	topic = strings.Clone(topic) // the levels of new nodes share this copy
	n := &r.root
	for i := 0; i <= len(topic); {
		var level string
		level, i = nextLevel(topic, i)
		c := n.children[level]
		if c == nil {
			c = &rnode{parent: n, level: level}
			if n.children == nil {
				n.children = make(map[string]*rnode)
			}
			n.children[level] = c
		}
		n = c
	}
	r.vals[d] = append(r.vals[d], match[T]{topic, v})
	r.nodes[d] = append(r.nodes[d], n)
	n.pos = len(r.vals[d])
}

// Delete removes the retained value of topic and reports whether there was
// one.
func (r *Retained[T]) Delete(topic string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.root.find(topic)
	if n == nil || n.pos == 0 {
		return false
	}
	d := kind(topic)
	vals, nodes := r.vals[d], r.nodes[d]
	i, last := n.pos-1, len(vals)-1
	if i != last {
		vals[i], nodes[i] = vals[last], nodes[last]
		nodes[i].pos = i + 1
	}
	vals[last], nodes[last] = match[T]{}, nil
	vals, nodes = vals[:last], nodes[:last]
	if cap(vals) > 1024 && len(vals) < cap(vals)/4 {
		vals, nodes = slices.Clip(slices.Clone(vals)), slices.Clip(slices.Clone(nodes))
	}
	r.vals[d], r.nodes[d] = vals, nodes
	n.pos = 0
	for n.parent != nil && n.pos == 0 && len(n.children) == 0 {
		p := n.parent
		delete(p.children, n.level)
		n.parent = nil
		n = p
	}
	if len(r.root.children) == 0 {
		r.root.children = nil
	}
	return true
}

// Get returns the retained value of topic and whether there is one.
func (r *Retained[T]) Get(topic string) (T, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if n := r.root.find(topic); n != nil && n.pos != 0 {
		return r.vals[kind(topic)][n.pos-1].v, true
	}
	var zero T
	return zero, false
}

// Len returns the number of retained values.
func (r *Retained[T]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.vals[plain]) + len(r.vals[dollar])
}

// Match calls fn with every retained topic the filter matches, and its
// value, until fn returns false. filter must be a valid plain filter (not
// "$share/..."); a filter starting with a wildcard does not match topics
// starting with '$' [MQTT-4.7.2-1]. The matches are copied under the read
// lock and fn runs without it, so fn may call back into r; fn sees the
// index as it was when Match began.
func (r *Retained[T]) Match(filter string, fn func(topic string, v T) bool) {
	var ms []match[T]
	r.mu.RLock()
	if isLiteral(filter) {
		if n := r.root.find(filter); n != nil && n.pos != 0 {
			ms = append(ms, r.vals[kind(filter)][n.pos-1])
		}
	} else {
		ms = r.collect(&r.root, filter, 0, plain, ms)
	}
	r.mu.RUnlock()
	for _, m := range ms {
		if !fn(m.topic, m.v) {
			return
		}
	}
}

// Range calls fn with every retained topic and value, in no particular
// order, until fn returns false. Like Match, fn runs without the lock held.
func (r *Retained[T]) Range(fn func(topic string, v T) bool) {
	r.mu.RLock()
	ms := slices.Concat(r.vals[plain], r.vals[dollar])
	r.mu.RUnlock()
	for _, m := range ms {
		if !fn(m.topic, m.v) {
			return
		}
	}
}

// find returns the node for topic, or nil.
func (n *rnode) find(topic string) *rnode {
	for i := 0; i <= len(topic) && n != nil; {
		var level string
		level, i = nextLevel(topic, i)
		n = n.children[level]
	}
	return n
}

// collect appends the values at or below n that match the levels of filter
// from byte offset i on (none left when i > len(filter)). n is the root
// exactly when i == 0; below it, d is the kind of every topic. Wildcards at
// the root skip '$' topics [MQTT-4.7.2-1].
func (r *Retained[T]) collect(n *rnode, filter string, i, d int, ms []match[T]) []match[T] {
	for {
		if i > len(filter) {
			if n.pos != 0 {
				ms = append(ms, r.vals[d][n.pos-1])
			}
			return ms
		}
		level, next := nextLevel(filter, i)
		switch level {
		case "#":
			if i == 0 {
				return append(ms, r.vals[plain]...) // [MQTT-4.7.2-1]
			}
			return r.all(n, d, ms) // "a/#" matches "a" too [MQTT-4.7.1-2]
		case "+":
			for l, c := range n.children {
				if i == 0 && isDollar(l) {
					continue
				}
				ms = r.collect(c, filter, next, d, ms)
			}
			return ms
		}
		c := n.children[level]
		if c == nil {
			return ms
		}
		if i == 0 {
			d = kind(level)
		}
		n, i = c, next
	}
}

// all appends every value at or below n, a node of kind d below the root.
func (r *Retained[T]) all(n *rnode, d int, ms []match[T]) []match[T] {
	if n.pos != 0 {
		ms = append(ms, r.vals[d][n.pos-1])
	}
	for _, c := range n.children {
		ms = r.all(c, d, ms)
	}
	return ms
}
