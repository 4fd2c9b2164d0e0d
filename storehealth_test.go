package tern_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/memory"
	"github.com/ternmq/tern/terntest"
)

// downStore is a memory store whose disk can be made to fail: while down,
// Health reports it and commits wait, as the Pebble store's do on a full
// disk.
type downStore struct {
	*memory.Store

	mu      sync.Mutex
	down    bool // Health reports it, commits wait
	stall   bool // commits wait
	up      *sync.Cond
	commits int
}

func newDownStore() *downStore {
	s := &downStore{Store: memory.New()}
	s.up = sync.NewCond(&s.mu)
	return s
}

var _ storage.HealthReporter = (*downStore)(nil)

func (s *downStore) Health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.Join(storage.ErrUnavailable, errors.New("disk full"))
	}
	return nil
}

func (s *downStore) setDown(down bool) {
	s.mu.Lock()
	s.down, s.stall = down, false
	s.up.Broadcast()
	s.mu.Unlock()
}

func (s *downStore) Commit(b storage.Batch, sync bool) error {
	s.mu.Lock()
	for s.down || s.stall {
		s.up.Wait()
	}
	s.commits++
	s.mu.Unlock()
	return s.Store.Commit(b, sync)
}

// While the store cannot write, the broker serves what needs no store and
// refuses, in each protocol's terms, what does; when the store recovers,
// everything works again without a restart.
func TestStoreUnavailableDegrades(t *testing.T) {
	st := newDownStore()
	srv := terntest.NewServer(t, &tern.Options{Store: st})

	// Before the disk fails: a persistent subscriber (online) to p/#, a
	// clean one to c/#, a persistent client with a subscription to drop.
	psub := srv.Dial(t, packets.V5)
	persistentConnect(psub, "psub", true)
	psub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "p/#", QoS: 1}}})
	psub.Recv()
	csub := srv.Dial(t, packets.V5)
	csub.MustConnect("csub")
	csub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "c/#", QoS: 1}}})
	csub.Recv()
	pers5 := srv.Dial(t, packets.V5)
	persistentConnect(pers5, "pers5", true)
	pers3 := srv.Dial(t, packets.V311)
	if ack := pers3.Connect(&packets.Connect{ClientID: "pers3", KeepAlive: 60}); ack.ReasonCode != 0 {
		t.Fatal(ack.ReasonCode)
	}
	pub5 := srv.Dial(t, packets.V5)
	pub5.MustConnect("pub5")

	st.setDown(true)
	if err := srv.StoreHealth(); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("StoreHealth() = %v", err)
	}

	// QoS 0 and clean sessions keep working.
	pub5.Send(&packets.Publish{Topic: "c/1", QoS: 1, PacketID: 1, Payload: []byte("clean")})
	if ack := pub5.Recv().(*packets.Puback); ack.ReasonCode.IsError() {
		t.Fatalf("QoS 1 to a clean session refused: %v", ack.ReasonCode)
	}
	if p := csub.Recv().(*packets.Publish); string(p.Payload) != "clean" {
		t.Fatalf("got %q", p.Payload)
	}
	csub.Send(&packets.Puback{PacketID: 1})
	pub5.Send(&packets.Publish{Topic: "p/0", Payload: []byte("qos0")})
	if p := psub.Recv().(*packets.Publish); string(p.Payload) != "qos0" {
		t.Fatalf("QoS 0 to a persistent session: got %q", p.Payload)
	}
	c := srv.Dial(t, packets.V5)
	if ack := c.Connect(&packets.Connect{ClientID: "new-clean", CleanStart: true, KeepAlive: 60}); ack.ReasonCode != 0 {
		t.Fatalf("clean session refused: %v", ack.ReasonCode)
	}
	c.Close()

	// What needs the store is refused: v5 with 0x97 Quota exceeded.
	for _, pk := range []*packets.Publish{
		{Topic: "p/1", QoS: 1, PacketID: 2, Payload: []byte("x")},               // to a persistent session
		{Topic: "c/2", QoS: 1, PacketID: 3, Payload: []byte("x"), Retain: true}, // retained
	} {
		pub5.Send(pk)
		if ack := pub5.Recv().(*packets.Puback); ack.ReasonCode != packets.QuotaExceeded {
			t.Fatalf("PUBLISH %s: PUBACK %v, want 0x97", pk.Topic, ack.ReasonCode)
		}
	}
	pub5.Send(&packets.Publish{Topic: "p/2", QoS: 2, PacketID: 4, Payload: []byte("x")})
	if rec := pub5.Recv().(*packets.Pubrec); rec.ReasonCode != packets.QuotaExceeded {
		t.Fatalf("QoS 2: PUBREC %v, want 0x97", rec.ReasonCode)
	}
	pers5.Send(&packets.Subscribe{PacketID: 2, Subscriptions: []packets.Subscription{{Filter: "a", QoS: 1}, {Filter: "b", QoS: 2}}})
	if ack := pers5.Recv().(*packets.Suback); len(ack.ReasonCodes) != 2 || ack.ReasonCodes[0] != packets.QuotaExceeded || ack.ReasonCodes[1] != packets.QuotaExceeded {
		t.Fatalf("SUBACK %v, want 0x97 0x97", ack.ReasonCodes)
	}
	pers5.Send(&packets.Unsubscribe{PacketID: 3, Filters: []string{"a"}})
	if ack := pers5.Recv().(*packets.Unsuback); ack.ReasonCodes[0] != packets.UnspecifiedError {
		t.Fatalf("UNSUBACK %v, want 0x80", ack.ReasonCodes)
	}
	c = srv.Dial(t, packets.V5)
	if ack := persistentConnect(c, "late", true); ack.ReasonCode != packets.ServerUnavailable {
		t.Fatalf("persistent CONNECT: CONNACK %v, want 0x88", ack.ReasonCode)
	}
	c.Close()

	// 3.1.1: SUBACK 0x80 Failure [MQTT-3.9.3-2]; PUBLISH and UNSUBSCRIBE,
	// which cannot be refused, close the connection without an
	// acknowledgement; CONNACK 0x03 Server unavailable [MQTT-3.2.2-6].
	pers3.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "a", QoS: 1}}})
	if ack := pers3.Recv().(*packets.Suback); ack.ReasonCodes[0] != packets.UnspecifiedError {
		t.Fatalf("3.1.1 SUBACK %v, want 0x80", ack.ReasonCodes)
	}
	pers3.Send(&packets.Unsubscribe{PacketID: 2, Filters: []string{"a"}})
	if got := pers3.ExpectClosed(); len(got) != 0 {
		t.Fatalf("3.1.1 UNSUBSCRIBE: got %v before the close", got)
	}
	pub3 := srv.Dial(t, packets.V311)
	pub3.MustConnect("pub3")
	pub3.Send(&packets.Publish{Topic: "p/3", QoS: 1, PacketID: 1, Payload: []byte("x")})
	if got := pub3.ExpectClosed(); len(got) != 0 {
		t.Fatalf("3.1.1 PUBLISH: got %v before the close", got)
	}
	c = srv.Dial(t, packets.V311)
	if ack := c.Connect(&packets.Connect{ClientID: "late3", KeepAlive: 60}); ack.ReasonCode != packets.ServerUnavailable {
		t.Fatalf("3.1.1 persistent CONNECT: CONNACK %v, want 0x03 (server unavailable)", ack.ReasonCode)
	}
	c.Close()
	if n := srv.Stats().StoreRefused; n != 10 {
		t.Fatalf("Stats.StoreRefused = %d, want 10", n)
	}

	// The disk comes back: everything works again.
	st.setDown(false)
	if err := srv.StoreHealth(); err != nil {
		t.Fatal(err)
	}
	pub5.Send(&packets.Publish{Topic: "p/4", QoS: 1, PacketID: 5, Payload: []byte("back")})
	if ack := pub5.Recv().(*packets.Puback); ack.ReasonCode.IsError() {
		t.Fatalf("after recovery: PUBACK %v", ack.ReasonCode)
	}
	if p := psub.Recv().(*packets.Publish); string(p.Payload) != "back" {
		t.Fatalf("after recovery: got %q", p.Payload)
	}
	c = srv.Dial(t, packets.V5)
	if ack := persistentConnect(c, "late", true); ack.ReasonCode != 0 {
		t.Fatalf("after recovery: CONNACK %v", ack.ReasonCode)
	}
}

// A change already under way when the disk fails is not refused: its
// acknowledgement waits for the store and goes once it has written it.
func TestStoreUnavailableAckWaits(t *testing.T) {
	st := newDownStore()
	srv := terntest.NewServer(t, &tern.Options{Store: st})
	sub := srv.Dial(t, packets.V5)
	persistentConnect(sub, "sub", true)
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t", QoS: 1}}})
	sub.Recv()
	sub.Send(&packets.Disconnect{})
	sub.Close()

	// Health still says yes, but commits wait (the disk filled between
	// the check and the write).
	st.mu.Lock()
	st.stall = true
	st.mu.Unlock()
	pub := srv.Dial(t, packets.V5)
	pub.MustConnect("pub")
	pub.Send(&packets.Publish{Topic: "t", QoS: 1, PacketID: 1, Payload: []byte("m")})
	pub.Send(&packets.Pingreq{})
	if _, ok := pub.Recv().(*packets.Pingresp); !ok {
		t.Fatal("expected PINGRESP first: the PUBACK waits for the store")
	}
	st.setDown(false)
	if ack := pub.Recv().(*packets.Puback); ack.ReasonCode.IsError() {
		t.Fatalf("PUBACK %v", ack.ReasonCode)
	}
}
