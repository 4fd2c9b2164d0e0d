package pebblestore_test

import (
	"path/filepath"
	"testing"

	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/pebblestore"
	"github.com/ternmq/tern/storage/storetest"
)

// openAt opens the store in dir and closes it when the test ends.
func openAt(t testing.TB, dir string) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t,
		func(t *testing.T) storage.Store { return openAt(t, t.TempDir()) },
		func(t *testing.T, s storage.Store) storage.Store {
			dir := s.(*pebblestore.Store).Dir()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return openAt(t, dir)
		})
}

func TestOpenCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	s := openAt(t, dir)
	if size, err := s.Size(); err != nil || size <= 0 {
		t.Fatalf("Size = %d, %v", size, err)
	}
	if s.Dir() != dir {
		t.Fatalf("Dir = %q", s.Dir())
	}
}
