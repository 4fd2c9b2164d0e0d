package tern

import (
	"math"
	"testing"
	"time"
)

// The load averages follow Mosquitto's calc_load: per-minute rates,
// averaged over 1, 5 and 15 minutes with weights exp(-interval/window).
func TestSysLoadAverages(t *testing.T) {
	var l sysLoad
	t0 := time.Unix(1000, 0)
	l.update([numLoads]int64{}, t0)
	// 60 PUBLISH received in 10 s: 360 a minute.
	l.update([numLoads]int64{loadPubReceived: 60}, t0.Add(10*time.Second))
	for w, want := range []float64{360 * (1 - math.Exp(-10.0/60)), 360 * (1 - math.Exp(-10.0/300)), 360 * (1 - math.Exp(-10.0/900))} {
		if got := l.avg[loadPubReceived][w]; math.Abs(got-want) > 1e-9 {
			t.Errorf("window %s: %.4f, want %.4f", loadWindows[w].name, got, want)
		}
	}
	// A steady 360 a minute for long enough: every average reaches it.
	for k := 2; k <= 1000; k++ {
		l.update([numLoads]int64{loadPubReceived: int64(60 * k)}, t0.Add(time.Duration(10*k)*time.Second))
	}
	for w := range loadWindows {
		if got := l.avg[loadPubReceived][w]; math.Abs(got-360) > 0.01 {
			t.Errorf("window %s after a steady rate: %.4f, want 360", loadWindows[w].name, got)
		}
	}
	if l.avg[loadPubSent][0] != 0 {
		t.Errorf("a count that did not move: %v", l.avg[loadPubSent][0])
	}
}
