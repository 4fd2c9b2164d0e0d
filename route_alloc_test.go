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
