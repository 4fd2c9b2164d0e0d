package bench

import (
	"context"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
)

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Run: 7, Publisher: 42, Seq: 1 << 31, SentAt: time.Now().UnixNano()}
	b := make([]byte, 64)
	h.Put(b)
	got, err := ParseHeader(b)
	if err != nil || got != h {
		t.Fatalf("ParseHeader = %+v, %v; want %+v", got, err, h)
	}
	if _, err := ParseHeader([]byte("not a bench payload at all")); err == nil {
		t.Fatal("ParseHeader accepted a foreign payload")
	}
	if _, err := ParseHeader(b[:HeaderSize-1]); err == nil {
		t.Fatal("ParseHeader accepted a short payload")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for v := int64(1); v <= 100_000; v++ {
		h.record(v * 1000) // 1 µs .. 100 ms
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		want := q * 100_000 * 1000
		got := float64(h.quantile(q))
		if got < want || got > want*1.02 {
			t.Errorf("quantile(%v) = %v, want %v within 2%%", q, got, want)
		}
	}
	if h.max != 100_000*1000 {
		t.Errorf("max = %d", h.max)
	}
	var empty histogram
	if empty.quantile(0.5) != 0 {
		t.Error("quantile of an empty histogram is not 0")
	}
	for _, v := range []int64{-5, 0, 63, 64, 65, 1 << 20, 1 << 45} {
		if i := bucketOf(v); i < 0 || i >= histBuckets || v >= 0 && v < 1<<40 && bucketUpper(i) < v {
			t.Errorf("bucketOf(%d) = %d, upper %d", v, i, bucketUpper(i))
		}
	}
}

func TestTracker(t *testing.T) {
	p := &publisher{}
	p.sent.Store(10)
	tr := newTracker(p, &client{})
	for _, s := range []uint32{0, 1, 3, 2, 2, 5, 200} {
		tr.add(s)
	}
	if d := tr.distinct.Load(); d != 6 {
		t.Errorf("distinct = %d, want 6", d)
	}
	if tr.dups != 1 || tr.outOfOrder != 1 {
		t.Errorf("dups %d, out of order %d; want 1, 1", tr.dups, tr.outOfOrder)
	}
	if e := tr.expected(); e != 10 {
		t.Errorf("expected = %d, want the 10 sent", e)
	}
	ext := newTracker(nil, &client{})
	for _, s := range []uint32{5, 6, 9} {
		ext.add(s)
	}
	if e := ext.expected(); e != 5 {
		t.Errorf("expected for an outside publisher = %d, want 5 (5..9)", e)
	}
}

func TestConfigValidation(t *testing.T) {
	bad := []Config{
		{Scenario: "nope", Addr: "x:1"},
		{Scenario: Pairs},
		{Scenario: Pairs, Addr: "x:1", Version: 6},
		{Scenario: Pairs, Addr: "x:1", PayloadSize: 10},
		{Scenario: Pairs, Addr: "x:1", QoS: 3},
		{Scenario: Pairs, Addr: "x:1", Window: 70000},
	}
	for _, c := range bad {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	c, err := Config{Scenario: Latency, Addr: "x:1"}.withDefaults()
	if err != nil || c.Rate != 1000 || c.Count != 10 || c.Flow != 1000 || c.Version != packets.V311 {
		t.Errorf("latency defaults: %+v, %v", c, err)
	}
	if _, err := ParseScenario("fanin"); err != nil {
		t.Error(err)
	}
}

// quick returns a short run's configuration against addr.
func quick(sc Scenario, addr string, count int, qos byte) Config {
	return Config{
		Scenario: sc, Addr: addr, Count: count, QoS: qos,
		Duration: 300 * time.Millisecond, Drain: 5 * time.Second, Rate: 5000,
	}
}

func runOK(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.Connect.Failed != 0 {
		t.Fatalf("%s: %d errors, %d failed connects: %s", cfg.Scenario, res.Errors, res.Connect.Failed, res.FirstError)
	}
	return res
}

func TestScenariosAgainstFake(t *testing.T) {
	b := newFakeBroker(t)
	for _, tc := range []struct {
		sc         Scenario
		count      int
		qos        byte
		pubs, subs int
		copies     int64 // deliveries per message sent
	}{
		{Pub, 3, 1, 3, 0, 0},
		{FanIn, 4, 0, 4, 1, 1},
		{FanOut, 4, 1, 1, 4, 4},
		{Pairs, 3, 2, 3, 3, 1},
		{Latency, 3, 0, 3, 3, 1},
	} {
		res := runOK(t, quick(tc.sc, b.addr(), tc.count, tc.qos))
		if res.Publishers != tc.pubs || res.Subscribers != tc.subs {
			t.Errorf("%s: %d publishers, %d subscribers; want %d, %d", tc.sc, res.Publishers, res.Subscribers, tc.pubs, tc.subs)
		}
		if res.Sent == 0 || res.Lost != 0 || res.Duplicates != 0 || res.Unexpected != 0 {
			t.Errorf("%s: sent %d, lost %d, duplicates %d, unexpected %d", tc.sc, res.Sent, res.Lost, res.Duplicates, res.Unexpected)
		}
		if want := res.Sent * tc.copies; res.Received != want || res.Expected != want {
			t.Errorf("%s: received %d of %d expected, want %d", tc.sc, res.Received, res.Expected, want)
		}
		if tc.qos > 0 && res.Acked != res.Sent {
			t.Errorf("%s: acked %d of %d", tc.sc, res.Acked, res.Sent)
		}
	}
}

func TestConnAndRetainedAgainstFake(t *testing.T) {
	b := newFakeBroker(t)
	res := runOK(t, quick(Conn, b.addr(), 20, 0))
	if res.Connect.Succeeded != 20 {
		t.Errorf("conn: %d connected", res.Connect.Succeeded)
	}
	cfg := quick(Retained, b.addr(), 500, 1)
	cfg.Duration = 10 * time.Second
	res = runOK(t, cfg)
	if r := res.Retained; r == nil || r.Stored != 500 || r.Delivered != 500 || res.Lost != 0 {
		t.Fatalf("retained: %+v, lost %d", res.Retained, res.Lost)
	}
	b.mu.Lock()
	left := len(b.retained)
	b.mu.Unlock()
	if left != 0 {
		t.Errorf("%d retained messages left after the run", left)
	}
}

func TestSubCountsOutsidePublishers(t *testing.T) {
	b := newFakeBroker(t)
	ready := make(chan struct{})
	done := make(chan *Result, 1)
	sub := quick(Sub, b.addr(), 2, 1)
	sub.Duration = 20 * time.Second // an upper bound: Limit ends the run
	sub.Limit = 2 * 2 * 300
	sub.Ready = func() { close(ready) }
	go func() {
		res, err := Run(context.Background(), sub)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	select {
	case <-ready:
	case res := <-done:
		t.Fatalf("sub ended early: %+v", res)
	}
	pub := quick(Pub, b.addr(), 2, 1)
	pub.Duration, pub.Limit, pub.Rate = 20*time.Second, 300, 0
	if res := runOK(t, pub); res.Sent != 600 {
		t.Fatalf("pub sent %d, want 600 (2 publishers, limit 300)", res.Sent)
	}
	res := <-done
	if res.Received != 1200 || res.Expected != 1200 || res.Lost != 0 || res.Duplicates != 0 || res.Unexpected != 0 {
		t.Errorf("sub: received %d of %d expected (lost %d, duplicates %d, unexpected %d), want 1200",
			res.Received, res.Expected, res.Lost, res.Duplicates, res.Unexpected)
	}
}

func TestAccountingSeesFaults(t *testing.T) {
	b := newFakeBroker(t)
	b.dropEvery, b.dupEvery = 10, 7
	cfg := quick(Pairs, b.addr(), 1, 1)
	cfg.Duration, cfg.Limit, cfg.Rate, cfg.Drain = 20*time.Second, 700, 0, 300*time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Of 700 routed messages, 70 are dropped; of the 630 others, those whose
	// number is a multiple of 7 but not of 10 (100 - 10) come twice.
	if res.Sent != 700 || res.Lost != 70 || res.Duplicates != 90 || res.Received != 720 {
		t.Errorf("sent %d, received %d, lost %d, duplicates %d; want 700, 720, 70, 90",
			res.Sent, res.Received, res.Lost, res.Duplicates)
	}
}
