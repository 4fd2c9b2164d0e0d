package cluster

import (
	"reflect"
	"slices"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/storage"
)

// A forwarded message and its delivery survive the trip between nodes;
// a truncated one is refused, never a panic.
func TestForwardRoundTrip(t *testing.T) {
	m := tern.MessageFromRecord(&storage.Message{Topic: "a/b", Payload: []byte("x"), QoS: 2, Origin: "pub"})
	for _, d := range []tern.Delivery{
		{QoS: 1},
		{QoS: 2, Retain: true, ClientID: "moved", SubID: 7},
		{QoS: 1, Group: "g", Filter: "a/+", SubIDs: []uint32{3, 4}},
		{QoS: 2, Again: true},
	} {
		b := encodeForward(m, d)
		got, gd, err := decodeForward(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Topic != "a/b" || string(got.Payload) != "x" || got.Origin != "pub" || !reflect.DeepEqual(gd, d) {
			t.Fatalf("got %+v %+v, want %+v", got, gd, d)
		}
		for i := range b {
			decodeForward(b[:i]) // must not panic
		}
	}
}

// A batch gives back its messages in order; a truncated one stops at the
// bad frame, never a panic.
func TestBatchRoundTrip(t *testing.T) {
	b := []byte{wireVersion}
	ends := map[int]bool{1: true}
	for i := range 3 {
		m := tern.MessageFromRecord(&storage.Message{Topic: "t/" + string(rune('a'+i)), Payload: []byte{byte(i)}, QoS: 1})
		b = appendFrame(b, m, tern.Delivery{QoS: byte(i % 2), SubID: uint32(i + 1)})
		ends[len(b)] = true
	}
	var got []string
	if _, err := decodeBatch(b, true, func(m *tern.Message, d tern.Delivery) {
		got = append(got, m.Topic)
		if d.SubID != uint32(len(got)) {
			t.Errorf("message %d: subscription id %d", len(got), d.SubID)
		}
	}); err != nil || !slices.Equal(got, []string{"t/a", "t/b", "t/c"}) {
		t.Fatalf("got %v, %v", got, err)
	}
	// Shedding QoS 0 keeps the QoS 1 message only.
	got = nil
	if n, err := decodeBatch(b, false, func(m *tern.Message, d tern.Delivery) { got = append(got, m.Topic) }); n != 2 || err != nil || !slices.Equal(got, []string{"t/b"}) {
		t.Fatalf("without QoS 0: got %v, %d skipped, %v", got, n, err)
	}
	for i := range b {
		// Only a cut between frames is a (shorter) valid batch.
		if _, err := decodeBatch(b[:i], true, func(*tern.Message, tern.Delivery) {}); (err == nil) != ends[i] {
			t.Fatalf("cut at %d: %v", i, err)
		}
	}
}

// A session state survives the handover encoding.
func TestSessionRoundTrip(t *testing.T) {
	st := &tern.SessionState{
		Session:       storage.Session{ClientID: "c1", Expiry: 60, Version: 5, Username: "u", HighIDs: true},
		Subscriptions: []storage.Subscription{{ClientID: "c1", Group: "g", Filter: "a/#", QoS: 1, Identifier: 9}},
		Messages:      []storage.Message{{ID: 1, Topic: "a/b", Payload: []byte("p"), QoS: 1}},
		Deliveries:    []storage.Delivery{{ClientID: "c1", MessageID: 1, Seq: 1, QoS: 1, PacketID: 3}},
		Inbound:       []uint16{5, 6},
		Again:         map[uint16]int64{6: 1 << 60},
		Token:         "n2:1:0",
	}
	b := encodeSession(st)
	got, err := decodeSession(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("got %+v\nwant %+v", got, st)
	}
	// A node of an earlier version stops after the token: a state from it
	// has no Again.
	old := *st
	old.Again = nil
	ob := encodeSession(&old)
	if got, err := decodeSession(ob[:len(ob)-1]); err != nil || got.Again != nil || got.Token != st.Token {
		t.Fatalf("earlier version: %v %+v", err, got)
	}
	for i := range b {
		decodeSession(b[:i]) // must not panic
	}
}

// Retained keys keep letters, digits, - and _, and escape the rest.
func TestRetainedKey(t *testing.T) {
	for topic, want := range map[string]string{
		"a/b/c": "a.b.c", "/a": "=__.a", "a//b": "a.=__.b", "a.b/c": "a=2Eb.c", "$SYS/x": "=24SYS.x", "t 1/*": "t=201.=2A",
	} {
		if got := retainedKey(topic); got != want {
			t.Errorf("retainedKey(%q) = %q, want %q", topic, got, want)
		}
	}
}

// A session cut into parts keeps every delivery, in order, each part with
// the messages it refers to and under the limit (but for a single larger
// delivery); only the first has the subscriptions.
func TestSplitSession(t *testing.T) {
	st := &tern.SessionState{Session: storage.Session{ClientID: "c", Expiry: 60},
		Subscriptions: []storage.Subscription{{ClientID: "c", Filter: "a/#", QoS: 1}}, Inbound: []uint16{7}}
	for i := range 100 {
		size := 1000
		if i == 50 {
			size = 20_000 // larger than a part
		}
		st.Messages = append(st.Messages, storage.Message{ID: uint64(i + 1), Topic: "a/b", Payload: make([]byte, size), QoS: 1})
		st.Deliveries = append(st.Deliveries, storage.Delivery{Seq: uint64(i + 1), MessageID: uint64(i + 1), QoS: 1})
	}
	// Two deliveries of one message.
	st.Deliveries = append(st.Deliveries, storage.Delivery{Seq: 101, MessageID: 100, QoS: 1})
	parts := splitSession(st, 10_000)
	if len(parts) < 10 {
		t.Fatalf("%d parts", len(parts))
	}
	var seqs []uint64
	for i, p := range parts {
		if (i == 0) != (len(p.Subscriptions) == 1) || (i == 0) != (len(p.Inbound) == 1) || p.Session.ClientID != "c" {
			t.Errorf("part %d: %d subscriptions, inbound %v, client %q", i, len(p.Subscriptions), p.Inbound, p.Session.ClientID)
		}
		have := map[uint64]bool{}
		for _, m := range p.Messages {
			have[m.ID] = true
		}
		for _, d := range p.Deliveries {
			if !have[d.MessageID] {
				t.Errorf("part %d: delivery %d without its message", i, d.Seq)
			}
			seqs = append(seqs, d.Seq)
		}
		if n := len(encodeSession(p)); n > 10_000+1_200 && len(p.Deliveries) > 1 {
			t.Errorf("part %d: %d bytes", i, n)
		}
		if _, err := decodeSession(encodeSession(p)); err != nil {
			t.Errorf("part %d: %v", i, err)
		}
	}
	if len(seqs) != 101 || !slices.IsSorted(seqs) {
		t.Errorf("deliveries %v", seqs)
	}
	if len(splitSession(&tern.SessionState{Session: storage.Session{ClientID: "e"}}, 10)) != 1 {
		t.Error("an empty session is not one part")
	}
}

// A node the sender does not keep up with gets at most maxUnsent bytes of
// messages queued (plus the last one); QoS 0 beyond is dropped and counted.
func TestUnsentBound(t *testing.T) {
	f := newForwarder(&Cluster{})
	r := &nodeRemote{node: "n2", subject: "tern.n.n2.data"}
	r.alive.Store(true)
	m := tern.MessageFromRecord(&storage.Message{Topic: "t", Payload: make([]byte, 64<<10)})
	const n = maxUnsent/(64<<10) + 20
	for range n { // no sender runs: nothing leaves
		f.send(r, m, tern.Delivery{}, nil)
	}
	if r.unsent > maxUnsent+(65<<10) {
		t.Fatalf("%d bytes unsent, bound %d", r.unsent, maxUnsent)
	}
	if shed, sent := f.cnt.shed.Load(), f.cnt.sent.Load(); shed == 0 || shed+sent != n {
		t.Fatalf("shed %d, sent %d of %d", shed, sent, n)
	}
}
