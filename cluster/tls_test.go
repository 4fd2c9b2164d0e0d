package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/terntest"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a certificate ca signed for node at 127.0.0.1, good for
// both ends of a route, and its key.
func (ca *testCA) issue(t testing.TB, node string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: node},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// nodeTLS returns the route TLS of a node whose certificate ca signed,
// trusting ca only, both ways (mutual TLS), as cmd/tern makes it from
// cluster.cert_file, key_file and ca_file.
func (ca *testCA) nodeTLS(t testing.TB, node string) *tls.Config {
	der, key := ca.issue(t, node)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs: ca.pool, ClientCAs: ca.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// writeFiles writes ca's certificate and a node's certificate and key as
// PEM files in dir, for cluster.ca_file, cert_file and key_file.
func (ca *testCA) writeFiles(t testing.TB, dir, node string) (caFile, certFile, keyFile string) {
	t.Helper()
	der, key := ca.issue(t, node)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", ca.cert.Raw), write(node+".pem", "CERTIFICATE", der),
		write(node+"-key.pem", "EC PRIVATE KEY", kder)
}

// Two nodes with route TLS (mutual, one CA) and a route password form a
// cluster; a node whose certificate another CA signed, a node without
// TLS and a node with a wrong password are refused by both and never
// join, and the logs say why.
func TestRouteTLS(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	var logs [5]syncBuffer // n1, n2, x1 (another CA), x2 (no TLS), x3 (wrong password)
	nodes := startCluster(t, 2, func(i int, o *Options) {
		o.TLS = ca.nodeTLS(t, o.Node)
		o.User, o.Password = "route", "secret"
		o.Logger = slog.New(slog.NewTextHandler(&logs[i], nil))
	})
	addrs := freeAddrs(t, 3)
	bad := make([]*testNode, 3)
	for i, tc := range []*tls.Config{newTestCA(t, "another CA").nodeTLS(t, "x1"), nil, ca.nodeTLS(t, "x3")} {
		name := fmt.Sprintf("x%d", i+1)
		pw := "secret"
		if i == 2 {
			pw = "guess"
		}
		bad[i] = startNode(t, Options{Node: name, Listen: addrs[i], TLS: tc, Replicas: 1, User: "route", Password: pw,
			Peers:   []string{nodes[0].cl.opts.Listen, nodes[1].cl.opts.Listen, addrs[i]},
			DataDir: filepath.Join(t.TempDir(), name), Logger: slog.New(slog.NewTextHandler(&logs[2+i], nil))})
	}
	has := func(i int, s string) bool { return strings.Contains(logs[i].String(), s) }
	either := func(s string) bool { return has(0, s) || has(1, s) }
	terntest.Eventually(t, "the refusals logged", func() bool {
		return has(2, "certificate signed by unknown authority") && // x1 of n1's and n2's
			either("bad certificate") && // n1 or n2 of x1's
			either("does not look like a TLS handshake") && // of x2
			has(3, "no route to any peer") && // x2 hears nothing, but is told where to look
			either("authentication error") // of x3
	})
	for _, x := range bad {
		if x.cl.Ready() || x.cl.ns.NumRoutes() != 0 {
			t.Fatalf("%s joined: %+v", x.cl.Node(), x.cl.Status())
		}
	}
	for _, nd := range nodes {
		if !nd.cl.Ready() || nd.cl.nodes.liveCount() != 2 {
			t.Fatalf("%s: %+v", nd.cl.Node(), nd.cl.Status())
		}
	}
}

// tern serve nodes given route TLS by --cluster-tls-cert, -key and -ca
// form a cluster; a node with no other peer is ready alone.
func TestProcessTLSAndSingle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tern serve processes; skipped with -short")
	}
	ternBinary(t)
	ca := newTestCA(t, "cluster CA")
	ps := newProcs(t, 3)
	single := ps[2]
	single.peers = nil
	for _, p := range ps[:2] {
		caFile, cert, key := ca.writeFiles(t, t.TempDir(), p.name)
		p.peers = []string{ps[0].route, ps[1].route}
		p.extra = []string{"--cluster-tls-cert", cert, "--cluster-tls-key", key, "--cluster-tls-ca", caFile}
	}
	t.Logf("started in %v", startProcs(t, ps))
	for _, p := range ps[:2] {
		terntest.Eventually(t, p.name+" to log the other node joined over TLS", func() bool {
			b, _ := os.ReadFile(p.log)
			return strings.Contains(string(b), `msg="node joined"`) && strings.Contains(string(b), "route_tls=mutual")
		})
	}
	if b, _ := os.ReadFile(single.log); !strings.Contains(string(b), "started alone") {
		t.Fatalf("single node:\n%s", single.tail())
	}
	for _, p := range ps {
		p.checkLog()
	}
}
