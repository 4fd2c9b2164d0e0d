package pebblestore_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/pebblestore"
	"github.com/ternmq/tern/storage/storetest"
)

// makeStore writes a store with a table (2,000 messages, compacted) and a
// log holding 1,000 more, committed with sync, and closes it.
func makeStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(from, to int, sync bool) {
		for i := from; i < to; i += 100 {
			b := s.NewBatch()
			for j := i; j < i+100; j++ {
				b.PutMessage(&storage.Message{ID: uint64(j), Topic: "t", Payload: []byte(strings.Repeat("x", 200))})
			}
			if err := s.Commit(b, sync); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 2000, false)
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	put(2000, 3000, true)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// newest returns the path of the last file in dir whose name matches
// pattern.
func newest(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	slices.Sort(m)
	if len(m) == 0 {
		t.Fatalf("no %s in %s", pattern, dir)
	}
	return m[len(m)-1]
}

// fingerprint returns each file's name and content hash.
func fingerprint(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][32]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = sha256.Sum256(b)
	}
	return out
}

func truncate(t *testing.T, path string) {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
}

// garble flips bytes in the middle of a file.
func garble(t *testing.T, path string, at float64) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := int(float64(len(b)) * at)
	for j := i; j < min(i+16, len(b)); j++ {
		b[j] ^= 0x5A
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptFiles(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		atLoad bool // Open succeeds; Load finds the damage
	}{
		{"truncated MANIFEST", func(t *testing.T, dir string) { truncate(t, newest(t, dir, "MANIFEST-*")) }, false},
		{"garbled MANIFEST", func(t *testing.T, dir string) { garble(t, newest(t, dir, "MANIFEST-*"), 0.5) }, false},
		{"missing MANIFEST", func(t *testing.T, dir string) { os.Remove(newest(t, dir, "MANIFEST-*")) }, false},
		{"missing manifest marker", func(t *testing.T, dir string) {
			os.Remove(newest(t, dir, "marker.manifest.*"))
		}, false},
		{"garbled log", func(t *testing.T, dir string) { garble(t, newest(t, dir, "*.log"), 0.3) }, false},
		{"truncated log", func(t *testing.T, dir string) { truncate(t, newest(t, dir, "*.log")) }, false},
		{"garbled OPTIONS", func(t *testing.T, dir string) { garble(t, newest(t, dir, "OPTIONS-*"), 0.5) }, false},
		// Without a seal (as after a crash) Pebble's own checks must find
		// damage to synced log records and to tables.
		{"garbled synced log, no seal", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "TERN-SEAL"))
			garble(t, newest(t, dir, "*.log"), 0.3)
		}, false},
		{"truncated table, no seal", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "TERN-SEAL"))
			truncate(t, newest(t, dir, "*.sst"))
		}, false},
		{"garbled table, no seal", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "TERN-SEAL"))
			garble(t, newest(t, dir, "*.sst"), 0.3)
		}, true},
		{"garbled seal", func(t *testing.T, dir string) { garble(t, filepath.Join(dir, "TERN-SEAL"), 0.1) }, false},
		{"truncated table", func(t *testing.T, dir string) { truncate(t, newest(t, dir, "*.sst")) }, false},
		{"missing table", func(t *testing.T, dir string) { os.Remove(newest(t, dir, "*.sst")) }, false},
		{"garbled table", func(t *testing.T, dir string) { garble(t, newest(t, dir, "*.sst"), 0.3) }, true},
		{"not a store", func(t *testing.T, dir string) {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				os.Remove(filepath.Join(dir, e.Name()))
			}
			os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello"), 0o600)
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := makeStore(t)
			c.damage(t, dir)
			before := fingerprint(t, dir)
			s, err := pebblestore.Open(dir, pebblestore.Options{})
			if c.atLoad {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				err = s.Load(&storetest.Recorder{})
				s.Close()
			} else if err == nil {
				s.Close()
				t.Fatal("Open of a damaged store succeeded")
			}
			if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("got %v, want ErrCorrupt naming %s", err, dir)
			}
			t.Log(err)
			if after := fingerprint(t, dir); !c.atLoad && !maps.Equal(before, after) {
				t.Fatalf("Open changed the files:\nbefore %v\nafter  %v", keys(before), keys(after))
			}
		})
	}
}

func keys(m map[string][32]byte) []string { return slices.Sorted(maps.Keys(m)) }

// TestSeal checks that a clean Close seals the directory, that Open
// removes the seal, and that a store without one (as after a crash)
// opens.
func TestSeal(t *testing.T) {
	dir := makeStore(t)
	seal := filepath.Join(dir, "TERN-SEAL")
	if _, err := os.Stat(seal); err != nil {
		t.Fatalf("no seal after Close: %v", err)
	}
	s := openAt(t, dir)
	if _, err := os.Stat(seal); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("seal still there after Open: %v", err)
	}
	s.Close()
	os.Remove(seal)
	s = openAt(t, dir)
	var r storetest.Recorder
	if err := s.Load(&r); err != nil || len(r.Messages) != 3000 {
		t.Fatalf("Load: %v, %d messages", err, len(r.Messages))
	}
}

// TestOpenInUse checks that a store open elsewhere is refused without
// being called corrupt, and stays usable.
func TestOpenInUse(t *testing.T) {
	dir := t.TempDir()
	s := openAt(t, dir)
	if _, err := pebblestore.Open(dir, pebblestore.Options{}); err == nil || errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("second Open: %v, want an in-use error", err)
	}
	b := s.NewBatch()
	b.PutRetained("r", 1)
	if err := s.Commit(b, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, dir) // the lock was released
	var r storetest.Recorder
	if err := s.Load(&r); err != nil || len(r.RetainedTopics) != 1 {
		t.Fatalf("Load: %v, %+v", err, r.RetainedTopics)
	}
}
