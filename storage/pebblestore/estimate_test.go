package pebblestore

import (
	"fmt"
	"testing"

	"github.com/ternmq/tern/storage"
)

// EstimateRecords is close to what Load passes (short of what is still in
// the memtable).
func TestEstimateRecords(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	for i := 0; i < n; i += 1000 {
		b := s.NewBatch()
		for j := i; j < i+1000; j++ {
			b.PutMessage(&storage.Message{ID: uint64(j + 1), Topic: fmt.Sprintf("t/%d", j), Payload: make([]byte, 64)})
			b.PutRetained(fmt.Sprintf("t/%d", j), uint64(j+1))
		}
		if err := s.Commit(b, false); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.EstimateRecords()
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(2 * n); got < want*7/10 || got > want*13/10 {
		t.Errorf("EstimateRecords() = %d, want about %d", got, want)
	}
}
