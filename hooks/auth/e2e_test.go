package auth_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/hooks/auth"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// newSecuredServer starts a broker with a password file (alice, bob) and an
// ACL file.
func newSecuredServer(t *testing.T) *terntest.Server {
	t.Helper()
	dir := t.TempDir()
	var pw []byte
	for _, u := range []struct{ name, pw string }{{"alice", "apw"}, {"bob", "bpw"}} {
		h, err := auth.HashPassword(u.pw)
		if err != nil {
			t.Fatal(err)
		}
		pw = append(pw, u.name+":"+h+"\n"...)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pwHook, err := auth.NewPasswordFile(write("passwd", pw), auth.PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	acl, err := auth.NewACL(write("acl", []byte("user alice\ntopic readwrite alice/#\ntopic read news/#\n\nuser bob\ntopic write news/+\n")))
	if err != nil {
		t.Fatal(err)
	}
	return terntest.NewServer(t, nil, pwHook, acl)
}

func login(user, pw string) *packets.Connect {
	return &packets.Connect{ClientID: user + "-client", CleanStart: true, KeepAlive: 60,
		UsernameFlag: user != "", Username: user, PasswordFlag: pw != "", Password: []byte(pw)}
}

func TestEndToEndAuthentication(t *testing.T) {
	srv := newSecuredServer(t)
	tests := []struct {
		name    string
		version byte
		user    string
		pw      string
		want    packets.ReasonCode
	}{
		{name: "v5 right password", version: packets.V5, user: "alice", pw: "apw", want: packets.Success},
		{name: "v5 wrong password", version: packets.V5, user: "alice", pw: "bpw", want: packets.BadUserNameOrPassword},
		{name: "v5 unknown user", version: packets.V5, user: "carol", pw: "apw", want: packets.BadUserNameOrPassword},
		{name: "v5 anonymous", version: packets.V5, want: packets.BadUserNameOrPassword},
		{name: "v3 right password", version: packets.V311, user: "bob", pw: "bpw", want: packets.Success},
		{name: "v3 wrong password", version: packets.V311, user: "bob", pw: "x", want: packets.BadUserNameOrPassword},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := srv.Dial(t, tt.version)
			ack := c.Connect(login(tt.user, tt.pw))
			if ack.ReasonCode != tt.want {
				t.Errorf("CONNACK %v, want %v", ack.ReasonCode, tt.want)
			}
		})
	}
}

func TestEndToEndSubscribeACL(t *testing.T) {
	srv := newSecuredServer(t)
	for _, v := range []struct {
		version byte
		denied  packets.ReasonCode
	}{{packets.V5, 0x87}, {packets.V311, 0x80}} {
		alice := srv.Dial(t, v.version)
		if ack := alice.Connect(login("alice", "apw")); ack.ReasonCode != packets.Success {
			t.Fatalf("alice refused: %v", ack.ReasonCode)
		}
		alice.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{
			{Filter: "news/#", QoS: 1},    // allowed
			{Filter: "#", QoS: 1},         // allowed: overlaps the grants, the rest is filtered per message
			{Filter: "bob/inbox", QoS: 0}, // denied
			{Filter: "alice/+/x", QoS: 2}, // allowed: covered by alice/#
		}})
		sa, ok := alice.Recv().(*packets.Suback)
		if !ok {
			t.Fatal("expected SUBACK")
		}
		want := []packets.ReasonCode{1, 1, v.denied, 2}
		if len(sa.ReasonCodes) != len(want) {
			t.Fatalf("v%d SUBACK codes %v, want %v", v.version, sa.ReasonCodes, want)
		}
		for i := range want {
			if sa.ReasonCodes[i] != want[i] {
				t.Errorf("v%d SUBACK codes %v, want %v", v.version, sa.ReasonCodes, want)
				break
			}
		}

		// bob may publish to news/+, which alice receives; not to alice/....
		bob := srv.Dial(t, packets.V5)
		if ack := bob.Connect(login("bob", "bpw")); ack.ReasonCode != packets.Success {
			t.Fatalf("bob refused: %v", ack.ReasonCode)
		}
		bob.Send(&packets.Publish{Topic: "alice/x/x", QoS: 1, PacketID: 1, Payload: []byte("no")})
		if ack, ok := bob.Recv().(*packets.Puback); !ok || ack.ReasonCode != packets.NotAuthorized {
			t.Fatalf("denied publish: got %#v, want PUBACK 0x87", ack)
		}
		bob.Send(&packets.Publish{Topic: "news/today", QoS: 1, PacketID: 2, Payload: []byte("yes")})
		if ack, ok := bob.Recv().(*packets.Puback); !ok || ack.ReasonCode.IsError() {
			t.Fatalf("allowed publish: got %#v", ack)
		}
		got, ok := alice.Recv().(*packets.Publish)
		if !ok || got.Topic != "news/today" || string(got.Payload) != "yes" {
			t.Fatalf("alice received %#v, want news/today", got)
		}
		if got.QoS == 1 {
			alice.Send(&packets.Puback{PacketID: got.PacketID})
		}
		alice.Close()
		bob.Close()
	}
}

// newPartialDenyServer starts a broker whose ACL lets "sub" and "other"
// read a/#, denies a/secret to "sub" and lets "pub" write a/#. There is
// no authenticator: the user name of the CONNECT is taken as it is.
func newPartialDenyServer(t *testing.T) *terntest.Server {
	t.Helper()
	rules, err := auth.ParseACL(strings.NewReader(
		"user sub\ntopic read a/#\ntopic deny a/secret\n\nuser other\ntopic read a/#\n\nuser pub\ntopic write a/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	return terntest.NewServer(t, nil, auth.NewACLFromRules(rules))
}

// connectAs connects a v5 client with the user name and no password.
func connectAs(t *testing.T, srv *terntest.Server, user string) *terntest.Conn {
	t.Helper()
	c := srv.Dial(t, packets.V5)
	if ack := c.Connect(login(user, "")); ack.ReasonCode != packets.Success {
		t.Fatalf("%s refused: %v", user, ack.ReasonCode)
	}
	return c
}

func subscribeOK(t *testing.T, c *terntest.Conn, filter string) {
	t.Helper()
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: 1}}})
	sa, ok := c.Recv().(*packets.Suback)
	if !ok || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK to %q: %#v, want QoS 1 granted", filter, sa)
	}
}

func publishOK(t *testing.T, c *terntest.Conn, id uint16, topic string, retain bool) {
	t.Helper()
	c.Send(&packets.Publish{Topic: topic, QoS: 1, PacketID: id, Retain: retain, Payload: []byte(topic)})
	if ack, ok := c.Recv().(*packets.Puback); !ok || ack.ReasonCode.IsError() {
		t.Fatalf("publish to %q: got %#v", topic, ack)
	}
}

// expectOnly reads the next PUBLISH, which must be on topic, and then
// checks that nothing else arrives for a while.
func expectOnly(t *testing.T, c *terntest.Conn, topic string) {
	t.Helper()
	got, ok := c.Recv().(*packets.Publish)
	if !ok || got.Topic != topic {
		t.Fatalf("received %#v, want a PUBLISH on %q", got, topic)
	}
	c.Send(&packets.Puback{PacketID: got.PacketID})
	if pk, err := c.TryRecv(200 * time.Millisecond); err == nil {
		t.Fatalf("received %#v, want nothing more", pk)
	}
}

// TestEndToEndDeliverACL: a subscription to a/# is allowed despite
// "deny a/secret", and the denied topic is filtered out per message.
func TestEndToEndDeliverACL(t *testing.T) {
	srv := newPartialDenyServer(t)
	sub := connectAs(t, srv, "sub")
	subscribeOK(t, sub, "a/#")
	sub.Send(&packets.Subscribe{PacketID: 2, Subscriptions: []packets.Subscription{{Filter: "a/secret", QoS: 1}}})
	if sa, ok := sub.Recv().(*packets.Suback); !ok || sa.ReasonCodes[0] != packets.NotAuthorized {
		t.Fatalf("SUBACK to a/secret: %#v, want 0x87", sa)
	}

	pub := connectAs(t, srv, "pub")
	publishOK(t, pub, 1, "a/secret", false) // routed (and refused for sub) before the PUBACK
	publishOK(t, pub, 2, "a/x", false)
	expectOnly(t, sub, "a/x") // a/secret came first: it was skipped, not delayed
	if n := srv.Stats().DeliveriesDenied; n != 1 {
		t.Errorf("DeliveriesDenied = %d, want 1", n)
	}
}

// TestEndToEndDeliverACLRetained: retained messages sent on SUBSCRIBE are
// filtered the same way.
func TestEndToEndDeliverACLRetained(t *testing.T) {
	srv := newPartialDenyServer(t)
	pub := connectAs(t, srv, "pub")
	publishOK(t, pub, 1, "a/secret", true)
	publishOK(t, pub, 2, "a/x", true)
	sub := connectAs(t, srv, "sub")
	subscribeOK(t, sub, "a/#")
	expectOnly(t, sub, "a/x")
	if n := srv.Stats().DeliveriesDenied; n != 1 {
		t.Errorf("DeliveriesDenied = %d, want 1", n)
	}
}

// TestEndToEndDeliverACLShared: in a shared group, a member the message is
// denied to is passed over for one it is allowed to.
func TestEndToEndDeliverACLShared(t *testing.T) {
	srv := newPartialDenyServer(t)
	sub := connectAs(t, srv, "sub")
	subscribeOK(t, sub, "$share/g/a/#")
	other := connectAs(t, srv, "other")
	subscribeOK(t, other, "$share/g/a/#")
	pub := connectAs(t, srv, "pub")
	const n = 4
	for i := uint16(1); i <= n; i++ {
		publishOK(t, pub, i, "a/secret", false)
	}
	for i := 0; i < n; i++ {
		got, ok := other.Recv().(*packets.Publish)
		if !ok || got.Topic != "a/secret" {
			t.Fatalf("other received %#v, want a/secret", got)
		}
		other.Send(&packets.Puback{PacketID: got.PacketID})
	}
	if pk, err := sub.TryRecv(200 * time.Millisecond); err == nil {
		t.Fatalf("sub received %#v, want nothing", pk)
	}
	if n := srv.Stats().DeliveriesDenied; n != 0 {
		t.Errorf("DeliveriesDenied = %d, want 0 (another member took every message)", n)
	}
}

// A connection made in the process (DialInProcess: a bridge's local side)
// without a user name is trusted: it connects, subscribes to "#" and
// publishes anywhere. With a user name it is checked as that user.
func TestEndToEndInProcessTrusted(t *testing.T) {
	srv := newSecuredServer(t)
	dial := func(cp *packets.Connect) (*bufio.Reader, func(packets.Packet), packets.ReasonCode) {
		nc, err := srv.DialInProcess()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetDeadline(time.Now().Add(terntest.Timeout))
		r := bufio.NewReader(nc)
		send := func(pk packets.Packet) {
			b, _ := pk.Encode(nil, packets.V5)
			nc.Write(b)
		}
		cp.ProtocolVersion = packets.V5
		send(cp)
		pk, err := packets.ReadPacket(r, packets.V5, 0)
		if err != nil {
			t.Fatal(err)
		}
		return r, send, pk.(*packets.Connack).ReasonCode
	}
	r, send, code := dial(&packets.Connect{ClientID: "$bridge/x", CleanStart: true})
	if code != packets.Success {
		t.Fatalf("in-process connection refused: %v", code)
	}
	send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "#", QoS: 1}}})
	pk, _ := packets.ReadPacket(r, packets.V5, 0)
	if ack, ok := pk.(*packets.Suback); !ok || ack.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %+v", pk)
	}
	send(&packets.Publish{Topic: "secret/x", QoS: 1, PacketID: 2, Payload: []byte("p")})
	for range 2 { // its PUBACK and its own message
		pk, err := packets.ReadPacket(r, packets.V5, 0)
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := pk.(*packets.Puback); ok && a.ReasonCode.IsError() {
			t.Fatalf("publish refused: %v", a.ReasonCode)
		}
	}
	if _, _, code := dial(&packets.Connect{ClientID: "as-bob", CleanStart: true, UsernameFlag: true, Username: "bob",
		PasswordFlag: true, Password: []byte("wrong")}); code != packets.BadUserNameOrPassword {
		t.Fatalf("in-process connection with a wrong password: %v", code)
	}
}
