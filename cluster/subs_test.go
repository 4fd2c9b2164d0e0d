package cluster

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/pebblestore"
	"github.com/ternmq/tern/terntest"
)

// kvHas reports whether bucket (read from its leader through nd) has
// the client's key.
func kvHas(t testing.TB, nd *testNode, bucket string, id string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), terntest.Timeout)
	defer cancel()
	_, _, err := nd.cl.leaderGet(ctx, bucket, sessionKey(id))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("get %s: %v", id, err)
	}
	return err == nil
}

// connectUntil connects to nd until the CONNECT is accepted: while a
// JetStream leader is elected after a node went, 0x88 may come for a
// while.
func connectUntil(t testing.TB, nd *testNode, pk *packets.Connect) (*terntest.Conn, *packets.Connack) {
	t.Helper()
	deadline := time.Now().Add(terntest.Timeout)
	for {
		c := nd.Dial(t, packets.V5)
		ack := c.Connect(pk)
		if ack.ReasonCode == 0 {
			return c, ack
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("CONNECT refused with %v until the deadline", ack.ReasonCode)
		}
	}
}

// A persistent session whose node is gone is made again on the node the
// client reconnects to, from tern_subs: Session Present 1
// [MQTT-3.2.2-2], the subscriptions it had (not the one it removed), and
// what is published then reaches it. When the node comes back, what it had
// queued for the client arrives late, and what the new node received
// directly is not delivered twice. A session that ends leaves nothing in
// tern_subs and tern_sessions.
func TestRestoreFromGoneNode(t *testing.T) {
	dir := t.TempDir()
	var store *pebblestore.Store
	openStore := func() storage.Store {
		var err error
		if store, err = pebblestore.Open(filepath.Join(dir, "n1-store"), pebblestore.Options{}); err != nil {
			t.Fatal(err)
		}
		st := store
		t.Cleanup(func() { st.Close() }) // after the server's shutdown: cleanups run last in, first out
		return st
	}
	nodes := startClusterWith(t, 3, nil, func(i int, o *tern.Options) {
		if i == 0 {
			o.Store = openStore()
		}
	})
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	kvSubs, kvSess := "tern_subs", "tern_sessions"

	// A session that ends with its connection leaves no record.
	brief := n1.Dial(t, packets.V5)
	brief.MustConnect("brief")
	subscribe(t, brief, "b/#", 1)
	if kvHas(t, n2, kvSubs, "brief") {
		t.Fatal("subscriptions of a session that ends with its connection replicated")
	}
	brief.Send(&packets.Disconnect{})
	brief.ExpectClosed()
	terntest.Eventually(t, "the registry entry of the ended session removed", func() bool { return !kvHas(t, n2, kvSess, "brief") })
	brief = n2.Dial(t, packets.V5)
	brief.MustConnect("brief") // the identifier is claimed again
	if !kvHas(t, n2, kvSess, "brief") {
		t.Fatal("no registry entry for a connected client")
	}
	brief.Close()

	connect := &packets.Connect{ClientID: "keeper", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}}
	k := n1.Dial(t, packets.V5)
	k.Connect(connect)
	subscribe(t, k, "rs/#", 1)
	subscribe(t, k, "gone/#", 1)
	k.Send(&packets.Unsubscribe{PacketID: 2, Filters: []string{"gone/#"}})
	if _, ok := k.Recv().(*packets.Unsuback); !ok {
		t.Fatal("no UNSUBACK")
	}
	subscribe(t, k, "rs2/#", 2)
	// A QoS 2 message the client receives and n1 never sees acknowledged:
	// the client holds its packet identifier (PUBREC not sent yet, as if
	// lost with the connection).
	if err := n1.Publish("rs2/inflight", []byte("once"), false, 2); err != nil {
		t.Fatal(err)
	}
	held := recvPublish(t, k)
	if held.QoS != 2 || held.PacketID >= 0x8000 {
		t.Fatalf("got %+v: not a QoS 2 message from the low half of the packet identifiers", held)
	}
	k.Send(&packets.Disconnect{})
	k.ExpectClosed()
	terntest.Eventually(t, "offline", func() bool { _, ok := n1.ClientInfo("keeper"); return !ok })
	pub := n3.Dial(t, packets.V5)
	pub.MustConnect("pub")
	publish := func(topic string, id uint16) {
		t.Helper()
		pub.Send(&packets.Publish{Topic: topic, QoS: 1, PacketID: id, Payload: []byte(topic)})
		if ack, ok := pub.Recv().(*packets.Puback); !ok || ack.ReasonCode != 0 && ack.ReasonCode != packets.NoMatchingSubscribers {
			t.Fatalf("PUBACK %+v", ack)
		}
	}
	publish("rs/queued", 1) // queued on n1

	// n1 goes; its store keeps the session and its queue.
	n1opts := n1.cl.opts
	shutdown(n1.Server.Server)
	store.Close()
	k2, ack := connectUntil(t, n2, connect)
	if !ack.SessionPresent {
		// The client keeps its state: the packet identifier it holds is
		// of the low half, and n2 numbers from the high one.
		t.Fatal("session present 0 for a session restored the first time")
	}
	// What is published from now on reaches n2 directly: n1 need not
	// ship it again.
	terntest.Eventually(t, "n2 to record since when every node routes to it", func() bool {
		val, _, err := n2.cl.leaderGet(context.Background(), "tern_subs", sessionKey("keeper"))
		if err != nil {
			return false
		}
		r, err := decodeSubsRecord(val)
		return err == nil && r.node == "n2" && r.restored != 0 && r.high && r.pending && r.from == "n1"
	})
	publish("rs/after", 2)
	if p := recvPublish(t, k2); p.Topic != "rs/after" {
		t.Fatalf("got %s", p.Topic)
	}
	publish("gone/1", 3) // unsubscribed on n1: not restored
	publish("rs/after2", 4)
	if p := recvPublish(t, k2); p.Topic != "rs/after2" {
		t.Fatalf("got %s after the unsubscribed filter's message", p.Topic)
	}
	if err := n2.Publish("rs2/new", []byte("new"), false, 2); err != nil {
		t.Fatal(err)
	}
	if p := recvPublish(t, k2); p.Topic != "rs2/new" || p.PacketID < 0x8000 {
		t.Fatalf("got %+v: not from the high half", p)
	}

	// n1 comes back: the message it had queued is shipped to n2; the two
	// parked for it while it was gone, which n2 had too, are not.
	srv, err := tern.New(&tern.Options{SysInterval: -1, Logger: testLogger(t, "n1"), Store: openStore()})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := New(srv, n1opts)
	if err != nil {
		t.Fatal(err)
	}
	cl.reg.shipMargin = 0 // one clock
	srv.AddHook(cl)
	ts, err := serve(srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(ts.Server) })
	waitReady(t, cl)
	// What n1 had queued arrives as a new message; what it had in flight,
	// with its packet identifier and DUP set: the client, which still holds
	// the identifier, does not deliver it twice [MQTT-4.3.3-10].
	var got []string
	for range 2 {
		p := recvPublish(t, k2)
		got = append(got, p.Topic)
		if p.Topic == "rs2/inflight" && (p.PacketID != held.PacketID || !p.Dup) {
			t.Fatalf("sent again as %+v, not with packet id %d and DUP", p, held.PacketID)
		}
	}
	if slices.Sort(got); !slices.Equal(got, []string{"rs/queued", "rs2/inflight"}) {
		t.Fatalf("got %v, want what n1 had queued and in flight", got)
	}
	k2.Send(&packets.Pubrec{PacketID: held.PacketID})
	if rel, ok := k2.Recv().(*packets.Pubrel); !ok || rel.PacketID != held.PacketID {
		t.Fatalf("got %+v, want its PUBREL", rel)
	}
	k2.Send(&packets.Pubcomp{PacketID: held.PacketID})
	// The client holds none of n1's packet identifiers now: a later
	// restore may keep its state again.
	terntest.Eventually(t, "the record to say nothing of n1's identifiers is pending", func() bool {
		val, _, err := n2.cl.leaderGet(context.Background(), "tern_subs", sessionKey("keeper"))
		if err != nil {
			return false
		}
		r, err := decodeSubsRecord(val)
		return err == nil && r.high && !r.pending && r.from == ""
	})
	publish("rs/final", 5)
	if p := recvPublish(t, k2); p.Topic != "rs/final" {
		t.Fatalf("got %s again", p.Topic)
	}
	if _, ok := ts.SessionInfo("keeper"); ok {
		t.Fatal("the session is still on n1")
	}

	// A clean start on n3 ends the session: no subscriptions to restore
	// any more. Then the session ends (Session Expiry 0 at DISCONNECT):
	// the registry entry goes too.
	if !kvHas(t, n2, kvSubs, "keeper") {
		t.Fatal("no subscriptions record")
	}
	clean := *connect
	clean.CleanStart = true
	k3, ack := connectUntil(t, n3, &clean)
	if ack.SessionPresent {
		t.Fatal("session present after a clean start")
	}
	k2.ExpectClosed()
	terntest.Eventually(t, "the subscriptions record of the ended session removed", func() bool { return !kvHas(t, n2, kvSubs, "keeper") })
	k3.Send(&packets.Disconnect{Properties: packets.Properties{SessionExpiry: packets.Uint32(0)}})
	k3.ExpectClosed()
	terntest.Eventually(t, "the records of the ended session removed", func() bool {
		return !kvHas(t, n2, kvSubs, "keeper") && !kvHas(t, n2, kvSess, "keeper")
	})
}

// A subscriptions record round-trips; one too large is kept as such, and
// the ship to a node that restored a session skips what that node
// received directly.
func TestSubsRecord(t *testing.T) {
	subs := []storage.Subscription{{ClientID: "c", Filter: "a/#", QoS: 1, Identifier: 7}, {ClientID: "c", Group: "g", Filter: "b"}}
	r, err := decodeSubsRecord(encodeSubsRecord("c", &subsRecord{epoch: 9, node: "n2", restored: 42, settled: 43,
		confirmed: map[string]int64{"n1": 44, "n3": 45}, slow: []string{"n4"}, subs: subs}))
	if err != nil || r.epoch != 9 || r.node != "n2" || r.restored != 42 || r.settled != 43 || len(r.confirmed) != 2 ||
		r.confirmed["n3"] != 45 || len(r.slow) != 1 || r.slow[0] != "n4" || len(r.subs) != 2 || r.subs[0].Identifier != 7 ||
		r.subs[1].Group != "g" || r.tooLarge || r.high {
		t.Fatalf("%+v %v", r, err)
	}
	if r, err := decodeSubsRecord(encodeSubsRecord("c", &subsRecord{epoch: 9, node: "n2", high: true, subs: subs})); err != nil || !r.high {
		t.Fatalf("high record %+v %v", r, err)
	}
	big := make([]storage.Subscription, 0, 3000)
	for range cap(big) {
		big = append(big, storage.Subscription{ClientID: "c", Filter: strings.Repeat("x", 200)})
	}
	b := encodeSubsRecord("c", &subsRecord{epoch: 1, node: "n1", subs: big})
	if r, err := decodeSubsRecord(b); err != nil || !r.tooLarge || len(b) > maxSubsRecord {
		t.Fatalf("large record: %d bytes, %+v %v", len(b), r, err)
	}
	b = encodeSubsRecord("c", &subsRecord{epoch: 1, node: "n1", high: true, subs: big})
	if r, err := decodeSubsRecord(b); err != nil || !r.tooLarge || !r.high {
		t.Fatalf("large high record: %+v %v", r, err)
	}

	st := &tern.SessionState{
		Messages: []storage.Message{{ID: 1, Topic: "a/1", Created: 100}, {ID: 2, Topic: "a/2", Created: 200},
			{ID: 3, Topic: "a/3", Created: 300}, {ID: 4, Topic: "other", Created: 300}, {ID: 5, Topic: "a/5", Created: 300}},
		Deliveries: []storage.Delivery{{MessageID: 1}, {MessageID: 2}, {MessageID: 3}, {MessageID: 1}, {MessageID: 4},
			{MessageID: 5, ShareGroup: "g", ShareFilter: "a/#"}},
	}
	rec := &subsRecord{restored: 150, subs: []storage.Subscription{{Filter: "a/#"}, {Group: "g", Filter: "other"}}}
	fresh := func() *tern.SessionState {
		c := *st
		c.Messages, c.Deliveries = slices.Clone(st.Messages), slices.Clone(st.Deliveries)
		return &c
	}
	if n := skipDelivered(fresh(), rec, shipRule{}); n != 0 {
		t.Fatal("skipped without a restore time")
	}
	// The shipping node started at 250 and routed a/# to the new node
	// from 280: message 3 (300) went there too, message 2 (200, parked
	// here before the start) did.
	rule := shipRule{since: 200, selfStart: 250, margin: 10, routedAt: func(group, filter string) int64 {
		if group == "" && filter == "a/#" {
			return 280
		}
		return 0
	}}
	if st2 := fresh(); skipDelivered(st2, rec, rule) != 2 {
		t.Fatalf("with the route from 280: %+v", st2)
	}
	rule.routedAt = func(string, string) int64 { return 295 } // 300 < 295 + 10: perhaps received here before
	if st2 := fresh(); skipDelivered(st2, rec, rule) != 1 || st2.Deliveries[1].MessageID != 3 {
		t.Fatalf("with the route from 295: %+v", st2)
	}
	rule.routedAt = func(string, string) int64 { return 0 } // never routed there: only what came before the start
	if st2 := fresh(); skipDelivered(st2, rec, rule) != 1 {
		t.Fatalf("without the route: %+v", st2)
	}
	// Clients came in at 310: message 3 (300), from a client, was parked
	// here; from the in-process client it might be this node's own.
	rule.ownFrom, rule.inline = 310, "$inline"
	if st2 := fresh(); skipDelivered(st2, rec, rule) != 2 {
		t.Fatalf("before the clients came in: %+v", st2)
	}
	st.Messages[2].Origin = "$inline"
	if st2 := fresh(); skipDelivered(st2, rec, rule) != 1 {
		t.Fatalf("the in-process client's, before the clients came in: %+v", st2)
	}
	st.Messages[2].Origin = ""
	// 2 and 3: after the restore, on the record's filter; 4: only a shared
	// filter of the record matches; 5: for a shared subscription.
	if n := skipDelivered(st, rec, shipRule{since: 200}); n != 2 || len(st.Deliveries) != 4 || len(st.Messages) != 3 {
		t.Fatalf("skipped %d: %+v", n, st)
	}
	// A QoS 2 message in flight goes all the same: the client may hold
	// its packet identifier (the new node releases it).
	inflight := &tern.SessionState{Messages: []storage.Message{{ID: 1, Topic: "a/1", Created: 300}, {ID: 2, Topic: "a/2", Created: 300}},
		Deliveries: []storage.Delivery{{MessageID: 1, QoS: 2, PacketID: 7}, {MessageID: 2, QoS: 1, PacketID: 8}}}
	if n := skipDelivered(inflight, rec, shipRule{since: 200}); n != 1 || len(inflight.Deliveries) != 1 || inflight.Deliveries[0].PacketID != 7 {
		t.Fatalf("in flight: skipped %d: %+v", n, inflight)
	}
}

// A node that does not answer the handover (alive, by its heartbeats) is
// treated as gone: the session is restored from tern_subs. The session
// became persistent when resumed with a Session Expiry: its subscriptions
// were replicated then.
func TestRestoreUnanswered(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	first := nodes[0].Dial(t, packets.V5)
	first.Connect(&packets.Connect{ClientID: "patient", KeepAlive: 60}) // ends with its connection
	subscribe(t, first, "un/#", 1)
	connect := &packets.Connect{ClientID: "patient", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}}
	c := nodes[0].Dial(t, packets.V5)
	if ack := c.Connect(connect); !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	first.ExpectClosed()
	c.Send(&packets.Disconnect{})
	c.ExpectClosed()
	terntest.Eventually(t, "offline", func() bool { _, ok := nodes[0].ClientInfo("patient"); return !ok })
	for _, s := range nodes[0].cl.fwd.subs { // n1 stops answering handovers
		if s.Subject == "tern.n.n1.ctl" {
			s.Unsubscribe()
		}
	}
	nodes[0].cl.nc.Flush()
	c2 := nodes[1].Dial(t, packets.V5)
	if ack := c2.Connect(connect); ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("CONNACK %+v: want success, session present 1 (subscriptions restored, the client's state kept: see restoreSubs)", ack)
	}
	pub := nodes[2].Dial(t, packets.V5)
	pub.MustConnect("pub")
	pub.Send(&packets.Publish{Topic: "un/1", QoS: 1, PacketID: 1, Payload: []byte("x")})
	pub.Recv()
	if p := recvPublish(t, c2); p.Topic != "un/1" {
		t.Fatalf("got %s", p.Topic)
	}
}

// The time after which the other nodes routed to the restoring node: the
// latest confirmation but this node's own, unless a node neither
// confirmed nor was gone at the restore (nor started once the routes were
// written).
// A node that came back before another node restored one of its sessions
// from tern_subs (it thought the node gone) looked for sessions to ship
// too early to see that one: the restoring node's notice makes it ship
// the session, with what it queued, instead of keeping it for good.
func TestShipOnTakenNotice(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	connect := &packets.Connect{ClientID: "mover", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}}
	k := n1.Dial(t, packets.V5)
	k.Connect(connect)
	subscribe(t, k, "tk/#", 1)
	k.Send(&packets.Disconnect{})
	k.ExpectClosed()
	terntest.Eventually(t, "offline", func() bool { _, ok := n1.ClientInfo("mover"); return !ok })
	pub := n3.Dial(t, packets.V5)
	pub.MustConnect("pub")
	pub.Send(&packets.Publish{Topic: "tk/1", QoS: 1, PacketID: 1, Payload: []byte("queued on n1")})
	if ack, ok := pub.Recv().(*packets.Puback); !ok || ack.ReasonCode != 0 {
		t.Fatalf("PUBACK %+v", ack)
	}
	// n2 owns the session now, as after a restore while n1 was cut off.
	ctx, cancel := context.WithTimeout(context.Background(), terntest.Timeout)
	defer cancel()
	rev, err := n2.cl.kvSess.Put(ctx, sessionKey("mover"), ownerValue("n2", true))
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.ImportSession(&tern.SessionState{
		Session:       storage.Session{ClientID: "mover", Version: 5, Expiry: 600, DisconnectedAt: time.Now().UnixNano(), HighIDs: true},
		Subscriptions: []storage.Subscription{{ClientID: "mover", Filter: "tk/#", QoS: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	n2.cl.reg.tellTaken("n1", "mover", rev)
	terntest.Eventually(t, "the session shipped to n2", func() bool {
		_, here := n1.SessionInfo("mover")
		return !here
	})
	c := n2.Dial(t, packets.V5)
	if ack := c.Connect(connect); !ack.SessionPresent {
		t.Fatalf("CONNACK %+v", ack)
	}
	if p := recvPublish(t, c); string(p.Payload) != "queued on n1" {
		t.Fatalf("got %q", p.Payload)
	}
	if got := n1.cl.fwd.counters().TakenNotices; got != 1 {
		t.Fatalf("TakenNotices %d, want 1", got)
	}
}

// A notice that comes before the node is ready (its park stream not set
// up yet: a soak run crashed on it) does nothing: shipLost runs once the
// node is ready.
func TestShipTakenBeforeReady(t *testing.T) {
	r := &registry{c: &Cluster{opts: Options{Node: "n1"}}}
	r.shipTaken("x") // no server, no park stream: must not touch them
}

func TestOthersRouted(t *testing.T) {
	r := &registry{c: &Cluster{opts: Options{Node: "n1"}}}
	rec := &subsRecord{node: "n2", restored: 100, confirmed: map[string]int64{"n1": 500, "n3": 120}}
	for _, tc := range []struct {
		name    string
		settled int64
		slow    []string
		starts  map[string]int64
		want    int64
	}{
		{"all confirmed", 0, nil, map[string]int64{"n1": 900, "n2": 10, "n3": 10}, 120},
		{"n4 gone at the restore, not back", 0, nil, map[string]int64{"n1": 900, "n4": 50}, 120},
		{"n4 back before the routes were written", 0, nil, map[string]int64{"n4": 150}, 0},
		{"n4 back once they were", 140, nil, map[string]int64{"n4": 150}, 120},
		{"n4 slow", 0, []string{"n4"}, map[string]int64{"n4": 50}, 0},
		{"n4 slow, restarted after the routes were written", 140, []string{"n4"}, map[string]int64{"n4": 150}, 120},
	} {
		rc := *rec
		rc.settled, rc.slow = tc.settled, tc.slow
		if got, _ := r.othersRouted(&rc, tc.starts); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
