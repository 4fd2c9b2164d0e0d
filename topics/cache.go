package topics

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
)

const (
	// cacheMax bounds the number of topic names whose Result is cached.
	cacheMax = 4096
	// doorBits is the size of the admission filter; it forgets every
	// doorReset new topics, which keeps false positives near 5%.
	doorBits  = 8 * cacheMax
	doorReset = cacheMax
)

// resultCache maps topic names to their Result.
//
// Lookups are lock-free (sync.Map), so Match scales with cores on hot
// topics. Changes are serialized by mu, which also guards keys: the cached
// topic names in a trie, so that a changed filter finds the cached topics it
// matches by walking the trie, at a cost that grows with those topics rather
// than with the whole cache.
//
// A topic is admitted on its second miss within a short window (see
// doorkeeper): a stream of topics that each appear once, common when every
// device publishes on its own topic, costs the trie walk only, instead of
// also churning the cache.
//
// Consistency with the subscription trie rests on the Index lock: put is
// only called with the read lock held and invalidate with the write lock
// held, so a Result computed before a change can never be stored after that
// change has invalidated the cache. Evicting entries (trim) is always safe.
//
// Lock order: Index.mu, then resultCache.mu, then the lock inside keys.
type resultCache struct {
	m    sync.Map // string -> *cacheEntry
	n    atomic.Int64
	mu   sync.Mutex
	keys Retained[struct{}]

	door doorkeeper
}

// doorkeeper is the admission filter of the cache, as in TinyLFU: a Bloom
// filter of the topics missed recently, cleared every doorReset insertions.
// A false positive only caches a topic early; as a Bloom filter has no
// false negatives, every topic missed twice within a window is admitted.
// It is safe for concurrent use; races only lose bits, delaying admission.
type doorkeeper struct {
	seed maphash.Seed
	bits [doorBits / 64]atomic.Uint64
	adds atomic.Uint32
}

// admit reports whether topic was seen recently, and records it.
func (d *doorkeeper) admit(topic string) bool {
	h := maphash.String(d.seed, topic)
	i, j := h%doorBits, (h>>32)%doorBits
	wi, bi := &d.bits[i/64], uint64(1)<<(i%64)
	wj, bj := &d.bits[j/64], uint64(1)<<(j%64)
	if wi.Load()&bi != 0 && wj.Load()&bj != 0 {
		return true
	}
	wi.Or(bi)
	wj.Or(bj)
	if d.adds.Add(1) >= doorReset {
		d.adds.Store(0)
		for k := range d.bits {
			d.bits[k].Store(0)
		}
	}
	return false
}

// cacheEntry is a cached Result with a "used since the last trim" bit, so
// that eviction spares hot topics (the CLOCK, or second chance, policy).
type cacheEntry struct {
	r    *Result
	used atomic.Bool
}

func (c *resultCache) get(topic string) *Result {
	v, ok := c.m.Load(topic)
	if !ok {
		return nil
	}
	e := v.(*cacheEntry)
	if !e.used.Load() { // read first: keep the cache line shared when hot
		e.used.Store(true)
	}
	return e.r
}

// put caches r for topic and reports whether the cache needs a trim. The
// caller holds the Index read lock.
func (c *resultCache) put(topic string, r *Result) (full bool) {
	topic = strings.Clone(topic) // it may be a slice of a large packet buffer
	c.mu.Lock()
	if _, loaded := c.m.Swap(topic, &cacheEntry{r: r}); !loaded {
		c.keys.Set(topic, struct{}{})
		c.n.Add(1)
	}
	c.mu.Unlock()
	return c.n.Load() > cacheMax
}

// delLocked removes topic from the cache; the caller holds c.mu.
func (c *resultCache) delLocked(topic string) {
	if _, ok := c.m.LoadAndDelete(topic); ok {
		c.keys.Delete(topic)
		c.n.Add(-1)
	}
}

// invalidate drops the cached Results of every topic name one of filters
// matches. The caller holds the Index write lock.
func (c *resultCache) invalidate(filters ...string) {
	if c.n.Load() == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range filters {
		c.keys.Match(f, func(topic string, _ struct{}) bool {
			c.delLocked(topic)
			return true
		})
	}
}

// trim shrinks the cache to three quarters of cacheMax once it has grown
// past cacheMax, evicting first the entries not used since the last trim.
func (c *resultCache) trim() {
	c.mu.Lock()
	defer c.mu.Unlock()
	const target = cacheMax * 3 / 4
	if c.n.Load() <= cacheMax {
		return // another goroutine trimmed first
	}
	c.m.Range(func(k, v any) bool {
		if !v.(*cacheEntry).used.Swap(false) {
			c.delLocked(k.(string))
		}
		return c.n.Load() > target
	})
	c.m.Range(func(k, _ any) bool {
		c.delLocked(k.(string))
		return c.n.Load() > target
	})
}

// len returns the number of cached topic names.
func (c *resultCache) len() int { return int(c.n.Load()) }
