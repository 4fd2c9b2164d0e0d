package bench

import (
	"bytes"
	"context"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
)

func TestDeepFilter(t *testing.T) {
	for _, tc := range []struct {
		first  string
		levels int
	}{{"a", 65_531}, {"c17", 65_531}, {"a", 32_768}, {"a", 10}, {"a", 1}, {"", 65_536}} {
		f, err := deepFilter(tc.first, tc.levels)
		if err != nil {
			t.Fatalf("deepFilter(%q, %d): %v", tc.first, tc.levels, err)
		}
		if n := strings.Count(f, "/") + 1; n != tc.levels || len(f) > maxFilterBytes || !strings.HasPrefix(f, tc.first) {
			t.Errorf("deepFilter(%q, %d): %d levels, %d bytes", tc.first, tc.levels, n, len(f))
		}
		if tc.levels <= 32_768 && tc.first == "a" && strings.Contains(f, "//") {
			t.Errorf("deepFilter(a, %d) has empty levels though \"a\" fits", tc.levels)
		}
	}
	if _, err := deepFilter("abc", 65_535); err == nil {
		t.Error("deepFilter accepted a filter over 65,535 bytes")
	}
}

func TestPartialPublish(t *testing.T) {
	r := &runner{cfg: Config{TopicPrefix: "tb"}}
	for _, declared := range []int{100, 1_000_000, 268_435_455} {
		b := r.partialPublish(declared, 50)
		h, n, err := packets.DecodeFixedHeader(b, 0)
		if err != nil || h.Type != packets.PUBLISH || h.Remaining != declared || len(b) != n+50 {
			t.Errorf("declared %d: header %+v (%d bytes), %v, %d bytes in all", declared, h, n, err, len(b))
		}
		if !bytes.Equal(b[n:n+13], []byte("\x00\x0atb/partialx")) {
			t.Errorf("declared %d: body starts %q", declared, b[n:n+13])
		}
	}
}

func TestGapMeter(t *testing.T) {
	var g gapMeter
	start := time.Unix(100, 0)
	g.open(start, start.Add(10*time.Second))
	at := func(s float64) int64 { return start.Add(time.Duration(s * float64(time.Second))).UnixNano() }
	for _, s := range []float64{-1, 0.5, 1, 4, 4.5, 11} { // -1 and 11 are outside the window
		g.record(at(s))
	}
	if got := g.close(start.Add(10 * time.Second)); got != 5500*time.Millisecond {
		t.Errorf("longest gap %v, want 5.5s (from 4.5 s to the end)", got)
	}
	g.open(start, start.Add(10*time.Second))
	g.record(at(3))
	g.record(at(9))
	if got := g.close(start.Add(4 * time.Second)); got != 6*time.Second {
		t.Errorf("longest gap %v, want 6s", got)
	}
	g.open(start, start.Add(time.Second))
	if got := g.close(start.Add(time.Second)); got != time.Second {
		t.Errorf("gap without deliveries %v, want the whole window", got)
	}
}

func TestSpread(t *testing.T) {
	s := spreadOf([]time.Duration{3 * time.Second, time.Second, 2 * time.Second})
	if s != (Spread{Count: 3, Min: 1, Median: 2, Max: 3}) {
		t.Errorf("spread %+v", s)
	}
	if spreadOf(nil).String() != "none" {
		t.Error("empty spread")
	}
}

// TestPeerClosed checks that a close by the peer is seen without reading,
// also when the peer's FIN waits behind data we never read, and that
// unread data alone does not look like a close.
func TestPeerClosed(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var conns []*rawConn
	var servers []net.Conn
	for range 3 {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.(*net.TCPConn).SetReadBuffer(4096)
		conns = append(conns, &rawConn{nc: nc, tcp: nc.(*net.TCPConn)})
		servers = append(servers, <-accepted)
	}
	// 0 closes after a little data, 1 stays open with data unread, 2 fills
	// our receive window and then closes: its FIN cannot reach us.
	servers[0].Write([]byte("unread data"))
	servers[0].Close()
	servers[1].Write([]byte("unread data"))
	defer servers[1].Close()
	servers[2].(*net.TCPConn).SetWriteBuffer(4096)
	chunk := make([]byte, 64<<10)
	for {
		servers[2].SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := servers[2].Write(chunk); err != nil {
			break
		}
	}
	servers[2].Close()
	w := watchCloses(conns, time.Now(), 10*time.Millisecond)
	if !w.useProc {
		if _, err := os.Stat("/proc/net/tcp"); err != nil {
			t.Skip("no /proc/net/tcp")
		}
		t.Fatal("the far ends are not visible in /proc/net/tcp")
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.closed.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	w.check() // one more after the closes were seen
	closes := w.finish()
	if len(closes) != 2 || w.closedAt[0] == 0 || w.closedAt[1] != 0 || w.closedAt[2] == 0 {
		t.Errorf("closes %v, by connection %v: want the first and the third", closes, w.closedAt)
	}
	if closed, err := peerClosed([]int{conns[2].fd()}); err != nil || closed[0] {
		t.Errorf("poll saw the FIN behind the unread data (%v, %v): the test does not test what it means to", closed, err)
	}
}

// TestStuckAgainstFake runs Stuck briefly, slowly enough that the stuck
// subscribers' socket buffers never fill (the fake broker would block on
// them), and checks the accounting.
func TestStuckAgainstFake(t *testing.T) {
	b := newFakeBroker(t)
	res, err := Run(context.Background(), Config{
		Scenario: Stuck, Addr: b.addr(), Count: 3, Rate: 500, Duration: 200 * time.Millisecond,
		Drain: 5 * time.Second, PayloadSize: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Stuck
	if s == nil || s.Stuck != 3 || len(s.Phases) != 2 || res.Errors != 0 {
		t.Fatalf("stuck %+v, errors %d (%s)", s, res.Errors, res.FirstError)
	}
	for i, ph := range s.Phases {
		if ph.QoS != byte(i) || ph.Published == 0 || ph.Received != ph.Published || ph.MaxGapMs <= 0 {
			t.Errorf("phase %d: %+v", i, ph)
		}
	}
	if ph := s.Phases[1]; ph.Acked != ph.Published {
		t.Errorf("QoS 1: acked %d of %d", ph.Acked, ph.Published)
	}
	if s.Closed != 0 || res.Lost != 0 || res.Duplicates != 0 {
		t.Errorf("closed %d, lost %d, duplicates %d", s.Closed, res.Lost, res.Duplicates)
	}
	var text strings.Builder
	res.WriteText(&text)
	for _, want := range []string{"3 of 3 subscribers stuck", "QoS 1 phase", "0 stuck connections closed"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, text.String())
		}
	}
}

// TestPartialAgainstFake: the fake broker never closes a connection that
// stalls within a packet, so every connection must count as still open at
// the bound.
func TestPartialAgainstFake(t *testing.T) {
	b := newFakeBroker(t)
	res, err := Run(context.Background(), Config{
		Scenario: Partial, Addr: b.addr(), Count: 20, Duration: 100 * time.Millisecond,
		Stress: StressConfig{Parts: "abc", Large: 3, Declared: 10_000, Body: 5_000,
			CloseBound: 200 * time.Millisecond, DripMax: 200 * time.Millisecond, Settle: time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := res.Partial
	if p == nil || p.A == nil || p.B == nil || p.C == nil || res.Errors != 0 {
		t.Fatalf("partial %+v, errors %d (%s)", p, res.Errors, res.FirstError)
	}
	if p.A.Connected != 20 || p.A.StillOpen != 20 || p.A.Closes.Count != 0 {
		t.Errorf("(a) %+v", p.A)
	}
	if p.B.Connected != 3 || p.B.Complete != 3 || p.B.Written != 3*int64(len(res.partialBytes())) || p.B.Closes.Count != 0 {
		t.Errorf("(b) %+v", p.B)
	}
	if p.C.Closed || p.C.Dripped == 0 {
		t.Errorf("(c) %+v", p.C)
	}
}

// partialBytes returns what one (b) connection of the fake run sends.
func (r *Result) partialBytes() []byte {
	return (&runner{cfg: Config{TopicPrefix: "tern-bench"}}).partialPublish(r.Partial.B.Declared, r.Partial.B.Body)
}

func TestFiltersAgainstFake(t *testing.T) {
	b := newFakeBroker(t)
	res, err := Run(context.Background(), Config{
		Scenario: Filters, Addr: b.addr(), Count: 2, QoS: 1,
		Stress: StressConfig{Levels: 1000, Filters: 2500, Batch: 100, SubWindow: 3, Settle: time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := res.Filters
	if f == nil || f.Deep == nil || f.Many == nil || res.Errors != 0 {
		t.Fatalf("filters %+v, errors %d (%s)", f, res.Errors, res.FirstError)
	}
	if f.Deep.First != "0x01" || f.Deep.Answers["0x01"] != 2 || f.Deep.FilterBytes != 1999 {
		t.Errorf("deep %+v", f.Deep)
	}
	if m := f.Many; m.Sent != 2500 || m.Granted != 2500 || m.Refused != 0 || m.Closed {
		t.Errorf("many %+v", m)
	}
}
