// Package pebblestore is the embedded, durable [storage.Store]: a Pebble
// (LSM-tree) database in one directory.
//
// Sync commits wait for the write-ahead log to be fsync'd; Pebble's commit
// pipeline group-commits concurrent ones, so many writers share each fsync.
// Deleted records are removed from disk by Pebble's background
// compactions ([Store.Compact] forces one).
//
// Open never wipes or repairs a store: damaged files make Open (or, for
// damage inside a table, Load) return an error wrapping
// [storage.ErrCorrupt], and the files are left as they were. Close seals
// the directory (a list of its files with sizes and checksums), so that
// any change to them before the next Open is found. After a crash there is
// no seal, and a log or MANIFEST that ends in a torn record is what a crash
// leaves: Pebble drops the unfinished record (no sync commit returned for
// it) and recovers, and finds damage to synced log records and to tables.
//
// A full or failing disk never ends the process (see guard.go): writes that
// fail wait and are retried until the disk takes them, commits wait with
// them, and [Store.Health] reports the store unavailable meanwhile. A store
// opened with too little free space to replay its log is opened read-only,
// so that its state can be loaded and served, and is reopened for writing
// by itself once space returns; commits wait until then.
package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ternmq/tern/storage"
)

// Options configures a store. The zero value is ready to use.
type Options struct {
	// CacheSize is the size of the block cache in bytes; 0 means 8 MiB.
	CacheSize int64
	// MemTableSize is the size of one memtable in bytes; 0 means 4 MiB
	// (Pebble's default). Up to two are in memory at once (one filling,
	// one being flushed). A record deleted before its memtable is flushed
	// never reaches a table (only its tombstone does), so with acks that
	// come quickly acknowledged messages stay off the disk, but for the
	// log.
	MemTableSize uint64
	// Logger receives Pebble's messages and background errors; nil
	// discards them.
	Logger *slog.Logger
	// FS is the file system the database's files are written through;
	// nil means the operating system's. Tests pass one that injects
	// errors (Pebble's vfs/errorfs). The seal and the lock always use the
	// operating system's.
	FS vfs.FS
}

// Store is a [storage.Store] kept in a Pebble database. It is safe for
// concurrent use.
type Store struct {
	dir   string
	lock  *pebble.Lock
	opts  Options
	log   *slog.Logger
	fs    *guardFS
	cache *pebble.Cache

	mu       sync.RWMutex // read-held by every operation on db, write-held to swap db or close
	db       *pebble.DB   // nil while (re)opening, or read-only and fresh
	readOnly bool         // db is read-only: not enough space to open it for writing
	fresh    bool         // the directory held no store when opened
	opening  bool         // recover is opening the database for writing
	closed   bool
	closing  atomic.Bool // Close was called

	writable chan struct{} // closed once db is open for writing
	isWrite  atomic.Bool   // writable is closed
	stop     chan struct{} // closed by Close
	fatal    atomic.Pointer[error]
	failed   chan struct{} // closed on the first fatal error
	failOnce sync.Once
	need     atomic.Int64 // free bytes needed to open for writing, while read-only
}

var (
	_ storage.Store          = (*Store)(nil)
	_ storage.HealthReporter = (*Store)(nil)
)

// Open opens the store in dir, creating dir and an empty store if dir does
// not exist or is empty. A directory that holds files but no store, or a
// store whose files are damaged, gives an error wrapping
// [storage.ErrCorrupt]; the files are not touched.
//
// When the file system has less free space than opening for writing needs
// (about the size of the log files, which Pebble replays into a new table),
// the store opens read-only: Load works, Commit and Sync wait, Health
// reports why, and the store reopens for writing by itself once enough
// space is free.
func Open(dir string, opts Options) (*Store, error) {
	fresh, err := isFresh(dir)
	if err != nil {
		return nil, fmt.Errorf("storage/pebble: %w", err)
	}
	if fresh {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("storage/pebble: %w", err)
		}
	} else if m, _ := filepath.Glob(filepath.Join(dir, "marker.manifest.*")); len(m) == 0 {
		return nil, fmt.Errorf("%w: %s holds files but no store (no MANIFEST marker)", storage.ErrCorrupt, dir)
	}
	// Hold the lock from before the seal is checked until after it is
	// written again.
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err != nil {
		return nil, fmt.Errorf("storage/pebble: %s is in use: %w", dir, err)
	}
	s, err := open(dir, fresh, lock, opts)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

func open(dir string, fresh bool, lock *pebble.Lock, opts Options) (*Store, error) {
	if !fresh {
		if err := checkSeal(dir); err != nil {
			return nil, err
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "pebble")
	inner := opts.FS
	if inner == nil {
		inner = vfs.Default
	}
	cacheSize := opts.CacheSize
	if cacheSize <= 0 {
		cacheSize = 8 << 20
	}
	if opts.MemTableSize == 0 {
		opts.MemTableSize = 4 << 20
	}
	s := &Store{dir: dir, lock: lock, opts: opts, log: log, fs: newGuardFS(inner, dir, log),
		cache: pebble.NewCache(cacheSize), fresh: fresh,
		writable: make(chan struct{}), stop: make(chan struct{}), failed: make(chan struct{})}
	need, free, ok := s.space()
	if ok && free < need {
		if err := s.openReadOnly(); err != nil {
			s.cache.Unref()
			return nil, err
		}
		s.need.Store(need)
		log.Error("not enough free space to open the store for writing: opened read-only; writes wait until space is freed",
			"dir", dir, "free_bytes", free, "needed_bytes", need)
		go s.recover()
		return s, nil
	}
	db, err := s.openDB(false)
	if err != nil {
		s.cache.Unref()
		return nil, err
	}
	s.db = db
	s.setWritable()
	return s, nil
}

func (s *Store) setWritable() {
	s.isWrite.Store(true)
	close(s.writable)
}

// pebbleOptions returns the options of the database.
func (s *Store) pebbleOptions(readOnly bool) *pebble.Options {
	return &pebble.Options{
		Cache:              s.cache,
		MemTableSize:       s.opts.MemTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		ErrorIfNotExists:   !s.fresh,
		ReadOnly:           readOnly,
		Lock:               s.lock,
		FS:                 s.fs,
		Logger:             logger{s},
		EventListener:      eventListener(s.log),
		// Compact level 0 early (Pebble's default is 4): with a queue's
		// workload level 0 holds mostly tombstones, and compacting them
		// soon gives the space of acknowledged messages back even when
		// writes stop after a burst.
		L0CompactionThreshold: 2,
	}
}

// openDB opens the database and checks (for writing: writes) its schema
// version.
func (s *Store) openDB(readOnly bool) (*pebble.DB, error) {
	db, err := pebble.Open(s.dir, s.pebbleOptions(readOnly))
	if err != nil {
		return nil, openError(s.dir, err)
	}
	if err := s.checkSchema(db, readOnly); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// openReadOnly opens the database read-only, or nothing for a fresh store.
func (s *Store) openReadOnly() error {
	s.readOnly = true
	if s.fresh {
		return nil
	}
	db, err := s.openDB(true)
	if err != nil {
		return err
	}
	s.db = db
	return nil
}

// space returns the free bytes opening the store for writing needs, and
// those free on its file system; ok is false when the file system cannot
// tell. Opening replays the log files into a table and writes a new
// MANIFEST and OPTIONS file; the log files counted include recycled ones,
// so this errs on the side of waiting.
func (s *Store) space() (need, free int64, ok bool) {
	du, err := s.fs.GetDiskUsage(s.dir)
	if err != nil {
		return 0, 0, false
	}
	need = 1 << 20
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, ".log") || strings.HasPrefix(n, "MANIFEST-") {
			if fi, err := e.Info(); err == nil {
				need += fi.Size()
			}
		}
	}
	return need, int64(du.AvailBytes), true
}

// recover waits, while the store is read-only, until there is space to
// open it for writing, and does.
func (s *Store) recover() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		need, free, ok := s.space()
		s.need.Store(need)
		if ok && free < need {
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		ro := s.db
		s.db, s.opening = nil, true
		s.mu.Unlock()
		if ro != nil {
			ro.Close()
		}
		db, err := s.openDB(false) // may wait for the disk, as any write
		s.mu.Lock()
		s.opening = false
		switch {
		case err != nil:
			s.mu.Unlock()
			s.setFatal(fmt.Errorf("reopening for writing: %w", err))
			return
		case s.closed:
			s.mu.Unlock()
			db.Close()
			s.lock.Close()
			return
		}
		s.db, s.readOnly = db, false
		s.mu.Unlock()
		s.setWritable()
		s.log.Warn("store reopened for writing: space was freed", "dir", s.dir, "free_bytes", free)
		return
	}
}

// waitWritable waits until the store is open for writing.
func (s *Store) waitWritable() error {
	select {
	case <-s.writable:
		return nil
	default:
	}
	select {
	case <-s.writable:
		return nil
	case <-s.stop:
		return storage.ErrClosed
	case <-s.failed:
		return s.fatalErr()
	}
}

// setFatal records an error after which the database cannot be trusted to
// write: Pebble's Fatalf, or a failed reopen. The store refuses writes from
// then on; a restart is needed.
func (s *Store) setFatal(err error) {
	if s.fatal.CompareAndSwap(nil, &err) {
		s.log.Error("store failed: writes refused until restart", "dir", s.dir, "err", err)
		s.failOnce.Do(func() { close(s.failed) })
	}
}

func (s *Store) fatalErr() error {
	if p := s.fatal.Load(); p != nil {
		return fmt.Errorf("%w: %s: %v (restart the broker)", storage.ErrUnavailable, s.dir, *p)
	}
	return nil
}

// Health implements [storage.HealthReporter]: nil while the store writes,
// or why it does not: a fatal error, a read-only open for lack of space,
// or writes waiting for a full or failing disk.
func (s *Store) Health() error {
	if err := s.fatalErr(); err != nil {
		return err
	}
	if !s.isWrite.Load() {
		return fmt.Errorf("%w: %s: not enough free space to open for writing (%d bytes needed): read-only until space is freed",
			storage.ErrUnavailable, s.dir, s.need.Load())
	}
	return s.fs.health()
}

// isFresh reports whether dir is missing or holds nothing but a lock file
// (left by an Open that failed before it wrote anything).
func isFresh(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if e.Name() != "LOCK" {
			return false, nil
		}
	}
	return true, nil
}

// openError classifies an error of pebble.Open. Pebble marks damage it
// finds in the log and the manifest as corruption; a table missing or of
// the wrong size, or a manifest it cannot decode, comes back unmarked, so
// any error that is not about the file system itself counts as damage.
func openError(dir string, err error) error {
	var pathErr *os.PathError
	switch {
	case errors.Is(err, pebble.ErrDBDoesNotExist):
		return fmt.Errorf("%w: %s holds files but no store", storage.ErrCorrupt, dir)
	case pebble.IsCorruptionError(err):
		return fmt.Errorf("%w: %s: %s", storage.ErrCorrupt, dir, err.Error())
	case errors.Is(err, os.ErrPermission), errors.As(err, &pathErr) && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("storage/pebble: open %s: %w", dir, err)
	default:
		return fmt.Errorf("%w: %s: %s", storage.ErrCorrupt, dir, err.Error())
	}
}

// checkSchema checks the schema version of an existing store and, unless
// read-only, writes it into a new one.
func (s *Store) checkSchema(db *pebble.DB, readOnly bool) error {
	v, closer, err := db.Get(metaKey)
	if errors.Is(err, pebble.ErrNotFound) {
		it, err := db.NewIter(nil)
		if err != nil {
			return s.wrap(err)
		}
		empty := !it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return s.wrap(err)
		}
		if !empty {
			return fmt.Errorf("%w: %s holds data but no schema version: not a tern store", storage.ErrCorrupt, s.dir)
		}
		if readOnly {
			return nil
		}
		return s.wrap(db.Set(metaKey, binary.AppendUvarint(nil, schemaVersion), pebble.Sync))
	}
	if err != nil {
		return s.wrap(err)
	}
	defer closer.Close()
	ver, n := binary.Uvarint(v)
	switch {
	case n <= 0 || n != len(v):
		return fmt.Errorf("%w: %s: bad schema version record %x", storage.ErrCorrupt, s.dir, v)
	case ver != schemaVersion:
		return fmt.Errorf("%w: %s: schema version %d, this build reads %d", storage.ErrCorrupt, s.dir, ver, schemaVersion)
	}
	return nil
}

// wrap marks errors Pebble reports as corruption with storage.ErrCorrupt.
func (s *Store) wrap(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrCorrupt):
		return err
	case pebble.IsCorruptionError(err):
		return fmt.Errorf("%w: %s: %s", storage.ErrCorrupt, s.dir, err.Error())
	default:
		return fmt.Errorf("storage/pebble: %s: %w", s.dir, err)
	}
}

// Dir returns the directory the store lives in.
func (s *Store) Dir() string { return s.dir }

// NewBatch returns an empty batch for this store. Pebble's pooled batches
// belong to one database: until the store is open for writing, batches
// are made without one.
func (s *Store) NewBatch() storage.Batch {
	select {
	case <-s.writable:
		s.mu.RLock()
		defer s.mu.RUnlock()
		if s.db != nil {
			return &batch{s: s, b: s.db.NewBatch()}
		}
	default:
	}
	return &batch{s: s, b: new(pebble.Batch)}
}

// Commit applies the batch atomically. With sync it returns once the
// batch is in the fsync'd log; Pebble group-commits concurrent sync
// commits. While the store is read-only (see Open), or its disk does not
// take writes, Commit waits.
func (s *Store) Commit(b storage.Batch, sync bool) error {
	pb, ok := b.(*batch)
	if !ok || pb.s != s || pb.b == nil {
		return storage.ErrBatch
	}
	if err := s.waitWritable(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.closing.Load() {
		return storage.ErrClosed
	}
	if err := s.fatalErr(); err != nil {
		return err
	}
	inner := pb.b
	pb.b = nil
	if inner.Empty() {
		inner.Close()
		if sync {
			return s.syncRLocked()
		}
		return nil
	}
	wo := pebble.NoSync
	if sync {
		wo = pebble.Sync
	}
	if err := s.db.Apply(inner, wo); err != nil {
		return s.wrap(err)
	}
	// Pebble's commit reports a failed log write through Fatalf and
	// carries on as if it had succeeded.
	if err := s.fatalErr(); err != nil {
		return err
	}
	return inner.Close()
}

// Sync makes every commit so far durable: it writes an empty record to the
// log and waits for the log's fsync, which covers everything before it.
func (s *Store) Sync() error {
	if err := s.waitWritable(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.closing.Load() {
		return storage.ErrClosed
	}
	return s.syncRLocked()
}

func (s *Store) syncRLocked() error {
	if err := s.fatalErr(); err != nil {
		return err
	}
	if err := s.wrap(s.db.LogData(nil, pebble.Sync)); err != nil {
		return err
	}
	return s.fatalErr()
}

// Size reports the space the store's files take on disk, including logs
// and files not yet deleted.
func (s *Store) Size() (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, storage.ErrClosed
	}
	if s.db == nil {
		return 0, nil
	}
	return int64(s.db.Metrics().DiskSpaceUsage()), nil
}

// Compact flushes the memtable and compacts the whole key space, dropping
// deleted records and tombstones from disk. Pebble compacts on its own as
// data is written; Compact is for tests and maintenance.
func (s *Store) Compact(ctx context.Context) error {
	if err := s.waitWritable(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return storage.ErrClosed
	}
	return s.wrap(s.db.Compact(ctx, []byte{kindMeta}, []byte{numKinds}, true))
}

// Close closes the database, waiting for commits in progress, and seals
// the directory (see seal.go) so that the next Open can tell damage from a
// crash. Commits that were not synced are still written to the log, so a
// clean Close loses nothing.
//
// A store whose writes are waiting for the disk is not closed (closing
// would wait with them): Close returns an error wrapping
// storage.ErrUnavailable, and the next Open recovers from the log as after
// a crash. Every commit that returned is in the log; with sync, fsync'd.
func (s *Store) Close() error {
	if !s.closing.CompareAndSwap(false, true) {
		return storage.ErrClosed
	}
	close(s.stop) // commits waiting for the store to open for writing give up
	// A commit stalled in Pebble holds the read lock.
	for !s.mu.TryLock() {
		if s.fs.stalledNow() {
			return fmt.Errorf("%w: %s: closed while writes were waiting for the disk: not flushed or sealed",
				storage.ErrUnavailable, s.dir)
		}
		time.Sleep(time.Millisecond)
	}
	defer s.mu.Unlock()
	s.closed = true
	defer s.cache.Unref()
	switch {
	case s.fs.stalledNow():
		return fmt.Errorf("%w: %s: closed while writes were waiting for the disk: not flushed or sealed", storage.ErrUnavailable, s.dir)
	case s.opening:
		return nil // recover closes what it opens, and the lock
	case s.db == nil:
		return s.lock.Close()
	case s.readOnly:
		// Nothing was written: no seal (it needs space), the next Open
		// sees the files as after a crash.
		return errors.Join(s.db.Close(), s.lock.Close())
	}
	defer s.lock.Close()
	if err := s.db.Close(); err != nil {
		return s.wrap(err)
	}
	if s.fatal.Load() != nil {
		return s.fatalErr() // not sealed: the files may not be what Pebble thinks
	}
	if err := writeSeal(s.dir); err != nil {
		return fmt.Errorf("storage/pebble: sealing %s: %w", s.dir, err)
	}
	return nil
}

// logger passes Pebble's messages to the store's slog.Logger.
type logger struct{ s *Store }

// Infof is Pebble's chatter (flushes, compactions, WAL recycling): DEBUG.
func (g logger) Infof(format string, args ...any) { g.s.log.Debug(fmt.Sprintf(format, args...)) }

func (g logger) Errorf(format string, args ...any) { g.s.log.Error(fmt.Sprintf(format, args...)) }

// Fatalf is called when Pebble cannot go on (a broken invariant; a failed
// log or MANIFEST write, which guardFS keeps from happening). It must not
// end the broker: the store records the error and refuses writes from
// then on (Health reports it), and the broker keeps serving what needs no
// store. Pebble's callers carry on after Fatalf as if it had returned an
// error, which the store's Commit checks for.
func (g logger) Fatalf(format string, args ...any) {
	g.s.setFatal(errors.New("pebble: " + fmt.Sprintf(format, args...)))
}

// eventListener logs the events an operator needs to see. Corruption found
// while reading is logged, not fatal (Pebble's default): the read that
// found it returns an error wrapping ErrCorrupt. Background errors (a
// table that could not be written, retried by Pebble) are logged at most
// every logEvery, with a count.
func eventListener(l *slog.Logger) *pebble.EventListener {
	var mu sync.Mutex
	var last time.Time
	var skipped int
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			mu.Lock()
			now := time.Now()
			if now.Sub(last) < logEvery {
				skipped++
				mu.Unlock()
				return
			}
			last = now
			n := skipped
			skipped = 0
			mu.Unlock()
			l.Error("background error", "err", err, "more_since_last_logged", n)
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			l.Error("data corruption", "path", info.Path, "err", info.Details)
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			l.Warn("disk slow", "path", info.Path, "op", info.OpType.String(), "duration", info.Duration)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) { l.Warn("write stall", "reason", info.Reason) },
		WriteStallEnd:   func() { l.Info("write stall ended") },
	}
}
