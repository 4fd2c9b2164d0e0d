// Package storetest is the conformance suite for [storage.Store]
// implementations. A backend's tests call [Run] with functions that open
// its stores; the suite checks every record kind, overwrite and delete
// semantics, DeleteSession's cascade, the order Load promises, large
// records, persistence across a reopen and concurrent commits.
package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
)

// Run runs the conformance suite. open returns a new, empty store for the
// test it is given and arranges for it to be closed when the test ends
// (the suite may close it first: Close's error is to be ignored). reopen
// closes s and returns a store opened over the same data; pass nil for a
// store that does not persist, and the suite skips the tests that need it.
func Run(t *testing.T, open func(t *testing.T) storage.Store, reopen func(t *testing.T, s storage.Store) storage.Store) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &env{t: t, s: open(t), m: newModel(), open: open, reopen: reopen}
			c.fn(e)
		})
	}
}

// env is one test's store and the model it is compared with.
type env struct {
	t      *testing.T
	s      storage.Store
	m      *model
	open   func(t *testing.T) storage.Store
	reopen func(t *testing.T, s storage.Store) storage.Store
}

// change makes the changes fn makes to a batch, committed, and to the
// model.
func (e *env) change(sync bool, fn func(b storage.Batch)) {
	e.t.Helper()
	b := e.s.NewBatch()
	fn(b)
	fn(e.m)
	if err := e.s.Commit(b, sync); err != nil {
		e.t.Fatalf("Commit: %v", err)
	}
}

// check loads the store, checks the order of the calls and compares the
// content with the model.
func (e *env) check() *Recorder {
	e.t.Helper()
	var r Recorder
	if err := e.s.Load(&r); err != nil {
		e.t.Fatalf("Load: %v", err)
	}
	if err := checkOrder(&r); err != nil {
		e.t.Fatal(err)
	}
	got, err := stateOf(&r)
	if err != nil {
		e.t.Fatal(err)
	}
	if d := diff(e.m.s, got); d != "" {
		e.t.Fatalf("store differs from model: %s", d)
	}
	return &r
}

var kindRank = map[string]int{"message": 0, "session": 1, "subscription": 2, "delivery": 3,
	"inbound": 4, "retained": 5, "will": 6}

// checkOrder checks the order Loader promises: kinds grouped in order,
// messages by ID, each client's deliveries together and by Seq.
func checkOrder(r *Recorder) error {
	for i := 1; i < len(r.Kinds); i++ {
		if kindRank[r.Kinds[i]] < kindRank[r.Kinds[i-1]] {
			return fmt.Errorf("load order: %s after %s (call %d)", r.Kinds[i], r.Kinds[i-1], i)
		}
	}
	for i := 1; i < len(r.Messages); i++ {
		if r.Messages[i].ID <= r.Messages[i-1].ID {
			return fmt.Errorf("load order: message %d after %d", r.Messages[i].ID, r.Messages[i-1].ID)
		}
	}
	done := map[string]bool{}
	for i, d := range r.Deliveries {
		if i > 0 && r.Deliveries[i-1].ClientID == d.ClientID {
			if d.Seq <= r.Deliveries[i-1].Seq {
				return fmt.Errorf("load order: client %q delivery %d after %d", d.ClientID, d.Seq, r.Deliveries[i-1].Seq)
			}
			continue
		}
		if done[d.ClientID] {
			return fmt.Errorf("load order: deliveries of client %q not together", d.ClientID)
		}
		done[d.ClientID] = true
	}
	return nil
}

// clients are ids chosen to catch keys that run into each other: a prefix
// of another id, 0xFF bytes (whose range ends carry), the empty id.
var clients = []string{"a", "ab", "b", "", "a\xff", "\xff", "\xff\xff", "a/b"}

// fill puts a full set of records for one client, using message ids from
// base on.
func fill(b storage.Batch, client string, base uint64) {
	b.PutSession(&storage.Session{ClientID: client, Version: 5, Expiry: 3600, DisconnectedAt: int64(base)})
	b.PutSubscription(&storage.Subscription{ClientID: client, Filter: "x", QoS: 1, Identifier: 7})
	b.PutSubscription(&storage.Subscription{ClientID: client, Group: "x", Filter: "", QoS: 2, NoLocal: true})
	b.PutSubscription(&storage.Subscription{ClientID: client, Group: "g", Filter: "s/#", RetainHandling: 2,
		RetainAsPublished: true})
	for i := uint64(0); i < 3; i++ {
		b.PutMessage(message(base + i))
		b.PutDelivery(&storage.Delivery{ClientID: client, Seq: i + 1, MessageID: base + i, QoS: byte(i % 3),
			SubIDs: []uint32{7}, PacketID: uint16(i), ShareGroup: "g", ShareFilter: "s/#"})
	}
	b.PutInbound(client, 1, 0) // no creation time known
	b.PutInbound(client, 65535, int64(base)<<20)
	w := &storage.Will{ClientID: client, Message: *message(0), FireAt: int64(base)}
	b.PutWill(w)
}

// message returns a sample message; odd ids carry properties.
func message(id uint64) *storage.Message {
	m := &storage.Message{ID: id, Topic: fmt.Sprintf("t/%d", id), Payload: []byte(fmt.Sprint("payload ", id)),
		QoS: byte(id % 3), Retain: id%4 == 0, Origin: "pub", Created: int64(id) * 1000}
	if id%2 == 1 {
		m.Properties = sampleProperties()
		m.ExpireAt = m.Created + 60e9
	}
	return m
}

func sampleProperties() *packets.Properties {
	return &packets.Properties{PayloadFormat: 1, MessageExpiry: 60, ContentType: "text/plain",
		ResponseTopic: "reply", CorrelationData: []byte{1, 2, 3},
		User: []packets.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: "v2"}}}
}

type testCase struct {
	name string
	fn   func(e *env)
}

var cases = []testCase{
	{"Empty", func(e *env) { e.check() }},
	{"RoundTrip", testRoundTrip},
	{"Overwrite", testOverwrite},
	{"Delete", testDelete},
	{"DeleteSessionCascade", testDeleteSession},
	{"BatchOrder", testBatchOrder},
	{"LoadOrder", testLoadOrder},
	{"LargePayload", testLargePayload},
	{"ManyDeliveries", testManyDeliveries},
	{"RecordsCopied", testRecordsCopied},
	{"Batch", testBatch},
	{"LoaderError", testLoaderError},
	{"Reopen", testReopen},
	{"Concurrent", testConcurrent},
	{"Closed", testClosed},
	{"ReadQueue", testReadQueue},
}

func testRoundTrip(e *env) {
	e.change(true, func(b storage.Batch) {
		for i, c := range clients {
			fill(b, c, uint64(100*(i+1)))
		}
		b.PutMessage(&storage.Message{ID: 1})
		b.PutMessage(&storage.Message{ID: 1 << 63, Topic: "big id", Payload: []byte{0}})
		b.PutRetained("a", 100)
		b.PutRetained("a/b", 101)
		b.PutRetained("", 1)
	})
	e.check()
}

func testOverwrite(e *env) {
	e.change(false, func(b storage.Batch) { fill(b, "c", 10) })
	e.change(true, func(b storage.Batch) {
		m := message(10)
		m.Payload, m.Properties = []byte("new"), sampleProperties()
		b.PutMessage(m)
		b.PutSession(&storage.Session{ClientID: "c", Version: 4, Expiry: 0xFFFFFFFF})
		b.PutSubscription(&storage.Subscription{ClientID: "c", Filter: "x", QoS: 0})
		b.PutDelivery(&storage.Delivery{ClientID: "c", Seq: 1, MessageID: 10, QoS: 2, PacketID: 99, Released: true})
		b.PutRetained("r", 10)
		b.PutRetained("r", 11)
		b.PutWill(&storage.Will{ClientID: "c", Message: storage.Message{Topic: "will2"}})
	})
	e.check()
}

func testDelete(e *env) {
	e.change(false, func(b storage.Batch) {
		fill(b, "c", 10)
		fill(b, "d", 20)
		b.PutRetained("r", 10)
		b.PutRetained("r2", 11)
	})
	e.change(true, func(b storage.Batch) {
		b.DeleteMessage(11)
		b.DeleteMessage(999) // absent: no effect
		b.DeleteSubscription("c", "x", "")
		b.DeleteSubscription("c", "", "x/") // absent
		b.DeleteDelivery("c", 2)
		b.DeleteInbound("c", 65535)
		b.DeleteRetained("r")
		b.DeleteWill("c")
		b.DeleteWill("nobody")
	})
	e.check()
	e.change(false, func(b storage.Batch) {
		b.DeleteSubscription("c", "", "x")
		b.DeleteSubscription("c", "g", "s/#")
		b.DeleteDelivery("c", 1)
		b.DeleteDelivery("c", 3)
		b.DeleteInbound("c", 1)
	})
	r := e.check()
	if len(r.Sessions) != 2 || len(r.Deliveries) != 3 {
		e.t.Fatalf("got %d sessions, %d deliveries; want 2, 3", len(r.Sessions), len(r.Deliveries))
	}
}

func testDeleteSession(e *env) {
	e.change(false, func(b storage.Batch) {
		for i, c := range clients {
			fill(b, c, uint64(100*(i+1)))
		}
		b.PutRetained("t/100", 100)
	})
	for _, c := range []string{"a", "\xff", ""} {
		e.change(true, func(b storage.Batch) { b.DeleteSession(c) })
		r := e.check()
		for _, d := range r.Deliveries {
			if d.ClientID == c {
				e.t.Fatalf("delivery of deleted client %q loaded", c)
			}
		}
	}
	e.change(false, func(b storage.Batch) { b.DeleteSession("never existed") })
	r := e.check()
	if len(r.Messages) != 3*len(clients) || len(r.RetainedTopics) != 1 {
		e.t.Fatalf("DeleteSession touched messages or retained: %d messages, %d retained",
			len(r.Messages), len(r.RetainedTopics))
	}
}

func testBatchOrder(e *env) {
	e.change(false, func(b storage.Batch) { fill(b, "a", 10); fill(b, "b", 20) })
	e.change(false, func(b storage.Batch) {
		b.DeleteSession("a") // then a new session in the same batch: it stays
		b.PutSession(&storage.Session{ClientID: "a", Version: 3})
		b.PutDelivery(&storage.Delivery{ClientID: "a", Seq: 2, MessageID: 10, QoS: 1})
		b.PutInbound("a", 5, 1)
		b.PutSubscription(&storage.Subscription{ClientID: "a", Filter: "#"})
		b.PutRetained("x", 1) // put then delete: gone
		b.DeleteRetained("x")
		b.PutMessage(message(50)) // delete then put: there
		b.DeleteMessage(50)
		b.PutMessage(message(50))
		b.PutDelivery(&storage.Delivery{ClientID: "b", Seq: 9}) // put then session deleted: gone
		b.DeleteSession("b")
	})
	e.check()
}

func testLoadOrder(e *env) {
	rng := rand.New(rand.NewPCG(1, 2))
	type dlv struct {
		client string
		seq    uint64
	}
	var all []dlv
	for _, c := range clients {
		for seq := uint64(1); seq <= 300; seq++ {
			all = append(all, dlv{c, seq * 1000})
		}
	}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for len(all) > 0 {
		n := min(len(all), 97)
		chunk := all[:n]
		all = all[n:]
		e.change(false, func(b storage.Batch) {
			for _, d := range chunk {
				b.PutDelivery(&storage.Delivery{ClientID: d.client, Seq: d.seq, MessageID: d.seq})
				b.PutMessage(&storage.Message{ID: d.seq<<8 | uint64(len(d.client)), Topic: "t"})
			}
			b.PutWill(&storage.Will{ClientID: chunk[0].client})
			b.PutRetained(fmt.Sprint("r", chunk[0].seq), chunk[0].seq)
			b.PutInbound(chunk[0].client, uint16(chunk[0].seq), int64(chunk[0].seq))
			b.PutSession(&storage.Session{ClientID: chunk[0].client})
			b.PutSubscription(&storage.Subscription{ClientID: chunk[0].client, Filter: fmt.Sprint(chunk[0].seq)})
		})
	}
	r := e.check()
	if len(r.Deliveries) != 300*len(clients) {
		e.t.Fatalf("loaded %d deliveries, want %d", len(r.Deliveries), 300*len(clients))
	}
}

func testLargePayload(e *env) {
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	e.change(true, func(b storage.Batch) {
		m := message(1)
		m.Payload = big
		m.Properties.CorrelationData = big[:64<<10]
		b.PutMessage(m)
		b.PutWill(&storage.Will{ClientID: "c", Message: storage.Message{Topic: "w", Payload: big}})
		b.PutDelivery(&storage.Delivery{ClientID: "c", Seq: 1, MessageID: 1, SubIDs: make([]uint32, 10000)})
	})
	e.check()
}

func testManyDeliveries(e *env) {
	// Checked directly rather than against the model: a diff of 100,000
	// records is slow under the race detector.
	const n = 100_000
	seqs := rand.New(rand.NewPCG(3, 4)).Perm(n)
	for i := 0; i < n; i += 5000 {
		b := e.s.NewBatch()
		for _, s := range seqs[i : i+5000] {
			b.PutDelivery(&storage.Delivery{ClientID: "c", Seq: uint64(s) + 1, MessageID: uint64(s), QoS: 1})
		}
		if err := e.s.Commit(b, false); err != nil {
			e.t.Fatal(err)
		}
	}
	var r Recorder
	if err := e.s.Load(&r); err != nil {
		e.t.Fatal(err)
	}
	if len(r.Deliveries) != n {
		e.t.Fatalf("loaded %d deliveries, want %d", len(r.Deliveries), n)
	}
	for i, d := range r.Deliveries {
		if d.ClientID != "c" || d.Seq != uint64(i+1) || d.MessageID != uint64(i) || d.QoS != 1 {
			e.t.Fatalf("delivery %d: %+v", i, d)
		}
	}
}

func testRecordsCopied(e *env) {
	m := message(1)
	d := &storage.Delivery{ClientID: "c", Seq: 1, SubIDs: []uint32{1, 2}}
	e.change(false, func(b storage.Batch) {
		b.PutMessage(m)
		b.PutDelivery(d)
	})
	// The store must have copied them at Put: these changes must not show.
	m.Payload[0], m.Properties.User[0].Key, d.SubIDs[0] = 'X', "changed", 99
	var r Recorder
	if err := e.s.Load(&r); err != nil {
		e.t.Fatal(err)
	}
	r.Messages[0].Payload[0] = 'Y' // and Load hands out copies
	r.Deliveries[0].SubIDs[1] = 77
	e.m.s.Messages[1] = normMessage(*message(1))
	e.m.s.Deliveries[dlvKey{"c", 1}] = storage.Delivery{ClientID: "c", Seq: 1, SubIDs: []uint32{1, 2}}
	e.check()
}

func testBatch(e *env) {
	b := e.s.NewBatch()
	if b.Len() != 0 {
		e.t.Fatalf("new batch Len = %d", b.Len())
	}
	fill(b, "c", 1)
	fill(e.m, "c", 1)
	if b.Len() != e.m.Len() || b.Len() != 13 {
		e.t.Fatalf("Len = %d, want %d", b.Len(), e.m.Len())
	}
	b.DeleteSession("x")
	if b.Len() != 14 {
		e.t.Fatalf("DeleteSession counts as %d operations, want 1", b.Len()-13)
	}
	e.m.DeleteSession("x")
	if err := e.s.Commit(b, true); err != nil {
		e.t.Fatal(err)
	}
	if err := e.s.Commit(b, false); !errors.Is(err, storage.ErrBatch) {
		e.t.Fatalf("second Commit of a batch: %v, want ErrBatch", err)
	}
	for _, sync := range []bool{false, true} {
		if err := e.s.Commit(e.s.NewBatch(), sync); err != nil {
			e.t.Fatalf("empty batch, sync %v: %v", sync, err)
		}
	}
	if err := e.s.Sync(); err != nil {
		e.t.Fatal(err)
	}
	other := e.open(e.t)
	ob := other.NewBatch()
	ob.PutRetained("r", 1)
	if err := e.s.Commit(ob, false); !errors.Is(err, storage.ErrBatch) {
		e.t.Fatalf("Commit of another store's batch: %v, want ErrBatch", err)
	}
	if size, err := e.s.Size(); err != nil || size < 0 {
		e.t.Fatalf("Size = %d, %v", size, err)
	}
	e.check()
}

func testLoaderError(e *env) {
	e.change(false, func(b storage.Batch) { fill(b, "c", 1) })
	want := errors.New("loader says no")
	r := Recorder{Fail: want}
	if err := e.s.Load(&r); err != want {
		e.t.Fatalf("Load = %v, want the loader's error", err)
	}
	if len(r.Kinds) != 1 {
		e.t.Fatalf("Load went on after the loader's error: %d calls", len(r.Kinds))
	}
}

func testReopen(e *env) {
	if e.reopen == nil {
		e.t.Skip("store does not persist")
	}
	e.change(true, func(b storage.Batch) {
		for i, c := range clients {
			fill(b, c, uint64(100*(i+1)))
		}
		b.PutRetained("r", 100)
	})
	e.change(false, func(b storage.Batch) { b.DeleteSession("ab"); b.PutRetained("r2", 101) })
	if err := e.s.Sync(); err != nil {
		e.t.Fatal(err)
	}
	e.change(false, func(b storage.Batch) { b.DeleteMessage(100) }) // not synced: Close keeps it
	e.s = e.reopen(e.t, e.s)
	e.check()
	e.change(false, func(b storage.Batch) { b.DeleteSession("a"); fill(b, "new", 5000) })
	e.s = e.reopen(e.t, e.s)
	e.check()
}

func testClosed(e *env) {
	b := e.s.NewBatch()
	b.PutRetained("r", 1)
	if err := e.s.Close(); err != nil {
		e.t.Fatal(err)
	}
	late := e.s.NewBatch() // a batch made after Close fails at Commit
	late.PutRetained("r", 2)
	checks := map[string]error{
		"Commit":      e.s.Commit(b, true),
		"Commit late": e.s.Commit(late, false),
		"Sync":        e.s.Sync(),
		"Load":        e.s.Load(&Recorder{}),
		"Close":       e.s.Close(),
	}
	_, checks["Size"] = e.s.Size()
	_, checks["ReadQueue"] = e.s.ReadQueue("c", 0, 1)
	for name, err := range checks {
		if !errors.Is(err, storage.ErrClosed) {
			e.t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// testReadQueue reads a client's deliveries back in pages: only that
// client's, in Seq order, after the given Seq, each with its message (one
// Message for the entries of a call that share it, nil when missing).
func testReadQueue(e *env) {
	e.change(false, func(b storage.Batch) {
		fill(b, "a", 100) // its neighbours in key order must not leak in
		fill(b, "ab", 200)
		b.PutMessage(message(1))
		b.PutMessage(message(2))
		for seq := uint64(1); seq <= 50; seq++ {
			id := 1 + seq%2
			if seq == 7 {
				id = 999 // no such message
			}
			b.PutDelivery(&storage.Delivery{ClientID: "a\xff", Seq: seq * 10, MessageID: id, QoS: 1, SubIDs: []uint32{uint32(seq)}})
		}
	})
	e.change(true, func(b storage.Batch) { b.DeleteDelivery("a\xff", 200) })
	var got []storage.QueueEntry
	after := uint64(0)
	for range 100 {
		page, err := e.s.ReadQueue("a\xff", after, 7)
		if err != nil {
			e.t.Fatal(err)
		}
		if len(page) > 7 {
			e.t.Fatalf("ReadQueue returned %d entries, max 7", len(page))
		}
		if len(page) == 0 {
			break
		}
		for i := range page {
			for j := range i {
				if page[i].Delivery.MessageID == page[j].Delivery.MessageID && page[i].Message != page[j].Message {
					e.t.Fatalf("entries %d and %d of one page share message %d but not its Message", j, i, page[i].Delivery.MessageID)
				}
			}
		}
		got = append(got, page...)
		after = page[len(page)-1].Delivery.Seq
	}
	if len(got) != 49 {
		e.t.Fatalf("read %d deliveries, want 49", len(got))
	}
	want := uint64(10)
	for _, q := range got {
		if want == 200 {
			want += 10
		}
		d := q.Delivery
		if d.ClientID != "a\xff" || d.Seq != want || d.QoS != 1 || len(d.SubIDs) != 1 || d.SubIDs[0] != uint32(want/10) {
			e.t.Fatalf("read %+v, want seq %d", d, want)
		}
		switch {
		case d.Seq == 70:
			if q.Message != nil {
				e.t.Fatalf("seq 70: message %+v, want nil (missing)", q.Message)
			}
		case q.Message == nil || q.Message.ID != d.MessageID || q.Message.Topic != message(d.MessageID).Topic ||
			string(q.Message.Payload) != string(message(d.MessageID).Payload):
			e.t.Fatalf("seq %d: message %+v, want %+v", d.Seq, q.Message, message(d.MessageID))
		}
		want += 10
	}
	for _, c := range []struct {
		client string
		after  uint64
		n      int
	}{{"a", 0, 3}, {"a", 2, 1}, {"a", 3, 0}, {"nobody", 0, 0}, {"a\xff", 500, 0}, {"a\xff", 1<<64 - 1, 0}} {
		page, err := e.s.ReadQueue(c.client, c.after, 100)
		if err != nil || len(page) != c.n {
			e.t.Fatalf("ReadQueue(%q, %d): %d entries, %v; want %d", c.client, c.after, len(page), err, c.n)
		}
	}
}
