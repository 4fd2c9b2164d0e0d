package ban

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

var discard = slog.New(slog.DiscardHandler)

func open(t *testing.T, file string, f FlappingOptions) *List {
	t.Helper()
	l, err := New(Options{File: file, Flapping: f, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLookup(t *testing.T) {
	l := open(t, "", FlappingOptions{})
	for _, b := range []Ban{
		{As: ClientID, Who: "dev1"},
		{As: Username, Who: "mallory"},
		{As: Address, Who: "192.0.2.7"},
		{As: Address, Who: "198.51.100.77/24"}, // stored masked
		{As: Address, Who: "2001:db8::/32"},
	} {
		if _, err := l.Add(b); err != nil {
			t.Fatal(err)
		}
	}
	goneUntil := time.Now().Add(300 * time.Millisecond)
	if _, err := l.Add(Ban{As: ClientID, Who: "gone", Until: goneUntil}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, user, addr string
		want           bool
	}{
		{"dev1", "", "", true},
		{"dev2", "", "", false},
		{"x", "mallory", "", true},
		{"x", "", "192.0.2.7:5000", true},
		{"x", "", "[::ffff:192.0.2.7]:5000", true}, // IPv4 in IPv6
		{"x", "", "192.0.2.8:5000", false},
		{"x", "", "198.51.100.1:1", true},
		{"x", "", "198.51.101.1:1", false},
		{"x", "", "[2001:db8::1]:1883", true},
		{"x", "", "[2001:db9::1]:1883", false},
		{"x", "", "pipe", false},
		{"gone", "", "", true},
	} {
		if _, got := l.Lookup(tc.id, tc.user, tc.addr); got != tc.want {
			t.Errorf("Lookup(%q, %q, %q) = %v, want %v", tc.id, tc.user, tc.addr, got, tc.want)
		}
	}
	if bs := l.List(); len(bs) != 6 || !listed(bs, Address, "198.51.100.0/24") {
		t.Errorf("List = %+v", bs)
	}
	time.Sleep(time.Until(goneUntil) + 10*time.Millisecond)
	if _, banned := l.Lookup("gone", "", ""); banned {
		t.Error("expired ban still in force")
	}
	if l.Len() != 5 {
		t.Errorf("Len = %d after an expiry", l.Len())
	}
	if ok, err := l.Delete(Address, "198.51.100.0/24"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, banned := l.Lookup("x", "", "198.51.100.1:1"); banned {
		t.Error("deleted range still banned")
	}
	for _, bad := range []Ban{{As: ClientID}, {As: "ip6", Who: "x"}, {As: Address, Who: "300.1.1.1"}, {As: Address, Who: "10.0.0.0/33"},
		{As: ClientID, Who: "x", Until: time.Now().Add(-time.Second)}} {
		if _, err := l.Add(bad); err == nil {
			t.Errorf("Add(%+v) accepted", bad)
		}
	}
}

// Bans survive a restart; the file is JSON; a second process cannot open
// it while the first holds it.
func TestDurable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "data", "bans.json")
	l, err := New(Options{File: file, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Add(Ban{As: Username, Who: "mallory", Reason: "abuse", By: "admin"}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Add(Ban{As: Address, Who: "10.1.2.3", Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{File: file, Logger: discard}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	l.Stop(context.Background())

	var f fileForm
	data, _ := os.ReadFile(file)
	if err := json.Unmarshal(data, &f); err != nil || len(f.Bans) != 2 || f.Bans[0].Who != "mallory" || f.Bans[0].Reason != "abuse" {
		t.Fatalf("file %s: %v", data, err)
	}
	if matches, _ := filepath.Glob(file + ".tmp*"); len(matches) != 0 {
		t.Errorf("temporary files left: %v", matches)
	}
	l2 := open(t, file, FlappingOptions{})
	if _, ok := l2.Lookup("x", "mallory", ""); !ok {
		t.Error("user name ban lost in the restart")
	}
	if b, ok := l2.Lookup("x", "", "10.1.2.3:9"); !ok || b.Until.IsZero() {
		t.Errorf("address ban after restart: %+v %v", b, ok)
	}
	// A broken file leaves the list in force and says why.
	os.WriteFile(file, []byte("{nope"), 0o600)
	if err := l2.Reload(); err == nil {
		t.Error("Reload of a broken file succeeded")
	}
	if l2.Len() != 2 {
		t.Error("a failed Reload changed the list")
	}
}

func newServer(t *testing.T, l *List, more ...tern.Hook) *terntest.Server {
	return terntest.NewServer(t, &tern.Options{Logger: discard}, append([]tern.Hook{l}, more...)...)
}

func connect(t *testing.T, srv *terntest.Server, v byte, id, user string) (*terntest.Conn, packets.ReasonCode) {
	t.Helper()
	c := srv.Dial(t, v)
	ack := c.Connect(&packets.Connect{ClientID: id, CleanStart: true, KeepAlive: 60, UsernameFlag: user != "", Username: user})
	return c, ack.ReasonCode
}

// A banned client gets CONNACK 0x8A (3.1.1: 5); banning a connected
// client disconnects it (v5: 0x98, since 0x8A is no DISCONNECT code).
func TestEndToEnd(t *testing.T) {
	l := open(t, "", FlappingOptions{})
	srv := newServer(t, l)
	v5, code := connect(t, srv, packets.V5, "dev1", "")
	if code != packets.Success {
		t.Fatal(code)
	}
	v3, _ := connect(t, srv, packets.V311, "dev3", "bob")
	l.Add(Ban{As: ClientID, Who: "dev1"})
	got := v5.ExpectClosed()
	v5.Close()
	if len(got) != 1 || got[0].(*packets.Disconnect).ReasonCode != packets.AdministrativeAction {
		t.Fatalf("banned v5 client got %+v, want DISCONNECT 0x98", got)
	}
	l.Add(Ban{As: Username, Who: "bob"})
	if got := v3.ExpectClosed(); len(got) != 0 {
		t.Fatalf("banned v3 client got %+v", got)
	}
	v3.Close()
	if _, code := connect(t, srv, packets.V5, "dev1", ""); code != packets.Banned {
		t.Errorf("v5 CONNACK %v, want 0x8A", code)
	}
	c, code := connect(t, srv, packets.V311, "dev1", "")
	if code != packets.NotAuthorized { // as 3.1.1 return code 5 decodes
		t.Errorf("v3 CONNACK %v, want return code 5", code)
	}
	c.Close()
	if _, code := connect(t, srv, packets.V5, "other", "bob"); code != packets.Banned {
		t.Errorf("user name ban: %v", code)
	}
	l.Add(Ban{As: Address, Who: "127.0.0.0/8"})
	if _, code := connect(t, srv, packets.V5, "anyone", ""); code != packets.Banned {
		t.Errorf("address ban: %v", code)
	}
	l.Delete(Address, "127.0.0.0/8")
	if _, code := connect(t, srv, packets.V5, "anyone", ""); code != packets.Success {
		t.Errorf("after the ban is lifted: %v", code)
	}
	if s := l.Stats(); s.Kicked != 2 || s.RefusedByKind != [3]int64{2, 1, 1} {
		t.Errorf("stats %+v", s)
	}
}

// namer gives every client the user name "claimed", as a token's claim
// would.
type namer struct{}

func (namer) ID() string { return "namer" }
func (namer) Authenticate(_ *tern.Client, pk *packets.Connect) tern.Decision {
	pk.Username = "claimed"
	return tern.Allow
}

// A user name an authenticator gives the client is checked too.
func TestBanOfAssignedUsername(t *testing.T) {
	l := open(t, "", FlappingOptions{})
	l.Add(Ban{As: Username, Who: "claimed"})
	srv := newServer(t, l, namer{})
	c, code := connect(t, srv, packets.V5, "dev", "token-user")
	if code != packets.Success {
		t.Fatalf("CONNACK %v", code)
	}
	if got := c.ExpectClosed(); len(got) != 1 || got[0].(*packets.Disconnect).ReasonCode != packets.AdministrativeAction {
		t.Fatalf("got %+v", got)
	}
}

// A client reconnecting in a loop is banned on the connect after
// MaxConnects, the ban is listed and persisted, and it lifts on time.
func TestFlapping(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bans.json")
	const banFor = 1500 * time.Millisecond
	l := open(t, file, FlappingOptions{MaxConnects: 5, Window: 10 * time.Second, BanFor: banFor})
	srv := newServer(t, l)
	var refusedAt time.Time
	for i := 1; i <= 6; i++ {
		c, code := connect(t, srv, packets.V5, "looper", "")
		want := packets.Success
		if i == 6 {
			want = packets.Banned
			refusedAt = time.Now()
		}
		if code != want {
			t.Fatalf("connect %d: %v, want %v", i, code, want)
		}
		c.Close()
	}
	bs := l.List()
	if len(bs) != 1 || bs[0].By != "flapping" || bs[0].Who != "looper" {
		t.Fatalf("List = %+v", bs)
	}
	// Another client id is not affected.
	if _, code := connect(t, srv, packets.V5, "calm", ""); code != packets.Success {
		t.Fatalf("other client: %v", code)
	}
	terntest.Eventually(t, "the flapping ban to be written", func() bool {
		data, _ := os.ReadFile(file)
		return json.Valid(data) && contains(data, "looper")
	})
	// Still banned just before the end, allowed right after.
	time.Sleep(time.Until(refusedAt.Add(banFor - 300*time.Millisecond)))
	if _, code := connect(t, srv, packets.V5, "looper", ""); code != packets.Banned {
		t.Fatalf("before the ban ends: %v", code)
	}
	time.Sleep(time.Until(refusedAt.Add(banFor + 50*time.Millisecond)))
	if _, code := connect(t, srv, packets.V5, "looper", ""); code != packets.Success {
		t.Fatalf("after the ban ends: %v", code)
	}
	if s := l.Stats(); s.Flapping != 1 {
		t.Errorf("flapping count %d", s.Flapping)
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

func listed(bs []Ban, as Kind, who string) bool {
	for _, b := range bs {
		if b.As == as && b.Who == who {
			return true
		}
	}
	return false
}
