package tern_test

// Tests of the limits against abusive clients: connection caps, the
// subscription cap, publish rate and bandwidth limits, floods of bad input
// and half-open connections, and a fuzz target over a live connection. In
// each, the offender is stopped with the right reason code and counted,
// and other clients carry on.

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// MaxConnections: connections over the cap are closed at accept, without a
// CONNACK, and counted; a place freed is usable again.
func TestAbuseMaxConnections(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxConnections: 2})
	a := mustConnect(t, srv, packets.V5, "a")
	mustConnect(t, srv, packets.V5, "b")
	over := srv.Dial(t, packets.V5)
	over.Send(&packets.Connect{ProtocolVersion: packets.V5, ClientID: "c", CleanStart: true})
	if got := over.ExpectClosed(); len(got) != 0 {
		t.Fatalf("a connection over the limit got %s", got[0].Type())
	}
	if n := srv.Stats().ConnectionsRejected; n != 1 {
		t.Fatalf("ConnectionsRejected = %d, want 1", n)
	}
	a.Send(&packets.Disconnect{})
	a.ExpectClosed()
	deadline := time.Now().Add(terntest.Timeout)
	for { // the server frees the place once it has finished with a; poll for it
		c := srv.Dial(t, packets.V5)
		c.Send(&packets.Connect{ProtocolVersion: packets.V5, ClientID: "c", CleanStart: true})
		if pk, err := c.TryRecv(time.Second); err == nil && pk.Type() == packets.CONNACK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection accepted after one closed")
		}
	}
}

// A listener's own MaxConnections caps its connections only.
func TestAbuseListenerMaxConnections(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	capped := listeners.NewTCPFromListener("capped", ln)
	capped.MaxConnections = 1
	if err := srv.AddListener(capped); err != nil {
		t.Fatal(err)
	}
	dial := func() *terntest.Conn {
		s := &terntest.Server{Server: srv.Server, Addr: ln.Addr().String()}
		return s.Dial(t, packets.V311)
	}
	dial().MustConnect("first")
	second := dial()
	second.Send(&packets.Connect{ProtocolVersion: packets.V311, ClientID: "second", CleanStart: true})
	second.ExpectClosed()
	mustConnect(t, srv, packets.V311, "other-listener") // the default listener is not capped
}

// MaxSubscriptionsPerClient: a filter beyond the cap gets 0x97 Quota
// exceeded (3.1.1: 0x80), section 3.9.3; replacing an existing one is
// allowed.
func TestAbuseMaxSubscriptions(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{MaxSubscriptionsPerClient: 2})
	for _, v := range []byte{packets.V311, packets.V5} {
		c := mustConnect(t, srv, v, fmt.Sprint("subs", v))
		codes := subscribeRaw(t, c, 1, packets.Subscription{Filter: "a"}, packets.Subscription{Filter: "b"},
			packets.Subscription{Filter: "c"}, packets.Subscription{Filter: "a", QoS: 1})
		quota := packets.QuotaExceeded
		if v != packets.V5 {
			quota = 0x80
		}
		want := []packets.ReasonCode{0, 0, quota, 1}
		for i := range want {
			if codes[i] != want[i] {
				t.Fatalf("v%d: SUBACK %v, want %v", v, codes, want)
			}
		}
	}
	if n := srv.Stats().SubscriptionsRefused; n != 2 {
		t.Fatalf("SubscriptionsRefused = %d, want 2", n)
	}
}

// MaxPublishRate and MaxPublishBytesRate: a client publishing faster is
// disconnected, v5 with 0x96 Message rate too high or 0x97 Quota exceeded,
// and counted; a well-behaved client on the same broker is unaffected.
func TestAbusePublishRates(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    tern.Options
		payload int
		code    packets.ReasonCode
	}{
		{"messages", tern.Options{MaxPublishRate: 20}, 8, packets.MessageRateTooHigh},
		{"bytes", tern.Options{MaxPublishBytesRate: 2048, MaxPacketSize: 1024}, 900, packets.QuotaExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := terntest.NewServer(t, &tc.opts)
			probe := newHealthProbe(t, srv, packets.V5, "probe-"+tc.name)
			for _, v := range []byte{packets.V311, packets.V5} {
				c := mustConnect(t, srv, v, fmt.Sprint("flooder", v))
				var burst []byte
				for i := 0; i < 100; i++ {
					burst, _ = (&packets.Publish{Topic: "flood", Payload: make([]byte, tc.payload)}).Encode(burst, v)
				}
				c.NetConn().Write(burst) // may fail once the server has closed: that is the point
				expectProtocolClose(t, c, tc.code)
				probe.check(t)
			}
			if n := srv.Stats().RateLimited; n != 2 {
				t.Fatalf("RateLimited = %d, want 2", n)
			}
			if n := srv.Stats().ProtocolErrors; n != 0 {
				t.Fatalf("ProtocolErrors = %d, want 0: a rate limit is not a protocol error", n)
			}
		})
	}
}

// A flood of half-open connections (TCP only, or a CONNECT cut short) and
// of connections sending garbage leaves a healthy client's traffic intact;
// the half-open ones are closed by the CONNECT timeout (section 3.1.4).
func TestAbuseFloodOfBadConnections(t *testing.T) {
	t.Parallel()
	// MaxKeepAlive: garbage after a v5 CONNECT may look like the start of
	// a large packet, which a client without keep alive could hold open.
	srv := terntest.NewServer(t, &tern.Options{ConnectTimeout: 500 * time.Millisecond, MaxKeepAlive: 1})
	probe := newHealthProbe(t, srv, packets.V311, "healthy")
	const n = 100
	var wg sync.WaitGroup
	halfOpen := make([]net.Conn, 0, n)
	var mu sync.Mutex
	for i := 0; i < n; i++ {
		wg.Add(2)
		go func(i int) { // half open: nothing, or a partial CONNECT
			defer wg.Done()
			nc, err := net.Dial("tcp", srv.Addr)
			if err != nil {
				return
			}
			if i%2 == 0 {
				nc.Write([]byte{0x10, 0x20, 0x00, 0x04, 'M'})
			}
			mu.Lock()
			halfOpen = append(halfOpen, nc)
			mu.Unlock()
		}(i)
		go func(i int) { // garbage, before or after a CONNECT
			defer wg.Done()
			nc, err := net.Dial("tcp", srv.Addr)
			if err != nil {
				return
			}
			defer nc.Close()
			if i%2 == 0 {
				b, _ := (&packets.Connect{ProtocolVersion: packets.V5, ClientID: fmt.Sprint("junk", i), CleanStart: true}).Encode(nil, packets.V5)
				nc.Write(b)
			}
			junk := make([]byte, 256)
			for j := range junk {
				junk[j] = byte(i*31 + j*17)
			}
			nc.Write(junk)
			nc.SetReadDeadline(time.Now().Add(terntest.Timeout))
			var buf [512]byte
			for { // read until the server closes the connection
				if _, err := nc.Read(buf[:]); err != nil {
					return
				}
			}
		}(i)
	}
	probe.check(t) // while the flood is going on
	wg.Wait()
	probe.check(t)
	for _, nc := range halfOpen { // every half-open connection is closed by the server
		nc.SetReadDeadline(time.Now().Add(terntest.Timeout))
		var buf [8]byte
		if _, err := nc.Read(buf[:]); err == nil {
			t.Fatal("a half-open connection got data")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a half-open connection was not closed by the CONNECT timeout")
		}
		nc.Close()
	}
	probe.check(t)
}

var (
	fuzzOnce  sync.Once
	fuzzSrv   *tern.Server
	fuzzAddr  string
	fuzzProbe *probeConn
)

// probeConn is a long-lived v3.1.1 subscriber/publisher pair for the fuzz
// target, outside any one *testing.T.
type probeConn struct{ pub, sub net.Conn }

// FuzzLiveConnection sends arbitrary bytes on a live connection, after a
// valid CONNECT (v3.1.1 or 5, chosen by the first byte), to a broker shared
// by every input, then checks the broker still routes a message between
// two other clients. Bad input must never crash the broker or disturb
// other clients. Seeds are in testdata/fuzz/FuzzLiveConnection.
func FuzzLiveConnection(f *testing.F) {
	f.Add([]byte{5, 0x30, 0x05, 0x00, 0x01, 'a', 0x00, 'x'})
	f.Add([]byte{4, 0x82, 0x06, 0x00, 0x01, 0x00, 0x01, '#', 0x00})
	f.Add([]byte{5, 0xF0, 0x00})
	f.Add([]byte{4, 0x32, 0x7F, 0xFF, 0xFF, 0xFF})
	f.Add([]byte{5, 0x30, 0x03, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		fuzzOnce.Do(func() { startFuzzBroker(t) })
		v := packets.V311
		if data[0]%2 == 1 {
			v = packets.V5
		}
		nc, err := net.Dial("tcp", fuzzAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		b, _ := (&packets.Connect{ProtocolVersion: v, ClientID: "fuzz", CleanStart: true}).Encode(nil, v)
		nc.Write(append(b, data[1:]...))
		nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		var buf [4096]byte
		for { // read what the broker answers, briefly
			if _, err := nc.Read(buf[:]); err != nil {
				break
			}
		}
		fuzzProbe.check(t)
	})
}

func startFuzzBroker(t *testing.T) {
	var err error
	fuzzSrv, err = tern.New(&tern.Options{SysInterval: -1, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fuzzAddr = ln.Addr().String()
	fuzzSrv.AddListener(listeners.NewTCPFromListener("tcp", ln))
	fuzzSrv.Serve()
	dial := func(id string) net.Conn {
		nc, err := net.Dial("tcp", fuzzAddr)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := (&packets.Connect{ProtocolVersion: packets.V311, ClientID: id, CleanStart: true}).Encode(nil, packets.V311)
		nc.Write(b)
		nc.SetReadDeadline(time.Now().Add(terntest.Timeout))
		if _, err := packets.ReadPacket(nc, packets.V311, 0); err != nil {
			t.Fatal(err)
		}
		return nc
	}
	fuzzProbe = &probeConn{pub: dial("fuzz-probe-pub"), sub: dial("fuzz-probe-sub")}
	b, _ := (&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "probe"}}}).Encode(nil, packets.V311)
	fuzzProbe.sub.Write(b)
	if _, err := packets.ReadPacket(fuzzProbe.sub, packets.V311, 0); err != nil {
		t.Fatal(err)
	}
}

func (p *probeConn) check(t *testing.T) {
	b, _ := (&packets.Publish{Topic: "probe", Payload: []byte("alive")}).Encode(nil, packets.V311)
	p.pub.SetWriteDeadline(time.Now().Add(terntest.Timeout))
	if _, err := p.pub.Write(b); err != nil {
		t.Fatalf("probe publisher: %v", err)
	}
	p.sub.SetReadDeadline(time.Now().Add(terntest.Timeout))
	pk, err := packets.ReadPacket(p.sub, packets.V311, 0)
	if err != nil {
		t.Fatalf("probe subscriber: %v", err)
	}
	if pub, ok := pk.(*packets.Publish); !ok || string(pub.Payload) != "alive" {
		t.Fatalf("probe got %v", pk)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
