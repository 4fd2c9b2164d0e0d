package bridge

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/memory"
	"github.com/ternmq/tern/terntest"
)

// testLog is the log of the brokers and bridges under test: warnings and
// errors, or everything with TERN_BRIDGE_DEBUG=1.
func testLog() *slog.Logger {
	lv := slog.LevelWarn
	if os.Getenv("TERN_BRIDGE_DEBUG") != "" {
		lv = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
}

// broker starts an in-process broker with the node id and bridges.
func broker(t testing.TB, node string, opts *tern.Options, cfgs ...Config) (*terntest.Server, *Manager) {
	t.Helper()
	var o tern.Options
	if opts != nil {
		o = *opts
	}
	o.NodeID = node
	o.Logger = testLog()
	m, err := NewManager(o.Logger, cfgs...)
	if err != nil {
		t.Fatal(err)
	}
	srv := terntest.NewServer(t, &o, m)
	return srv, m
}

// fast returns cfg with short timeouts for tests.
func fast(cfg Config) Config {
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin = 50 * time.Millisecond
	}
	if cfg.ReconnectMax == 0 {
		cfg.ReconnectMax = 500 * time.Millisecond
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 2 * time.Second
	}
	return cfg
}

// waitConnected waits until every bridge of m is connected.
func waitConnected(t testing.TB, m *Manager) {
	t.Helper()
	terntest.Eventually(t, "the bridges to connect", func() bool {
		for _, s := range m.Status() {
			if s.State != StateConnected {
				return false
			}
		}
		return true
	})
}

// testClient is a minimal MQTT client that acknowledges what it receives.
type testClient struct {
	t    testing.TB
	c    *mqttConn
	msgs chan *packets.Publish
	mu   sync.Mutex
	acks map[uint16]chan packets.Packet
	next uint16
}

func dialClient(t testing.TB, addr, id string, v byte, clean bool, expiry uint32) *testClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testClient{t: t, c: newMQTTConn(nc, v), msgs: make(chan *packets.Publish, 1<<16), acks: make(map[uint16]chan packets.Packet)}
	cp := &packets.Connect{ProtocolVersion: v, ClientID: id, CleanStart: clean, KeepAlive: 60}
	if v == packets.V5 && expiry > 0 {
		cp.Properties.SessionExpiry = packets.Uint32(expiry)
	}
	if _, err := tc.c.handshake(cp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	tc.c.start()
	go tc.read()
	t.Cleanup(tc.c.close)
	return tc
}

func (tc *testClient) read() {
	for {
		pk, err := tc.c.read()
		if err != nil {
			close(tc.msgs)
			return
		}
		switch p := pk.(type) {
		case *packets.Publish:
			switch p.QoS {
			case 1:
				tc.c.send(&packets.Puback{PacketID: p.PacketID})
			case 2:
				tc.c.send(&packets.Pubrec{PacketID: p.PacketID})
			}
			tc.msgs <- p
		case *packets.Pubrel:
			tc.c.send(&packets.Pubcomp{PacketID: p.PacketID})
		case *packets.Pubrec:
			tc.c.send(&packets.Pubrel{PacketID: p.PacketID})
		case *packets.Puback:
			tc.done(p.PacketID, pk)
		case *packets.Pubcomp:
			tc.done(p.PacketID, pk)
		case *packets.Suback:
			tc.done(p.PacketID, pk)
		case *packets.Unsuback:
			tc.done(p.PacketID, pk)
		}
	}
}

func (tc *testClient) done(id uint16, pk packets.Packet) {
	tc.mu.Lock()
	ch := tc.acks[id]
	delete(tc.acks, id)
	tc.mu.Unlock()
	if ch != nil {
		ch <- pk
	}
}

func (tc *testClient) id() (uint16, chan packets.Packet) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for {
		tc.next++
		if tc.next == 0 {
			tc.next = 1
		}
		if _, used := tc.acks[tc.next]; !used {
			ch := make(chan packets.Packet, 1)
			tc.acks[tc.next] = ch
			return tc.next, ch
		}
	}
}

func (tc *testClient) wait(ch chan packets.Packet, what string) packets.Packet {
	tc.t.Helper()
	select {
	case pk := <-ch:
		return pk
	case <-time.After(terntest.Timeout):
		tc.t.Fatalf("no %s", what)
		return nil
	}
}

func (tc *testClient) subscribe(filter string, qos byte) {
	tc.t.Helper()
	id, ch := tc.id()
	tc.c.send(&packets.Subscribe{PacketID: id, Subscriptions: []packets.Subscription{{Filter: filter, QoS: qos}}})
	ack := tc.wait(ch, "SUBACK").(*packets.Suback)
	if ack.ReasonCodes[0].IsError() {
		tc.t.Fatalf("subscription to %s refused: %v", filter, ack.ReasonCodes[0])
	}
}

// publish publishes and, for QoS 1 and 2, waits for the acknowledgement.
func (tc *testClient) publish(topic, payload string, qos byte, retain bool) {
	tc.t.Helper()
	if qos == 0 {
		tc.c.send(&packets.Publish{Topic: topic, Payload: []byte(payload), Retain: retain})
		return
	}
	id, ch := tc.id()
	tc.c.send(&packets.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Retain: retain, PacketID: id})
	tc.wait(ch, "acknowledgement")
}

// expect returns the next n messages.
func (tc *testClient) expect(n int) []*packets.Publish {
	tc.t.Helper()
	var out []*packets.Publish
	deadline := time.After(terntest.Timeout)
	for len(out) < n {
		select {
		case p, ok := <-tc.msgs:
			if !ok {
				tc.t.Fatalf("connection closed after %d of %d messages", len(out), n)
			}
			out = append(out, p)
		case <-deadline:
			tc.t.Fatalf("received %d of %d messages: %v", len(out), n, topicsOf(out))
		}
	}
	return out
}

// expectNone checks that nothing arrives within d.
func (tc *testClient) expectNone(d time.Duration) {
	tc.t.Helper()
	select {
	case p := <-tc.msgs:
		tc.t.Fatalf("unexpected message %s %q (user properties %v)", p.Topic, p.Payload, p.Properties.User)
	case <-time.After(d):
	}
}

func topicsOf(ps []*packets.Publish) []string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s=%s", p.Topic, p.Payload))
	}
	return out
}

func newMemStore() storage.Store { return memory.New() }

func writeTestFile(t testing.TB, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
