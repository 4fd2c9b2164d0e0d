package trace

import (
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/topics"
)

// The hook's methods. Each starts with one atomic load and returns when
// no trace runs.

// running returns the traces running, or nil.
func (t *Tracer) running() []*Trace {
	if ts := t.traces.Load(); ts != nil {
		return *ts
	}
	return nil
}

// clientEvent makes an event of a client's own action.
func clientEvent(typ string, c *tern.Client) Event {
	return Event{Time: time.Now(), Type: typ, ClientID: c.ID(), Username: c.Username(), Address: c.RemoteAddr()}
}

// OnSessionEstablished implements tern.ConnectObserver.
func (t *Tracer) OnSessionEstablished(c *tern.Client, resumed bool) {
	for _, tr := range t.running() {
		if tr.filter.Address != "" {
			in := tr.addrMatches(c.RemoteAddr())
			tr.remember(c.ID(), in)
			if !in {
				continue
			}
		} else if !tr.clientMatches(c) {
			continue
		}
		ev := clientEvent("connect", c)
		ev.Resumed = resumed
		tr.send(ev)
	}
}

// OnDisconnect implements tern.DisconnectObserver.
func (t *Tracer) OnDisconnect(c *tern.Client, err error) {
	for _, tr := range t.running() {
		if tr.clientMatches(c) {
			ev := clientEvent("disconnect", c)
			ev.Reason = tern.DisconnectReason(err)
			tr.send(ev)
		}
	}
}

// OnSubscribed implements tern.SubscribeObserver.
func (t *Tracer) OnSubscribed(c *tern.Client, sub topics.Subscription) {
	for _, tr := range t.running() {
		if tr.clientMatches(c) || tr.filterMatches(sub.Filter) {
			ev := clientEvent("subscribe", c)
			ev.Topic, ev.Group, ev.QoS = sub.Filter, sub.Group, sub.QoS
			tr.send(ev)
		}
	}
}

// OnUnsubscribed implements tern.SubscribeObserver.
func (t *Tracer) OnUnsubscribed(c *tern.Client, group, filter string) {
	for _, tr := range t.running() {
		if tr.clientMatches(c) || tr.filterMatches(filter) {
			ev := clientEvent("unsubscribe", c)
			ev.Topic, ev.Group = filter, group
			tr.send(ev)
		}
	}
}

// filterMatches reports whether a topic trace follows subscriptions to
// filter: the trace's own filter, or a topic it matches.
func (tr *Trace) filterMatches(filter string) bool {
	return tr.filter.Topic != "" && (filter == tr.filter.Topic || topics.Match(tr.filter.Topic, filter))
}

// OnPublished implements tern.PublishObserver.
func (t *Tracer) OnPublished(c *tern.Client, m *tern.Message) {
	for _, tr := range t.running() {
		if tr.topicMatches(m.Topic) || tr.clientMatches(c) {
			ev := clientEvent("publish", c)
			ev.Topic, ev.QoS, ev.Retain = m.Topic, m.QoS, m.Retain
			tr.excerpt(&ev, m.Payload)
			tr.send(ev)
		}
	}
}

// OnDelivered implements tern.PublishObserver.
func (t *Tracer) OnDelivered(clientID string, m *tern.Message) {
	for _, tr := range t.running() {
		if tr.topicMatches(m.Topic) || tr.idMatches(clientID) {
			tr.send(tr.messageEvent("deliver", clientID, m))
		}
	}
}

// OnMessageDropped implements tern.DropObserver.
func (t *Tracer) OnMessageDropped(clientID string, m *tern.Message, reason tern.DropReason) {
	for _, tr := range t.running() {
		// A message refused on publish goes to no one: it is the publisher's.
		if tr.topicMatches(m.Topic) || tr.idMatches(clientID) || clientID == "" && tr.idMatches(m.Origin) {
			ev := tr.messageEvent("drop", clientID, m)
			ev.Reason = string(reason)
			tr.send(ev)
		}
	}
}

// OnWillSent implements tern.WillObserver.
func (t *Tracer) OnWillSent(clientID string, m *tern.Message) {
	for _, tr := range t.running() {
		if tr.topicMatches(m.Topic) || tr.idMatches(clientID) {
			tr.send(tr.messageEvent("will", clientID, m))
		}
	}
}

// messageEvent makes an event about a message and a client.
func (tr *Trace) messageEvent(typ, clientID string, m *tern.Message) Event {
	ev := Event{Time: time.Now(), Type: typ, ClientID: clientID, Topic: m.Topic, QoS: m.QoS, Retain: m.Retain, From: m.Origin}
	tr.excerpt(&ev, m.Payload)
	return ev
}
