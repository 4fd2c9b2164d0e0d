package cluster

import (
	"sync"
	"time"

	"github.com/ternmq/tern"
)

// Messages sent again. A node stores a QoS 2 message's packet id with its
// deliveries there, and acknowledges the publisher (PUBREC) once other
// nodes have the message too. If it dies in between, the publisher sends
// the message again after the node's restart, and the node routes it
// again to other nodes only, with its first creation time and
// tern.Delivery.Again set: they may have had it. A node knows it had such
// a message from what it took from the same publisher since: messages
// between two nodes come in order, and one a node did not take (its batch
// timed out) was parked for it. So for each publisher whose QoS 2
// messages came here through routes, the node remembers the latest
// creation time it took, and leaves a message sent again that is not
// newer. The latest is kept by node and publisher: a publisher's messages
// have the clock of the node it is connected to, and only that node
// sends them again.
//
// Messages for a shared group (the member chosen again may not be the
// one chosen first) or for a session by name are not checked: at worst
// delivered twice. So is a message sent again for a publisher forgotten
// here (this node restarted since, or the table turned over).

// againKeep bounds how many publishers a table generation holds; a
// generation is dropped once the next is full or againFor old.
const (
	againKeep = 16384
	againFor  = 10 * time.Minute
)

// latestTaken is, by node and publisher, the creation time of the latest
// QoS 2 message taken here through a route from that node (one clock).
// Safe for concurrent use.
type latestTaken struct {
	mu        sync.Mutex
	cur, prev map[againKey]int64
	since     time.Time // when cur was started
}

// againKey is a node and a publisher (its client identifier).
type againKey struct{ node, origin string }

// copyOf reports whether m, with its delivery d, from the node from (""
// when not known: nothing is checked), is a message sent again that this
// node took already, and otherwise remembers it as taken.
func (l *latestTaken) copyOf(from string, m *tern.Message, d tern.Delivery) bool {
	if from == "" || m.QoS != 2 || d.ClientID != "" || d.Group != "" {
		return false
	}
	at := m.Created.UnixNano()
	key := againKey{from, m.Origin}
	l.mu.Lock()
	defer l.mu.Unlock()
	last, ok := l.cur[key]
	if !ok {
		last, ok = l.prev[key]
	}
	if d.Again && ok && at <= last {
		return true
	}
	if ok && at <= last {
		return false // an older one (parked): the latest stays
	}
	now := time.Now()
	if l.cur == nil || len(l.cur) >= againKeep || now.Sub(l.since) > againFor {
		l.prev, l.cur, l.since = l.cur, make(map[againKey]int64), now
	}
	l.cur[key] = at
	return false
}
