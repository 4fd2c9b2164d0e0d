package topics

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
)

// Subscription is one client's subscription to one topic filter, with the
// options it was granted.
type Subscription struct {
	ClientID          string
	Filter            string // the filter as subscribed, without the $share/{group}/ prefix
	Group             string // shared subscription group name, "" if not shared
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	Identifier        uint32 // subscription identifier, 0 if none

	// Target is the caller's own value for the subscriber (Tern's core
	// keeps its delivery target here, so that routing needs no lookup by
	// client ID). The index keeps it with the subscription and never looks
	// at it.
	Target any
}

// SharedGroup is one $share group on one filter: its members, among which
// the caller chooses one per message, round-robin with Next. SharedGroups
// are made by Index and handed out in a Result; the zero value is unusable.
type SharedGroup struct {
	Name    string
	Filter  string
	Members []*Subscription // never empty; must not be modified

	next *atomic.Uint32 // shared by every snapshot of this group
}

// Next atomically advances the group's round-robin counter and returns its
// previous value: 0, 1, 2, ... The caller picks Members[n%len(Members)]. The
// counter belongs to the group in the index, not to this snapshot, so it
// keeps advancing as members join and leave.
func (g *SharedGroup) Next() uint32 {
	return g.next.Add(1) - 1
}

// Result is an immutable snapshot of the subscriptions matching one topic
// name. It may be shared between callers and cached: callers must not modify
// it or anything it points to.
type Result struct {
	// Subscriptions holds the matching non-shared subscriptions, one per
	// (client, filter), sorted by client ID: a client with overlapping
	// filters appears once per filter, its entries side by side, and the
	// caller merges them.
	Subscriptions []*Subscription
	// Shared holds the shared groups whose filter matches.
	Shared []*SharedGroup
}

// emptyResult is returned for topics nobody is subscribed to.
var emptyResult = &Result{}

// Index is the subscription index: a trie of topic filters keyed by level,
// answering which subscriptions match a topic name. Results are cached per
// topic name. An Index is safe for concurrent use; create one with NewIndex.
type Index struct {
	mu      sync.RWMutex // guards root, clients and count; held while filling the cache
	root    node
	clients map[string]*client
	count   int
	shared  int // subscriptions with a group

	cache resultCache
}

// client holds the subscriptions of one client, for Get, ClientSubscriptions
// and UnsubscribeAll: plain ones by filter, shared ones (rarer) by group and
// filter.
type client struct {
	id     string        // interned: every Subscription of the client shares it
	one    *Subscription // the only non-shared subscription, while subs is nil: most clients have one, and a map of one costs 200 bytes
	subs   map[string]*Subscription
	shared map[subKey]*Subscription
}

type subKey struct{ group, filter string }

func (c *client) get(group, filter string) *Subscription {
	if group == "" {
		if c.one != nil && c.one.Filter == filter {
			return c.one
		}
		return c.subs[filter]
	}
	return c.shared[subKey{group, filter}]
}

func (c *client) put(s *Subscription) {
	if s.Group == "" {
		if c.subs == nil {
			if c.one == nil || c.one.Filter == s.Filter {
				c.one = s
				return
			}
			c.subs = map[string]*Subscription{c.one.Filter: c.one}
			c.one = nil
		}
		c.subs[s.Filter] = s
		return
	}
	if c.shared == nil {
		c.shared = make(map[subKey]*Subscription)
	}
	c.shared[subKey{s.Group, s.Filter}] = s
}

func (c *client) del(group, filter string) {
	if group == "" {
		if c.one != nil && c.one.Filter == filter {
			c.one = nil
		}
		delete(c.subs, filter)
	} else {
		delete(c.shared, subKey{group, filter})
	}
}

func (c *client) len() int {
	n := len(c.subs) + len(c.shared)
	if c.one != nil {
		n++
	}
	return n
}

// each calls fn with every subscription of the client.
func (c *client) each(fn func(*Subscription)) {
	if c.one != nil {
		fn(c.one)
	}
	for _, s := range c.subs {
		fn(s)
	}
	for _, s := range c.shared {
		fn(s)
	}
}

// NewIndex returns an empty Index.
func NewIndex() *Index {
	ix := &Index{clients: make(map[string]*client)}
	ix.cache.door.seed = maphash.MakeSeed()
	return ix
}

// Subscribe adds the subscription keyed by (sub.ClientID, sub.Group,
// sub.Filter), replacing any existing one with that key, and reports whether
// one existed. sub.Filter must be a valid filter without the $share prefix.
// The Index keeps its own copy of sub; Subscriptions handed out earlier keep
// their old values.
func (ix *Index) Subscribe(sub Subscription) (existed bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()

	c := ix.clients[sub.ClientID]
	if c == nil {
		id := strings.Clone(sub.ClientID)
		c = &client{id: id}
		ix.clients[id] = c
	}
	old := c.get(sub.Group, sub.Filter)
	s := new(Subscription)
	*s = sub
	s.ClientID = c.id
	if old != nil {
		s.Filter, s.Group = old.Filter, old.Group // reuse the index's copies
	} else {
		s.Filter, s.Group = strings.Clone(sub.Filter), strings.Clone(sub.Group)
		ix.count++
		if s.Group != "" {
			ix.shared++
		}
	}
	c.put(s)
	ix.root.insert(s)
	ix.cache.invalidate(s.Filter)
	return old != nil
}

// Unsubscribe removes the subscription keyed by (clientID, group, filter)
// and reports whether it existed.
func (ix *Index) Unsubscribe(clientID, group, filter string) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()

	c := ix.clients[clientID]
	if c == nil {
		return false
	}
	s := c.get(group, filter)
	if s == nil {
		return false
	}
	c.del(group, filter)
	if c.len() == 0 {
		delete(ix.clients, clientID)
	}
	ix.count--
	if s.Group != "" {
		ix.shared--
	}
	ix.root.remove(s)
	ix.cache.invalidate(s.Filter)
	return true
}

// UnsubscribeAll removes every subscription of clientID, as when its session
// ends, and returns how many there were. Its cost is proportional to the
// client's subscriptions, not to the size of the index.
func (ix *Index) UnsubscribeAll(clientID string) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()

	c := ix.clients[clientID]
	if c == nil {
		return 0
	}
	delete(ix.clients, clientID)
	filters := make([]string, 0, c.len())
	c.each(func(s *Subscription) {
		ix.root.remove(s)
		filters = append(filters, s.Filter)
		if s.Group != "" {
			ix.shared--
		}
	})
	ix.count -= c.len()
	ix.cache.invalidate(filters...)
	return c.len()
}

// Match returns the subscriptions matching the topic name, which must be
// valid. The result is shared and must not be modified. Results are cached
// per topic name from the second miss on: a cache hit takes no lock and
// does not allocate. Once Subscribe, Unsubscribe or UnsubscribeAll has
// returned, Match reflects the change.
func (ix *Index) Match(topic string) *Result {
	if r := ix.cache.get(topic); r != nil {
		return r
	}
	admit := ix.cache.door.admit(topic)
	ix.mu.RLock()
	r := ix.root.match(topic)
	full := false
	if admit {
		// Fill the cache under the read lock, so that no change can slip
		// in between computing r and publishing it: writers invalidate
		// the cache while holding the write lock.
		full = ix.cache.put(topic, r)
	}
	ix.mu.RUnlock()
	if full {
		ix.cache.trim()
	}
	return r
}

// Clients calls fn with the identifier of each client that has
// subscriptions, in no particular order, until fn returns false. fn runs
// without the index lock held.
func (ix *Index) Clients(fn func(clientID string) bool) {
	ix.mu.RLock()
	ids := make([]string, 0, len(ix.clients))
	for id := range ix.clients {
		ids = append(ids, id)
	}
	ix.mu.RUnlock()
	for _, id := range ids {
		if !fn(id) {
			return
		}
	}
}

// ClientSubscriptions calls fn for each subscription of clientID, in no
// particular order, until fn returns false. fn runs without the index lock
// held, so it may call back into the Index; it must not modify the
// Subscription.
func (ix *Index) ClientSubscriptions(clientID string, fn func(*Subscription) bool) {
	ix.mu.RLock()
	var subs []*Subscription
	if c := ix.clients[clientID]; c != nil {
		subs = make([]*Subscription, 0, c.len())
		c.each(func(s *Subscription) { subs = append(subs, s) })
	}
	ix.mu.RUnlock()
	for _, s := range subs {
		if !fn(s) {
			return
		}
	}
}

// Count returns the number of subscriptions in the index, shared group
// members included.
func (ix *Index) Count() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.count
}

// SharedCount returns the number of shared subscriptions ($share/...) in
// the index, one per member of each group.
func (ix *Index) SharedCount() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.shared
}

// Get returns a copy of the subscription keyed by (clientID, group, filter)
// and whether it exists.
func (ix *Index) Get(clientID, group, filter string) (Subscription, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if c := ix.clients[clientID]; c != nil {
		if s := c.get(group, filter); s != nil {
			return *s, true
		}
	}
	return Subscription{}, false
}
