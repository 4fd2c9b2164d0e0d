package tern

// Seams for a cluster layer (package cluster): routes to other nodes that
// routing consults like any subscription, messages that come from another
// node routed to this server's own subscribers only, and the retained
// messages other nodes set. The core knows nothing of how nodes talk.

import (
	"errors"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/topics"
)

// remotePrefix starts the index key of a remote route id: a NUL, which no
// client identifier can contain.
const remotePrefix = "\x00remote/"

// ErrInvalidRoute is returned for a remote route with an empty id or an
// invalid filter.
var ErrInvalidRoute = errors.New("tern: invalid remote route")

// AddRemoteRoute routes the messages that match filter to r, as the remote
// route id (a node name): routing consults remote routes like
// subscriptions, in the same index, so a message that matches several
// routes of one id is forwarded to it once (see Remote.Forward). With group
// set, the route is a member of that shared group: each message of the
// group goes to one member, here or remote. Remote routes are not
// subscriptions of this server: they are not counted, listed or stored, and
// hooks are not told of them. Adding a route that exists does nothing.
func (s *Server) AddRemoteRoute(id string, r Remote, group, filter string) error {
	if id == "" || r == nil || topics.ValidateFilter(filter) != nil {
		return ErrInvalidRoute
	}
	s.index.Subscribe(topics.Subscription{ClientID: remotePrefix + id, Group: group, Filter: filter, QoS: 2,
		RetainAsPublished: true, Target: &remoteTarget{r: r, route: id}})
	return nil
}

// RemoveRemoteRoute removes one remote route and reports whether it
// existed.
func (s *Server) RemoveRemoteRoute(id, group, filter string) bool {
	return s.index.Unsubscribe(remotePrefix+id, group, filter)
}

// RemoveRemoteRoutes removes every route of the remote route id and returns
// how many there were.
func (s *Server) RemoveRemoteRoutes(id string) int {
	return s.index.UnsubscribeAll(remotePrefix + id)
}

// RemoteRoutes calls fn with each route of the remote route id.
func (s *Server) RemoteRoutes(id string, fn func(group, filter string) bool) {
	s.index.ClientSubscriptions(remotePrefix+id, func(sub *topics.Subscription) bool {
		return fn(sub.Group, sub.Filter)
	})
}

// Injected is what became of a message given to Inject.
type Injected struct {
	// Queued counts the sessions and handlers it went to.
	Queued int
	// Stored reports that it went to the store: it is durable once
	// AfterStore calls back.
	Stored bool
	// ack waits for the nodes the message was passed on to.
	ack *Ack
}

// Onward reports whether the message was passed on to another node, to a
// session that moved there (see ExportSession and InjectParked): it is
// safe once Then calls back.
func (in Injected) Onward() bool { return in.ack != nil }

// Then calls done once every node the message was passed on to (sessions
// that moved there) has it, with an error when one could not take it; at
// once when it was passed on nowhere. Call it once for what Inject,
// InjectTo or InjectParked returns. A node that acknowledges a message
// it was sent should do so only then: it may die before the node it
// passed the message on to has it.
func (in Injected) Then(done func(error)) {
	if in.ack == nil {
		done(nil)
		return
	}
	in.ack.fire = done
	in.ack.Release(nil)
}

// Inject routes a message that arrived from another node to this server's
// own subscribers only: remote routes are skipped (so it is never
// forwarded again; but a session that just moved to another node gets it
// there, see ExportSession, and Then says when it is safe), the retained
// store is left alone (each node keeps its
// own, see SetRetained), and neither authorizers (Write) nor interceptors
// are asked, as they were where it was published; deliveries are still
// checked (Deliver) and observers told of them. Shared groups get it only
// with group set, and then it goes to one member of that shared group on
// filter and to nothing else: the node that published it chose this one
// for the group, as it chose a member of every group among all nodes'.
func (s *Server) Inject(m *Message, group, filter string) Injected {
	if s.isClosing() {
		return Injected{}
	}
	r := s.routeMsg(m, routeOpts{local: true, acks: true, group: group, filter: filter})
	return Injected{Queued: r.queued, Stored: s.persist.touched(m), ack: r.ack}
}

// InjectParked is Inject for a message parked for this node while it was
// gone (or cut off), taken back: a session that has moved to another node
// since, whose subscriptions still drain here (ExportSession's moved),
// gets it too, passed on there, for as long as they drain here (Inject
// passes on only while the other nodes may not know where the session
// went): other nodes did not route a parked message to where the session
// is now. What it passes on is safe once Then calls back.
func (s *Server) InjectParked(m *Message, group, filter string) Injected {
	if s.isClosing() {
		return Injected{}
	}
	r := s.routeMsg(m, routeOpts{local: true, moved: true, acks: true, group: group, filter: filter})
	return Injected{Queued: r.queued, Stored: s.persist.touched(m), ack: r.ack}
}

// InjectTo queues a message for one session of this server, with the QoS,
// RETAIN flag and subscription identifiers d gives, as a subscription of it
// would have: for messages another node routed to a session that has since
// moved here (see ExportSession); SubscribedTo says whether the session
// still wants it. It reports whether the session exists and took the
// message, and whether the message went to the store.
func (s *Server) InjectTo(clientID string, m *Message, d Delivery) Injected {
	ss := s.session(clientID)
	if ss == nil {
		return Injected{}
	}
	dv := delivery{msg: m, qos: min(d.QoS, m.QoS), retain: d.Retain, subID: d.SubID}
	if len(d.SubIDs) > 0 {
		dv.subID = 0
		dv.ext = &deliveryExt{subIDs: d.SubIDs}
	}
	if d.Group != "" {
		// A shared group's: not checked against a duplicate window (the
		// session may take the message once more as a plain subscriber),
		// and handed to another member if the session leaves the group.
		if g := s.sharedGroup(m.Topic, d.Group, d.Filter); g != nil {
			if dv.ext == nil {
				dv.ext = &deliveryExt{}
			}
			dv.ext.share = g
		}
	}
	r := routed{opts: routeOpts{local: true, acks: true}}
	s.deliverSession(ss, dv, &r)
	s.routeDone(&r)
	return Injected{Queued: r.queued, Stored: s.persist.touched(m), ack: r.ack}
}

// SubscribedTo reports whether the session of clientID here has a
// subscription that topic matches: the shared one to (group, filter) when
// group is set, a plain one otherwise. A message another node sends to a
// session by name (InjectTo) is its own only then: a session that started
// clean since, or unsubscribed, does not get what its former
// subscriptions matched [MQTT-3.1.2-4], and the subscriptions of its
// identifier that drain here for an earlier session that moved away
// (ExportSession) are not its own.
func (s *Server) SubscribedTo(clientID, topic, group, filter string) bool {
	ss := s.session(clientID)
	if ss == nil {
		return false
	}
	if group != "" {
		// The sending node matched the group's filter: its key names
		// the subscription.
		sub, ok := s.index.Get(clientID, group, filter)
		return ok && sub.Target == any(ss)
	}
	for _, sub := range s.index.Match(topic).Subscriptions {
		if sub.ClientID == clientID && sub.Target == any(ss) {
			return true
		}
	}
	return false
}

// sharedGroup returns the shared group (group, filter) if topic matches
// its filter and it has members here, nil otherwise.
func (s *Server) sharedGroup(topic, group, filter string) *topics.SharedGroup {
	for _, g := range s.index.Match(topic).Shared {
		if g.Name == group && g.Filter == filter {
			return g
		}
	}
	return nil
}

// AfterStore calls done once every change the server made so far is in
// its store (durable with DurabilitySync): at once, on the caller's
// goroutine, when there is no store; otherwise on the store's committer
// goroutine, in the order of the calls. done must not block.
func (s *Server) AfterStore(done func(error)) {
	if s.persist == nil {
		done(nil)
		return
	}
	s.persist.after(done)
}

// RetainObserver is told of every change a message published here makes
// to the retained store (a new or replaced message, or a deletion: an
// empty payload), before it is delivered, on the goroutine that routes it:
// it must not block. ack is as for Remote.Forward: a cluster holds the
// publisher's acknowledgement until the change is replicated. Changes made
// with SetRetained, and $SYS messages, are not reported.
type RetainObserver interface {
	Hook
	OnRetained(m *Message, ack *Ack)
}

// RetainedSyncer brings the server's retained messages up to date before a
// subscription reads them: a cluster, whose retained messages reach each
// node through a replicated log, makes sure that every change acknowledged
// on any node before the SUBSCRIBE (or the in-process Subscribe) is in this
// node's index, so that a client subscribing anywhere after a publisher's
// PUBACK gets the message.
type RetainedSyncer interface {
	Hook
	// SyncRetained is called on the subscriber's goroutine when a
	// subscription is about to send retained messages, and must return at
	// once; the retained messages are read (and the SUBACK sent) once done
	// is called, which it must be, also when the syncer gives up.
	SyncRetained(done func())
}

// syncRetained starts the RetainedSyncers and returns what waits for them
// (nil: none).
func (s *Server) syncRetained() (wait func()) {
	n := len(s.hooks.retainSyncers)
	if n == 0 {
		return nil
	}
	ch := make(chan struct{}, n)
	for _, h := range s.hooks.retainSyncers {
		h.SyncRetained(func() { ch <- struct{}{} })
	}
	return func() {
		for range n {
			<-ch
		}
	}
}

// retainedChanged tells the retain observers of a change m made.
func (s *Server) retainedChanged(m *Message, r *routed) {
	if len(s.hooks.retainers) == 0 {
		return
	}
	var a *Ack
	if r.opts.acks && m.QoS > 0 {
		if r.ack == nil {
			r.ack = newAck()
		}
		a = r.ack
	}
	for _, h := range s.hooks.retainers {
		h.OnRetained(m, a)
	}
}

// SetRetained makes m the retained message of its topic (or, with an empty
// payload, deletes it), in memory and in the store, without routing it and
// without telling RetainObserver hooks: for retained messages set on
// another node. It reports false when the retained limits refuse it.
func (s *Server) SetRetained(m *Message) bool {
	m.Retain = true
	return s.storeRetained(m)
}

// Record returns the storage form of m, the form in which it travels
// between nodes (storage.AppendMessage). Its ID is zero.
func (m *Message) Record() *storage.Message {
	r := m.record()
	r.ID = 0
	return r
}

// MessageFromRecord returns the message a storage record describes: one
// that came from another node or from outside the server. The record's ID
// is ignored; its payload and properties are kept, not copied.
func MessageFromRecord(r *storage.Message) *Message {
	pk := packets.Publish{Topic: r.Topic, Payload: r.Payload, QoS: r.QoS, Retain: r.Retain}
	if r.Properties != nil {
		pk.Properties = *r.Properties
	}
	m := newMessage(&pk, r.Origin, time.Unix(0, r.Created))
	m.expireAt = r.ExpireAt
	return m
}
