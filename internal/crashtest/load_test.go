package crashtest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
)

// TestKillUnderLoad kills the broker (durability sync) at random moments
// under load, restarts it on the same store each time and checks, after
// every restart and at the end, that nothing acknowledged was lost:
//
//   - four publishers (v5 and 3.1.1; two with clean sessions, two with
//     persistent sessions that resend what was not acknowledged after
//     reconnecting [MQTT-4.4.0-1]) send QoS 1 and QoS 2 messages, 20 in
//     flight each; a message is acknowledged by its PUBACK or PUBREC;
//   - three persistent subscribers (v5 with session expiry 3600, 3.1.1 with
//     clean session 0), one always online, one that drops its connection
//     and comes back during each round, one online every other round,
//     receive every acknowledged message [MQTT-4.3.2-*], [MQTT-4.3.3-*],
//     and no QoS 2 message twice [MQTT-4.3.3-11];
//   - a writer of retained messages sets and clears retained messages: after
//     a restart each topic holds the last acknowledged value, or one sent
//     after it [MQTT-3.3.1-5], [MQTT-3.3.1-6];
//   - a persistent client subscribes and unsubscribes: no acknowledged
//     subscription is lost, none that was removed comes back;
//   - every persistent session is present after every restart
//     [MQTT-3.2.2-3].
//
// TERN_CRASH_ROUNDS sets the number of kills (default 6, soak 24).
func TestKillUnderLoad(t *testing.T) {
	skipUnlessLong(t)
	runLoad(t, loadConfig{durability: "sync", rounds: envInt(t, "TERN_CRASH_ROUNDS", 6, 24),
		minKill: 300 * time.Millisecond, maxKill: 900 * time.Millisecond})
}

// TestKillPeriodic runs the same load with durability periodic (sync
// interval 500 ms) and kills later in each round, so that much of what was
// acknowledged is older than the interval. Periodic keeps a bound instead
// of everything: whatever was lost must have been acknowledged within the
// sync interval plus one commit before the kill. The test records when
// each acknowledgement arrived and checks every loss against the bound
// (sync interval + 500 ms for the commit, on a loaded machine). The
// subscribers take QoS 1, so that no QoS 2 handover (which is fsync'd in
// every mode) syncs the store between the periodic syncs.
func TestKillPeriodic(t *testing.T) {
	skipUnlessLong(t)
	runLoad(t, loadConfig{durability: "periodic", syncInterval: 500 * time.Millisecond,
		slack: 500 * time.Millisecond, subQoS: 1,
		rounds: envInt(t, "TERN_CRASH_ROUNDS", 3, 12), minKill: 1500 * time.Millisecond, maxKill: 2500 * time.Millisecond})
}

type loadConfig struct {
	durability       string
	syncInterval     time.Duration // periodic only
	slack            time.Duration // allowance for one commit, periodic only
	subQoS           byte          // the subscribers' QoS; 0 means 2
	rounds           int
	minKill, maxKill time.Duration
}

// bound is how long before a kill an acknowledgement may be and still be
// lost: never in sync mode.
func (c loadConfig) bound() time.Duration {
	if c.durability == "sync" {
		return 0
	}
	return c.syncInterval + c.slack
}

// ledger records every acknowledged message and when its acknowledgement
// arrived.
type ledger struct {
	mu    sync.Mutex
	acked map[string]ackInfo
	sent  atomic.Int64
}

type ackInfo struct {
	round int
	at    time.Time
}

func (l *ledger) ack(payload string, round int) {
	l.mu.Lock()
	if _, ok := l.acked[payload]; !ok {
		l.acked[payload] = ackInfo{round, time.Now()}
	}
	l.mu.Unlock()
}

// loadRun is the state of one run of runLoad.
type loadRun struct {
	t     *testing.T
	cfg   loadConfig
	b     *broker
	adm   *adminClient
	led   *ledger
	round int

	killed   atomic.Bool
	errMu    sync.Mutex
	liveErrs []string // failures of clients while the broker was up
}

// failed records a client failure unless the broker was killed or the
// test closed the connection.
func (lr *loadRun) failed(who string, c *conn, err error) {
	if err == nil || lr.killed.Load() || c.closedByTest.Load() {
		return
	}
	lr.errMu.Lock()
	lr.liveErrs = append(lr.liveErrs, fmt.Sprintf("round %d: %s: %v", lr.round, who, err))
	lr.errMu.Unlock()
}

func runLoad(t *testing.T, cfg loadConfig) {
	start := time.Now()
	s := seed(t)
	rng := rand.New(rand.NewPCG(s, s^0x2545F4914F6CDD1D))
	b := newBroker(t, cfg.durability, "")
	if cfg.syncInterval > 0 {
		b.syncEvery = cfg.syncInterval
	}
	lr := &loadRun{t: t, cfg: cfg, b: b, adm: newAdmin(b.admin), led: &ledger{acked: make(map[string]ackInfo)}}

	pubs := []*persistentPub{
		{name: "pub-v5-persistent", version: packets.V5, inflight: make(map[uint16]*outMsg)},
		{name: "pub-v311-persistent", version: packets.V311, inflight: make(map[uint16]*outMsg)},
	}
	cleanPubs := []*persistentPub{ // their state is dropped with each connection
		{name: "pub-v5-clean", version: packets.V5},
		{name: "pub-v311-clean", version: packets.V311},
	}
	subs := []*loadSub{
		{rcv: newReceiver("sub-v5-online"), version: packets.V5, mode: "online"},
		{rcv: newReceiver("sub-v311-reconnecting"), version: packets.V311, mode: "reconnecting"},
		{rcv: newReceiver("sub-v5-offline"), version: packets.V5, mode: "alternate"},
	}
	subQoS := cfg.subQoS
	if subQoS == 0 {
		subQoS = 2
	}
	rw := newRetainedWriter(8)
	tog := newToggler(4)
	kills := make([]time.Time, cfg.rounds+1) // the last: after the final restart, never
	var stale []string
	roundsLog := make([]string, 0, cfg.rounds)

	for round := 0; round <= cfg.rounds; round++ {
		lr.round = round
		lr.killed.Store(false)
		b.start()
		fresh := round == 0
		present := 1
		if fresh {
			present = 0
		}
		if round > 0 {
			// What acknowledged state survived the last kill?
			stale = append(stale, rw.check(lr, kills[round-1])...)
			stale = append(stale, tog.check(lr, kills[round-1])...)
		}

		// Subscribers.
		var wg sync.WaitGroup
		for _, sb := range subs {
			if round == 0 || sb.online(round) {
				c := mustDial(t, b.addr, sb.version, persistentConnect(sb.version, sb.rcv.name, fresh), present)
				if fresh {
					mustSubscribeQoS(t, c, 1, subQoS, "load/#")
				}
				sb.c = c
				if round < cfg.rounds && !sb.online(round) { // round 0 subscribes, then goes offline
					c.disconnect()
					sb.c = nil
				}
			} else {
				sb.c = nil
			}
		}
		if round == cfg.rounds {
			kills[round] = time.Now().Add(24 * time.Hour)
			lr.finish(pubs, subs)
			break
		}
		for _, sb := range subs {
			if sb.c == nil {
				continue
			}
			c := sb.c
			wg.Add(1)
			go func() {
				defer wg.Done()
				lr.failed(sb.rcv.name, c, sb.rcv.run(c))
			}()
		}

		// Publishers, the retained writer and the toggler.
		for _, p := range pubs {
			c := mustDial(t, b.addr, p.version, persistentConnect(p.version, p.name, fresh), present)
			wg.Add(1)
			go func() {
				defer wg.Done()
				lr.failed(p.name, c, p.run(c, lr, false))
			}()
		}
		for _, p := range cleanPubs {
			c := mustDial(t, b.addr, p.version, &packets.Connect{ClientID: p.name, CleanStart: true}, 0)
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.inflight = make(map[uint16]*outMsg)
				lr.failed(p.name, c, p.run(c, lr, false))
			}()
		}
		rc := mustDial(t, b.addr, packets.V5, &packets.Connect{ClientID: "retained-writer", CleanStart: true}, 0)
		tc := mustDial(t, b.addr, packets.V5, persistentConnect(packets.V5, "toggler", fresh), present)
		wg.Add(2)
		go func() { defer wg.Done(); lr.failed("retained-writer", rc, rw.run(rc, round)) }()
		go func() { defer wg.Done(); lr.failed("toggler", tc, tog.run(tc, rng.Uint64())) }()

		killAt := cfg.minKill + time.Duration(rng.Int64N(int64(cfg.maxKill-cfg.minKill)))
		roundStart := time.Now()
		// The reconnecting subscriber drops its connection and comes back
		// in the first half of the round.
		for _, sb := range subs {
			if sb.mode == "reconnecting" && sb.c != nil {
				time.Sleep(killAt / time.Duration(2+rng.IntN(3)))
				sb.c.close()
				c, ack, err := dial(b.addr, sb.version, persistentConnect(sb.version, sb.rcv.name, false))
				if err != nil || ack.ReasonCode.IsError() || !ack.SessionPresent {
					t.Fatalf("round %d: %s reconnecting under load: %v %+v", round, sb.rcv.name, err, ack)
				}
				sb.c = c
				wg.Add(1)
				go func() { defer wg.Done(); lr.failed(sb.rcv.name, c, sb.rcv.run(c)) }()
			}
		}
		time.Sleep(time.Until(roundStart.Add(killAt))) // the kill comes at a random moment: this is the point
		if b.exitedNow() {
			t.Fatalf("round %d: the broker exited before the kill:\n%s", round, b.logTail())
		}
		lr.killed.Store(true)
		kills[round] = time.Now()
		b.kill()
		for _, sb := range subs {
			if sb.c != nil {
				sb.c.close()
			}
		}
		wg.Wait()
		b.checkLog(false)
		roundsLog = append(roundsLog, fmt.Sprintf("round %d: killed after %v, %d acknowledged so far",
			round, killAt.Round(time.Millisecond), len(lr.led.acked)))
	}
	b.kill()
	b.checkLog(false)

	// Verdict.
	for _, l := range roundsLog {
		t.Log(l)
	}
	bound := cfg.bound()
	var lost, lostInBound []string
	qos := map[string]int{}
	for payload, info := range lr.led.acked {
		q := payload[:2]
		qos[q]++
		for _, sb := range subs {
			if sb.rcv.count(payload) > 0 {
				continue
			}
			age := kills[info.round].Sub(info.at)
			desc := fmt.Sprintf("%s at %s (acknowledged %v before the kill of round %d)", payload, sb.rcv.name,
				age.Round(time.Millisecond), info.round)
			if cfg.durability != "sync" && age <= bound {
				lostInBound = append(lostInBound, desc)
			} else {
				lost = append(lost, desc)
			}
		}
	}
	sort.Strings(lost)
	var dups []string
	reads := 0
	for _, sb := range subs {
		sb.rcv.mu.Lock()
		for _, d := range sb.rcv.qos2Dups {
			dups = append(dups, sb.rcv.name+": "+d)
		}
		reads += len(sb.rcv.order)
		sb.rcv.mu.Unlock()
	}
	t.Logf("%s, %d rounds: sent %d, acknowledged %d (QoS 1 %d, QoS 2 %d); subscribers counted %d; "+
		"lost %d (%d within the periodic bound of %v); QoS 2 duplicates %d; lost or stale retained/subscriptions %d; %v",
		cfg.durability, cfg.rounds, lr.led.sent.Load(), len(lr.led.acked), qos["q1"], qos["q2"], reads,
		len(lost), len(lostInBound), bound, len(dups), len(stale), time.Since(start).Round(time.Millisecond))
	if len(lr.liveErrs) > 0 {
		t.Errorf("clients failed while the broker was up:\n%s", strings.Join(lr.liveErrs, "\n"))
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged messages lost (beyond the bound of %v): %s", len(lost), bound, list(lost))
	}
	if len(dups) > 0 {
		t.Errorf("%d QoS 2 messages delivered twice: %s", len(dups), list(dups))
	}
	if len(stale) > 0 {
		t.Errorf("%d retained messages or subscriptions lost, stale or resurrected: %s", len(stale), list(stale))
	}
	if len(lr.led.acked) < 1000 {
		t.Errorf("only %d messages acknowledged: the test proves little", len(lr.led.acked))
	}
}

// finish runs after the last restart: the persistent publishers complete
// what they had in flight, then every subscriber drains its session.
func (lr *loadRun) finish(pubs []*persistentPub, subs []*loadSub) {
	t := lr.t
	var wg sync.WaitGroup
	errc := make(map[string]chan error)
	for _, sb := range subs {
		if sb.c == nil {
			sb.c = mustDial(t, lr.b.addr, sb.version, persistentConnect(sb.version, sb.rcv.name, false), 1)
		}
		ch := make(chan error, 1)
		errc[sb.rcv.name] = ch
		wg.Add(1)
		go func() { defer wg.Done(); ch <- sb.rcv.run(sb.c) }()
	}
	for _, p := range pubs {
		c := mustDial(t, lr.b.addr, p.version, persistentConnect(p.version, p.name, false), 1)
		if err := p.run(c, lr, true); err != nil {
			t.Fatalf("%s completing after the last restart: %v", p.name, err)
		}
		c.disconnect()
	}
	for _, sb := range subs {
		if err := lr.adm.drained(sb.rcv.name, errc[sb.rcv.name]); err != nil {
			t.Fatal(err)
		}
	}
	for _, sb := range subs {
		sb.c.close()
	}
	wg.Wait()
}

// loadSub is a persistent subscriber of the load test.
type loadSub struct {
	rcv     *receiver
	version byte
	mode    string // online, reconnecting, alternate
	c       *conn
}

func (s *loadSub) online(round int) bool { return s.mode != "alternate" || round%2 == 1 }

// outMsg is a PUBLISH a publisher has in flight.
type outMsg struct {
	payload string
	qos     byte
	topic   string
	recd    bool // PUBREC received: PUBREL is what to resend
}

// persistentPub publishes QoS 1 and QoS 2 messages alternately with up to
// 20 packet identifiers in use, reusing an identifier as soon as its
// PUBACK or PUBCOMP frees it. With a persistent session it keeps what is
// in flight across connections and resends it after reconnecting: PUBLISH
// with DUP, or PUBREL for what got its PUBREC [MQTT-4.4.0-1].
type persistentPub struct {
	name     string
	version  byte
	seq      int
	inflight map[uint16]*outMsg
}

const window = 20

// run resends what is in flight, then publishes until the connection
// fails; with complete it publishes nothing new and returns once nothing is
// in flight.
func (p *persistentPub) run(c *conn, lr *loadRun, complete bool) error {
	defer c.close()
	var mu sync.Mutex // guards p.inflight and the free list
	free := make(chan uint16, window)
	for id := uint16(1); id <= window; id++ {
		if p.inflight[id] == nil {
			free <- id
		}
	}
	// Resend in packet id order (the order they were first sent in is
	// not kept: any order is allowed across a reconnection for different
	// ids).
	ids := make([]uint16, 0, len(p.inflight))
	for id := range p.inflight {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		m := p.inflight[id]
		var pk packets.Packet = &packets.Publish{Dup: true, QoS: m.qos, PacketID: id, Topic: m.topic, Payload: []byte(m.payload)}
		if m.recd {
			pk = &packets.Pubrel{PacketID: id}
		}
		if err := c.queue(pk); err != nil {
			return err
		}
	}
	if err := c.flush(); err != nil {
		return err
	}
	round := lr.round
	done := make(chan error, 1)
	empty := make(chan struct{}, 1)
	go func() {
		for {
			c.nc.SetReadDeadline(time.Time{})
			pk, err := packets.ReadPacket(c.br, c.version, 0)
			if err != nil {
				done <- err
				return
			}
			var reply packets.Packet
			mu.Lock()
			switch a := pk.(type) {
			case *packets.Puback:
				if m := p.inflight[a.PacketID]; m != nil && m.qos == 1 {
					if !a.ReasonCode.IsError() {
						lr.led.ack(m.payload, round)
					}
					delete(p.inflight, a.PacketID)
					free <- a.PacketID
				}
			case *packets.Pubrec:
				if m := p.inflight[a.PacketID]; m != nil && m.qos == 2 {
					if a.ReasonCode.IsError() {
						delete(p.inflight, a.PacketID)
						free <- a.PacketID
					} else {
						lr.led.ack(m.payload, round)
						m.recd = true
						reply = &packets.Pubrel{PacketID: a.PacketID}
					}
				}
			case *packets.Pubcomp:
				if m := p.inflight[a.PacketID]; m != nil && m.recd {
					delete(p.inflight, a.PacketID)
					free <- a.PacketID
				}
			default:
				mu.Unlock()
				done <- fmt.Errorf("unexpected %s", pk.Type())
				return
			}
			n := len(p.inflight)
			mu.Unlock()
			if reply != nil {
				if err := c.queue(reply); err != nil {
					done <- err
					return
				}
			}
			if c.br.Buffered() == 0 {
				if err := c.flush(); err != nil {
					done <- err
					return
				}
			}
			if n == 0 {
				select {
				case empty <- struct{}{}:
				default:
				}
			}
		}
	}()
	if complete {
		for {
			mu.Lock()
			n := len(p.inflight)
			mu.Unlock()
			if n == 0 {
				return nil
			}
			select {
			case err := <-done:
				return err
			case <-empty:
			case <-time.After(wait):
				return fmt.Errorf("%d messages still in flight", n)
			}
		}
	}
	for {
		var id uint16
		select {
		case id = <-free:
		case err := <-done:
			return err
		default:
			if err := c.flush(); err != nil {
				return err
			}
			select {
			case id = <-free:
			case err := <-done:
				return err
			}
		}
		p.seq++
		qos := byte(1 + p.seq%2)
		m := &outMsg{payload: fmt.Sprintf("q%d/%s/%d", qos, p.name, p.seq), qos: qos, topic: fmt.Sprintf("load/%s/q%d", p.name, qos)}
		mu.Lock()
		p.inflight[id] = m
		mu.Unlock()
		lr.led.sent.Add(1)
		if err := c.queue(&packets.Publish{QoS: qos, PacketID: id, Topic: m.topic, Payload: []byte(m.payload)}); err != nil {
			return err
		}
	}
}

// retainedWriter sets and clears the retained messages of n topics, one
// write at a time, and remembers what each topic may hold.
type retainedWriter struct {
	topics []string
	state  map[string]*history
	seq    int
}

// history is what one retained topic, or one subscription, went through
// since it was last checked: its value then, and the writes since, with
// when each was acknowledged (zero: never). "" is no retained message, or
// no subscription.
type history struct {
	base   string
	writes []write
}

type write struct {
	value string
	acked time.Time
}

// allowed returns the values the store may hold after a kill at kill:
// the last write acknowledged more than bound before it (or the base),
// and every write after that one.
func (h *history) allowed(kill time.Time, bound time.Duration) []string {
	from := -1
	for i, w := range h.writes {
		if !w.acked.IsZero() && kill.Sub(w.acked) > bound {
			from = i
		}
	}
	var out []string
	if from < 0 {
		out = append(out, h.base)
		from = 0
	}
	for _, w := range h.writes[from:] {
		out = append(out, w.value)
	}
	return out
}

func newRetainedWriter(n int) *retainedWriter {
	w := &retainedWriter{state: make(map[string]*history)}
	for i := range n {
		topic := fmt.Sprintf("ret/k%d", i)
		w.topics = append(w.topics, topic)
		w.state[topic] = &history{}
	}
	return w
}

func (w *retainedWriter) run(c *conn, round int) error {
	defer c.close()
	for {
		w.seq++
		topic := w.topics[w.seq%len(w.topics)]
		value := fmt.Sprintf("r%d-%d", round, w.seq)
		if w.seq%5 == 0 {
			value = "" // clear it
		}
		h := w.state[topic]
		h.writes = append(h.writes, write{value: value})
		code, err := c.publish1(uint16(w.seq%60000+1), topic, []byte(value), true)
		if err != nil {
			return err
		}
		if code.IsError() {
			return fmt.Errorf("retained PUBLISH refused: %v", code)
		}
		h.writes[len(h.writes)-1].acked = time.Now()
	}
}

// check compares every topic with what it may hold after the kill, and
// makes what it holds the new base.
func (w *retainedWriter) check(lr *loadRun, kill time.Time) []string {
	var bad []string
	for _, topic := range w.topics {
		h := w.state[topic]
		got, ok, err := lr.adm.retained(topic)
		if err != nil {
			lr.t.Fatal(err)
		}
		if !ok {
			got = ""
		}
		allowed := h.allowed(kill, lr.cfg.bound())
		if !slices.Contains(allowed, got) {
			bad = append(bad, fmt.Sprintf("round %d: retained %s is %q, acknowledged history allows %q", lr.round, topic, got, allowed))
		}
		w.state[topic] = &history{base: got}
	}
	return bad
}

// toggler is a persistent client that subscribes to and unsubscribes from
// n filters at random, one change at a time.
type toggler struct {
	filters []string
	state   map[string]*history
	subbed  map[string]bool
}

func newToggler(n int) *toggler {
	t := &toggler{state: make(map[string]*history), subbed: make(map[string]bool)}
	for i := range n {
		f := fmt.Sprintf("tog/%d", i)
		t.filters = append(t.filters, f)
		t.state[f] = &history{}
	}
	return t
}

func (tg *toggler) run(c *conn, seed uint64) error {
	defer c.close()
	rng := rand.New(rand.NewPCG(seed, 1))
	for id := uint16(1); ; id = id%60000 + 1 {
		f := tg.filters[rng.IntN(len(tg.filters))]
		h := tg.state[f]
		on := !tg.subbed[f]
		value := ""
		if on {
			value = "subscribed"
		}
		h.writes = append(h.writes, write{value: value})
		var err error
		if on {
			var ack *packets.Suback
			if ack, err = c.subscribe(id, f); err == nil && ack.ReasonCodes[0].IsError() {
				return fmt.Errorf("SUBACK %v", ack.ReasonCodes[0])
			}
		} else {
			err = unsubscribe(c, id, f)
		}
		if err != nil {
			return err
		}
		h.writes[len(h.writes)-1].acked = time.Now()
		tg.subbed[f] = on
	}
}

func (tg *toggler) check(lr *loadRun, kill time.Time) []string {
	subs, err := lr.adm.subscriptions("toggler")
	if err != nil {
		lr.t.Fatal(err)
	}
	var bad []string
	for _, f := range tg.filters {
		h := tg.state[f]
		got := ""
		if subs[f] {
			got = "subscribed"
		}
		allowed := h.allowed(kill, lr.cfg.bound())
		if !slices.Contains(allowed, got) {
			bad = append(bad, fmt.Sprintf("round %d: subscription %s is %q, acknowledged history allows %q", lr.round, f, got, allowed))
		}
		tg.state[f] = &history{base: got}
		tg.subbed[f] = got != ""
	}
	return bad
}
