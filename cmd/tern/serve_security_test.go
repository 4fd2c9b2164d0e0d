package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/testcert"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1883": true, "127.1.2.3:1": true, "[::1]:1883": true, "localhost:1883": true,
		":1883": false, "0.0.0.0:1883": false, "[::]:1883": false, "192.168.1.2:1883": false,
		"example.com:1883": false, "garbage": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestCheckExposure(t *testing.T) {
	tests := []struct {
		name   string
		listen string
		sec    securityFlags
		ok     bool
	}{
		{name: "defaults", listen: "127.0.0.1:1883", ok: true},
		{name: "all interfaces", listen: ":1883"},
		{name: "all interfaces with a password file", listen: "0.0.0.0:1883", sec: securityFlags{passwordFile: "p"}, ok: true},
		{name: "all interfaces, anonymous on purpose", listen: "0.0.0.0:1883", sec: securityFlags{allowAnonymous: true}, ok: true},
		{name: "TLS on the network", listen: "127.0.0.1:1883", sec: securityFlags{tlsListen: "0.0.0.0:8883"}},
		{name: "TLS with client certificates", listen: "127.0.0.1:1883", sec: securityFlags{tlsListen: "0.0.0.0:8883", tlsClientCA: "ca"}, ok: true},
		{name: "WebSocket on the network", listen: "", sec: securityFlags{wsListen: ":8083"}},
		{name: "secure WebSocket on the network", listen: "", sec: securityFlags{wssListen: "10.0.0.1:8084"}},
		{name: "Unix socket", listen: "", sec: securityFlags{unixPath: "/run/tern.sock"}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.sec.checkExposure(tt.listen)
			if (err == nil) != tt.ok {
				t.Errorf("checkExposure: %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestServeRefusesToStartExposed(t *testing.T) {
	err := runTern(t, "", "serve", "--durability", "off", "--listen", "0.0.0.0:0", "--sys-interval", "-1s")
	if err == nil || !strings.Contains(err.Error(), "--password-file") {
		t.Fatalf("serve on 0.0.0.0 without auth: %v", err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 with the common name and
// its key.
func selfSigned(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	return testcert.WriteFiles(t, dir, "cert", testcert.SelfSigned(t, testcert.Spec{CN: cn, Server: true}))
}

// connack logs in over nc and returns the CONNACK reason code.
func connack(t *testing.T, nc net.Conn, user, pw string) packets.ReasonCode {
	t.Helper()
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	pk := &packets.Connect{ProtocolVersion: packets.V5, ClientID: "c", CleanStart: true,
		UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(pw)}
	b, _ := pk.Encode(nil, packets.V5)
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	got, err := packets.ReadPacket(bufio.NewReader(nc), packets.V5, 0)
	if err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	return got.(*packets.Connack).ReasonCode
}

// The serve wiring: TLS, WebSocket, secure WebSocket and Unix listeners
// behind a password file, and a reload that picks up a new password and
// certificate.
func TestServeSecuritySetup(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir, "first")
	pwFile := filepath.Join(dir, "passwd")
	if err := runTern(t, "", "passwd", "-c", "-b", pwFile, "alice", "one"); err != nil {
		t.Fatal(err)
	}
	aclFile := filepath.Join(dir, "acl")
	os.WriteFile(aclFile, []byte("user alice\ntopic a/#\n"), 0o600)
	sec := securityFlags{
		tlsListen: "127.0.0.1:0", tlsCert: certFile, tlsKey: keyFile, tlsMinVersion: "1.2",
		wsListen: "127.0.0.1:0", wssListen: "127.0.0.1:0", wsPath: "/mqtt",
		unixPath: filepath.Join(dir, "tern.sock"), passwordFile: pwFile, aclFile: aclFile,
	}
	srv, err := tern.New(&tern.Options{SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ls, reload, err := sec.setup(srv, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	addr := map[string]string{}
	for _, l := range ls {
		addr[l.ID()] = l.Addr().String()
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(readFile(t, certFile)))
	tlsConf := func() *tls.Config { return &tls.Config{RootCAs: roots} }
	dialers := map[string]func() net.Conn{
		"tls": func() net.Conn {
			c, err := tls.Dial("tcp", addr["tls"], tlsConf())
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		"ws": func() net.Conn {
			c, err := listeners.DialWebSocket(context.Background(), "ws://"+addr["ws"]+"/mqtt", nil)
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		"wss": func() net.Conn {
			c, err := listeners.DialWebSocket(context.Background(), "wss://"+addr["wss"]+"/mqtt", tlsConf())
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		"unix": func() net.Conn {
			c, err := net.Dial("unix", sec.unixPath)
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
	}
	for name, dial := range dialers {
		if code := connack(t, dial(), "alice", "one"); code != packets.Success {
			t.Errorf("%s: CONNACK %v", name, code)
		}
		if code := connack(t, dial(), "alice", "two"); code != packets.BadUserNameOrPassword {
			t.Errorf("%s wrong password: CONNACK %v", name, code)
		}
	}

	// Reload: a new password and a new certificate.
	if err := runTern(t, "", "passwd", "-b", pwFile, "alice", "two"); err != nil {
		t.Fatal(err)
	}
	newCert, newKey := selfSigned(t, t.TempDir(), "second")
	os.WriteFile(certFile, []byte(readFile(t, newCert)), 0o600)
	os.WriteFile(keyFile, []byte(readFile(t, newKey)), 0o600)
	reload()
	if code := connack(t, dialers["unix"](), "alice", "two"); code != packets.Success {
		t.Errorf("after reload: CONNACK %v", code)
	}
	c, err := tls.Dial("tcp", addr["tls"], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "second" {
		t.Errorf("after reload the certificate is %q, want second", cn)
	}
}
