package tern_test

// Tests of the seams hooks and embedders build on: hook start and stop,
// connections over memory, disconnecting with a reason, values per client.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
	"github.com/ternmq/tern/topics"
)

// lifecycleHook records Start and Stop calls in a shared log.
type lifecycleHook struct {
	id   string
	fail error
	mu   *sync.Mutex
	log  *[]string
}

func (h *lifecycleHook) ID() string { return h.id }
func (h *lifecycleHook) Start(*tern.Server) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.log = append(*h.log, "start "+h.id)
	return h.fail
}
func (h *lifecycleHook) Stop(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.log = append(*h.log, "stop "+h.id)
	return nil
}

// Serve starts Starter hooks in order; Shutdown stops Stopper hooks in
// reverse order; a hook that fails to start stops Serve, and the hooks
// started before it are stopped.
func TestHookLifecycle(t *testing.T) {
	var mu sync.Mutex
	var log []string
	srv, err := tern.New(&tern.Options{SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv.AddHook(&lifecycleHook{id: "a", mu: &mu, log: &log})
	srv.AddHook(&lifecycleHook{id: "b", mu: &mu, log: &log})
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown(context.Background())
	if want := []string{"start a", "start b", "stop b", "stop a"}; !slices.Equal(log, want) {
		t.Fatalf("calls %v, want %v", log, want)
	}

	log = nil
	srv, _ = tern.New(&tern.Options{SysInterval: -1})
	boom := errors.New("boom")
	srv.AddHook(&lifecycleHook{id: "a", mu: &mu, log: &log})
	srv.AddHook(&lifecycleHook{id: "b", mu: &mu, log: &log, fail: boom})
	if err := srv.Serve(); !errors.Is(err, boom) {
		t.Fatalf("Serve = %v, want the hook's error", err)
	}
	if want := []string{"start a", "start b", "stop a"}; !slices.Equal(log, want) {
		t.Fatalf("calls %v, want %v", log, want)
	}
}

// DialInProcess gives a connection over memory that the broker serves as
// any client's: CONNECT, a persistent session, SUBSCRIBE and delivery.
func TestDialInProcess(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	nc, err := srv.DialInProcess()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(terntest.Timeout))
	r := bufio.NewReader(nc)
	send := func(pk packets.Packet) {
		b, _ := pk.Encode(nil, packets.V5)
		if _, err := nc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() packets.Packet {
		pk, err := packets.ReadPacket(r, packets.V5, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return pk
	}
	connect := &packets.Connect{ProtocolVersion: packets.V5, ClientID: "mem", CleanStart: true}
	connect.Properties.SessionExpiry = new(uint32(60))
	send(connect)
	if ack, ok := recv().(*packets.Connack); !ok || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %+v", ack)
	}
	send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "mem/#", QoS: 1}}})
	if _, ok := recv().(*packets.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	if ci, ok := srv.ClientInfo("mem"); !ok || ci.Listener != tern.InProcessListener {
		t.Fatalf("ClientInfo %+v %v", ci, ok)
	}
	if err := srv.Publish("mem/t", []byte("hi"), false, 1); err != nil {
		t.Fatal(err)
	}
	if m, ok := recv().(*packets.Publish); !ok || string(m.Payload) != "hi" || m.QoS != 1 {
		t.Fatalf("got %+v", m)
	}
}

// Disconnect ends a client's connection with the reason given: a v5 client
// reads it in a DISCONNECT; a code that is not a DISCONNECT reason
// [MQTT-3.14.2-1] (0x8A Banned is a CONNACK code) is sent as 0x98.
func TestDisconnectWithReason(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	for _, tc := range []struct{ code, want packets.ReasonCode }{
		{packets.MaximumConnectTime, packets.MaximumConnectTime},
		{packets.Banned, packets.AdministrativeAction},
	} {
		c := mustConnect(t, srv, packets.V5, "expired")
		if !srv.Disconnect("expired", tc.code) {
			t.Fatal("Disconnect: not connected")
		}
		expectProtocolClose(t, c, tc.want)
	}
	terntest.Eventually(t, "the connection to end", func() bool {
		_, ok := srv.ClientInfo("expired")
		return !ok
	})
	if srv.Disconnect("expired", packets.MaximumConnectTime) || srv.Disconnect("nobody", packets.MaximumConnectTime) {
		t.Fatal("Disconnect of a client not connected reported true")
	}
}

type valueKey struct{}

// A hook keeps a value per client with SetValue and finds it with Value.
type valueHook struct{ got chan any }

func (h *valueHook) ID() string { return "values" }
func (h *valueHook) OnSessionEstablished(c *tern.Client, _ bool) {
	c.SetValue(valueKey{}, "token-expiry")
}
func (h *valueHook) OnDisconnect(c *tern.Client, _ error) { h.got <- c.Value(valueKey{}) }

func TestClientValues(t *testing.T) {
	h := &valueHook{got: make(chan any, 1)}
	srv := terntest.NewServer(t, nil, h)
	c := mustConnect(t, srv, packets.V311, "values")
	c.Send(&packets.Disconnect{})
	c.ExpectClosed()
	select {
	case v := <-h.got:
		if v != "token-expiry" {
			t.Fatalf("Value = %v", v)
		}
	case <-time.After(terntest.Timeout):
		t.Fatal("no disconnect")
	}
}

// preferMember is a SharedChooser that offers every message to the member
// with a given client id, or abstains (-1) when it is not in the group.
type preferMember struct{ id string }

func (p preferMember) ID() string { return "prefer-" + p.id }
func (p preferMember) ChooseShared(_ *tern.Message, g *topics.SharedGroup) int {
	for i, sub := range g.Members {
		if sub.ClientID == p.id {
			return i
		}
	}
	return -1
}

// sharedDeliveries connects members m0, m1, m2 to $share/g/s/#, publishes
// one QoS 0 message per entry of pubs ({publisher, topic}) from raw
// publishers, and returns the member each message went to, by index.
func sharedDeliveries(t *testing.T, opts *tern.Options, pubs [][2]string, hooks ...tern.Hook) []string {
	t.Helper()
	srv := terntest.NewServer(t, opts, hooks...)
	type got struct {
		member string
		i      int
	}
	ch := make(chan got, len(pubs))
	for _, id := range []string{"m0", "m1", "m2"} {
		c := srv.Dial(t, 5)
		c.MustConnect(id)
		c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "$share/g/s/#"}}})
		if _, ok := c.Recv().(*packets.Suback); !ok {
			t.Fatal("no SUBACK")
		}
		go func() {
			for {
				pk, err := c.TryRecv(terntest.Timeout)
				if err != nil {
					return
				}
				if p, ok := pk.(*packets.Publish); ok {
					var i int
					fmt.Sscan(string(p.Payload), &i)
					ch <- got{id, i}
				}
			}
		}()
	}
	conns := map[string]*terntest.Conn{}
	for i, p := range pubs {
		c := conns[p[0]]
		if c == nil {
			c = srv.Dial(t, 5)
			c.MustConnect(p[0])
			conns[p[0]] = c
		}
		c.Send(&packets.Publish{Topic: p[1], Payload: []byte(fmt.Sprint(i))})
	}
	out := make([]string, len(pubs))
	for range pubs {
		select {
		case g := <-ch:
			out[g.i] = g.member
		case <-time.After(terntest.Timeout):
			t.Fatalf("deliveries so far %q", out)
		}
	}
	return out
}

// Each message to a $share group goes to one member [MQTT-4.8.2-2]: the
// one a SharedChooser hook names, else the one Options.SharedStrategy
// picks; hash strategies keep one topic (or one publisher) on one member.
func TestSharedChoice(t *testing.T) {
	var pubs [][2]string
	for i := 0; i < 60; i++ {
		pubs = append(pubs, [2]string{fmt.Sprintf("p%d", i%3), fmt.Sprintf("s/%d", i%4)})
	}
	// sameFor checks that messages with the same key (publisher or topic)
	// went to one member, and that more than one member was used overall.
	sameFor := func(key int) func(t *testing.T, to []string) {
		return func(t *testing.T, to []string) {
			member := map[string]string{}
			used := map[string]bool{}
			for i, m := range to {
				k := pubs[i][key]
				if prev, ok := member[k]; ok && prev != m {
					t.Fatalf("%s went to %s and %s", k, prev, m)
				}
				member[k] = m
				used[m] = true
			}
			if len(used) < 2 {
				t.Fatalf("all to %v", used)
			}
		}
	}
	spread := func(t *testing.T, to []string) {
		n := map[string]int{}
		for _, m := range to {
			n[m]++
		}
		if len(n) != 3 {
			t.Fatalf("members used %v, want all 3", n)
		}
	}
	tests := []struct {
		name     string
		strategy tern.SharedStrategy
		hooks    []tern.Hook
		check    func(t *testing.T, to []string)
	}{
		{"round robin", tern.SharedRoundRobin, nil, func(t *testing.T, to []string) {
			n := map[string]int{}
			for _, m := range to {
				n[m]++
			}
			if n["m0"] != 20 || n["m1"] != 20 || n["m2"] != 20 {
				t.Fatalf("per member %v, want 20 each", n)
			}
		}},
		{"random", tern.SharedRandom, nil, spread},
		{"hash topic", tern.SharedHashTopic, nil, sameFor(1)},
		{"hash client id", tern.SharedHashClientID, nil, sameFor(0)},
		{"hook", tern.SharedRandom, []tern.Hook{preferMember{"m1"}}, func(t *testing.T, to []string) {
			for i, m := range to {
				if m != "m1" {
					t.Fatalf("message %d went to %s, want m1", i, m)
				}
			}
		}},
		{"hook abstains", tern.SharedRoundRobin, []tern.Hook{preferMember{"nobody"}}, spread},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.check(t, sharedDeliveries(t, &tern.Options{SharedStrategy: tc.strategy}, pubs, tc.hooks...))
		})
	}
}

// A member the chooser names that is offline is passed over for the next
// online one: a chooser never sends a message to a queue while a member
// could take it now.
func TestSharedChoiceSkipsOffline(t *testing.T) {
	srv := terntest.NewServer(t, nil, preferMember{"away"})
	away := srv.Dial(t, 5)
	away.Connect(&packets.Connect{ClientID: "away", Properties: packets.Properties{SessionExpiry: packets.Uint32(60)}})
	away.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "$share/g/s/#"}}})
	away.Recv()
	away.Send(&packets.Disconnect{})
	away.ExpectClosed()
	here := srv.Dial(t, 5)
	here.MustConnect("here")
	here.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "$share/g/s/#"}}})
	here.Recv()
	terntest.Eventually(t, "away offline", func() bool { return srv.Stats().ClientsConnected == 1 })
	if err := srv.Publish("s/1", []byte("x"), false, 0); err != nil {
		t.Fatal(err)
	}
	if p, ok := here.Recv().(*packets.Publish); !ok || string(p.Payload) != "x" {
		t.Fatalf("online member got %v", p)
	}
}
