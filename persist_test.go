package tern_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/memory"
	"github.com/ternmq/tern/storage/pebblestore"
	"github.com/ternmq/tern/terntest"
)

// stores returns the stores restart tests run against: the in-memory one
// (shared by both server instances, as a disk would be) and Pebble.
func stores(t *testing.T) map[string]func() storage.Store {
	dir := t.TempDir()
	var mem storage.Store
	return map[string]func() storage.Store{
		"memory": func() storage.Store {
			if mem == nil {
				mem = memory.New()
			}
			return mem
		},
		"pebble": func() storage.Store {
			st, err := pebblestore.Open(dir, pebblestore.Options{})
			if err != nil {
				t.Fatalf("open pebble: %v", err)
			}
			return st
		},
	}
}

// restartable runs a broker on a store and restarts it on the same store.
type restartable struct {
	t     *testing.T
	open  func() storage.Store
	st    storage.Store
	srv   *terntest.Server
	opts  tern.Options
	hooks []tern.Hook // added to each server started
}

func (r *restartable) start() *terntest.Server {
	r.st = r.open()
	o := r.opts
	o.Store = r.st
	r.srv = terntest.NewServer(r.t, &o, r.hooks...)
	return r.srv
}

func (r *restartable) restart() *terntest.Server {
	r.srv.Close()
	if _, ok := r.st.(*memory.Store); !ok {
		r.st.Close()
	}
	return r.start()
}

func connectStored(t *testing.T, srv *terntest.Server, id string) (*terntest.Conn, *packets.Connack) {
	c := srv.Dial(t, packets.V5)
	ack := c.Connect(&packets.Connect{ClientID: id, KeepAlive: 60,
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
	if ack.ReasonCode != 0 {
		t.Fatalf("connect %s: %v", id, ack.ReasonCode)
	}
	return c, ack
}

// Queued QoS 1 messages, subscriptions and the session itself survive a
// restart of the broker [MQTT-4.1.0-1], [MQTT-3.1.2-4].
func TestPersistQueuedMessagesSurviveRestart(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			r := &restartable{t: t, open: open}
			srv := r.start()
			sub, _ := connectStored(t, srv, "sub")
			sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "q/#", QoS: 1}}})
			sub.Recv()
			sub.Send(&packets.Disconnect{})
			sub.Close()

			pub := srv.Dial(t, packets.V5)
			pub.MustConnect("pub")
			const n = 100
			for i := 1; i <= n; i++ {
				pub.Send(&packets.Publish{Topic: fmt.Sprintf("q/%d", i), QoS: 1, PacketID: uint16(i), Payload: []byte{byte(i)}})
				if ack := pub.Recv().(*packets.Puback); ack.ReasonCode.IsError() {
					t.Fatalf("puback %v", ack.ReasonCode)
				}
			}
			pub.Close()

			srv = r.restart()
			sub, ack := connectStored(t, srv, "sub")
			if !ack.SessionPresent {
				t.Fatal("session not present after restart")
			}
			for i := 1; i <= n; i++ {
				p := sub.Recv().(*packets.Publish)
				if p.Topic != fmt.Sprintf("q/%d", i) {
					t.Fatalf("message %d: topic %q", i, p.Topic)
				}
				sub.Send(&packets.Puback{PacketID: p.PacketID})
			}
			// The subscription came back too: a new message arrives.
			pub = srv.Dial(t, packets.V5)
			pub.MustConnect("pub")
			pub.Send(&packets.Publish{Topic: "q/new", QoS: 1, PacketID: 1, Payload: []byte("x")})
			pub.Recv()
			if p := sub.Recv().(*packets.Publish); p.Topic != "q/new" {
				t.Fatalf("got %q", p.Topic)
			}
		})
	}
}

// A QoS 2 message in flight keeps its packet identifier across a restart
// and is sent again with DUP, so it is not delivered twice [MQTT-4.3.3-7],
// [MQTT-4.4.0-1]; a released one gets its PUBREL again.
func TestPersistInflightQoS2SurvivesRestart(t *testing.T) {
	t.Parallel()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			r := &restartable{t: t, open: open}
			srv := r.start()
			sub, _ := connectStored(t, srv, "sub")
			sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t", QoS: 2}}})
			sub.Recv()
			pub := srv.Dial(t, packets.V5)
			pub.MustConnect("pub")
			for i := 1; i <= 2; i++ {
				pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: uint16(i), Payload: []byte{byte(i)}})
				pub.Recv() // PUBREC
				pub.Send(&packets.Pubrel{PacketID: uint16(i)})
				pub.Recv() // PUBCOMP
			}
			first := sub.Recv().(*packets.Publish)
			second := sub.Recv().(*packets.Publish)
			sub.Send(&packets.Pubrec{PacketID: second.PacketID}) // the second is released
			if rel := sub.Recv().(*packets.Pubrel); rel.PacketID != second.PacketID {
				t.Fatalf("pubrel for %d", rel.PacketID)
			}
			sub.Close()

			srv = r.restart()
			sub, _ = connectStored(t, srv, "sub")
			again := sub.Recv().(*packets.Publish)
			if !again.Dup || again.PacketID != first.PacketID || again.Payload[0] != 1 {
				t.Fatalf("resent %+v, want DUP id %d", again, first.PacketID)
			}
			if rel := sub.Recv().(*packets.Pubrel); rel.PacketID != second.PacketID {
				t.Fatalf("pubrel for %d, want %d", rel.PacketID, second.PacketID)
			}
		})
	}
}

// An inbound QoS 2 message acknowledged with PUBREC before a restart is not
// routed again when the publisher sends it again [MQTT-4.3.3-10].
func TestPersistInboundQoS2SurvivesRestart(t *testing.T) {
	t.Parallel()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			r := &restartable{t: t, open: open}
			srv := r.start()
			sub, _ := connectStored(t, srv, "sub")
			sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t", QoS: 1}}})
			sub.Recv()
			sub.Close()
			pub, _ := connectStored(t, srv, "pub")
			pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Payload: []byte("once")})
			pub.Recv() // PUBREC: from here the broker owns the message
			pub.Close()

			srv = r.restart()
			pub, _ = connectStored(t, srv, "pub")
			pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("once")})
			if rec := pub.Recv().(*packets.Pubrec); rec.PacketID != 7 {
				t.Fatalf("pubrec %d", rec.PacketID)
			}
			pub.Send(&packets.Pubrel{PacketID: 7})
			if comp := pub.Recv().(*packets.Pubcomp); comp.ReasonCode != 0 {
				t.Fatalf("pubcomp %v", comp.ReasonCode)
			}
			sub, _ = connectStored(t, srv, "sub")
			p := sub.Recv().(*packets.Publish)
			sub.Send(&packets.Puback{PacketID: p.PacketID})
			if _, err := sub.TryRecv(300 * time.Millisecond); err == nil { // bounded wait for a duplicate that must not come
				t.Fatal("message delivered twice")
			}
		})
	}
}

// A QoS 2 message whose PUBREC never left because another node had not
// taken it yet is stored here with its packet id, and the broker
// restarts: the client, which never had the PUBREC, sends it again
// ([MQTT-4.4.0-1]). Its subscriber here had it and does not get it again
// [MQTT-4.3.3-10], but the other node gets it once more, and the PUBREC
// waits for it; a second resend routes nothing.
func TestPersistInboundQoS2ResentToRemote(t *testing.T) {
	t.Parallel()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			before := &fakeRemote{reachable: true, hold: true}
			_, srv := resentAfterRestart(t, open, nil, false, func(srv *terntest.Server) {
				if err := srv.AddRemoteRoute("node2", before, "", "t"); err != nil {
					t.Fatal(err)
				}
				sub, _ := connectStored(t, srv, "sub")
				sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t", QoS: 2}}})
				sub.Recv()
				sub.Close()
				terntest.Eventually(t, "sub offline", func() bool { si, ok := srv.SessionInfo("sub"); return ok && !si.Online })
			})
			if n := before.count(); n != 1 {
				t.Fatalf("%d forwards before the restart, want 1", n)
			}
			after := &fakeRemote{reachable: true, hold: true} // node2 never acknowledged
			if err := srv.AddRemoteRoute("node2", after, "", "t"); err != nil {
				t.Fatal(err)
			}
			pub, _ := connectStored(t, srv, "pub")
			pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("once")})
			terntest.Eventually(t, "forwarded again", func() bool { return after.count() == 1 })
			if _, err := pub.TryRecv(100 * time.Millisecond); err == nil {
				t.Fatal("PUBREC before the other node took the message")
			}
			after.release(nil)
			if rec := pub.Recv().(*packets.Pubrec); rec.PacketID != 7 || rec.ReasonCode != packets.Success {
				t.Fatalf("pubrec %+v", rec)
			}
			before.mu.Lock()
			first := before.msgs[0]
			before.mu.Unlock()
			after.mu.Lock()
			d, m := after.got[0], after.msgs[0]
			after.mu.Unlock()
			// The other node knows it by its first creation time.
			if d.Route != "node2" || d.QoS != 2 || !d.Again || string(m.Payload) != "once" ||
				!m.Created.Equal(first.Created) || m.Origin != "pub" {
				t.Fatalf("forwarded %+v %q created %v origin %q, first created %v", d, m.Payload, m.Created, m.Origin, first.Created)
			}
			pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("once")})
			if rec := pub.Recv().(*packets.Pubrec); rec.PacketID != 7 {
				t.Fatalf("pubrec %d", rec.PacketID)
			}
			if n := after.count(); n != 1 {
				t.Fatalf("%d forwards after a second resend, want 1", n)
			}
			pub.Send(&packets.Pubrel{PacketID: 7})
			if comp := pub.Recv().(*packets.Pubcomp); comp.ReasonCode != 0 {
				t.Fatalf("pubcomp %v", comp.ReasonCode)
			}
			sub, _ := connectStored(t, srv, "sub")
			p := sub.Recv().(*packets.Publish)
			if string(p.Payload) != "once" {
				t.Fatalf("got %q", p.Payload)
			}
			sub.Send(&packets.Pubrec{PacketID: p.PacketID})
			if pk, err := sub.TryRecv(300 * time.Millisecond); err != nil {
				t.Fatalf("no PUBREL: %v", err)
			} else if _, ok := pk.(*packets.Pubrel); !ok {
				t.Fatalf("got %T, want PUBREL (the message twice?)", pk)
			}
			if _, err := sub.TryRecv(300 * time.Millisecond); err == nil { // bounded wait for a duplicate that must not come
				t.Fatal("message delivered twice")
			}
		})
	}
}

// resentAfterRestart starts a broker (with hooks) on a store, lets setup
// add what holds the acknowledgement of a message to "t" (a remote route,
// a RetainObserver), publishes a QoS 2 message to "t" (packet id 7) from
// the persistent client "pub", checks that no PUBREC leaves, and restarts
// the broker on its store: it returns the restartable and the new
// server, on which remote routes are to be added again.
func resentAfterRestart(t *testing.T, open func() storage.Store, hooks []tern.Hook, retain bool, setup func(*terntest.Server)) (*restartable, *terntest.Server) {
	t.Helper()
	r := &restartable{t: t, open: open, hooks: hooks}
	srv := r.start()
	setup(srv)
	pub, _ := connectStored(t, srv, "pub")
	pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Retain: retain, Payload: []byte("once")})
	if _, err := pub.TryRecv(300 * time.Millisecond); err == nil {
		t.Fatal("PUBREC before the other node took the message")
	}
	pub.Close()
	return r, r.restart()
}

// A QoS 2 message for a shared group whose member here is offline went to
// a member on another node, which never acknowledged it before the
// broker restarted: sent again, it goes to that node again (the member
// here, online by then, is passed over: it may have had it), and the
// PUBREC waits for it.
func TestPersistInboundQoS2ResentShared(t *testing.T) {
	t.Parallel()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			group := func(srv *terntest.Server, f *fakeRemote) {
				if err := srv.AddRemoteRoute("node2", f, "g", "t"); err != nil {
					t.Fatal(err)
				}
			}
			before := &fakeRemote{reachable: true, hold: true}
			_, srv := resentAfterRestart(t, open, nil, false, func(srv *terntest.Server) {
				member, _ := connectStored(t, srv, "member")
				member.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "$share/g/t", QoS: 2}}})
				member.Recv()
				member.Close()
				terntest.Eventually(t, "member offline", func() bool { si, ok := srv.SessionInfo("member"); return ok && !si.Online })
				group(srv, before)
			})
			if n := before.count(); n != 1 {
				t.Fatalf("%d forwards before the restart, want 1 (the remote member is preferred to an offline one)", n)
			}
			after := &fakeRemote{reachable: true, hold: true}
			group(srv, after)
			member, _ := connectStored(t, srv, "member")
			pub, _ := connectStored(t, srv, "pub")
			pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("once")})
			terntest.Eventually(t, "forwarded again to the group's remote member", func() bool { return after.count() == 1 })
			after.release(nil)
			if rec := pub.Recv().(*packets.Pubrec); rec.PacketID != 7 || rec.ReasonCode != packets.Success {
				t.Fatalf("pubrec %+v", rec)
			}
			if d := after.got[0]; d.Group != "g" || !d.Again {
				t.Fatalf("forwarded %+v", d)
			}
			if pk, err := member.TryRecv(300 * time.Millisecond); err == nil { // bounded wait for a copy that must not come
				t.Fatalf("the member here got %+v", pk)
			}
		})
	}
}

// retainHold is a RetainObserver that holds every acknowledgement it is
// given, as a cluster does until other nodes have the retained message.
type retainHold struct {
	mu   sync.Mutex
	msgs []*tern.Message
}

func (r *retainHold) ID() string { return "retain-hold" }
func (r *retainHold) OnRetained(m *tern.Message, a *tern.Ack) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a != nil {
		a.Hold()
	}
	r.msgs = append(r.msgs, m)
}

func (r *retainHold) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// A retained QoS 2 message whose retained copy other nodes never
// acknowledged before the broker restarted is handed to the
// RetainObservers again when the client sends it again, unless a newer
// retained message of the topic came since.
func TestPersistInboundQoS2ResentRetained(t *testing.T) {
	t.Parallel()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			rh := &retainHold{}
			r, srv := resentAfterRestart(t, open, []tern.Hook{rh}, true, func(*terntest.Server) {})
			if n := rh.count(); n != 1 {
				t.Fatalf("%d retained changes observed, want 1", n)
			}
			pub, _ := connectStored(t, srv, "pub")
			pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Dup: true, Retain: true, Payload: []byte("once")})
			terntest.Eventually(t, "the retained message handed over again", func() bool { return rh.count() == 2 })
			if m := rh.msgs[1]; string(m.Payload) != "once" || !m.Created.Equal(rh.msgs[0].Created) {
				t.Fatalf("observed %q created %v, first %v", m.Payload, m.Created, rh.msgs[0].Created)
			}
			if m, ok := srv.RetainedMessage("t"); !ok || string(m.Payload) != "once" {
				t.Fatalf("retained %v %v", m, ok)
			}
			pub.Close()

			// A newer retained message since: the one sent again does not
			// replace it.
			srv = r.restart()
			srv.Publish("t", []byte("newer"), true, 1)
			pub, _ = connectStored(t, srv, "pub")
			pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Dup: true, Retain: true, Payload: []byte("once")})
			if rec := pub.Recv().(*packets.Pubrec); rec.PacketID != 7 {
				t.Fatalf("pubrec %+v", rec)
			}
			if m, ok := srv.RetainedMessage("t"); !ok || string(m.Payload) != "newer" {
				t.Fatalf("retained %q, want the newer message", m.Payload)
			}
			if n := rh.count(); n != 3 {
				t.Fatalf("%d retained changes observed, want the newer one only since", n)
			}
		})
	}
}

// A session whose node restarted with a QoS 2 message it had not
// acknowledged moves to another server before its client sends it again:
// that server does not know where the message went, and routes it again
// to every target, its own subscribers and other nodes.
func TestImportedInboundQoS2ResentEverywhere(t *testing.T) {
	t.Parallel()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			_, old := resentAfterRestart(t, open, nil, false, func(srv *terntest.Server) {
				if err := srv.AddRemoteRoute("node2", &fakeRemote{reachable: true, hold: true}, "", "t"); err != nil {
					t.Fatal(err)
				}
			})
			st, err := old.ExportSession("pub", false, nil, 0, 0)
			if err != nil || st == nil {
				t.Fatalf("export: %v %v", st, err)
			}
			if _, ok := st.Again[7]; !ok || !slices.Contains(st.Inbound, 7) {
				t.Fatalf("exported inbound %v again %v", st.Inbound, st.Again)
			}
			srv := terntest.NewServer(t, nil)
			remote := &fakeRemote{reachable: true, hold: true}
			if err := srv.AddRemoteRoute("node2", remote, "", "t"); err != nil {
				t.Fatal(err)
			}
			sub := srv.Dial(t, packets.V5)
			sub.MustConnect("sub")
			sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t", QoS: 2}}})
			sub.Recv()
			if err := srv.ImportSession(st); err != nil {
				t.Fatal(err)
			}
			pub, ack := connectStored(t, srv, "pub")
			if !ack.SessionPresent {
				t.Fatal("session not present")
			}
			pub.Send(&packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("once")})
			if p := sub.Recv().(*packets.Publish); string(p.Payload) != "once" {
				t.Fatalf("got %q", p.Payload)
			}
			terntest.Eventually(t, "forwarded to the other node", func() bool { return remote.count() == 1 })
			remote.release(nil)
			if rec := pub.Recv().(*packets.Pubrec); rec.PacketID != 7 || rec.ReasonCode != packets.Success {
				t.Fatalf("pubrec %+v", rec)
			}
		})
	}
}

// Retained messages survive a restart; a deleted one stays deleted
// [MQTT-3.3.1-5].
func TestPersistRetainedSurvivesRestart(t *testing.T) {
	t.Parallel()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			r := &restartable{t: t, open: open}
			srv := r.start()
			pub := srv.Dial(t, packets.V311)
			pub.MustConnect("pub")
			for _, tp := range []string{"r/a", "r/b", "r/c"} {
				pub.Send(&packets.Publish{Topic: tp, QoS: 1, PacketID: 1, Retain: true, Payload: []byte(tp)})
				pub.Recv()
			}
			pub.Send(&packets.Publish{Topic: "r/b", QoS: 1, PacketID: 1, Retain: true}) // delete
			pub.Recv()
			pub.Close()

			srv = r.restart()
			sub := srv.Dial(t, packets.V311)
			sub.MustConnect("s")
			sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "r/#", QoS: 0}}})
			sub.Recv()
			got := map[string]bool{}
			for i := 0; i < 2; i++ {
				p := sub.Recv().(*packets.Publish)
				if !p.Retain || string(p.Payload) != p.Topic {
					t.Fatalf("got %+v", p)
				}
				got[p.Topic] = true
			}
			if !got["r/a"] || !got["r/c"] {
				t.Fatalf("got %v", got)
			}
			if p, err := sub.TryRecv(300 * time.Millisecond); err == nil { // bounded wait: r/b must not come
				t.Fatalf("deleted retained message came back: %+v", p)
			}
		})
	}
}

// Sessions with expiry 0 leave nothing in the store.
func TestPersistCleanSessionsNotStored(t *testing.T) {
	t.Parallel()
	st := memory.New()
	srv := terntest.NewServer(t, &tern.Options{Store: st})
	c := srv.Dial(t, packets.V5)
	c.MustConnect("clean")
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "x", QoS: 1}}})
	c.Recv()
	srv.Close()
	var l countLoader
	if err := st.Load(&l); err != nil {
		t.Fatal(err)
	}
	if l.sessions+l.subs != 0 {
		t.Fatalf("stored %d sessions, %d subscriptions for a clean session", l.sessions, l.subs)
	}
}

type countLoader struct{ sessions, subs, deliveries, messages int }

func (l *countLoader) Message(*storage.Message) error           { l.messages++; return nil }
func (l *countLoader) Session(*storage.Session) error           { l.sessions++; return nil }
func (l *countLoader) Subscription(*storage.Subscription) error { l.subs++; return nil }
func (l *countLoader) Delivery(*storage.Delivery) error         { l.deliveries++; return nil }
func (l *countLoader) Inbound(string, uint16, int64) error      { return nil }
func (l *countLoader) Retained(string, uint64) error            { return nil }
func (l *countLoader) Will(*storage.Will) error                 { return nil }

// Delivered and acknowledged messages leave the store: nothing grows.
func TestPersistAcknowledgedMessagesLeaveStore(t *testing.T) {
	t.Parallel()
	st := memory.New()
	srv := terntest.NewServer(t, &tern.Options{Store: st})
	sub, _ := connectStored(t, srv, "sub")
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t", QoS: 1}}})
	sub.Recv()
	pub := srv.Dial(t, packets.V5)
	pub.MustConnect("pub")
	for i := 1; i <= 50; i++ {
		pub.Send(&packets.Publish{Topic: "t", QoS: 1, PacketID: uint16(i), Payload: []byte("x")})
		pub.Recv()
		p := sub.Recv().(*packets.Publish)
		sub.Send(&packets.Puback{PacketID: p.PacketID})
	}
	sub.Send(&packets.Pingreq{}) // the PUBACKs before it are handled once PINGRESP comes
	sub.Recv()
	srv.Close()
	var l countLoader
	if err := st.Load(&l); err != nil {
		t.Fatal(err)
	}
	if l.deliveries != 0 || l.messages != 0 {
		t.Fatalf("store keeps %d deliveries and %d messages after all were acknowledged", l.deliveries, l.messages)
	}
	if l.sessions != 1 || l.subs != 1 {
		t.Fatalf("store has %d sessions, %d subscriptions; want 1, 1", l.sessions, l.subs)
	}
}

// denySecret is an Authorizer that denies deliveries of "t/secret" to bob.
type denySecret struct{}

func (denySecret) ID() string { return "deny-secret" }

func (denySecret) Authorize(c *tern.Client, topic string, a tern.Access) tern.Decision {
	if a == tern.Deliver && topic == "t/secret" && c.Username() == "bob" {
		return tern.Deny
	}
	return tern.Abstain
}

// A session restored from the store keeps its user name, so per-message
// authorization still applies to it while its client is away.
func TestPersistIdentityForAuthorization(t *testing.T) {
	st := memory.New()
	srv := terntest.NewServer(t, &tern.Options{Store: st}, denySecret{})
	bob := srv.Dial(t, packets.V5)
	ack := bob.Connect(&packets.Connect{ClientID: "bob-1", UsernameFlag: true, Username: "bob",
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
	if ack.ReasonCode != 0 {
		t.Fatal(ack.ReasonCode)
	}
	subscribeRaw(t, bob, 1, packets.Subscription{Filter: "t/#", QoS: 1})
	bob.Send(&packets.Disconnect{})
	bob.ExpectClosed()
	srv.Close()

	srv = terntest.NewServer(t, &tern.Options{Store: st}, denySecret{})
	pub := mustConnect(t, srv, packets.V5, "pub")
	for i, topic := range []string{"t/secret", "t/ok"} {
		pub.Send(&packets.Publish{Topic: topic, QoS: 1, PacketID: uint16(i + 1), Payload: []byte(topic)})
		recvAs[*packets.Puback](t, pub)
	}
	if n := srv.Stats().DeliveriesDenied; n != 1 {
		t.Fatalf("DeliveriesDenied = %d, want 1 (the restored session is still bob's)", n)
	}
	bob = srv.Dial(t, packets.V5)
	bob.Connect(&packets.Connect{ClientID: "bob-1", UsernameFlag: true, Username: "bob",
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
	if p := recvAs[*packets.Publish](t, bob); p.Topic != "t/ok" {
		t.Fatalf("got %q, want only t/ok", p.Topic)
	}
}

// failingStore is a store whose commits fail once told to.
type failingStore struct {
	storage.Store
	fail atomic.Bool
}

func (f *failingStore) Commit(b storage.Batch, sync bool) error {
	if f.fail.Load() {
		return errors.New("disk full")
	}
	return f.Store.Commit(b, sync)
}

// When the store cannot commit, nothing is acknowledged that was not
// stored: the publisher gets no PUBACK and is disconnected (v5: 0x83), and
// the failure is counted.
func TestPersistCommitFailureWithholdsAck(t *testing.T) {
	st := &failingStore{Store: memory.New()}
	srv := terntest.NewServer(t, &tern.Options{Store: st})
	sub, _ := connectStored(t, srv, "sub")
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "t", QoS: 1})
	st.fail.Store(true)
	pub := mustConnect(t, srv, packets.V5, "pub")
	pub.Send(&packets.Publish{Topic: "t", QoS: 1, PacketID: 1, Payload: []byte("x")})
	got := pub.ExpectClosed()
	if len(got) != 1 {
		t.Fatalf("publisher got %d packets, want only a DISCONNECT", len(got))
	}
	if d, ok := got[0].(*packets.Disconnect); !ok || d.ReasonCode != packets.ImplementationSpecificError {
		t.Fatalf("publisher got %v, want DISCONNECT 0x83", got[0])
	}
	if n := srv.Stats().StoreFailures; n == 0 {
		t.Fatal("StoreFailures not counted")
	}
}
