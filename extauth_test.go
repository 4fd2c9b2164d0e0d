package tern_test

// Tests of the seams for external authentication: connect gates, the
// refusal code an authenticator chooses, authorizers given the QoS and
// retain flag, and a client's own Disconnect.

import (
	"sync"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// gate refuses the client ids it lists with their code, and counts what it
// sees.
type gate struct {
	refuse map[string]packets.ReasonCode
	mu     sync.Mutex
	seen   []string
}

func (g *gate) ID() string { return "gate" }
func (g *gate) CheckConnect(c *tern.Client, pk *packets.Connect) packets.ReasonCode {
	g.mu.Lock()
	g.seen = append(g.seen, pk.ClientID)
	g.mu.Unlock()
	if code, ok := g.refuse[pk.ClientID]; ok {
		return code
	}
	return packets.Success
}

// enhanced accepts the method "M" with the data "ok".
type enhanced struct{}

func (enhanced) ID() string                       { return "enhanced" }
func (enhanced) SupportsAuthMethod(m string) bool { return m == "M" }
func (enhanced) EnhancedAuth(_ *tern.Client, _ string, data []byte, _ bool) tern.AuthResult {
	if string(data) == "ok" {
		return tern.AuthResult{}
	}
	return tern.AuthResult{Code: packets.BadUserNameOrPassword}
}

// refuser denies every client, with the code its user name names.
type refuser struct{}

func (refuser) ID() string { return "refuser" }
func (refuser) Authenticate(c *tern.Client, pk *packets.Connect) tern.Decision {
	switch pk.Username {
	case "allow":
		return tern.Allow
	case "unavailable":
		c.RefuseWith(packets.ServerUnavailable)
	case "notauth":
		c.RefuseWith(packets.NotAuthorized)
	case "bogus":
		c.RefuseWith(packets.Success) // ignored: not an error code
	}
	return tern.Deny
}

// A gate refuses with its code before any authenticator runs, for plain
// and enhanced authentication alike; v3 clients get the 3.1.1 code.
func TestConnectGate(t *testing.T) {
	g := &gate{refuse: map[string]packets.ReasonCode{"banned": packets.Banned, "rate": packets.ConnectionRateExceeded}}
	srv := terntest.NewServer(t, nil, g, enhanced{}, refuser{})
	connect := func(v byte, id, user string, method string) *packets.Connack {
		c := srv.Dial(t, v)
		pk := &packets.Connect{ClientID: id, CleanStart: true, UsernameFlag: user != "", Username: user}
		if method != "" {
			pk.Properties.AuthMethod, pk.Properties.AuthData = method, []byte("ok")
		}
		return c.Connect(pk)
	}
	for _, tc := range []struct {
		v              byte
		id, user, meth string
		want           packets.ReasonCode
	}{
		{packets.V5, "banned", "allow", "", packets.Banned},
		{packets.V5, "banned", "", "M", packets.Banned},
		{packets.V311, "banned", "allow", "", packets.NotAuthorized}, // 3.1.1 return code 5
		{packets.V5, "fine", "allow", "", packets.Success},
		{packets.V5, "fine2", "", "M", packets.Success},
		{packets.V5, "x1", "unavailable", "", packets.ServerUnavailable},
		{packets.V311, "x2", "unavailable", "", packets.ServerUnavailable}, // 3.1.1 return code 3
		{packets.V5, "x3", "notauth", "", packets.NotAuthorized},
		{packets.V5, "x4", "bogus", "", packets.BadUserNameOrPassword},
		{packets.V5, "x5", "nobody", "", packets.BadUserNameOrPassword},
	} {
		if ack := connect(tc.v, tc.id, tc.user, tc.meth); ack.ReasonCode != tc.want {
			t.Errorf("v%d %s/%s/%s: CONNACK %v, want %v", tc.v, tc.id, tc.user, tc.meth, ack.ReasonCode, tc.want)
		}
	}
	// A code a v3 client has no return code for closes the connection.
	c := srv.Dial(t, packets.V311)
	c.Send(&packets.Connect{ProtocolVersion: packets.V311, ClientID: "rate", CleanStart: true})
	if got := c.ExpectClosed(); len(got) != 0 {
		t.Fatalf("v3 refusal without a return code sent %+v", got)
	}
}

// requests records what a RequestAuthorizer is asked.
type requests struct {
	mu  sync.Mutex
	got []tern.AccessRequest
}

func (r *requests) ID() string { return "requests" }
func (r *requests) Authorize(*tern.Client, string, tern.Access) tern.Decision {
	panic("Authorize called on a RequestAuthorizer")
}
func (r *requests) AuthorizeRequest(c *tern.Client, req tern.AccessRequest) tern.Decision {
	if c.IsInline() {
		return tern.Abstain
	}
	r.mu.Lock()
	r.got = append(r.got, req)
	r.mu.Unlock()
	if req.QoS == 2 && req.Access == tern.Write {
		return tern.Deny
	}
	return tern.Abstain
}

func (r *requests) take() []tern.AccessRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.got
	r.got = nil
	return out
}

// A RequestAuthorizer is given the QoS and retain flag of publishes,
// subscriptions and deliveries.
func TestRequestAuthorizer(t *testing.T) {
	ra := &requests{}
	srv := terntest.NewServer(t, nil, ra)
	c := mustConnect(t, srv, packets.V5, "ra")
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t/#", QoS: 1}}})
	recvAs[*packets.Suback](t, c)
	if got := ra.take(); len(got) != 1 || got[0] != (tern.AccessRequest{Topic: "t/#", Access: tern.Read, QoS: 1}) {
		t.Fatalf("subscribe asked %+v", got)
	}
	c.Send(&packets.Publish{Topic: "t/a", QoS: 1, PacketID: 2, Retain: true, Payload: []byte("x")})
	var acked, delivered bool
	for !acked || !delivered {
		switch p := c.Recv().(type) {
		case *packets.Puback:
			acked = true
		case *packets.Publish:
			delivered = true
			c.Send(&packets.Puback{PacketID: p.PacketID})
		}
	}
	want := []tern.AccessRequest{{Topic: "t/a", Access: tern.Write, QoS: 1, Retain: true}, {Topic: "t/a", Access: tern.Deliver, QoS: 1, Retain: true}}
	if got := ra.take(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("publish asked %+v, want %+v", got, want)
	}
	c.Send(&packets.Publish{Topic: "t/b", QoS: 2, PacketID: 3})
	if rec := recvAs[*packets.Pubrec](t, c); rec.ReasonCode != packets.NotAuthorized {
		t.Fatalf("QoS 2 publish: PUBREC %v, want 0x87", rec.ReasonCode)
	}
	srv.DeleteRetained("t/a")
}

// valueHook2 keeps each established client, to disconnect it later.
type keepClients struct {
	mu sync.Mutex
	m  map[string]*tern.Client
}

func (k *keepClients) ID() string { return "keep" }
func (k *keepClients) OnSessionEstablished(c *tern.Client, _ bool) {
	k.mu.Lock()
	k.m[c.ID()] = c
	k.mu.Unlock()
}

// Client.Disconnect ends that connection only, not the one that took its
// client identifier over.
func TestClientDisconnect(t *testing.T) {
	k := &keepClients{m: make(map[string]*tern.Client)}
	srv := terntest.NewServer(t, nil, k)
	c1 := mustConnect(t, srv, packets.V5, "same")
	get := func() *tern.Client {
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.m["same"]
	}
	// OnSessionEstablished may run just after the CONNACK is written.
	terntest.Eventually(t, "the first client established", func() bool { return get() != nil })
	old := get()
	c2 := srv.Dial(t, packets.V5)
	c2.Connect(&packets.Connect{ClientID: "same", CleanStart: false})
	expectProtocolClose(t, c1, packets.SessionTakenOver)
	if old.Disconnect(packets.MaximumConnectTime) {
		t.Fatal("Disconnect of a connection taken over reported true")
	}
	terntest.Eventually(t, "the new client established", func() bool { return get() != old })
	cur := get()
	if !cur.Disconnect(packets.MaximumConnectTime) {
		t.Fatal("Disconnect of the connected client reported false")
	}
	expectProtocolClose(t, c2, packets.MaximumConnectTime)
	if cur.Disconnect(packets.MaximumConnectTime) {
		t.Fatal("second Disconnect reported true")
	}
}
