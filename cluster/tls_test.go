package cluster

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ternmq/tern/internal/testcert"
	"github.com/ternmq/tern/terntest"
)

// testCA is a certificate authority made for one test.
type testCA struct{ *testcert.CA }

func newTestCA(t testing.TB, name string) *testCA { return &testCA{testcert.NewCA(t, name)} }

// nodeTLS returns the route TLS of a node whose certificate ca signed (at
// 127.0.0.1, good for both ends of a route), trusting ca only, both ways
// (mutual TLS), as cmd/tern makes it from cluster.cert_file, key_file and
// ca_file.
func (ca *testCA) nodeTLS(t testing.TB, node string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, testcert.Spec{CN: node})},
		RootCAs: ca.Pool, ClientCAs: ca.Pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// writeFiles writes ca's certificate and a node's certificate and key as
// PEM files in dir, for cluster.ca_file, cert_file and key_file.
func (ca *testCA) writeFiles(t testing.TB, dir, node string) (caFile, certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = ca.IssueFiles(t, dir, node, testcert.Spec{CN: node})
	return ca.File(t, dir, "ca.pem"), certFile, keyFile
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
