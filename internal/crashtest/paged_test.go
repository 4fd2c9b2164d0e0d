package crashtest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/ternmq/tern/packets"
)

// TestKillPaged kills the broker (durability sync) while the queues of two
// offline persistent sessions are paged out of memory (max_queue_memory
// 4 KiB: almost all of each queue lives only in the store), and then
// again, twice, while their clients are reading the queues back with a
// small Receive Maximum. After each restart the paged part is read back
// from where it was. Every message the publisher got PUBCOMP for is
// delivered: to the QoS 2 subscriber exactly once and in publish order
// [MQTT-4.3.3-11], [MQTT-4.6.0-6]; to the QoS 1 subscriber at least once,
// first deliveries in publish order.
func TestKillPaged(t *testing.T) {
	skipUnlessLong(t)
	const n = 400
	b := newBroker(t, "sync", "")
	b.extra = []string{"--max-queue-memory", "4KiB"}
	b.start()

	subs := []struct {
		id  string
		qos byte
		r   *receiver
	}{{"paged-q1", 1, newReceiver("paged-q1")}, {"paged-q2", 2, newReceiver("paged-q2")}}
	for i, s := range subs {
		c := mustDial(t, b.addr, packets.V5, persistentConnect(packets.V5, s.id, true), 0)
		mustSubscribeQoS(t, c, uint16(i+1), s.qos, "paged/t")
		c.disconnect()
	}
	pub := mustDial(t, b.addr, packets.V5, &packets.Connect{ClientID: "paged-pub", CleanStart: true}, 0)
	payload := func(i int) []byte { return []byte(fmt.Sprintf("paged-%05d %s", i, strings.Repeat("x", 200))) }
	for i := range n {
		if err := pub.publish2(uint16(i+1), "paged/t", payload(i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	pub.close()

	// Killed with everything paged, then twice while reading back.
	b.kill()
	b.start()
	// Restored with the queues left in the store: all but about 4 KiB
	// (some 20 messages) of each.
	var paged int
	if _, err := fmt.Sscanf(b.logText()[strings.Index(b.logText(), " paged="):], " paged=%d", &paged); err != nil || paged < 2*(n-30) {
		t.Fatalf("restored with %d deliveries paged (%v), want at least %d", paged, err, 2*(n-30))
	}
	resume := func(id string) *conn {
		pk := persistentConnect(packets.V5, id, false)
		pk.Properties.ReceiveMaximum = 16
		return mustDial(t, b.addr, packets.V5, pk, 1)
	}
	for round := 1; round <= 2; round++ {
		for _, s := range subs {
			target := round * n / 3
			c := resume(s.id)
			err := s.r.until(c, func(string) bool {
				s.r.mu.Lock()
				defer s.r.mu.Unlock()
				return len(s.r.got) >= target
			})
			if err != nil {
				t.Fatalf("round %d, %s: %v after %d messages", round, s.id, err, len(s.r.got))
			}
			defer c.close()
		}
		b.kill()
		b.start()
	}
	for _, s := range subs {
		c := resume(s.id)
		err := s.r.until(c, func(string) bool {
			s.r.mu.Lock()
			defer s.r.mu.Unlock()
			return len(s.r.got) == n
		})
		if err != nil {
			t.Fatalf("%s: %v after %d of %d messages", s.id, err, len(s.r.got), n)
		}
		c.disconnect()
	}
	b.kill()
	b.checkLog(false)

	for _, s := range subs {
		r := s.r
		for i := range n {
			if r.got[string(payload(i))] == 0 {
				t.Errorf("%s: acknowledged message %d never delivered", s.id, i)
			}
		}
		if len(r.qos2Dups) > 0 {
			t.Errorf("%s: QoS 2 messages delivered twice: %v", s.id, r.qos2Dups)
		}
		// First deliveries in publish order.
		next := 0
		for _, p := range r.order {
			k, err := strconv.Atoi(p[len("paged-") : len("paged-")+5])
			if err != nil {
				t.Fatalf("%s: payload %.20q", s.id, p)
			}
			switch {
			case k == next:
				next++
			case k > next:
				t.Fatalf("%s: message %d delivered before %d", s.id, k, next)
			case s.qos == 2:
				t.Fatalf("%s: QoS 2 message %d delivered again", s.id, k)
			}
		}
		t.Logf("%s: %d messages, %d QoS 1 redeliveries", s.id, len(r.got), r.qos1Dups)
	}
}
