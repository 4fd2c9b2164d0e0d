package tern_test

// Tests of the seams a cluster plugs into: remote routes and the
// acknowledgements that wait for them, messages from other nodes, the
// filters a node subscribes to, sessions that move between servers, and
// refusals that name another server.

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/memory"
	"github.com/ternmq/tern/terntest"
)

// fakeRemote records what it is given; it holds acknowledgements until
// release is called.
type fakeRemote struct {
	mu        sync.Mutex
	got       []tern.Delivery
	msgs      []*tern.Message
	acks      []*tern.Ack
	reachable bool
	hold      bool
}

func (f *fakeRemote) Forward(m *tern.Message, d tern.Delivery, ack *tern.Ack) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, d)
	f.msgs = append(f.msgs, m)
	if ack != nil && f.hold {
		ack.Hold()
		f.acks = append(f.acks, ack)
	}
}

func (f *fakeRemote) Reachable() bool { return f.reachable }

func (f *fakeRemote) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

// release releases every held acknowledgement with err.
func (f *fakeRemote) release(err error) {
	f.mu.Lock()
	acks := f.acks
	f.acks = nil
	f.mu.Unlock()
	for _, a := range acks {
		a.Release(err)
	}
}

// A message matching several routes of one remote is forwarded to it once;
// a QoS 1 PUBACK waits until the remote releases its hold, in PUBLISH
// order [MQTT-4.6.0-2]; $SYS messages and messages from other nodes
// (Inject) never go to a remote.
func TestRemoteRoutes(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	r := &fakeRemote{reachable: true, hold: true}
	for _, f := range []string{"a/+", "a/#", "a/b"} {
		if err := srv.AddRemoteRoute("node2", r, "", f); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.AddRemoteRoute("", r, "", "x"); !errors.Is(err, tern.ErrInvalidRoute) {
		t.Fatalf("empty id: %v", err)
	}
	pub := srv.Dial(t, packets.V5)
	pub.MustConnect("pub")
	pub.Send(&packets.Publish{Topic: "a/b", QoS: 1, PacketID: 1, Payload: []byte("1")})
	pub.Send(&packets.Publish{Topic: "a/b", QoS: 1, PacketID: 2, Payload: []byte("2")})
	terntest.Eventually(t, "two forwards", func() bool { return r.count() == 2 })
	if _, err := pub.TryRecv(100 * time.Millisecond); err == nil {
		t.Fatal("PUBACK before the remote released the message")
	}
	r.release(nil)
	for _, want := range []uint16{1, 2} {
		ack, ok := pub.Recv().(*packets.Puback)
		if !ok || ack.PacketID != want || ack.ReasonCode != packets.Success {
			t.Fatalf("got %+v, want PUBACK %d", ack, want)
		}
	}
	r.mu.Lock()
	d := r.got[0]
	r.mu.Unlock()
	if d.Route != "node2" || d.ClientID != "" || d.QoS != 1 || d.Group != "" {
		t.Fatalf("delivery %+v", d)
	}

	// In-process publishes wait for nothing; Inject never forwards.
	r.hold = false
	srv.Publish("a/c", []byte("x"), false, 1)
	if n := r.count(); n != 3 {
		t.Fatalf("%d forwards after an in-process publish, want 3", n)
	}
	inj := srv.Inject(tern.MessageFromRecord(&storage.Message{Topic: "a/b", Payload: []byte("remote"), QoS: 1}), "", "")
	if n := r.count(); n != 3 || inj.Queued != 0 {
		t.Fatalf("Inject forwarded (%d forwards, queued %d)", n, inj.Queued)
	}
	if n := srv.RemoveRemoteRoutes("node2"); n != 3 {
		t.Fatalf("removed %d routes, want 3", n)
	}
}

// holdingRemote starts a server routing "t" to a remote that holds the
// acknowledgements of what it is sent, and connects a publisher with a
// persistent session (CONNECT connect).
func holdingRemote(t *testing.T) (*terntest.Server, *fakeRemote, *packets.Connect, *terntest.Conn) {
	t.Helper()
	srv := terntest.NewServer(t, nil)
	r := &fakeRemote{reachable: true, hold: true}
	srv.AddRemoteRoute("node2", r, "", "t")
	connect := &packets.Connect{ClientID: "pub", Properties: packets.Properties{SessionExpiry: packets.Uint32(60)}}
	pub := srv.Dial(t, packets.V5)
	pub.Connect(connect)
	return srv, r, connect, pub
}

// A remote that fails to make a message safe gets the publisher
// disconnected instead of acknowledged, so the client sends it again; a
// QoS 2 message sent again (DUP, same packet identifier, session resumed)
// is routed again, not taken for a resend of one already acknowledged
// [MQTT-4.3.3-10], so the remote gets it.
func TestRemoteAckFailure(t *testing.T) {
	srv, r, connect, pub := holdingRemote(t)
	pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Payload: []byte("x")})
	pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 8, Payload: []byte("y")}) // behind 7: never acknowledged either
	terntest.Eventually(t, "forward", func() bool { return r.count() == 2 })
	r.mu.Lock()
	first := r.acks[0]
	r.acks = r.acks[1:]
	r.mu.Unlock()
	first.Release(errors.New("node gone, nowhere to park"))
	for _, pk := range pub.ExpectClosed() {
		if _, ok := pk.(*packets.Pubrec); ok {
			t.Fatal("PUBREC for a message the remote failed")
		}
	}
	terntest.Eventually(t, "offline", func() bool { si, ok := srv.SessionInfo("pub"); return ok && !si.Online })
	pub2 := srv.Dial(t, packets.V5)
	if ack := pub2.Connect(connect); !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	r.release(nil) // 8's hold, too late: its connection is gone
	pub2.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("x")})
	pub2.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 8, Dup: true, Payload: []byte("y")})
	terntest.Eventually(t, "the resends forwarded", func() bool { return r.count() == 4 })
	r.release(nil)
	for _, id := range []uint16{7, 8} {
		if rec, ok := pub2.Recv().(*packets.Pubrec); !ok || rec.PacketID != id || rec.ReasonCode.IsError() {
			t.Fatalf("got %+v", rec)
		}
	}
}

// A QoS 2 message of a persistent session goes to another node only once
// its packet identifier is committed to the store: a server killed before
// would forget the identifier, and the client's copy sent again after the
// restart would be a new message to the other nodes, delivered twice
// [MQTT-4.3.3-10].
func TestRemoteForwardAfterInboundCommit(t *testing.T) {
	st := &blockingStore{Store: memory.New(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	srv := terntest.NewServer(t, &tern.Options{Store: st})
	var released sync.Once
	release := func() { released.Do(func() { close(st.release) }) }
	t.Cleanup(release) // before the server's shutdown, which waits for the commit
	r := &fakeRemote{reachable: true}
	srv.AddRemoteRoute("node2", r, "", "t")
	pub := srv.Dial(t, packets.V5)
	pub.Connect(&packets.Connect{ClientID: "pub", Properties: packets.Properties{SessionExpiry: packets.Uint32(60)}})
	st.armed.Store(true)
	pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 1, Payload: []byte("x")})
	<-st.entered
	terntest.Eventually(t, "the PUBLISH routed", func() bool { return srv.Stats().MessagesReceived == 1 })
	if n := r.count(); n != 0 {
		t.Fatalf("forwarded %d times before the packet identifier was committed", n)
	}
	release()
	terntest.Eventually(t, "forwarded once committed", func() bool { return r.count() == 1 })
	if rec, ok := pub.Recv().(*packets.Pubrec); !ok || rec.PacketID != 1 || rec.ReasonCode.IsError() {
		t.Fatalf("got %+v", rec)
	}
}

// A QoS 2 message whose PUBREC still waits for another node when its
// client comes back on a new connection and sends it again: the new
// PUBREC must not say it is safe before that node has it, so the message
// is routed to it again (Delivery.Again) and the PUBREC waits for that.
// Without it, a first forward that then fails would leave the message
// acknowledged and lost.
func TestRemoteAckPendingResend(t *testing.T) {
	srv, r, connect, pub := holdingRemote(t)
	pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Payload: []byte("x")})
	terntest.Eventually(t, "forward", func() bool { return r.count() == 1 })
	pub.Close()
	terntest.Eventually(t, "offline", func() bool { si, ok := srv.SessionInfo("pub"); return ok && !si.Online })
	pub2 := srv.Dial(t, packets.V5)
	if ack := pub2.Connect(connect); !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	pub2.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("x")})
	terntest.Eventually(t, "forwarded again", func() bool { return r.count() == 2 })
	if pk, err := pub2.TryRecv(200 * time.Millisecond); err == nil {
		t.Fatalf("%+v before the other node took the message", pk)
	}
	r.mu.Lock()
	first, again := r.acks[0], r.acks[1]
	d := r.got[1]
	r.mu.Unlock()
	if !d.Again {
		t.Fatalf("forwarded %+v, want Again", d)
	}
	first.Release(errors.New("node gone, nowhere to park")) // too late for the first connection
	again.Release(nil)
	if rec, ok := pub2.Recv().(*packets.Pubrec); !ok || rec.PacketID != 7 || rec.ReasonCode.IsError() {
		t.Fatalf("got %+v", rec)
	}
}

// Inject delivers a message from another node to local subscribers; with a
// group, to one member of that group only, and without one to no group:
// the node it came from chose a member of each group among all nodes'.
func TestInject(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	var mu sync.Mutex
	var got []string
	handler := func(name string) tern.MessageHandler {
		return func(m *tern.Message) {
			mu.Lock()
			got = append(got, name+":"+string(m.Payload))
			mu.Unlock()
		}
	}
	srv.Subscribe("s/+", 1, handler("plain"))
	srv.Subscribe("$share/g/s/+", 2, handler("g1"))
	srv.Subscribe("$share/g/s/+", 3, handler("g2"))
	srv.Inject(tern.MessageFromRecord(&storage.Message{Topic: "s/1", Payload: []byte("a")}), "", "")
	srv.Inject(tern.MessageFromRecord(&storage.Message{Topic: "s/1", Payload: []byte("b")}), "g", "s/+")
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(got)
	if len(got) != 2 || got[1] != "plain:a" || got[0] != "g1:b" && got[0] != "g2:b" {
		t.Fatalf("got %v: want plain:a and one member with b", got)
	}
}

// A shared group prefers a member here that is online, then a reachable
// remote member, then an offline member here.
func TestSharedPrefersLocal(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	r := &fakeRemote{reachable: true}
	srv.AddRemoteRoute("node2", r, "g", "t")
	off := srv.Dial(t, packets.V5)
	off.Connect(&packets.Connect{ClientID: "off", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(300)}})
	off.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "$share/g/t", QoS: 1}}})
	off.Recv()
	off.Send(&packets.Disconnect{})
	off.ExpectClosed()
	terntest.Eventually(t, "offline", func() bool { _, ok := srv.ClientInfo("off"); return !ok })

	for range 4 {
		srv.Publish("t", []byte("x"), false, 1)
	}
	if n := r.count(); n != 4 {
		t.Fatalf("reachable remote got %d of 4 with only an offline member here", n)
	}
	var n int
	var mu sync.Mutex
	srv.Subscribe("$share/g/t", 1, func(*tern.Message) { mu.Lock(); n++; mu.Unlock() })
	for range 4 {
		srv.Publish("t", []byte("x"), false, 1)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 4 || r.count() != 4 {
		t.Fatalf("local handler got %d, remote %d more: want 4 and 0", n, r.count()-4)
	}
}

// filterLog is a FilterObserver that records filters and answers after a
// delay, or refuses one filter.
type filterLog struct {
	mu      sync.Mutex
	events  []string
	refuse  string
	delayed chan func()
}

func (f *filterLog) ID() string { return "filter-log" }
func (f *filterLog) FilterAdded(group, filter string, done func(error)) {
	f.mu.Lock()
	f.events = append(f.events, "+"+group+"/"+filter)
	f.mu.Unlock()
	switch {
	case filter == f.refuse:
		done(errors.New("no route"))
	case f.delayed != nil:
		f.delayed <- func() { done(nil) }
	default:
		done(nil)
	}
}
func (f *filterLog) FilterRemoved(group, filter string) {
	f.mu.Lock()
	f.events = append(f.events, "-"+group+"/"+filter)
	f.mu.Unlock()
}
func (f *filterLog) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

// FilterObservers see the first subscription to a filter and the last one
// going, over sessions and in-process handlers; the SUBACK waits for them,
// and a refusal is SUBACK 0x80.
func TestFilterObserver(t *testing.T) {
	fl := &filterLog{refuse: "no/route", delayed: make(chan func(), 1)}
	srv := terntest.NewServer(t, nil, fl)
	c1 := srv.Dial(t, packets.V5)
	c1.MustConnect("c1")
	c1.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "a/#", QoS: 1}}})
	release := <-fl.delayed
	if _, err := c1.TryRecv(100 * time.Millisecond); err == nil {
		t.Fatal("SUBACK before the observer accepted the filter")
	}
	release()
	if ack := c1.Recv().(*packets.Suback); ack.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %v", ack.ReasonCodes)
	}
	fl.delayed = nil
	c2 := srv.Dial(t, packets.V5)
	c2.MustConnect("c2")
	c2.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "a/#", QoS: 1}, {Filter: "no/route", QoS: 1}}})
	if ack := c2.Recv().(*packets.Suback); !slices.Equal(ack.ReasonCodes, []packets.ReasonCode{1, packets.UnspecifiedError}) {
		t.Fatalf("SUBACK %v, want granted and 0x80", ack.ReasonCodes)
	}
	srv.Subscribe("$share/g/b", 1, func(*tern.Message) {})
	c1.Send(&packets.Disconnect{})
	c1.ExpectClosed()
	// The client sees the end before the server has ended the session
	// (and removed its subscriptions): wait, or "-/a/#" may come last.
	terntest.Eventually(t, "c1's session to end", func() bool { _, ok := srv.SessionInfo("c1"); return !ok })
	c2.Send(&packets.Unsubscribe{PacketID: 2, Filters: []string{"a/#"}})
	c2.Recv()
	srv.Unsubscribe("$share/g/b", 1)
	want := []string{"+/a/#", "+/no/route", "+g/b", "-/a/#", "-g/b"}
	terntest.Eventually(t, "filter events", func() bool { return slices.Equal(fl.log(), want) })
}

// A session moves from one server to another: the client's connection on
// the first ends with 0x8E, and on the second it finds its subscriptions,
// its queued messages and its QoS 2 message in flight with the same packet
// identifier [MQTT-4.4.0-1]; a delivery routed on the first after the move
// reaches the moved-to remote.
func TestExportImportSession(t *testing.T) {
	a := terntest.NewServer(t, nil)
	b := terntest.NewServer(t, nil)
	sub := a.Dial(t, packets.V5)
	sub.Connect(&packets.Connect{ClientID: "mover", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}})
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "m/#", QoS: 2}}})
	sub.Recv()
	a.Publish("m/1", []byte("inflight"), false, 2)
	p := sub.Recv().(*packets.Publish) // not acknowledged: stays in flight
	sub.Send(&packets.Disconnect{})
	sub.ExpectClosed()
	terntest.Eventually(t, "offline", func() bool { _, ok := a.ClientInfo("mover"); return !ok })
	a.Publish("m/2", []byte("queued"), false, 1)

	moved := &fakeRemote{reachable: true}
	st, err := a.ExportSession("mover", false, moved, time.Minute, 0)
	if err != nil || st == nil {
		t.Fatalf("export: %v %v", st, err)
	}
	if len(st.Subscriptions) != 1 || len(st.Deliveries) != 2 || st.Deliveries[0].PacketID != p.PacketID {
		t.Fatalf("state %+v", st)
	}
	if _, ok := a.SessionInfo("mover"); ok {
		t.Fatal("session still on the first server")
	}
	a.Publish("m/3", []byte("late"), false, 1)
	if moved.count() != 1 || moved.got[0].ClientID != "mover" {
		t.Fatalf("late delivery not forwarded: %+v", moved.got)
	}
	// One from another node is not (that node routes it to where the
	// session is now), unless it was parked for this one.
	if in := a.Inject(tern.MessageFromRecord(&storage.Message{Topic: "m/5", Payload: []byte("routed"), QoS: 1}), "", "m/#"); in.Queued != 0 || moved.count() != 1 {
		t.Fatalf("injected: %+v, forwarded %+v", in, moved.got)
	}
	if in := a.InjectParked(tern.MessageFromRecord(&storage.Message{Topic: "m/5", Payload: []byte("parked"), QoS: 1}), "", "m/#"); in.Queued != 1 {
		t.Fatalf("injected parked: %+v", in)
	}
	if moved.count() != 2 || moved.got[1].ClientID != "mover" {
		t.Fatalf("parked delivery not forwarded: %+v", moved.got)
	}

	if err := b.ImportSession(st); err != nil {
		t.Fatal(err)
	}
	c := b.Dial(t, packets.V5)
	ack := c.Connect(&packets.Connect{ClientID: "mover", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}})
	if !ack.SessionPresent {
		t.Fatal("session not present after import")
	}
	re := c.Recv().(*packets.Publish)
	if !re.Dup || re.PacketID != p.PacketID || string(re.Payload) != "inflight" {
		t.Fatalf("resent %+v", re)
	}
	if q := c.Recv().(*packets.Publish); string(q.Payload) != "queued" {
		t.Fatalf("queued %q", q.Payload)
	}
	b.Publish("m/4", []byte("new"), false, 0)
	if n := c.Recv().(*packets.Publish); string(n.Payload) != "new" {
		t.Fatalf("subscription not imported: got %q", n.Payload)
	}
}

// gateRefuser refuses CONNECTs with 0x9C and a Server Reference.
type gateRefuser struct{}

func (gateRefuser) ID() string { return "refuser" }
func (gateRefuser) AttachSession(c *tern.Client, _ bool, _ uint32) packets.ReasonCode {
	c.SetServerReference("other:1883")
	return packets.UseAnotherServer
}

// A SessionGate refusal carries its Server Reference to v5 clients
// (property 0x1C, section 4.11 Server redirection); a 3.1.1 client gets
// return code 3 Server unavailable. DisconnectAll sends one too.
func TestServerReference(t *testing.T) {
	srv := terntest.NewServer(t, nil, gateRefuser{})
	c := srv.Dial(t, packets.V5)
	ack := c.Connect(&packets.Connect{ClientID: "x", CleanStart: true})
	if ack.ReasonCode != packets.UseAnotherServer || ack.Properties.ServerReference != "other:1883" {
		t.Fatalf("CONNACK %v %q", ack.ReasonCode, ack.Properties.ServerReference)
	}
	c3 := srv.Dial(t, packets.V311)
	if ack := c3.Connect(&packets.Connect{ClientID: "y", CleanStart: true}); ack.ReasonCode != packets.ServerUnavailable {
		t.Fatalf("3.1.1 CONNACK %v", ack.ReasonCode)
	}

	open := terntest.NewServer(t, nil)
	v5 := open.Dial(t, packets.V5)
	v5.MustConnect("v5")
	if n := open.DisconnectAll(packets.UseAnotherServer, "b:1883"); n != 1 {
		t.Fatalf("disconnected %d", n)
	}
	got := v5.ExpectClosed()
	d, ok := got[len(got)-1].(*packets.Disconnect)
	if !ok || d.ReasonCode != packets.UseAnotherServer || d.Properties.ServerReference != "b:1883" {
		t.Fatalf("got %+v", got)
	}
}

// retainLog is a RetainObserver.
type retainLog struct {
	mu     sync.Mutex
	topics []string
}

func (r *retainLog) ID() string { return "retain-log" }
func (r *retainLog) OnRetained(m *tern.Message, _ *tern.Ack) {
	r.mu.Lock()
	r.topics = append(r.topics, m.Topic+"="+string(m.Payload))
	r.mu.Unlock()
}

// RetainObservers see retained changes published here, not those set with
// SetRetained (from another node) nor $SYS.
func TestRetainObserver(t *testing.T) {
	rl := &retainLog{}
	srv := terntest.NewServer(t, nil, rl)
	srv.Publish("r/1", []byte("a"), true, 1)
	srv.Publish("r/1", nil, true, 1)
	srv.SetRetained(tern.MessageFromRecord(&storage.Message{Topic: "r/2", Payload: []byte("b"), Retain: true}))
	if m, ok := srv.RetainedMessage("r/2"); !ok || string(m.Payload) != "b" {
		t.Fatal("SetRetained did not set")
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if !slices.Equal(rl.topics, []string{"r/1=a", "r/1="}) {
		t.Fatalf("observed %v", rl.topics)
	}
}

// A cluster node that took over the session of a node that died numbers
// new messages from the other half of the packet identifiers
// (storage.Session.HighIDs), and what that node had in flight, shipped
// late into the session while its client is connected, keeps its packet
// identifiers: a PUBLISH sent again with DUP set [MQTT-3.3.1-1], which the
// client, still holding the identifier, does not deliver twice
// [MQTT-4.3.3-10], and a PUBREL for one released [MQTT-4.4.0-1]. One of
// the session's own half is queued as a new message.
func TestImportLateInflightOtherHalf(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	sess := storage.Session{ClientID: "h", Version: packets.V5, Expiry: 600}
	restored := sess
	restored.HighIDs = true
	if err := srv.ImportSession(&tern.SessionState{Session: restored,
		Subscriptions: []storage.Subscription{{ClientID: "h", Filter: "m/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	c := srv.Dial(t, packets.V5)
	if ack := c.Connect(&packets.Connect{ClientID: "h", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}}); !ack.SessionPresent {
		t.Fatal("session not present")
	}
	srv.Publish("m/new", []byte("new"), false, 2)
	if p := c.Recv().(*packets.Publish); p.PacketID < 0x8000 || p.Dup {
		t.Fatalf("new message %+v: not from the high half", p)
	}
	late := &tern.SessionState{Session: sess,
		Messages: []storage.Message{{ID: 1, Topic: "m/a", Payload: []byte("a"), QoS: 2},
			{ID: 2, Topic: "m/b", Payload: []byte("b"), QoS: 2}, {ID: 3, Topic: "m/c", Payload: []byte("c"), QoS: 2}},
		Deliveries: []storage.Delivery{{ClientID: "h", MessageID: 1, QoS: 2, PacketID: 7},
			{ClientID: "h", MessageID: 2, QoS: 2, PacketID: 9, Released: true},
			{ClientID: "h", MessageID: 3, QoS: 2, PacketID: 0x8005}}}
	if err := srv.ImportSession(late); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		switch p := c.Recv().(type) {
		case *packets.Publish:
			got = append(got, fmt.Sprintf("%s dup=%v high=%v", p.Payload, p.Dup, p.PacketID >= 0x8000))
			if string(p.Payload) == "a" && p.PacketID != 7 {
				t.Fatalf("sent again with packet id %d, not 7", p.PacketID)
			}
		case *packets.Pubrel:
			got = append(got, fmt.Sprintf("pubrel %d", p.PacketID))
		default:
			t.Fatalf("got %T", p)
		}
	}
	slices.Sort(got)
	if want := []string{"a dup=true high=false", "c dup=false high=true", "pubrel 9"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	c.Send(&packets.Pubrec{PacketID: 7})
	if rel, ok := c.Recv().(*packets.Pubrel); !ok || rel.PacketID != 7 {
		t.Fatalf("got %+v, want PUBREL 7", rel)
	}
	c.Close()
	terntest.Eventually(t, "offline", func() bool { si, ok := srv.SessionInfo("h"); return ok && !si.Online })
	st, err := srv.ExportSession("h", false, &fakeRemote{reachable: true}, time.Minute, 0)
	if err != nil || st == nil || !st.Session.HighIDs {
		t.Fatalf("exported %+v %v: the half is not kept", st, err)
	}
}

// A part of a session shipped again with the token it was imported with
// (its sender's request went unanswered: the receiver died after taking
// it) is not taken twice, also after a restart on the same store: the
// token is kept with the session (storage.Session.LastImport).
func TestImportTokenOnce(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			r := &restartable{t: t, open: open, opts: tern.Options{Durability: tern.DurabilitySync}}
			srv := r.start()
			sess := storage.Session{ClientID: "tok", Version: packets.V5, Expiry: 600}
			if err := srv.ImportSession(&tern.SessionState{Session: sess,
				Subscriptions: []storage.Subscription{{ClientID: "tok", Filter: "t/#", QoS: 1}}}); err != nil {
				t.Fatal(err)
			}
			part := &tern.SessionState{Session: sess, Token: "n2:1:0",
				Messages:   []storage.Message{{ID: 1, Topic: "t/1", Payload: []byte("shipped"), QoS: 1}},
				Deliveries: []storage.Delivery{{ClientID: "tok", MessageID: 1, QoS: 1}}}
			if err := srv.ImportSession(part); err != nil {
				t.Fatal(err)
			}
			if err := srv.ImportSession(part); !errors.Is(err, tern.ErrImported) {
				t.Fatalf("second import: %v, want ErrImported", err)
			}
			srv = r.restart()
			if err := srv.ImportSession(part); !errors.Is(err, tern.ErrImported) {
				t.Fatalf("import after a restart: %v, want ErrImported", err)
			}
			next := *part
			next.Token = "n2:1:1"
			if err := srv.ImportSession(&next); err != nil {
				t.Fatalf("the next part: %v", err)
			}
			if si, ok := srv.SessionInfo("tok"); !ok || si.Queued != 2 {
				t.Fatalf("session %+v: want the part once and the next part", si)
			}
		})
	}
}

// What a cluster node that died had in flight, shipped into a session
// made again whose next CONNECT is answered with Session Present 0
// (MarkSessionPartial), is sent all the same after the CONNACK (the
// client, with no state, takes it as new): kept in flight unsent, it
// would take the send quota for good (Receive Maximum 1 here).
func TestPartialSessionSendsImportedInflight(t *testing.T) {
	srv := terntest.NewServer(t, nil, partialGate{})
	sess := storage.Session{ClientID: "h", Version: packets.V5, Expiry: 600}
	if err := srv.ImportSession(&tern.SessionState{Session: sess,
		Subscriptions: []storage.Subscription{{ClientID: "h", Filter: "m/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	late := &tern.SessionState{Session: sess,
		Messages:   []storage.Message{{ID: 1, Topic: "m/a", Payload: []byte("a"), QoS: 2}},
		Deliveries: []storage.Delivery{{ClientID: "h", MessageID: 1, QoS: 2, PacketID: 0x8005}}}
	if err := srv.ImportSession(late); err != nil {
		t.Fatal(err)
	}
	c := srv.Dial(t, packets.V5)
	if ack := c.Connect(&packets.Connect{ClientID: "h", KeepAlive: 60,
		Properties: packets.Properties{SessionExpiry: packets.Uint32(600), ReceiveMaximum: 1}}); ack.SessionPresent {
		t.Fatal("session present")
	}
	srv.Publish("m/new", []byte("new"), false, 2)
	var got []string
	for len(got) < 2 {
		switch p := c.Recv().(type) {
		case *packets.Publish:
			got = append(got, string(p.Payload))
			c.Send(&packets.Pubrec{PacketID: p.PacketID})
		case *packets.Pubrel:
			c.Send(&packets.Pubcomp{PacketID: p.PacketID})
		}
	}
	if got[0] != "a" || got[1] != "new" {
		t.Fatalf("received %q, want the shipped message, then the new one", got)
	}
}

// A QoS 2 message in flight that cannot be sent again (the client came
// back with a Maximum Packet Size it exceeds; counted as too large) is
// released with a PUBREL, not forgotten: the client holds its packet
// identifier and would take the next message numbered so for a resend
// [MQTT-4.3.3-10]. It stays in flight until the PUBCOMP.
func TestResendTooLargeReleases(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	connect := &packets.Connect{ClientID: "small", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}}
	c := srv.Dial(t, packets.V5)
	c.Connect(connect)
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "big/#", QoS: 2}}})
	c.Recv()
	srv.Publish("big/1", make([]byte, 4096), false, 2)
	p := c.Recv().(*packets.Publish) // received, PUBREC lost with the connection
	c.Close()
	terntest.Eventually(t, "offline", func() bool { si, ok := srv.SessionInfo("small"); return ok && !si.Online })
	small := *connect
	small.Properties.MaximumPacketSize = 1024
	c2 := srv.Dial(t, packets.V5)
	if ack := c2.Connect(&small); !ack.SessionPresent {
		t.Fatal("session not present")
	}
	if rel, ok := c2.Recv().(*packets.Pubrel); !ok || rel.PacketID != p.PacketID {
		t.Fatalf("got %+v, want PUBREL %d", rel, p.PacketID)
	}
	if si, _ := srv.SessionInfo("small"); si.Inflight != 1 {
		t.Fatalf("in flight %d before the PUBCOMP", si.Inflight)
	}
	c2.Send(&packets.Pubcomp{PacketID: p.PacketID})
	terntest.Eventually(t, "nothing in flight", func() bool { si, _ := srv.SessionInfo("small"); return si.Inflight == 0 })
	if srv.Stats().Dropped(tern.DropTooLarge) != 1 {
		t.Fatalf("dropped too large: %d", srv.Stats().Dropped(tern.DropTooLarge))
	}
}

// A QoS 2 message that a node that died had in flight, shipped late into
// a session that already took it another way (its duplicate window), is
// released with a PUBREL under its packet identifier, not sent again nor
// forgotten: the client may hold the identifier [MQTT-4.3.3-10].
func TestImportSeenInflightReleased(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	sess := storage.Session{ClientID: "s", Version: packets.V5, Expiry: 600, HighIDs: true}
	if err := srv.ImportSession(&tern.SessionState{Session: sess, DuplicateWindow: time.Minute,
		Subscriptions: []storage.Subscription{{ClientID: "s", Filter: "m/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	c := srv.Dial(t, packets.V5)
	c.Connect(&packets.Connect{ClientID: "s", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}})
	msg := storage.Message{ID: 1, Topic: "m/a", Payload: []byte("a"), QoS: 2, Origin: "pub", Created: 42}
	direct := &tern.SessionState{Session: sess, Messages: []storage.Message{msg},
		Deliveries: []storage.Delivery{{ClientID: "s", MessageID: 1, QoS: 2}}}
	if err := srv.ImportSession(direct); err != nil {
		t.Fatal(err)
	}
	if p := c.Recv().(*packets.Publish); string(p.Payload) != "a" || p.PacketID < 0x8000 {
		t.Fatalf("got %+v", p)
	}
	shipped := &tern.SessionState{Session: sess, Messages: []storage.Message{msg},
		Deliveries: []storage.Delivery{{ClientID: "s", MessageID: 1, QoS: 2, PacketID: 9}}}
	if err := srv.ImportSession(shipped); err != nil {
		t.Fatal(err)
	}
	if rel, ok := c.Recv().(*packets.Pubrel); !ok || rel.PacketID != 9 {
		t.Fatalf("got %+v, want PUBREL 9", rel)
	}
}

// A message for a shared group whose member here has moved to another
// node since (its subscriptions draining here) goes on to it, at any QoS
// and without passOn: parked for this node (InjectParked), or sent here
// by a node that chose this member (Inject), which sent it nowhere else.
func TestInjectSharedMoved(t *testing.T) {
	a := terntest.NewServer(t, nil)
	moved := &fakeRemote{reachable: true}
	exportMover(t, a, "$share/g/m/#", moved)
	m := func(qos byte) *tern.Message {
		return tern.MessageFromRecord(&storage.Message{Topic: "m/5", Payload: []byte("shared"), QoS: qos})
	}
	if in := a.InjectParked(m(1), "g", "m/#"); in.Queued != 1 || moved.count() != 1 || moved.got[0].ClientID != "mover" {
		t.Fatalf("parked shared message not passed on to the moved member: %+v, forwarded %+v", in, moved.got)
	}
	for i, qos := range []byte{1, 0} {
		if in := a.Inject(m(qos), "g", "m/#"); in.Queued != 1 || moved.count() != 2+i || moved.got[1+i].ClientID != "mover" {
			t.Fatalf("QoS %d shared message from another node not passed on to the moved member: %+v, forwarded %+v", qos, in, moved.got)
		}
	}
	// A plain subscription's copy from another node does not go on
	// (passOn 0): the other nodes route it to where the session is now.
	exportMoverAs(t, a, "plain", "m/#", moved, 0)
	if in := a.Inject(m(1), "", ""); in.Queued != 0 || moved.count() != 3 {
		t.Fatalf("a message from another node went on: %+v, forwarded %+v", in, moved.got)
	}
}

// What InjectParked passes on to a session that moved is given an
// acknowledgement to hold, and Then calls back once the other node
// released it (the park stream keeps the message until then); with
// nothing passed on, at once.
func TestInjectParkedThen(t *testing.T) {
	a := terntest.NewServer(t, nil)
	moved := &fakeRemote{reachable: true, hold: true}
	exportMover(t, a, "m/#", moved)
	in := a.InjectParked(tern.MessageFromRecord(&storage.Message{Topic: "m/5", Payload: []byte("parked"), QoS: 1}), "", "m/#")
	done := thenWaits(t, in)
	moved.mu.Lock()
	if len(moved.acks) != 1 {
		moved.mu.Unlock()
		t.Fatalf("acknowledgements to hold: %d", len(moved.acks))
	}
	moved.acks[0].Release(nil)
	moved.mu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	none := a.InjectParked(tern.MessageFromRecord(&storage.Message{Topic: "other", Payload: []byte("x"), QoS: 1}), "", "other")
	none.Then(func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// For passOn after an export, messages from other nodes (Inject) that
// match the moved session's subscriptions are passed on to its new node:
// QoS 1/2 ones, each safe once that node released it (Then), not QoS 0
// ones (they would come twice once the other nodes route there); after
// StopPassingOn's grace, none.
func TestExportPassesOn(t *testing.T) {
	a := terntest.NewServer(t, nil)
	moved := &fakeRemote{reachable: true, hold: true}
	exportMoverFor(t, a, "m/#", moved, time.Minute)
	msg := func(payload string, qos byte) *tern.Message {
		return tern.MessageFromRecord(&storage.Message{Topic: "m/1", Payload: []byte(payload), QoS: qos})
	}
	in := a.Inject(msg("routed", 1), "", "")
	if in.Queued != 1 || !in.Onward() || moved.count() != 1 || moved.got[0].ClientID != "mover" {
		t.Fatalf("injected: %+v, forwarded %+v", in, moved.got)
	}
	done := thenWaits(t, in)
	moved.release(errors.New("not taken"))
	if err := <-done; err == nil {
		t.Fatal("an onward failure not reported")
	}
	if in := a.Inject(msg("qos0", 0), "", ""); in.Queued != 0 || in.Onward() || moved.count() != 1 {
		t.Fatalf("QoS 0 passed on: %+v, forwarded %+v", in, moved.got)
	}
	a.StopPassingOn("mover", 0)
	if in := a.Inject(msg("late", 1), "", ""); in.Queued != 0 || in.Onward() || moved.count() != 1 {
		t.Fatalf("passed on after StopPassingOn: %+v, forwarded %+v", in, moved.got)
	}
	// What was parked for this node still goes on.
	if in := a.InjectParked(msg("parked", 1), "", ""); in.Queued != 1 || moved.count() != 2 {
		t.Fatalf("parked: %+v, forwarded %+v", in, moved.got)
	}
	moved.release(nil)
}

// A message another node sends to a session by name is the session's only
// if it still has a subscription the message matches (SubscribedTo): a
// session that started clean since, or a new one beside the drained
// subscriptions of an earlier session of its id that moved away, does
// not get what the old subscriptions matched [MQTT-3.1.2-4].
func TestSubscribedTo(t *testing.T) {
	a := terntest.NewServer(t, nil)
	x := a.Dial(t, packets.V5)
	x.Connect(&packets.Connect{ClientID: "x", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}})
	subscribeOne(t, x, "m/#", 1)
	subscribeOne(t, x, "$share/g/s/#", 1)
	for _, tc := range []struct {
		id, topic, group, filter string
		want                     bool
	}{
		{"x", "m/1", "", "", true},
		{"x", "other/1", "", "", false},
		{"x", "s/1", "g", "s/#", true},
		{"x", "s/1", "", "", false}, // only as a member of g
		{"x", "s/1", "h", "s/#", false},
		{"nobody", "m/1", "", "", false},
	} {
		if got := a.SubscribedTo(tc.id, tc.topic, tc.group, tc.filter); got != tc.want {
			t.Errorf("SubscribedTo(%q, %q, %q, %q) = %v, want %v", tc.id, tc.topic, tc.group, tc.filter, got, tc.want)
		}
	}

	moved := &fakeRemote{reachable: true}
	exportMoverAs(t, a, "mv", "m/#", moved, 0)
	again := a.Dial(t, packets.V5)
	if ack := again.Connect(&packets.Connect{ClientID: "mv", KeepAlive: 60}); ack.SessionPresent {
		t.Fatal("session present")
	}
	if a.SubscribedTo("mv", "m/1", "", "") {
		t.Fatal("the drained subscriptions of the session that moved taken for the new session's")
	}
}

// thenWaits calls in.Then and checks that it did not call back yet (a
// node it was passed on to holds it): the callback's error comes on the
// channel returned.
func thenWaits(t *testing.T, in tern.Injected) chan error {
	t.Helper()
	done := make(chan error, 1)
	in.Then(func(err error) { done <- err })
	select {
	case <-done:
		t.Fatal("safe before the other node released it")
	default:
	}
	return done
}

// exportMover connects a persistent client "mover" subscribed to filter
// at QoS 1, lets it go offline and exports its session to moved, its
// subscriptions draining on srv for a minute.
func exportMover(t *testing.T, srv *terntest.Server, filter string, moved *fakeRemote) {
	exportMoverFor(t, srv, filter, moved, 0)
}

// exportMoverFor is exportMover with messages from other nodes passed on
// for passOn.
func exportMoverFor(t *testing.T, srv *terntest.Server, filter string, moved *fakeRemote, passOn time.Duration) {
	t.Helper()
	exportMoverAs(t, srv, "mover", filter, moved, passOn)
}

// exportMoverAs is exportMoverFor for the client id.
func exportMoverAs(t *testing.T, srv *terntest.Server, id, filter string, moved *fakeRemote, passOn time.Duration) {
	t.Helper()
	sub := srv.Dial(t, packets.V5)
	sub.Connect(&packets.Connect{ClientID: id, KeepAlive: 60, Properties: packets.Properties{SessionExpiry: packets.Uint32(600)}})
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: 1}}})
	sub.Recv()
	sub.Send(&packets.Disconnect{})
	sub.ExpectClosed()
	terntest.Eventually(t, "offline", func() bool { _, ok := srv.ClientInfo(id); return !ok })
	if st, err := srv.ExportSession(id, false, moved, time.Minute, passOn); err != nil || st == nil {
		t.Fatalf("export: %v %v", st, err)
	}
}
