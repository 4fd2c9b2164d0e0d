package tern

import (
	"time"

	"github.com/ternmq/tern/topics"
)

// retainedStream stands in a session's queue for the retained messages a
// new subscription must receive [MQTT-3.3.1-9]. The messages are looked up
// only when the stream reaches the head of the queue, and sent one at a
// time as the client's window allows, so a subscription that matches a
// million retained messages costs 8 bytes per message for the one stream
// being sent, not a queued delivery per message, and a client that
// subscribes again and again without reading holds one small entry per
// filter.
//
// Messages are sent with their retain flag set [MQTT-3.3.1-8], at the
// lower of their QoS and the subscription's. A message retained after the
// subscription was made came to the session live, queued behind the
// stream, and is skipped here.
//
// Streams are not stored: after a restart, retained messages of a
// subscription made just before it that were not yet sent are not sent.
type retainedStream struct {
	filter string
	qos    byte   // the granted QoS
	subID  uint32 // the subscription identifier, 0 if none
	since  time.Time

	taken bool       // msgs holds the messages to send
	msgs  []*Message // in no particular order; sent ones are cleared
	next  int        // the next message to send
}

// addStream queues the retained messages matching a subscription just
// made. A stream for the same filter that has not started yet serves both.
func (ss *session) addStream(sub *topics.Subscription, since time.Time) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return
	}
	if ss.streams > 0 {
		var found *retainedStream
		ss.q.each(func(d *delivery) bool {
			if st := d.stream(); st != nil && st.filter == sub.Filter && !st.taken {
				found = st
				return false
			}
			return true
		})
		if found != nil {
			// It will send the retained messages as they are when it
			// starts; what was retained since it was queued came live.
			found.qos, found.subID = sub.QoS, sub.Identifier
			return
		}
	}
	st := &retainedStream{filter: sub.Filter, qos: sub.QoS, subID: sub.Identifier, since: since}
	ss.streams++
	ss.q.push(delivery{ext: &deliveryExt{stream: st}})
	if c := ss.client; c != nil {
		c.kickLocked()
	}
}

// removeStreamLocked forgets a stream taken off the queue.
func (ss *session) removeStreamLocked(*retainedStream) { ss.streams-- }

// queuedLocked returns the number of messages in the queue, streams not
// counted.
func (ss *session) queuedLocked() int { return ss.q.len() - int(ss.streams) + ss.pg.count() }

// retainedSnapshot returns the retained messages a stream sends: those
// matching its filter that were retained before the subscription, are not
// expired and that the authorizers let the session's client receive.
// Expired ones are deleted. Call it with no lock held.
func (s *Server) retainedSnapshot(ss *session, st *retainedStream) []*Message {
	now := time.Now()
	nowNano := now.UnixNano()
	var out []*Message
	var expired []string
	check := len(s.hooks.authorizers) > 0
	s.retained.Match(st.filter, func(topic string, m *Message) bool {
		switch {
		case m.expired(nowNano):
			expired = append(expired, topic)
		case m.Created.After(st.since):
			// Retained after the subscription: it came live.
		case check && !s.deliverable(ss, m):
			s.stats.DeliveriesDenied.Add(1)
		default:
			out = append(out, m)
		}
		return true
	})
	for _, t := range expired {
		s.deleteRetained(t, func(m *Message) bool { return m.expired(nowNano) })
	}
	return out
}
