package tern

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/pebblestore"
)

// TestPagingScale measures the memory of many offline persistent sessions
// with deep queues on the Pebble store, with paging on and off: see
// BENCHMARKS.md (issue 11, paging). It is skipped unless TERN_PAGING_SCALE
// is set; TERN_PAGING_SESSIONS and TERN_PAGING_MESSAGES size it (default
// 100 × 100,000), TERN_PAGING_OFF=1 disables paging. A short version runs
// with the package's tests and checks the structure: with paging, the
// message memory stays within the sessions' shares however deep the
// queues are.
func TestPagingScale(t *testing.T) {
	sessions, msgs := 20, 2000
	if testing.Short() {
		sessions, msgs = 10, 500
	}
	long := os.Getenv("TERN_PAGING_SCALE") != ""
	if long {
		sessions, msgs = envInt(t, "TERN_PAGING_SESSIONS", 100), envInt(t, "TERN_PAGING_MESSAGES", 100_000)
	}
	paging := os.Getenv("TERN_PAGING_OFF") == ""
	const share = 64 << 10
	opts := &Options{MaxQueuedMessages: -1, MaxQueuedBytes: -1, MaxMessageMemory: -1, SysInterval: -1,
		DisablePaging: !paging}
	if !long {
		opts.MaxQueueMemory = share
	}
	res := pagingScale(t, sessions, msgs, opts)
	t.Logf("paging %v, %d sessions × %d QoS 1 messages of 100 bytes: %s", paging, sessions, msgs, res)
	if long || !paging {
		return
	}
	// Each session holds its share in memory at most (the messages are
	// the same for all, so counted once): the rest is paged.
	if res.mem > int64(sessions)*share || res.paged < int64(sessions*(msgs-share/(deliveryCost+100+len("scale/t"))-1)) {
		t.Fatalf("message memory %d for %d sessions of share %d, %d deliveries paged", res.mem, sessions, share, res.paged)
	}
}

type scaleResult struct {
	mem, paged, heap, rss int64
	took                  time.Duration
}

func (r scaleResult) String() string {
	return fmt.Sprintf("message memory %.1f MiB, %d paged, Go heap in use %.1f MiB, RSS %.1f MiB, took %v",
		float64(r.mem)/(1<<20), r.paged, float64(r.heap)/(1<<20), float64(r.rss)/(1<<20), r.took.Round(time.Millisecond))
}

// pagingScale queues msgs QoS 1 messages for each of sessions offline
// persistent sessions and reports the memory held then.
//
// With TERN_PAGING_DIR the store is kept in that directory; with
// TERN_PAGING_RESTORE=1 as well, nothing is published: the server is
// restored from the store there, and what it holds then is reported (run
// it as a process of its own to see the restore's peak RSS).
func pagingScale(t *testing.T, sessions, msgs int, opts *Options) scaleResult {
	dir := os.Getenv("TERN_PAGING_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	o := *opts
	o.Store = st
	start := time.Now()
	s, err := New(&o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(t.Context())
	if os.Getenv("TERN_PAGING_RESTORE") != "" {
		return measureScale(t, s, time.Since(start))
	}
	for i := range sessions {
		id := fmt.Sprintf("scale-%03d", i)
		err := s.ImportSession(&SessionState{Session: storage.Session{ClientID: id, Version: 5, Expiry: 3600},
			Subscriptions: []storage.Subscription{{ClientID: id, Filter: "scale/t", QoS: 1}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	payload := bytes.Repeat([]byte("s"), 100)
	start = time.Now()
	for i := range msgs {
		if err := s.Publish("scale/t", payload, false, 1); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			if err := s.persist.wait(); err != nil { // keep the pending batch in bounds
				t.Fatal(err)
			}
		}
	}
	if err := s.persist.wait(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if q := s.Stats().Queued; q != int64(sessions*msgs) {
		t.Fatalf("queued %d, want %d", q, sessions*msgs)
	}
	return measureScale(t, s, took)
}

// measureScale reports what s holds now.
func measureScale(t *testing.T, s *Server, took time.Duration) scaleResult {
	t.Logf("queued %d", s.Stats().Queued)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return scaleResult{mem: s.mem.used.Load(), paged: s.stats.Paged.Load(), heap: int64(ms.HeapInuse),
		rss: selfRSS(), took: took}
}

// selfRSS returns this process's resident memory in bytes (0 if unknown).
func selfRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
