package bridge

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/terntest"
)

// node is a broker that a test stops and starts again on the same address
// and store.
type node struct {
	t     testing.TB
	name  string
	addr  string
	store storage.Store
	cfgs  []Config
	srv   *tern.Server
	m     *Manager
}

func newNode(t testing.TB, name string, store storage.Store, cfgs ...Config) *node {
	addr := terntest.FreeAddr(t)
	n := &node{t: t, name: name, addr: addr, store: store, cfgs: cfgs}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *node) start() {
	t := n.t
	t.Helper()
	m, err := NewManager(testLog(), n.cfgs...)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := tern.New(&tern.Options{NodeID: n.name, Store: n.store, SysInterval: -1, Logger: testLog(),
		Durability: tern.DurabilitySync})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(m); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP("tcp", n.addr)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err = l.Listen(); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	srv.AddListener(l)
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	n.srv, n.m = srv, m
}

func (n *node) stop() {
	if n.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.srv.Shutdown(ctx)
	n.srv = nil
}

// counterWindow is a counter's Receive Maximum.
const counterWindow = 20

// counter is a persistent subscriber that counts numbered messages and
// reconnects when its broker comes back.
type counter struct {
	t      testing.TB
	addr   func() string
	id     string
	filter string
	qos    byte
	mu     sync.Mutex
	seen   map[int]int
	inQoS2 map[uint16]bool // QoS 2 packet ids received, awaiting PUBREL: a PUBLISH again with one is the same message
	total  atomic.Int64
	stop   chan struct{}
	done   chan struct{}
}

func newCounter(t testing.TB, addr func() string, id, filter string) *counter {
	return newCounterQoS(t, addr, id, filter, 1)
}

func newCounterQoS(t testing.TB, addr func() string, id, filter string, qos byte) *counter {
	c := &counter{t: t, addr: addr, id: id, filter: filter, qos: qos, seen: make(map[int]int), inQoS2: make(map[uint16]bool),
		stop: make(chan struct{}), done: make(chan struct{})}
	first := make(chan struct{})
	go c.run(first)
	select {
	case <-first:
	case <-time.After(terntest.Timeout):
		t.Fatal("counter did not connect")
	}
	t.Cleanup(func() { close(c.stop); <-c.done })
	return c
}

func (c *counter) run(first chan struct{}) {
	defer close(c.done)
	subscribed := false
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		nc, err := net.DialTimeout("tcp", c.addr(), time.Second)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		mc := newMQTTConn(nc, packets.V5)
		cp := &packets.Connect{ProtocolVersion: packets.V5, ClientID: c.id, KeepAlive: 60, CleanStart: !subscribed}
		cp.Properties.SessionExpiry = packets.Uint32(3600)
		// A small window: a restart of the broker resends at most this
		// many to the subscriber, so duplicates beyond it are the bridge's.
		cp.Properties.ReceiveMaximum = counterWindow
		if _, err := mc.handshake(cp, 2*time.Second); err != nil {
			nc.Close()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		mc.start()
		if !subscribed {
			mc.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: c.filter, QoS: c.qos}}})
		}
		go func() { <-c.stop; mc.close() }()
		for {
			pk, err := mc.read()
			if err != nil {
				break
			}
			switch p := pk.(type) {
			case *packets.Suback:
				subscribed = true
				close(first)
			case *packets.Publish:
				n, _ := strconv.Atoi(string(p.Payload))
				c.mu.Lock()
				if p.QoS < 2 || !c.inQoS2[p.PacketID] { // [MQTT-4.3.3-10]: a QoS 2 id not yet released is the same message
					c.seen[n]++
					c.total.Add(1)
				}
				if p.QoS == 2 {
					c.inQoS2[p.PacketID] = true
				}
				c.mu.Unlock()
				switch p.QoS {
				case 1:
					mc.send(&packets.Puback{PacketID: p.PacketID})
				case 2:
					mc.send(&packets.Pubrec{PacketID: p.PacketID})
				}
			case *packets.Pubrel:
				c.mu.Lock()
				delete(c.inQoS2, p.PacketID)
				c.mu.Unlock()
				mc.send(&packets.Pubcomp{PacketID: p.PacketID})
			}
		}
		mc.close()
	}
}

// check reports the numbers 1..n missing and the duplicates.
func (c *counter) check(n int) (missing []int, dups int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 1; i <= n; i++ {
		switch k := c.seen[i]; {
		case k == 0:
			missing = append(missing, i)
		case k > 1:
			dups += k - 1
		}
	}
	return missing, dups
}

// waitAll waits until every number 1..n has arrived, or fails.
func (c *counter) waitAll(t testing.TB, n int, within time.Duration) (dups int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		missing, dups := c.check(n)
		if len(missing) == 0 {
			return dups
		}
		if time.Now().After(deadline) {
			show := missing
			if len(show) > 10 {
				show = show[:10]
			}
			t.Fatalf("%d of %d messages missing after %v (first: %v); %d duplicates", len(missing), n, within, show, dups)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publishNumbered publishes 1..n at QoS 1 on topic at about rate per
// second, calling at(i) before message i.
func publishNumbered(t testing.TB, addr, topic string, n, rate int, at func(i int)) {
	publishNumberedQoS(t, addr, topic, 1, n, rate, at)
}

// publishNumberedQoS is publishNumbered at QoS qos.
func publishNumberedQoS(t testing.TB, addr, topic string, qos byte, n, rate int, at func(i int)) {
	t.Helper()
	pub := dialClient(t, addr, fmt.Sprintf("pub-%d", time.Now().UnixNano()), packets.V5, true, 0)
	const window = 50
	sem := make(chan struct{}, window)
	var acks sync.WaitGroup
	start := time.Now()
	for i := 1; i <= n; i++ {
		if at != nil {
			at(i)
		}
		if rate > 0 {
			if d := time.Duration(i) * time.Second / time.Duration(rate); time.Since(start) < d {
				time.Sleep(d - time.Since(start))
			}
		}
		sem <- struct{}{}
		id, ch := pub.id()
		acks.Add(1)
		go func() {
			defer acks.Done()
			select {
			case <-ch:
			case <-time.After(30 * time.Second):
				t.Errorf("no acknowledgement for packet id %d", id)
			}
			<-sem
		}()
		pub.c.send(&packets.Publish{Topic: topic, QoS: qos, PacketID: id, Payload: []byte(strconv.Itoa(i))})
	}
	acks.Wait()
}

// The remote restarts while messages flow: every message arrives at the
// remote's persistent subscriber, and a restart duplicates at most the
// bridge's inflight window.
func TestNoLossRemoteRestart(t *testing.T) {
	t.Parallel()
	const n, inflight = 4000, 50
	b := newNode(t, "B", newMemStore())
	a := newNode(t, "A", newMemStore(), fast(Config{Name: "ab", Addresses: []string{b.addr}, MaxInflight: inflight,
		Topics: []Topic{{Pattern: "data/#", QoS: 1}}}))
	waitConnected(t, a.m)
	sub := newCounter(t, func() string { return b.addr }, "sub", "data/#")
	publishNumbered(t, a.addr, "data/x", n, 4000, func(i int) {
		if i == n*3/10 {
			b.stop()
			go func() { time.Sleep(500 * time.Millisecond); b.start() }()
		}
	})
	dups := sub.waitAll(t, n, 20*time.Second)
	br, _ := a.m.Bridge("ab")
	terntest.Eventually(t, "the bridge queue to empty", func() bool {
		st := br.Status()
		return st.Queued == 0 && st.Inflight == 0
	})
	if resent := br.Status().Sent - n; resent > inflight || dups > inflight+counterWindow {
		t.Errorf("after one restart the bridge resent %d and the subscriber got %d duplicates; the bridge's window is %d, the subscriber's %d",
			resent, dups, inflight, counterWindow)
	}
	t.Logf("%d messages, %d duplicates", n, dups)
}

// The bridging broker restarts while its remote is down and messages wait
// in the bridge's queue: they are in the store, and all arrive once both
// are up again. Then the remote publishes while the bridge is away: its
// persistent session there keeps them for the bridge.
func TestNoLossLocalRestart(t *testing.T) {
	t.Parallel()
	const n = 2000
	b := newNode(t, "B", newMemStore())
	a := newNode(t, "A", newMemStore(), fast(Config{Name: "ab", Addresses: []string{b.addr},
		Topics: []Topic{{Pattern: "data/#", QoS: 1}, {Pattern: "cmd/#", Direction: In, QoS: 1}}}))
	waitConnected(t, a.m)
	sub := newCounter(t, func() string { return b.addr }, "sub", "data/#")
	b.stop()
	publishNumbered(t, a.addr, "data/x", n, 0, nil)
	s, _ := a.m.Bridge("ab")
	if st := s.Status(); st.Queued+st.Inflight != n {
		t.Fatalf("queued %d + inflight %d, want %d", st.Queued, st.Inflight, n)
	}
	a.stop()
	a.start()
	b.start()
	if dups := sub.waitAll(t, n, 20*time.Second); dups > DefaultMaxInflight {
		t.Errorf("%d duplicates", dups)
	}

	// Ingress while the bridge is away.
	waitConnected(t, a.m)
	cmds := newCounter(t, func() string { return a.addr }, "cmdsub", "cmd/#")
	a.stop()
	publishNumbered(t, b.addr, "cmd/x", n, 0, nil)
	a.start()
	if dups := cmds.waitAll(t, n, 20*time.Second); dups > DefaultMaxInflight {
		t.Errorf("%d duplicates", dups)
	}
}
