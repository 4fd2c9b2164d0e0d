package history

import (
	"math"
	"runtime"
	"testing"
	"time"
)

func TestRecord(t *testing.T) {
	h := New(Series{Name: "msgs", Counter: true}, Series{Name: "clients"})
	t0 := time.Unix(1_000_000, 0) // a multiple of 10 s
	for _, tc := range []struct {
		at          time.Duration
		msgs, conns int64
		rate        float64 // NaN: none
		coarse      bool
	}{
		{0, 100, 3, math.NaN(), true},
		{time.Second, 110, 4, 10, false},
		{3 * time.Second, 150, 4, 20, false}, // a late sample: the rate over 2 s
		{4 * time.Second, 140, 5, 0, false},  // a counter that went back: 0, not negative
		{10 * time.Second, 200, 5, 10, true}, // 60 over 6 s
	} {
		fine, coarse, ok := h.Record(t0.Add(tc.at), []int64{tc.msgs, tc.conns})
		if fine.Time != t0.Add(tc.at).Unix() || fine.Values[1] != float32(tc.conns) || !same(fine.Values[0], tc.rate) {
			t.Errorf("at %v: fine %+v, want rate %v", tc.at, fine, tc.rate)
		}
		if ok != tc.coarse {
			t.Errorf("at %v: coarse point %v, want %v", tc.at, ok, tc.coarse)
		}
		if ok && coarse.Time%10 != 0 {
			t.Errorf("at %v: coarse point at %d, not on a 10 s boundary", tc.at, coarse.Time)
		}
	}
	// The second coarse point: 100 messages in 10 s.
	w := h.Last(time.Hour, t0.Add(10*time.Second))
	if w.Step != CoarseStep || len(w.Times) != 2 || !same(w.Values[0][1], 10) || w.Values[1][1] != 5 {
		t.Errorf("coarse window %+v", w)
	}
}

func TestLastWraps(t *testing.T) {
	h := New(Series{Name: "g"})
	t0 := time.Unix(2_000_000, 0)
	const n = FinePoints + 100
	for i := range n {
		h.Record(t0.Add(time.Duration(i)*time.Second), []int64{int64(i)})
	}
	now := t0.Add((n - 1) * time.Second)
	for _, tc := range []struct {
		d     time.Duration
		step  time.Duration
		count int
		first float32
	}{
		{time.Minute, FineStep, 60, n - 60},
		{15 * time.Minute, FineStep, FinePoints, n - FinePoints},
		{time.Hour, CoarseStep, n / 10, 0}, // at 0, 10, ... 990 s
	} {
		w := h.Last(tc.d, now)
		if w.Step != tc.step || len(w.Times) != tc.count || w.Values[0][0] != tc.first {
			t.Errorf("Last(%v): step %v, %d points from %v; want %v, %d from %v", tc.d, w.Step, len(w.Times),
				w.Values[0][0], tc.step, tc.count, tc.first)
		}
		for i := 1; i < len(w.Times); i++ {
			if w.Times[i] <= w.Times[i-1] {
				t.Fatalf("Last(%v): times out of order at %d", tc.d, i)
			}
		}
	}
}

func same(got float32, want float64) bool {
	if math.IsNaN(want) {
		return math.IsNaN(float64(got))
	}
	return math.Abs(float64(got)-want) < 1e-6
}

// BenchmarkHistory reports what a History of the admin's 19 series holds
// (bytes allocated by New: both rings) and what one Record costs.
//
//	go test -run X -bench History ./admin/history/
func BenchmarkHistory(b *testing.B) {
	series := make([]Series, 19)
	for i := range series {
		series[i] = Series{Name: "s", Counter: i < 15}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h := New(series...)
	runtime.ReadMemStats(&after)
	vals := make([]int64, len(series))
	t := time.Unix(1_000_000, 0)
	b.ResetTimer()
	for b.Loop() {
		t = t.Add(time.Second)
		for i := range vals {
			vals[i] += 7
		}
		h.Record(t, vals)
	}
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc), "bytes/history")
}
