package pebblestore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/pebblestore"
)

// faultFS injects an error into the operations that match, while on, and
// reports its free space as told.
type faultFS struct {
	vfs.FS
	on    atomic.Bool
	match func(op errorfs.Op) bool
	err   error

	hitOnce sync.Once
	hit     chan struct{} // closed at the first injection
	hits    atomic.Int64

	free atomic.Int64 // reported free bytes; < 0: the real figure
}

func newFaultFS(err error, match func(op errorfs.Op) bool) *faultFS {
	f := &faultFS{match: match, err: err, hit: make(chan struct{})}
	f.free.Store(-1)
	f.FS = errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if f.on.Load() && f.match(op) {
			f.hits.Add(1)
			f.hitOnce.Do(func() { close(f.hit) })
			return f.err
		}
		return nil
	}))
	return f
}

func (f *faultFS) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	du, err := f.FS.GetDiskUsage(path)
	if n := f.free.Load(); n >= 0 {
		du.AvailBytes = uint64(n)
	}
	return du, err
}

func (f *faultFS) Unwrap() vfs.FS { return f.FS }

func onFiles(suffix string, kinds ...errorfs.OpKind) func(errorfs.Op) bool {
	return func(op errorfs.Op) bool {
		if !strings.HasSuffix(op.Path, suffix) && !strings.Contains(filepath.Base(op.Path), suffix) {
			return false
		}
		for _, k := range kinds {
			if op.Kind == k {
				return true
			}
		}
		return false
	}
}

var writes = []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt, errorfs.OpCreate, errorfs.OpReuseForWrite}
var syncs = []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}

// until waits for cond, which has no event to wait on, up to 10 s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func putMessages(s storage.Store, from, to int) storage.Batch {
	b := s.NewBatch()
	for i := from; i < to; i++ {
		b.PutMessage(&storage.Message{ID: uint64(i), Topic: "t", Payload: []byte(strings.Repeat("p", 100))})
	}
	return b
}

// messageIDs loads a store and returns the ids of its messages.
func messageIDs(t *testing.T, s storage.Store) map[uint64]bool {
	t.Helper()
	l := &idLoader{ids: make(map[uint64]bool)}
	if err := s.Load(l); err != nil {
		t.Fatal(err)
	}
	return l.ids
}

type idLoader struct{ ids map[uint64]bool }

func (l *idLoader) Message(m *storage.Message) error         { l.ids[m.ID] = true; return nil }
func (l *idLoader) Session(*storage.Session) error           { return nil }
func (l *idLoader) Subscription(*storage.Subscription) error { return nil }
func (l *idLoader) Delivery(*storage.Delivery) error         { return nil }
func (l *idLoader) Inbound(string, uint16, int64) error      { return nil }
func (l *idLoader) Retained(string, uint64) error            { return nil }
func (l *idLoader) Will(*storage.Will) error                 { return nil }

func countRange(ids map[uint64]bool, from, to int) (n int) {
	for i := from; i < to; i++ {
		if ids[uint64(i)] {
			n++
		}
	}
	return n
}

// A device error on a write or an fsync never reaches Pebble (which would
// panic or call Fatalf): the write waits, Commit waits with it, Health
// reports the store unavailable, and everything resumes when the error
// stops, with nothing lost and nothing applied twice.
func TestFaultWaitsAndResumes(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		match func(errorfs.Op) bool
		work  func(t *testing.T, s *pebblestore.Store) error // what runs into the fault
	}{
		{"log write ENOSPC", syscall.ENOSPC, onFiles(".log", writes...), commitSync},
		{"log fsync EIO", syscall.EIO, onFiles(".log", syncs...), commitSync},
		{"log fsync ENOSPC", syscall.ENOSPC, onFiles(".log", syncs...), commitSync},
		{"table write ENOSPC", syscall.ENOSPC, onFiles(".sst", writes...), flush},
		{"table fsync EIO", syscall.EIO, onFiles(".sst", syncs...), flush},
		{"manifest write ENOSPC", syscall.ENOSPC, onFiles("MANIFEST", writes...), flush},
		{"manifest fsync EIO", syscall.EIO, onFiles("MANIFEST", syncs...), flush},
		{"directory fsync EIO", syscall.EIO, func(op errorfs.Op) bool {
			return op.Kind == errorfs.OpFileSync && !strings.Contains(filepath.Base(op.Path), ".")
		}, flush},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fs := newFaultFS(tc.err, tc.match)
			s, err := pebblestore.Open(dir, pebblestore.Options{FS: fs})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(putMessages(s, 0, 100), true); err != nil {
				t.Fatal(err)
			}
			fs.on.Store(true)
			done := make(chan error, 1)
			go func() { done <- tc.work(t, s) }()
			select {
			case <-fs.hit:
			case err := <-done:
				t.Fatalf("the work ended (%v) without running into the fault", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the fault was never hit")
			}
			until(t, "Health to report the fault", func() bool { return s.Health() != nil })
			until(t, "retries", func() bool { return fs.hits.Load() >= 3 })
			if err := s.Health(); !errors.Is(err, storage.ErrUnavailable) {
				t.Fatalf("Health() = %v, want ErrUnavailable", err)
			}
			select {
			case err := <-done:
				t.Fatalf("the work returned (%v) while the disk failed", err)
			default:
			}
			fs.on.Store(false)
			if err := <-done; err != nil {
				t.Fatalf("after the fault: %v", err)
			}
			until(t, "Health to recover", func() bool { return s.Health() == nil })
			if err := s.Commit(putMessages(s, 1000, 1100), true); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = pebblestore.Open(dir, pebblestore.Options{})
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer s.Close()
			ids := messageIDs(t, s)
			if n := countRange(ids, 0, 100) + countRange(ids, 200, 300) + countRange(ids, 1000, 1100); n != 300 || len(ids) != 300 {
				t.Fatalf("after the fault the store holds %d messages (%d expected ones), want 300", len(ids), n)
			}
			t.Logf("%d faults injected", fs.hits.Load())
		})
	}
}

// commitSync commits messages 200-299 with sync.
func commitSync(_ *testing.T, s *pebblestore.Store) error {
	return s.Commit(putMessages(s, 200, 300), true)
}

// flush commits messages 200-299 and compacts, which writes tables, a
// MANIFEST and the directory.
func flush(_ *testing.T, s *pebblestore.Store) error {
	if err := s.Commit(putMessages(s, 200, 300), false); err != nil {
		return err
	}
	return s.Compact(context.Background())
}

// With too little free space to open for writing, Open opens read-only:
// the state loads, Commit waits, Health says why; once space is free the
// store reopens for writing by itself and the waiting commit goes through.
func TestOpenReadOnlyWhenFull(t *testing.T) {
	for _, fresh := range []bool{false, true} {
		t.Run(fmt.Sprintf("fresh=%v", fresh), func(t *testing.T) {
			dir := t.TempDir()
			if !fresh {
				s, err := pebblestore.Open(dir, pebblestore.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Commit(putMessages(s, 0, 100), true); err != nil {
					t.Fatal(err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			fs := newFaultFS(nil, func(errorfs.Op) bool { return false })
			fs.free.Store(1000)
			s, err := pebblestore.Open(dir, pebblestore.Options{FS: fs})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Health(); !errors.Is(err, storage.ErrUnavailable) {
				t.Fatalf("Health() = %v, want ErrUnavailable", err)
			}
			want := 100
			if fresh {
				want = 0
			}
			if n := len(messageIDs(t, s)); n != want {
				t.Fatalf("loaded %d messages read-only, want %d", n, want)
			}
			done := make(chan error, 1)
			go func() { done <- s.Commit(putMessages(s, 200, 300), true) }()
			select {
			case err := <-done:
				t.Fatalf("Commit returned (%v) while read-only", err)
			default:
			}
			fs.free.Store(-1)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := s.Health(); err != nil {
				t.Fatalf("Health() = %v after space returned", err)
			}
			if n := len(messageIDs(t, s)); n != want+100 {
				t.Fatalf("%d messages, want %d", n, want+100)
			}
		})
	}
}

// Pebble's Fatalf does not end the process: the store refuses writes from
// then on and says why.
func TestFatalDoesNotPanic(t *testing.T) {
	s, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pebblestore.Fatal(s, "an invariant broke")
	if err := s.Health(); !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "an invariant broke") {
		t.Fatalf("Health() = %v", err)
	}
	if err := s.Commit(putMessages(s, 0, 1), true); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Commit = %v, want ErrUnavailable", err)
	}
	if err := s.Close(); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Close = %v, want ErrUnavailable (not sealed)", err)
	}
}

// A store whose writes wait for the disk is not closed (that would wait
// too): Close returns at once with ErrUnavailable.
func TestCloseWhileStalled(t *testing.T) {
	fs := newFaultFS(syscall.ENOSPC, onFiles(".log", writes...))
	s, err := pebblestore.Open(t.TempDir(), pebblestore.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	fs.on.Store(true)
	done := make(chan error, 1)
	go func() { done <- s.Commit(putMessages(s, 0, 10), true) }()
	<-fs.hit
	until(t, "the stall", func() bool { return s.Health() != nil })
	if err := s.Close(); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Close = %v, want ErrUnavailable", err)
	}
	fs.on.Store(false) // the abandoned database finishes its write
	if err := <-done; err != nil && !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("commit: %v", err)
	}
}
