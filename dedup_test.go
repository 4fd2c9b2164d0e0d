package tern_test

import (
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/terntest"
)

// A session's duplicate window (ExpectDuplicates) keeps a QoS 1 or 2
// message that reaches it twice (directly, and again from the node it came
// from) from being delivered twice, QoS 2 exactly once [MQTT-4.3.3-2];
// another message, QoS 0, and anything after the window are delivered as
// ever.
func TestExpectDuplicates(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	c := srv.Dial(t, packets.V5)
	c.Connect(&packets.Connect{ProtocolVersion: packets.V5, ClientID: "dup", KeepAlive: 30,
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
	if srv.ExpectDuplicates("nobody", time.Minute) {
		t.Fatal("a window on a session that does not exist")
	}
	if !srv.ExpectDuplicates("dup", time.Minute) {
		t.Fatal("no window on the session")
	}
	created := time.Now()
	msg := func(payload string, qos byte, at time.Time) *tern.Message {
		return tern.MessageFromRecord(&storage.Message{Topic: "d/1", Payload: []byte(payload), QoS: qos, Origin: "pub",
			Created: at.UnixNano()})
	}
	first := msg("first", 2, created)
	for _, tc := range []struct {
		m    *tern.Message
		took bool
	}{
		{first, true},
		{msg("first", 2, created), false}, // the same publication again
		{msg("other", 2, created.Add(time.Nanosecond)), true}, // another one
		{msg("zero", 0, created), true},                       // QoS 0: not checked
		{msg("zero", 0, created), true},
	} {
		in := srv.InjectTo("dup", tc.m, tern.Delivery{QoS: tc.m.QoS})
		if in.Queued != 1 {
			t.Fatalf("%s: queued %d", tc.m.Payload, in.Queued)
		}
	}
	// A shipped part with the first message again is not queued either.
	if err := srv.ImportSession(&tern.SessionState{Session: storage.Session{ClientID: "dup", Version: packets.V5, Expiry: 3600},
		Messages:   []storage.Message{{ID: 1, Topic: "d/1", Payload: []byte("first"), QoS: 2, Origin: "pub", Created: created.UnixNano()}},
		Deliveries: []storage.Delivery{{ClientID: "dup", MessageID: 1, QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 4 {
		p, ok := c.Recv().(*packets.Publish)
		if !ok {
			t.Fatal("not a PUBLISH")
		}
		got = append(got, string(p.Payload))
	}
	want := []string{"first", "other", "zero", "zero"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if n := srv.Stats().DuplicatesSkipped; n != 2 {
		t.Fatalf("DuplicatesSkipped %d, want 2", n)
	}
	if p, err := c.TryRecv(300 * time.Millisecond); err == nil {
		t.Fatalf("a fifth packet: %+v", p)
	}
	// A session without a window gets both copies, as ever.
	c2 := srv.Dial(t, packets.V5)
	c2.MustConnect("nodup")
	for range 2 {
		srv.InjectTo("nodup", msg("first", 1, created), tern.Delivery{QoS: 1})
	}
	for range 2 {
		if p, ok := c2.Recv().(*packets.Publish); !ok || string(p.Payload) != "first" {
			t.Fatalf("got %+v", p)
		}
	}
}

// Messages that one read brought from a publisher are distinct messages,
// even with the same topic and payload: each gets its own creation time,
// so a subscriber's duplicate window takes every one.
func TestExpectDuplicatesOneRead(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	sub := srv.Dial(t, packets.V5)
	sub.MustConnect("win")
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "same", QoS: 1}}})
	if _, ok := sub.Recv().(*packets.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	srv.ExpectDuplicates("win", time.Minute)
	pub := srv.Dial(t, packets.V5)
	pub.MustConnect("pub")
	const n = 50
	var b []byte
	for i := range n {
		b, _ = (&packets.Publish{Topic: "same", QoS: 1, PacketID: uint16(i + 1), Payload: []byte("x")}).Encode(b, packets.V5)
	}
	pub.SendRaw(b) // one write: most likely one read
	for i := range n {
		if _, ok := sub.Recv().(*packets.Publish); !ok {
			t.Fatalf("message %d: not a PUBLISH", i)
		}
	}
	if d := srv.Stats().DuplicatesSkipped; d != 0 {
		t.Fatalf("%d skipped as duplicates", d)
	}
}
