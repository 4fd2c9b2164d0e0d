package tern

import (
	"sync"

	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/topics"
)

// SessionReplicator keeps what a session needs beyond this server: a
// cluster writes the subscriptions of persistent sessions to a replicated
// store, so that another node can give them back to the client when this
// one is gone, and removes them when the session ends.
type SessionReplicator interface {
	Hook
	// SubscriptionsChanged is called after a SUBSCRIBE or UNSUBSCRIBE
	// changed the subscriptions of a session that outlives its connection
	// (Session Expiry above 0; 3.1.1: Clean Session 0), on the client's
	// goroutine, with all the session's subscriptions as they are now. It
	// must return at once; the SUBACK or UNSUBACK waits until done is
	// called. An error given to done is logged and the acknowledgement
	// sent anyway: the subscription is made (or gone) on this server.
	SubscriptionsChanged(c *Client, subs []storage.Subscription, done func(error))
	// SessionEnded is called when a session ends for good (expired, ended
	// with its connection, cleaned by a clean start, deleted), as
	// SessionObserver.OnSessionEnded, with the client of its last
	// connection: for a session restored from the store or imported and
	// not connected since, a client with the identifier, user name and
	// protocol version only (no Values). A session ExportSession moved to
	// another server has not ended. It must not block.
	SessionEnded(c *Client)
}

// subscriptionRecord is the storage record of a subscription.
func subscriptionRecord(sub *topics.Subscription) storage.Subscription {
	return storage.Subscription{
		ClientID: sub.ClientID, Group: sub.Group, Filter: sub.Filter, QoS: sub.QoS, NoLocal: sub.NoLocal,
		RetainAsPublished: sub.RetainAsPublished, RetainHandling: sub.RetainHandling, Identifier: sub.Identifier,
	}
}

// replicateSubscriptions gives the SessionReplicators the subscriptions
// of c's session, when it outlives the connection, and waits for them.
func (s *Server) replicateSubscriptions(c *Client) {
	if wait := s.startReplicate(c); wait != nil {
		wait()
	}
}

// startReplicate gives the SessionReplicators the subscriptions of c's
// session, when it outlives the connection, and returns what waits for
// them (nil: nothing to wait for).
func (s *Server) startReplicate(c *Client) (wait func()) {
	if len(s.hooks.replicators) == 0 {
		return nil
	}
	c.sess.mu.Lock()
	expiry := c.sess.expiry
	c.sess.mu.Unlock()
	if expiry == 0 {
		return nil
	}
	var subs []storage.Subscription
	s.index.ClientSubscriptions(c.id, func(sub *topics.Subscription) bool {
		if targetKind(sub.Target) != KindRemote { // not what a move left behind
			subs = append(subs, subscriptionRecord(sub))
		}
		return true
	})
	var wg sync.WaitGroup
	for _, h := range s.hooks.replicators {
		wg.Add(1)
		var once sync.Once
		h.SubscriptionsChanged(c, subs, func(err error) {
			once.Do(func() {
				if err != nil {
					s.log.Warn("subscriptions not replicated", "hook", h.ID(), "client", c.id, "err", err)
				}
				wg.Done()
			})
		})
	}
	return wg.Wait
}

// sessionEnded tells the SessionReplicators that the session of id, whose
// last connection's client is last (nil: none), ended.
func (s *Server) sessionEnded(id string, last *Client) {
	if len(s.hooks.replicators) == 0 {
		return
	}
	if last == nil {
		last = &Client{srv: s, id: id, fd: -1}
	}
	for _, h := range s.hooks.replicators {
		h.SessionEnded(last)
	}
}
