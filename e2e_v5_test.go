package tern_test

// End-to-end tests of the broker with a real MQTT 5 client library
// (github.com/eclipse/paho.golang) over loopback TCP. Where paho would
// acknowledge by itself and the point is what the broker does with an
// unacknowledged message, the subscriber is terntest's raw client.
// Statement ids are those of the MQTT Version 5.0 OASIS Standard.

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// [MQTT-3.1.2-4] Clean Start 1 discards the session; [MQTT-3.1.2-5] Clean
// Start 0 resumes it, subscriptions included; [MQTT-3.2.2-2],
// [MQTT-3.2.2-3] Session Present.
func TestE2EV5SessionPresentAndResume(t *testing.T) {
	ev := newE2EEvents()
	srv := e2eServer(t, nil, ev)
	pub, _ := e2eConnectV5(t, srv, "sp-pub", true, 0)

	steps := []struct {
		name        string
		clean       bool
		wantPresent bool
		wantMsg     bool // the subscription made in the first step still exists
	}{
		{"new session", true, false, true},
		{"resume", false, true, true},
		{"clean start discards", true, false, false},
	}
	for i, st := range steps {
		c, ack := e2eConnectV5(t, srv, "sp", st.clean, 300)
		if ack.SessionPresent != st.wantPresent {
			t.Fatalf("%s: session present %v, want %v", st.name, ack.SessionPresent, st.wantPresent)
		}
		if i == 0 {
			c.subscribe(t, "sp/t", 1)
		}
		pub.publish(t, &paho.Publish{Topic: "sp/t", QoS: 1, Payload: []byte(st.name)})
		if st.wantMsg {
			// paho acknowledges after the handler returns, so the previous
			// step's PUBACK can lose the race with its DISCONNECT: a resumed
			// session then rightly gets that message again first (QoS 1,
			// [MQTT-4.4.0-1]).
			m := c.next(t)
			if i > 0 && string(m.Payload) == steps[i-1].name {
				m = c.next(t)
			}
			if string(m.Payload) != st.name {
				t.Fatalf("%s: got %q", st.name, m.Payload)
			}
		} else {
			c.flush(t)
		}
		c.Disconnect(&paho.Disconnect{})
		ev.wait(t, "disconnected/sp", i+1)
	}
}

// [MQTT-3.1.2-23] the session outlives the connection only if the expiry
// interval is above 0; [MQTT-4.1.0-2] it is discarded once the interval has
// passed.
func TestE2EV5SessionExpiry(t *testing.T) {
	e2eParallel(t)
	for _, tc := range []struct {
		name   string
		expiry uint32
	}{{"zero", 0}, {"one second", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			ev := newE2EEvents()
			srv := e2eServer(t, nil, ev)
			c, _ := e2eConnectV5(t, srv, "exp", true, tc.expiry)
			c.subscribe(t, "exp/t", 1)
			start := time.Now()
			c.Disconnect(&paho.Disconnect{})
			ev.wait(t, "ended/exp", 1) // bounded by e2eTimeout
			if el := time.Since(start); tc.expiry > 0 && el < time.Duration(tc.expiry)*time.Second {
				t.Fatalf("session ended after %v, before its %d s expiry", el, tc.expiry)
			}
			c2, ack := e2eConnectV5(t, srv, "exp", false, 60)
			if ack.SessionPresent {
				t.Fatal("session present after expiry")
			}
			pub, _ := e2eConnectV5(t, srv, "exp-pub", true, 0)
			pub.publish(t, &paho.Publish{Topic: "exp/t", QoS: 1, Payload: []byte("x")})
			c2.flush(t) // the subscription went with the session
		})
	}
}

// [MQTT-3.1.2-5]: a client that reconnects with Clean Start 0 while the
// server is still tearing down its previous connection (expiry 0) resumes
// the session, and the teardown must not end it under the new connection.
func TestE2EV5ReconnectDuringTeardown(t *testing.T) {
	gate := &willGate{entered: make(chan struct{}), release: make(chan struct{})}
	ev := newE2EEvents()
	srv := e2eServer(t, nil, gate, ev)
	watch, _ := e2eConnectV5(t, srv, "td-watch", true, 0)
	watch.subscribe(t, "gate/will", 0)
	c, _, err := e2eDialV5(t, srv, &paho.Connect{ClientID: "td", CleanStart: true,
		WillMessage: &paho.WillMessage{Topic: "gate/will", Payload: []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	c.conn.Close()
	select {
	case <-gate.entered: // the old connection is half torn down
	case <-time.After(e2eTimeout):
		t.Fatal("will not published")
	}
	c2, ack := e2eConnectV5(t, srv, "td", false, 300)
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	close(gate.release)
	watch.next(t) // the will went; the teardown goes on right after it
	// No event marks the end of the teardown: a short bounded wait.
	time.Sleep(e2eQuiet)
	if n := ev.count("ended/td"); n != 0 {
		t.Fatalf("the resumed session was ended %d times", n)
	}
	c2.subscribe(t, "td/t", 1)
	watch.publish(t, &paho.Publish{Topic: "td/t", QoS: 1, Payload: []byte("still here")})
	if m := c2.next(t); string(m.Payload) != "still here" {
		t.Fatalf("got %q", m.Payload)
	}
}

// [MQTT-3.1.3-6], [MQTT-3.1.3-7], [MQTT-3.2.2-16]: an empty client id gets
// a unique Assigned Client Identifier in CONNACK.
func TestE2EV5AssignedClientID(t *testing.T) {
	srv := e2eServer(t, nil)
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		c, ack := e2eConnectV5(t, srv, "", true, 0)
		id := ack.Properties.AssignedClientID
		if id == "" || seen[id] {
			t.Fatalf("assigned client id %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
		if c.ClientID() != id {
			t.Fatalf("paho uses %q, broker assigned %q", c.ClientID(), id)
		}
	}
}

// [MQTT-3.1.4-3]: a second connection with the same client id makes the
// server send DISCONNECT 0x8E to the first and close it.
func TestE2EV5SessionTakeover(t *testing.T) {
	srv := e2eServer(t, nil)
	first, _ := e2eConnectV5(t, srv, "dup", true, 0)
	second, _ := e2eConnectV5(t, srv, "dup", true, 0)
	select {
	case d := <-first.discs:
		if d.ReasonCode != byte(packets.SessionTakenOver) {
			t.Fatalf("DISCONNECT reason 0x%02X, want 0x8E", d.ReasonCode)
		}
	case <-time.After(e2eTimeout):
		t.Fatal("first connection got no DISCONNECT")
	}
	select {
	case <-first.Done():
	case <-time.After(e2eTimeout):
		t.Fatal("first connection not closed")
	}
	second.subscribe(t, "still/alive", 0) // the new connection works
}

// [MQTT-3.8.4-8]: delivered QoS is the minimum of the published QoS and
// the granted QoS; [MQTT-3.3.4-1] each QoS is acknowledged by its flow,
// in both directions (paho checks PUBACK/PUBREC/PUBCOMP).
func TestE2EV5QoSMatrix(t *testing.T) {
	srv := e2eServer(t, nil)
	pub, _ := e2eConnectV5(t, srv, "qos-pub", true, 0)
	subs := make([]*e2eV5Client, 3)
	for q := range subs {
		subs[q], _ = e2eConnectV5(t, srv, fmt.Sprintf("qos-sub%d", q), true, 0)
		subs[q].subscribe(t, fmt.Sprintf("qos/%d", q), byte(q))
	}
	for pq := byte(0); pq <= 2; pq++ {
		for sq := byte(0); sq <= 2; sq++ {
			payload := fmt.Sprintf("pub%d-sub%d", pq, sq)
			pub.publish(t, &paho.Publish{Topic: fmt.Sprintf("qos/%d", sq), QoS: pq, Payload: []byte(payload)})
			m := subs[sq].next(t)
			if string(m.Payload) != payload || m.QoS != min(pq, sq) {
				t.Fatalf("%s: got %q at QoS %d, want QoS %d", payload, m.Payload, m.QoS, min(pq, sq))
			}
		}
	}
}

// [MQTT-4.6.0-5], [MQTT-4.6.0-6]: 1,000 QoS 1 messages from one publisher
// arrive in order, none lost or duplicated.
func TestE2EV5OrderedQoS1(t *testing.T) {
	const n = 1000
	srv := e2eServer(t, nil)
	sub, _ := e2eConnectV5(t, srv, "ord-sub", true, 0)
	sub.subscribe(t, "ord/t", 1)
	pub, _ := e2eConnectV5(t, srv, "ord-pub", true, 0)
	errs := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if _, err := pub.Publish(t.Context(), &paho.Publish{Topic: "ord/t", QoS: 1, Payload: []byte(fmt.Sprint(i))}); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	for i := 0; i < n; i++ {
		if m := sub.next(t); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, m.Payload)
		}
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	sub.flush(t) // no duplicates behind the last one
}

// [MQTT-4.4.0-1] unacknowledged PUBLISH (QoS 1 and 2) and PUBREL are sent
// again, with their packet ids, when the session resumes; [MQTT-3.3.1-1]
// with DUP set; messages that arrived while the client was offline are
// delivered too (session state, section 4.1).
func TestE2EV5Retransmission(t *testing.T) {
	ev := newE2EEvents()
	srv := e2eServer(t, nil, ev)
	sub, _ := e2eRawConnect(t, srv, packets.V5, "rt", true, 300)
	e2eRawSubscribe(t, sub, 1, "rt/#", 2)
	pub, _ := e2eConnectV5(t, srv, "rt-pub", true, 0)
	pub.publish(t, &paho.Publish{Topic: "rt/1", QoS: 1, Payload: []byte("one")})
	pub.publish(t, &paho.Publish{Topic: "rt/2", QoS: 2, Payload: []byte("two")})
	p1, p2 := e2eRawPublish(t, sub), e2eRawPublish(t, sub)
	if p1.Dup || p1.QoS != 1 || p2.Dup || p2.QoS != 2 {
		t.Fatalf("first delivery: %+v / %+v", p1, p2)
	}
	sub.Close() // no PUBACK, no PUBREC
	ev.wait(t, "disconnected/rt", 1)
	pub.publish(t, &paho.Publish{Topic: "rt/3", QoS: 1, Payload: []byte("three")})

	sub, ack := e2eRawConnect(t, srv, packets.V5, "rt", false, 300)
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	for _, want := range []*packets.Publish{p1, p2} {
		got := e2eRawPublish(t, sub)
		if !got.Dup || got.PacketID != want.PacketID || got.QoS != want.QoS || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("resent %+v, want DUP copy of %+v", got, want)
		}
	}
	if got := e2eRawPublish(t, sub); string(got.Payload) != "three" || got.QoS != 1 {
		t.Fatalf("queued message: %+v", got)
	}
	sub.Send(&packets.Puback{PacketID: p1.PacketID})
	sub.Send(&packets.Pubrec{PacketID: p2.PacketID})
	if rel, ok := sub.Recv().(*packets.Pubrel); !ok || rel.PacketID != p2.PacketID {
		t.Fatalf("want PUBREL %d, got %+v", p2.PacketID, rel)
	}
	sub.Close() // no PUBCOMP: the PUBREL must be sent again
	ev.wait(t, "disconnected/rt", 2)

	sub, _ = e2eRawConnect(t, srv, packets.V5, "rt", false, 300)
	for {
		pk := sub.Recv()
		if p, ok := pk.(*packets.Publish); ok && string(p.Payload) == "three" {
			sub.Send(&packets.Puback{PacketID: p.PacketID}) // rt/3 was never acknowledged
			continue
		}
		if rel, ok := pk.(*packets.Pubrel); !ok || rel.PacketID != p2.PacketID {
			t.Fatalf("want PUBREL %d again, got %s %+v", p2.PacketID, pk.Type(), pk)
		}
		break
	}
	sub.Send(&packets.Pubcomp{PacketID: p2.PacketID})
}

// [MQTT-3.3.1-5] set and replace, [MQTT-3.3.1-6], [MQTT-3.3.1-7] delete
// with an empty payload; [MQTT-3.3.1-9] sent on subscribe, with RETAIN set
// (section 3.3.1.3); [MQTT-3.3.1-8] a RETAIN 0 message leaves the retained
// one alone.
func TestE2EV5Retained(t *testing.T) {
	srv := e2eServer(t, nil)
	pub, _ := e2eConnectV5(t, srv, "ret-pub", true, 0)
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
		pub.publish(t, &paho.Publish{Topic: "ret/t", QoS: 1, Retain: st.retain, Payload: []byte(st.payload)})
		c, _ := e2eConnectV5(t, srv, fmt.Sprintf("ret-sub%d", i), true, 0)
		c.subscribe(t, "ret/+", 1)
		if st.want == "" {
			c.flush(t)
			continue
		}
		m := c.next(t)
		if string(m.Payload) != st.want || !m.Retain || m.QoS != 1 {
			t.Fatalf("step %d: got %q retain=%v qos=%d, want %q retained", i, m.Payload, m.Retain, m.QoS, st.want)
		}
	}
}

// Retain Handling [MQTT-3.3.1-9] (0: always), [MQTT-3.3.1-10] (1: only for
// a new subscription), [MQTT-3.3.1-11] (2: never); Retain As Published
// [MQTT-3.3.1-12] (0: RETAIN cleared) and [MQTT-3.3.1-13] (1: kept) on
// live messages.
func TestE2EV5RetainHandlingAndRAP(t *testing.T) {
	srv := e2eServer(t, nil)
	if err := srv.Publish("rh/t", []byte("kept"), true, 1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rh   byte
		want [2]bool // retained message delivered on 1st, 2nd identical SUBSCRIBE
	}{{0, [2]bool{true, true}}, {1, [2]bool{true, false}}, {2, [2]bool{false, false}}} {
		c, _ := e2eConnectV5(t, srv, fmt.Sprintf("rh%d", tc.rh), true, 0)
		e2eRetainedOn(t, c.node, "rh/t", "kept")
		for i := range 2 {
			c.subscribeOpts(t, nil, paho.SubscribeOptions{Topic: "rh/t", QoS: 1, RetainHandling: tc.rh})
			if tc.want[i] {
				if m := c.next(t); string(m.Payload) != "kept" || !m.Retain {
					t.Fatalf("rh %d sub %d: got %q retain=%v", tc.rh, i, m.Payload, m.Retain)
				}
			} else {
				c.flush(t)
			}
		}
	}
	pub, _ := e2eConnectV5(t, srv, "rap-pub", true, 0)
	for _, rap := range []bool{false, true} {
		c, _ := e2eConnectV5(t, srv, fmt.Sprintf("rap-%v", rap), true, 0)
		c.subscribeOpts(t, nil, paho.SubscribeOptions{Topic: "rap/t", QoS: 1, RetainAsPublished: rap})
		pub.publish(t, &paho.Publish{Topic: "rap/t", QoS: 1, Retain: true, Payload: []byte(fmt.Sprint(rap))})
		if m := c.next(t); m.Retain != rap {
			t.Fatalf("retain as published %v: RETAIN flag %v", rap, m.Retain)
		}
	}
}

// [MQTT-3.3.1-9] with many retained messages: every one of 100,000 (see
// e2eManyRetained) is delivered to a new '#' subscriber, none dropped by the
// queue limits.
func TestE2EV5RetainedMany(t *testing.T) {
	n := e2eManyRetained(t)
	srv := e2eServer(t, nil)
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := srv.Publish(fmt.Sprintf("many/%d/%d", i/1000, i%1000), []byte{byte(i)}, true, 1); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("stored %d retained messages in %v", n, time.Since(start))
	seen := make(map[string]bool, n) // touched only by paho's router goroutine
	var dups, count atomic.Int64
	// Keep alive 0: no pinger, so buffering the reads is safe (see bufConn).
	c, _, err := e2eDialV5(t, srv, &paho.Connect{ClientID: "many", CleanStart: true}, func(cc *paho.ClientConfig) {
		cc.Conn = bufConn{cc.Conn, bufio.NewReader(cc.Conn)}
		cc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			if seen[pr.Packet.Topic] {
				dups.Add(1)
			}
			seen[pr.Packet.Topic] = true
			count.Add(1)
			return true, nil
		}}
	})
	if err != nil {
		t.Fatal(err)
	}
	// Across nodes they reach the subscriber's node after (see e2eRetainedOn).
	waitProgress(t, func() int64 { return c.node.Stats().Retained }, int64(n))
	start = time.Now()
	c.subscribe(t, "#", 0) // QoS 0: QoS 1 is bound by paho's one write per PUBACK
	waitProgress(t, count.Load, int64(n))
	t.Logf("delivered in %v", time.Since(start))
	if d := dups.Load(); d != 0 {
		t.Fatalf("%d duplicates", d)
	}
}

// Wills: [MQTT-3.1.2-8] published when the connection closes without a
// DISCONNECT; [MQTT-3.14.4-3], [MQTT-3.1.2-10] discarded on DISCONNECT 0x00;
// published on DISCONNECT 0x04 Disconnect with Will Message (3.14.2.1).
func TestE2EV5Will(t *testing.T) {
	ev := newE2EEvents()
	srv := e2eServer(t, nil, ev)
	watch, _ := e2eConnectV5(t, srv, "will-watch", true, 0)
	watch.subscribe(t, "will/#", 2)
	for _, tc := range []struct {
		name string
		end  func(*e2eV5Client)
		want bool
	}{
		{"abnormal close", func(c *e2eV5Client) { c.conn.Close() }, true},
		{"normal disconnect", func(c *e2eV5Client) { c.Disconnect(&paho.Disconnect{ReasonCode: 0x00}) }, false},
		{"disconnect with will", func(c *e2eV5Client) { c.Disconnect(&paho.Disconnect{ReasonCode: 0x04}) }, true},
	} {
		id := strings.ReplaceAll(tc.name, " ", "-")
		c, _, err := e2eDialV5(t, srv, &paho.Connect{ClientID: id, CleanStart: true,
			WillMessage: &paho.WillMessage{Topic: "will/" + id, Payload: []byte("gone"), QoS: 1}})
		if err != nil {
			t.Fatal(err)
		}
		tc.end(c)
		ev.wait(t, "ended/"+id, 1) // the will, if any, is routed before the session ends
		if !tc.want {
			watch.flush(t)
			continue
		}
		if m := watch.next(t); m.Topic != "will/"+id || string(m.Payload) != "gone" || m.QoS != 1 {
			t.Fatalf("%s: got %q %q qos %d", tc.name, m.Topic, m.Payload, m.QoS)
		}
	}
}

// [MQTT-3.1.2-8] a will with a Will Delay Interval is published once the
// delay has passed; [MQTT-3.1.3-9] not if the client reconnects before.
func TestE2EV5WillDelay(t *testing.T) {
	e2eParallel(t)
	ev := newE2EEvents()
	srv := e2eServer(t, nil, ev)
	watch, _ := e2eConnectV5(t, srv, "wd-watch", true, 0)
	watch.subscribe(t, "wd/#", 1)
	connect := func(id string, clean bool) (*e2eV5Client, *paho.Connack) {
		c, ack, err := e2eDialV5(t, srv, &paho.Connect{ClientID: id, CleanStart: clean,
			Properties:     &paho.ConnectProperties{SessionExpiryInterval: e2eU32(30)},
			WillMessage:    &paho.WillMessage{Topic: "wd/" + id, Payload: []byte(id), QoS: 1},
			WillProperties: &paho.WillProperties{WillDelayInterval: e2eU32(1)}})
		if err != nil {
			t.Fatal(err)
		}
		return c, ack
	}

	c, _ := connect("delayed", true)
	start := time.Now()
	c.conn.Close()
	m := watch.next(t)
	if el := time.Since(start); m.Topic != "wd/delayed" || el < time.Second {
		t.Fatalf("will %q after %v, want wd/delayed after >= 1 s", m.Topic, el)
	}

	c, _ = connect("cancelled", true)
	c.conn.Close()
	ev.wait(t, "disconnected/cancelled", 1)
	if _, ack := connect("cancelled", false); !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	// Nothing can signal that a will was not sent: wait past the 1 s delay.
	watch.expectNone(t, 1500*time.Millisecond)
}

// [MQTT-3.1.2-14] Will Retain 0 publishes a non-retained message,
// [MQTT-3.1.2-15] Will Retain 1 a retained one; the will goes at its Will QoS
// (delivered at min(will QoS, granted QoS) [MQTT-3.8.4-8]).
func TestE2EV5WillRetainAndQoS(t *testing.T) {
	ev := newE2EEvents()
	srv := e2eServer(t, nil, ev)
	watch, _ := e2eConnectV5(t, srv, "wr-watch", true, 0)
	watch.subscribe(t, "wr/#", 2)
	for _, tc := range []struct {
		qos    byte
		retain bool
	}{{0, false}, {1, true}, {2, true}, {2, false}} {
		id := fmt.Sprintf("wr-q%d-r%v", tc.qos, tc.retain)
		c, _, err := e2eDialV5(t, srv, &paho.Connect{ClientID: id, CleanStart: true,
			WillMessage: &paho.WillMessage{Topic: "wr/" + id, Payload: []byte(id), QoS: tc.qos, Retain: tc.retain}})
		if err != nil {
			t.Fatal(err)
		}
		c.conn.Close()
		if m := watch.next(t); m.Topic != "wr/"+id || m.QoS != tc.qos {
			t.Fatalf("%s: got %q at QoS %d", id, m.Topic, m.QoS)
		}
		late, _ := e2eConnectV5(t, srv, id+"-late", true, 0)
		if !tc.retain {
			late.subscribe(t, "wr/"+id, 2)
			late.flush(t)
			continue
		}
		e2eRetainedOn(t, late.node, "wr/"+id, id)
		late.subscribe(t, "wr/"+id, 2)
		if m := late.next(t); !m.Retain || m.QoS != tc.qos || string(m.Payload) != id {
			t.Fatalf("%s: retained will %q retain=%v qos=%d", id, m.Payload, m.Retain, m.QoS)
		}
	}
}

// Shared subscriptions (section 4.8.2): each message goes to one member of
// the group, in turn (see e2eCheckShares); [MQTT-4.8.2-3] at the member's
// granted QoS.
func TestE2EV5SharedRoundRobin(t *testing.T) {
	const n = 30
	srv := e2eServer(t, nil)
	members := make([]*e2eV5Client, 3)
	for i := range members {
		members[i], _ = e2eConnectV5(t, srv, fmt.Sprintf("sh%d", i), true, 0)
		members[i].subscribe(t, "$share/g/sh/t", byte(i%2)+1)
	}
	pub, _ := e2eConnectV5(t, srv, "sh-pub", true, 0)
	for i := 0; i < n; i++ {
		pub.publish(t, &paho.Publish{Topic: "sh/t", QoS: 2, Payload: []byte(fmt.Sprint(i))})
	}
	got := map[string]int{}
	counts := make([]int, len(members))
	deadline := time.After(e2eTimeout)
	for total := 0; total < n; total++ {
		select {
		case m := <-members[0].msgs:
			counts[0]++
			got[string(m.Payload)]++
		case m := <-members[1].msgs:
			counts[1]++
			got[string(m.Payload)]++
			if m.QoS != 2 {
				t.Fatalf("member granted QoS 2 got QoS %d", m.QoS)
			}
		case m := <-members[2].msgs:
			counts[2]++
			got[string(m.Payload)]++
		case <-deadline:
			t.Fatalf("only %d of %d messages arrived", total, n)
		}
	}
	e2eCheckShares(t, counts, []*terntest.Server{members[0].node, members[1].node, members[2].node}, pub.node)
	for _, m := range members {
		m.flush(t) // and nothing more
	}
	if len(got) != n {
		t.Fatalf("%d distinct messages, want %d", len(got), n)
	}
}

// Section 4.8.2: a QoS 1 message a member did not acknowledge goes to
// another member when the first one's session ends (SHOULD); a QoS 2 one
// [MQTT-4.8.2-4] stays with the member and is completed when it reconnects,
// and [MQTT-4.8.2-5] goes to no other member when its session ends.
func TestE2EV5SharedRedelivery(t *testing.T) {
	for _, tc := range []struct {
		name   string
		qos    byte
		expiry uint32 // of the member that does not acknowledge
		moves  bool   // the message goes to the other member
	}{
		{"qos1 session ends", 1, 0, true},
		{"qos2 reconnect", 2, 300, false},
		{"qos2 session ends", 2, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := newE2EEvents()
			srv := e2eServer(t, nil, ev)
			filter := "$share/g/red/t"
			raw, _ := e2eRawConnect(t, srv, packets.V5, "red-raw", true, tc.expiry)
			e2eRawSubscribe(t, raw, 1, filter, tc.qos)
			other, _ := e2eConnectV5(t, srv, "red-other", true, 0)
			other.subscribe(t, filter, 2)
			pub, _ := e2eConnectV5(t, srv, "red-pub", true, 0)
			for i := 0; i < 2; i++ { // round-robin: one each
				pub.publish(t, &paho.Publish{Topic: "red/t", QoS: tc.qos, Payload: []byte(fmt.Sprint(i))})
			}
			held := e2eRawPublish(t, raw)
			if m := other.next(t); bytes.Equal(m.Payload, held.Payload) {
				t.Fatalf("both members got %q", m.Payload)
			}
			raw.Close() // without acknowledging
			switch {
			case tc.moves:
				ev.wait(t, "ended/red-raw", 1)
				if m := other.next(t); !bytes.Equal(m.Payload, held.Payload) {
					t.Fatalf("redelivered %q, want %q", m.Payload, held.Payload)
				}
			case tc.expiry == 0:
				ev.wait(t, "ended/red-raw", 1) // redistribution happens before this
				other.flush(t)
			default:
				ev.wait(t, "disconnected/red-raw", 1)
				// The redistribution would follow the disconnect with no
				// event to wait for: a short bounded wait.
				other.expectNone(t, e2eQuiet)
				raw, _ = e2eRawConnect(t, srv, packets.V5, "red-raw", false, tc.expiry)
				if p := e2eRawPublish(t, raw); !p.Dup || p.PacketID != held.PacketID {
					t.Fatalf("want DUP resend of %d, got %+v", held.PacketID, p)
				}
				other.flush(t)
			}
		})
	}
}

// [MQTT-3.3.4-2] overlapping subscriptions give one copy at the highest
// QoS; [MQTT-3.3.4-3], [MQTT-3.3.4-4] it carries every matching
// subscription identifier; a single subscription's identifier is sent too.
func TestE2EV5OverlappingAndSubIDs(t *testing.T) {
	srv := e2eServer(t, nil)
	pub, _ := e2eConnectV5(t, srv, "ov-pub", true, 0)

	c, _ := e2eConnectV5(t, srv, "ov-paho", true, 0)
	c.subscribeOpts(t, nil, paho.SubscribeOptions{Topic: "ov/+", QoS: 0}, paho.SubscribeOptions{Topic: "ov/#", QoS: 2})
	c.subscribeOpts(t, e2ePtr(42), paho.SubscribeOptions{Topic: "sid/t", QoS: 1})
	pub.publish(t, &paho.Publish{Topic: "ov/a", QoS: 2, Payload: []byte("x")})
	if m := c.next(t); m.QoS != 2 || m.Topic != "ov/a" {
		t.Fatalf("got %q at QoS %d, want ov/a at 2", m.Topic, m.QoS)
	}
	c.flush(t) // no second copy
	pub.publish(t, &paho.Publish{Topic: "sid/t", QoS: 1, Payload: []byte("y")})
	if m := c.next(t); m.Properties == nil || m.Properties.SubscriptionIdentifier == nil || *m.Properties.SubscriptionIdentifier != 42 {
		t.Fatalf("subscription identifier missing: %+v", m.Properties)
	}

	// paho keeps only one identifier per PUBLISH: the raw client reads all.
	raw, _ := e2eRawConnect(t, srv, packets.V5, "ov-raw", true, 0)
	for i, f := range []string{"ov/+", "ov/#", "+/a"} {
		sub := &packets.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packets.Subscription{{Filter: f, QoS: byte(i % 2)}}}
		if i < 2 {
			sub.Properties.SubscriptionIDs = []uint32{uint32(i + 1)}
		}
		raw.Send(sub)
		raw.Recv()
	}
	pub.publish(t, &paho.Publish{Topic: "ov/a", QoS: 1, Payload: []byte("z")})
	p := e2eRawPublish(t, raw)
	ids := slices.Sorted(slices.Values(p.Properties.SubscriptionIDs))
	if p.QoS != 1 || !slices.Equal(ids, []uint32{1, 2}) {
		t.Fatalf("got QoS %d ids %v, want QoS 1 ids [1 2]", p.QoS, p.Properties.SubscriptionIDs)
	}
}

// [MQTT-3.8.3-3]: with No Local a client does not get its own messages.
func TestE2EV5NoLocal(t *testing.T) {
	srv := e2eServer(t, nil)
	c, _ := e2eConnectV5(t, srv, "nl", true, 0)
	c.subscribeOpts(t, nil, paho.SubscribeOptions{Topic: "nl/t", QoS: 1, NoLocal: true})
	other, _ := e2eConnectV5(t, srv, "nl-other", true, 0)
	c.publish(t, &paho.Publish{Topic: "nl/t", QoS: 1, Payload: []byte("own")})
	other.publish(t, &paho.Publish{Topic: "nl/t", QoS: 1, Payload: []byte("other")})
	if m := c.next(t); string(m.Payload) != "other" {
		t.Fatalf("got %q, want only the other client's message", m.Payload)
	}
}

// [MQTT-3.3.2-15] Response Topic, [MQTT-3.3.2-16] Correlation Data,
// [MQTT-3.3.2-17], [MQTT-3.3.2-18] User Properties in order,
// [MQTT-3.3.2-20] Content Type and [MQTT-3.3.2-4] Payload Format Indicator
// are forwarded unaltered; a request/response round trip.
func TestE2EV5RequestResponse(t *testing.T) {
	srv := e2eServer(t, nil)
	responder, _ := e2eConnectV5(t, srv, "rr-responder", true, 0)
	responder.subscribe(t, "rr/req", 1)
	requester, _ := e2eConnectV5(t, srv, "rr-requester", true, 0)
	requester.subscribe(t, "rr/resp/requester", 1)
	user := paho.UserProperties{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "a", Value: "3"}}
	requester.publish(t, &paho.Publish{Topic: "rr/req", QoS: 1, Payload: []byte(`{"q":1}`),
		Properties: &paho.PublishProperties{ResponseTopic: "rr/resp/requester", CorrelationData: []byte{0, 1, 2},
			ContentType: "application/json", PayloadFormat: e2ePtr[byte](1), User: user}})
	req := responder.next(t)
	p := req.Properties
	if p == nil || p.ResponseTopic != "rr/resp/requester" || !bytes.Equal(p.CorrelationData, []byte{0, 1, 2}) ||
		p.ContentType != "application/json" || p.PayloadFormat == nil || *p.PayloadFormat != 1 || !slices.Equal(p.User, user) {
		t.Fatalf("request properties altered: %+v", p)
	}
	responder.publish(t, &paho.Publish{Topic: p.ResponseTopic, QoS: 1, Payload: []byte("answer"),
		Properties: &paho.PublishProperties{CorrelationData: p.CorrelationData}})
	resp := requester.next(t)
	if string(resp.Payload) != "answer" || !bytes.Equal(resp.Properties.CorrelationData, []byte{0, 1, 2}) {
		t.Fatalf("response %q correlation %v", resp.Payload, resp.Properties.CorrelationData)
	}
}

// [MQTT-3.3.2-5] a message whose expiry passed while the subscriber was
// offline is not delivered; [MQTT-3.3.2-6] the interval sent is the
// received one less the time the message waited.
func TestE2EV5MessageExpiry(t *testing.T) {
	e2eParallel(t)
	ev := newE2EEvents()
	srv := e2eServer(t, nil, ev)
	c, _ := e2eConnectV5(t, srv, "mx", true, 300)
	c.subscribe(t, "mx/#", 1)
	c.Disconnect(&paho.Disconnect{})
	ev.wait(t, "disconnected/mx", 1)
	pub, _ := e2eConnectV5(t, srv, "mx-pub", true, 0)
	pub.publish(t, &paho.Publish{Topic: "mx/short", QoS: 1, Payload: []byte("short"),
		Properties: &paho.PublishProperties{MessageExpiry: e2eU32(1)}})
	pub.publish(t, &paho.Publish{Topic: "mx/long", QoS: 1, Payload: []byte("long"),
		Properties: &paho.PublishProperties{MessageExpiry: e2eU32(60)}})
	// Expiry is about time passing: wait past the 1 s interval.
	time.Sleep(1100 * time.Millisecond)
	c, _ = e2eConnectV5(t, srv, "mx", false, 300)
	m := c.next(t)
	if m.Topic != "mx/long" || m.Properties == nil || m.Properties.MessageExpiry == nil {
		t.Fatalf("got %q (%+v), want only mx/long with an expiry", m.Topic, m.Properties)
	}
	if e := *m.Properties.MessageExpiry; e >= 60 || e < 55 {
		t.Fatalf("message expiry %d, want the 60 s less the time waited", e)
	}
	c.flush(t)
}

// [MQTT-4.7.2-1]: '#' and '+' filters do not match $SYS topics; a
// "$SYS/#" subscriber gets $SYS/broker/version.
func TestE2EV5Sys(t *testing.T) {
	srv := e2eServer(t, &tern.Options{SysInterval: 50 * time.Millisecond})
	all, _ := e2eConnectV5(t, srv, "sys-all", true, 0)
	all.subscribe(t, "#", 0)
	all.subscribe(t, "+/broker/uptime", 0)
	sys, _ := e2eConnectV5(t, srv, "sys", true, 0)
	sys.subscribe(t, "$SYS/#", 0)
	var version, live bool
	for !version || !live {
		m := sys.next(t)
		version = version || m.Topic == "$SYS/broker/version" && string(m.Payload) == "tern "+tern.Version
		live = live || m.Topic == "$SYS/broker/uptime" && !m.Retain // published after "all" subscribed
	}
	if err := srv.Publish("e2e/after", []byte("x"), false, 0); err != nil {
		t.Fatal(err)
	}
	if m := all.next(t); m.Topic != "e2e/after" {
		t.Fatalf("'#' subscriber got %q", m.Topic)
	}
}

// The in-process client: Server.Publish reaches a network subscriber,
// Server.Subscribe sees a network publisher's message, Unsubscribe stops
// it. Routing happens before PUBACK, so PUBACK is the synchronisation point.
func TestE2EV5InProcess(t *testing.T) {
	srv := e2eServer(t, nil)
	c, _ := e2eConnectV5(t, srv, "ip", true, 0)
	c.subscribe(t, "ip/out", 1)
	if err := srv.Publish("ip/out", []byte("from server"), false, 1); err != nil {
		t.Fatal(err)
	}
	if m := c.next(t); string(m.Payload) != "from server" || m.QoS != 1 {
		t.Fatalf("got %q at QoS %d", m.Payload, m.QoS)
	}
	got := make(chan *tern.Message, 4)
	if err := srv.Subscribe("ip/in/#", 7, func(m *tern.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	if r := c.publish(t, &paho.Publish{Topic: "ip/in/a", QoS: 1, Payload: []byte("to server")}); r.ReasonCode != 0 {
		t.Fatalf("PUBACK 0x%02X", r.ReasonCode)
	}
	select {
	case m := <-got:
		if string(m.Payload) != "to server" || m.Origin != "ip" {
			t.Fatalf("handler got %q from %q", m.Payload, m.Origin)
		}
	default:
		t.Fatal("handler not called before PUBACK")
	}
	if err := srv.Unsubscribe("ip/in/#", 7); err != nil {
		t.Fatal(err)
	}
	// 0x10 is a MAY (3.4.2.1): across nodes the publisher's node may not
	// know yet that the route to the server's node went (a removal is not
	// waited for), and forwards the message there, where nothing gets it.
	if r := c.publish(t, &paho.Publish{Topic: "ip/in/b", QoS: 1, Payload: []byte("x")}); r.ReasonCode != byte(packets.NoMatchingSubscribers) &&
		!(e2eAcrossNodes(t) && r.ReasonCode == 0) {
		t.Fatalf("PUBACK 0x%02X, want 0x10 no matching subscribers", r.ReasonCode)
	}
	if len(got) != 0 {
		t.Fatal("handler called after Unsubscribe")
	}
}

// Hooks: an Authenticator refusal is CONNACK 0x86 ([MQTT-3.2.2-8],
// [MQTT-3.2.2-7] then close); an Authorizer refusal is PUBACK 0x87
// ([MQTT-3.4.2-1]) and SUBACK 0x87 ([MQTT-3.9.3-2]); a PublishInterceptor
// changes what subscribers get.
func TestE2EV5Hooks(t *testing.T) {
	srv := e2eServer(t, nil, e2ePolicy{})
	_, ack, err := e2eDialV5(t, srv, &paho.Connect{ClientID: "m", CleanStart: true, Username: "mallory", UsernameFlag: true})
	if err == nil || ack == nil || ack.ReasonCode != byte(packets.BadUserNameOrPassword) {
		t.Fatalf("mallory: err %v connack %+v, want 0x86", err, ack)
	}
	c, _, err := e2eDialV5(t, srv, &paho.Connect{ClientID: "alice", CleanStart: true, Username: "alice", UsernameFlag: true})
	if err != nil {
		t.Fatal(err)
	}
	c.subscribe(t, "#", 1)
	r, err := c.Publish(t.Context(), &paho.Publish{Topic: "secret/plans", QoS: 1, Payload: []byte("x")})
	if err == nil || r == nil || r.ReasonCode != byte(packets.NotAuthorized) {
		t.Fatalf("publish to secret/: err %v response %+v, want PUBACK 0x87", err, r)
	}
	sa, err := c.Subscribe(t.Context(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "secret/#", QoS: 1}}})
	if err == nil || sa == nil || !slices.Equal(sa.Reasons, []byte{byte(packets.NotAuthorized)}) {
		t.Fatalf("subscribe secret/#: err %v suback %+v, want 0x87", err, sa)
	}
	c.publish(t, &paho.Publish{Topic: "shout", QoS: 1, Payload: []byte("hello")})
	if m := c.next(t); m.Topic != "shout" || string(m.Payload) != "HELLO" {
		t.Fatalf("got %q %q; the denied message must not arrive, the shout must be upper-cased", m.Topic, m.Payload)
	}
}
