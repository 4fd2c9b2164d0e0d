package tern

import (
	"sync"

	"github.com/google/btree"
)

// sessionTable maps client identifiers to sessions and keeps them in
// identifier order, so that listing a page of sessions (the admin API, a
// dashboard at 100,000 sessions) costs the page, not the whole table.
// Routing does not use it: a subscription carries its session. The tree
// alone serves lookups too (O(log n), at connects and for the admin API):
// a map beside it cost about 40 bytes per session, which an idle
// connection pays (TestStructSizes).
//
// Lock order: the table's lock is taken before a session's lock, never
// while one is held.
type sessionTable struct {
	mu    sync.RWMutex
	order *btree.BTreeG[*session] // by client id
}

func lessSession(a, b *session) bool { return a.id < b.id }

// get returns the session of the client id, or nil.
func (t *sessionTable) get(id string) *session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.order == nil {
		return nil
	}
	ss, _ := t.order.Get(&session{id: id})
	return ss
}

// put makes ss the session of its client id.
func (t *sessionTable) put(ss *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.order == nil {
		t.order = btree.NewG(32, lessSession)
	}
	t.order.ReplaceOrInsert(ss)
}

// remove forgets ss, if it is still its client id's session.
func (t *sessionTable) remove(ss *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.order == nil {
		return
	}
	if cur, ok := t.order.Get(ss); ok && cur == ss {
		t.order.Delete(ss)
	}
}

// each calls fn with every session, under the table's read lock: fn may
// lock the session, and must not add or remove sessions.
func (t *sessionTable) each(fn func(ss *session)) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.order == nil {
		return
	}
	t.order.Ascend(func(ss *session) bool {
		fn(ss)
		return true
	})
}

// ascend calls fn with the sessions whose client id is from (or after
// from, with exclusive set), in client id order, until fn returns false.
// It holds the table's read lock meanwhile, like each.
func (t *sessionTable) ascend(from string, exclusive bool, fn func(ss *session) bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.order == nil {
		return
	}
	t.order.AscendGreaterOrEqual(&session{id: from}, func(ss *session) bool {
		if exclusive && ss.id == from {
			return true
		}
		return fn(ss)
	})
}
