package crashtest

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
)

// TestKillAtAck kills the broker (durability sync) the moment an
// acknowledgement reaches the client, 500 ms later and 2 s later, with and
// without two publishers loading the store, and checks after the restart
// that what was acknowledged is there:
//
//   - qos2-reuse: a persistent publisher completes a QoS 2 exchange (PUBCOMP
//     is the acknowledgement); after the restart it reuses the packet
//     identifier at once for a new message, which must be delivered
//     [MQTT-4.3.3-13] (the identifier is available again after PUBCOMP);
//     the first must not be delivered twice [MQTT-4.3.3-11];
//   - retained-clear: an empty retained PUBLISH (PUBACK) clears the
//     retained message for good [MQTT-3.3.1-6], [MQTT-3.3.1-7];
//   - unsubscribe: the subscription is gone after UNSUBACK [MQTT-3.10.4-1];
//   - offline-publish: a QoS 1 message acknowledged for an offline
//     persistent session is delivered when it comes back [MQTT-3.1.2-5];
//   - retained-set: a retained message (PUBACK) is there [MQTT-3.3.1-5];
//   - subscribe: the subscription (SUBACK) is there [MQTT-3.8.4-1];
//
// and every persistent session comes back with session present 1
// [MQTT-3.2.2-3]. Each round sets up every case and makes its final
// change; one case, the target, goes last and the kill follows its
// acknowledgement (the others are checked too, killed a little later).
//
// The short run targets each case once with and once without load, the
// delay varying; TERN_CRASH_REPEAT=n runs the whole matrix (every case ×
// delay × load) n times.
func TestKillAtAck(t *testing.T) {
	skipUnlessLong(t)
	repeat := envInt(t, "TERN_CRASH_REPEAT", 0, 20) // 0: the short run
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, s^0x5bd1e995))
	b := newBroker(t, "sync", "")
	adm := newAdmin(b.admin)
	b.start()

	type key struct {
		scenario string
		delay    time.Duration
		load     bool
	}
	type plan struct {
		target int
		delay  time.Duration
		load   bool
	}
	delays := []time.Duration{0, 500 * time.Millisecond, 2 * time.Second}
	var plans []plan
	if repeat == 0 {
		for li, load := range []bool{false, true} {
			for i := range ackScenarios {
				plans = append(plans, plan{i, delays[(i+li)%len(delays)], load})
			}
		}
	} else {
		for range repeat {
			for _, load := range []bool{false, true} {
				for _, d := range delays {
					for i := range ackScenarios {
						plans = append(plans, plan{i, d, load})
					}
				}
			}
		}
	}
	lost := make(map[key]int)
	runs := make(map[key]int)
	var failures []string
	start := time.Now()
	for n, p := range plans {
		round := n + 1
		version := packets.V5
		if round%2 == 1 {
			version = packets.V311
		}
		res := runAckRound(t, b, adm, round, version, p.target, p.delay, p.load, rng)
		for i, r := range res {
			if r.err != "" {
				failures = append(failures, fmt.Sprintf("round %d (v%d, target %s, kill %v after its ack, load %v): %s: %s",
					round, version, ackScenarios[p.target], p.delay, p.load, r.scenario, r.err))
			}
			if i == p.target {
				k := key{r.scenario, p.delay, p.load}
				runs[k]++
				if r.err != "" {
					lost[k]++
				}
			}
		}
	}
	b.kill()
	b.checkLog(false)
	var sb strings.Builder
	for _, sc := range ackScenarios {
		for _, load := range []bool{false, true} {
			for _, delay := range delays {
				if k := (key{sc, delay, load}); runs[k] > 0 {
					fmt.Fprintf(&sb, "\n  %-15s kill %-5v after its ack, load %-5v: lost %d of %d", sc, delay, load, lost[k], runs[k])
				}
			}
		}
	}
	t.Logf("%d rounds in %v:%s", len(plans), time.Since(start).Round(time.Millisecond), sb.String())
	if len(failures) > 0 {
		t.Errorf("%d acknowledged changes did not survive the kill:\n%s", len(failures), strings.Join(failures, "\n"))
	}
}

var ackScenarios = []string{"qos2-reuse", "retained-clear", "unsubscribe", "offline-publish", "retained-set", "subscribe"}

type ackResult struct {
	scenario string
	err      string // empty when the acknowledged change survived
}

// runAckRound runs one round: set up every case, load the store if asked,
// make the final acknowledged changes in a random order with the target's
// last, kill the broker delay after its acknowledgement, restart it and
// check every case.
func runAckRound(t *testing.T, b *broker, adm *adminClient, round int, v byte, target int, delay time.Duration, load bool, rng *rand.Rand) []ackResult {
	t.Helper()
	r := fmt.Sprintf("%d", round)
	id := func(s string) string { return "r" + r + "-" + s }

	// Set up.
	q2sub := mustDial(t, b.addr, v, persistentConnect(v, id("q2sub"), true), 0)
	mustSubscribe(t, q2sub, 1, "q2/"+r)
	q2sub.disconnect()
	q2pub := mustDial(t, b.addr, v, persistentConnect(v, id("q2pub"), true), 0)

	pub := mustDial(t, b.addr, v, &packets.Connect{ClientID: id("pub"), CleanStart: true}, 0)
	if code, err := pub.publish1(1, "rc/"+r, []byte("old"), true); err != nil || code.IsError() {
		t.Fatalf("retained set: %v %v", code, err)
	}

	unsub := mustDial(t, b.addr, v, persistentConnect(v, id("unsub"), true), 0)
	mustSubscribe(t, unsub, 1, "un/"+r)

	off := mustDial(t, b.addr, v, persistentConnect(v, id("off"), true), 0)
	mustSubscribe(t, off, 1, "off/"+r)
	off.disconnect()

	sub := mustDial(t, b.addr, v, persistentConnect(v, id("sub"), true), 0)

	// Load: two publishers, one to an offline persistent session and one
	// of retained messages, running until the kill.
	var loadWG sync.WaitGroup
	if load {
		bgsub := mustDial(t, b.addr, packets.V5, persistentConnect(packets.V5, "bgsub", true), -1)
		mustSubscribe(t, bgsub, 1, "bg/#")
		bgsub.disconnect()
		var acked atomic.Int64
		going := make(chan struct{})
		var once sync.Once
		for i, retain := range []bool{false, true} {
			c := mustDial(t, b.addr, packets.V5, &packets.Connect{ClientID: fmt.Sprintf("bgpub%d", i), CleanStart: true}, 0)
			loadWG.Add(1)
			go func() {
				defer loadWG.Done()
				loadPublisher(c, retain, func() {
					if acked.Add(1) == 200 {
						once.Do(func() { close(going) })
					}
				})
			}()
		}
		select {
		case <-going:
		case <-time.After(wait):
			t.Fatal("background load did not start")
		}
	}

	// The acknowledged changes, in a random order; the kill follows the
	// last one after delay.
	final := []func() error{
		func() error { return q2pub.publish2(1, "q2/"+r, []byte("first")) },
		func() error { return ackOK(pub.publish1(2, "rc/"+r, nil, true)) },
		func() error { return unsubscribe(unsub, 2, "un/"+r) },
		func() error { return ackOK(pub.publish1(3, "off/"+r, []byte("queued"), false)) },
		func() error { return ackOK(pub.publish1(4, "rs/"+r, []byte("value"), true)) },
		func() error {
			ack, err := sub.subscribe(1, "sb/"+r)
			if err == nil && ack.ReasonCodes[0].IsError() {
				err = fmt.Errorf("SUBACK %v", ack.ReasonCodes[0])
			}
			return err
		},
	}
	order := rng.Perm(len(final))
	for i, x := range order {
		if x == target {
			order[i], order[len(order)-1] = order[len(order)-1], order[i]
		}
	}
	for _, i := range order {
		if err := final[i](); err != nil {
			t.Fatalf("round %d: %s: %v", round, ackScenarios[i], err)
		}
	}
	if delay > 0 {
		time.Sleep(delay) // the point of the test: a kill this long after the acknowledgement
	}
	b.kill()
	for _, c := range []*conn{q2pub, pub, unsub, sub} {
		c.close()
	}
	loadWG.Wait()
	b.checkLog(false)
	b.start()

	// Check.
	res := make([]ackResult, len(ackScenarios))
	for i, sc := range ackScenarios {
		res[i].scenario = sc
	}
	fail := func(i int, format string, args ...any) {
		if res[i].err == "" {
			res[i].err = fmt.Sprintf(format, args...)
		}
	}

	// qos2-reuse: the identifier released by PUBCOMP is reused at once.
	q2pub = mustDial(t, b.addr, v, persistentConnect(v, id("q2pub"), false), 1)
	if err := q2pub.publish2(1, "q2/"+r, []byte("second")); err != nil {
		fail(0, "reusing packet id 1: %v", err)
	}
	if err := q2pub.publish2(2, "q2/"+r, []byte("marker")); err != nil {
		fail(0, "marker: %v", err)
	}
	q2pub.disconnect()
	rcv := newReceiver(id("q2sub"))
	q2sub = mustDial(t, b.addr, v, persistentConnect(v, id("q2sub"), false), 1)
	if err := rcv.until(q2sub, func(p string) bool { return p == "marker" }); err != nil {
		fail(0, "waiting for the marker: %v", err)
	}
	q2sub.disconnect()
	if n := rcv.count("first"); n != 1 {
		fail(0, "the first message was delivered %d times", n)
	}
	if n := rcv.count("second"); n != 1 {
		fail(0, "the message that reused packet id 1 after PUBCOMP was delivered %d times", n)
	}

	// retained-clear.
	if p, ok, err := adm.retained("rc/" + r); err != nil {
		t.Fatal(err)
	} else if ok {
		fail(1, "cleared retained message is back: %q", p)
	}

	// unsubscribe.
	unsub = mustDial(t, b.addr, v, persistentConnect(v, id("unsub"), false), 1)
	if subs, err := adm.subscriptions(id("unsub")); err != nil {
		t.Fatal(err)
	} else if subs["un/"+r] {
		fail(2, "the subscription is back after UNSUBACK")
	}
	unsub.disconnect()

	// offline-publish: the queued message arrives before a marker sent now.
	off = mustDial(t, b.addr, v, persistentConnect(v, id("off"), false), 1)
	pub = mustDial(t, b.addr, v, &packets.Connect{ClientID: id("pub"), CleanStart: true}, 0)
	if err := ackOK(pub.publish1(5, "off/"+r, []byte("marker"), false)); err != nil {
		t.Fatal(err)
	}
	pub.disconnect()
	rcv = newReceiver(id("off"))
	if err := rcv.until(off, func(p string) bool { return p == "marker" }); err != nil {
		fail(3, "waiting for the marker: %v", err)
	}
	off.disconnect()
	if rcv.count("queued") == 0 {
		fail(3, "the message acknowledged for the offline session was lost")
	}

	// retained-set.
	if p, ok, err := adm.retained("rs/" + r); err != nil {
		t.Fatal(err)
	} else if !ok || p != "value" {
		fail(4, "retained message lost (present %v, %q)", ok, p)
	}

	// subscribe.
	sub = mustDial(t, b.addr, v, persistentConnect(v, id("sub"), false), 1)
	if subs, err := adm.subscriptions(id("sub")); err != nil {
		t.Fatal(err)
	} else if !subs["sb/"+r] {
		fail(5, "the subscription acknowledged by SUBACK was lost")
	}
	sub.disconnect()
	return res
}

func ackOK(code packets.ReasonCode, err error) error {
	if err == nil && code.IsError() {
		err = fmt.Errorf("refused: %v", code)
	}
	return err
}

func unsubscribe(c *conn, id uint16, filter string) error {
	if err := c.send(&packets.Unsubscribe{PacketID: id, Filters: []string{filter}}); err != nil {
		return err
	}
	p, err := c.recv()
	if err != nil {
		return err
	}
	ack, ok := p.(*packets.Unsuback)
	if !ok || ack.PacketID != id {
		return fmt.Errorf("expected UNSUBACK %d, got %v", id, p)
	}
	if c.version == packets.V5 && ack.ReasonCodes[0].IsError() {
		return fmt.Errorf("UNSUBACK %v", ack.ReasonCodes[0])
	}
	return nil
}

// loadPublisher publishes QoS 1 messages (retained ones on 100 topics, or
// to bg/…) with 20 in flight until its connection fails, calling acked for
// each PUBACK.
func loadPublisher(c *conn, retain bool, acked func()) {
	defer c.close()
	ids := make(chan uint16, 20)
	for i := uint16(1); i <= 20; i++ {
		ids <- i
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.close()
		for {
			c.nc.SetReadDeadline(time.Time{})
			pk, err := packets.ReadPacket(c.br, c.version, 0)
			if err != nil {
				return
			}
			if a, ok := pk.(*packets.Puback); ok {
				acked()
				ids <- a.PacketID
			}
		}
	}()
	payload := make([]byte, 256)
	for n := 0; ; n++ {
		var id uint16
		select {
		case id = <-ids:
		case <-done:
			return
		}
		topic := fmt.Sprintf("bg/%d", n%10)
		if retain {
			topic = fmt.Sprintf("bgret/%d", n%100)
		}
		if err := c.send(&packets.Publish{QoS: 1, PacketID: id, Topic: topic, Payload: payload, Retain: retain}); err != nil {
			<-done
			return
		}
	}
}
