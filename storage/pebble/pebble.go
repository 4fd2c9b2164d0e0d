// Package pebble is the embedded, durable [storage.Store]: a Pebble
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
package pebble

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

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
}

// Store is a [storage.Store] kept in a Pebble database. It is safe for
// concurrent use.
type Store struct {
	dir  string
	db   *pebble.DB
	lock *pebble.Lock

	mu     sync.RWMutex // read-held by every operation, write-held by Close
	closed bool
}

var _ storage.Store = (*Store)(nil)

// Open opens the store in dir, creating dir and an empty store if dir does
// not exist or is empty. A directory that holds files but no store, or a
// store whose files are damaged, gives an error wrapping
// [storage.ErrCorrupt]; the files are not touched.
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
	cacheSize := opts.CacheSize
	if cacheSize <= 0 {
		cacheSize = 8 << 20
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "pebble")
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref() // the database holds its own reference
	po := &pebble.Options{
		Cache:              cache,
		MemTableSize:       opts.MemTableSize,
		FormatMajorVersion: pebble.FormatNewest,
		ErrorIfNotExists:   !fresh,
		Lock:               lock,
		Logger:             logger{log},
		EventListener:      eventListener(log),
		// Compact level 0 early (Pebble's default is 4): with a queue's
		// workload level 0 holds mostly tombstones, and compacting them
		// soon gives the space of acknowledged messages back even when
		// writes stop after a burst.
		L0CompactionThreshold: 2,
	}
	if po.MemTableSize == 0 {
		po.MemTableSize = 4 << 20
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, openError(dir, err)
	}
	s := &Store{dir: dir, db: db, lock: lock}
	if err := s.checkSchema(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
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

// checkSchema checks the schema version of an existing store and writes it
// into a new one.
func (s *Store) checkSchema() error {
	v, closer, err := s.db.Get(metaKey)
	if errors.Is(err, pebble.ErrNotFound) {
		it, err := s.db.NewIter(nil)
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
		return s.wrap(s.db.Set(metaKey, binary.AppendUvarint(nil, schemaVersion), pebble.Sync))
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

// NewBatch returns an empty batch for this store.
func (s *Store) NewBatch() storage.Batch { return &batch{s: s, b: s.db.NewBatch()} }

// Commit applies the batch atomically. With sync it returns once the
// batch is in the fsync'd log; Pebble group-commits concurrent sync
// commits.
func (s *Store) Commit(b storage.Batch, sync bool) error {
	pb, ok := b.(*batch)
	if !ok || pb.s != s || pb.b == nil {
		return storage.ErrBatch
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return storage.ErrClosed
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
	return inner.Close()
}

// Sync makes every commit so far durable: it writes an empty record to the
// log and waits for the log's fsync, which covers everything before it.
func (s *Store) Sync() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return storage.ErrClosed
	}
	return s.syncRLocked()
}

func (s *Store) syncRLocked() error { return s.wrap(s.db.LogData(nil, pebble.Sync)) }

// Size reports the space the store's files take on disk, including logs
// and files not yet deleted.
func (s *Store) Size() (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, storage.ErrClosed
	}
	return int64(s.db.Metrics().DiskSpaceUsage()), nil
}

// Compact flushes the memtable and compacts the whole key space, dropping
// deleted records and tombstones from disk. Pebble compacts on its own as
// data is written; Compact is for tests and maintenance.
func (s *Store) Compact(ctx context.Context) error {
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
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return storage.ErrClosed
	}
	s.closed = true
	defer s.lock.Close()
	if err := s.db.Close(); err != nil {
		return s.wrap(err)
	}
	if err := writeSeal(s.dir); err != nil {
		return fmt.Errorf("storage/pebble: sealing %s: %w", s.dir, err)
	}
	return nil
}

// logger passes Pebble's messages to a slog.Logger.
type logger struct{ l *slog.Logger }

// Infof is Pebble's chatter (flushes, compactions, WAL recycling): DEBUG.
func (g logger) Infof(format string, args ...any) { g.l.Debug(fmt.Sprintf(format, args...)) }

func (g logger) Errorf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }

// Fatalf is called when Pebble cannot go on (a failed log write or
// manifest sync, a broken invariant) and must not return: it panics, so
// the process stops with a stack trace instead of carrying on without
// durability.
func (g logger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	g.l.Error(msg)
	panic("storage/pebble: " + msg)
}

// eventListener logs the events an operator needs to see. Corruption found
// while reading is logged, not fatal (Pebble's default): the read that
// found it returns an error wrapping ErrCorrupt.
func eventListener(l *slog.Logger) *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) { l.Error("background error", "err", err) },
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
