package tern_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/memory"
	"github.com/ternmq/tern/terntest"
)

// recordingStore is a memory store that records every committed change
// and whether its commit was fsync'd, so that a test can check, the moment
// an acknowledgement arrives, that what it promises is already durable.
type recordingStore struct {
	*memory.Store

	mu      sync.Mutex
	commits []recordedCommit
}

type recordedCommit struct {
	ops  []string
	sync bool
}

func newRecordingStore() *recordingStore { return &recordingStore{Store: memory.New()} }

func (s *recordingStore) NewBatch() storage.Batch { return &recordingBatch{Batch: s.Store.NewBatch()} }

func (s *recordingStore) Commit(b storage.Batch, sync bool) error {
	rb := b.(*recordingBatch)
	if err := s.Store.Commit(rb.Batch, sync); err != nil {
		return err
	}
	s.mu.Lock()
	s.commits = append(s.commits, recordedCommit{rb.ops, sync})
	s.mu.Unlock()
	return nil
}

// durable reports whether op was committed and fsync'd: by its commit or
// a later one.
func (s *recordingStore) durable(op string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	committed := false
	for _, c := range s.commits {
		committed = committed || slices.Contains(c.ops, op)
		if committed && c.sync {
			return true
		}
	}
	return false
}

// commitOf returns the operations of the commit that holds op.
func (s *recordingStore) commitOf(op string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.commits {
		if slices.Contains(c.ops, op) {
			return c.ops
		}
	}
	return nil
}

// recordingBatch names each change as it is made.
type recordingBatch struct {
	storage.Batch
	ops []string
}

func (b *recordingBatch) rec(format string, args ...any) {
	b.ops = append(b.ops, fmt.Sprintf(format, args...))
}

func (b *recordingBatch) PutMessage(m *storage.Message) {
	b.rec("put message %d", m.ID)
	b.Batch.PutMessage(m)
}
func (b *recordingBatch) DeleteMessage(id uint64) {
	b.rec("delete message %d", id)
	b.Batch.DeleteMessage(id)
}
func (b *recordingBatch) PutSession(s *storage.Session) {
	b.rec("put session %s", s.ClientID)
	b.Batch.PutSession(s)
}
func (b *recordingBatch) DeleteSession(id string) {
	b.rec("delete session %s", id)
	b.Batch.DeleteSession(id)
}
func (b *recordingBatch) PutSubscription(s *storage.Subscription) {
	b.rec("put subscription %s %s", s.ClientID, s.Filter)
	b.Batch.PutSubscription(s)
}
func (b *recordingBatch) DeleteSubscription(id, group, filter string) {
	b.rec("delete subscription %s %s", id, filter)
	b.Batch.DeleteSubscription(id, group, filter)
}
func (b *recordingBatch) PutDelivery(d *storage.Delivery) {
	b.rec("put delivery %s %d", d.ClientID, d.MessageID)
	b.Batch.PutDelivery(d)
}
func (b *recordingBatch) DeleteDelivery(id string, seq uint64) {
	b.rec("delete delivery %s %d", id, seq)
	b.Batch.DeleteDelivery(id, seq)
}
func (b *recordingBatch) PutInbound(id string, pid uint16, created int64) {
	b.rec("put inbound %s %d", id, pid)
	b.Batch.PutInbound(id, pid, created)
}
func (b *recordingBatch) DeleteInbound(id string, pid uint16) {
	b.rec("delete inbound %s %d", id, pid)
	b.Batch.DeleteInbound(id, pid)
}
func (b *recordingBatch) PutRetained(topic string, id uint64) {
	b.rec("put retained %s", topic)
	b.Batch.PutRetained(topic, id)
}
func (b *recordingBatch) DeleteRetained(topic string) {
	b.rec("delete retained %s", topic)
	b.Batch.DeleteRetained(topic)
}
func (b *recordingBatch) PutWill(w *storage.Will) {
	b.rec("put will %s", w.ClientID)
	b.Batch.PutWill(w)
}
func (b *recordingBatch) DeleteWill(id string) {
	b.rec("delete will %s", id)
	b.Batch.DeleteWill(id)
}

func persistentConnect(c *terntest.Conn, id string, clean bool) *packets.Connack {
	return c.Connect(&packets.Connect{ClientID: id, CleanStart: clean, KeepAlive: 60,
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
}

// Every acknowledgement that promises a change of stored state is sent only
// once the change is fsync'd, in DurabilitySync: a crash right after it
// loses nothing. The check is made the moment each acknowledgement arrives.
func TestDurableBeforeAcknowledged(t *testing.T) {
	st := newRecordingStore()
	srv := terntest.NewServer(t, &tern.Options{Store: st, Durability: tern.DurabilitySync})
	must := func(what, op string) {
		t.Helper()
		if !st.durable(op) {
			t.Fatalf("%s sent before %q was durable", what, op)
		}
	}

	// CONNACK of a new persistent session [MQTT-3.2.2-3].
	c := srv.Dial(t, packets.V5)
	if ack := persistentConnect(c, "dur", true); ack.ReasonCode != 0 {
		t.Fatal(ack.ReasonCode)
	}
	must("CONNACK", "put session dur")

	// SUBACK [MQTT-3.8.4-1] and UNSUBACK [MQTT-3.10.4-1].
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "a/#", QoS: 2}}})
	c.Recv()
	must("SUBACK", "put subscription dur a/#")
	c.Send(&packets.Unsubscribe{PacketID: 2, Filters: []string{"a/#"}})
	if _, ok := c.Recv().(*packets.Unsuback); !ok {
		t.Fatal("no UNSUBACK")
	}
	must("UNSUBACK", "delete subscription dur a/#")

	// PUBREC records the packet id; PUBCOMP releases it
	// [MQTT-4.3.3-9], [MQTT-4.3.3-13].
	c.Send(&packets.Publish{QoS: 2, PacketID: 7, Topic: "x", Payload: []byte("1")})
	c.Recv()
	must("PUBREC", "put inbound dur 7")
	c.Send(&packets.Pubrel{PacketID: 7})
	if _, ok := c.Recv().(*packets.Pubcomp); !ok {
		t.Fatal("no PUBCOMP")
	}
	must("PUBCOMP", "delete inbound dur 7")

	// A retained message set and cleared [MQTT-3.3.1-5], [MQTT-3.3.1-6].
	c.Send(&packets.Publish{QoS: 1, PacketID: 8, Topic: "r", Retain: true, Payload: []byte("v")})
	c.Recv()
	must("PUBACK (retained set)", "put retained r")
	c.Send(&packets.Publish{QoS: 1, PacketID: 9, Topic: "r", Retain: true})
	c.Recv()
	must("PUBACK (retained clear)", "delete retained r")

	// The admin API's delete.
	c.Send(&packets.Publish{QoS: 1, PacketID: 10, Topic: "r2", Retain: true, Payload: []byte("v")})
	c.Recv()
	if !srv.DeleteRetained("r2") {
		t.Fatal("DeleteRetained found nothing")
	}
	must("DeleteRetained", "delete retained r2")
	c.Close()

	// A clean start ends the stored session before its CONNACK
	// [MQTT-3.1.2-4].
	c = srv.Dial(t, packets.V5)
	if ack := c.Connect(&packets.Connect{ClientID: "dur", CleanStart: true, KeepAlive: 60}); ack.SessionPresent {
		t.Fatal("session present after a clean start")
	}
	must("CONNACK (clean start)", "delete session dur")
	c.Close()
}

// A QoS 2 PUBLISH resent with DUP is acknowledged again without being
// delivered twice [MQTT-4.3.3-11], and that PUBREC too waits for the store.
func TestDuplicateQoS2WaitsForStore(t *testing.T) {
	st := newRecordingStore()
	srv := terntest.NewServer(t, &tern.Options{Store: st})
	sub := srv.Dial(t, packets.V5)
	persistentConnect(sub, "sub", true)
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "x", QoS: 2}}})
	sub.Recv()

	pub := srv.Dial(t, packets.V5)
	persistentConnect(pub, "pub", true)
	pub.Send(&packets.Publish{QoS: 2, PacketID: 3, Topic: "x", Payload: []byte("once")})
	pub.Send(&packets.Publish{QoS: 2, PacketID: 3, Topic: "x", Payload: []byte("once"), Dup: true})
	for range 2 {
		if rec, ok := pub.Recv().(*packets.Pubrec); !ok || rec.PacketID != 3 {
			t.Fatalf("expected PUBREC 3, got %v", rec)
		}
		if !st.durable("put inbound pub 3") {
			t.Fatal("PUBREC sent before the packet id was durable")
		}
	}
	pub.Send(&packets.Pubrel{PacketID: 3})
	pub.Recv()
	// The subscriber gets it once: the next message is the marker.
	pub.Send(&packets.Publish{QoS: 2, PacketID: 4, Topic: "x", Payload: []byte("marker")})
	pub.Recv()
	n := 0
	for {
		p, ok := sub.Recv().(*packets.Publish)
		if !ok {
			continue
		}
		sub.Send(&packets.Pubrec{PacketID: p.PacketID})
		if string(p.Payload) == "marker" {
			break
		}
		n++
	}
	if n != 1 {
		t.Fatalf("delivered %d times", n)
	}
}

// The packet id of an inbound QoS 2 message from a persistent session goes
// to the store in the same commit as every delivery of the message, so a
// crash keeps both or neither: a resend after the restart is then never
// taken for a duplicate of a message that was lost, nor delivered again.
//
// Batches are split in parts of at most a few thousand changes (tern's
// maxBatchOps, set to 8 here), never inside a routing that holds them.
func TestInboundQoS2CommittedWithDeliveries(t *testing.T) {
	defer tern.SetMaxBatchOps(8)()
	st := newRecordingStore()
	srv := terntest.NewServer(t, &tern.Options{Store: st})
	const subs = 20
	for i := range subs {
		c := srv.Dial(t, packets.V5)
		persistentConnect(c, fmt.Sprintf("s%d", i), true)
		c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t", QoS: 2}}})
		c.Recv()
		c.Close()
	}
	pub := srv.Dial(t, packets.V5)
	persistentConnect(pub, "pub", true)
	for id := uint16(1); id <= 50; id++ {
		pub.Send(&packets.Publish{QoS: 2, PacketID: id, Topic: "t", Payload: []byte("m")})
	}
	for id := uint16(1); id <= 50; id++ {
		pub.Recv()
		ops := st.commitOf(fmt.Sprintf("put inbound pub %d", id))
		n := 0
		for _, op := range ops {
			if strings.HasPrefix(op, "put delivery s") {
				n++
			}
		}
		// Several messages may share the commit: at least this one's
		// deliveries are in it.
		if n < subs {
			t.Fatalf("packet id %d committed with %d deliveries, want all %d", id, n, subs)
		}
	}
	// Batches were split: in sync mode only the last part of a round is
	// committed with the fsync.
	st.mu.Lock()
	parts := 0
	for _, c := range st.commits {
		if !c.sync {
			parts++
		}
	}
	st.mu.Unlock()
	if parts == 0 {
		t.Fatal("no batch was split")
	}
}

// In DurabilityPeriodic the release of an inbound QoS 2 packet id and the
// packet id of a QoS 2 handover are still fsync'd before PUBCOMP and the
// PUBLISH go out.
func TestPeriodicQoS2StillDurable(t *testing.T) {
	st := newRecordingStore()
	srv := terntest.NewServer(t, &tern.Options{Store: st, Durability: tern.DurabilityPeriodic})
	sub := srv.Dial(t, packets.V5)
	persistentConnect(sub, "sub", true)
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "x", QoS: 2}}})
	sub.Recv()
	pub := srv.Dial(t, packets.V5)
	persistentConnect(pub, "pub", true)
	pub.Send(&packets.Publish{QoS: 2, PacketID: 5, Topic: "x", Payload: []byte("m")})
	pub.Recv()
	if p, ok := sub.Recv().(*packets.Publish); !ok || p.QoS != 2 {
		t.Fatalf("expected the QoS 2 PUBLISH, got %v", p)
	}
	// The handover record is a delivery put with its packet id: the last
	// put of the subscriber's delivery, fsync'd by its own commit or a
	// later one (the writer may ask for an fsync while the commit that
	// holds it is already running without one). Commits are recorded
	// before the persister runs what waits for them, so what is recorded
	// now includes the fsync the PUBLISH waited for.
	st.mu.Lock()
	last := -1
	for i, c := range st.commits {
		for _, op := range c.ops {
			if strings.HasPrefix(op, "put delivery sub") {
				last = i
			}
		}
	}
	synced := false
	for i := max(last, 0); last >= 0 && i < len(st.commits); i++ {
		synced = synced || st.commits[i].sync
	}
	st.mu.Unlock()
	if !synced {
		t.Fatal("QoS 2 PUBLISH sent before its packet id was fsync'd")
	}
	pub.Send(&packets.Pubrel{PacketID: 5})
	pub.Recv()
	if !st.durable("delete inbound pub 5") {
		t.Fatal("PUBCOMP sent before the release of the packet id was fsync'd")
	}
}
