package tern

import "math"

// SessionLimits are queue limits for one session, in place of the
// server's MaxQueuedMessages, MaxQueuedBytes and QueueFullPolicy. A bridge
// uses them to give its outbound queue (its session in the broker) a size
// of its own.
type SessionLimits struct {
	// MaxQueuedMessages and MaxQueuedBytes: 0 takes the server's value, a
	// negative value means no limit.
	MaxQueuedMessages int
	MaxQueuedBytes    int
	// QueueFullPolicy says what a full queue drops.
	QueueFullPolicy QueueFullPolicy
}

// queueLimits are SessionLimits resolved against the server's options.
type queueLimits struct {
	maxMessages, maxBytes int
	oldest                bool
}

// SetSessionLimits gives the session of the client identifier its own
// queue limits, now if it exists and whenever it is created (restored,
// or made by a CONNECT); nil goes back to the server's. The limits apply
// to messages queued from then on: a queue already beyond them keeps what
// it holds. Drops are counted as for any session (queue_full).
func (s *Server) SetSessionLimits(clientID string, l *SessionLimits) {
	var ql *queueLimits
	if l != nil {
		ql = &queueLimits{
			maxMessages: limitOr(l.MaxQueuedMessages, s.cfg.MaxQueuedMessages),
			maxBytes:    limitOr(l.MaxQueuedBytes, s.cfg.MaxQueuedBytes),
			oldest:      l.QueueFullPolicy == DropOldest,
		}
		s.sessionLimits.Store(clientID, ql)
	} else {
		s.sessionLimits.Delete(clientID)
	}
	if ss := s.session(clientID); ss != nil {
		ss.mu.Lock()
		ss.limits.Store(ql)
		ss.qFull.Store(false) // the new limits may leave room
		ss.mu.Unlock()
	}
}

func limitOr(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return math.MaxInt
	}
	return v
}

// dropOldestLocked reports whether the session's full queue drops its
// oldest message (else the new one).
func (ss *session) dropOldestLocked() bool {
	if l := ss.limits.Load(); l != nil {
		return l.oldest
	}
	return ss.srv.cfg.QueueFullPolicy == DropOldest
}
