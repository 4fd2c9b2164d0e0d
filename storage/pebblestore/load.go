package pebblestore

import (
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"

	"github.com/ternmq/tern/storage"
)

// Load passes the stored state to l in one scan of the key space, which is
// ordered the way [storage.Loader] promises. It reads a snapshot: commits
// may run meanwhile. Damage found on the way (a table's checksum, a record
// that does not decode) gives an error wrapping [storage.ErrCorrupt].
//
// A store opened read-only for lack of space loads from the read-only
// database; one being reopened for writing waits for it.
func (s *Store) Load(l storage.Loader) error {
	s.mu.RLock()
	for s.db == nil && !s.closed && !(s.readOnly && s.fresh) {
		s.mu.RUnlock() // being reopened for writing
		if err := s.waitWritable(); err != nil {
			return err
		}
		s.mu.RLock()
	}
	defer s.mu.RUnlock()
	if s.closed {
		return storage.ErrClosed
	}
	if s.db == nil {
		return nil // read-only and fresh: nothing stored
	}
	it, err := s.db.NewIter(nil)
	if err != nil {
		return s.wrap(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			err = loadRecord(l, it.Key(), v)
		}
		if err != nil {
			it.Close()
			var le loaderError
			if errors.As(err, &le) {
				return le.err
			}
			if errors.Is(err, storage.ErrCorrupt) {
				return fmt.Errorf("%w (store %s)", err, s.dir)
			}
			return s.wrap(err)
		}
	}
	return s.wrap(errors.Join(it.Error(), it.Close()))
}

// loaderError carries an error returned by the Loader, which Load returns
// as it is.
type loaderError struct{ err error }

func (e loaderError) Error() string { return e.err.Error() }

func fromLoader(err error) error {
	if err != nil {
		return loaderError{err}
	}
	return nil
}

// loadRecord decodes one key and value and hands the record to l.
func loadRecord(l storage.Loader, key, val []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("%w: empty key", storage.ErrCorrupt)
	}
	r := newKeyReader(key)
	switch key[0] {
	case kindMeta:
		return nil // checked by Open
	case kindMessage:
		m := storage.Message{ID: r.uint64()}
		if err := r.end(); err != nil {
			return err
		}
		if err := storage.DecodeMessage(val, &m); err != nil {
			return err
		}
		return fromLoader(l.Message(&m))
	case kindSession:
		ss := storage.Session{ClientID: r.lp()}
		if err := r.end(); err != nil {
			return err
		}
		if err := storage.DecodeSession(val, &ss); err != nil {
			return err
		}
		return fromLoader(l.Session(&ss))
	case kindSubscription:
		sub := storage.Subscription{ClientID: r.lp(), Group: r.lp(), Filter: r.rest()}
		if err := r.end(); err != nil {
			return err
		}
		if err := storage.DecodeSubscription(val, &sub); err != nil {
			return err
		}
		return fromLoader(l.Subscription(&sub))
	case kindDelivery:
		d := storage.Delivery{ClientID: r.lp(), Seq: r.uint64()}
		if err := r.end(); err != nil {
			return err
		}
		if err := storage.DecodeDelivery(val, &d); err != nil {
			return err
		}
		return fromLoader(l.Delivery(&d))
	case kindInbound:
		client, pid := r.lp(), r.uint16()
		if err := r.end(); err != nil {
			return err
		}
		created, err := storage.DecodeInbound(val)
		if err != nil {
			return err
		}
		return fromLoader(l.Inbound(client, pid, created))
	case kindRetained:
		topic := r.rest()
		id, err := storage.DecodeRetained(val)
		if err != nil {
			return err
		}
		return fromLoader(l.Retained(topic, id))
	case kindWill:
		w := storage.Will{ClientID: r.lp()}
		if err := r.end(); err != nil {
			return err
		}
		if err := storage.DecodeWill(val, &w); err != nil {
			return err
		}
		return fromLoader(l.Will(&w))
	default:
		return fmt.Errorf("%w: unknown key kind %#x", storage.ErrCorrupt, key[0])
	}
}

// ReadQueue returns the client's deliveries after afterSeq, in Seq order,
// at most max, each with its message: one range scan of the client's
// delivery keys and a point read per distinct message.
func (s *Store) ReadQueue(clientID string, afterSeq uint64, max int) ([]storage.QueueEntry, error) {
	s.mu.RLock()
	for s.db == nil && !s.closed && !(s.readOnly && s.fresh) {
		s.mu.RUnlock() // being reopened for writing
		if err := s.waitWritable(); err != nil {
			return nil, err
		}
		s.mu.RLock()
	}
	defer s.mu.RUnlock()
	if s.closed {
		return nil, storage.ErrClosed
	}
	if s.db == nil {
		return nil, nil
	}
	lower := deliveryKey(nil, clientID, afterSeq+1)
	if afterSeq == math.MaxUint64 {
		return nil, nil
	}
	upper := successor(clientKey(nil, kindDelivery, clientID))
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, s.wrap(err)
	}
	var out []storage.QueueEntry
	for ok := it.First(); ok && (max <= 0 || len(out) < max); ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, s.wrap(err)
		}
		r := newKeyReader(it.Key())
		d := storage.Delivery{ClientID: r.lp(), Seq: r.uint64()}
		if err := r.end(); err != nil {
			it.Close()
			return nil, err
		}
		if err := storage.DecodeDelivery(v, &d); err != nil {
			it.Close()
			return nil, err
		}
		out = append(out, storage.QueueEntry{Delivery: d})
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, s.wrap(err)
	}
	msgs := make(map[uint64]*storage.Message)
	var key []byte
	for i := range out {
		id := out[i].Delivery.MessageID
		m, seen := msgs[id]
		if !seen {
			key = messageKey(key[:0], id)
			v, closer, err := s.db.Get(key)
			switch {
			case errors.Is(err, pebble.ErrNotFound):
			case err != nil:
				return nil, s.wrap(err)
			default:
				m = &storage.Message{ID: id}
				err = storage.DecodeMessage(v, m) // copies what it keeps
				closer.Close()
				if err != nil {
					return nil, fmt.Errorf("%w (store %s)", err, s.dir)
				}
			}
			msgs[id] = m
		}
		out[i].Message = m
	}
	return out, nil
}
