package cluster

import (
	"strconv"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
)

// A node leaves a QoS 2 message another node sends again after its
// restart (Delivery.Again) when it took that message or a later one of the
// same publisher from that node, and takes it otherwise.
func TestLatestTaken(t *testing.T) {
	msg := func(origin string, at int64, qos byte) *tern.Message {
		return tern.MessageFromRecord(&storage.Message{Topic: "t", QoS: qos, Origin: origin, Created: at})
	}
	type step struct {
		from   string
		m      *tern.Message
		d      tern.Delivery
		copyOf bool
	}
	again := tern.Delivery{QoS: 2, Again: true}
	for _, c := range []struct {
		name  string
		steps []step
	}{
		{"taken, then sent again", []step{
			{"n1", msg("p", 10, 2), tern.Delivery{QoS: 2}, false},
			{"n1", msg("p", 10, 2), again, true},
		}},
		{"a later one taken: this one came before it", []step{
			{"n1", msg("p", 10, 2), tern.Delivery{QoS: 2}, false},
			{"n1", msg("p", 20, 2), tern.Delivery{QoS: 2}, false},
			{"n1", msg("p", 15, 2), again, true},
		}},
		{"newer than all taken: never came", []step{
			{"n1", msg("p", 10, 2), tern.Delivery{QoS: 2}, false},
			{"n1", msg("p", 11, 2), again, false},
			{"n1", msg("p", 11, 2), again, true}, // and now it did
		}},
		{"an older parked one does not lower the latest", []step{
			{"n1", msg("p", 20, 2), tern.Delivery{QoS: 2}, false},
			{"n1", msg("p", 5, 2), tern.Delivery{QoS: 2}, false},
			{"n1", msg("p", 19, 2), again, true},
		}},
		{"another node's clock, another publisher", []step{
			{"n1", msg("p", 20, 2), tern.Delivery{QoS: 2}, false},
			{"n2", msg("p", 10, 2), again, false},
			{"n1", msg("q", 10, 2), again, false},
		}},
		{"not checked: unknown node, QoS 1, shared, by name", []step{
			{"n1", msg("p", 20, 2), tern.Delivery{QoS: 2}, false},
			{"", msg("p", 10, 2), again, false},
			{"n1", msg("p", 10, 1), tern.Delivery{QoS: 1, Again: true}, false},
			{"n1", msg("p", 10, 2), tern.Delivery{QoS: 2, Again: true, Group: "g", Filter: "t"}, false},
			{"n1", msg("p", 10, 2), tern.Delivery{QoS: 2, Again: true, ClientID: "s"}, false},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var l latestTaken
			for i, s := range c.steps {
				if got := l.copyOf(s.from, s.m, s.d); got != s.copyOf {
					t.Fatalf("step %d: copyOf = %v, want %v", i, got, s.copyOf)
				}
			}
		})
	}
}

// The table turns over: a publisher is remembered for at least againKeep
// others, then forgotten (a message sent again is then taken: at worst
// twice, never lost).
func TestLatestTakenBounded(t *testing.T) {
	var l latestTaken
	at := func(origin string) *tern.Message {
		return tern.MessageFromRecord(&storage.Message{Topic: "t", QoS: 2, Origin: origin, Created: 10})
	}
	d := tern.Delivery{QoS: 2}
	l.copyOf("n1", at("first"), d)
	for i := range againKeep - 1 {
		l.copyOf("n1", at("p"+strconv.Itoa(i)), d)
	}
	again := tern.Delivery{QoS: 2, Again: true}
	if !l.copyOf("n1", at("first"), again) {
		t.Fatal("forgotten before againKeep publishers")
	}
	for i := range 2 * againKeep {
		l.copyOf("n1", at("q"+strconv.Itoa(i)), d)
	}
	if l.copyOf("n1", at("first"), again) {
		t.Fatal("remembered after two generations")
	}
	if n := len(l.cur) + len(l.prev); n > 2*againKeep {
		t.Fatalf("%d entries", n)
	}
}

// Through the wire: a node that took a QoS 2 message skips it when the
// publisher's node sends it again (its restart, section 4.3.3: a receiver
// delivers a QoS 2 message once), and takes one sent again that it never
// had.
func TestAgainSkippedAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	sub := subscriber(t, nodes[1], "sub", "ag/#", 2)
	created := time.Now().Add(-time.Second).UnixNano()
	m := tern.MessageFromRecord(&storage.Message{Topic: "ag/1", Payload: []byte("first"), QoS: 2, Origin: "pub", Created: created})
	r := nodes[0].cl.nodes.remote("n2")
	send := func(m *tern.Message, d tern.Delivery) {
		t.Helper()
		done := make(chan error, 1)
		a := tern.NewAck(func(err error) { done <- err })
		r.Forward(m, d, a)
		a.Release(nil)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	receive := func(want string) {
		t.Helper()
		p := recvPublish(t, sub)
		if string(p.Payload) != want {
			t.Fatalf("got %q, want %q", p.Payload, want)
		}
		sub.Send(&packets.Pubrec{PacketID: p.PacketID})
		if _, ok := sub.Recv().(*packets.Pubrel); !ok {
			t.Fatal("no PUBREL")
		}
		sub.Send(&packets.Pubcomp{PacketID: p.PacketID})
	}
	send(m, tern.Delivery{Route: "n2", QoS: 2})
	receive("first")
	send(m, tern.Delivery{Route: "n2", QoS: 2, Again: true})
	if got := nodes[1].cl.fwd.counters().AgainSkipped; got != 1 {
		t.Fatalf("AgainSkipped %d, want 1", got)
	}
	never := tern.MessageFromRecord(&storage.Message{Topic: "ag/1", Payload: []byte("never came"), QoS: 2, Origin: "pub", Created: created + 1})
	send(never, tern.Delivery{Route: "n2", QoS: 2, Again: true})
	receive("never came")
	if pk, err := sub.TryRecv(300 * time.Millisecond); err == nil { // bounded wait for a copy that must not come
		t.Fatalf("a second copy: %+v", pk)
	}
}
