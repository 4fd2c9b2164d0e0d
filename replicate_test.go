package tern_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/terntest"
)

// replicatorHook records SubscriptionsChanged and SessionEnded calls; the
// test calls done.
type replicatorHook struct {
	changed chan replicated
	ended   chan *tern.Client
}

type replicated struct {
	client string
	subs   []storage.Subscription
	done   func(error)
}

func (h *replicatorHook) ID() string { return "replicator" }
func (h *replicatorHook) SubscriptionsChanged(c *tern.Client, subs []storage.Subscription, done func(error)) {
	h.changed <- replicated{c.ID(), subs, done}
}
func (h *replicatorHook) SessionEnded(c *tern.Client) { h.ended <- c }

// A SessionReplicator is given the whole subscription list of a persistent
// session after each SUBSCRIBE and UNSUBSCRIBE, and the SUBACK / UNSUBACK
// wait for its done; sessions that end with their connection give no
// list. It is told of each session that ends, with the client of the last
// connection.
func TestSessionReplicator(t *testing.T) {
	h := &replicatorHook{changed: make(chan replicated, 4), ended: make(chan *tern.Client, 4)}
	srv := terntest.NewServer(t, nil, h)
	c := srv.Dial(t, packets.V5)
	c.Connect(&packets.Connect{ClientID: "keep", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(60)}})
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "a/#", QoS: 1}, {Filter: "$share/g/b", QoS: 0}}})
	r := <-h.changed
	filters := func(subs []storage.Subscription) []string {
		var out []string
		for _, s := range subs {
			out = append(out, s.Group+"|"+s.Filter)
		}
		slices.Sort(out)
		return out
	}
	if got := filters(r.subs); r.client != "keep" || !slices.Equal(got, []string{"g|b", "|a/#"}) {
		t.Fatalf("SubscriptionsChanged %s %v", r.client, got)
	}
	if pk, err := c.TryRecv(200 * time.Millisecond); err == nil {
		t.Fatalf("%T before done", pk)
	}
	r.done(nil)
	if _, ok := c.Recv().(*packets.Suback); !ok {
		t.Fatal("no SUBACK after done")
	}
	c.Send(&packets.Unsubscribe{PacketID: 2, Filters: []string{"a/#"}})
	r = <-h.changed
	if got := filters(r.subs); !slices.Equal(got, []string{"g|b"}) {
		t.Fatalf("after UNSUBSCRIBE %v", got)
	}
	if pk, err := c.TryRecv(200 * time.Millisecond); err == nil {
		t.Fatalf("%T before done", pk)
	}
	r.done(nil)
	if _, ok := c.Recv().(*packets.Unsuback); !ok {
		t.Fatal("no UNSUBACK after done")
	}

	// A session that ends with its connection: no list, and its end told.
	c2 := srv.Dial(t, packets.V5)
	c2.MustConnect("brief")
	c2.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "x", QoS: 1}}})
	if _, ok := c2.Recv().(*packets.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	c2.Send(&packets.Disconnect{})
	c2.ExpectClosed()
	if e := <-h.ended; e.ID() != "brief" {
		t.Fatalf("SessionEnded %s", e.ID())
	}
	select {
	case r := <-h.changed:
		t.Fatalf("SubscriptionsChanged for %s", r.client)
	default:
	}
	// DeleteSession ends the persistent one.
	c.Send(&packets.Disconnect{})
	c.ExpectClosed()
	terntest.Eventually(t, "offline", func() bool { _, ok := srv.ClientInfo("keep"); return !ok })
	srv.DeleteSession("keep")
	if e := <-h.ended; e.ID() != "keep" {
		t.Fatalf("SessionEnded %s", e.ID())
	}
}

// refusingReplicator refuses the filter "no" as a FilterObserver.
type refusingReplicator struct{ replicatorHook }

func (h *refusingReplicator) FilterAdded(_, filter string, done func(error)) {
	if filter == "no" {
		done(errors.New("refused"))
		return
	}
	done(nil)
}
func (h *refusingReplicator) FilterRemoved(_, _ string) {}

// A subscription a FilterObserver refuses is left out of the list again,
// before the SUBACK.
func TestSessionReplicatorRefusedFilter(t *testing.T) {
	h := &refusingReplicator{replicatorHook{changed: make(chan replicated, 4), ended: make(chan *tern.Client, 4)}}
	srv := terntest.NewServer(t, nil, h)
	c := srv.Dial(t, packets.V5)
	c.Connect(&packets.Connect{ClientID: "r", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(60)}})
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "yes", QoS: 1}, {Filter: "no", QoS: 1}}})
	for _, want := range []int{2, 1} {
		r := <-h.changed
		if len(r.subs) != want {
			t.Fatalf("list of %d, want %d: %+v", len(r.subs), want, r.subs)
		}
		r.done(nil)
	}
	ack, ok := c.Recv().(*packets.Suback)
	if !ok || ack.ReasonCodes[0] != 1 || ack.ReasonCodes[1] != packets.UnspecifiedError {
		t.Fatalf("SUBACK %+v", ack)
	}
}
