package tern_test

// End-to-end tests of the broker with a real MQTT 3.1.1 client library
// (github.com/eclipse/paho.mqtt.golang) over loopback TCP; terntest's raw
// client stands in where a subscriber must not acknowledge. Statement ids
// are those of the MQTT Version 3.1.1 OASIS Standard.

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// [MQTT-3.1.2-4] CleanSession 0 resumes the session (subscriptions
// included) or creates one, [MQTT-3.1.2-6] CleanSession 1 discards it;
// Session Present [MQTT-3.2.2-1], [MQTT-3.2.2-2], [MQTT-3.2.2-3].
func TestE2EV311SessionPresentAndResume(t *testing.T) {
	ev := newE2EEvents()
	srv := e2eServer(t, nil, ev)
	pub, _ := e2eConnectV3(t, srv, "sp-pub", true)
	for i, st := range []struct {
		name               string
		clean, wantPresent bool
		wantMsg            bool // the subscription made in the first step still exists
	}{
		{"new persistent session", false, false, true},
		{"resume", false, true, true},
		{"clean session discards", true, false, false},
		{"nothing left to resume", false, false, false},
	} {
		c, tok := e2eConnectV3(t, srv, "sp", st.clean)
		if tok.SessionPresent() != st.wantPresent {
			t.Fatalf("%s: session present %v, want %v", st.name, tok.SessionPresent(), st.wantPresent)
		}
		if i == 0 {
			c.subscribe(t, "sp/t", 1)
		}
		pub.publish(t, "sp/t", 1, false, st.name)
		if st.wantMsg {
			m := c.next(t)
			if i == 1 && string(m.Payload()) == "new persistent session" {
				m = c.next(t) // the previous PUBACK lost the race with DISCONNECT: a QoS 1 resend [MQTT-4.4.0-1]
			}
			if string(m.Payload()) != st.name {
				t.Fatalf("%s: got %q", st.name, m.Payload())
			}
		} else {
			c.flush(t)
		}
		c.Disconnect(e2eQuiesce)
		ev.wait(t, "disconnected/sp", i+1)
		if st.clean {
			ev.wait(t, "ended/sp", 1) // [MQTT-3.1.2-6] the session lasts as long as the connection
		}
	}
}

// [MQTT-3.1.3-6] an empty ClientId with CleanSession 1 is accepted;
// [MQTT-3.1.3-8] with CleanSession 0 it is refused with return code 0x02
// and the connection closed.
func TestE2EV311EmptyClientID(t *testing.T) {
	srv := e2eServer(t, nil)
	c, _ := e2eConnectV3(t, srv, "", true)
	c.subscribe(t, "anon/t", 0)
	if err := srv.Publish("anon/t", []byte("hi"), false, 0); err != nil {
		t.Fatal(err)
	}
	if m := c.next(t); string(m.Payload()) != "hi" {
		t.Fatalf("got %q", m.Payload())
	}
	_, tok := e2eDialV3(t, srv, "", false, nil)
	if tok.Error() == nil || tok.ReturnCode() != packets.ConnRefusedIdentifier {
		t.Fatalf("empty id without clean session: err %v, return code %d, want 2", tok.Error(), tok.ReturnCode())
	}
}

// [MQTT-3.1.4-2]: a second connection with the same ClientId disconnects
// the first.
func TestE2EV311SessionTakeover(t *testing.T) {
	srv := e2eServer(t, nil)
	first, _ := e2eConnectV3(t, srv, "dup", true)
	second, _ := e2eConnectV3(t, srv, "dup", true)
	select {
	case <-first.lost:
	case <-time.After(e2eTimeout):
		t.Fatal("first connection not closed")
	}
	second.subscribe(t, "still/alive", 0)
}

// [MQTT-3.8.4-6] delivered QoS is the minimum of the published QoS and the
// granted QoS; [MQTT-3.3.4-1] each QoS flow completes in both directions.
func TestE2EV311QoSMatrix(t *testing.T) {
	srv := e2eServer(t, nil)
	pub, _ := e2eConnectV3(t, srv, "qos-pub", true)
	subs := make([]*e2eV3Client, 3)
	for q := range subs {
		subs[q], _ = e2eConnectV3(t, srv, fmt.Sprintf("qos-sub%d", q), true)
		if g := subs[q].subscribe(t, fmt.Sprintf("qos/%d", q), byte(q)); g != byte(q) {
			t.Fatalf("granted QoS %d, want %d", g, q)
		}
	}
	for pq := byte(0); pq <= 2; pq++ {
		for sq := byte(0); sq <= 2; sq++ {
			payload := fmt.Sprintf("pub%d-sub%d", pq, sq)
			pub.publish(t, fmt.Sprintf("qos/%d", sq), pq, false, payload)
			m := subs[sq].next(t)
			if string(m.Payload()) != payload || m.Qos() != min(pq, sq) {
				t.Fatalf("%s: got %q at QoS %d, want QoS %d", payload, m.Payload(), m.Qos(), min(pq, sq))
			}
		}
	}
}

// [MQTT-4.6.0-5], [MQTT-4.6.0-6]: 1,000 QoS 1 messages from one publisher,
// sent without waiting for each PUBACK, arrive in order, none lost or
// duplicated.
func TestE2EV311OrderedQoS1(t *testing.T) {
	const n = 1000
	srv := e2eServer(t, nil)
	sub, _ := e2eConnectV3(t, srv, "ord-sub", true)
	sub.subscribe(t, "ord/t", 1)
	pub, _ := e2eConnectV3(t, srv, "ord-pub", true)
	toks := make([]mqtt.Token, n)
	for i := range toks {
		toks[i] = pub.Publish("ord/t", 1, false, fmt.Sprint(i))
	}
	for i := 0; i < n; i++ {
		if m := sub.next(t); string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, m.Payload())
		}
	}
	for _, tok := range toks {
		e2eWaitToken(t, tok, "publish")
	}
	sub.flush(t)
}

// [MQTT-4.4.0-1] unacknowledged PUBLISH and PUBREL are sent again on
// reconnection with CleanSession 0, [MQTT-3.3.1-1] PUBLISH with DUP set;
// [MQTT-3.1.2-5] QoS 1 and 2 messages published while the client was
// offline are stored and delivered.
func TestE2EV311Retransmission(t *testing.T) {
	ev := newE2EEvents()
	srv := e2eServer(t, nil, ev)
	sub, _ := e2eRawConnect(t, srv, packets.V311, "rt", false, 0)
	e2eRawSubscribe(t, sub, 1, "rt/#", 2)
	pub, _ := e2eConnectV3(t, srv, "rt-pub", true)
	pub.publish(t, "rt/1", 1, false, "one")
	pub.publish(t, "rt/2", 2, false, "two")
	p1, p2 := e2eRawPublish(t, sub), e2eRawPublish(t, sub)
	if p1.Dup || p1.QoS != 1 || p2.Dup || p2.QoS != 2 {
		t.Fatalf("first delivery: %+v / %+v", p1, p2)
	}
	sub.Close()
	ev.wait(t, "disconnected/rt", 1)
	pub.publish(t, "rt/3", 2, false, "three")

	sub, ack := e2eRawConnect(t, srv, packets.V311, "rt", false, 0)
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	for _, want := range []*packets.Publish{p1, p2} {
		got := e2eRawPublish(t, sub)
		if !got.Dup || got.PacketID != want.PacketID || got.QoS != want.QoS || string(got.Payload) != string(want.Payload) {
			t.Fatalf("resent %+v, want DUP copy of %+v", got, want)
		}
	}
	p3 := e2eRawPublish(t, sub)
	if string(p3.Payload) != "three" || p3.QoS != 2 {
		t.Fatalf("queued message: %+v", p3)
	}
	sub.Send(&packets.Puback{PacketID: p1.PacketID})
	for _, id := range []uint16{p2.PacketID, p3.PacketID} {
		sub.Send(&packets.Pubrec{PacketID: id})
		if rel, ok := sub.Recv().(*packets.Pubrel); !ok || rel.PacketID != id {
			t.Fatalf("want PUBREL %d, got %+v", id, rel)
		}
	}
	sub.Send(&packets.Pubcomp{PacketID: p3.PacketID})
	sub.Close() // p2 released but not completed
	ev.wait(t, "disconnected/rt", 2)

	sub, _ = e2eRawConnect(t, srv, packets.V311, "rt", false, 0)
	if rel, ok := sub.Recv().(*packets.Pubrel); !ok || rel.PacketID != p2.PacketID {
		t.Fatalf("want PUBREL %d again, got %+v", p2.PacketID, rel)
	}
	sub.Send(&packets.Pubcomp{PacketID: p2.PacketID})
	sub.Send(&packets.Pingreq{})
	if pk := sub.Recv(); pk.Type() != packets.PINGRESP {
		t.Fatalf("after PUBCOMP: %s", pk.Type())
	}
}

// [MQTT-3.3.1-5] store and replace, [MQTT-3.3.1-6] sent to a new
// subscription, [MQTT-3.3.1-8] with RETAIN 1, [MQTT-3.3.1-9] RETAIN 0 on
// an established subscription, [MQTT-3.3.1-10], [MQTT-3.3.1-11] an empty
// payload removes it, [MQTT-3.3.1-12] RETAIN 0 leaves it alone.
func TestE2EV311Retained(t *testing.T) {
	srv := e2eServer(t, nil)
	pub, _ := e2eConnectV3(t, srv, "ret-pub", true)
	live, _ := e2eConnectV3(t, srv, "ret-live", true)
	live.subscribe(t, "ret/+", 1)
	for i, st := range []struct {
		payload string
		retain  bool
		want    string // "" = no retained message
	}{
		{"first", true, "first"},
		{"second", true, "second"},
		{"not retained", false, "second"},
		{"", true, ""},
	} {
		pub.publish(t, "ret/t", 1, st.retain, st.payload)
		if m := live.next(t); m.Retained() || string(m.Payload()) != st.payload {
			t.Fatalf("established subscription got %q retain=%v", m.Payload(), m.Retained())
		}
		c, _ := e2eConnectV3(t, srv, fmt.Sprintf("ret-sub%d", i), true)
		c.subscribe(t, "ret/+", 1)
		if st.want == "" {
			c.flush(t)
			continue
		}
		m := c.next(t)
		if string(m.Payload()) != st.want || !m.Retained() || m.Qos() != 1 {
			t.Fatalf("step %d: got %q retain=%v qos=%d, want %q retained", i, m.Payload(), m.Retained(), m.Qos(), st.want)
		}
	}
}

// [MQTT-3.3.1-6] with many retained messages: all 100,000 (see
// e2eManyRetained) reach a new '#' subscriber.
func TestE2EV311RetainedMany(t *testing.T) {
	n := e2eManyRetained(t)
	srv := e2eServer(t, nil)
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := srv.Publish(fmt.Sprintf("many/%d/%d", i/1000, i%1000), []byte{byte(i)}, true, 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("stored %d retained messages in %v", n, time.Since(start))
	seen := make(map[string]bool, n) // touched only by paho's router goroutine
	var count, dups atomic.Int64
	c, tok := e2eDialV3(t, srv, "many", true, func(o *mqtt.ClientOptions) {
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			if seen[m.Topic()] {
				dups.Add(1)
			}
			seen[m.Topic()] = true
			count.Add(1)
		})
	})
	if tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// Across nodes they reach the subscriber's node after (see e2eRetainedOn).
	waitProgress(t, func() int64 { return c.node.Stats().Retained }, int64(n))
	start = time.Now()
	c.subscribe(t, "#", 0)
	waitProgress(t, count.Load, int64(n))
	t.Logf("delivered in %v", time.Since(start))
	if d := dups.Load(); d != 0 {
		t.Fatalf("%d duplicates", d)
	}
}

// Wills: [MQTT-3.1.2-8] published when the connection closes without
// DISCONNECT; [MQTT-3.14.4-3], [MQTT-3.1.2-10] discarded on DISCONNECT;
// [MQTT-3.1.2-16] Will Retain 0 non-retained, [MQTT-3.1.2-17] Will Retain 1
// retained; at the Will QoS (downgraded to the granted QoS [MQTT-3.8.4-6]).
func TestE2EV311Will(t *testing.T) {
	ev := newE2EEvents()
	srv := e2eServer(t, nil, ev)
	watch, _ := e2eConnectV3(t, srv, "will-watch", true)
	watch.subscribe(t, "will/#", 2)
	for _, tc := range []struct {
		id       string
		qos      byte
		retain   bool
		cut      bool // close the TCP connection instead of DISCONNECT
		wantWill bool
	}{
		{"cut-q0", 0, false, true, true},
		{"cut-q1-retain", 1, true, true, true},
		{"cut-q2-retain", 2, true, true, true},
		{"disconnect", 1, true, false, false},
	} {
		c, tok := e2eDialV3(t, srv, tc.id, true, func(o *mqtt.ClientOptions) {
			o.SetWill("will/"+tc.id, "gone", tc.qos, tc.retain)
		})
		if tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		if tc.cut {
			c.cut()
		} else {
			c.Disconnect(e2eQuiesce)
		}
		ev.wait(t, "ended/"+tc.id, 1) // the will, if any, is routed before the session ends
		if !tc.wantWill {
			watch.flush(t)
		} else if m := watch.next(t); m.Topic() != "will/"+tc.id || string(m.Payload()) != "gone" || m.Qos() != tc.qos {
			t.Fatalf("%s: got %q %q qos %d", tc.id, m.Topic(), m.Payload(), m.Qos())
		}
		late, _ := e2eConnectV3(t, srv, tc.id+"-late", true)
		if tc.wantWill && tc.retain {
			e2eRetainedOn(t, late.node, "will/"+tc.id, "gone")
		}
		late.subscribe(t, "will/"+tc.id, 2)
		if !tc.wantWill || !tc.retain {
			late.flush(t)
		} else if m := late.next(t); !m.Retained() || m.Qos() != tc.qos {
			t.Fatalf("%s: retained will retain=%v qos=%d", tc.id, m.Retained(), m.Qos())
		}
	}
}

// Shared subscriptions are not part of 3.1.1; Tern offers $share/ to 3.1.1
// clients as MQTT 5 defines it (section 4.8.2 of 5.0): round-robin among
// members, and an unacknowledged QoS 1 message goes to another member when
// its member's session ends.
func TestE2EV311Shared(t *testing.T) {
	const n = 30
	ev := newE2EEvents()
	srv := e2eServer(t, nil, ev)
	members := make([]*e2eV3Client, 3)
	for i := range members {
		members[i], _ = e2eConnectV3(t, srv, fmt.Sprintf("sh%d", i), true)
		members[i].subscribe(t, "$share/g/sh/t", 1)
	}
	pub, _ := e2eConnectV3(t, srv, "sh-pub", true)
	for i := 0; i < n; i++ {
		pub.publish(t, "sh/t", 1, false, fmt.Sprint(i))
	}
	got := map[string]bool{}
	counts := make([]int, len(members))
	deadline := time.After(e2eTimeout)
	for total := 0; total < n; total++ {
		select {
		case m := <-members[0].msgs:
			counts[0]++
			got[string(m.Payload())] = true
		case m := <-members[1].msgs:
			counts[1]++
			got[string(m.Payload())] = true
		case m := <-members[2].msgs:
			counts[2]++
			got[string(m.Payload())] = true
		case <-deadline:
			t.Fatalf("only %d of %d messages arrived", total, n)
		}
	}
	e2eCheckShares(t, counts, []*terntest.Server{members[0].node, members[1].node, members[2].node}, pub.node)
	for _, m := range members {
		m.flush(t)
	}
	if len(got) != n {
		t.Fatalf("%d distinct messages, want %d", len(got), n)
	}

	// Redelivery: a raw member that does not acknowledge, then leaves.
	raw, _ := e2eRawConnect(t, srv, packets.V311, "sh-raw", true, 0)
	e2eRawSubscribe(t, raw, 1, "$share/h/red/t", 1)
	other := members[0]
	other.subscribe(t, "$share/h/red/t", 1)
	// A publisher of its own: across nodes it is on a third node, where
	// group h has no member that would get every message.
	redPub, _ := e2eConnectV3(t, srv, "sh-red-pub", true)
	for i := 0; i < 2; i++ { // round-robin: one each
		redPub.publish(t, "red/t", 1, false, fmt.Sprint("red", i))
	}
	held := e2eRawPublish(t, raw)
	if m := other.next(t); string(m.Payload()) == string(held.Payload) {
		t.Fatalf("both members got %q", held.Payload)
	}
	raw.Close()
	ev.wait(t, "ended/sh-raw", 1)
	if m := other.next(t); string(m.Payload()) != string(held.Payload) {
		t.Fatalf("redelivered %q, want %q", m.Payload(), held.Payload)
	}
}

// [MQTT-3.3.5-1]: overlapping subscriptions of one client give the message
// at the maximum of their QoS (Tern sends one copy).
func TestE2EV311Overlapping(t *testing.T) {
	srv := e2eServer(t, nil)
	c, _ := e2eConnectV3(t, srv, "ov", true)
	c.subscribe(t, "ov/+", 0)
	c.subscribe(t, "ov/#", 2)
	c.subscribe(t, "+/a", 1)
	pub, _ := e2eConnectV3(t, srv, "ov-pub", true)
	pub.publish(t, "ov/a", 2, false, "x")
	if m := c.next(t); m.Qos() != 2 || m.Topic() != "ov/a" {
		t.Fatalf("got %q at QoS %d", m.Topic(), m.Qos())
	}
	c.flush(t)
}

// [MQTT-4.7.2-1]: '#' and '+' do not match $SYS topics; "$SYS/#" gets
// $SYS/broker/version.
func TestE2EV311Sys(t *testing.T) {
	srv := e2eServer(t, &tern.Options{SysInterval: 50 * time.Millisecond})
	all, _ := e2eConnectV3(t, srv, "sys-all", true)
	all.subscribe(t, "#", 0)
	all.subscribe(t, "+/broker/uptime", 0)
	sys, _ := e2eConnectV3(t, srv, "sys", true)
	sys.subscribe(t, "$SYS/#", 0)
	var version, live bool
	for !version || !live {
		m := sys.next(t)
		version = version || m.Topic() == "$SYS/broker/version" && string(m.Payload()) == "tern "+tern.Version
		live = live || m.Topic() == "$SYS/broker/uptime" && !m.Retained()
	}
	if err := srv.Publish("e2e/after", []byte("x"), false, 0); err != nil {
		t.Fatal(err)
	}
	if m := all.next(t); m.Topic() != "e2e/after" {
		t.Fatalf("'#' subscriber got %q", m.Topic())
	}
}

// The in-process client with a 3.1.1 peer. Routing happens before PUBACK,
// which is the synchronisation point.
func TestE2EV311InProcess(t *testing.T) {
	srv := e2eServer(t, nil)
	c, _ := e2eConnectV3(t, srv, "ip", true)
	c.subscribe(t, "ip/out", 2)
	if err := srv.Publish("ip/out", []byte("from server"), false, 2); err != nil {
		t.Fatal(err)
	}
	if m := c.next(t); string(m.Payload()) != "from server" || m.Qos() != 2 {
		t.Fatalf("got %q at QoS %d", m.Payload(), m.Qos())
	}
	got := make(chan *tern.Message, 4)
	if err := srv.Subscribe("ip/in/+", 3, func(m *tern.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	c.publish(t, "ip/in/a", 1, false, "to server")
	select {
	case m := <-got:
		if string(m.Payload) != "to server" || m.Origin != "ip" {
			t.Fatalf("handler got %q from %q", m.Payload, m.Origin)
		}
	default:
		t.Fatal("handler not called before PUBACK")
	}
	if err := srv.Unsubscribe("ip/in/+", 3); err != nil {
		t.Fatal(err)
	}
	c.publish(t, "ip/in/b", 1, false, "x")
	if len(got) != 0 {
		t.Fatal("handler called after Unsubscribe")
	}
}

// Hooks with 3.1.1: an Authenticator refusal is return code 0x04
// ([MQTT-3.2.2-5] then close); an Authorizer refusal is SUBACK 0x80
// ([MQTT-3.8.4-5], [MQTT-3.9.3-2]) or, for PUBLISH, a positive PUBACK and
// no delivery ([MQTT-3.3.5-2]); a PublishInterceptor changes the payload.
func TestE2EV311Hooks(t *testing.T) {
	srv := e2eServer(t, nil, e2ePolicy{})
	_, tok := e2eDialV3(t, srv, "m", true, func(o *mqtt.ClientOptions) { o.SetUsername("mallory") })
	if tok.Error() == nil || tok.ReturnCode() != packets.ConnRefusedBadAuth {
		t.Fatalf("mallory: err %v return code %d, want 4", tok.Error(), tok.ReturnCode())
	}
	c, tok := e2eDialV3(t, srv, "alice", true, func(o *mqtt.ClientOptions) { o.SetUsername("alice") })
	if tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	c.subscribe(t, "#", 1)
	if g := c.subscribe(t, "secret/#", 1); g != 0x80 {
		t.Fatalf("SUBACK 0x%02X for secret/#, want 0x80", g)
	}
	c.publish(t, "secret/plans", 1, false, "x") // acknowledged, not delivered
	c.publish(t, "shout", 1, false, "hello")
	if m := c.next(t); m.Topic() != "shout" || string(m.Payload()) != "HELLO" {
		t.Fatalf("got %q %q; the denied message must not arrive, the shout must be upper-cased", m.Topic(), m.Payload())
	}
}
