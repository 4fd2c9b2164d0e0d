package pebblestore

import (
	"github.com/cockroachdb/pebble/v2"
	"github.com/ternmq/tern/storage"
)

// EstimateRecords returns roughly how many records Load will pass, from
// the tables' properties (entries less deletions), without reading the
// data: cheap enough to call before Load, so that a long restore can say
// how far it has got. Deleted records that compaction has not yet dropped
// make it err on the high side; records still in the memtable (a few MiB
// at most) are not counted.
func (s *Store) EstimateRecords() (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, storage.ErrClosed
	}
	levels, err := s.db.SSTables(pebble.WithProperties())
	if err != nil {
		return 0, s.wrap(err)
	}
	var entries, deletions int64
	for _, level := range levels {
		for _, t := range level {
			if p := t.Properties; p != nil {
				entries += int64(p.NumEntries)
				deletions += int64(p.NumDeletions)
			}
		}
	}
	return max(entries-2*deletions, 0), nil // a deletion is an entry, and hides another
}
