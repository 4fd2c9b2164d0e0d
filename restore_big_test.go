package tern_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/storage/pebblestore"
)

// TestRestoreMillionRetained stores 1,000,000 retained messages through the
// broker on Pebble, restarts it and reports how long the restore took. It
// runs only with TERN_BIG=1 (it takes about a minute and 300 MB of disk);
// BENCHMARKS.md records its figures.
func TestRestoreMillionRetained(t *testing.T) {
	if os.Getenv("TERN_BIG") == "" {
		t.Skip("set TERN_BIG=1 to run the 1,000,000 retained messages restore")
	}
	const n = 1_000_000
	dir := t.TempDir()
	st, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := tern.New(&tern.Options{Store: st, SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 64)
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := srv.Publish(fmt.Sprintf("devices/%d/%d/state", i/1000, i%1000), payload, true, 1); err != nil {
			t.Fatal(err)
		}
	}
	srv.Close() // drains the committer and syncs
	t.Logf("stored %d retained messages in %v", n, time.Since(start).Round(time.Millisecond))
	st.Close()
	size := dirSize(dir)

	st, err = pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start = time.Now()
	srv, err = tern.New(&tern.Options{Store: st, SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	defer srv.Close()
	if got := srv.Stats().Retained; got != n {
		t.Fatalf("restored %d retained messages, want %d", got, n)
	}
	t.Logf("restored %d retained messages in %v (%.0f/s); store %d MiB on disk",
		n, took.Round(time.Millisecond), float64(n)/took.Seconds(), size>>20)
}

func dirSize(dir string) int64 {
	var total int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !e.IsDir() {
			total += info.Size()
		}
	}
	return total
}
