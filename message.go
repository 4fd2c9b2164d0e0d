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

	sys    bool        // a $SYS message: never stored
	stored atomic.Bool // it has been put in the store (set under the persister's lock)

	// Guarded by the persister's lock.
	id   uint64 // storage id, 0 until first stored
	refs int32  // stored references: deliveries to persistent sessions, retained
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

// delivery is one message on its way to one session.
type delivery struct {
	msg    *Message
	qos    byte   // the QoS it is delivered at
	retain bool   // the RETAIN flag it is sent with
	subID  uint32 // the subscription identifier, when one
	subIDs []uint32
	share  *topics.SharedGroup // the shared group it came through, for redelivery
	pseq   uint64              // key of its storage record in the session; 0 = not stored
}

// queue is a FIFO ring of deliveries. Removing a QoS 0 delivery from the
// middle (to make room when the session's queue is full) leaves a hole
// that the head skips later, and a scan position remembers how far the
// queue is known to hold no QoS 0 delivery, so making room costs amortized
// O(1) instead of a scan and a shift of up to the whole queue.
type queue struct {
	buf  []delivery // holes have msg == nil
	head int
	n    int // slots in use from head, holes included
	live int // deliveries in the queue
	scan int // slots from head known to hold no QoS 0 delivery
}

func (q *queue) len() int { return q.live }

func (q *queue) push(d delivery) {
	if q.n == len(q.buf) {
		nb := make([]delivery, max(16, 2*q.live))
		k := 0
		for i := 0; i < q.n; i++ { // compact: holes go
			if x := q.buf[(q.head+i)%len(q.buf)]; x.msg != nil {
				nb[k] = x
				k++
			}
		}
		q.buf, q.head, q.n, q.scan = nb, 0, k, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = d
	q.n++
	q.live++
}

// skipHoles drops holes at the head.
func (q *queue) skipHoles() {
	for q.n > 0 && q.buf[q.head].msg == nil {
		q.head = (q.head + 1) % len(q.buf)
		q.n--
		q.scan = max(q.scan-1, 0)
	}
}

// peek returns the oldest delivery; the queue must not be empty.
func (q *queue) peek() *delivery {
	q.skipHoles()
	return &q.buf[q.head]
}

// pop removes and returns the oldest delivery; the queue must not be empty.
func (q *queue) pop() delivery {
	q.skipHoles()
	d := q.buf[q.head]
	q.buf[q.head] = delivery{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	q.live--
	q.scan = max(q.scan-1, 0)
	q.skipHoles()
	if q.live == 0 {
		q.head, q.n, q.scan = 0, 0, 0
		if len(q.buf) > 1024 { // give back memory after a burst
			q.buf = nil
		}
	}
	return d
}

// removeOldestQoS0 removes the oldest QoS 0 delivery and reports whether
// there was one.
func (q *queue) removeOldestQoS0() (delivery, bool) {
	for i := q.scan; i < q.n; i++ {
		j := (q.head + i) % len(q.buf)
		if x := &q.buf[j]; x.msg != nil && x.qos == 0 {
			d := *x
			*x = delivery{}
			q.live--
			q.scan = i + 1
			q.skipHoles()
			return d, true
		}
	}
	q.scan = q.n
	return delivery{}, false
}

// drain removes and returns every delivery, oldest first.
func (q *queue) drain() []delivery {
	out := make([]delivery, 0, q.live)
	for q.live > 0 {
		out = append(out, q.pop())
	}
	return out
}
