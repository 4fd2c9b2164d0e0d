package tern

import (
	"bytes"
	"crypto/tls"
	"net"
	"testing"
	"unsafe"

	"github.com/ternmq/tern/internal/testcert"
)

// trimTLS finds the fields it needs in this Go's crypto/tls: if this
// fails after a Go upgrade, parked TLS connections keep their read
// buffers (about 3.5 KB each) until trimTLS is brought up to date.
func TestTrimTLSFields(t *testing.T) {
	if !tlsBufs.ok {
		t.Fatalf("crypto/tls.Conn has no rawInput and hand bytes.Buffer and input bytes.Reader: trimTLS is off (%+v)", tlsBufs)
	}
}

// After a handshake and an exchange, trimTLS leaves a tls.Conn's read
// buffers empty without capacity, and the connection goes on working,
// in both directions; buffers holding bytes are left alone.
func TestTrimTLS(t *testing.T) {
	if !tlsBufs.ok {
		t.Skip("trimTLS is off")
	}
	ca := testcert.NewCA(t, "trim CA")
	srvCert := ca.Issue(t, testcert.Spec{CN: "server", Server: true})
	for _, vers := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(vers), func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			sc := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{srvCert}, MinVersion: vers, MaxVersion: vers})
			cc := tls.Client(b, &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1", MinVersion: vers, MaxVersion: vers})
			done := make(chan error, 1)
			go func() { done <- cc.Handshake() }()
			if err := sc.Handshake(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			bufs := func() (*bytes.Buffer, *bytes.Reader, *bytes.Buffer) {
				p := unsafe.Pointer(sc)
				return (*bytes.Buffer)(unsafe.Add(p, tlsBufs.rawInput)),
					(*bytes.Reader)(unsafe.Add(p, tlsBufs.input)),
					(*bytes.Buffer)(unsafe.Add(p, tlsBufs.hand))
			}
			exchange := func(msg string) {
				t.Helper()
				go func() { _, err := cc.Write([]byte(msg)); done <- err }()
				buf := make([]byte, 64)
				n, err := sc.Read(buf)
				if err != nil || string(buf[:n]) != msg {
					t.Fatalf("server read %q %v, want %q", buf[:n], err, msg)
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				go func() { _, err := sc.Write([]byte(msg)); done <- err }()
				if n, err = cc.Read(buf); err != nil || string(buf[:n]) != msg {
					t.Fatalf("client read %q %v, want %q", buf[:n], err, msg)
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			exchange("before")
			if raw, _, hand := bufs(); raw.Cap() == 0 || hand.Cap() == 0 {
				t.Fatalf("before trimming: rawInput cap %d, hand cap %d: nothing to trim", raw.Cap(), hand.Cap())
			}
			trimTLS(sc)
			if raw, in, hand := bufs(); raw.Cap() != 0 || hand.Cap() != 0 || in.Size() != 0 {
				t.Fatalf("after trimming: rawInput cap %d, hand cap %d, input size %d", raw.Cap(), hand.Cap(), in.Size())
			}
			exchange("after")
			trimTLS(sc)
			exchange("again")

			// Decrypted bytes not yet read are kept.
			go func() { _, err := cc.Write([]byte("abcdef")); done <- err }()
			buf := make([]byte, 2)
			if n, err := sc.Read(buf); err != nil || string(buf[:n]) != "ab" {
				t.Fatalf("read %q %v", buf[:n], err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			trimTLS(sc)
			rest := make([]byte, 8)
			if n, err := sc.Read(rest); err != nil || string(rest[:n]) != "cdef" {
				t.Fatalf("after trimming with input pending: %q %v, want \"cdef\"", rest[:n], err)
			}
		})
	}
}
