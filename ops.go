package tern

import "github.com/ternmq/tern/packets"

// DeleteSession ends the session of the client id, online or offline, as
// its expiry would: its subscriptions, queued and inflight messages go
// (counted as dropped, reason session_ended) and a pending will is
// published. A connected client is disconnected first, MQTT 5 clients
// with DISCONNECT 0x98 Administrative action, and its will is published.
// It reports whether there was a session.
func (s *Server) DeleteSession(id string) bool {
	s.mu.Lock()
	ss := s.session(id)
	if ss == nil {
		s.mu.Unlock()
		return false
	}
	ss.mu.Lock()
	c := ss.client
	if c != nil {
		ss.expiry = 0 // the end of the connection ends the session
	}
	ss.mu.Unlock()
	after := func() {}
	if c == nil {
		after = s.endSessionLocked(ss, false)
	}
	s.mu.Unlock()
	after()
	if c != nil {
		c.disconnect(packets.AdministrativeAction)
	}
	return true
}
