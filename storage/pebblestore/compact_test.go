package pebblestore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/storetest"
)

// TestCompactionReclaims writes 200,000 messages (256 random bytes each)
// and as many deliveries, deletes them all and checks that the store's
// size comes back down: on its own, through Pebble's background
// compactions, and after Compact. TERN_COMPACT_N sets another count (the
// default is 20,000 with -short or -race).
func TestCompactionReclaims(t *testing.T) {
	n := 200_000
	if testing.Short() || raceEnabled {
		n = 20_000
	}
	if v := os.Getenv("TERN_COMPACT_N"); v != "" {
		fmt.Sscan(v, &n)
	}
	s := openAt(t, t.TempDir())
	size := func() int64 {
		v, err := s.Size()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	payload := make([]byte, 256)
	rng := rand.NewChaCha8([32]byte{})
	const per = 1000
	start := time.Now()
	for i := 0; i < n; i += per {
		b := s.NewBatch()
		for j := i; j < min(i+per, n); j++ {
			rng.Read(payload) // incompressible, like most payloads
			b.PutMessage(&storage.Message{ID: uint64(j), Topic: "sensors/42/temperature", Payload: payload,
				QoS: 1, Origin: "publisher-1", Created: time.Now().UnixNano()})
			b.PutDelivery(&storage.Delivery{ClientID: fmt.Sprint("client-", j%100), Seq: uint64(j), MessageID: uint64(j), QoS: 1})
		}
		if err := s.Commit(b, false); err != nil {
			t.Fatal(err)
		}
	}
	written := size()
	for i := 0; i < n; i += per {
		b := s.NewBatch()
		for j := i; j < min(i+per, n); j++ {
			b.DeleteDelivery(fmt.Sprint("client-", j%100), uint64(j))
			b.DeleteMessage(uint64(j))
		}
		if err := s.Commit(b, false); err != nil {
			t.Fatal(err)
		}
	}
	deleted := size()
	settle := func() int64 { // until background work stops changing the size
		last := size()
		for range 20 {
			time.Sleep(250 * time.Millisecond)
			v := size()
			if v == last {
				break
			}
			last = v
		}
		return last
	}
	settled := settle()
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	compacted := settle()
	t.Logf("%d messages + deliveries (%v): size after writes %d KiB, after deletes %d KiB, "+
		"settled %d KiB, after Compact %d KiB (most of the rest: live and recycled log files)",
		n, time.Since(start).Round(time.Millisecond), written>>10, deleted>>10, settled>>10, compacted>>10)
	// What stays is mostly log files (the live one and up to three kept
	// for reuse, about 4 MiB each), so only a big run must shrink to a
	// third.
	if compacted >= deleted || n >= 200_000 && compacted > written/3 {
		t.Fatalf("size after Compact %d, want well below %d", compacted, written)
	}
	var r storetest.Recorder
	if err := s.Load(&r); err != nil || len(r.Kinds) != 0 {
		t.Fatalf("Load after deleting everything: %v, %d records", err, len(r.Kinds))
	}
}
