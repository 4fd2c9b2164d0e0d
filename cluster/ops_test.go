package cluster

// Tests of operating a cluster: one node, duplicate names, mixed wire
// versions, route TLS.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// startNode starts one node with o (Name, LeaseTTL and Logger defaulted)
// and returns it, not waiting for it to be ready; it is shut down when
// the test ends.
func startNode(t testing.TB, o Options) *testNode {
	t.Helper()
	if o.Name == "" {
		o.Name = testClusterName
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 3 * time.Second
	}
	if o.Logger == nil {
		o.Logger = testLogger(t, o.Node)
	}
	srv, err := tern.New(&tern.Options{SysInterval: -1, Logger: o.Logger})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := New(srv, o)
	if err != nil {
		t.Fatal(err)
	}
	srv.AddHook(cl)
	return &testNode{Server: wrap(t, srv), cl: cl}
}

// A node with no other node in its peers is a cluster of one: it becomes
// ready, with one copy of the state and no route listener. Restarted with
// a peer, it forms a cluster with it, and its retained message and
// session registry are imported into the cluster's state.
func TestSingleNode(t *testing.T) {
	dir := t.TempDir()
	addrs := freeAddrs(t, 2)
	n1 := startNode(t, Options{Node: "n1", Listen: addrs[0], DataDir: filepath.Join(dir, "n1")})
	waitReady(t, n1.cl)
	if st := n1.cl.Status(); !n1.cl.Single() || st.Replicas != 1 || st.Routes != "" || st.State != "ready" {
		t.Fatalf("status %+v", st)
	}
	pub := n1.Dial(t, packets.V5)
	pub.MustConnect("pub")
	pub.Send(&packets.Publish{Topic: "r/1", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("kept")})
	if ack, ok := pub.Recv().(*packets.Puback); !ok || ack.ReasonCode >= 0x80 {
		t.Fatalf("PUBACK %+v", ack)
	}
	shutdown(n1.Server.Server)

	var nodes [2]*testNode
	for i, name := range []string{"n1", "n2"} {
		nodes[i] = startNode(t, Options{Node: name, Listen: addrs[i], Peers: addrs, DataDir: filepath.Join(dir, name)})
	}
	for _, nd := range nodes {
		waitReady(t, nd.cl)
	}
	if nodes[0].cl.Single() || nodes[0].cl.Status().Replicas != 2 {
		t.Fatalf("status %+v", nodes[0].cl.Status())
	}
	// The single node's state is imported, its directory renamed.
	terntest.Eventually(t, "the retained message on n2", func() bool {
		m, ok := nodes[1].RetainedMessage("r/1")
		return ok && string(m.Payload) == "kept"
	})
	e, err := nodes[1].cl.kvSess.Get(context.Background(), sessionKey("pub"))
	if err != nil {
		t.Fatalf("the registry entry of the single node's client: %v", err)
	}
	if owner, _ := parseOwner(e.Value()); owner != "n1" {
		t.Fatalf("registry entry %q", e.Value())
	}
	if _, err := os.Stat(filepath.Join(dir, "n1", "single")); !os.IsNotExist(err) {
		t.Fatalf("single/ not renamed: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "n1", "single.imported-*")); len(m) != 1 {
		t.Fatalf("imported directory: %v", m)
	}
}

// A node whose heartbeats give another wire version is refused: the others
// list it as incompatible, do not route to it and do not count it alive;
// it, seeing no compatible majority, fences itself.
func TestWireVersionMismatch(t *testing.T) {
	var logs syncBuffer
	nodes, err := tryStartCluster(t, 3, func(i int, o *Options) {
		if i == 2 {
			o.wire = protoVersion + 1
		}
		if i == 0 {
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		}
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes[:2] {
		waitReady(t, nd.cl)
	}
	terntest.Eventually(t, "n3 listed as incompatible", func() bool {
		for _, n := range nodes[0].cl.Status().Nodes {
			if n.Name == "n3" {
				return n.Incompatible && !n.Alive && n.Wire == protoVersion+1
			}
		}
		return false
	})
	if nodes[0].cl.nodes.remote("n3").Reachable() {
		t.Fatal("n3 reachable")
	}
	// The status changes just before the refusal is logged.
	terntest.Eventually(t, "a log of the refusal", func() bool { return strings.Contains(logs.String(), "another wire version") })
	terntest.Eventually(t, "n3 fenced", func() bool { return nodes[2].cl.Fenced() })
	// n1 and n2, a majority of the three members, serve (either may have
	// been fenced for a moment before it heard the other).
	terntest.Eventually(t, "n1 and n2 ready", func() bool {
		return nodes[0].cl.Ready() && nodes[1].cl.Ready() && nodes[0].cl.nodes.liveCount() == 2 &&
			nodes[1].cl.nodes.liveCount() == 2
	})
	if nodes[0].cl.nodes.remote("n3").Reachable() {
		t.Fatal("n3 reachable")
	}
}

// A node started under the name of a live node is refused: it does not
// join (state refused, with the reason, logged once) and the cluster keeps
// the first; once the first has left, the name is free and the refusal is
// lifted.
func TestDuplicateNodeName(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	var logs syncBuffer
	peers := []string{nodes[0].cl.opts.Listen, nodes[1].cl.opts.Listen, freeAddrs(t, 1)[0]}
	dup := startNode(t, Options{Node: "n1", Listen: peers[2], Peers: peers, Replicas: 2, DataDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	terntest.Eventually(t, "the second n1 refused", func() bool { return dup.cl.Status().State == "refused" })
	if st := dup.cl.Status(); dup.cl.Ready() || !strings.Contains(st.Reason, `node name "n1" is held by another live process`) {
		t.Fatalf("status %+v", st)
	}
	c := dup.Dial(t, packets.V5)
	if ack := c.Connect(&packets.Connect{ProtocolVersion: packets.V5, ClientID: "c", CleanStart: true}); ack.ReasonCode != packets.ServerUnavailable {
		t.Fatalf("CONNACK %+v", ack)
	}
	for _, nd := range nodes {
		if !nd.cl.Ready() || nd.cl.nodes.liveCount() != 2 {
			t.Fatalf("%s: %+v", nd.cl.Node(), nd.cl.Status())
		}
	}
	// The cluster's replicated state still works beside the refused node.
	pub := nodes[0].Dial(t, packets.V5)
	pub.MustConnect("pub")
	pub.Send(&packets.Publish{Topic: "r/d", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("kept")})
	pub.Recv()
	terntest.Eventually(t, "the retained message on n2", func() bool {
		_, ok := nodes[1].RetainedMessage("r/d")
		return ok
	})
	// Asked again (every LeaseTTL/6) and still refused: logged once.
	waitRefusals(t, dup.cl, 3)
	if n := strings.Count(logs.String(), "node refused"); n != 1 {
		t.Fatalf("refusal logged %d times:\n%s", n, logs.String())
	}
	// The first n1 leaves: the name is free, the refusal lifted (joining
	// then waits for JetStream, which takes seconds with a peer replaced).
	shutdown(nodes[0].Server.Server)
	terntest.Eventually(t, "the refusal lifted", func() bool { return dup.cl.refused.Load() == nil })
	if !strings.Contains(logs.String(), "the node name is free again") {
		t.Fatalf("no log of the lifted refusal:\n%s", logs.String())
	}
}

// waitRefusals waits until cl's name was found held n times.
func waitRefusals(t testing.TB, cl *Cluster, n int64) {
	t.Helper()
	terntest.Eventually(t, fmt.Sprintf("%d refusals", n), func() bool { return cl.refusals.Load() >= n })
}

// A replica is caught up (CaughtUp, /readyz) once it was seen current
// with its leader, another node, heard, or is the leader: not merely
// because no leader is heard, as just after a partition heals. From
// then on it is behind once it has not been current for catchUpAfter
// while that leader is heard: not while the group elects a leader after
// its leader's node died (every survivor would leave the rotation at
// once), and not for a moment behind under a write load. A fence
// (reset) starts over.
func TestCatchUpWatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const ms, after = time.Millisecond, catchUpAfter
	type look struct {
		at                   time.Duration
		self, heard, current bool
		behind               bool
		reset                bool // before the look
	}
	for _, tc := range []struct {
		name  string
		looks []look
	}{
		{"current", []look{{at: 0, heard: true, current: true}, {at: time.Second, heard: true, current: true}, {at: 3 * time.Second, heard: true, current: true}}},
		{"the leader", []look{{at: 0, self: true}, {at: 5 * time.Second, self: true}}},
		{"never seen current", []look{{at: 0, heard: true, behind: true}, {at: 500 * ms, heard: true, behind: true}, {at: 750 * ms, heard: true, current: true}}},
		{"no leader heard yet", []look{{at: 0, behind: true}, {at: 2 * time.Second, behind: true}, {at: 2250 * ms, heard: true, behind: true}, {at: 2500 * ms, heard: true, current: true}}},
		{"falls behind", []look{{at: 0, heard: true, current: true}, {at: 250 * ms, heard: true}, {at: after - 250*ms, heard: true}, {at: after, heard: true, behind: true},
			{at: after + 250*ms, heard: true, current: true}, {at: after + 500*ms, heard: true}}},
		{"a moment behind, often", []look{{at: 0, heard: true, current: true}, {at: 250 * ms, heard: true}, {at: 500 * ms, heard: true, current: true}, {at: 750 * ms, heard: true},
			{at: after, heard: true}, {at: after + 250*ms, heard: true, current: true}}},
		{"leader gone, election", []look{{at: 0, heard: true, current: true}, {at: time.Second}, {at: 5 * time.Second},
			{at: 5*time.Second + after - 250*ms, heard: true}, {at: 5*time.Second + after, heard: true, behind: true}}},
		{"fenced, then healed", []look{{at: 0, heard: true, current: true}, {at: 5 * time.Second, reset: true, behind: true},
			{at: 5250 * ms, heard: true, behind: true}, {at: 5500 * ms, heard: true, current: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := catchUpWatch{replicas: map[string]*replicaSeen{}}
			for _, l := range tc.looks {
				if l.reset {
					w.reset()
				}
				why := w.sample(t0.Add(l.at), replicaView{stream: "KV_tern_subs", leader: "n1", self: l.self, heard: l.heard, current: l.current})
				if (why != "") != l.behind {
					t.Fatalf("at %v (%+v): behind %q, want behind %v", l.at, l, why, l.behind)
				}
				if why != "" && !strings.Contains(why, "KV_tern_subs") {
					t.Fatalf("%q does not name the stream", why)
				}
			}
		})
	}

	peers := []*server.PeerInfo{{Name: "n1", Current: true}, {Name: "n3", Current: false}}
	for _, tc := range []struct {
		leader string
		want   bool
	}{{"n1", true}, {"", false}, {"n2", false}, {"n3", false}, {"n5", false}} {
		if got := leaderHeard(tc.leader, "n2", peers); got != tc.want {
			t.Errorf("leaderHeard(%q) by n2 = %v, want %v", tc.leader, got, tc.want)
		}
	}
}

// The replicas CaughtUp watches are the ones nats-server holds on the
// node: JetStream's metadata and every stream of the cluster (three nodes
// hold a replica of each), each led by exactly one node that the others
// hear; once every node has seen them in step, none is behind.
func TestReplicaViews(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	leaders := map[string]map[string]bool{} // stream -> nodes that lead it
	terntest.Eventually(t, "every node's replicas in step, each stream led by one node", func() bool {
		clear(leaders)
		for _, n := range nodes {
			if n.cl.CaughtUp() != nil {
				return false
			}
			views, err := n.cl.replicaViews()
			if err != nil || len(views) != 1+len(streamNames) || views[0].stream != "" {
				return false
			}
			for _, v := range views {
				if v.leader == "" || !v.self && !(v.heard && v.current) {
					return false
				}
				if leaders[v.stream] == nil {
					leaders[v.stream] = map[string]bool{}
				}
				leaders[v.stream][v.leader] = true
				if v.self != (v.leader == n.cl.Node()) {
					return false
				}
			}
		}
		for _, l := range leaders {
			if len(l) != 1 {
				return false
			}
		}
		return true
	})
	for _, name := range append([]string{""}, streamNames...) {
		if len(leaders[name]) != 1 {
			t.Errorf("stream %q: leaders %v", name, leaders[name])
		}
	}
}
