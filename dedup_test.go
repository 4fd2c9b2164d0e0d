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
	c := persistentSub(t, srv, "dup", packets.Subscription{Filter: "d/#", QoS: 2})
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
	subscribeOne(t, c2, "d/#", 1)
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

// The duplicate window drops only second copies: a session subscribed
// to a topic both shared and not takes one message for each subscription,
// and a copy the session could not take (its queue was full) does not
// count as taken: the next copy is queued.
func TestExpectDuplicatesOnlyCopies(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	c := srv.Dial(t, packets.V5)
	c.Connect(&packets.Connect{ProtocolVersion: packets.V5, ClientID: "w", KeepAlive: 30,
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t", QoS: 1}, {Filter: "$share/g/t", QoS: 1}}})
	if _, ok := c.Recv().(*packets.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	srv.ExpectDuplicates("w", time.Minute)
	if err := srv.Publish("t", []byte("both"), false, 1); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		p, ok := c.Recv().(*packets.Publish)
		if !ok || string(p.Payload) != "both" {
			t.Fatalf("delivery %d: %+v", i, p)
		}
		c.Send(&packets.Puback{PacketID: p.PacketID})
	}
	if n := srv.Stats().DuplicatesSkipped; n != 0 {
		t.Fatalf("%d skipped as duplicates: shared and not are two deliveries", n)
	}
	// Offline with a full queue: the first copy of m is dropped, not
	// taken; the second, once there is room, is queued.
	srv = terntest.NewServer(t, &tern.Options{MaxQueuedMessages: 1})
	c = srv.Dial(t, packets.V5)
	c.Connect(&packets.Connect{ProtocolVersion: packets.V5, ClientID: "w", KeepAlive: 30,
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
	subscribeOne(t, c, "q", 1)
	srv.ExpectDuplicates("w", time.Minute)
	c.Send(&packets.Disconnect{})
	c.ExpectClosed()
	at := time.Now()
	first := tern.MessageFromRecord(&storage.Message{Topic: "q", Payload: []byte("a"), QoS: 1, Origin: "pub", Created: at.UnixNano()})
	m := func() *tern.Message {
		return tern.MessageFromRecord(&storage.Message{Topic: "q", Payload: []byte("m"), QoS: 1, Origin: "pub", Created: at.Add(time.Nanosecond).UnixNano()})
	}
	srv.InjectTo("w", first, tern.Delivery{QoS: 1})
	if in := srv.InjectTo("w", m(), tern.Delivery{QoS: 1}); in.Queued != 0 {
		t.Fatalf("m queued into a full queue: %+v", in)
	}
	c = srv.Dial(t, packets.V5)
	if ack := c.Connect(&packets.Connect{ProtocolVersion: packets.V5, ClientID: "w", KeepAlive: 30,
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}}); !ack.SessionPresent {
		t.Fatal("session not present")
	}
	p, ok := c.Recv().(*packets.Publish)
	if !ok || string(p.Payload) != "a" {
		t.Fatalf("got %+v", p)
	}
	c.Send(&packets.Puback{PacketID: p.PacketID})
	c.Send(&packets.Pingreq{}) // its answer comes once the PUBACK made room
	if _, ok := c.Recv().(*packets.Pingresp); !ok {
		t.Fatal("no PINGRESP")
	}
	srv.InjectTo("w", m(), tern.Delivery{QoS: 1})
	if p, ok := c.Recv().(*packets.Publish); !ok || string(p.Payload) != "m" {
		t.Fatalf("second copy of m: got %+v", p)
	}
}

// A window opened on a session that holds messages already (restored
// from the store after a crash) counts them as taken: another copy of one
// (parked for the node too, its acknowledgement lost) is not queued.
func TestExpectDuplicatesHeld(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	c := persistentSub(t, srv, "held", packets.Subscription{Filter: "h/#", QoS: 1})
	c.Close()
	terntest.Eventually(t, "offline", func() bool { si, ok := srv.SessionInfo("held"); return ok && !si.Online })
	m := tern.MessageFromRecord(&storage.Message{Topic: "h/1", Payload: []byte("x"), QoS: 1, Origin: "pub", Created: 7})
	if in := srv.InjectTo("held", m, tern.Delivery{QoS: 1}); in.Queued != 1 {
		t.Fatalf("queued %d", in.Queued)
	}
	srv.ExpectDuplicates("held", time.Minute)
	again := tern.MessageFromRecord(&storage.Message{Topic: "h/1", Payload: []byte("x"), QoS: 1, Origin: "pub", Created: 7})
	srv.InjectTo("held", again, tern.Delivery{QoS: 1})
	if si, _ := srv.SessionInfo("held"); si.Queued != 1 || srv.Stats().DuplicatesSkipped != 1 {
		t.Fatalf("queued %d, skipped %d", si.Queued, srv.Stats().DuplicatesSkipped)
	}
}

// A live message with RETAIN set (a subscription with Retain As
// Published) is checked like any other: a second copy of it, passed on by
// the node the session left, is not delivered again [MQTT-4.3.3-2].
func TestExpectDuplicatesRetainedLive(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	c := windowed(t, srv, "rap", packets.Subscription{Filter: "r/#", QoS: 2, RetainAsPublished: true})
	at := time.Now()
	for _, payload := range []string{"kept", "kept", "next"} {
		m := tern.MessageFromRecord(&storage.Message{Topic: "r/1", Payload: []byte(payload), QoS: 2, Retain: true, Origin: "pub", Created: at.UnixNano()})
		if payload == "next" {
			m = tern.MessageFromRecord(&storage.Message{Topic: "r/1", Payload: []byte(payload), QoS: 2, Retain: true, Origin: "pub", Created: at.Add(time.Nanosecond).UnixNano()})
		}
		srv.InjectTo("rap", m, tern.Delivery{QoS: 2, Retain: true})
	}
	for _, want := range []string{"kept", "next"} {
		p, ok := c.Recv().(*packets.Publish)
		if !ok || string(p.Payload) != want || !p.Retain {
			t.Fatalf("got %+v, want %q with RETAIN", p, want)
		}
	}
	if n := srv.Stats().DuplicatesSkipped; n != 1 {
		t.Fatalf("DuplicatesSkipped %d, want 1", n)
	}
}

// A message another node sends by name for a shared group (a member that
// moved) is a delivery of that group: the same message taken as a plain
// subscriber's does not make it a duplicate (MQTT 5.0, 4.8.2: the session
// takes it once for each).
func TestExpectDuplicatesSharedByName(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	c := windowed(t, srv, "both", packets.Subscription{Filter: "t/#", QoS: 1}, packets.Subscription{Filter: "$share/g/t/#", QoS: 1})
	m := func() *tern.Message {
		return tern.MessageFromRecord(&storage.Message{Topic: "t/1", Payload: []byte("x"), QoS: 1, Origin: "pub", Created: 42})
	}
	if in := srv.InjectTo("both", m(), tern.Delivery{QoS: 1}); in.Queued != 1 {
		t.Fatalf("plain: %+v", in)
	}
	if in := srv.InjectTo("both", m(), tern.Delivery{QoS: 1, Group: "g", Filter: "t/#"}); in.Queued != 1 {
		t.Fatalf("group: %+v", in)
	}
	for range 2 {
		if p, ok := c.Recv().(*packets.Publish); !ok || string(p.Payload) != "x" {
			t.Fatalf("got %+v", p)
		} else {
			c.Send(&packets.Puback{PacketID: p.PacketID})
		}
	}
	if n := srv.Stats().DuplicatesSkipped; n != 0 {
		t.Fatalf("the group's copy skipped as a duplicate (%d)", n)
	}
}

// windowed connects a persistent session id with subs and opens a
// duplicate window on it.
func windowed(t *testing.T, srv *terntest.Server, id string, subs ...packets.Subscription) *terntest.Conn {
	t.Helper()
	c := persistentSub(t, srv, id, subs...)
	srv.ExpectDuplicates(id, time.Minute)
	return c
}

// persistentSub connects a persistent session id (expiry 1 h) with subs.
func persistentSub(t *testing.T, srv *terntest.Server, id string, subs ...packets.Subscription) *terntest.Conn {
	t.Helper()
	c := srv.Dial(t, packets.V5)
	c.Connect(&packets.Connect{ProtocolVersion: packets.V5, ClientID: id, KeepAlive: 30,
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: subs})
	if ack, ok := c.Recv().(*packets.Suback); !ok || len(ack.ReasonCodes) != len(subs) {
		t.Fatalf("SUBACK %+v", ack)
	}
	return c
}

// subscribeOne subscribes c to filter at qos and reads the SUBACK.
func subscribeOne(t *testing.T, c *terntest.Conn, filter string, qos byte) {
	t.Helper()
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: qos}}})
	if ack, ok := c.Recv().(*packets.Suback); !ok || ack.ReasonCodes[0] != packets.ReasonCode(qos) {
		t.Fatalf("SUBACK %+v", ack)
	}
}
