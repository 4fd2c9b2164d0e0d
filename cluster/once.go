package cluster

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/ternmq/tern"
)

// onceSet remembers the QoS 2 messages this node took from other nodes
// (and from the park stream), by their identity and what they were for,
// so that a second copy is dropped: a message its publisher sent again
// after its node restarted (routed again to every other node, see
// tern.Delivery.Again), a parked copy of one taken directly. It holds two
// generations of at most max/2 entries each, a generation at most
// onceFor old: a copy that comes later, or after this node restarted
// (the set is in memory), is delivered twice, never dropped wrongly.
type onceSet struct {
	mu        sync.Mutex
	seed      maphash.Seed
	max       int // entries in both generations; 0: off
	cur, prev map[uint64]struct{}
	since     time.Time // when cur was started
	// full counts the generations started because cur was full rather
	// than old: messages remembered for less than onceFor.
	full uint64
}

// onceFor bounds how long a QoS 2 message is remembered: longer than a
// publisher's node takes to restart and its client to send the message
// again.
const onceFor = 5 * time.Minute

func newOnceSet(max int) *onceSet {
	return &onceSet{seed: maphash.MakeSeed(), max: max}
}

// key identifies the delivery d of m: the message as the duplicate
// windows of sessions know it (tern.Message.WriteIdentity), and the
// session, shared group and filter it was for.
func (o *onceSet) key(m *tern.Message, d tern.Delivery) uint64 {
	var h maphash.Hash
	h.SetSeed(o.seed)
	m.WriteIdentity(&h)
	for _, s := range [...]string{d.ClientID, d.Group, d.Filter} {
		h.WriteByte(0)
		h.WriteString(s)
	}
	return h.Sum64()
}

// has reports whether the delivery with key k was taken here.
func (o *onceSet) has(k uint64) bool {
	if o.max <= 0 {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_, a := o.cur[k]
	_, b := o.prev[k]
	return a || b
}

// add remembers the deliveries with keys ks, under one lock.
func (o *onceSet) add(ks ...uint64) {
	if o.max <= 0 || len(ks) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	for _, k := range ks {
		if o.cur == nil || len(o.cur) >= o.max/2 || now.Sub(o.since) > onceFor {
			if o.cur != nil && now.Sub(o.since) <= onceFor {
				o.full++
			}
			o.prev, o.cur, o.since = o.cur, make(map[uint64]struct{}), now
		}
		o.cur[k] = struct{}{}
	}
}

// stats returns the number of entries held and the generations started
// early (full).
func (o *onceSet) stats() (size int, full uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.cur) + len(o.prev), o.full
}

// onceKey returns the key of a QoS 2 delivery of m that o remembers, and
// false for any other (QoS 0 or 1, or a message without a creation time,
// whose identity is not unique).
func (o *onceSet) onceKey(m *tern.Message, d tern.Delivery) (uint64, bool) {
	if o.max <= 0 || min(m.QoS, d.QoS) < 2 || m.Created.UnixNano() <= 0 {
		return 0, false
	}
	return o.key(m, d), true
}
