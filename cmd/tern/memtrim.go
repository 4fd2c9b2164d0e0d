package main

import (
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Memory trimming. Go's garbage collector keeps memory it has freed
// (heap spans, the stacks of goroutines that ended) for reuse and gives it
// back to the system only slowly. After a burst (a connection storm, a
// backlog drained) the broker would hold that memory for nothing, which on
// a small gateway is memory other processes lack. Every trimEvery the
// broker looks at the memory it could give back; when that is more than
// trimMin and an eighth of the live heap, it collects and returns it, at
// most once per trimGap.
const (
	trimEvery = 10 * time.Second
	trimGap   = time.Minute
	trimMin   = 4 << 20
)

// startMemoryTrim runs the trimmer until done is closed.
func startMemoryTrim(log *slog.Logger, done <-chan struct{}) {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/free:bytes"},    // freed spans, not yet returned
		{Name: "/memory/classes/heap/stacks:bytes"},  // goroutine stacks, most of them cached after a burst
		{Name: "/memory/classes/heap/objects:bytes"}, // live and dead, not yet swept, objects
		{Name: "/gc/heap/live:bytes"},                // live at the last collection
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/gc/stack/starting-size:bytes"},
	}
	go func() {
		t := time.NewTicker(trimEvery)
		defer t.Stop()
		var last time.Time
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				if now.Sub(last) < trimGap {
					continue
				}
				metrics.Read(samples)
				free, stacks := samples[0].Value.Uint64(), samples[1].Value.Uint64()
				objects, live := samples[2].Value.Uint64(), samples[3].Value.Uint64()
				inUse := samples[4].Value.Uint64() * samples[5].Value.Uint64() // stacks of live goroutines, at least
				reclaimable := free + (stacks - min(stacks, inUse)) + (objects - min(objects, live))
				if reclaimable < trimMin || reclaimable < live/8 {
					continue
				}
				last = now
				debug.FreeOSMemory()
				log.Debug("returned freed memory to the system", "reclaimable_bytes", reclaimable, "live_bytes", live)
			}
		}
	}()
}
