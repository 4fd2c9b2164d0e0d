package admin

import (
	"testing"
	"time"

	"github.com/ternmq/tern/terntest"
)

// BenchmarkSampleOnce is what the Observer spends each second on the
// dashboard's history and stream: the broker's stats, the runtime's
// memory, one point of history and the event sent to the open streams.
//
//	go test -run X -bench SampleOnce ./admin/
func BenchmarkSampleOnce(b *testing.B) {
	o := NewObserver()
	ts := terntest.NewServer(b, nil, o)
	now := time.Now()
	for b.Loop() {
		now = now.Add(time.Second)
		o.sampleOnce(ts.Server, now)
	}
}
