package main

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// Memory trimming. Go's garbage collector keeps memory it has freed
// (heap spans, the stacks of goroutines that ended) for reuse and gives it
// back to the system only slowly; an idle program does not even collect
// the garbage a burst left, as no allocation starts a collection. After a
// burst (a connection storm, a backlog drained) the broker would hold that
// memory for nothing, which on a small gateway is memory other processes
// lack.
//
// Every trimEvery the broker looks at what it allocated. Once it has
// allocated more than trimMin and an eighth of the live heap since the
// last trim (a burst, which may have left that much garbage), and the
// burst is over (less than an eighth of that in the last look), it
// collects and returns the freed memory to the system, at most once per
// trimGap. A second trim follows trimAgain later, once the program
// allocates little: what the burst's tail let go after the first
// (connections that parked since, buffers released) is garbage again.
// A look costs a metrics read, a trim a collection.
//
// A trim also renews the stacks of the goroutines the runtime keeps for
// reuse (renewStacks).
const (
	trimEvery = 500 * time.Millisecond
	trimGap   = 10 * time.Second
	trimAgain = 3 * time.Second
	trimMin   = 1 << 20
)

// trimStats is what the trimmer knows at a look, in bytes.
type trimStats struct {
	live      uint64 // live heap at the last collection
	sinceTrim uint64 // allocated since the last trim (or the start)
	allocated uint64 // allocated since the previous look
}

// shouldTrim reports whether a burst that may have left garbage is over.
func shouldTrim(m trimStats) bool {
	burst := max(trimMin, m.live/8)
	return m.sinceTrim >= burst && m.allocated < burst/8
}

// renewStacks makes the ended goroutines the runtime keeps for reuse
// take stacks of the size new goroutines get now. A goroutine that ends
// keeps its stack for the next one if it has the size new goroutines
// start with, which Go sets at each collection from the average stack
// use it saw: during a connection storm (handshakes run deep) 8 or 16 KB,
// once idle 2 KB. The kept goroutines (up to 64 per P, held until reused)
// keep the storm's size: about 2 MB on 2 cores, 200 B per connection
// at 10,000. A goroutine started takes a kept one, and frees its stack
// when the size no longer matches: running that many at once renews
// them all, and the collection that follows returns the old stacks.
func renewStacks() {
	n := 64 * runtime.GOMAXPROCS(0)
	var started, ended sync.WaitGroup
	release := make(chan struct{})
	started.Add(n)
	ended.Add(n)
	for range n {
		go func() {
			defer ended.Done()
			started.Done()
			<-release
		}()
	}
	started.Wait()
	close(release)
	ended.Wait()
}

// startMemoryTrim runs the trimmer until done is closed.
func startMemoryTrim(log *slog.Logger, done <-chan struct{}) {
	samples := []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"}, // allocated since the program started
		{Name: "/gc/heap/live:bytes"},
	}
	go func() {
		t := time.NewTicker(trimEvery)
		defer t.Stop()
		var last, again time.Time
		metrics.Read(samples)
		prev := samples[0].Value.Uint64()
		var sinceTrim uint64
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				metrics.Read(samples)
				total := samples[0].Value.Uint64()
				m := trimStats{live: samples[1].Value.Uint64(), allocated: total - prev}
				prev = total
				sinceTrim += m.allocated
				m.sinceTrim = sinceTrim
				if !again.IsZero() && !now.Before(again) && m.allocated < trimMin/8 {
					again = time.Time{}
					debug.FreeOSMemory()
					log.Debug("returned freed memory to the system again")
					continue
				}
				if now.Sub(last) < trimGap || !shouldTrim(m) {
					continue
				}
				last, again, sinceTrim = now, now.Add(trimAgain), 0
				debug.FreeOSMemory() // a collection: new stacks are sized from now on (see renewStacks)
				renewStacks()
				debug.FreeOSMemory()
				log.Debug("returned freed memory to the system", "allocated_since_last", m.sinceTrim, "live_bytes", m.live)
			}
		}
	}()
}
