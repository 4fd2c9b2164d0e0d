// Package history keeps a broker's recent rates and levels in memory, for
// the dashboard's charts: the last 15 minutes at one point a second and
// the last 24 hours at one point every 10 seconds, in two rings allocated
// once (4 bytes per value: 9,540 points of 19 series take 0.7 MB).
//
// Record takes the values of every series at once, each second: counters
// (messages received so far) become rates per second, gauges (clients
// connected) are kept as they are.
package history

import (
	"math"
	"sync"
	"time"
)

// Series names one series and says whether its values are counters.
type Series struct {
	Name    string
	Counter bool // a count since the start: kept as a rate per second
}

// The two resolutions.
const (
	FineStep     = time.Second
	FinePoints   = 900 // 15 minutes
	CoarseStep   = 10 * time.Second
	CoarsePoints = 8640 // 24 hours
)

// History is the two rings. It is safe for concurrent use.
type History struct {
	series []Series

	mu     sync.RWMutex
	fine   ring
	coarse ring
	prev   sample // the last Record, for the fine rates
	prevC  sample // the Record that made the last coarse point
}

type sample struct {
	t    time.Time
	vals []int64
}

// ring holds points of width values each, oldest overwritten first.
type ring struct {
	width int
	times []int64   // unix seconds
	vals  []float32 // point i is vals[i*width : (i+1)*width]
	head  int       // where the next point goes
	n     int       // points held
}

func newRing(points, width int) ring {
	return ring{width: width, times: make([]int64, points), vals: make([]float32, points*width)}
}

func (r *ring) add(t int64, vals []float32) {
	r.times[r.head] = t
	copy(r.vals[r.head*r.width:], vals)
	r.head = (r.head + 1) % len(r.times)
	r.n = min(r.n+1, len(r.times))
}

// New returns an empty History of the series.
func New(series ...Series) *History {
	w := len(series)
	return &History{series: series, fine: newRing(FinePoints, w), coarse: newRing(CoarsePoints, w)}
}

// Series returns the series, in the order Record takes their values.
func (h *History) Series() []Series { return h.series }

// Point is one point of every series, in the order of Series. A counter
// has no value (NaN) in the first point, which has no earlier one.
type Point struct {
	Time   int64 // unix seconds
	Values []float32
}

// Record adds the values of every series at t (one per series, in the
// order of Series) and returns the fine point made, and the coarse point
// when t starts a new 10 seconds (ok false otherwise).
func (h *History) Record(t time.Time, vals []int64) (fine Point, coarse Point, ok bool) {
	if len(vals) != len(h.series) {
		panic("history: Record with the wrong number of values")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	fine = Point{Time: t.Unix(), Values: h.point(h.prev, t, vals)}
	h.fine.add(fine.Time, fine.Values)
	h.prev = sample{t, append(h.prev.vals[:0], vals...)}
	step := int64(CoarseStep / time.Second)
	if h.prevC.vals == nil || t.Unix()/step != h.prevC.t.Unix()/step {
		coarse = Point{Time: t.Unix() / step * step, Values: h.point(h.prevC, t, vals)}
		h.coarse.add(coarse.Time, coarse.Values)
		h.prevC = sample{t, append(h.prevC.vals[:0], vals...)}
		ok = true
	}
	return fine, coarse, ok
}

// point computes a point from the values at t and the sample before.
func (h *History) point(prev sample, t time.Time, vals []int64) []float32 {
	out := make([]float32, len(vals))
	dt := t.Sub(prev.t).Seconds()
	for i, v := range vals {
		switch {
		case !h.series[i].Counter:
			out[i] = float32(v)
		case prev.vals == nil || dt <= 0:
			out[i] = float32(math.NaN())
		default:
			out[i] = float32(float64(max(v-prev.vals[i], 0)) / dt) // a counter never goes back; if it did, 0
		}
	}
	return out
}

// Window is the points of a time range, by series: Values[i] holds series
// i's values at Times, NaN where there is none.
type Window struct {
	Step   time.Duration
	Times  []int64 // unix seconds, oldest first
	Values [][]float32
}

// Last returns the points of the last d: from the fine ring when d is at
// most 15 minutes, else from the coarse one (at most 24 hours).
func (h *History) Last(d time.Duration, now time.Time) Window {
	h.mu.RLock()
	defer h.mu.RUnlock()
	r, step := &h.fine, FineStep
	if d > FinePoints*FineStep {
		r, step = &h.coarse, CoarseStep
	}
	from := now.Add(-d).Unix()
	w := Window{Step: step, Values: make([][]float32, r.width)}
	start := (r.head - r.n + len(r.times)) % len(r.times)
	for k := range r.n {
		i := (start + k) % len(r.times)
		if r.times[i] <= from {
			continue
		}
		w.Times = append(w.Times, r.times[i])
		for s := range r.width {
			w.Values[s] = append(w.Values[s], r.vals[i*r.width+s])
		}
	}
	return w
}
