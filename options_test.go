package tern_test

// Raw-packet tests of the Options that shape what the server advertises and
// enforces: feature availability, keep alive and session expiry caps,
// client identifier and topic level limits, offline QoS 0 queueing, and a
// 100,000-message queue for a returning persistent session.

import (
	"fmt"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

func no() *bool { f := false; return &f }

// Features switched off are advertised in CONNACK (0x28, 0x29, 0x2A: sections
// 3.2.2.3.14-16) and a SUBSCRIBE that needs one gets the matching reason code
// for that filter only: 0xA2 wildcards, 0x9E shared
// subscriptions, and a subscription identifier ends the connection with
// 0xA1 (section 3.2.2.3.16).
func TestOptionsFeaturesOff(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{WildcardSubAvailable: no(), SharedSubAvailable: no(), SubIDAvailable: no()})
	c := srv.Dial(t, packets.V5)
	ack := c.MustConnect("features")
	p := ack.Properties
	if p.WildcardSubAvailable == nil || *p.WildcardSubAvailable != 0 ||
		p.SharedSubAvailable == nil || *p.SharedSubAvailable != 0 ||
		p.SubIDAvailable == nil || *p.SubIDAvailable != 0 {
		t.Fatalf("CONNACK does not advertise the features as off: %+v", p)
	}
	codes := subscribeRaw(t, c, 1,
		packets.Subscription{Filter: "plain", QoS: 1},
		packets.Subscription{Filter: "wild/+", QoS: 1},
		packets.Subscription{Filter: "wild/#", QoS: 1},
		packets.Subscription{Filter: "$share/g/plain", QoS: 1})
	want := []packets.ReasonCode{packets.GrantedQoS1, packets.WildcardSubsNotSupported,
		packets.WildcardSubsNotSupported, packets.SharedSubsNotSupported}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("SUBACK codes %v, want %v", codes, want)
		}
	}
	c.Send(&packets.Subscribe{PacketID: 2, Subscriptions: []packets.Subscription{{Filter: "x"}},
		Properties: packets.Properties{SubscriptionIDs: []uint32{7}}})
	expectProtocolClose(t, c, packets.SubIDsNotSupported)
}

// A v5 client asking for no keep alive, or a longer one than MaxKeepAlive,
// is told the server's in CONNACK ([MQTT-3.2.2-21]) and held to it
// ([MQTT-3.1.2-21]); a shorter one stands.
func TestOptionsServerKeepAlive(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxKeepAlive: 30})
	for _, tc := range []struct {
		asked uint16
		want  *uint16
	}{
		{0, packets.Uint16(30)},
		{600, packets.Uint16(30)},
		{10, nil},
	} {
		c := srv.Dial(t, packets.V5)
		ack := c.Connect(&packets.Connect{ClientID: fmt.Sprint("ka", tc.asked), CleanStart: true, KeepAlive: tc.asked})
		got := ack.Properties.ServerKeepAlive
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("keep alive %d: Server Keep Alive %v, want %v", tc.asked, got, tc.want)
		}
		c.Close()
	}
}

// MaxSessionExpiry caps what a client asks for, and the CONNACK says what
// is in force (section 3.2.2.3.2).
func TestOptionsMaxSessionExpiry(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxSessionExpiry: 60})
	c := srv.Dial(t, packets.V5)
	ack := c.Connect(&packets.Connect{ClientID: "se", CleanStart: true, Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
	if e := ack.Properties.SessionExpiry; e == nil || *e != 60 {
		t.Fatalf("CONNACK Session Expiry %v, want 60", e)
	}
	c2 := srv.Dial(t, packets.V5)
	ack = c2.Connect(&packets.Connect{ClientID: "se2", CleanStart: true, Properties: packets.Properties{SessionExpiry: packets.Uint32(30)}})
	if ack.Properties.SessionExpiry != nil {
		t.Fatalf("CONNACK Session Expiry %v for an allowed value, want none", *ack.Properties.SessionExpiry)
	}
}

// A client identifier longer than MaxClientIDLength is refused with 0x85
// (3.1.1: return code 2) [MQTT-3.1.3-9] (v5: [MQTT-3.1.3-8]).
func TestOptionsMaxClientIDLength(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxClientIDLength: 8})
	for _, v := range []byte{packets.V311, packets.V5} {
		c := srv.Dial(t, v)
		if ack := c.Connect(&packets.Connect{ClientID: "123456789", CleanStart: true}); ack.ReasonCode != packets.ClientIdentifierNotValid {
			t.Fatalf("v%d: CONNACK %v, want 0x85 (3.1.1: 2)", v, ack.ReasonCode)
		}
		c = srv.Dial(t, v)
		if ack := c.Connect(&packets.Connect{ClientID: "12345678", CleanStart: true}); ack.ReasonCode != 0 {
			t.Fatalf("v%d: CONNACK %v for an id at the limit", v, ack.ReasonCode)
		}
	}
}

// MaxTopicLevels: a filter with more levels gets 0x8F (3.1.1: 0x80) for that
// filter; a PUBLISH to a topic with more levels ends a v5 connection with
// 0x90 and closes a 3.1.1 one.
func TestOptionsMaxTopicLevels(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxTopicLevels: 3})
	for _, v := range []byte{packets.V311, packets.V5} {
		c := mustConnect(t, srv, v, fmt.Sprint("levels", v))
		codes := subscribeRaw(t, c, 1, packets.Subscription{Filter: "a/b/c"}, packets.Subscription{Filter: "a/b/c/d"})
		wantBad := packets.TopicFilterInvalid
		if v != packets.V5 {
			wantBad = 0x80
		}
		if codes[0] != 0 || codes[1] != wantBad {
			t.Fatalf("v%d: SUBACK %v, want [0 %v]", v, codes, wantBad)
		}
		c.Send(&packets.Publish{Topic: "a/b/c/d", Payload: []byte("x")})
		expectProtocolClose(t, c, packets.TopicNameInvalid)
	}
}

// With QueueQoS0Offline off, QoS 0 messages for an offline session are
// dropped (and counted) while QoS 1 ones are queued.
func TestOptionsQueueQoS0Offline(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{QueueQoS0Offline: no()})
	sub := srv.Dial(t, packets.V311)
	sub.Connect(&packets.Connect{ClientID: "offline", CleanStart: false})
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "o", QoS: 1})
	sub.Send(&packets.Disconnect{})
	sub.ExpectClosed()
	waitOffline(t, srv, "offline") // the server detaches the session after the socket closes
	pub := mustConnect(t, srv, packets.V311, "pub")
	pub.Send(&packets.Publish{Topic: "o", QoS: 0, Payload: []byte("zero")})
	pub.Send(&packets.Publish{Topic: "o", QoS: 1, PacketID: 1, Payload: []byte("one")})
	recvAs[*packets.Puback](t, pub)
	sub = srv.Dial(t, packets.V311)
	if ack := sub.Connect(&packets.Connect{ClientID: "offline", CleanStart: false}); !ack.SessionPresent {
		t.Fatal("session not present")
	}
	if p := recvAs[*packets.Publish](t, sub); string(p.Payload) != "one" {
		t.Fatalf("got %q, want only the QoS 1 message", p.Payload)
	}
	expectNothing(t, sub, "the QoS 0 message must have been dropped")
	if n := srv.Stats().MessagesDropped; n != 1 {
		t.Fatalf("MessagesDropped = %d, want 1", n)
	}
}

// 100,000 QoS 1 messages queued for an offline persistent session (with
// MaxQueuedMessages raised to that; the default is 10,000) are all
// delivered, in order, when it returns [MQTT-3.1.2-5], [MQTT-4.6.0-6].
func TestOptionsQueue100kForReturningSession(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 messages: not in -short")
	}
	srv := terntest.NewServer(t, &tern.Options{MaxQueuedMessages: 100_000})
	sub := srv.Dial(t, packets.V311)
	sub.Connect(&packets.Connect{ClientID: "returning", CleanStart: false})
	subscribeRaw(t, sub, 1, packets.Subscription{Filter: "bulk/#", QoS: 1})
	sub.Send(&packets.Disconnect{})
	sub.ExpectClosed()
	waitOffline(t, srv, "returning")

	const n = 100_000
	pub := mustConnect(t, srv, packets.V311, "bulk-pub")
	var buf []byte
	done := make(chan struct{})
	go func() { // acknowledgements are read while publishing, so neither side blocks
		defer close(done)
		for i := 0; i < n; i++ {
			if _, err := pub.TryRecv(terntest.Timeout); err != nil {
				t.Errorf("PUBACK %d: %v", i, err)
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		p := packets.Publish{Topic: "bulk/t", QoS: 1, PacketID: uint16(i%65535 + 1), Payload: []byte(fmt.Sprint(i))}
		buf, _ = p.Encode(buf, packets.V311)
		if len(buf) > 32<<10 || i == n-1 {
			pub.SendRaw(buf)
			buf = buf[:0]
		}
	}
	<-done
	if q := srv.Stats().Queued; q != n {
		t.Fatalf("queued %d, want %d", q, n)
	}

	sub = srv.Dial(t, packets.V311)
	if ack := sub.Connect(&packets.Connect{ClientID: "returning", CleanStart: false}); !ack.SessionPresent {
		t.Fatal("session not present")
	}
	var acks []byte
	for i := 0; i < n; i++ {
		p := recvAs[*packets.Publish](t, sub)
		if got := string(p.Payload); got != fmt.Sprint(i) {
			t.Fatalf("message %d has payload %q", i, got)
		}
		acks, _ = (&packets.Puback{PacketID: p.PacketID}).Encode(acks, packets.V311)
		if len(acks) >= 4*256 || i == n-1 { // well inside the inflight window (1024)
			sub.SendRaw(acks)
			acks = acks[:0]
		}
	}
	if d := srv.Stats().MessagesDropped; d != 0 {
		t.Fatalf("%d messages dropped", d)
	}
}

// waitOffline waits until the server has detached the session's
// connection. There is no event to wait on from outside, so it polls.
func waitOffline(t *testing.T, srv *terntest.Server, id string) {
	t.Helper()
	terntest.Eventually(t, "session "+id+" to go offline", func() bool {
		info, ok := srv.SessionInfo(id)
		return ok && !info.Online
	})
}
