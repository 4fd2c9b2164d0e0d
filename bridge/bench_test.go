package bridge

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
)

// TestBridgeThroughput measures steady QoS 1 throughput through a bridge:
// a publisher on broker A (window 100), a bridge A -> B (inflight 100),
// a subscriber on B; the publisher stays at most 1,000 messages ahead of
// the subscriber, so what is measured is what the bridge sustains. Tern
// (two tern serve processes) and Mosquitto (two mosquitto processes, its
// bridge) alternate, in rounds. It runs only with TERN_BRIDGE_BENCH=1
// (TERN_BRIDGE_BENCH_ROUNDS, TERN_BRIDGE_BENCH_SECONDS change the rounds
// and the measured seconds); see BENCHMARKS.md.
func TestBridgeThroughput(t *testing.T) {
	if os.Getenv("TERN_BRIDGE_BENCH") == "" {
		t.Skip("set TERN_BRIDGE_BENCH=1 to measure bridge throughput against Mosquitto")
	}
	rounds, secs := 3, 5
	if s := os.Getenv("TERN_BRIDGE_BENCH_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	if s := os.Getenv("TERN_BRIDGE_BENCH_SECONDS"); s != "" {
		secs, _ = strconv.Atoi(s)
	}
	variants := []struct {
		name  string
		start func(t *testing.T) (pubAddr, subAddr string)
	}{
		{"tern, durability periodic", func(t *testing.T) (string, string) { return ternPair(t, "periodic") }},
		{"mosquitto, persistence (autosave 1 s)", func(t *testing.T) (string, string) { return mosquittoPair(t, true) }},
		{"tern, durability sync", func(t *testing.T) (string, string) { return ternPair(t, "sync") }},
		{"mosquitto, no persistence", func(t *testing.T) (string, string) { return mosquittoPair(t, false) }},
	}
	results := make(map[string][]float64)
	for r := range rounds {
		for _, v := range variants {
			t.Run(fmt.Sprintf("%s/round %d", v.name, r+1), func(t *testing.T) {
				pub, sub := v.start(t)
				rate, lost, dups := measureBridge(t, pub, sub, time.Duration(secs)*time.Second)
				t.Logf("%.0f msg/s, %d lost, %d duplicates", rate, lost, dups)
				results[v.name] = append(results[v.name], rate)
			})
		}
	}
	t.Logf("| bridge | median msg/s | rounds |")
	t.Logf("|---|---:|---|")
	for _, v := range variants {
		rs := slices.Clone(results[v.name])
		slices.Sort(rs)
		var parts []string
		for _, x := range results[v.name] {
			parts = append(parts, strconv.Itoa(int(x)))
		}
		if len(rs) > 0 {
			t.Logf("| %s | %.0f | %s |", v.name, rs[len(rs)/2], strings.Join(parts, ", "))
		}
	}
}

// ternPair starts tern serve B and tern serve A bridged to it.
func ternPair(t *testing.T, durability string) (string, string) {
	b := startTern(t, "B", "", "--durability", durability)
	a := startTern(t, "A", "bridges:\n  - name: up\n    addresses: ["+b.addr+"]\n    max_inflight: 100\n"+
		"    notifications: false\n    topics: [\"bench/# out 1\"]\n", "--durability", durability)
	a.waitBridge(t, "up", func(s Status) bool { return s.State == StateConnected }, "the bridge to connect", 10*time.Second)
	return a.addr, b.addr
}

// mosquittoPair starts mosquitto B and mosquitto A bridged to it, with
// inflight 100 and queues that do not drop.
func mosquittoPair(t *testing.T, persist bool) (string, string) {
	conf := func() string {
		c := "max_inflight_messages 100\nmax_queued_messages 1000000\nset_tcp_nodelay true\n"
		if persist {
			c += "persistence true\npersistence_location " + t.TempDir() + "/\nautosave_interval 1\n"
		}
		return c
	}
	b := startMosquitto(t, conf())
	a := startMosquitto(t, conf()+"connection up\naddress "+b.addr+"\nremote_clientid bench.up\ntopic bench/# out 1\n"+
		"notifications false\nrestart_timeout 1\n")
	// Wait for the bridge: a message gets through.
	probe := dialClient(t, b.addr, "probe", packets.V311, true, 0)
	probe.subscribe("bench/probe", 1)
	pub := dialClient(t, a.addr, "probe-pub", packets.V311, true, 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		pub.publish("bench/probe", "x", 1, false)
		select {
		case <-probe.msgs:
			probe.c.close()
			pub.c.close()
			return a.addr, b.addr
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto's bridge did not connect:\n%s", a)
		}
	}
}

// measureBridge publishes numbered QoS 1 messages on pubAddr and receives
// them on subAddr for a second of warm-up and then d, and returns the
// messages per second received during d, and the messages lost and
// duplicated once the rest has drained.
func measureBridge(t *testing.T, pubAddr, subAddr string, d time.Duration) (rate float64, lost, dups int) {
	const window, ahead, size = 100, 1000, 64
	sub := dialRaw(t, subAddr, "bench-sub")
	sub.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "bench/#", QoS: 1}}})
	if _, err := sub.read(); err != nil {
		t.Fatal(err)
	}
	var received, highest atomic.Int64
	seen := make(map[int64]bool)
	dupCount := 0
	subDone := make(chan struct{})
	go func() {
		defer close(subDone)
		for {
			pk, err := sub.read()
			if err != nil {
				return
			}
			if p, ok := pk.(*packets.Publish); ok && len(p.Payload) >= 8 {
				n := int64(binary.BigEndian.Uint64(p.Payload))
				if seen[n] {
					dupCount++
				}
				seen[n] = true
				if p.QoS > 0 {
					sub.send(&packets.Puback{PacketID: p.PacketID})
				}
				received.Add(1)
				if n > highest.Load() {
					highest.Store(n)
				}
			}
		}
	}()
	pub := dialRaw(t, pubAddr, "bench-pub")
	acks := make(chan struct{}, window)
	go func() {
		for {
			pk, err := pub.read()
			if err != nil {
				return
			}
			if _, ok := pk.(*packets.Puback); ok {
				acks <- struct{}{}
			}
		}
	}()
	payload := make([]byte, size)
	var sent int64
	inflight := 0
	var id uint16
	start := time.Now()
	var measuredFrom int64
	warm, end := start.Add(time.Second), start.Add(time.Second+d)
	for now := start; now.Before(end); now = time.Now() {
		if measuredFrom == 0 && now.After(warm) {
			measuredFrom = received.Load()
			warm = now
		}
		for inflight >= window || sent-received.Load() >= ahead {
			select {
			case <-acks:
				inflight--
			case <-time.After(time.Millisecond):
			}
			if time.Now().After(end) {
				break
			}
		}
		for drained := false; !drained; {
			select {
			case <-acks:
				inflight--
			default:
				drained = true
			}
		}
		sent++
		id++
		if id == 0 {
			id = 1
		}
		binary.BigEndian.PutUint64(payload, uint64(sent))
		pub.send(&packets.Publish{Topic: "bench/1", QoS: 1, PacketID: id, Payload: payload})
		inflight++
	}
	got := received.Load() - measuredFrom
	rate = float64(got) / time.Since(warm).Seconds()
	deadline := time.Now().Add(10 * time.Second)
	for received.Load() < sent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	pub.close()
	sub.close()
	<-subDone
	lost = int(sent) - len(seen)
	return rate, lost, dupCount
}

func dialRaw(t testing.TB, addr, id string) *mqttConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.(*net.TCPConn).SetNoDelay(true)
	c := newMQTTConn(nc, packets.V311)
	if _, err := c.handshake(&packets.Connect{ProtocolVersion: packets.V311, ClientID: id, CleanStart: true, KeepAlive: 60}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	c.start()
	t.Cleanup(c.close)
	return c
}
