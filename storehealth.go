package tern

import (
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/topics"
)

// While the store cannot write (a full or failing disk: see
// storage.HealthReporter), the broker keeps serving what needs no store:
// QoS 0 messages, clean sessions, messages for clean sessions only. What
// would need the store is refused up front, in a way the client
// understands, instead of waiting for the disk with an acknowledgement
// outstanding:
//
//   - a CONNECT of a persistent session (or one that ends a stored one):
//     CONNACK 0x88 Server unavailable (3.1.1: 0x03);
//   - a QoS 1/2 PUBLISH that would be stored (retained, for a persistent
//     session, or a QoS 2 one from a persistent session): PUBACK or PUBREC
//     0x97 Quota exceeded; 3.1.1 has no negative acknowledgement, so the
//     connection is closed without one and the publisher sends it again
//     later;
//   - a SUBSCRIBE of a persistent session: 0x97 (3.1.1: 0x80 Failure) for
//     every filter;
//   - an UNSUBSCRIBE of a persistent session: 0x80 for every filter
//     (3.1.1 has no codes in UNSUBACK: the connection is closed).
//
// Changes already under way when the disk failed wait for it: their
// acknowledgements go once the store has written them. Everything resumes
// by itself when the store does.

// errStoreRefused ends a 3.1.1 connection whose PUBLISH or UNSUBSCRIBE
// needs the store while it cannot write: 3.1.1 has no negative
// acknowledgement for them, and without one the client sends them again
// after reconnecting. It is not a protocol error.
var errStoreRefused = &packets.Error{Code: packets.QuotaExceeded, Msg: "store unavailable: not acknowledged"}

// storeHealth is the server's view of its store's health.
type storeHealth struct {
	reporter storage.HealthReporter // nil: the store never reports

	publishes, subscribes, unsubscribes, connects atomic.Int64 // refused since the last report
}

// health returns nil, or why the store cannot write now. A nil persister
// is healthy.
func (p *persister) health() error {
	if p == nil || p.sh.reporter == nil {
		return nil
	}
	return p.sh.reporter.Health()
}

// StoreHealth returns nil while the server's store writes normally (or
// there is no store), or an error wrapping storage.ErrUnavailable that
// says why it does not. While it does not, the server refuses what needs
// the store (see storehealth.go) and /readyz of the admin API answers 503.
func (s *Server) StoreHealth() error { return s.persist.health() }

// refused counts an operation refused because the store cannot write.
func (s *Server) refused(n *atomic.Int64) {
	n.Add(1)
	s.stats.StoreRefused.Add(1)
}

// storeWatch logs the store's health while it is bad, at most every 10 s
// with what was refused meanwhile, and when it recovers. It runs from
// Serve while the server serves.
func (s *Server) storeWatch() {
	sh := &s.persist.sh
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var down time.Time   // when the store was first seen unavailable; zero while healthy
	var logged time.Time // when that was last logged
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		err := s.persist.health()
		now := time.Now()
		if err == nil {
			if !down.IsZero() {
				s.log.Warn("store available again: writes resumed", "unavailable_for", now.Sub(down).Round(time.Millisecond).String())
				down = time.Time{}
				s.kickPaged() // reading paged queues back waited for it
			}
			continue
		}
		if down.IsZero() {
			down = now
		}
		if now.Sub(logged) >= 10*time.Second {
			logged = now
			s.log.Error("store unavailable: refusing what needs it, serving the rest", "err", err,
				"for", now.Sub(down).Round(time.Second).String(),
				"refused_publishes", sh.publishes.Swap(0), "refused_subscribes", sh.subscribes.Swap(0),
				"refused_unsubscribes", sh.unsubscribes.Swap(0), "refused_connects", sh.connects.Swap(0))
		}
	}
}

// refuseConnect reports whether a CONNECT must be refused for the store:
// it would create, resume or end a stored session.
func (c *Client) refuseConnect(expiry uint32) bool {
	s := c.srv
	if s.persist.health() == nil || expiry == 0 && !s.persist.sessionStored(c.id) {
		return false
	}
	s.refused(&s.persist.sh.connects)
	return true
}

// persistentSession reports whether the client's session is stored.
func (c *Client) persistentSession() bool {
	c.sess.mu.Lock()
	defer c.sess.mu.Unlock()
	return c.sess.persistentLocked()
}

// refusePublish checks, for a QoS 1 or 2 PUBLISH, whether the store is
// needed and cannot write. It returns whether the message is refused, and
// an error when the connection must end (3.1.1); a v5 client has been sent
// its PUBACK or PUBREC 0x97.
func (c *Client) refusePublish(pk *packets.Publish) (bool, error) {
	s := c.srv
	if pk.QoS == 0 || s.persist.health() == nil || !c.publishNeedsStore(pk) {
		return false, nil
	}
	s.refused(&s.persist.sh.publishes)
	if c.version != packets.V5 {
		return true, errStoreRefused
	}
	t := packets.PUBACK
	if pk.QoS == 2 {
		t = packets.PUBREC // an error PUBREC ends the exchange (section 4.3.3)
	}
	c.sendAck(t, pk.PacketID, packets.QuotaExceeded, false, nil)
	return true, nil
}

// publishNeedsStore reports whether routing the message would change the
// store: a retained message, the packet id of a QoS 2 message from a
// persistent session, or a QoS 1/2 delivery to a persistent session.
func (c *Client) publishNeedsStore(pk *packets.Publish) bool {
	s := c.srv
	if pk.Retain || pk.QoS == 2 && c.persistentSession() {
		return true
	}
	res := s.index.Match(pk.Topic)
	for _, sub := range res.Subscriptions {
		if sub.QoS > 0 && s.storesFor(sub) {
			return true
		}
	}
	for _, g := range res.Shared {
		for _, sub := range g.Members {
			if sub.QoS > 0 && s.storesFor(sub) {
				return true
			}
		}
	}
	return false
}

// storesFor reports whether deliveries to the subscription's session are
// stored.
func (s *Server) storesFor(sub *topics.Subscription) bool {
	ss, ok := sub.Target.(*session) // not an in-process handler or a remote
	if !ok {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.persistentLocked()
}

// refuseSubscribe answers a persistent session's SUBSCRIBE while the store
// cannot write: every filter refused, nothing changed. It reports whether
// it did.
func (c *Client) refuseSubscribe(pk *packets.Subscribe) bool {
	s := c.srv
	if s.persist.health() == nil || !c.persistentSession() {
		return false
	}
	s.refused(&s.persist.sh.subscribes)
	ack := &packets.Suback{PacketID: pk.PacketID, ReasonCodes: make([]packets.ReasonCode, len(pk.Subscriptions))}
	for i := range ack.ReasonCodes {
		ack.ReasonCodes[i] = packets.QuotaExceeded // 3.1.1: 0x80 Failure
	}
	c.send(ack)
	return true
}

// refuseUnsubscribe answers a persistent session's UNSUBSCRIBE while the
// store cannot write: v5 gets 0x80 for every filter, 3.1.1 (whose
// UNSUBACK cannot refuse) a closed connection. It reports whether it
// refused, and the error that ends the connection.
func (c *Client) refuseUnsubscribe(pk *packets.Unsubscribe) (bool, error) {
	s := c.srv
	if s.persist.health() == nil || !c.persistentSession() {
		return false, nil
	}
	s.refused(&s.persist.sh.unsubscribes)
	if c.version != packets.V5 {
		return true, errStoreRefused
	}
	ack := &packets.Unsuback{PacketID: pk.PacketID, ReasonCodes: make([]packets.ReasonCode, len(pk.Filters))}
	for i := range ack.ReasonCodes {
		ack.ReasonCodes[i] = packets.UnspecifiedError
	}
	c.send(ack)
	return true, nil
}
