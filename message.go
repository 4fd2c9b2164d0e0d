package tern

import (
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// Message is an application message as the server routes it. One Message is
// shared by every subscriber it goes to: hooks and handlers must not modify
// it or its payload.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Properties holds the v5 properties forwarded to subscribers (payload
	// format, content type, response topic, correlation data, user
	// properties, message expiry as received); nil when there are none.
	Properties *packets.Properties
	// Origin is the client identifier of the publisher.
	Origin string
	// Created is when the server received the message.
	Created time.Time

	expireAt int64 // unix nanoseconds; 0 = never

	held atomic.Int32 // queued and inflight deliveries holding it, for the memory budget

	sys    bool        // a $SYS message: never stored
	stored atomic.Bool // it has been put in the store (set under the persister's lock)

	// Guarded by the persister's lock.
	id     uint64 // storage id, 0 until first stored
	refs   int32  // stored references: deliveries to persistent sessions, retained
	mapped bool   // its references are counted in persister.refs instead (see persister.mapLocked)
}

// expired reports whether the message's expiry interval has passed.
func (m *Message) expired(now int64) bool { return m.expireAt != 0 && now >= m.expireAt }

// remainingExpiry returns the message expiry interval to send on: the
// received interval less the time the message waited, at least 1 second
// [MQTT-3.3.2-6].
func (m *Message) remainingExpiry(now int64) uint32 {
	if m.expireAt == 0 {
		return 0
	}
	left := (m.expireAt - now + int64(time.Second) - 1) / int64(time.Second)
	if left < 1 {
		left = 1
	}
	return uint32(left)
}

// size is what the message counts towards MaxQueuedBytes.
func (m *Message) size() int { return len(m.Topic) + len(m.Payload) }

// newMessage builds a routed message from a decoded PUBLISH. The packet's
// buffer becomes the message's storage.
func newMessage(pk *packets.Publish, origin string, now time.Time) *Message {
	m := &Message{
		Topic:   pk.Topic,
		Payload: pk.Payload,
		QoS:     pk.QoS,
		Retain:  pk.Retain,
		Origin:  origin,
		Created: now,
	}
	p := &pk.Properties
	if p.PayloadFormat != 0 || p.MessageExpiry != 0 || p.ContentType != "" || p.ResponseTopic != "" ||
		p.CorrelationData != nil || len(p.User) > 0 {
		m.Properties = &packets.Properties{
			PayloadFormat:   p.PayloadFormat,
			MessageExpiry:   p.MessageExpiry,
			ContentType:     p.ContentType,
			ResponseTopic:   p.ResponseTopic,
			CorrelationData: p.CorrelationData,
			User:            p.User,
		}
		if p.MessageExpiry != 0 {
			m.expireAt = now.UnixNano() + int64(p.MessageExpiry)*int64(time.Second)
		}
	}
	return m
}

// delivery is one message on its way to one session: an entry of the
// session's queue or of its inflight window. It is kept small (32 bytes)
// because a stuck or offline session may hold many; the rarely used fields
// live behind ext.
type delivery struct {
	msg    *Message
	pseq   uint64 // key of its storage record in the session; 0 = not stored
	subID  uint32 // the subscription identifier, when one
	qos    byte   // the QoS it is delivered at
	retain bool   // the RETAIN flag it is sent with
	ext    *deliveryExt
}

// deliveryExt holds what few deliveries need.
type deliveryExt struct {
	subIDs []uint32            // several subscription identifiers (overlapping subscriptions)
	share  *topics.SharedGroup // the shared group it came through, for redelivery
	stream *retainedStream     // a queue entry standing for retained messages still to send
}

// share returns the shared group the delivery came through, or nil.
func (d *delivery) share() *topics.SharedGroup {
	if d.ext == nil {
		return nil
	}
	return d.ext.share
}

// subIDList returns the subscription identifiers of a delivery that has
// several, or nil.
func (d *delivery) subIDList() []uint32 {
	if d.ext == nil {
		return nil
	}
	return d.ext.subIDs
}

// stream returns the retained stream an entry stands for, or nil.
func (d *delivery) stream() *retainedStream {
	if d.ext == nil {
		return nil
	}
	return d.ext.stream
}

// hole reports whether a queue slot is empty.
func (d *delivery) hole() bool { return d.msg == nil && d.ext == nil }
