package listeners_test

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/auth"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
)

// tlsSetup is a CA, a server certificate for 127.0.0.1 and a TLS listener
// on a free port.
type tlsSetup struct {
	ca       *testCA
	certFile string
	keyFile  string
	st       *listeners.ServerTLS
	l        *listeners.TLS
}

func newTLSSetup(t *testing.T, opts listeners.TLSOptions) *tlsSetup {
	t.Helper()
	s := &tlsSetup{ca: newCA(t, "test-ca")}
	s.certFile, s.keyFile = s.ca.issue(t, "server-a", false)
	opts.CertFile, opts.KeyFile = s.certFile, s.keyFile
	var err error
	if s.st, err = listeners.NewServerTLS(opts); err != nil {
		t.Fatal(err)
	}
	s.l = listeners.NewTLS("tls", "127.0.0.1:0", s.st)
	return s
}

func (s *tlsSetup) dial(t *testing.T, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.RootCAs = s.ca.Pool
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", s.l.Addr().String(), cfg)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestTLSPahoQoS1(t *testing.T) {
	s := newTLSSetup(t, listeners.TLSOptions{})
	startServer(t, s.l)
	subConn, err := s.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := subConn.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Errorf("negotiated TLS version %#x", v)
	}
	pubConn, err := s.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, msgs := pahoClient(t, subConn, "sub")
	pub, _ := pahoClient(t, pubConn, "pub")
	exchange(t, pub, sub, msgs, "tls/test", 1, 50)
}

func TestTLSVersions(t *testing.T) {
	tests := []struct {
		name      string
		min       uint16
		clientMax uint16
		ok        bool
	}{
		{name: "default refuses TLS 1.1", clientMax: tls.VersionTLS11},
		{name: "default accepts TLS 1.2", clientMax: tls.VersionTLS12, ok: true},
		{name: "1.3 minimum refuses TLS 1.2", min: tls.VersionTLS13, clientMax: tls.VersionTLS12},
		{name: "1.3 minimum accepts TLS 1.3", min: tls.VersionTLS13, clientMax: tls.VersionTLS13, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTLSSetup(t, listeners.TLSOptions{MinVersion: tt.min})
			startServer(t, s.l)
			_, err := s.dial(t, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tt.clientMax})
			if (err == nil) != tt.ok {
				t.Errorf("handshake error %v, want success %v", err, tt.ok)
			}
		})
	}
}

func TestServerTLSOptionErrors(t *testing.T) {
	ca := newCA(t, "ca")
	cert, key := ca.issue(t, "srv", false)
	tests := []struct {
		name string
		opts listeners.TLSOptions
	}{
		{name: "no certificate", opts: listeners.TLSOptions{KeyFile: key}},
		{name: "missing file", opts: listeners.TLSOptions{CertFile: cert + ".none", KeyFile: key}},
		{name: "TLS 1.1", opts: listeners.TLSOptions{CertFile: cert, KeyFile: key, MinVersion: tls.VersionTLS11}},
		{name: "insecure suite", opts: listeners.TLSOptions{CertFile: cert, KeyFile: key, CipherSuites: []uint16{tls.TLS_RSA_WITH_RC4_128_SHA}}},
		{name: "identity without CA", opts: listeners.TLSOptions{CertFile: cert, KeyFile: key, IdentityAsUsername: true}},
		{name: "CA file without certificates", opts: listeners.TLSOptions{CertFile: cert, KeyFile: key, ClientCAFile: key}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := listeners.NewServerTLS(tt.opts); err == nil {
				t.Error("no error")
			}
		})
	}
	if v, err := listeners.ParseTLSVersion("1.3"); err != nil || v != tls.VersionTLS13 {
		t.Errorf("ParseTLSVersion(1.3) = %#x, %v", v, err)
	}
	if _, err := listeners.ParseTLSVersion("1.0"); err == nil {
		t.Error("ParseTLSVersion(1.0) accepted")
	}
	ids, err := listeners.ParseCipherSuites([]string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"})
	if err != nil || len(ids) != 1 || ids[0] != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
		t.Errorf("ParseCipherSuites = %v, %v", ids, err)
	}
	if _, err := listeners.ParseCipherSuites([]string{"TLS_RSA_WITH_RC4_128_SHA"}); err == nil {
		t.Error("insecure suite accepted")
	}
}

func TestTLSCipherSuites(t *testing.T) {
	s := newTLSSetup(t, listeners.TLSOptions{CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}})
	startServer(t, s.l)
	c, err := s.dial(t, &tls.Config{MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	if cs := c.ConnectionState().CipherSuite; cs != tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 {
		t.Errorf("cipher suite %s", tls.CipherSuiteName(cs))
	}
	if _, err := s.dial(t, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}); err == nil {
		t.Error("a suite outside the list was negotiated")
	}
}

// identityHook records the identity and user name of each connecting client.
type identityHook struct {
	mu    sync.Mutex
	seen  []string
	users []string
}

func (h *identityHook) ID() string { return "identity" }

func (h *identityHook) Authenticate(c *tern.Client, _ *packets.Connect) tern.Decision {
	h.mu.Lock()
	defer h.mu.Unlock()
	if id, ok := c.Conn().(listeners.Identity); ok {
		h.seen = append(h.seen, id.Identity())
	}
	h.users = append(h.users, auth.Username(c))
	return tern.Abstain
}

func TestMutualTLS(t *testing.T) {
	s := newTLSSetup(t, listeners.TLSOptions{})
	// The CA signs clients too.
	st, err := listeners.NewServerTLS(listeners.TLSOptions{CertFile: s.certFile, KeyFile: s.keyFile, ClientCAFile: s.ca.file, IdentityAsUsername: true})
	if err != nil {
		t.Fatal(err)
	}
	s.l = listeners.NewTLS("mtls", "127.0.0.1:0", st)
	rec := &identityHook{}
	pw := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(pw, nil, 0o600) // no users: only certificates get in
	pwHook, err := auth.NewPasswordFile(pw, auth.PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	acl := auth.NewACLFromRules(mustACL(t, "user device-1\ntopic readwrite devices/device-1/#\n"))
	startServer(t, s.l, rec, pwHook, acl)

	t.Run("no certificate", func(t *testing.T) {
		c, err := s.dial(t, nil)
		if err == nil {
			// With TLS 1.3 the client learns of the refusal on its first read.
			c.SetDeadline(time.Now().Add(timeout))
			c.Write([]byte{0xC0, 0})
			_, err = c.Read(make([]byte, 1))
		}
		if err == nil {
			t.Fatal("a client without a certificate got in")
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other := newCA(t, "other-ca")
		cert := other.clientCert(t, "device-1")
		c, err := s.dial(t, &tls.Config{Certificates: []tls.Certificate{cert}})
		if err == nil {
			c.SetDeadline(time.Now().Add(timeout))
			c.Write([]byte{0xC0, 0})
			_, err = c.Read(make([]byte, 1))
		}
		if err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
	})
	t.Run("valid certificate", func(t *testing.T) {
		cert := s.ca.clientCert(t, "device-1")
		c, err := s.dial(t, &tls.Config{Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		rc := newRaw(t, c, packets.V5)
		rc.connect("dev1") // no user name, no password: the certificate authenticates
		rec.mu.Lock()
		seen, users := append([]string(nil), rec.seen...), append([]string(nil), rec.users...)
		rec.mu.Unlock()
		if len(seen) == 0 || seen[len(seen)-1] != "device-1" || users[len(users)-1] != "device-1" {
			t.Fatalf("hook saw identities %q, user names %q; want device-1", seen, users)
		}
		rc.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{
			{Filter: "devices/device-1/#", QoS: 1}, {Filter: "devices/device-2/#", QoS: 1},
		}})
		sa := rc.recv().(*packets.Suback)
		if len(sa.ReasonCodes) != 2 || sa.ReasonCodes[0] != 1 || sa.ReasonCodes[1] != packets.NotAuthorized {
			t.Errorf("SUBACK %v, want [1 0x87]: the ACL applies to the certificate name", sa.ReasonCodes)
		}
	})
}

func TestTLSReload(t *testing.T) {
	s := newTLSSetup(t, listeners.TLSOptions{})
	startServer(t, s.l)
	serverName := func() string {
		t.Helper()
		c, err := s.dial(t, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := serverName(); got != "server-a" {
		t.Fatalf("serving %q, want server-a", got)
	}
	held, err := s.dial(t, nil) // a connection made before the reload goes on
	if err != nil {
		t.Fatal(err)
	}
	certB, keyB := s.ca.issue(t, "server-b", false)
	copyFile(t, certB, s.certFile)
	copyFile(t, keyB, s.keyFile)
	if err := s.l.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serverName(); got != "server-b" {
		t.Fatalf("after reload serving %q, want server-b", got)
	}
	rc := newRaw(t, held, packets.V311)
	rc.connect("held")

	// A broken file is refused and the certificate in force stays.
	os.WriteFile(s.keyFile, []byte("not a key"), 0o600)
	if err := s.l.Reload(); err == nil {
		t.Fatal("Reload of a broken key gave no error")
	}
	if got := serverName(); got != "server-b" {
		t.Fatalf("after a failed reload serving %q, want server-b", got)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A client that never finishes its handshake is dropped after the
// handshake timeout and does not hold up others; Close ends the pending
// handshakes at once.
func TestTLSHandshakeTimeout(t *testing.T) {
	s := newTLSSetup(t, listeners.TLSOptions{})
	s.l.HandshakeTimeout = 200 * time.Millisecond
	startServer(t, s.l)
	idle, err := net.Dial("tcp", s.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	c, err := s.dial(t, nil)
	if err != nil {
		t.Fatalf("a handshake behind an idle client: %v", err)
	}
	newRaw(t, c, packets.V311).connect("ok")
	expectClosed(t, idle)
}

func TestCloseEndsPendingHandshakes(t *testing.T) {
	s := newTLSSetup(t, listeners.TLSOptions{})
	s.l.HandshakeTimeout = time.Hour
	startServer(t, s.l)
	idle, err := net.Dial("tcp", s.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// Let the server accept it: a complete handshake after it proves that.
	if _, err := s.dial(t, nil); err != nil {
		t.Fatal(err)
	}
	s.l.Close()
	expectClosed(t, idle)
	if _, err := net.DialTimeout("tcp", s.l.Addr().String(), time.Second); err == nil {
		t.Error("still accepting after Close")
	}
}
