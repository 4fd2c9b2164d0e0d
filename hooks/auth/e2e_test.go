package auth_test

import (
	"os"
	"path/filepath"
	"testing"

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
			{Filter: "#", QoS: 1},         // denied: wider than the grants
			{Filter: "bob/inbox", QoS: 0}, // denied
			{Filter: "alice/+/x", QoS: 2}, // allowed: covered by alice/#
		}})
		sa, ok := alice.Recv().(*packets.Suback)
		if !ok {
			t.Fatal("expected SUBACK")
		}
		want := []packets.ReasonCode{1, v.denied, v.denied, 2}
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
