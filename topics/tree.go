package topics

import (
	"slices"
	"strings"
)

// This file walks the two indexes as trees of levels, for tools that show
// what is subscribed and retained (an admin API, a dashboard): every filter
// with subscriptions, and the levels below a given one. Paths are given as
// a list of levels, so that an empty level ("/a" starts with one) is not
// confused with the root: nil (or empty) is the root, []string{""} the
// empty first level.

// Level is one level of a topic tree below a parent level.
type Level struct {
	Name string
	// Here counts what ends at this level: the subscriptions to the filter
	// that ends here (Index), or 1 when a retained message's topic ends
	// here (Retained).
	Here int
	// Below reports whether longer filters or topics go on through this
	// level.
	Below bool
}

// EachFilter calls fn with every topic filter that has subscriptions at or
// below the path under (nil: every filter), with the filter's non-shared
// subscriptions and its shared groups, in no particular order, until fn
// returns false. It holds the index's read lock meanwhile: fn must not call
// the Index, nor keep or modify subs (the groups are immutable snapshots
// and may be kept).
func (ix *Index) EachFilter(under []string, fn func(filter string, subs []*Subscription, groups []*SharedGroup) bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n, path, ok := ix.root.locate(under)
	if !ok {
		return
	}
	n.walk(path, n == &ix.root, fn)
}

// locate returns the node whose subtree holds every filter that starts
// with the levels of under, and that node's path; ok is false when no
// filter does.
func (root *node) locate(under []string) (n *node, path string, ok bool) {
	n = root
	if len(under) == 0 {
		return n, "", true
	}
	prefix := strings.Join(under, "/")
	for i := 0; i <= len(prefix); {
		level, _ := nextLevel(prefix, i)
		var c *node
		switch plus, hash := n.wild(); level {
		case "+":
			c = plus
		case "#":
			c = hash
		default:
			c = n.children[level]
		}
		if c == nil {
			return nil, "", false
		}
		m := matchLabel(c.label, prefix, i)
		path = joinPath(path, c.label, n == root)
		n = c
		switch {
		case m == len(c.label): // the whole step matched: go on below it
			i += m + 1
		case i+m >= len(prefix): // the prefix ends inside the step: all below it starts with the prefix
			return n, path, true
		default:
			return nil, "", false
		}
	}
	return n, path, true
}

// walk calls fn with the filters at and below n, whose path is path.
func (n *node) walk(path string, root bool, fn func(string, []*Subscription, []*SharedGroup) bool) bool {
	if !root && (len(n.subs) > 0 || len(n.groups()) > 0) {
		var groups []*SharedGroup
		for _, g := range n.groups() {
			groups = append(groups, g.snap)
		}
		if !fn(path, n.subs, groups) {
			return false
		}
	}
	for _, c := range n.children {
		if !c.walk(joinPath(path, c.label, root), false, fn) {
			return false
		}
	}
	plus, hash := n.wild()
	for _, c := range []*node{plus, hash} {
		if c != nil && !c.walk(joinPath(path, c.label, root), false, fn) {
			return false
		}
	}
	return true
}

// joinPath appends a step's label to its parent's path.
func joinPath(path, label string, parentIsRoot bool) string {
	if parentIsRoot {
		return label
	}
	return path + "/" + label
}

// Levels returns the levels right below the path parent (nil: the first
// levels) through which subscription filters go, sorted by name, with the
// number of subscriptions (shared group members included) to the filter
// that ends at each: those count accepts, or all when count is nil (count
// runs under the index's read lock). Its cost is that of the filters below
// parent.
func (ix *Index) Levels(parent []string, count func(*Subscription) bool) []Level {
	byName := make(map[string]*Level)
	prefix := strings.Join(parent, "/")
	ix.EachFilter(parent, func(filter string, subs []*Subscription, groups []*SharedGroup) bool {
		rest := filter
		if len(parent) > 0 {
			var ok bool
			if rest, ok = strings.CutPrefix(filter, prefix+"/"); !ok {
				return true // the parent itself, or a sibling that shares its text ("ab" for "a")
			}
		}
		name, more := rest, false
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			name, more = rest[:j], true
		}
		l := byName[name]
		if l == nil {
			l = &Level{Name: name}
			byName[name] = l
		}
		if more {
			l.Below = true
		} else {
			for _, sub := range subs {
				if count == nil || count(sub) {
					l.Here++
				}
			}
			for _, g := range groups {
				for _, m := range g.Members {
					if count == nil || count(m) {
						l.Here++
					}
				}
			}
		}
		return true
	})
	return sortedLevels(byName)
}

func sortedLevels(byName map[string]*Level) []Level {
	out := make([]Level, 0, len(byName))
	for _, l := range byName {
		out = append(out, *l)
	}
	slices.SortFunc(out, func(a, b Level) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Levels returns the levels right below the path parent (nil: the first
// levels) through which retained topics go, sorted by name. Its cost is the
// number of levels right below parent.
func (r *Retained[T]) Levels(parent []string) []Level {
	r.mu.RLock()
	n := &r.root
	for _, level := range parent {
		if n = n.children[level]; n == nil {
			r.mu.RUnlock()
			return []Level{}
		}
	}
	out := make([]Level, 0, len(n.children))
	for name, c := range n.children {
		l := Level{Name: name, Below: len(c.children) > 0}
		if c.pos != 0 {
			l.Here = 1
		}
		out = append(out, l)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b Level) int { return strings.Compare(a.Name, b.Name) })
	return out
}
