package tern

import "sync"

// sessionTable maps client identifiers to sessions. Routing does not use
// it (a subscription carries its session), so a plain map under a
// read-write lock serves: it costs about a third of a sync.Map per
// session, which for a million idle clients is tens of megabytes.
//
// Lock order: the table's lock is taken before a session's lock, never
// while one is held.
type sessionTable struct {
	mu sync.RWMutex
	m  map[string]*session
}

// get returns the session of the client id, or nil.
func (t *sessionTable) get(id string) *session {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.m[id]
}

// put makes ss the session of its client id.
func (t *sessionTable) put(ss *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*session)
	}
	t.m[ss.id] = ss
}

// remove forgets ss, if it is still its client id's session.
func (t *sessionTable) remove(ss *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[ss.id] == ss {
		delete(t.m, ss.id)
	}
}

// each calls fn with every session, under the table's read lock: fn may
// lock the session, and must not add or remove sessions.
func (t *sessionTable) each(fn func(ss *session)) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, ss := range t.m {
		fn(ss)
	}
}
