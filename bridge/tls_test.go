package bridge

import (
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/testcert"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, and returns their file names.
type testPKI struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	ca := testcert.NewCA(t, "test CA")
	p := testPKI{ca: ca.File(t, dir, "ca.crt")}
	p.serverCert, p.serverKey = ca.IssueFiles(t, dir, "server", testcert.Spec{CN: "server", Server: true})
	p.clientCert, p.clientKey = ca.IssueFiles(t, dir, "edge", testcert.Spec{CN: "edge", Client: true})
	return p
}

// A bridge over mutual TLS: it verifies the remote with its CA file and
// presents its client certificate. With the wrong CA it stays in state
// error with the certificate error as its last error; without a client
// certificate the remote refuses it.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	pki := newPKI(t, t.TempDir())
	other := newPKI(t, t.TempDir())
	st, err := listeners.NewServerTLS(listeners.TLSOptions{CertFile: pki.serverCert, KeyFile: pki.serverKey, ClientCAFile: pki.ca})
	if err != nil {
		t.Fatal(err)
	}
	b := terntest.NewServer(t, &tern.Options{NodeID: "B", Logger: testLog()})
	tl := listeners.NewTLS("tls", "127.0.0.1:0", st)
	if err := tl.Listen(); err != nil {
		t.Fatal(err)
	}
	b.AddListener(tl)
	addr := "tls://" + tl.Addr().String()
	topics := []Topic{{Pattern: "#", Direction: Both, QoS: 1}}
	_, m := broker(t, "A", nil,
		fast(Config{Name: "good", Addresses: []string{addr}, Topics: topics,
			TLSFiles: &TLSFiles{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}}),
		fast(Config{Name: "wrongca", Addresses: []string{addr}, Topics: topics,
			TLSFiles: &TLSFiles{CAFile: other.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}}),
		fast(Config{Name: "nocert", Addresses: []string{addr}, Topics: topics, TLSFiles: &TLSFiles{CAFile: pki.ca}}))
	good, _ := m.Bridge("good")
	wrong, _ := m.Bridge("wrongca")
	nocert, _ := m.Bridge("nocert")
	terntest.Eventually(t, "the mTLS bridge to connect", func() bool { return good.Status().State == StateConnected })
	terntest.Eventually(t, "the bridge with the wrong CA to fail", func() bool { return wrong.Status().State == StateError })
	if e := wrong.Status().LastError; !strings.Contains(e, "x509") || !strings.Contains(e, "certificate") {
		t.Errorf("last error %q", e)
	}
	terntest.Eventually(t, "the bridge without a certificate to fail", func() bool { return nocert.Status().LastError != "" })
	if st := nocert.Status(); st.State == StateConnected {
		t.Errorf("connected without a client certificate: %+v", st)
	}
	if ci, ok := b.ClientInfo(good.s.ClientID); !ok || ci.Listener != "tls" || ci.ProtocolVersion != packets.V5 {
		t.Errorf("remote sees %+v", ci)
	}
}

// A bridge over WebSocket (ws://host:port/path).
func TestWebSocket(t *testing.T) {
	t.Parallel()
	b, _ := broker(t, "B", nil)
	ws := listeners.NewWebSocket("ws", "127.0.0.1:0")
	if err := ws.Listen(); err != nil {
		t.Fatal(err)
	}
	b.AddListener(ws)
	a, m := broker(t, "A", nil, fast(Config{Name: "ab", Addresses: []string{"ws://" + ws.Addr().String() + "/mqtt"},
		Topics: []Topic{{Pattern: "#", Direction: Both, QoS: 1}}}))
	waitConnected(t, m)
	sub := dialClient(t, b.Addr, "sub", packets.V5, true, 0)
	sub.subscribe("w/#", 1)
	time.Sleep(50 * time.Millisecond)
	pub := dialClient(t, a.Addr, "pub", packets.V5, true, 0)
	pub.publish("w/1", "over ws", 1, false)
	sub.expect(1)
}
