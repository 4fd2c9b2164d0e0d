package crashtest

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ternmq/tern/packets"
)

// TestKillPaged kills the broker (durability sync) while the queues of two
// offline persistent sessions are paged out of memory (max_queue_memory
// 4 KiB: almost all of each queue lives only in the store), and then
// again, twice, while their clients are reading the queues back with a
// small Receive Maximum and a publisher adds QoS 1 messages to the paged
// queues. After each restart the paged part is read back from where it
// was. Every message the publisher got PUBCOMP or PUBACK for is
// delivered: the QoS 2 ones to the QoS 2 subscriber exactly once
// [MQTT-4.3.3-11], and to both in publish order [MQTT-4.6.0-6] (first
// deliveries; QoS 1 ones may come again after a kill [MQTT-4.3.2-1]).
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
	payload := func(i int) []byte { return []byte(fmt.Sprintf("paged-%05d %s", i, strings.Repeat("x", 200))) }
	pub := mustDial(t, b.addr, packets.V5, &packets.Connect{ClientID: "paged-pub", CleanStart: true}, 0)
	acked := make(map[int]bool)
	for i := range n {
		if err := pub.publish2(uint16(i+1), "paged/t", payload(i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		acked[i] = true
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
	next := n // the next message of the QoS 1 publisher
	var pubMu sync.Mutex
	pubAcked := make(map[int]bool)
	for round := 1; round <= 2; round++ {
		// A QoS 1 publisher adds to the paged queues until the kill.
		pub := mustDial(t, b.addr, packets.V5, &packets.Connect{ClientID: "paged-pub", CleanStart: true}, 0)
		stop := make(chan struct{})
		done := make(chan int)
		go func(from int) {
			i := from
			for ; ; i++ {
				select {
				case <-stop:
					done <- i
					return
				default:
				}
				code, err := pub.publish1(uint16(i%60000+1), "paged/t", payload(i), false)
				if err != nil {
					<-stop
					done <- i
					return
				}
				if code != 0 {
					t.Errorf("PUBACK %d: %v", i, code)
				}
				pubMu.Lock()
				pubAcked[i] = true
				pubMu.Unlock()
			}
		}(next)
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
		close(stop)
		next = <-done
		pub.close()
		b.start()
	}
	pubMu.Lock()
	for i := range pubAcked {
		acked[i] = true
	}
	pubMu.Unlock()
	for _, s := range subs {
		c := resume(s.id)
		err := s.r.until(c, func(string) bool {
			s.r.mu.Lock()
			defer s.r.mu.Unlock()
			for i := range acked {
				if s.r.got[string(payload(i))] == 0 {
					return false
				}
			}
			return true
		})
		if err != nil {
			t.Fatalf("%s: %v after %d messages", s.id, err, len(s.r.got))
		}
		c.disconnect()
	}
	b.kill()
	b.checkLog(false)

	for _, s := range subs {
		r := s.r
		if len(r.qos2Dups) > 0 {
			t.Errorf("%s: QoS 2 messages delivered twice: %v", s.id, r.qos2Dups)
		}
		// First deliveries in publish order (a QoS 1 delivery may come
		// again after a kill; QoS 2 ones may not: qos2Dups).
		last := -1
		seen := make(map[string]bool)
		for _, p := range r.order {
			if seen[p] {
				continue
			}
			seen[p] = true
			k, err := strconv.Atoi(p[len("paged-") : len("paged-")+5])
			if err != nil {
				t.Fatalf("%s: payload %.20q", s.id, p)
			}
			if k <= last {
				t.Fatalf("%s: message %d first delivered after %d", s.id, k, last)
			}
			last = k
		}
		t.Logf("%s: %d messages (%d acknowledged), %d QoS 1 redeliveries", s.id, len(r.got), len(acked), r.qos1Dups)
	}
}
