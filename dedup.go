package tern

import (
	"encoding/binary"
	"hash/maphash"
	"time"
)

// maxRecent bounds the messages one session's duplicate window
// remembers, and maxRecentAll those of all the windows of a server
// (about 20 bytes each at most): past either, a window checks what it
// has and records no more. 262,144 messages are 26 s of a session taking
// 10,000 messages a second.
const (
	maxRecent    = 1 << 18
	maxRecentAll = 1 << 22
)

// recentSet is a session's duplicate window (ExpectDuplicates): the QoS
// 1/2 messages it took, by origin, creation time and topic, until a
// deadline. Guarded by the session's mu.
type recentSet struct {
	until int64 // unix nanoseconds
	seed  maphash.Seed
	keys  map[uint64]struct{}
	full  bool // a limit was reached (logged once): nothing more is recorded
}

// key identifies m across nodes (Message.WriteIdentity).
func (rs *recentSet) key(m *Message) uint64 {
	var h maphash.Hash
	h.SetSeed(rs.seed)
	m.WriteIdentity(&h)
	return h.Sum64()
}

// WriteIdentity writes to h what identifies m across nodes and copies:
// the client that published it, when its first node received it
// (nanoseconds, carried with every copy and kept when the client sends it
// again: no two messages of one connection share one), its topic, and
// its payload's length and ends.
func (m *Message) WriteIdentity(h *maphash.Hash) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], uint64(m.Created.UnixNano()))
	binary.LittleEndian.PutUint64(b[8:], uint64(len(m.Payload)))
	h.Write(b[:])
	h.WriteString(m.Origin)
	h.WriteByte(0)
	h.WriteString(m.Topic)
	h.WriteByte(0)
	p := m.Payload
	if len(p) > 64 {
		h.Write(p[:32])
		p = p[len(p)-32:]
	}
	h.Write(p)
}

// dupKeyLocked returns the key of d in the session's duplicate window,
// and false when there is no window or d is not checked: QoS 0, or a
// shared subscription's (a session may have it both shared and not, and
// take it for each). Retained messages sent for a SUBSCRIBE (sent again
// at each one) never pass the queue, so they are not checked either; a
// live message with RETAIN set (Retain As Published) is. It ends a
// window whose deadline passed. The caller holds ss.mu.
func (ss *session) dupKeyLocked(d *delivery) (uint64, bool) {
	o := ss.off
	if o == nil || o.recent == nil || d.qos == 0 || d.share() != nil {
		return 0, false
	}
	rs := o.recent
	if time.Now().UnixNano() > rs.until {
		ss.endWindowLocked()
		return 0, false
	}
	return rs.key(d.msg), true
}

// seenLocked reports whether the session's window holds key. The caller
// holds ss.mu and got key from dupKeyLocked.
func (ss *session) seenLocked(key uint64) bool {
	_, ok := ss.off.recent.keys[key]
	return ok
}

// recordLocked puts key in the session's window, once the message is the
// session's (queued, paged or in flight). The caller holds ss.mu and got
// key from dupKeyLocked.
func (ss *session) recordLocked(key uint64) {
	rs := ss.off.recent
	if rs == nil || rs.full {
		return
	}
	if _, ok := rs.keys[key]; ok {
		return
	}
	all := &ss.srv.recentKeys
	if len(rs.keys) >= maxRecent || all.Add(1) > maxRecentAll {
		if len(rs.keys) < maxRecent {
			all.Add(-1)
		}
		rs.full = true
		ss.srv.log.Warn("duplicate window full: later copies of this session's messages may be delivered twice",
			"client", ss.id, "remembered", len(rs.keys), "server_total", all.Load())
		return
	}
	rs.keys[key] = struct{}{}
}

// endWindowLocked drops the session's duplicate window and gives its
// count back to the server's. The caller holds ss.mu.
func (ss *session) endWindowLocked() {
	if o := ss.off; o != nil && o.recent != nil {
		ss.srv.recentKeys.Add(-int64(len(o.recent.keys)))
		o.recent = nil
	}
}

// ExpectDuplicates opens, for window, a duplicate window on the session
// of clientID: a QoS 1 or 2 message it already took within the window (the
// same publisher, creation time, topic and payload) is not queued again;
// a retained message sent for a SUBSCRIBE and a shared subscription's
// message are not checked (a session may take one message for each of
// its subscriptions that are shared and one that is not). A cluster
// calls it for a session that came from another node, which may still
// pass on, or ship late, messages that reach the session directly too; a
// client would otherwise get them twice, and QoS 2 promises once
// [MQTT-4.3.3-2]. It remembers up to 262,144 messages, and the server's
// windows up to 4,194,304 in all. It reports whether the session exists.
func (s *Server) ExpectDuplicates(clientID string, window time.Duration) bool {
	ss := s.session(clientID)
	if ss == nil {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.expectDuplicatesLocked(window)
	return true
}

// expectDuplicatesLocked opens or extends the session's duplicate window,
// whose memory a timer frees when it ends. The caller holds ss.mu (or has
// the session to itself).
func (ss *session) expectDuplicatesLocked(window time.Duration) {
	o := ss.offLocked()
	fresh := o.recent == nil
	if fresh {
		o.recent = &recentSet{seed: maphash.MakeSeed(), keys: make(map[uint64]struct{})}
	}
	rs := o.recent
	rs.until = max(rs.until, time.Now().Add(window).UnixNano())
	if fresh {
		// What the session holds already counts as taken: restored
		// from the store after a crash, say, while another copy was
		// parked for this node.
		record := func(d *delivery) bool {
			if key, ok := ss.dupKeyLocked(d); ok {
				ss.recordLocked(key)
			}
			return true
		}
		ss.q.each(record)
		for _, m := range ss.inflight {
			record(&m.delivery)
		}
	}
	time.AfterFunc(window+time.Second, func() {
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if o.recent == rs && time.Now().UnixNano() > rs.until {
			ss.endWindowLocked()
		}
	})
}
