package cluster

// In-process tests: several Tern servers in this process, each with its
// embedded nats-server, routes on 127.0.0.1, clients over TCP.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/memory"
	"github.com/ternmq/tern/terntest"
)

// testNode is one node of an in-process cluster.
type testNode struct {
	*terntest.Server
	cl *Cluster
}

// trials is how many trials a randomized test runs: def, or
// TERN_CLUSTER_TRIALS (the acceptance runs use 1,000).
func trials(def int) int {
	if n, err := strconv.Atoi(os.Getenv("TERN_CLUSTER_TRIALS")); err == nil && n > 0 {
		return n
	}
	return def
}

// freeAddrs returns n loopback addresses nothing listens on now.
func freeAddrs(t testing.TB, n int) []string { return terntest.FreeAddrs(t, n) }

// testLogger logs to the test's output when TERN_CLUSTER_LOG is set.
func testLogger(t testing.TB, node string) *slog.Logger {
	if os.Getenv("TERN_CLUSTER_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// startCluster starts n nodes (n1, n2, ...) and waits until each is ready.
// A start that fails (a route port taken by another process between
// freeAddrs and the bind) is retried on fresh ports.
func startCluster(t testing.TB, n int, tweak func(i int, o *Options)) []*testNode {
	t.Helper()
	return startClusterWith(t, n, tweak, nil)
}

// startClusterWith is startCluster with the servers' options changed by
// srvTweak.
func startClusterWith(t testing.TB, n int, tweak func(i int, o *Options), srvTweak func(i int, o *tern.Options)) []*testNode {
	t.Helper()
	var nodes []*testNode
	for attempt := 1; ; attempt++ {
		var err error
		if nodes, err = tryStartCluster(t, n, tweak, srvTweak); err == nil {
			break
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("cluster start attempt %d: %v; retrying on fresh ports", attempt, err)
	}
	for _, nd := range nodes {
		waitReady(t, nd.cl)
	}
	// Every node sees every other alive.
	terntest.Eventually(t, "every node to see the others", func() bool {
		for _, nd := range nodes {
			if nd.cl.nodes.liveCount() != n {
				return false
			}
		}
		return true
	})
	return nodes
}

// tryStartCluster starts n nodes on fresh route ports; on any error it
// stops the nodes it started and returns the error.
func tryStartCluster(t testing.TB, n int, tweak func(i int, o *Options), srvTweak func(i int, o *tern.Options)) ([]*testNode, error) {
	addrs := freeAddrs(t, n)
	nodes := make([]*testNode, n)
	errs := make([]error, n)
	dir := t.TempDir()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("n%d", i+1)
			so := &tern.Options{SysInterval: -1, Logger: testLogger(t, name)}
			if srvTweak != nil {
				srvTweak(i, so)
			}
			srv, err := tern.New(so)
			if err != nil {
				errs[i] = err
				return
			}
			o := Options{Name: testClusterName, Node: name, Listen: addrs[i], Peers: addrs, Replicas: min(n, 3),
				DataDir: filepath.Join(dir, name), LeaseTTL: 3 * time.Second, ForwardTimeout: time.Second,
				Logger: testLogger(t, name), DrainTime: 2 * time.Second}
			if tweak != nil {
				tweak(i, &o)
			}
			cl, err := New(srv, o)
			if err != nil {
				errs[i] = err
				return
			}
			srv.AddHook(cl)
			ts, err := serve(srv)
			if err != nil {
				errs[i] = err
				return
			}
			nodes[i] = &testNode{Server: ts, cl: cl}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, nd := range nodes {
			if nd != nil {
				shutdown(nd.Server.Server)
			}
		}
		return nil, err
	}
	for _, nd := range nodes {
		t.Cleanup(func() { shutdown(nd.Server.Server) })
	}
	return nodes, nil
}

// serve serves srv on a fresh loopback port.
func serve(srv *tern.Server) (*terntest.Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if err := srv.AddListener(listeners.NewTCPFromListener("tcp", ln)); err != nil {
		ln.Close()
		return nil, err
	}
	if err := srv.Serve(); err != nil {
		return nil, err
	}
	return &terntest.Server{Server: srv, Addr: ln.Addr().String()}, nil
}

func shutdown(srv *tern.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}

// wrap serves srv on a loopback port, closed when the test ends.
func wrap(t testing.TB, srv *tern.Server) *terntest.Server {
	t.Helper()
	ts, err := serve(srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(srv) })
	return ts
}

func waitReady(t testing.TB, cl *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.WaitReady(ctx); err != nil {
		t.Fatalf("node %s not ready: %v", cl.Node(), err)
	}
}

func subscribe(t testing.TB, c *terntest.Conn, filter string, qos byte) {
	t.Helper()
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: qos}}})
	ack, ok := c.Recv().(*packets.Suback)
	if !ok || ack.ReasonCodes[0] != packets.ReasonCode(qos) {
		t.Fatalf("SUBACK %+v", ack)
	}
}

// subscriber connects a clean session id to nd, subscribed to filter at
// qos.
//
// A node of a test cluster fences itself when a loaded machine delays the
// other nodes' heartbeats for seconds: a CONNECT refused as unavailable
// (0x9C, 0x88) is tried again, with a log line, until terntest.Timeout.
// These tests are not about fencing.
func subscriber(t testing.TB, nd *testNode, id, filter string, qos byte) *terntest.Conn {
	t.Helper()
	c := connectUnfenced(t, nd, &packets.Connect{ClientID: id, CleanStart: true, KeepAlive: 60})
	subscribe(t, c, filter, qos)
	return c
}

// connectUnfenced connects pk (MQTT 5) to nd, trying again while nd
// refuses it as unavailable (see subscriber).
func connectUnfenced(t testing.TB, nd *testNode, pk *packets.Connect) *terntest.Conn {
	t.Helper()
	deadline := time.Now().Add(terntest.Timeout)
	for {
		c := nd.Dial(t, packets.V5)
		ack := c.Connect(pk)
		switch {
		case ack.ReasonCode == packets.Success:
			return c
		case (ack.ReasonCode == packets.UseAnotherServer || ack.ReasonCode == packets.ServerUnavailable) && time.Now().Before(deadline):
			t.Logf("CONNECT of %s refused (%v): the node is fenced for now, trying again", pk.ClientID, ack.ReasonCode)
			c.Close()
			time.Sleep(100 * time.Millisecond) // the fence lifts with the next heartbeats: no event to wait on
		default:
			t.Fatalf("CONNECT of %s refused: %v", pk.ClientID, ack.ReasonCode)
		}
	}
}

// recvPublish reads packets until a PUBLISH, acknowledging QoS 1.
func recvPublish(t testing.TB, c *terntest.Conn) *packets.Publish {
	t.Helper()
	for {
		pk := c.Recv()
		if p, ok := pk.(*packets.Publish); ok {
			if p.QoS == 1 {
				c.Send(&packets.Puback{PacketID: p.PacketID})
			}
			return p
		}
	}
}

// Three nodes form a cluster; a QoS 0 and a QoS 1 message published on one
// node reach subscribers on the two others, and the QoS 1 PUBACK comes
// once the other nodes acknowledged it.
func TestCrossNodePublish(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	subs := make([]*terntest.Conn, 2)
	for i := range subs {
		subs[i] = nodes[i+1].Dial(t, packets.V5)
		subs[i].MustConnect(fmt.Sprintf("sub%d", i))
		subscribe(t, subs[i], "x/#", 1)
	}
	pub := nodes[0].Dial(t, packets.V5)
	pub.MustConnect("pub")
	pub.Send(&packets.Publish{Topic: "x/0", Payload: []byte("zero")})
	pub.Send(&packets.Publish{Topic: "x/1", QoS: 1, PacketID: 7, Payload: []byte("one")})
	if ack, ok := pub.Recv().(*packets.Puback); !ok || ack.PacketID != 7 || ack.ReasonCode != 0 {
		t.Fatalf("PUBACK %+v", ack)
	}
	for _, s := range subs {
		if p := recvPublish(t, s); string(p.Payload) != "zero" {
			t.Fatalf("got %q", p.Payload)
		}
		if p := recvPublish(t, s); string(p.Payload) != "one" || p.QoS != 1 {
			t.Fatalf("got %q QoS %d", p.Payload, p.QoS)
		}
	}
	if c := nodes[0].cl.fwd.counters(); c.Acked != 2 || c.Sent < 4 {
		t.Fatalf("counters %+v", c)
	}
}

// A publish on any node sent after the SUBACK on another is delivered:
// the SUBACK waits until every node has the route.
func TestRoutesConverge(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	pubs := make([]*terntest.Conn, 3)
	for i := range pubs {
		pubs[i] = nodes[i].Dial(t, packets.V311)
		pubs[i].MustConnect(fmt.Sprintf("pub%d", i))
	}
	sub := nodes[1].Dial(t, packets.V311)
	sub.MustConnect("sub")
	for i := range trials(100) {
		topic := fmt.Sprintf("conv/%d", i)
		sub.Send(&packets.Subscribe{PacketID: uint16(i%65535 + 1), Subscriptions: []packets.Subscription{{Filter: topic}}})
		if _, ok := sub.Recv().(*packets.Suback); !ok {
			t.Fatal("no SUBACK")
		}
		from := pubs[(i%2)*2] // nodes 1 and 3
		from.Send(&packets.Publish{Topic: topic, Payload: []byte("x")})
		if p := recvPublish(t, sub); p.Topic != topic {
			t.Fatalf("trial %d: got %q", i, p.Topic)
		}
	}
	// Unsubscribed: the route goes from the other nodes.
	sub.Send(&packets.Unsubscribe{PacketID: 1, Filters: []string{"conv/0"}})
	sub.Recv()
	terntest.Eventually(t, "the route to go", func() bool {
		n := 0
		nodes[0].RemoteRoutes("n2", func(_, f string) bool {
			if f == "conv/0" {
				n++
			}
			return true
		})
		return n == 0
	})
}

// Routes whose subscriber leaves before its SUBACK (its connection closed
// right after the SUBSCRIBE) do not stay on the other nodes: an addition
// is never sent after the removal of the same route.
func TestRoutesGoneWhenSubscriberLeavesEarly(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	for round := range 20 {
		c := nodes[1].Dial(t, packets.V311)
		c.MustConnect(fmt.Sprintf("early%d", round))
		s := &packets.Subscribe{PacketID: 1}
		for j := range 50 {
			s.Subscriptions = append(s.Subscriptions, packets.Subscription{Filter: fmt.Sprintf("early/%d/%d", round, j)})
		}
		c.Send(s)
		c.Close()
	}
	early := func(nd *testNode) (n int) {
		nd.RemoteRoutes("n2", func(_, f string) bool {
			if strings.HasPrefix(f, "early/") {
				n++
			}
			return true
		})
		return n
	}
	terntest.Eventually(t, "the early subscribers' filters to go from n2", func() bool {
		n := 0
		nodes[1].LocalFilters(func(_, f string) {
			if strings.HasPrefix(f, "early/") {
				n++
			}
		})
		return n == 0
	})
	// A SUBACK on n2 now comes after every earlier announcement of n2 was
	// applied by the others (one connection, in order).
	sync := nodes[1].Dial(t, packets.V311)
	sync.MustConnect("early-sync")
	subscribe(t, sync, "early-sync", 0)
	terntest.Eventually(t, "no route of a gone subscriber on the other nodes", func() bool {
		return early(nodes[0]) == 0 && early(nodes[2]) == 0
	})
}

// A shared subscription with members on two nodes: each message published
// on a third goes to exactly one member.
func TestSharedAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	var members []*terntest.Conn
	for i := 1; i <= 2; i++ {
		m := nodes[i].Dial(t, packets.V5)
		m.MustConnect(fmt.Sprintf("m%d", i))
		subscribe(t, m, "$share/g/work/+", 1)
		members = append(members, m)
	}
	// A plain subscriber beside a member: the messages forwarded for it
	// do not reach the member's group a second time (MQTT 5.0, 4.8.2: a
	// shared subscription's message goes to one of its sessions).
	plain := nodes[2].Dial(t, packets.V5)
	plain.MustConnect("plain")
	subscribe(t, plain, "work/#", 1)
	pub := nodes[0].Dial(t, packets.V5)
	pub.MustConnect("pub")
	const n = 20
	for i := range n {
		pub.Send(&packets.Publish{Topic: "work/a", QoS: 1, PacketID: uint16(i + 1), Payload: []byte{byte(i)}})
		pub.Recv()
	}
	got := map[byte]int{}
	counts := make([]int, 2)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				pk, err := m.TryRecv(300 * time.Millisecond)
				if err != nil {
					return
				}
				if p, ok := pk.(*packets.Publish); ok {
					m.Send(&packets.Puback{PacketID: p.PacketID})
					mu.Lock()
					got[p.Payload[0]]++
					counts[i]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(got) != n {
		t.Fatalf("%d distinct messages of %d delivered", len(got), n)
	}
	for k, v := range got {
		if v != 1 {
			t.Fatalf("message %d delivered %d times", k, v)
		}
	}
	if counts[0] == 0 || counts[1] == 0 {
		t.Fatalf("one member got nothing: %v", counts)
	}
	for i := range n {
		if p := recvPublish(t, plain); p.Payload[0] != byte(i) {
			t.Fatalf("plain subscriber got message %d, want %d", p.Payload[0], i)
		}
	}
}

// A retained message published on one node is served by the others, and
// deleted everywhere by an empty one.
func TestRetainedReplicated(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	pub := nodes[0].Dial(t, packets.V5)
	pub.MustConnect("pub")
	pub.Send(&packets.Publish{Topic: "r/a b/.c", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("kept")})
	pub.Recv()
	for _, nd := range nodes[1:] {
		terntest.Eventually(t, "the retained message on "+nd.cl.Node(), func() bool {
			m, ok := nd.RetainedMessage("r/a b/.c")
			return ok && string(m.Payload) == "kept"
		})
	}
	sub := nodes[2].Dial(t, packets.V5)
	sub.MustConnect("sub")
	subscribe(t, sub, "r/#", 1)
	if p := recvPublish(t, sub); !p.Retain || string(p.Payload) != "kept" {
		t.Fatalf("got %+v", p)
	}
	pub.Send(&packets.Publish{Topic: "r/a b/.c", QoS: 1, PacketID: 2, Retain: true})
	pub.Recv()
	terntest.Eventually(t, "the retained message gone", func() bool {
		_, ok := nodes[1].RetainedMessage("r/a b/.c")
		return !ok
	})
}

// A client that subscribes on one node after the PUBACK of a retained
// message on another gets it, although its node's copy of tern_retained
// lags (held back here): the SUBSCRIBE asks the stream leader how far it
// is and waits for this node's copy to get there (SyncRetained). Without
// that the message, applied after the SUBSCRIBE read the retained
// messages, would never be delivered. The in-process Subscribe waits the
// same way.
func TestRetainedSyncedAtSubscribe(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	pub := nodes[0].Dial(t, packets.V5)
	pub.MustConnect("pub")
	lagging := nodes[2]
	var gate atomic.Pointer[chan struct{}]
	ended := make(chan struct{}) // lets the watcher go, also when the test fails
	defer close(ended)
	hold := func() {
		select {
		case <-*gate.Load():
		case <-ended:
		}
	}
	open := make(chan struct{})
	close(open)
	lagging.cl.retain.applyHook.Store(&hold)
	for i, inline := range []bool{false, true} {
		closed := make(chan struct{})
		gate.Store(&closed)
		topic := fmt.Sprintf("sync/%d", i)
		pub.Send(&packets.Publish{Topic: topic, QoS: 1, PacketID: uint16(i + 1), Retain: true, Payload: []byte(topic)})
		if ack, ok := pub.Recv().(*packets.Puback); !ok || ack.ReasonCode.IsError() {
			t.Fatalf("PUBACK %+v", ack)
		}
		got := make(chan *packets.Publish, 1)
		if inline {
			go func() {
				if err := lagging.Subscribe(topic, 1, func(m *tern.Message) {
					got <- &packets.Publish{Topic: m.Topic, Payload: m.Payload, Retain: m.Retain}
				}); err != nil {
					t.Error(err)
				}
			}()
		} else {
			sub := lagging.Dial(t, packets.V5)
			sub.MustConnect("sub")
			go func() {
				sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: topic, QoS: 1}}})
				if _, ok := sub.Recv().(*packets.Suback); !ok {
					t.Error("no SUBACK")
					return
				}
				got <- recvPublish(t, sub)
			}()
		}
		terntest.Eventually(t, "the subscription waiting for the lagging copy", func() bool {
			return lagging.cl.retain.want.Load() != 0
		})
		gate.Store(&open)
		close(closed)
		select {
		case p := <-got:
			if !p.Retain || string(p.Payload) != topic {
				t.Fatalf("got %+v", p)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the retained message never came", topic)
		}
	}
	if c := lagging.cl.fwd.counters(); c.RetainedSyncs < 2 || c.RetainedSyncFailed != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// A burst of retained messages reaches every node whole: more than the
// asynchronous publishes allowed in flight (4,000) used to drop a few
// ("stalled with too many outstanding async published messages": one run
// in three on a loaded 2-core machine), which the other nodes then never
// had.
func TestRetainedBurstReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 retained messages: skipped in -short mode")
	}
	const n = 20_000
	nodes := startCluster(t, 3, nil)
	for i := range n {
		if err := nodes[0].Publish(fmt.Sprintf("burst/%d", i), []byte("x"), true, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range nodes[1:] {
		terntest.Eventually(t, "every retained message on "+nd.cl.Node(), func() bool { return nd.Stats().Retained == n })
	}
}

// A persistent client reconnecting on another node gets its session:
// session present, the message queued while it was away, the QoS 1
// message it had not acknowledged, and its subscription, now served
// from the new node.
func TestTakeover(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	connect := &packets.Connect{ClientID: "mover", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}}
	a := nodes[0].Dial(t, packets.V5)
	if ack := a.Connect(connect); ack.SessionPresent {
		t.Fatal("session present on a first connection")
	}
	subscribe(t, a, "mv/#", 1)
	pub := nodes[2].Dial(t, packets.V5)
	pub.MustConnect("pub")
	pub.Send(&packets.Publish{Topic: "mv/1", QoS: 1, PacketID: 1, Payload: []byte("inflight")})
	pub.Recv()
	if p := a.Recv().(*packets.Publish); string(p.Payload) != "inflight" {
		t.Fatalf("got %q", p.Payload)
	} // not acknowledged
	a.Send(&packets.Disconnect{})
	a.ExpectClosed()
	terntest.Eventually(t, "offline", func() bool { _, ok := nodes[0].ClientInfo("mover"); return !ok })
	pub.Send(&packets.Publish{Topic: "mv/2", QoS: 1, PacketID: 2, Payload: []byte("queued")})
	pub.Recv()

	b := nodes[1].Dial(t, packets.V5)
	ack := b.Connect(connect)
	if !ack.SessionPresent || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %+v: want session present", ack)
	}
	var got []string
	for len(got) < 2 {
		got = append(got, string(recvPublish(t, b).Payload))
	}
	if !slices.Equal(got, []string{"inflight", "queued"}) {
		t.Fatalf("got %v", got)
	}
	pub.Send(&packets.Publish{Topic: "mv/3", QoS: 1, PacketID: 3, Payload: []byte("after")})
	pub.Recv()
	if p := recvPublish(t, b); string(p.Payload) != "after" {
		t.Fatalf("got %q", p.Payload)
	}
	if _, ok := nodes[0].SessionInfo("mover"); ok {
		t.Fatal("the session is still on the first node")
	}

	// While connected on B, a CONNECT on C takes it over: B's connection
	// ends with 0x8E Session taken over.
	c := nodes[2].Dial(t, packets.V5)
	if ack := c.Connect(connect); !ack.SessionPresent {
		t.Fatal("no session present on the third node")
	}
	got2 := b.ExpectClosed()
	if d, ok := got2[len(got2)-1].(*packets.Disconnect); !ok || d.ReasonCode != packets.SessionTakenOver {
		t.Fatalf("first connection got %+v", got2)
	}
}

// A message published while a session moves between two live nodes, sent
// by a node that does not know the session's new node yet, reaches the
// session there: its former node passes it on (and acknowledges it only
// once the new node has it). Once every node routes to the new node, the
// former one stops passing messages on, and a copy that came both ways
// meanwhile is delivered once.
func TestTakeoverPassesOn(t *testing.T) {
	nodes := startCluster(t, 3, func(_ int, o *Options) { o.DrainTime = time.Minute })
	connect := &packets.Connect{ClientID: "mover", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}}
	a := nodes[0].Dial(t, packets.V5)
	a.Connect(connect)
	subscribe(t, a, "po/mover", 1)
	pub := nodes[2].Dial(t, packets.V5)
	pub.MustConnect("pub")
	id := uint16(0)
	publish := func(payload string) {
		t.Helper()
		id++
		pub.Send(&packets.Publish{Topic: "po/mover", QoS: 1, PacketID: id, Payload: []byte(payload)})
		if ack, ok := pub.Recv().(*packets.Puback); !ok || ack.ReasonCode != 0 {
			t.Fatalf("PUBACK of %q: %+v", payload, ack)
		}
	}
	publish("before")
	if p := recvPublish(t, a); string(p.Payload) != "before" {
		t.Fatalf("got %q", p.Payload)
	}

	// The publisher's node learns the session's new node late.
	blocked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(node string) {
		if node == "n2" {
			once.Do(func() { close(blocked) })
			<-release
		}
	}
	nodes[2].cl.routes.addHook.Store(&hook)
	var released sync.Once
	unblock := func() { released.Do(func() { close(release) }) }
	t.Cleanup(unblock)

	b := nodes[1].Dial(t, packets.V5)
	b.Send(connect)
	select {
	case <-blocked: // n1 exported the session; n2 announces its route
	case <-time.After(30 * time.Second):
		t.Fatal("n2's route never reached n3")
	}
	if nodes[2].cl.routes.addedAt(routeKey("n2", "", "po/mover")) != 0 {
		t.Fatal("n3 knows n2's route already")
	}
	publish("during") // to n1 alone, which passes it on
	nodes[2].cl.routes.addHook.Store(nil)
	unblock()
	if ack, ok := b.Recv().(*packets.Connack); !ok || !ack.SessionPresent {
		t.Fatalf("takeover CONNACK %+v", ack)
	}
	a.ExpectClosed()
	if p := recvPublish(t, b); string(p.Payload) != "during" {
		t.Fatalf("got %q, want the message published during the takeover", p.Payload)
	}

	// Right after the takeover n1 may still pass messages on (for what
	// was sent to it before n3 knew n2): a copy that comes both ways is
	// delivered once. The PUBACK comes once both copies are at n2.
	publish("both")
	publish("marker")
	for _, want := range []string{"both", "marker"} {
		if p := recvPublish(t, b); string(p.Payload) != want {
			t.Fatalf("got %q, want %q", p.Payload, want)
		}
	}
	// n2 told n1 that every node routes to it: n1 stops passing on after
	// 2 forward timeouts and a second (3 s here), long before the drain
	// ends.
	time.Sleep(3500 * time.Millisecond)
	dups := nodes[1].Stats().DuplicatesSkipped
	publish("after")
	if p := recvPublish(t, b); string(p.Payload) != "after" {
		t.Fatalf("got %q", p.Payload)
	}
	if d := nodes[1].Stats().DuplicatesSkipped; d != dups {
		t.Fatalf("n1 still passed a message on after the grace: %d copies skipped at n2", d-dups)
	}
	if c := nodes[0].cl.fwd.counters(); c.PassedOn == 0 || c.RoutedNotices != 1 {
		t.Fatalf("n1 passed on %d messages and had %d routed notices, want some and 1", c.PassedOn, c.RoutedNotices)
	}
}

// A QoS 1 message sent to a node for a session by name that has moved on
// from there reaches the session at its owner, and the node answers only
// once the owner has it (or it is parked for the owner); one for a session
// that exists nowhere is counted as orphaned.
func TestForwardByNameToOwner(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	x := nodes[2].Dial(t, packets.V5)
	x.Connect(&packets.Connect{ClientID: "x", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}})
	subscribe(t, x, "astray/x", 1)
	send := func(client, payload string) {
		t.Helper()
		m := tern.MessageFromRecord(&storage.Message{Topic: "astray/x", Payload: []byte(payload), QoS: 1})
		b := appendFrame([]byte{wireVersion}, m, tern.Delivery{ClientID: client, QoS: 1})
		resp, err := nodes[0].cl.data.Request("tern.n.n2.d", b, 10*time.Second)
		if err != nil || len(resp.Data) != 0 {
			t.Fatalf("n2's answer: %v %q", err, resp.Data)
		}
	}
	send("x", "passed on")
	if p := recvPublish(t, x); string(p.Payload) != "passed on" {
		t.Fatalf("got %q", p.Payload)
	}
	orphaned := nodes[1].cl.fwd.counters().Orphaned
	send("nobody", "lost")
	if got := nodes[1].cl.fwd.counters().Orphaned; got != orphaned+1 {
		t.Fatalf("orphaned %d, want %d", got, orphaned+1)
	}

	// The owner takes forwards and never answers now (it still takes
	// what is parked for it): n2 answers only once its own send to n3
	// timed out and was parked, and the message reaches x through the
	// park stream.
	if err := nodes[2].cl.fwd.dataSub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	mute, err := nodes[2].cl.data.Subscribe("tern.n.n3.d", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Unsubscribe()
	nodes[2].cl.data.Flush()
	send("x", "parked")
	if c := nodes[1].cl.fwd.counters(); c.Timeouts == 0 || c.Parked == 0 {
		t.Fatalf("n2 answered before its send to the owner was safe: %+v", c)
	}
	if p := recvPublish(t, x); string(p.Payload) != "parked" {
		t.Fatalf("got %q", p.Payload)
	}
}

// A batch its node took, but whose answer came too late (here: never),
// is parked by its sender for that node too; the node skips that copy
// rather than deliver the messages again [MQTT-4.3.3-2].
func TestLateAnswerParkedCopySkipped(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	sub := subscriber(t, nodes[1], "sub", "bt/#", 2)
	pub := nodes[0].Dial(t, packets.V5)
	pub.MustConnect("pub")
	// n1 hears no answer from other nodes any more.
	f := nodes[0].cl.fwd
	for _, ns := range f.subs {
		if ns.Subject == f.inbox+"*" {
			if err := ns.Unsubscribe(); err != nil {
				t.Fatal(err)
			}
		}
	}
	unparked := nodes[1].cl.fwd.counters().Unparked
	pub.Send(&packets.Publish{Topic: "bt/1", QoS: 2, PacketID: 1, Payload: []byte("once")})
	if rec, ok := pub.Recv().(*packets.Pubrec); !ok || rec.ReasonCode != 0 {
		t.Fatalf("PUBREC %+v", rec) // once parked for n2
	}
	p, ok := sub.Recv().(*packets.Publish)
	if !ok || string(p.Payload) != "once" {
		t.Fatalf("got %+v", p)
	}
	sub.Send(&packets.Pubrec{PacketID: p.PacketID})
	if _, ok := sub.Recv().(*packets.Pubrel); !ok {
		t.Fatal("no PUBREL")
	}
	sub.Send(&packets.Pubcomp{PacketID: p.PacketID})
	terntest.Eventually(t, "n2 to skip the parked copy", func() bool { return nodes[1].cl.fwd.counters().ParkedTaken > 0 })
	if c := nodes[1].cl.fwd.counters(); c.Unparked != unparked {
		t.Fatalf("the parked copy was taken as well: %+v", c)
	}
	if pk, err := sub.TryRecv(300 * time.Millisecond); err == nil {
		t.Fatalf("a second copy: %+v", pk)
	}
}

// Two connections racing for one client identifier on two nodes end with
// exactly one connected.
func TestTakeoverRace(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	for i := range trials(30) {
		id := fmt.Sprintf("racer%d", i)
		conns := []*terntest.Conn{nodes[0].Dial(t, packets.V5), nodes[1].Dial(t, packets.V5)}
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.Send(&packets.Connect{ProtocolVersion: packets.V5, ClientID: id, KeepAlive: 60})
			}()
		}
		wg.Wait()
		terntest.Eventually(t, "exactly one connection", func() bool {
			n := 0
			for _, nd := range nodes {
				if _, ok := nd.ClientInfo(id); ok {
					n++
				}
			}
			return n == 1
		})
		for _, c := range conns {
			c.Close()
		}
	}
}

// A node that cannot renew its lease fences itself: its clients are
// disconnected with 0x9C and a Server Reference to another node, new
// CONNECTs are refused the same way, and it serves again once the lease
// is renewed.
func TestFencing(t *testing.T) {
	nodes := startCluster(t, 3, func(i int, o *Options) { o.MQTTAdvertise = fmt.Sprintf("mqtt-%d:1883", i+1) })
	c := nodes[0].Dial(t, packets.V5)
	c.MustConnect("victim")
	cut := func() bool { return true }
	nodes[0].cl.faults.Store(&cut)
	got := c.ExpectClosed()
	d, ok := got[len(got)-1].(*packets.Disconnect)
	if !ok || d.ReasonCode != packets.UseAnotherServer || !strings.HasPrefix(d.Properties.ServerReference, "mqtt-") {
		t.Fatalf("got %+v", got)
	}
	c2 := nodes[0].Dial(t, packets.V5)
	if ack := c2.Connect(&packets.Connect{ClientID: "late", CleanStart: true}); ack.ReasonCode != packets.UseAnotherServer {
		t.Fatalf("CONNACK %v while fenced", ack.ReasonCode)
	}
	nodes[0].cl.faults.Store(nil)
	terntest.Eventually(t, "the fence lifted", func() bool { return !nodes[0].cl.Fenced() })
	c3 := nodes[0].Dial(t, packets.V5)
	if ack := c3.Connect(&packets.Connect{ClientID: "back", CleanStart: true}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %v after the fence", ack.ReasonCode)
	}
}

// The will of a client connected to a node that dies is published by the
// others once the node is taken for gone, exactly once.
func TestWillOfDeadNode(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	sub := nodes[0].Dial(t, packets.V5)
	sub.MustConnect("watcher")
	subscribe(t, sub, "will/#", 1)
	c := nodes[2].Dial(t, packets.V5)
	if ack := c.Connect(&packets.Connect{ClientID: "dying", KeepAlive: 60,
		Will: &packets.Will{Topic: "will/dying", Payload: []byte("bye"), QoS: 1}}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %v", ack.ReasonCode)
	}
	// A client that disconnects normally leaves no will behind.
	c2 := nodes[2].Dial(t, packets.V5)
	c2.Connect(&packets.Connect{ClientID: "polite", KeepAlive: 60, Will: &packets.Will{Topic: "will/polite", Payload: []byte("no")}})
	c2.Send(&packets.Disconnect{})
	c2.ExpectClosed()
	terntest.Eventually(t, "the polite will removed", func() bool {
		_, err := nodes[0].cl.kvWills.Get(context.Background(), willKVKey("n3", "polite"))
		return err != nil
	})
	nodes[2].cl.ns.Shutdown() // n3 dies: its routes close, no goodbye
	p := recvPublish(t, sub)
	if p.Topic != "will/dying" || string(p.Payload) != "bye" {
		t.Fatalf("got %s %q", p.Topic, p.Payload)
	}
	if pk, err := sub.TryRecv(500 * time.Millisecond); err == nil {
		t.Fatalf("more than the one will: %+v", pk)
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer = terntest.LogBuffer

// Nodes of two clusters that list each other as peers refuse each
// other's routes and say why (neither becomes ready: without its peers a
// node cannot tell it is not in a minority).
func TestMismatchedClusterNames(t *testing.T) {
	addrs := freeAddrs(t, 2)
	var logs [2]syncBuffer
	var cls [2]*Cluster
	for i, name := range []string{"one", "two"} {
		log := slog.New(slog.NewTextHandler(&logs[i], nil))
		srv, err := tern.New(&tern.Options{SysInterval: -1, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		cl, err := New(srv, Options{Name: name, Node: fmt.Sprintf("m%d", i), Listen: addrs[i], Peers: addrs, Replicas: 1,
			DataDir: filepath.Join(t.TempDir(), name), LeaseTTL: 3 * time.Second, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		srv.AddHook(cl)
		wrap(t, srv)
		cls[i] = cl
	}
	terntest.Eventually(t, "a route refused for its cluster name", func() bool {
		return strings.Contains(logs[0].String()+logs[1].String(), "does not match")
	})
	for _, cl := range cls {
		if cl.ns.NumRoutes() != 0 || cl.Ready() {
			t.Fatalf("node %s has %d routes, ready %v", cl.Node(), cl.ns.NumRoutes(), cl.Ready())
		}
	}
	if _, err := New(nil, Options{Node: "a.b", DataDir: "x"}); err == nil {
		t.Fatal("a node name with a dot accepted")
	}
}

// A route port that is taken fails the start at once, with nats-server's
// reason, instead of after the start timeout.
func TestRoutePortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, err := tern.New(&tern.Options{SysInterval: -1, Logger: testLogger(t, "p1")})
	if err != nil {
		t.Fatal(err)
	}
	peers := []string{ln.Addr().String(), freeAddrs(t, 1)[0]}
	cl, err := New(srv, Options{Name: testClusterName, Node: "p1", Listen: peers[0], Peers: peers, Replicas: 1,
		DataDir: t.TempDir(), Logger: testLogger(t, "p1")})
	if err != nil {
		t.Fatal(err)
	}
	srv.AddHook(cl)
	begun := time.Now()
	_, err = serve(srv)
	if err == nil {
		shutdown(srv)
		t.Fatal("served with the route port taken")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %q does not give the reason", err)
	}
	t.Logf("failed after %v: %v", time.Since(begun), err)
}

// A node's park consumer that stalls (it reads a replica that stays
// behind the stream leader, as after a partition) does not keep parked
// messages from their sessions: drainPark reads them from the leader. The
// consumer here reads a subject nothing is parked on.
func TestParkConsumerStalled(t *testing.T) {
	parkConsumeSubject = func(subj string) string { return subj + ".stalled" }
	t.Cleanup(func() { parkConsumeSubject = func(subj string) string { return subj } })
	nodes := startCluster(t, 3, nil)
	sub := nodes[0].Dial(t, packets.V5)
	sub.MustConnect("parked-sub")
	subscribe(t, sub, "park/#", 1)
	m := tern.MessageFromRecord(&storage.Message{Topic: "park/1", Payload: []byte("parked"), QoS: 1, Origin: "pub"})
	nodes[1].cl.fwd.parkMsg(nodes[0].cl.Node(), encodeForward(m, tern.Delivery{QoS: 1, Filter: "park/#"}), nil)
	p, err := sub.TryRecv(30 * time.Second)
	if err != nil {
		t.Fatalf("parked message not delivered: %v (counters %+v)", err, nodes[0].cl.fwd.counters())
	}
	if pub, ok := p.(*packets.Publish); !ok || string(pub.Payload) != "parked" {
		t.Fatalf("got %+v", p)
	}
	if c := nodes[0].cl.fwd.counters(); c.ParkStalls == 0 || c.Unparked != 1 {
		t.Fatalf("counters %+v: want a stall read from the leader, 1 unparked", c)
	}
}

// QoS 1/2 messages for a node that is gone are parked in batches: the
// messages that accumulated while the sender waited go into the park
// stream as one message (one Raft entry), and the node takes each of
// them back, in order. A node whose heartbeats do not say it reads
// batches (an earlier version) gets them one by one. A message of the
// stream that does not decode is counted, and the ones after it are
// taken.
func TestParkBatched(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	sub := subscriber(t, nodes[0], "pbsub", "pb/#", 1)
	f := nodes[1].cl.fwd
	gone := &nodeRemote{c: nodes[1].cl, node: nodes[0].cl.Node(), subject: "tern.n." + nodes[0].cl.Node() + ".d"} // alive false
	const n = 200
	for _, tc := range []struct {
		name    string
		batches bool
	}{{"batches", true}, {"earlier version", false}} {
		t.Run(tc.name, func(t *testing.T) {
			nt := nodes[1].cl.nodes
			nt.mu.Lock()
			was := nt.nodes[gone.node].park
			if !tc.batches {
				nt.nodes[gone.node].park = 0
			}
			nt.mu.Unlock()
			t.Cleanup(func() { nt.mu.Lock(); nt.nodes[gone.node].park = was; nt.mu.Unlock() })
			before, seq0 := f.counters(), f.parkSeq.Load()
			// The sender is not woken while the messages go in: they are
			// one batch for it.
			f.omu.Lock()
			f.busy = true
			f.omu.Unlock()
			var wg sync.WaitGroup
			var failed atomic.Int32
			for i := range n {
				m := tern.MessageFromRecord(&storage.Message{Topic: "pb/" + tc.name, Payload: []byte(strconv.Itoa(i)), QoS: 1, Origin: "pub"})
				wg.Add(1)
				a := tern.NewAck(func(err error) {
					if err != nil {
						failed.Add(1)
					}
					wg.Done()
				})
				f.send(gone, m, tern.Delivery{QoS: 1, Filter: "pb/#"}, a)
				a.Release(nil)
			}
			f.wake <- struct{}{}
			wg.Wait() // every acknowledgement released once parked
			if failed.Load() != 0 {
				t.Fatalf("%d messages not parked", failed.Load())
			}
			after := f.counters()
			if after.Parked-before.Parked != n || after.Sent != before.Sent {
				t.Fatalf("counters before %+v, after %+v: want %d parked, none sent", before, after, n)
			}
			want := uint64(n) // stream messages
			if tc.batches {
				want = 1
			}
			if got := f.parkSeq.Load() - seq0; got != want {
				t.Fatalf("%d messages of the park stream for %d parked messages, want %d", got, n, want)
			}
			for i := range n {
				p := recvPublish(t, sub)
				if string(p.Payload) != strconv.Itoa(i) {
					t.Fatalf("message %d: got %q", i, p.Payload)
				}
				sub.Send(&packets.Puback{PacketID: p.PacketID})
			}
		})
	}
	t.Run("corrupt", func(t *testing.T) {
		js := nodes[1].cl.js
		msg := nats.NewMsg("tern.park." + gone.node)
		msg.Header.Set(framesHeader, "1")
		msg.Data = []byte{wireVersion, 0, 0, 0, 9, 1, 2, 3} // a frame longer than what follows
		if _, err := js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		m := tern.MessageFromRecord(&storage.Message{Topic: "pb/after", Payload: []byte("after"), QoS: 1, Origin: "pub"})
		f.parkMsg(gone.node, encodeForward(m, tern.Delivery{QoS: 1, Filter: "pb/#"}), nil)
		if p := recvPublish(t, sub); string(p.Payload) != "after" {
			t.Fatalf("got %q", p.Payload)
		}
		if c := nodes[0].cl.fwd.counters(); c.ParkCorrupt != 1 {
			t.Fatalf("counters %+v: want 1 corrupt", c)
		}
		// A batch that holds fewer messages than it says: what it holds
		// is taken, the mismatch counted.
		short := nats.NewMsg("tern.park." + gone.node)
		short.Header.Set(framesHeader, "2")
		m = tern.MessageFromRecord(&storage.Message{Topic: "pb/short", Payload: []byte("short"), QoS: 1, Origin: "pub"})
		short.Data = appendFrame([]byte{wireVersion}, m, tern.Delivery{QoS: 1, Filter: "pb/#"})
		if _, err := js.PublishMsg(context.Background(), short); err != nil {
			t.Fatal(err)
		}
		if p := recvPublish(t, sub); string(p.Payload) != "short" {
			t.Fatalf("got %q", p.Payload)
		}
		terntest.Eventually(t, "the mismatch counted", func() bool { return nodes[0].cl.fwd.counters().ParkCorrupt == 2 })
	})
}

// What reaches a session while a CONNECT here is still bringing it over
// (the queue its former node ships, back from a restart, and messages it
// passes on while its subscriptions drain) waits for the session instead
// of being dropped for want of one: the soak lost 1,253 messages per
// publisher that way. Here both come before the CONNECT, as they may
// while it restores the session from tern_subs; the client gets them,
// with Session Present 0 (a session made of shipped parts only).
func TestHeldWhileAttaching(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	r := nodes[0].cl.reg
	r.startAttach("held")
	shipped := &tern.SessionState{Session: storage.Session{ClientID: "held", Version: packets.V5, Expiry: 3600},
		Messages:   []storage.Message{{ID: 1, Topic: "held/1", Payload: []byte("shipped"), QoS: 1, Origin: "pub"}},
		Deliveries: []storage.Delivery{{ClientID: "held", MessageID: 1, QoS: 1}}}
	if err := r.imported("held", "n2", true, encodeSession(shipped)); err != nil {
		t.Fatal(err)
	}
	m := tern.MessageFromRecord(&storage.Message{Topic: "held/2", Payload: []byte("drained"), QoS: 1, Origin: "pub"})
	if in := nodes[0].cl.fwd.inject(m, tern.Delivery{ClientID: "held", QoS: 1}); in.Queued != 1 {
		t.Fatalf("inject %+v: not held", in)
	}
	if _, ok := nodes[0].Server.Server.SessionInfo("held"); ok {
		t.Fatal("a session made before the CONNECT")
	}
	c := nodes[0].Dial(t, packets.V5)
	c.Send(&packets.Connect{ProtocolVersion: packets.V5, ClientID: "held", KeepAlive: 30,
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
	if ack, ok := c.Recv().(*packets.Connack); !ok || ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("CONNACK %+v, want success with Session Present 0", ack)
	}
	var got []string
	for range 2 {
		got = append(got, string(recvPublish(t, c).Payload))
	}
	if !slices.Equal(got, []string{"shipped", "drained"}) {
		t.Fatalf("got %q", got)
	}
	r.endAttach(attachEnd{id: "held"}) // the test's own attach, which stood for the CONNECT's
	attachLeft := func() {
		t.Helper()
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.attaching) != 0 || r.heldBytes != 0 {
			t.Fatalf("attach state left: %d entries, %d bytes", len(r.attaching), r.heldBytes)
		}
	}
	attachLeft()

	// A CONNECT refused before it won the registry: this node does not own
	// the session, what was held is dropped, no session is made. One
	// refused after it won a session that outlives it: a session is made
	// here, offline, for a CONNECT elsewhere to take.
	for _, tc := range []struct {
		id      string
		won     bool
		session bool
	}{{"refused", false, false}, {"refused-owner", true, true}} {
		r.startAttach(tc.id)
		shipped.Session.ClientID = tc.id
		shipped.Deliveries[0].ClientID = tc.id
		if err := r.imported(tc.id, "n2", true, encodeSession(shipped)); err != nil {
			t.Fatal(err)
		}
		r.endAttach(attachEnd{id: tc.id, version: packets.V5, expiry: 3600, won: tc.won})
		info, ok := nodes[0].Server.Server.SessionInfo(tc.id)
		if ok != tc.session || ok && info.Queued != 1 {
			t.Fatalf("%s: session %v %+v, want %v with 1 queued", tc.id, ok, info, tc.session)
		}
		attachLeft()
	}
}

// goTracked may be called while Stop waits for what it started (a NATS
// callback: another node's last heartbeat, whose wills are to be reaped,
// when nodes stop together): it must then start nothing, rather than Add
// to the WaitGroup during its Wait (the race detector caught that when the
// nodes of TestE2EAcrossNodes stopped in parallel).
func TestGoTrackedDuringStop(t *testing.T) {
	c := &Cluster{}
	var callers sync.WaitGroup
	for range 4 {
		callers.Go(func() {
			for range 1000 {
				c.goTracked(func() {})
			}
		})
	}
	c.waitTracked()
	ran := make(chan struct{}, 1)
	c.goTracked(func() { ran <- struct{}{} })
	callers.Wait()
	c.wg.Wait()
	select {
	case <-ran:
		t.Fatal("goTracked started a goroutine after Stop waited")
	default:
	}
}

// A part of a session shipped to a node that does not own the session
// (its client moved on while the part was on its way) is refused, so that
// its sender asks the registry again: taken into a session left on that
// node, it would stay there for good.
func TestImportedOnlyByOwner(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	c := nodes[2].Dial(t, packets.V5)
	c.Connect(&packets.Connect{ClientID: "owned", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}})
	part := &tern.SessionState{Session: storage.Session{ClientID: "owned", Version: packets.V5, Expiry: 600},
		Messages:   []storage.Message{{ID: 1, Topic: "o/1", Payload: []byte("x"), QoS: 1}},
		Deliveries: []storage.Delivery{{ClientID: "owned", MessageID: 1, QoS: 1}}}
	if err := nodes[1].cl.reg.imported("owned", "n1", true, encodeSession(part)); !errors.Is(err, errNotOwner) {
		t.Fatalf("imported on a node that does not own the session: %v", err)
	}
	if err := nodes[2].cl.reg.imported("owned", "n1", true, encodeSession(part)); err != nil {
		t.Fatal(err)
	}
	if p := recvPublish(t, c); p.Topic != "o/1" {
		t.Fatalf("got %s", p.Topic)
	}
}

// A QoS 2 message another node sends again after its restart
// (Delivery.Again: its publisher had no PUBREC) is delivered, and counted,
// even after a later message of the same publisher: the node cannot tell
// whether each of its sessions had it (one may have moved here since), and
// a copy is better than a loss.
func TestAgainDelivered(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	sub := subscriber(t, nodes[1], "sub", "ag/#", 2)
	at := time.Now().Add(-time.Second).UnixNano()
	send := func(payload string, created int64, again bool) {
		t.Helper()
		m := tern.MessageFromRecord(&storage.Message{Topic: "ag/1", Payload: []byte(payload), QoS: 2, Origin: "pub", Created: created})
		done := make(chan error, 1)
		a := tern.NewAck(func(err error) { done <- err })
		nodes[0].cl.nodes.remote("n2").Forward(m, tern.Delivery{Route: "n2", QoS: 2, Again: again}, a)
		a.Release(nil)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if p := recvPublish(t, sub); string(p.Payload) != payload {
			t.Fatalf("got %q, want %q", p.Payload, payload)
		}
	}
	send("later", at+int64(time.Millisecond), false)
	send("again", at, true)
	if got := nodes[1].cl.fwd.counters().AgainReceived; got != 1 {
		t.Fatalf("AgainReceived %d, want 1", got)
	}
}

// With two nodes of three gone, the survivor's view tells it: a stream
// whose leader was on another node does not answer within the timeout
// (no quorum to elect one) and is reported with the error, not waited
// for; one it leads itself shows both followers offline.
func TestStatusJetStreamNoQuorum(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	shutdown(nodes[1].Server.Server)
	shutdown(nodes[2].Server.Server)
	var st Status
	terntest.Eventually(t, "every stream in error or without its followers", func() bool {
		st = nodes[0].cl.StatusWithJetStream(500 * time.Millisecond)
		if len(st.JetStream.Streams) != len(streamNames) {
			return false
		}
		for _, s := range st.JetStream.Streams {
			if s.Error != "" {
				continue
			}
			if s.Leader != "n1" || len(s.Replicas) != 2 {
				return false
			}
			for _, r := range s.Replicas {
				if !r.Offline {
					return false
				}
			}
		}
		return true
	})
	errs := 0
	for _, s := range st.JetStream.Streams {
		if s.Error != "" {
			errs++
		}
	}
	t.Logf("%d of %d streams in error (their leader was on a node now gone)", errs, len(streamNames))
}

// A node drops a second copy of a QoS 2 message it took: one its
// publisher sent again after its node restarted (routed again to every
// node, Delivery.Again), or a parked copy of one taken directly. With
// OnceEntries negative it remembers none and delivers both.
func TestOnceDropped(t *testing.T) {
	for _, tc := range []struct {
		name string
		once int
	}{{"remembered", 0}, {"none remembered", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := startCluster(t, 2, func(i int, o *Options) { o.OnceEntries = tc.once })
			sub := subscriber(t, nodes[1], "sub", "once/#", 1)
			at := time.Now().Add(-time.Second).UnixNano()
			msg := func(payload string, created int64) *tern.Message {
				return tern.MessageFromRecord(&storage.Message{Topic: "once/1", Payload: []byte(payload), QoS: 2, Origin: "pub", Created: created})
			}
			send := func(m *tern.Message, again bool) {
				t.Helper()
				done := make(chan error, 1)
				a := tern.NewAck(func(err error) { done <- err })
				nodes[0].cl.nodes.remote("n2").Forward(m, tern.Delivery{Route: "n2", QoS: 2, Filter: "once/#", Again: again}, a)
				a.Release(nil)
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			expect := func(want ...string) {
				t.Helper()
				for _, w := range want {
					p := recvPublish(t, sub)
					if string(p.Payload) != w {
						t.Fatalf("got %q, want %q", p.Payload, w)
					}
					sub.Send(&packets.Puback{PacketID: p.PacketID})
				}
			}
			first := msg("first", at)
			send(first, false)
			send(first, true) // sent again: its publisher's node restarted
			send(msg("next", at+1), false)
			if tc.once < 0 {
				expect("first", "first", "next")
			} else {
				expect("first", "next")
			}
			// Parked as well: the copy read from the park stream.
			second := msg("second", at+2)
			send(second, false)
			nodes[0].cl.fwd.parkMsg("n2", encodeForward(second, tern.Delivery{QoS: 2, Filter: "once/#"}), nil)
			terntest.Eventually(t, "the parked copy taken", func() bool { return nodes[1].cl.fwd.counters().Unparked == 1 })
			send(msg("last", at+3), false)
			c := nodes[1].cl.fwd.counters()
			if tc.once < 0 {
				expect("second", "second", "last")
				if c.OnceDropped != 0 || c.OnceEntries != 0 {
					t.Fatalf("counters %+v: want nothing remembered or dropped", c)
				}
			} else {
				expect("second", "last")
				if c.OnceDropped != 2 || c.OnceEntries != 4 {
					t.Fatalf("counters %+v: want 2 dropped, 4 remembered", c)
				}
			}
		})
	}
}

// gateStore is a memory store whose commits can be made to fail, or to
// wait until released.
type gateStore struct {
	*memory.Store
	fail    atomic.Bool
	hold    atomic.Bool
	release chan struct{}
}

func (g *gateStore) Commit(b storage.Batch, sync bool) error {
	if g.hold.Load() {
		<-g.release
	}
	if g.fail.Load() {
		return errors.New("commit failed (test)")
	}
	return g.Store.Commit(b, sync)
}

// A QoS 2 message is remembered by the once set only once it is safe
// here: a copy that comes while the first one's commit failed, or still
// waits, is taken again (delivered twice at worst), not dropped and
// acknowledged for a message this node may not keep.
func TestOnceRememberedWhenSafe(t *testing.T) {
	for _, tc := range []string{"first commit failed", "first commit waiting"} {
		t.Run(tc, func(t *testing.T) {
			st := &gateStore{Store: memory.New(), release: make(chan struct{})}
			var released sync.Once
			release := func() { released.Do(func() { st.hold.Store(false); close(st.release) }) }
			nodes := startClusterWith(t, 2, nil, func(i int, o *tern.Options) {
				if i == 1 {
					o.Store = st
				}
			})
			t.Cleanup(release)
			sub := connectUnfenced(t, nodes[1], &packets.Connect{ClientID: "sub", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}})
			subscribe(t, sub, "once/#", 2)
			m := tern.MessageFromRecord(&storage.Message{Topic: "once/1", Payload: []byte("x"), QoS: 2, Origin: "pub", Created: time.Now().UnixNano()})
			send := func(again bool) chan error {
				done := make(chan error, 1)
				a := tern.NewAck(func(err error) { done <- err })
				nodes[0].cl.nodes.remote("n2").Forward(m, tern.Delivery{Route: "n2", QoS: 2, Filter: "once/#", Again: again}, a)
				a.Release(nil)
				return done
			}
			f := nodes[1].cl.fwd
			received := f.counters().Received
			if tc == "first commit failed" {
				st.fail.Store(true)
				if err := <-send(false); err == nil {
					t.Fatal("first copy acknowledged although its commit failed")
				}
				st.fail.Store(false)
				if err := <-send(true); err != nil {
					t.Fatalf("copy sent again: %v", err)
				}
			} else {
				st.hold.Store(true)
				first := send(false)
				again := send(true)
				terntest.Eventually(t, "both copies received", func() bool { return f.counters().Received == received+2 })
				release()
				for _, ch := range []chan error{first, again} {
					if err := <-ch; err != nil {
						t.Fatal(err)
					}
				}
			}
			if c := f.counters(); c.OnceDropped != 0 {
				t.Fatalf("counters %+v: a copy dropped while the first was not safe", c)
			}
			// Now that one is safe here, a third copy is dropped.
			if err := <-send(true); err != nil {
				t.Fatal(err)
			}
			if c := f.counters(); c.OnceDropped != 1 {
				t.Fatalf("counters %+v: want the third copy dropped", c)
			}
		})
	}
}

// onceSet holds at most its limit of entries, in two generations: when
// the newer one is full, the older half is forgotten (and counted). The
// key tells deliveries of one message to different targets apart, and
// QoS 0 and 1 deliveries, or messages without a creation time, have none.
func TestOnceSetBounded(t *testing.T) {
	o := newOnceSet(8)
	m := tern.MessageFromRecord(&storage.Message{Topic: "t", Payload: []byte("p"), QoS: 2, Origin: "pub", Created: 1})
	var keys []uint64
	for i := range 12 {
		k, ok := o.onceKey(m, tern.Delivery{QoS: 2, ClientID: strconv.Itoa(i)})
		if !ok {
			t.Fatal("no key for a QoS 2 delivery")
		}
		keys = append(keys, k)
		o.add(k)
		if n, _ := o.stats(); n > 8 {
			t.Fatalf("%d entries, limit 8", n)
		}
	}
	if n, full := o.stats(); n != 8 || full != 2 {
		t.Fatalf("%d entries, %d early generations: want 8, 2", n, full)
	}
	for i, k := range keys {
		if o.has(k) != (i >= 4) {
			t.Fatalf("entry %d remembered: %v", i, o.has(k))
		}
	}
	if k, _ := o.onceKey(m, tern.Delivery{QoS: 2, Group: "g"}); slices.Contains(keys, k) {
		t.Fatal("a shared group's delivery has a session's key")
	}
	for _, x := range []struct {
		m *tern.Message
		d tern.Delivery
	}{
		{m, tern.Delivery{QoS: 1}},
		{tern.MessageFromRecord(&storage.Message{Topic: "t", QoS: 1, Created: 1}), tern.Delivery{QoS: 2}},
		{tern.MessageFromRecord(&storage.Message{Topic: "t", QoS: 2}), tern.Delivery{QoS: 2}},
	} {
		if _, ok := o.onceKey(x.m, x.d); ok {
			t.Fatalf("a key for %+v %+v", x.m, x.d)
		}
	}
	if _, ok := newOnceSet(-1).onceKey(m, tern.Delivery{QoS: 2}); ok {
		t.Fatal("a key with none remembered")
	}
}

// The admin API's cluster view tells each stream's leader and how its
// followers keep up: every stream of a healthy cluster has a leader and
// current replicas on the other nodes.
func TestStatusJetStream(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	var st Status
	terntest.Eventually(t, "every stream led, its replicas current", func() bool {
		st = nodes[0].cl.StatusWithJetStream(2 * time.Second)
		js := st.JetStream
		if js == nil || js.MetaLeader == "" || len(js.Streams) != len(streamNames) {
			return false
		}
		for _, s := range js.Streams {
			if s.Leader == "" || s.Error != "" || len(s.Replicas) != 2 {
				return false
			}
			for _, r := range s.Replicas {
				if !r.Current || r.Node == s.Leader {
					return false
				}
			}
		}
		return true
	})
	if st.JetStream.Streams[len(streamNames)-1].Name != "tern_park" {
		t.Fatalf("streams %+v", st.JetStream.Streams)
	}
}
