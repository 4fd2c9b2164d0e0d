package pebblestore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ternmq/tern/storage"
)

// Pebble treats a failed write to its log or its MANIFEST as the end of
// the world: the commit pipeline is "horked", it calls Logger.Fatalf, or
// it panics (a failed log rotation). A full disk must not end the broker,
// so the store runs Pebble on guardFS, which never lets Pebble see such a
// failure: a write, a file creation or an fsync that fails with a device
// error (ENOSPC, EDQUOT, EIO, EROFS) is retried, with a growing delay up to
// retryMax, until it succeeds. To Pebble the disk is slow; commits wait;
// nothing is acknowledged that is not written. The store reports itself
// unavailable meanwhile (Store.Health), so the broker refuses what needs
// it, and everything resumes by itself when the disk takes writes again.
//
// A failed fsync is not simply retried: after a writeback error Linux may
// mark the pages clean without having written them, and a second fsync
// succeeds with the data lost. So guardFile keeps a copy of what was
// written to a file since its last successful fsync and writes it again
// before each retry. Tables (.sst, .blob) are the exception: they are
// written once, can be large, and Pebble copes with a failed table write
// by discarding the table and writing it again; their failed fsyncs are
// returned, after retryMax, so that Pebble does not spin.

const (
	retryFirst = 5 * time.Millisecond
	retryMax   = 250 * time.Millisecond
	// maxCopy bounds the copy of unsynced data kept per file. In sync
	// mode the log is fsync'd at every commit and stays far below it. In
	// periodic mode a second of log can pass it: the copy is then dropped
	// until the next fsync (keeping it would cost a copy of every byte
	// logged), and a failed fsync in that window is retried without it,
	// which periodic's own bound (what was acknowledged since the last
	// good fsync) already allows to lose.
	maxCopy = 4 << 20
	// logEvery spaces the error lines about failing writes.
	logEvery = 10 * time.Second
)

// deviceError reports whether err says the device cannot take writes now:
// the errors guardFS waits out instead of returning.
func deviceError(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EROFS)
}

// guardFS is a vfs.FS whose write operations wait out device errors.
type guardFS struct {
	vfs.FS
	log *slog.Logger
	dir string

	waiting atomic.Int32 // stalled, readable without the lock

	mu       sync.Mutex
	stalled  int       // operations waiting for the device now
	since    time.Time // when the current stall began
	what     string    // the operation that failed last
	err      error     // and how
	attempts int64     // failed attempts in the current stall
	stalls   int64     // stalls since the store opened
	logged   time.Time // when a failure was last logged
}

func newGuardFS(inner vfs.FS, dir string, log *slog.Logger) *guardFS {
	return &guardFS{FS: inner, dir: dir, log: log}
}

// Unwrap implements vfs.FS.
func (g *guardFS) Unwrap() vfs.FS { return g.FS }

// health returns nil, or why writes are waiting now.
func (g *guardFS) health() error {
	if g.waiting.Load() == 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stalled == 0 {
		return nil
	}
	return fmt.Errorf("%w: writes to %s failing since %s (%s: %v); retrying until they succeed",
		storage.ErrUnavailable, g.dir, g.since.Format(time.RFC3339), g.what, g.err)
}

func (g *guardFS) stalledNow() bool { return g.waiting.Load() > 0 }

// begin and end bracket an operation that waits for the device.
func (g *guardFS) begin(what string, err error) {
	g.mu.Lock()
	if g.stalled == 0 {
		g.since = time.Now()
		g.attempts = 0
		g.stalls++
	}
	g.stalled++
	g.waiting.Store(int32(g.stalled))
	g.mu.Unlock()
	g.failed(what, err)
}

func (g *guardFS) end() {
	g.mu.Lock()
	g.stalled--
	g.waiting.Store(int32(g.stalled))
	// Say so if the failure was: not after each of the short stalls of a
	// table Pebble keeps writing again.
	done := g.stalled == 0 && !g.logged.Before(g.since)
	since, attempts := g.since, g.attempts
	g.mu.Unlock()
	if done {
		g.log.Warn("storage writes resumed", "dir", g.dir, "after", time.Since(since).Round(time.Millisecond).String(),
			"failed_attempts", attempts)
	}
}

// failed records a failed attempt and logs at most every logEvery.
func (g *guardFS) failed(what string, err error) {
	g.mu.Lock()
	g.what, g.err = what, err
	g.attempts++
	now := time.Now()
	log := now.Sub(g.logged) >= logEvery
	if log {
		g.logged = now
	}
	since, attempts := g.since, g.attempts
	g.mu.Unlock()
	if log {
		g.log.Error("storage writes failing: waiting for the disk, acknowledgements held back", "dir", g.dir,
			"op", what, "err", err, "since", since.Format(time.RFC3339), "failed_attempts", attempts)
	}
}

// retry runs again, after a growing delay, until it succeeds or fails with
// an error that is not a device error; err is the first attempt's error.
func (g *guardFS) retry(what string, err error, again func() error) error {
	if !deviceError(err) {
		return err
	}
	g.begin(what, err)
	defer g.end()
	delay := retryFirst
	for {
		time.Sleep(delay) // waiting for the disk: there is nothing to wait on but time
		if err = again(); err == nil || !deviceError(err) {
			return err
		}
		g.failed(what, err)
		delay = min(2*delay, retryMax)
	}
}

func (g *guardFS) wrap(name string, f vfs.File) vfs.File {
	base := filepath.Base(name)
	return &guardFile{File: f, fs: g, name: base,
		table: strings.HasSuffix(base, ".sst") || strings.HasSuffix(base, ".blob")}
}

// Create implements vfs.FS.
func (g *guardFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.Create(name, cat)
	if err != nil {
		err = g.retry("create "+filepath.Base(name), err, func() (e error) {
			f, e = g.FS.Create(name, cat)
			return e
		})
		if err != nil {
			return nil, err
		}
	}
	return g.wrap(name, f), nil
}

// OpenReadWrite implements vfs.FS.
func (g *guardFS) OpenReadWrite(name string, cat vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := g.FS.OpenReadWrite(name, cat, opts...)
	if err != nil {
		err = g.retry("open "+filepath.Base(name), err, func() (e error) {
			f, e = g.FS.OpenReadWrite(name, cat, opts...)
			return e
		})
		if err != nil {
			return nil, err
		}
	}
	return g.wrap(name, f), nil
}

// ReuseForWrite implements vfs.FS. If a failed attempt renamed the file
// before it failed, the next one opens it under its new name.
func (g *guardFS) ReuseForWrite(oldname, newname string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.ReuseForWrite(oldname, newname, cat)
	if err != nil {
		err = g.retry("reuse "+filepath.Base(newname), err, func() (e error) {
			if _, serr := g.FS.Stat(oldname); errors.Is(serr, os.ErrNotExist) {
				f, e = g.FS.OpenReadWrite(newname, cat)
				return e
			}
			f, e = g.FS.ReuseForWrite(oldname, newname, cat)
			return e
		})
		if err != nil {
			return nil, err
		}
	}
	return g.wrap(newname, f), nil
}

// OpenDir implements vfs.FS: a directory's Sync is retried too.
func (g *guardFS) OpenDir(name string) (vfs.File, error) {
	f, err := g.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &guardFile{File: f, fs: g, name: filepath.Base(name) + "/", dir: true}, nil
}

// Link implements vfs.FS.
func (g *guardFS) Link(oldname, newname string) error {
	err := g.FS.Link(oldname, newname)
	if err != nil {
		err = g.retry("link "+filepath.Base(newname), err, func() error { return g.FS.Link(oldname, newname) })
	}
	return err
}

// Rename implements vfs.FS.
func (g *guardFS) Rename(oldname, newname string) error {
	err := g.FS.Rename(oldname, newname)
	if err != nil {
		err = g.retry("rename "+filepath.Base(newname), err, func() error { return g.FS.Rename(oldname, newname) })
	}
	return err
}

// MkdirAll implements vfs.FS.
func (g *guardFS) MkdirAll(dir string, perm os.FileMode) error {
	err := g.FS.MkdirAll(dir, perm)
	if err != nil {
		err = g.retry("mkdir "+filepath.Base(dir), err, func() error { return g.FS.MkdirAll(dir, perm) })
	}
	return err
}

// guardFile is a file of guardFS. Pebble calls Write, WriteAt and the
// syncs of one file from one goroutine at a time.
type guardFile struct {
	vfs.File
	fs    *guardFS
	name  string
	table bool // a table: failed fsyncs are returned (see above)
	dir   bool // a directory: only Sync

	off    int64  // where the next Write goes
	spans  []span // what was written since the last successful fsync
	copied int    // bytes in spans
	lossy  bool   // spans is incomplete: more than maxCopy was written
}

// span is data written at an offset.
type span struct {
	off  int64
	data []byte
}

// keep copies data written at off, until the next successful fsync.
func (f *guardFile) keep(off int64, p []byte) {
	if f.table || f.lossy || len(p) == 0 {
		return
	}
	if f.copied+len(p) > maxCopy {
		f.spans, f.copied, f.lossy = nil, 0, true
		return
	}
	if n := len(f.spans); n > 0 && f.spans[n-1].off+int64(len(f.spans[n-1].data)) == off {
		f.spans[n-1].data = append(f.spans[n-1].data, p...)
	} else {
		f.spans = append(f.spans, span{off, append([]byte(nil), p...)})
	}
	f.copied += len(p)
}

// synced forgets the copy: it is on the disk.
func (f *guardFile) synced() {
	if len(f.spans) == 1 && cap(f.spans[0].data) <= maxCopy {
		f.spans[0].data = f.spans[0].data[:0] // keep the buffer for the next round
		f.spans = f.spans[:1]
		f.spans[0].off = f.off
	} else {
		f.spans = nil
	}
	f.copied, f.lossy = 0, false
}

// Write implements vfs.File.
func (f *guardFile) Write(p []byte) (int, error) {
	start := f.off
	n, err := f.File.Write(p)
	if err != nil {
		done := n
		err = f.fs.retry("write "+f.name, err, func() error {
			m, e := f.File.Write(p[done:])
			done += m
			return e
		})
		n = done
		if err != nil {
			f.off += int64(n)
			return n, err
		}
	}
	f.keep(start, p)
	f.off += int64(len(p))
	return len(p), nil
}

// WriteAt implements vfs.File.
func (f *guardFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	if err != nil {
		done := n
		err = f.fs.retry("write "+f.name, err, func() error {
			m, e := f.File.WriteAt(p[done:], off+int64(done))
			done += m
			return e
		})
		if err != nil {
			return done, err
		}
	}
	f.keep(off, p)
	return len(p), nil
}

// Sync implements vfs.File.
func (f *guardFile) Sync() error { return f.sync(f.File.Sync) }

// SyncData implements vfs.File.
func (f *guardFile) SyncData() error { return f.sync(f.File.SyncData) }

// SyncTo implements vfs.File. A failure is handled as one of SyncData,
// which then syncs the whole file.
func (f *guardFile) SyncTo(length int64) (bool, error) {
	full, err := f.File.SyncTo(length)
	if err == nil {
		if full {
			f.synced()
		}
		return full, nil
	}
	if err := f.failedSync(err, f.File.SyncData); err != nil {
		return false, err
	}
	return true, nil
}

func (f *guardFile) sync(fsync func() error) error {
	err := fsync()
	if err == nil {
		f.synced()
		return nil
	}
	return f.failedSync(err, fsync)
}

// failedSync handles an fsync that failed with err: tables return it, the
// rest write their unsynced data again and retry until it succeeds.
func (f *guardFile) failedSync(err error, fsync func() error) error {
	if !deviceError(err) {
		return err
	}
	if f.table {
		// Pebble discards the table and writes it again later.
		f.fs.begin("sync "+f.name, err)
		time.Sleep(retryMax)
		f.fs.end()
		return err
	}
	if f.lossy {
		f.fs.log.Error("storage: fsync failed after more was written than is kept for rewriting; retrying it as it is",
			"file", f.name, "err", err)
	}
	err = f.fs.retry("sync "+f.name, err, func() error {
		for _, s := range f.spans {
			if _, err := f.File.WriteAt(s.data, s.off); err != nil {
				return err
			}
		}
		return fsync()
	})
	if err == nil {
		f.synced()
	}
	return err
}
