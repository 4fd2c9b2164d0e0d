package tern_test

// Tests of the seams hooks and embedders build on: hook start and stop,
// connections over memory, disconnecting with a reason, values per client.

import (
	"bufio"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
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
