package tern

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/sys/unix"

	"github.com/ternmq/tern/internal/testcert"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
)

// tlsPark is a server with a TLS listener for the tests of parked TLS
// connections, and what a client needs to reach it.
type tlsPark struct {
	srv  *Server
	addr string
	ca   *testcert.CA
	dir  string
}

// tlsParkServer starts a server with a TLS listener; with mutual set, the
// listener requires client certificates of the test CA and takes their
// name as the user name.
func tlsParkServer(t *testing.T, mutual bool) *tlsPark {
	t.Helper()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "tlspark CA")
	cert, key := ca.IssueFiles(t, dir, "server", testcert.Spec{CN: "server", Server: true})
	opts := listeners.TLSOptions{CertFile: cert, KeyFile: key}
	if mutual {
		opts.ClientCAFile = ca.File(t, dir, "ca.pem")
		opts.IdentityAsUsername = true
	}
	st, err := listeners.NewServerTLS(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(&Options{SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTLS("tls", "127.0.0.1:0", st)
	if err := l.Listen(); err != nil {
		t.Fatal(err)
	}
	srv.AddListener(l)
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &tlsPark{srv: srv, addr: l.Addr().String(), ca: ca, dir: dir}
}

// config returns a client configuration trusting the test CA, limited to
// TLS version vers when it is not 0, with a client certificate named cn
// when cn is not empty.
func (p *tlsPark) config(t *testing.T, vers uint16, cn string) *tls.Config {
	cfg := &tls.Config{RootCAs: p.ca.Pool, ServerName: "127.0.0.1", MinVersion: vers, MaxVersion: vers}
	if cn != "" {
		cfg.Certificates = []tls.Certificate{p.ca.Issue(t, testcert.Spec{CN: cn, Client: true})}
	}
	return cfg
}

// dial connects a raw MQTT client over TLS (the handshake done) and
// returns it with its TLS connection; nc, when not nil, is the transport
// beneath TLS to use instead of a new TCP connection.
func (p *tlsPark) dial(t *testing.T, cfg *tls.Config, id string, v byte, keepAlive uint16, nc net.Conn) (*rawClient, *tls.Conn) {
	t.Helper()
	if nc == nil {
		var err error
		if nc, err = net.Dial("tcp", p.addr); err != nil {
			t.Fatal(err)
		}
	}
	tc := tls.Client(nc, cfg)
	t.Cleanup(func() { tc.Close() })
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tc.SetDeadline(time.Time{})
	r := &rawClient{t: t, nc: tc, v: v}
	r.send(&packets.Connect{ProtocolVersion: v, ClientID: id, CleanStart: true, KeepAlive: keepAlive})
	if pk, err := r.recv(); err != nil || pk.(*packets.Connack).ReasonCode != 0 {
		t.Fatalf("connect %s: %v %v", id, pk, err)
	}
	return r, tc
}

// tlsDetached reports whether c is a TLS connection parked without its
// net.TCPConn.
func tlsDetached(s *Server, c *Client) bool {
	s.poller.mu.Lock()
	defer s.poller.mu.Unlock()
	if _, ok := c.conn.(tlsOverIdle); !ok {
		return false
	}
	ic := idleOf(c.conn)
	return ic != nil && c.isParked && !ic.live()
}

// parkedDrained reports whether c is a TLS connection parked without its
// net.TCPConn and with no byte left unread in its socket.
func parkedDrained(s *Server, c *Client) bool {
	s.poller.mu.Lock()
	defer s.poller.mu.Unlock()
	if _, ok := c.conn.(tlsOverIdle); !ok || !c.isParked {
		return false
	}
	if ic := idleOf(c.conn); ic == nil || ic.live() {
		return false
	}
	unread := -1
	c.rawIO(func(fd int) { unread, _ = unix.IoctlGetInt(fd, unix.SIOCINQ) })
	return unread == 0
}

// noClients reports whether the server has no connection left.
func noClients(s *Server) func() bool {
	return func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.clients) == 0
	}
}

// A TLS connection parks without its socket and comes back, as often as
// needed, both for a packet from the client (a paho.golang MQTT 5 client)
// and for a delivery from the server, over TLS 1.2 and 1.3.
func TestTLSParkedV5(t *testing.T) {
	for _, vers := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(vers), func(t *testing.T) {
			t.Parallel()
			p := tlsParkServer(t, false)
			nc, err := tls.Dial("tcp", p.addr, p.config(t, vers, ""))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			msgs := make(chan *paho.Publish, 16)
			cli := paho.NewClient(paho.ClientConfig{ClientID: "v5", Conn: nc,
				OnPublishReceived: []func(paho.PublishReceived) (bool, error){
					func(pr paho.PublishReceived) (bool, error) { msgs <- pr.Packet; return true, nil },
				}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := cli.Connect(ctx, &paho.Connect{ClientID: "v5", CleanStart: true, KeepAlive: 60}); err != nil {
				t.Fatal(err)
			}
			defer cli.Disconnect(&paho.Disconnect{})
			if _, err := cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "t/#", QoS: 1}}}); err != nil {
				t.Fatal(err)
			}
			next := func(what string) *paho.Publish {
				select {
				case m := <-msgs:
					return m
				case <-ctx.Done():
					t.Fatalf("%s: no message", what)
					return nil
				}
			}
			c := serverClient(t, p.srv, "v5")
			for i := range 3 {
				waitParked(t, p.srv, 1)
				terntestEventually(t, "detached", func() bool { return tlsDetached(p.srv, c) })
				// A delivery to the parked subscriber.
				if err := p.srv.Publish("t/srv", []byte{byte(i)}, false, 1); err != nil {
					t.Fatal(err)
				}
				if m := next("delivery"); m.Topic != "t/srv" || len(m.Payload) != 1 || m.Payload[0] != byte(i) {
					t.Fatalf("delivery %d: %v", i, m)
				}
				terntestEventually(t, "the PUBACK", func() bool { return p.srv.Stats().InflightOut == 0 })
				waitParked(t, p.srv, 1)
				terntestEventually(t, "detached again", func() bool { return tlsDetached(p.srv, c) })
				// A packet from the parked client, and the delivery back.
				if _, err := cli.Publish(ctx, &paho.Publish{Topic: "t/cli", QoS: 1, Payload: []byte{byte(i)}}); err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				if m := next("echo"); m.Topic != "t/cli" || m.Payload[0] != byte(i) {
					t.Fatalf("echo %d: %v", i, m)
				}
			}
		})
	}
}

// The same with a paho.mqtt.golang MQTT 3.1.1 client.
func TestTLSParkedV311(t *testing.T) {
	t.Parallel()
	p := tlsParkServer(t, false)
	msgs := make(chan mqtt.Message, 16)
	o := mqtt.NewClientOptions().AddBroker("tls://" + p.addr).SetClientID("v3").SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(60 * time.Second).
		SetTLSConfig(p.config(t, 0, "")).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { msgs <- m })
	cli := mqtt.NewClient(o)
	wait := func(tok mqtt.Token, what string) {
		t.Helper()
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: %v", what, tok.Error())
		}
	}
	wait(cli.Connect(), "connect")
	defer cli.Disconnect(100)
	wait(cli.Subscribe("t/#", 1, nil), "subscribe")
	next := func(what string) mqtt.Message {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no message", what)
			return nil
		}
	}
	c := serverClient(t, p.srv, "v3")
	for i := range 3 {
		waitParked(t, p.srv, 1)
		terntestEventually(t, "detached", func() bool { return tlsDetached(p.srv, c) })
		if err := p.srv.Publish("t/srv", []byte{byte(i)}, false, 1); err != nil {
			t.Fatal(err)
		}
		if m := next("delivery"); m.Topic() != "t/srv" || m.Payload()[0] != byte(i) {
			t.Fatalf("delivery %d: %s %v", i, m.Topic(), m.Payload())
		}
		terntestEventually(t, "the PUBACK", func() bool { return p.srv.Stats().InflightOut == 0 })
		waitParked(t, p.srv, 1)
		terntestEventually(t, "detached again", func() bool { return tlsDetached(p.srv, c) })
		wait(cli.Publish("t/cli", 1, false, []byte{byte(i)}), "publish")
		if m := next("echo"); m.Topic() != "t/cli" || m.Payload()[0] != byte(i) {
			t.Fatalf("echo %d: %s %v", i, m.Topic(), m.Payload())
		}
	}
}

// holdConn is a client's transport beneath TLS whose writes can be held
// back and sent in pieces of the test's choosing.
type holdConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	held []byte
}

func (h *holdConn) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold {
		h.held = append(h.held, b...)
		return len(b), nil
	}
	return h.Conn.Write(b)
}

// take returns what was held back and stops holding.
func (h *holdConn) take() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.held
	h.held, h.hold = nil, false
	return b
}

// A TLS record that arrives in pieces, with the connection parked between
// them (after part of the header, and inside the body), is read whole when
// the rest comes; two records in one segment, the second cut short, are
// both read (the first at once, the second once complete).
func TestTLSRecordSplitAcrossPark(t *testing.T) {
	for _, vers := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(vers), func(t *testing.T) {
			t.Parallel()
			p := tlsParkServer(t, false)
			tcp, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			hc := &holdConn{Conn: tcp}
			r, _ := p.dial(t, p.config(t, vers, ""), "split", packets.V311, 60, hc)
			c := serverClient(t, p.srv, "split")
			publish := func(id uint16) []byte { // one TLS record holding a QoS 1 PUBLISH
				hc.mu.Lock()
				hc.hold = true
				hc.mu.Unlock()
				r.send(&packets.Publish{Topic: "x", QoS: 1, PacketID: id, Payload: []byte("split")})
				return hc.take()
			}
			ack := func(id uint16) {
				t.Helper()
				pk, err := r.recv()
				if a, ok := pk.(*packets.Puback); err != nil || !ok || a.PacketID != id {
					t.Fatalf("PUBACK %d: %v %v", id, pk, err)
				}
			}
			rec := publish(1)
			for _, cut := range []int{3, 5 + 7} { // in the header; in the body
				waitParked(t, p.srv, 1)
				terntestEventually(t, "detached", func() bool { return tlsDetached(p.srv, c) })
				if _, err := tcp.Write(rec[:cut]); err != nil {
					t.Fatal(err)
				}
				rec = rec[cut:]
				// Woken by the piece, it reads it and parks again with part
				// of a record.
				terntestEventually(t, "the piece read", func() bool { return parkedDrained(p.srv, c) })
			}
			if _, err := tcp.Write(rec); err != nil {
				t.Fatal(err)
			}
			ack(1)
			// Two records in one write, the second cut short.
			two := append(publish(2), publish(3)...)
			waitParked(t, p.srv, 1)
			if _, err := tcp.Write(two[:len(two)-4]); err != nil {
				t.Fatal(err)
			}
			ack(2)
			terntestEventually(t, "the cut record read", func() bool { return parkedDrained(p.srv, c) })
			if _, err := tcp.Write(two[len(two)-4:]); err != nil {
				t.Fatal(err)
			}
			ack(3)
		})
	}
}

// A parked TLS connection whose keep alive runs out is ended: a v5 client
// reads DISCONNECT 0x8D, then the end [MQTT-3.1.2-22].
func TestTLSParkedKeepAliveExpires(t *testing.T) {
	t.Parallel()
	p := tlsParkServer(t, false)
	r, _ := p.dial(t, p.config(t, 0, ""), "ka", packets.V5, 1, nil)
	c := serverClient(t, p.srv, "ka")
	terntestEventually(t, "detached", func() bool { return tlsDetached(p.srv, c) })
	pk, err := r.recv()
	if d, ok := pk.(*packets.Disconnect); err != nil || !ok || d.ReasonCode != packets.KeepAliveTimeout {
		t.Fatalf("got %v %v, want DISCONNECT 0x8D", pk, err)
	}
	if pk, err := r.recv(); err == nil {
		t.Fatalf("%v after the DISCONNECT, want the end", pk)
	}
	terntestEventually(t, "the connection to end", noClients(p.srv))
}

// Kick and shutdown reach parked TLS connections: a v5 client reads the
// DISCONNECT, then the TLS close_notify (io.EOF); a 3.1.1 client the
// close_notify.
func TestTLSKickAndShutdownParked(t *testing.T) {
	t.Parallel()
	p := tlsParkServer(t, false)
	cfg := p.config(t, 0, "")
	k5, _ := p.dial(t, cfg, "k5", packets.V5, 60, nil)
	k4, _ := p.dial(t, cfg, "k4", packets.V311, 60, nil)
	s5, _ := p.dial(t, cfg, "s5", packets.V5, 60, nil)
	s4, _ := p.dial(t, cfg, "s4", packets.V311, 60, nil)
	waitParked(t, p.srv, 4)
	for _, id := range []string{"k5", "k4", "s5", "s4"} {
		c := serverClient(t, p.srv, id)
		terntestEventually(t, id+" detached", func() bool { return tlsDetached(p.srv, c) })
	}
	end := func(r *rawClient, id string, code packets.ReasonCode) {
		t.Helper()
		if r.v == packets.V5 {
			pk, err := r.recv()
			if d, ok := pk.(*packets.Disconnect); err != nil || !ok || d.ReasonCode != code {
				t.Fatalf("%s: %v %v, want DISCONNECT %#x", id, pk, err, byte(code))
			}
		}
		if pk, err := r.recv(); err != io.EOF {
			t.Fatalf("%s: %v %v after the end, want io.EOF (close_notify)", id, pk, err)
		}
	}
	for _, id := range []string{"k5", "k4"} {
		if !p.srv.Kick(id) {
			t.Fatalf("Kick(%s) = false", id)
		}
	}
	end(k5, "k5", packets.AdministrativeAction)
	end(k4, "k4", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	end(s5, "s5", packets.ServerShuttingDown)
	end(s4, "s4", 0)
	if n := parkedCount(p.srv); n != 0 {
		t.Fatalf("%d parked after the shutdown", n)
	}
}

// A client's close_notify ends a parked TLS connection; a PUBLISH sent
// just before it (in the same segment) is delivered first.
func TestTLSCloseNotifyWhileParked(t *testing.T) {
	t.Parallel()
	p := tlsParkServer(t, false)
	cfg := p.config(t, 0, "")
	sub, _ := p.dial(t, cfg, "sub", packets.V311, 60, nil)
	sub.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "bye"}}})
	if _, err := sub.recv(); err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	hc := &holdConn{Conn: tcp}
	r, tc := p.dial(t, cfg, "cn", packets.V311, 60, hc)
	waitParked(t, p.srv, 2)
	c := serverClient(t, p.srv, "cn")
	terntestEventually(t, "detached", func() bool { return tlsDetached(p.srv, c) })
	hc.mu.Lock()
	hc.hold = true
	hc.mu.Unlock()
	r.send(&packets.Publish{Topic: "bye", Payload: []byte("last")})
	tc.CloseWrite()                   // close_notify
	tcp.SetWriteDeadline(time.Time{}) // CloseWrite set one in the past
	if _, err := tcp.Write(hc.take()); err != nil {
		t.Fatal(err)
	}
	pk, err := sub.recv()
	if m, ok := pk.(*packets.Publish); err != nil || !ok || string(m.Payload) != "last" {
		t.Fatalf("got %v %v, want the PUBLISH sent before close_notify", pk, err)
	}
	terntestEventually(t, "the connection to end", func() bool { return p.srv.session("cn") == nil })
	// The server answers with its own close_notify.
	tcp.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := tc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after close_notify: %d %v, want io.EOF", n, err)
	}
}

// Parking and waking many TLS connections, then ending them every way,
// leaks no file descriptor.
func TestTLSParkLeaksNoDescriptors(t *testing.T) {
	p := tlsParkServer(t, false)
	cfg := p.config(t, 0, "")
	_, wtc := p.dial(t, cfg, "warm", packets.V311, 60, nil) // starts the poller
	waitParked(t, p.srv, 1)
	wtc.Close()
	terntestEventually(t, "the warm-up connection to end", noClients(p.srv))
	before := openFDs(t)

	const n = 24
	rs := make([]*rawClient, n)
	tcs := make([]*tls.Conn, n)
	for i := range rs {
		rs[i], tcs[i] = p.dial(t, cfg, fmt.Sprintf("fd%d", i), packets.V311, 60, nil)
		rs[i].send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: fmt.Sprintf("t/%d", i)}}})
		if _, err := rs[i].recv(); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 3 {
		waitParked(t, p.srv, n)
		for i, r := range rs {
			if i%2 == 0 { // woken by the client
				r.send(&packets.Publish{Topic: fmt.Sprintf("t/%d", i), Payload: []byte{byte(round)}})
			} else { // woken by a delivery
				p.srv.Publish(fmt.Sprintf("t/%d", i), []byte{byte(round)}, false, 0)
			}
		}
		for i, r := range rs {
			if pk, err := r.recv(); err != nil || pk.Type() != packets.PUBLISH {
				t.Fatalf("round %d, client %d: %v %v", round, i, pk, err)
			}
		}
	}
	waitParked(t, p.srv, n)
	for i, r := range rs {
		switch {
		case i < n/4: // close_notify and close
			tcs[i].Close()
		case i < n/2: // the TCP connection closed under TLS
			tcs[i].NetConn().Close()
		case i < 3*n/4:
			p.srv.Kick(fmt.Sprintf("fd%d", i))
		default:
			r.send(&packets.Pingreq{})
			r.send(&packets.Subscribe{PacketID: 2, Subscriptions: []packets.Subscription{{Filter: "x"}}})
			tcs[i].Close()
		}
	}
	for _, tc := range tcs {
		tc.Close()
	}
	terntestEventually(t, "every connection to end", noClients(p.srv))
	if after := openFDs(t); after != before {
		t.Fatalf("%d open descriptors after %d TLS connections parked and woken 3 times, %d before", after, n, before)
	}
}

// A parked mutual TLS connection keeps its peer's certificate, and the
// identity taken from it (which the auth hooks use as the user name).
func TestTLSParkedKeepsPeerCertificate(t *testing.T) {
	t.Parallel()
	p := tlsParkServer(t, true)
	r, _ := p.dial(t, p.config(t, 0, "device-7"), "m", packets.V5, 60, nil)
	c := serverClient(t, p.srv, "m")
	check := func(when string) {
		t.Helper()
		id, ok := c.Conn().(listeners.Identity)
		if !ok {
			t.Fatalf("%s: %T is not a listeners.Identity", when, c.Conn())
		}
		if certs := id.PeerCertificates(); len(certs) != 1 || certs[0].Subject.CommonName != "device-7" {
			t.Fatalf("%s: peer certificates %v", when, certs)
		}
		if id.Identity() != "device-7" {
			t.Fatalf("%s: identity %q", when, id.Identity())
		}
	}
	check("connected")
	for i := range 2 {
		terntestEventually(t, "detached", func() bool { return tlsDetached(p.srv, c) })
		check("parked")
		r.send(&packets.Pingreq{})
		if pk, err := r.recv(); err != nil || pk.Type() != packets.PINGRESP {
			t.Fatalf("ping %d: %v %v", i, pk, err)
		}
	}
}

// TLS clients that publish and are delivered to at random moments around
// the moment they park (pauses of up to twice parkAfter: the workload, not
// a wait) lose nothing and get everything in order, over TLS 1.2 and 1.3.
func TestTLSParkChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of random traffic")
	}
	t.Parallel()
	p := tlsParkServer(t, false)
	const clients, rounds = 12, 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*clients)
	for i := range clients {
		vers := uint16(tls.VersionTLS13)
		if i%2 == 1 {
			vers = tls.VersionTLS12
		}
		id := fmt.Sprintf("churn%d", i)
		r, _ := p.dial(t, p.config(t, vers, ""), id, packets.V311, 60, nil)
		r.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: id + "/#", QoS: 1}}})
		if _, err := r.recv(); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex // writes from the two goroutines below
		send := func(pk packets.Packet) error {
			b, _ := pk.Encode(nil, packets.V311)
			mu.Lock()
			defer mu.Unlock()
			_, err := r.nc.Write(b)
			return err
		}
		pause := func(seed int) {
			time.Sleep(time.Duration(seed*7919%(2*int(parkAfter/time.Millisecond))) * time.Millisecond)
		}
		wg.Add(2)
		go func() { // the client publishes, the server delivers, each at its own pace
			defer wg.Done()
			for n := range rounds {
				pause(i*rounds + n)
				if err := send(&packets.Publish{Topic: id + "/cli", QoS: 1, PacketID: uint16(100 + n), Payload: []byte{byte(n)}}); err != nil {
					errs <- err
					return
				}
				pause(i*rounds + n + 3)
				if err := p.srv.Publish(id+"/srv", []byte{byte(n)}, false, 1); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() { // reads everything: deliveries of both topics in order, and the PUBACKs
			defer wg.Done()
			next := map[string]byte{}
			acks := 0
			for acks < rounds || next[id+"/cli"] < rounds || next[id+"/srv"] < rounds {
				r.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
				pk, err := packets.ReadPacket(r.nc, packets.V311, 0)
				if err != nil {
					errs <- fmt.Errorf("%s: %v (acks %d, next %v)", id, err, acks, next)
					return
				}
				switch pk := pk.(type) {
				case *packets.Puback:
					acks++
				case *packets.Publish:
					if want := next[pk.Topic]; len(pk.Payload) != 1 || pk.Payload[0] != want {
						errs <- fmt.Errorf("%s: %s payload %v, want [%d]", id, pk.Topic, pk.Payload, want)
						return
					}
					next[pk.Topic]++
					if err := send(&packets.Puback{PacketID: pk.PacketID}); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitParked(t, p.srv, clients)
}

// A small delivery to a parked TLS subscriber whose socket has nothing
// waiting goes through its descriptor: the connection stays parked and
// detached, and its TLS state goes on (the client decrypts each message,
// and its next packet is read).
func TestTLSDeliveryWrittenThrough(t *testing.T) {
	for _, vers := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(vers), func(t *testing.T) {
			t.Parallel()
			p := tlsParkServer(t, false)
			r, _ := p.dial(t, p.config(t, vers, ""), "wt", packets.V5, 60, nil)
			r.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t"}}})
			if _, err := r.recv(); err != nil {
				t.Fatal(err)
			}
			c := serverClient(t, p.srv, "wt")
			for i := range 3 {
				terntestEventually(t, "parked with an empty send queue", func() bool {
					return tlsDetached(p.srv, c) && idleOf(c.conn).sendQueueEmpty()
				})
				if err := p.srv.Publish("t", []byte{byte(i)}, false, 0); err != nil {
					t.Fatal(err)
				}
				pk, err := r.recv()
				if m, ok := pk.(*packets.Publish); err != nil || !ok || len(m.Payload) != 1 || m.Payload[0] != byte(i) {
					t.Fatalf("delivery %d: %v %v", i, pk, err)
				}
				if !tlsDetached(p.srv, c) {
					t.Fatalf("delivery %d revived the connection", i)
				}
			}
			r.send(&packets.Pingreq{})
			if pk, err := r.recv(); err != nil || pk.Type() != packets.PINGRESP {
				t.Fatalf("ping after the deliveries: %v %v", pk, err)
			}
		})
	}
}

// Deliveries larger than what may go through a parked TLS connection's
// descriptor (more than its socket takes, here) revive it, and go out
// through it, in order.
func TestTLSParkedLargeDeliveries(t *testing.T) {
	t.Parallel()
	p := tlsParkServer(t, false)
	r, _ := p.dial(t, p.config(t, 0, ""), "big", packets.V5, 60, nil)
	r.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "big", QoS: 1}}})
	if _, err := r.recv(); err != nil {
		t.Fatal(err)
	}
	c := serverClient(t, p.srv, "big")
	terntestEventually(t, "detached", func() bool { return tlsDetached(p.srv, c) })
	const n, size = 128, 64 << 10 // 8 MB: more than the socket buffers
	for i := range n {
		payload := make([]byte, size)
		payload[0] = byte(i)
		if err := p.srv.Publish("big", payload, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	r.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range n {
		pk, err := packets.ReadPacket(r.nc, packets.V5, 0)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		m, ok := pk.(*packets.Publish)
		if !ok || len(m.Payload) != size || m.Payload[0] != byte(i) {
			t.Fatalf("message %d: %v", i, pk)
		}
		r.send(&packets.Puback{PacketID: m.PacketID})
	}
}
