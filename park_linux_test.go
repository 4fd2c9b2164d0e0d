package tern

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
)

// parkedCount returns how many connections the server's idle poller holds.
func parkedCount(s *Server) int {
	p := s.poller
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// waitParked waits until n connections of the server are parked.
func waitParked(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for parkedCount(s) != n {
		if time.Now().After(deadline) {
			t.Fatalf("parked connections: %d, want %d", parkedCount(s), n)
		}
		time.Sleep(10 * time.Millisecond) // polling a count: there is no event to wait on
	}
}

type rawClient struct {
	t  *testing.T
	nc net.Conn
	v  byte
}

func (r *rawClient) send(pk packets.Packet) {
	b, err := pk.Encode(nil, r.v)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawClient) recv() (packets.Packet, error) {
	r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	return packets.ReadPacket(r.nc, r.v, 0)
}

// An idle connection gives its goroutine to the idle poller and comes back
// for traffic in either direction, for the keep alive and for shutdown.
func TestIdleConnectionParks(t *testing.T) {
	t.Parallel()
	srv, addr := idleServer(t, false)

	dial := func(id string) *rawClient {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		r := &rawClient{t: t, nc: nc, v: packets.V5}
		r.send(&packets.Connect{ProtocolVersion: packets.V5, ClientID: id, CleanStart: true, KeepAlive: 60})
		if pk, err := r.recv(); err != nil || pk.(*packets.Connack).ReasonCode != 0 {
			t.Fatalf("connect: %v %v", pk, err)
		}
		return r
	}
	sub := dial("sub")
	sub.send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "t", QoS: 1}}})
	if _, err := sub.recv(); err != nil {
		t.Fatal(err)
	}
	waitParked(t, srv, 1)

	// A write to a parked connection needs no reader.
	if err := srv.Publish("t", []byte("x"), false, 1); err != nil {
		t.Fatal(err)
	}
	pk, err := sub.recv()
	if err != nil {
		t.Fatal(err)
	}
	pub := pk.(*packets.Publish)
	// Reading resumes when the client sends.
	sub.send(&packets.Puback{PacketID: pub.PacketID})
	sub.send(&packets.Pingreq{})
	if pk, err := sub.recv(); err != nil || pk.Type() != packets.PINGRESP {
		t.Fatalf("after resume: %v %v", pk, err)
	}
	if n := srv.Stats().InflightOut; n != 0 {
		t.Fatalf("inflight after PUBACK = %d", n)
	}
	waitParked(t, srv, 1)

	// Shutdown reaches a parked connection: DISCONNECT 0x8B, then EOF.
	srv.Close()
	pk, err = sub.recv()
	if err != nil {
		t.Fatalf("expected DISCONNECT: %v", err)
	}
	if d, ok := pk.(*packets.Disconnect); !ok || d.ReasonCode != packets.ServerShuttingDown {
		t.Fatalf("got %v", pk)
	}
	if parkedCount(srv) != 0 {
		t.Fatalf("%d connections still parked after Close", parkedCount(srv))
	}
}

// A parked connection whose keep alive runs out is closed [MQTT-3.1.2-22].
func TestParkedKeepAliveExpires(t *testing.T) {
	t.Parallel()
	srv, err := New(&Options{SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv.AddListener(listeners.NewTCPFromListener("tcp", ln))
	srv.Serve()
	defer srv.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := &rawClient{t: t, nc: nc, v: packets.V5}
	start := time.Now()
	r.send(&packets.Connect{ProtocolVersion: packets.V5, ClientID: "ka", CleanStart: true, KeepAlive: 1})
	if _, err := r.recv(); err != nil {
		t.Fatal(err)
	}
	pk, err := r.recv()
	if err != nil {
		t.Fatalf("expected DISCONNECT 0x8D: %v", err)
	}
	if d, ok := pk.(*packets.Disconnect); !ok || d.ReasonCode != packets.KeepAliveTimeout {
		t.Fatalf("got %v", pk)
	}
	if el := time.Since(start); el < 1400*time.Millisecond {
		t.Fatalf("closed after %v, before 1.5 x keep alive", el)
	}
}

// Two servers in one process each have their own poller: connections park
// with their own server, and shutting one server down stops its poller and
// leaves the other serving its parked connections.
func TestTwoServersParkApart(t *testing.T) {
	t.Parallel()
	start := func() (*Server, string) {
		srv, err := New(&Options{SysInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		srv.AddListener(listeners.NewTCPFromListener("tcp", ln))
		srv.Serve()
		return srv, ln.Addr().String()
	}
	connect := func(addr, id string) *rawClient { return dialRaw(t, addr, id, 60) }
	a, addrA := start()
	b, addrB := start()
	defer b.Close()
	ca := connect(addrA, "ca")
	cb := connect(addrB, "cb")
	waitParked(t, a, 1)
	waitParked(t, b, 1)
	if a.poller == b.poller {
		t.Fatal("the servers share a poller")
	}
	ca.nc.Close() // woken by its poller, its connection ends
	waitParked(t, a, 0)
	a.Close()
	if !a.poller.closed {
		t.Fatal("the closed server's poller still runs")
	}
	cb.send(&packets.Pingreq{})
	if pk, err := cb.recv(); err != nil || pk.Type() != packets.PINGRESP {
		t.Fatalf("the other server's parked client: %v %v", pk, err)
	}
}

// A parked connection woken by a PINGREQ alone is answered by the poller
// itself [MQTT-3.12.4-1] and stays parked: no goroutine, no buffer. A wake
// for anything more resumes the reader, which answers everything in order.
func TestParkedPingAnsweredByPoller(t *testing.T) {
	t.Parallel()
	srv, err := New(&Options{SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP("tcp", "127.0.0.1:0")
	if err := l.Listen(); err != nil {
		t.Fatal(err)
	}
	srv.AddListener(l)
	srv.Serve()
	defer srv.Close()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := &rawClient{t: t, nc: nc, v: packets.V311}
	c.send(&packets.Connect{ProtocolVersion: packets.V311, ClientID: "pinger", KeepAlive: 30, CleanStart: true})
	if _, err := c.recv(); err != nil {
		t.Fatal(err)
	}
	waitParked(t, srv, 1)
	before := srv.poller.pings.Load()
	for range 3 {
		c.send(&packets.Pingreq{})
		if pk, err := c.recv(); err != nil || pk.Type() != packets.PINGRESP {
			t.Fatalf("got %v, %v; want PINGRESP", pk, err)
		}
		waitParked(t, srv, 1)
	}
	if n := srv.poller.pings.Load() - before; n != 3 {
		t.Fatalf("poller answered %d PINGREQs, want 3", n)
	}
	// A PINGREQ with a SUBSCRIBE behind it: the reader takes over.
	b, _ := (&packets.Pingreq{}).Encode(nil, packets.V311)
	b, _ = (&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "p"}}}).Encode(b, packets.V311)
	if _, err := nc.Write(b); err != nil { // one write: one wake sees both
		t.Fatal(err)
	}
	for _, want := range []packets.Type{packets.PINGRESP, packets.SUBACK} {
		if pk, err := c.recv(); err != nil || pk.Type() != want {
			t.Fatalf("got %v, %v; want %v", pk, err, want)
		}
	}
	if n := srv.poller.pings.Load() - before; n != 3 {
		t.Fatalf("poller answered %d PINGREQs, want 3", n)
	}
}

// dialRaw connects a 3.1.1 client with keepAlive to the broker at addr.
func dialRaw(t *testing.T, addr, id string, keepAlive uint16) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	r := &rawClient{t: t, nc: nc, v: packets.V311}
	r.send(&packets.Connect{ProtocolVersion: packets.V311, ClientID: id, CleanStart: true, KeepAlive: keepAlive})
	if _, err := r.recv(); err != nil {
		t.Fatal(err)
	}
	return r
}

// lockedBuffer is a log destination safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// epoll_wait interrupted by a signal (EINTR) is called again and the
// poller goes on; any other error is logged, every parked connection gets
// its reader back (one with no keep alive too, which nothing else would
// wake) and no connection parks again, so the server keeps serving.
func TestPollerEpollWaitErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		err    error
		failed bool
	}{
		{"EINTR is retried", unix.EINTR, false},
		{"EBADF ends parking", unix.EBADF, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := new(lockedBuffer)
			srv, err := New(&Options{SysInterval: -1, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			// Returned by epoll_wait instead of waiting: EINTR once, other
			// errors for good, as a real EBADF would be.
			var inject atomic.Pointer[error]
			srv.poller.wait = func(epfd int, events []unix.EpollEvent, msec int) (int, error) {
				if e := inject.Load(); e != nil {
					if *e == unix.EINTR {
						inject.CompareAndSwap(e, nil)
					}
					return 0, *e
				}
				return unix.EpollWait(epfd, events, msec)
			}
			l := listeners.NewTCP("tcp", "127.0.0.1:0")
			srv.AddListener(l)
			if err := srv.Serve(); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			addr := l.Addr().String()
			ping := func(r *rawClient) {
				t.Helper()
				r.send(&packets.Pingreq{})
				if pk, err := r.recv(); err != nil || pk.Type() != packets.PINGRESP {
					t.Fatalf("got %v, %v; want PINGRESP", pk, err)
				}
			}
			never, b := dialRaw(t, addr, "no-keep-alive", 0), dialRaw(t, addr, "b", 60)
			waitParked(t, srv, 2)

			// The wake for b's PINGREQ is served; the next epoll_wait
			// returns the error.
			inject.Store(&tc.err)
			ping(b)
			ping(never) // woken by the poller, or by the fallback
			ping(b)

			srv.poller.mu.Lock()
			failed := srv.poller.failed
			srv.poller.mu.Unlock()
			if failed != tc.failed {
				t.Fatalf("poller failed: %v, want %v", failed, tc.failed)
			}
			logged := strings.Contains(logs.String(), "epoll_wait failed")
			if logged != tc.failed {
				t.Fatalf("error logged: %v, want %v:\n%s", logged, tc.failed, logs)
			}
			if !tc.failed {
				waitParked(t, srv, 2)
				return
			}
			if n := parkedCount(srv); n != 0 {
				t.Fatalf("%d connections parked after the failure", n)
			}
			if srv.poller.park(&Client{fd: 1 << 20}, 0) {
				t.Fatal("a connection parked after the failure")
			}
			if !strings.Contains(logs.String(), "resumed=2") {
				t.Fatalf("the log does not count the resumed connections:\n%s", logs)
			}
		})
	}
}
