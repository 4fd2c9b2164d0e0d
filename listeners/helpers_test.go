package listeners_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/internal/testcert"
	"github.com/ternmq/tern/packets"
)

// timeout bounds every wait in these tests; nothing depends on it being
// short.
const timeout = 10 * time.Second

// testCA is a certificate authority made for one test, with its
// certificate in a file.
type testCA struct {
	*testcert.CA
	file string // PEM of the CA certificate
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	ca := testcert.NewCA(t, name)
	return &testCA{CA: ca, file: ca.File(t, t.TempDir(), name+"-ca.pem")}
}

// issue makes a certificate signed by the CA and writes it and its key to
// files in a temporary directory. A server certificate is for 127.0.0.1.
func (ca *testCA) issue(t *testing.T, cn string, client bool, sans ...string) (certFile, keyFile string) {
	t.Helper()
	return ca.IssueFiles(t, t.TempDir(), cn, testcert.Spec{CN: cn, Client: client, Server: !client, DNS: sans})
}

// clientCert issues a client certificate with the common name.
func (ca *testCA) clientCert(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	return ca.Issue(t, testcert.Spec{CN: cn, Client: true})
}

// listener is what these tests need of a listener: tern.Listener and Listen.
type listener interface {
	tern.Listener
	Listen() error
}

// startServer runs a broker with the listener and hooks until the test ends.
func startServer(t *testing.T, l listener, hooks ...tern.Hook) *tern.Server {
	t.Helper()
	srv, err := tern.New(&tern.Options{SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		srv.AddHook(h)
	}
	if err := l.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// rawClient speaks MQTT packet by packet over any connection.
type rawClient struct {
	t       *testing.T
	nc      net.Conn
	r       *bufio.Reader
	version byte
}

func newRaw(t *testing.T, nc net.Conn, version byte) *rawClient {
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, r: bufio.NewReader(nc), version: version}
}

func (c *rawClient) encode(pk packets.Packet) []byte {
	c.t.Helper()
	b, err := pk.Encode(nil, c.version)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

func (c *rawClient) send(pk packets.Packet) { c.write(c.encode(pk)) }

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) recv() packets.Packet {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	pk, err := packets.ReadPacket(c.r, c.version, 0)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return pk
}

func (c *rawClient) connect(id string) {
	c.t.Helper()
	c.send(&packets.Connect{ProtocolVersion: c.version, ClientID: id, CleanStart: true, KeepAlive: 60})
	ack, ok := c.recv().(*packets.Connack)
	if !ok || ack.ReasonCode != packets.Success {
		c.t.Fatalf("CONNACK %#v", ack)
	}
}

// pahoClient connects an MQTT v5 paho client over conn; received messages
// go to the returned channel.
func pahoClient(t *testing.T, conn net.Conn, id string) (*paho.Client, chan *paho.Publish) {
	t.Helper()
	msgs := make(chan *paho.Publish, 100)
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { msgs <- pr.Packet; return true, nil },
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	if err != nil {
		t.Fatalf("paho connect: %v", err)
	}
	if ack.ReasonCode != 0 {
		t.Fatalf("paho CONNACK %#x", ack.ReasonCode)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c, msgs
}

// exchange subscribes sub to topic at qos and publishes n messages from pub
// at qos, checking each arrives in order.
func exchange(t *testing.T, pub, sub *paho.Client, msgs chan *paho.Publish, topic string, qos byte, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sa, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: qos}}})
	if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] != qos {
		t.Fatalf("subscribe: %v %#v", err, sa)
	}
	for i := 0; i < n; i++ {
		payload := []byte{byte(i), 'x'}
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for i := 0; i < n; i++ {
		select {
		case m := <-msgs:
			if m.Topic != topic || m.QoS != qos || len(m.Payload) != 2 || m.Payload[0] != byte(i) {
				t.Fatalf("message %d: %s QoS %d %q", i, m.Topic, m.QoS, m.Payload)
			}
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages", i, n)
		}
	}
}

// expectClosed waits for the peer to close c (any read error but a
// timeout), failing after the timeout.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 256)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("connection still open")
		}
		return
	}
}

func mustDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(timeout))
	return c
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
