package listeners_test

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
)

func TestUnixRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tern.sock")
	l := listeners.NewUnix("unix", path)
	l.Mode = 0o660
	startServer(t, l)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket file: %v, mode %v; want 0660", err, fi.Mode().Perm())
	}
	dial := func(id string) *rawClient {
		nc, err := net.DialTimeout("unix", path, timeout)
		if err != nil {
			t.Fatal(err)
		}
		c := newRaw(t, nc, packets.V311)
		c.connect(id)
		return c
	}
	sub, pub := dial("sub"), dial("pub")
	sub.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "u/#", QoS: 1}}})
	if _, ok := sub.recv().(*packets.Suback); !ok {
		t.Fatal("no SUBACK")
	}
	pub.send(&packets.Publish{Topic: "u/1", QoS: 1, PacketID: 1, Payload: []byte("over unix")})
	if _, ok := pub.recv().(*packets.Puback); !ok {
		t.Fatal("no PUBACK")
	}
	if m, ok := sub.recv().(*packets.Publish); !ok || string(m.Payload) != "over unix" {
		t.Fatalf("got %#v", m)
	}
}

func TestUnixSocketFile(t *testing.T) {
	dir := t.TempDir()
	// A stale socket file, left by a process that did not clean up.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	l := listeners.NewUnix("unix", stale)
	if err := l.Listen(); err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	// A live one is not taken over.
	if err := listeners.NewUnix("unix2", stale).Listen(); err == nil {
		t.Error("a socket another listener serves was replaced")
	}
	l.Close()
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
	// A regular file is never removed.
	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, []byte("keep"), 0o600)
	if err := listeners.NewUnix("unix3", regular).Listen(); err == nil {
		t.Error("listening over a regular file")
	}
	if b, _ := os.ReadFile(regular); string(b) != "keep" {
		t.Error("regular file changed")
	}
}

// addrHook records the remote address of each client that connects.
type addrHook struct {
	mu    sync.Mutex
	addrs []string
	seen  chan struct{} // signalled at each connect
}

func (h *addrHook) ID() string { return "addr" }

func (h *addrHook) OnSessionEstablished(c *tern.Client, _ bool) {
	h.mu.Lock()
	h.addrs = append(h.addrs, c.RemoteAddr())
	h.mu.Unlock()
	select {
	case h.seen <- struct{}{}:
	default:
	}
}

// last waits for a connect (the hook runs after the CONNACK is written,
// so the client may see it first) and returns the last address, "" when
// none came in 5 s.
func (h *addrHook) last() string {
	select {
	case <-h.seen:
	case <-time.After(5 * time.Second):
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.addrs) == 0 {
		return ""
	}
	return h.addrs[len(h.addrs)-1]
}

func TestProxyProtocol(t *testing.T) {
	v2 := func(t *testing.T) []byte {
		h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr:      &net.TCPAddr{IP: net.IPv4(198, 51, 100, 9), Port: 40000},
			DestinationAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1883}}
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name     string
		trusted  []string
		header   func(*testing.T) []byte
		wantAddr string // "" when the connection must be refused
	}{
		{name: "v1", header: func(*testing.T) []byte { return []byte("PROXY TCP4 203.0.113.7 127.0.0.1 5555 1883\r\n") }, wantAddr: "203.0.113.7:5555"},
		{name: "v2", header: v2, wantAddr: "198.51.100.9:40000"},
		{name: "v1 from a trusted proxy", trusted: []string{"127.0.0.0/8"}, header: func(*testing.T) []byte { return []byte("PROXY TCP6 2001:db8::1 ::1 5555 1883\r\n") }, wantAddr: "[2001:db8::1]:5555"},
		{name: "no header", header: func(*testing.T) []byte { return nil }},
		{name: "untrusted proxy", trusted: []string{"10.0.0.0/8", "192.0.2.1"}, header: v2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := listeners.NewTCP("tcp", "127.0.0.1:0")
			l.Proxy = &listeners.ProxyProtocol{Trusted: tt.trusted}
			hook := &addrHook{seen: make(chan struct{}, 1)}
			startServer(t, l, hook)
			nc := mustDial(t, l.Addr().String())
			c := newRaw(t, nc, packets.V311)
			connect := c.encode(&packets.Connect{ProtocolVersion: packets.V311, ClientID: "p", CleanStart: true})
			nc.Write(append(tt.header(t), connect...))
			if tt.wantAddr == "" {
				expectClosed(t, nc)
				return
			}
			if _, ok := c.recv().(*packets.Connack); !ok {
				t.Fatal("no CONNACK")
			}
			if got := hook.last(); got != tt.wantAddr {
				t.Errorf("remote address %q, want %q", got, tt.wantAddr)
			}
		})
	}
	if err := (&listeners.TCP{Proxy: &listeners.ProxyProtocol{Trusted: []string{"nonsense"}}}).Serve(nil); err == nil {
		t.Error("a bad trusted range was accepted")
	}
}
