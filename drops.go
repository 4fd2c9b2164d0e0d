package tern

import (
	"sync/atomic"
	"time"
)

// DropReasons lists every DropReason, in a fixed order.
var DropReasons = []DropReason{DropQueueFull, DropExpired, DropTooLarge, DropNotAuthorized,
	DropOfflineQoS0, DropSessionEnded, DropSlowConsumer, DropMemoryFull}

const numDropReasons = 8

// dropIndex returns the position of r in DropReasons.
func dropIndex(r DropReason) int {
	switch r {
	case DropQueueFull:
		return 0
	case DropExpired:
		return 1
	case DropTooLarge:
		return 2
	case DropNotAuthorized:
		return 3
	case DropOfflineQoS0:
		return 4
	case DropSessionEnded:
		return 5
	case DropSlowConsumer:
		return 6
	}
	return 7
}

// drops counts dropped messages by reason, in the order of DropReasons.
type drops [numDropReasons]atomic.Int64

// snapshot returns the non-zero counts by reason, or nil when there are
// none.
func (d *drops) snapshot() map[DropReason]int64 {
	var out map[DropReason]int64
	for i := range d {
		if n := d[i].Load(); n != 0 {
			if out == nil {
				out = make(map[DropReason]int64)
			}
			out[DropReasons[i]] = n
		}
	}
	return out
}

// sessionDrops counts a session's dropped messages.
type sessionDrops struct {
	counts drops
	logAt  atomic.Int64 // when they were last logged, unix nanoseconds
}

// dropCounts returns the session's non-zero drop counts by reason, or nil.
func (ss *session) dropCounts() map[DropReason]int64 {
	if d := ss.drops.Load(); d != nil {
		return d.counts.snapshot()
	}
	return nil
}

// dropLogInterval is the least time between two log lines about one
// session's dropped messages.
const dropLogInterval = 10 * time.Second

// overload reports whether a drop means a limit was hit: those are logged.
func (r DropReason) overload() bool {
	return r == DropQueueFull || r == DropSlowConsumer || r == DropMemoryFull
}

// dropped counts and reports a message that will not be delivered to the
// session ss (nil when the message goes to no session: a refused publish).
// Call it with no session lock held: it calls hooks.
func (s *Server) dropped(ss *session, m *Message, why DropReason) {
	s.stats.drops[dropIndex(why)].Add(1)
	s.sessionDropped(ss, m, why)
}

// sessionDropped counts a drop for the session (not for the server: the
// caller does), logs drops for limits at most once per dropLogInterval per
// session, and reports the drop to hooks.
func (s *Server) sessionDropped(ss *session, m *Message, why DropReason) {
	if ss != nil {
		ss.countDrop(dropIndex(why), why.overload())
	}
	if len(s.hooks.drops) == 0 {
		return
	}
	id := ""
	if ss != nil {
		id = ss.id
	}
	for _, h := range s.hooks.drops {
		h.OnMessageDropped(id, m, why)
	}
}

// countDrop counts a drop for the server and the session (nil: none); see
// sessionDropped.
func (s *Server) countDrop(ss *session, why DropReason) {
	i := dropIndex(why)
	s.stats.drops[i].Add(1)
	if ss != nil {
		ss.countDrop(i, why.overload())
	}
}

// countDrop counts a drop of reason index i for the session and, for a
// limit (log set), logs it at most once per dropLogInterval.
func (ss *session) countDrop(i int, log bool) {
	d := ss.drops.Load()
	if d == nil {
		ss.drops.CompareAndSwap(nil, new(sessionDrops))
		d = ss.drops.Load()
	}
	d.counts[i].Add(1)
	if !log {
		return
	}
	s := ss.srv
	now := s.clock.Load() // a clock read per drop would cost more than the drop
	last := d.logAt.Load()
	if now-last < int64(dropLogInterval) || !d.logAt.CompareAndSwap(last, now) {
		return
	}
	cfg := s.cfg
	maxMsgs, maxBytes := cfg.MaxQueuedMessages, cfg.MaxQueuedBytes
	if l := ss.limits.Load(); l != nil { // the session's own (SetSessionLimits)
		maxMsgs, maxBytes = l.maxMessages, l.maxBytes
	}
	s.log.Warn("dropping messages for a client", "client", ss.id, "reason", string(DropReasons[i]),
		"dropped", d.counts.snapshot(), "max_queued_messages", maxMsgs,
		"max_queued_bytes", maxBytes, "max_pending_bytes", cfg.MaxPendingBytes,
		"max_message_memory", cfg.MaxMessageMemory, "message_memory", s.mem.used.Load())
}
