package tern

import (
	"fmt"
	"testing"

	"github.com/ternmq/tern/topics"
)

// Routing a message to its subscribers allocates nothing per message or
// per subscriber (the queues' growth, amortized, aside): the guard against
// the hot path growing allocations unnoticed, as packets' TestHotPathAllocs
// is for the codec.
func TestRouteAllocs(t *testing.T) {
	s, err := New(&Options{SysInterval: -1, MaxQueuedMessages: -1, MaxQueuedBytes: -1, MaxMessageMemory: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		ss := newSession(s, fmt.Sprint("sub", i))
		ss.expiry = 3600 // offline and persistent: deliveries are queued
		s.sessions.put(ss)
		s.index.Subscribe(topics.Subscription{ClientID: ss.id, Filter: "a/+", QoS: 1, Target: ss})
	}
	for _, qos := range []byte{0, 1} {
		m := &Message{Topic: "a/b", Payload: []byte("payload"), QoS: qos}
		for range 3 { // warm the topic cache
			s.route(m, false)
		}
		allocs := testing.AllocsPerRun(2000, func() { s.route(m, false) })
		if allocs > 0.1 {
			t.Errorf("QoS %d: route to 10 sessions allocates %.2f times per message, want none", qos, allocs)
		}
	}
}

// BenchmarkRoute measures routing one message to ten offline persistent
// sessions (QoS 0 and 1) and an in-process publish to one handler: the
// paths the publish refactoring touches.
func BenchmarkRoute(b *testing.B) {
	s, err := New(&Options{SysInterval: -1, MaxQueuedMessages: -1, MaxQueuedBytes: -1, MaxMessageMemory: -1})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10 {
		ss := newSession(s, fmt.Sprint("sub", i))
		ss.expiry = 3600
		s.sessions.put(ss)
		s.index.Subscribe(topics.Subscription{ClientID: ss.id, Filter: "a/+", QoS: 1, Target: ss})
	}
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("sessions/qos%d", qos), func(b *testing.B) {
			m := &Message{Topic: "a/b", Payload: []byte("payload"), QoS: qos}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s.route(m, false)
				if i++; i%4096 == 0 { // keep the queues from growing without end
					s.sessions.each(func(ss *session) { ss.mu.Lock(); ss.q.drain(); ss.mu.Unlock() })
				}
			}
		})
	}
	b.Run("inprocess", func(b *testing.B) {
		var n int
		if err := s.Subscribe("inline/t", 1, func(*Message) { n++ }); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			s.Publish("inline/t", []byte("payload"), false, 0)
		}
	})
}
