package jwt

// End-to-end tests: a broker with the hook, raw MQTT clients over TCP.

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/auth"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// denyAll is an ACL file that allows nothing to anyone, so whatever a
// client may do comes from its token.
func denyAll(t *testing.T) *auth.ACL {
	rules, err := auth.ParseACL(strings.NewReader("user nobody\ntopic nothing\n"))
	if err != nil {
		t.Fatal(err)
	}
	return auth.NewACLFromRules(rules)
}

func newBroker(t *testing.T, h *Hook, more ...tern.Hook) *terntest.Server {
	return terntest.NewServer(t, &tern.Options{Logger: discard}, append([]tern.Hook{h}, more...)...)
}

func dial(t *testing.T, srv *terntest.Server, v byte, clientID, token string, change func(*packets.Connect)) (*terntest.Conn, *packets.Connack) {
	t.Helper()
	c := srv.Dial(t, v)
	pk := &packets.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 60, PasswordFlag: token != "", Password: []byte(token)}
	if v == packets.V311 {
		pk.UsernameFlag, pk.Username = true, "device" // 3.1.1 allows a password only with a user name
	}
	if change != nil {
		change(pk)
	}
	return c, c.Connect(pk)
}

func TestEndToEndConnack(t *testing.T) {
	keys := testKeys()
	h := newHook(t, newJWKSServer(t, keys...), nil)
	srv := newBroker(t, h)
	expired := claims("dev1")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	for _, tc := range []struct {
		name  string
		v     byte
		token string
		want  packets.ReasonCode
		v3    byte
	}{
		{"valid v5", packets.V5, keys[0].mint(t, claims("dev1")), packets.Success, 0},
		{"valid v3", packets.V311, keys[2].mint(t, claims("dev1")), packets.Success, 0},
		{"expired v5", packets.V5, keys[1].mint(t, expired), packets.BadUserNameOrPassword, 0},
		{"expired v3", packets.V311, keys[1].mint(t, expired), packets.BadUserNameOrPassword, packets.ConnRefusedBadAuth},
		{"alg none v5", packets.V5, unsigned(claims("dev1")), packets.BadUserNameOrPassword, 0},
		{"other client v5", packets.V5, keys[0].mint(t, claims("dev2")), packets.NotAuthorized, 0},
		{"other client v3", packets.V311, keys[0].mint(t, claims("dev2")), packets.NotAuthorized, packets.ConnRefusedNotAuth},
		{"no token", packets.V5, "", packets.BadUserNameOrPassword, 0}, // every authenticator abstained
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ack := dial(t, srv, tc.v, "dev1", tc.token, nil)
			if ack.ReasonCode != tc.want {
				t.Errorf("CONNACK %v, want %v", ack.ReasonCode, tc.want)
			}
			if tc.v == packets.V311 && tc.want != packets.Success {
				if got := packets.ConnackCodeV3(ack.ReasonCode); got != tc.v3 {
					t.Errorf("3.1.1 return code %d, want %d", got, tc.v3)
				}
			}
			c.Close()
		})
	}
}

// The acl claim allows and denies publishes, subscriptions and deliveries,
// before an ACL file that would deny everything.
func TestEndToEndACLClaim(t *testing.T) {
	keys := testKeys()
	h := newHook(t, newJWKSServer(t, keys...), nil)
	srv := newBroker(t, h, denyAll(t))
	cl := claims("dev1")
	cl["acl"] = []any{
		map[string]any{"permission": "allow", "action": "publish", "topic": "dev/${clientid}/up"},
		map[string]any{"permission": "deny", "action": "subscribe", "topic": "dev/${clientid}/down/secret"},
		map[string]any{"permission": "allow", "action": "subscribe", "topic": "dev/${clientid}/down/#"},
		map[string]any{"permission": "deny", "action": "publish", "topic": "dev/${clientid}/up", "qos": []int{2}},
	}
	c, ack := dial(t, srv, packets.V5, "dev1", keys[1].mint(t, cl), nil)
	if ack.ReasonCode != packets.Success {
		t.Fatalf("CONNACK %v", ack.ReasonCode)
	}
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{
		{Filter: "dev/dev1/down/#", QoS: 1}, {Filter: "dev/dev2/down/#", QoS: 1}, {Filter: "dev/dev1/down/secret", QoS: 1}}})
	sa := c.Recv().(*packets.Suback)
	if want := []packets.ReasonCode{1, packets.NotAuthorized, packets.NotAuthorized}; !equalCodes(sa.ReasonCodes, want) {
		t.Fatalf("SUBACK %v, want %v", sa.ReasonCodes, want)
	}
	for _, p := range []struct {
		topic string
		qos   byte
		want  packets.ReasonCode
	}{
		{"dev/dev1/up", 1, packets.NoMatchingSubscribers}, // allowed, nobody listening
		{"dev/dev2/up", 1, packets.NotAuthorized},         // no rule: the ACL file denies
		{"dev/dev1/up", 2, packets.NoMatchingSubscribers}, // the allow rule comes first
	} {
		c.Send(&packets.Publish{Topic: p.topic, QoS: p.qos, PacketID: 7, Payload: []byte("x")})
		var code packets.ReasonCode
		switch a := c.Recv().(type) {
		case *packets.Puback:
			code = a.ReasonCode
		case *packets.Pubrec:
			code = a.ReasonCode
			if !code.IsError() {
				c.Send(&packets.Pubrel{PacketID: 7})
				c.Recv() // PUBCOMP
			}
		}
		if code != p.want {
			t.Errorf("publish %s QoS %d: %v, want %v", p.topic, p.qos, code, p.want)
		}
	}
	// Deliveries: the deny rule filters what the wide subscription would
	// bring.
	for _, topic := range []string{"dev/dev1/down/secret", "dev/dev1/down/a"} {
		if err := srv.Publish(topic, []byte(topic), false, 0); err != nil {
			t.Fatal(err)
		}
	}
	if m := c.Recv().(*packets.Publish); m.Topic != "dev/dev1/down/a" {
		t.Fatalf("delivered %s, want only dev/dev1/down/a", m.Topic)
	}
	if denied := srv.Stats().DeliveriesDenied; denied != 1 {
		t.Errorf("DeliveriesDenied = %d, want 1", denied)
	}
}

func equalCodes(a, b []packets.ReasonCode) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// willWatch collects will messages through the in-process client.
type willWatch struct {
	mu   sync.Mutex
	got  []string
	seen chan struct{}
}

func watchWills(t *testing.T, srv *terntest.Server) *willWatch {
	w := &willWatch{seen: make(chan struct{}, 10)}
	if err := srv.Subscribe("wills/#", 1, func(m *tern.Message) {
		w.mu.Lock()
		w.got = append(w.got, string(m.Payload))
		w.mu.Unlock()
		w.seen <- struct{}{}
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

// At expiry a v5 client gets DISCONNECT 0xA0 within a second, and its will
// is published; a 3.1.1 client's connection is closed.
func TestEndToEndExpiry(t *testing.T) {
	keys := testKeys()
	h := newHook(t, newJWKSServer(t, keys...), nil)
	srv := newBroker(t, h)
	wills := watchWills(t, srv)
	for _, v := range []byte{packets.V5, packets.V311} {
		cl := claims("dev1")
		exp := time.Now().Add(1500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
		cl["exp"] = exp.Unix()
		c, ack := dial(t, srv, v, "dev1", keys[1].mint(t, cl), func(pk *packets.Connect) {
			pk.Will = &packets.Will{Topic: "wills/dev1", Payload: []byte("gone"), QoS: 1}
		})
		if ack.ReasonCode != packets.Success {
			t.Fatalf("v%d CONNACK %v", v, ack.ReasonCode)
		}
		got := c.ExpectClosed()
		late := time.Since(exp)
		c.Close() // as a client does on DISCONNECT: the server stops draining
		if late < 0 || late > time.Second {
			t.Errorf("v%d disconnected %v after exp, want within 1s", v, late)
		}
		if v == packets.V5 {
			if len(got) != 1 || got[0].(*packets.Disconnect).ReasonCode != packets.MaximumConnectTime {
				t.Fatalf("v5 got %+v before close, want DISCONNECT 0xA0", got)
			}
		} else if len(got) != 0 {
			t.Fatalf("v3 got %+v before close", got)
		}
		select {
		case <-wills.seen:
		case <-time.After(terntest.Timeout):
			t.Fatalf("v%d: no will", v)
		}
	}
	if n := h.ExpiredDisconnects(); n != 2 {
		t.Errorf("ExpiredDisconnects = %d, want 2", n)
	}
}

// A v5 client that connected with the method JWT renews its token with
// AUTH and stays connected past the first token's exp; a token that does
// not verify on renewal ends the connection with 0x87.
func TestEndToEndReauth(t *testing.T) {
	keys := testKeys()
	h := newHook(t, newJWKSServer(t, keys...), func(o *Options) { o.UsernameClaim = "sub" })
	srv := newBroker(t, h)
	short := claims("dev1")
	exp := time.Now().Add(1500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	short["exp"] = exp.Unix()
	c, ack := dial(t, srv, packets.V5, "dev1", "", func(pk *packets.Connect) {
		pk.Properties.AuthMethod = "JWT"
		pk.Properties.AuthData = []byte(keys[0].mint(t, short))
	})
	if ack.ReasonCode != packets.Success || ack.Properties.AuthMethod != "JWT" {
		t.Fatalf("CONNACK %v %q", ack.ReasonCode, ack.Properties.AuthMethod)
	}
	if ci, _ := srv.ClientInfo("dev1"); ci.Username != "user-dev1" {
		t.Fatalf("user name %q, want the sub claim", ci.Username)
	}
	auth := func(token string) {
		a := &packets.Auth{ReasonCode: packets.ReAuthenticate}
		a.Properties.AuthMethod, a.Properties.AuthData = "JWT", []byte(token)
		c.Send(a)
	}
	auth(keys[1].mint(t, claims("dev1")))
	if a, ok := c.Recv().(*packets.Auth); !ok || a.ReasonCode != packets.Success {
		t.Fatalf("re-authentication answered %+v", a)
	}
	time.Sleep(time.Until(exp) + 500*time.Millisecond)
	c.Send(&packets.Pingreq{})
	if _, ok := c.Recv().(*packets.Pingresp); !ok {
		t.Fatal("no PINGRESP after the first token's exp")
	}
	if h.ExpiredDisconnects() != 0 {
		t.Fatal("a renewed client was disconnected")
	}
	// A token of another user, then an expired one: 0x87.
	other := claims("dev1")
	other["sub"] = "mallory"
	auth(keys[1].mint(t, other))
	got := c.ExpectClosed()
	if len(got) != 1 || got[0].(*packets.Disconnect).ReasonCode != packets.NotAuthorized {
		t.Fatalf("renewal as another user: %+v, want DISCONNECT 0x87", got)
	}
}

// A renewed token moves the deadline: the client is disconnected at the
// new exp, not the old.
func TestEndToEndReauthMovesDeadline(t *testing.T) {
	keys := testKeys()
	h := newHook(t, newJWKSServer(t, keys...), nil)
	srv := newBroker(t, h)
	mint := func(d time.Duration) (string, time.Time) {
		cl := claims("dev1")
		exp := time.Now().Add(d).Truncate(time.Second).Add(time.Second)
		cl["exp"] = exp.Unix()
		return keys[2].mint(t, cl), exp
	}
	first, _ := mint(time.Hour)
	c, ack := dial(t, srv, packets.V5, "dev1", "", func(pk *packets.Connect) {
		pk.Properties.AuthMethod, pk.Properties.AuthData = "JWT", []byte(first)
	})
	if ack.ReasonCode != packets.Success {
		t.Fatalf("CONNACK %v", ack.ReasonCode)
	}
	second, exp := mint(1500 * time.Millisecond)
	a := &packets.Auth{ReasonCode: packets.ReAuthenticate}
	a.Properties.AuthMethod, a.Properties.AuthData = "JWT", []byte(second)
	c.Send(a)
	c.Recv() // AUTH 0x00
	got := c.ExpectClosed()
	if late := time.Since(exp); late < 0 || late > time.Second {
		t.Errorf("disconnected %v after the renewed token's exp", late)
	}
	if len(got) != 1 || got[0].(*packets.Disconnect).ReasonCode != packets.MaximumConnectTime {
		t.Fatalf("got %+v, want DISCONNECT 0xA0", got)
	}
}
