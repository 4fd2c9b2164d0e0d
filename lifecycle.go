package tern

import (
	"errors"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// connectionEnded runs once after an established connection's read loop
// ends: it detaches the session, hands shared-subscription messages to
// other members, publishes or schedules the will, and ends or schedules the
// end of the session.
func (s *Server) connectionEnded(c *Client) {
	s.stats.ClientsConnected.Add(-1)
	var err error
	if p := c.disconnErr.Load(); p != nil {
		err = *p
	}
	for _, h := range s.hooks.disconnects {
		h.OnDisconnect(c, err)
	}
	s.log.Debug("client disconnected", "client", c.id, "remote", c.RemoteAddr(), "err", err)

	ss := c.sess
	ss.mu.Lock()
	if ss.client != c { // taken over: the new connection owns the session
		ss.mu.Unlock()
		return
	}
	ss.client = nil
	ss.offlineSince = time.Now().UnixNano()
	ss.qos0Full.Store(false)
	shared := ss.takeSharedLocked()
	expiry := ss.expiry
	ss.storeSessionLocked(c.version, time.Now())
	ss.mu.Unlock()

	s.redeliverShared(ss, shared)

	if w := c.will.Swap(nil); w != nil {
		m := willMessage(c.id, w)
		delay := min(w.Properties.WillDelay, expiry) // [MQTT-3.1.3-9]
		if delay == 0 {
			s.publishWill(c, m)
		} else {
			ss.mu.Lock()
			switch {
			case ss.ended: // a clean start ended the session meanwhile [MQTT-3.1.2-8]
				ss.mu.Unlock()
				s.publishWill(c, m)
			case ss.client != nil: // a new connection came first [MQTT-3.1.3-9]
				ss.mu.Unlock()
			default:
				o := ss.offLocked()
				o.pendingWill, o.pendingWillFrom = m, c
				ss.storeWillLocked(m, time.Now().Add(time.Duration(delay)*time.Second))
				o.willTimer = time.AfterFunc(time.Duration(delay)*time.Second, func() { s.willDelayPassed(ss, m) })
				ss.mu.Unlock()
			}
		}
	}

	switch expiry {
	case 0: // the session ends with the connection [MQTT-3.1.2-23]
		s.mu.Lock()
		ss.mu.Lock()
		resumed := ss.client != nil // a new connection took the session meanwhile
		ss.mu.Unlock()
		after := func() {}
		if !resumed {
			after = s.endSessionLocked(ss, false)
		}
		s.mu.Unlock()
		after()
	case NeverExpire:
	default:
		ss.mu.Lock()
		if !ss.ended && ss.client == nil {
			ss.offLocked().expiryTimer = time.AfterFunc(time.Duration(expiry)*time.Second, func() { s.expire(ss) })
		}
		ss.mu.Unlock()
	}
}

// willDelayPassed publishes a delayed will unless a new connection took it
// away.
func (s *Server) willDelayPassed(ss *session, m *Message) {
	if s.isClosing() {
		return // the store keeps the will; the next start publishes it
	}
	ss.mu.Lock()
	if ss.off == nil || ss.off.pendingWill != m {
		ss.mu.Unlock()
		return
	}
	_, from := ss.takePendingWillLocked()
	ss.storeWillLocked(nil, time.Time{})
	ss.mu.Unlock()
	s.publishWill(from, m)
}

// HasWill reports whether the connection has a will that its end will
// publish or schedule: one set by its CONNECT and not discarded by a
// DISCONNECT with reason 0x00 [MQTT-3.1.2-10]. During
// DisconnectObserver.OnDisconnect it tells whether the will is still to
// be published.
func (c *Client) HasWill() bool { return c.will.Load() != nil }

// PublishWill publishes the will of a client whose connection this server
// did not hold (a cluster node publishing the will of a client of a node
// that died), as the server publishes its own clients' wills: as that
// client (Origin, and the authorizers asked about clientID and username),
// counted in WillsSent and told to every WillObserver. The Will Delay
// Interval is the caller's to apply. It returns ErrServerClosed after
// Shutdown, ErrInvalidTopic for a topic name that is not valid, and
// ErrNotAuthorized when an authorizer refuses it.
func (s *Server) PublishWill(clientID, username string, w *packets.Will) error {
	if s.isClosing() {
		return ErrServerClosed
	}
	if err := topics.ValidateName(w.Topic); err != nil {
		return errors.Join(ErrInvalidTopic, err)
	}
	m := willMessage(clientID, w)
	if !s.publishWill(&Client{srv: s, id: clientID, username: username, fd: -1}, m) {
		return ErrNotAuthorized
	}
	return nil
}
