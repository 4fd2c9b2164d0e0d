package tern

import (
	"sync"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// FilterObserver is told when this server's own subscriptions to a topic
// filter begin and end: the first subscription to (group, filter) of any
// session or in-process handler here, and the last one going. Remote routes
// do not count. A cluster turns these into its route table, so that the
// other nodes forward what matches.
//
// Counting starts at Serve, from the subscriptions restored from the store
// and made before it; LocalFilters lists them then.
type FilterObserver interface {
	Hook
	// FilterAdded is called with the first subscription to filter in
	// group ("" for none), on the subscriber's goroutine, and must return
	// at once; the SUBACK (or the in-process Subscribe) waits until done
	// is called, so a cluster can wait for the route to be known on every
	// node. done with an error refuses the subscription (SUBACK 0x80
	// Unspecified error). Subscriptions of the same filter made meanwhile
	// wait for the same done.
	FilterAdded(group, filter string, done func(error))
	// FilterRemoved is called when the last subscription to filter in
	// group goes. It must not block.
	FilterRemoved(group, filter string)
}

type filterKey struct{ group, filter string }

// filterRef counts this server's subscriptions to one (group, filter).
type filterRef struct {
	n     int
	ready chan struct{} // closed once the observers accepted the filter
	err   error         // why they did not; set before ready closes
}

// filterRefs counts this server's own subscriptions by filter, for the
// FilterObservers. It exists only when there are some.
type filterRefs struct {
	mu sync.Mutex
	m  map[filterKey]*filterRef
}

// startFilters counts the subscriptions that exist when Serve runs; from
// then on subscribe and unsubscribe keep the counts.
func (s *Server) startFilters() {
	if len(s.hooks.filters) == 0 {
		return
	}
	f := &filterRefs{m: make(map[filterKey]*filterRef)}
	done := make(chan struct{})
	close(done)
	s.index.Clients(func(id string) bool {
		s.index.ClientSubscriptions(id, func(sub *topics.Subscription) bool {
			if targetKind(sub.Target) != KindRemote {
				k := filterKey{sub.Group, sub.Filter}
				if r := f.m[k]; r != nil {
					r.n++
				} else {
					f.m[k] = &filterRef{n: 1, ready: done}
				}
			}
			return true
		})
		return true
	})
	s.filters.Store(f)
}

// LocalFilters calls fn with each (group, filter) this server's own
// subscriptions hold, as counted for the FilterObservers (nothing before
// Serve, or without a FilterObserver).
func (s *Server) LocalFilters(fn func(group, filter string)) {
	f := s.filters.Load()
	if f == nil {
		return
	}
	f.mu.Lock()
	keys := make([]filterKey, 0, len(f.m))
	for k := range f.m {
		keys = append(keys, k)
	}
	f.mu.Unlock()
	for _, k := range keys {
		fn(k.group, k.filter)
	}
}

// filterAdd counts a new subscription to (group, filter) and returns what
// to wait for before acknowledging it (nil: nothing), see waitFilter.
func (s *Server) filterAdd(group, filter string) *filterRef {
	f := s.filters.Load()
	if f == nil {
		return nil
	}
	k := filterKey{group, filter}
	f.mu.Lock()
	r := f.m[k]
	if r != nil {
		r.n++
		f.mu.Unlock()
		return r
	}
	r = &filterRef{n: 1, ready: make(chan struct{})}
	f.m[k] = r
	f.mu.Unlock()
	hooks := s.hooks.filters
	var mu sync.Mutex
	left := len(hooks)
	for _, h := range hooks {
		h.FilterAdded(group, filter, func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil && r.err == nil {
				r.err = err
			}
			if left--; left == 0 {
				close(r.ready)
			}
		})
	}
	return r
}

// waitFilter waits until the observers accepted the filter of r (from
// filterAdd) and returns their error, undoing the count when there is one.
func (s *Server) waitFilter(r *filterRef, group, filter string) error {
	if r == nil {
		return nil
	}
	<-r.ready
	if r.err != nil {
		f := s.filters.Load()
		f.mu.Lock()
		if r.n--; r.n == 0 && f.m[filterKey{group, filter}] == r {
			delete(f.m, filterKey{group, filter})
		}
		f.mu.Unlock()
	}
	return r.err
}

// filterRemove counts a subscription to (group, filter) gone, telling the
// observers when it was the last. Never call it with a lock held.
func (s *Server) filterRemove(group, filter string) {
	f := s.filters.Load()
	if f == nil {
		return
	}
	k := filterKey{group, filter}
	f.mu.Lock()
	r := f.m[k]
	if r == nil {
		f.mu.Unlock()
		return
	}
	r.n--
	last := r.n == 0
	if last {
		delete(f.m, k)
	}
	f.mu.Unlock()
	if last {
		for _, h := range s.hooks.filters {
			h.FilterRemoved(group, filter)
		}
	}
}

// subscriptionsOf returns the (group, filter) of each subscription of a
// client identifier, when FilterObservers need them (nil otherwise): taken
// before they are all removed, for filterRemove once no lock is held.
func (s *Server) subscriptionsOf(id string) []filterKey {
	if s.filters.Load() == nil {
		return nil
	}
	var out []filterKey
	s.index.ClientSubscriptions(id, func(sub *topics.Subscription) bool {
		out = append(out, filterKey{sub.Group, sub.Filter})
		return true
	})
	return out
}

// filtersRemoved calls filterRemove for each key.
func (s *Server) filtersRemoved(keys []filterKey) {
	for _, k := range keys {
		s.filterRemove(k.group, k.filter)
	}
}

// errFilterRefused is the SUBACK code of a subscription a FilterObserver
// refused.
const errFilterRefused = packets.UnspecifiedError
