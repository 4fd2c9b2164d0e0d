package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// mesh starts brokers named after the keys of links, each with a bridge
// "# both 1" (v5) to every broker it lists, and a subscriber to "t/#" on
// each. Brokers are started in the order given so that a bridge's remote
// exists.
func mesh(t *testing.T, order []string, links map[string][]string, maxHops int) (map[string]*terntest.Server, map[string]*testClient) {
	t.Helper()
	srvs := make(map[string]*terntest.Server)
	subs := make(map[string]*testClient)
	var managers []*Manager
	// Start every broker without bridges first, so that addresses are
	// known, then add bridges with Update.
	for _, n := range order {
		s, m := broker(t, n, nil)
		srvs[n] = s
		managers = append(managers, m)
	}
	for i, n := range order {
		var cfgs []Config
		for _, to := range links[n] {
			cfgs = append(cfgs, fast(Config{Name: n + "-" + to, Addresses: []string{srvs[to].Addr}, MaxHops: maxHops,
				Notifications: new(false), Topics: []Topic{{Pattern: "#", Direction: Both, QoS: 1}}}))
		}
		if err := managers[i].Update(cfgs); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range managers {
		waitConnected(t, m)
	}
	for _, n := range order {
		subs[n] = dialClient(t, srvs[n].Addr, "sub-"+n, packets.V5, true, 0)
		subs[n].subscribe("t/#", 1)
	}
	time.Sleep(200 * time.Millisecond)
	return srvs, subs
}

// expectCopies publishes one message on each broker in turn and checks
// that every subscriber gets want copies of it, then nothing more.
func expectCopies(t *testing.T, order []string, srvs map[string]*terntest.Server, subs map[string]*testClient, want map[string]int) {
	t.Helper()
	expectCopiesFrom(t, order, order, srvs, subs, want)
}

// expectCopiesFrom is expectCopies for publishes on the brokers from only.
func expectCopiesFrom(t *testing.T, from, order []string, srvs map[string]*terntest.Server, subs map[string]*testClient, want map[string]int) {
	t.Helper()
	for _, from := range from {
		pub := dialClient(t, srvs[from].Addr, "pub-"+from, packets.V5, true, 0)
		pub.publish("t/"+from, "from "+from, 1, false)
		for _, n := range order {
			got := subs[n].expect(want[n])
			for _, p := range got {
				if p.Topic != "t/"+from {
					t.Fatalf("%s got %s, want t/%s", n, p.Topic, from)
				}
			}
		}
		for _, n := range order {
			subs[n].expectNone(300 * time.Millisecond)
		}
		pub.c.close()
	}
}

// Two brokers each bridged to the other ("# both 1" configured on A and on
// B, v5): a message crosses once and is not sent back. Without care it
// would reach the other side twice, exported by one bridge and imported by
// the other; the exporting bridge leaves it to the importing one (which
// announced its pull in its CONNECT, see peers.go), so one copy arrives,
// and A and B receive no more than 3 messages between them for a publish.
func TestBothSidesConfigured(t *testing.T) {
	t.Parallel()
	order := []string{"A", "B"}
	srvs, subs := mesh(t, order, map[string][]string{"A": {"B"}, "B": {"A"}}, 0)
	before := srvs["A"].Stats().MessagesReceived + srvs["B"].Stats().MessagesReceived
	expectCopiesFrom(t, order[:1], order, srvs, subs, map[string]int{"A": 1, "B": 1})
	after := srvs["A"].Stats().MessagesReceived + srvs["B"].Stats().MessagesReceived
	if after-before > 3 {
		t.Errorf("A and B received %d messages for one publish", after-before)
	}
	expectCopiesFrom(t, order[1:], order, srvs, subs, map[string]int{"A": 1, "B": 1})
}

// A chain A - B - C (bridges A->B and B->C, "# both 1"): one copy
// everywhere, whichever broker the message comes from.
func TestChainOneCopy(t *testing.T) {
	t.Parallel()
	order := []string{"C", "B", "A"}
	srvs, subs := mesh(t, order, map[string][]string{"A": {"B"}, "B": {"C"}}, 0)
	expectCopies(t, order, srvs, subs, map[string]int{"A": 1, "B": 1, "C": 1})
}

// A triangle, every broker linked to every other (bridges A->B, B->C,
// C->A, "# both 1", v5): one copy at each subscriber for a message
// published on any of them. A message reaches a broker by the direct link
// from where it was published; the path through the third broker is
// refused (a direct link from the origin exists: see peers.go). With
// max_hops 1 the longer path is never taken at all.
func TestTriangleOneCopy(t *testing.T) {
	t.Parallel()
	for _, hops := range []int{0, 1} {
		t.Run(fmt.Sprintf("max_hops %d", hops), func(t *testing.T) {
			order := []string{"A", "B", "C"}
			srvs, subs := mesh(t, order, map[string][]string{"A": {"B"}, "B": {"C"}, "C": {"A"}}, hops)
			expectCopies(t, order, srvs, subs, map[string]int{"A": 1, "B": 1, "C": 1})
		})
	}
}

// A ring of four (A-B, B-C, C-D, D-A, no diagonals): no loop, whatever the
// hop limit allows; the broker opposite the publisher gets the message by
// both ways round the ring (the hop list stops loops, not the two paths of
// a ring), every other one once.
func TestRingNoLoop(t *testing.T) {
	t.Parallel()
	order := []string{"A", "B", "C", "D"}
	srvs, subs := mesh(t, order, map[string][]string{"A": {"B"}, "B": {"C"}, "C": {"D"}, "D": {"A"}}, 0)
	pub := dialClient(t, srvs["A"].Addr, "pub", packets.V5, true, 0)
	pub.publish("t/x", "x", 1, false)
	want := map[string]int{"A": 1, "B": 1, "C": 2, "D": 1}
	for _, n := range order {
		subs[n].expect(want[n])
	}
	// No loop: the brokers' received counts settle (the refused longer
	// paths take a moment).
	total := func() (n int64) {
		for _, name := range order {
			n += srvs[name].Stats().MessagesReceived
		}
		return n
	}
	prev := total()
	for deadline := time.Now().Add(10 * time.Second); ; {
		time.Sleep(300 * time.Millisecond)
		cur := total()
		if cur == prev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("messages still flowing after 10 s: %d received", cur)
		}
		prev = cur
	}
	for _, n := range order {
		subs[n].expectNone(10 * time.Millisecond)
	}
}
