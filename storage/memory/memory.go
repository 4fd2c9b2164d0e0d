// Package memory is a [storage.Store] that keeps everything in maps: for
// tests, and for running the broker without persistence.
//
// Records are kept encoded with the storage package's codec, so a store
// never shares memory with the records it was given or hands out, exactly
// like a store on disk. Nothing survives Close.
package memory

import (
	"cmp"
	"slices"
	"sync"

	"github.com/ternmq/tern/storage"
)

// Store is an in-memory [storage.Store]. The zero value is not usable:
// call [New].
type Store struct {
	mu       sync.RWMutex
	closed   bool
	messages map[uint64][]byte
	clients  map[string]*client
	retained map[string]uint64
}

// client holds everything stored under one client id.
type client struct {
	session    []byte // nil: no session record
	will       []byte // nil: no will
	subs       map[subKey][]byte
	deliveries map[uint64][]byte
	inbound    map[uint16]int64 // creation times
}

type subKey struct{ group, filter string }

func (c *client) empty() bool {
	return c.session == nil && c.will == nil && len(c.subs) == 0 && len(c.deliveries) == 0 && len(c.inbound) == 0
}

var _ storage.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		messages: make(map[uint64][]byte),
		clients:  make(map[string]*client),
		retained: make(map[string]uint64),
	}
}

// NewBatch returns an empty batch for this store.
func (s *Store) NewBatch() storage.Batch { return &batch{store: s} }

// Commit applies the batch atomically. sync is ignored: nothing is ever
// durable.
func (s *Store) Commit(b storage.Batch, sync bool) error {
	mb, ok := b.(*batch)
	if !ok || mb.store != s || mb.spent {
		return storage.ErrBatch
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return storage.ErrClosed
	}
	mb.spent = true
	for i := range mb.ops {
		s.applyLocked(&mb.ops[i])
	}
	mb.ops = nil
	return nil
}

// Sync does nothing but report whether the store is open.
func (s *Store) Sync() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return storage.ErrClosed
	}
	return nil
}

// Size returns 0: nothing is on disk.
func (s *Store) Size() (int64, error) { return 0, s.Sync() }

// Close drops the store's contents.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return storage.ErrClosed
	}
	s.closed = true
	s.messages, s.clients, s.retained = nil, nil, nil
	return nil
}

// clientLocked returns the records of a client id, creating them if asked.
func (s *Store) clientLocked(id string, create bool) *client {
	c := s.clients[id]
	if c == nil && create {
		c = &client{}
		s.clients[id] = c
	}
	return c
}

// dropIfEmptyLocked forgets a client id that has no records left.
func (s *Store) dropIfEmptyLocked(id string, c *client) {
	if c.empty() {
		delete(s.clients, id)
	}
}

func (s *Store) applyLocked(o *op) {
	switch o.kind {
	case opPutMessage:
		s.messages[o.id] = o.value
	case opDeleteMessage:
		delete(s.messages, o.id)
	case opPutRetained:
		s.retained[o.client] = o.id // o.client holds the topic
	case opDeleteRetained:
		delete(s.retained, o.client)
	case opDeleteSession:
		delete(s.clients, o.client)
	case opPutSession:
		s.clientLocked(o.client, true).session = o.value
	case opPutWill:
		s.clientLocked(o.client, true).will = o.value
	case opPutSubscription:
		c := s.clientLocked(o.client, true)
		if c.subs == nil {
			c.subs = make(map[subKey][]byte)
		}
		c.subs[subKey{o.group, o.filter}] = o.value
	case opPutDelivery:
		c := s.clientLocked(o.client, true)
		if c.deliveries == nil {
			c.deliveries = make(map[uint64][]byte)
		}
		c.deliveries[o.id] = o.value
	case opPutInbound:
		c := s.clientLocked(o.client, true)
		if c.inbound == nil {
			c.inbound = make(map[uint16]int64)
		}
		c.inbound[uint16(o.id)] = o.created
	default:
		c := s.clientLocked(o.client, false)
		if c == nil {
			return
		}
		switch o.kind {
		case opDeleteWill:
			c.will = nil
		case opDeleteSubscription:
			delete(c.subs, subKey{o.group, o.filter})
		case opDeleteDelivery:
			delete(c.deliveries, o.id)
		case opDeleteInbound:
			delete(c.inbound, uint16(o.id))
		}
		s.dropIfEmptyLocked(o.client, c)
	}
}

// Load passes the stored state to l. It works on a copy of the store's
// index taken under the lock, so commits may run meanwhile and l may call
// back into the store.
func (s *Store) Load(l storage.Loader) error {
	snap, err := s.snapshot()
	if err != nil {
		return err
	}
	snap.sort()
	for _, e := range snap.messages {
		m := storage.Message{ID: e.id}
		if err := storage.DecodeMessage(e.value, &m); err != nil {
			return err
		}
		if err := l.Message(&m); err != nil {
			return err
		}
	}
	for _, c := range snap.clients {
		if c.session == nil {
			continue
		}
		ss := storage.Session{ClientID: c.id}
		if err := storage.DecodeSession(c.session, &ss); err != nil {
			return err
		}
		if err := l.Session(&ss); err != nil {
			return err
		}
	}
	for _, c := range snap.clients {
		for _, e := range c.subs {
			sub := storage.Subscription{ClientID: c.id, Group: e.key.group, Filter: e.key.filter}
			if err := storage.DecodeSubscription(e.value, &sub); err != nil {
				return err
			}
			if err := l.Subscription(&sub); err != nil {
				return err
			}
		}
	}
	for _, c := range snap.clients {
		for _, e := range c.deliveries {
			d := storage.Delivery{ClientID: c.id, Seq: e.id}
			if err := storage.DecodeDelivery(e.value, &d); err != nil {
				return err
			}
			if err := l.Delivery(&d); err != nil {
				return err
			}
		}
	}
	for _, c := range snap.clients {
		for _, in := range c.inbound {
			if err := l.Inbound(c.id, in.id, in.created); err != nil {
				return err
			}
		}
	}
	for _, r := range snap.retained {
		if err := l.Retained(r.key, r.id); err != nil {
			return err
		}
	}
	for _, c := range snap.clients {
		if c.will == nil {
			continue
		}
		w := storage.Will{ClientID: c.id}
		if err := storage.DecodeWill(c.will, &w); err != nil {
			return err
		}
		if err := l.Will(&w); err != nil {
			return err
		}
	}
	return nil
}

// Stored values are never modified once committed, so a snapshot can share
// them; it copies only the maps' structure, and sorts it.
type (
	idValue struct {
		id    uint64
		value []byte
	}
	subValue struct {
		key   subKey
		value []byte
	}
	topicID struct {
		key string
		id  uint64
	}
	clientSnap struct {
		id            string
		session, will []byte
		subs          []subValue
		deliveries    []idValue
		inbound       []inboundID
	}
	inboundID struct {
		id      uint16
		created int64
	}
	snapshot struct {
		messages []idValue
		clients  []clientSnap
		retained []topicID
	}
)

// snapshot copies the store's index, unsorted.
func (s *Store) snapshot() (*snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, storage.ErrClosed
	}
	snap := &snapshot{
		messages: make([]idValue, 0, len(s.messages)),
		clients:  make([]clientSnap, 0, len(s.clients)),
		retained: make([]topicID, 0, len(s.retained)),
	}
	for id, v := range s.messages {
		snap.messages = append(snap.messages, idValue{id, v})
	}
	for t, id := range s.retained {
		snap.retained = append(snap.retained, topicID{t, id})
	}
	for id, c := range s.clients {
		cs := clientSnap{id: id, session: c.session, will: c.will}
		for k, v := range c.subs {
			cs.subs = append(cs.subs, subValue{k, v})
		}
		for seq, v := range c.deliveries {
			cs.deliveries = append(cs.deliveries, idValue{seq, v})
		}
		for pid, created := range c.inbound {
			cs.inbound = append(cs.inbound, inboundID{pid, created})
		}
		snap.clients = append(snap.clients, cs)
	}
	return snap, nil
}

// sort puts the snapshot in the order Load promises.
func (snap *snapshot) sort() {
	byID := func(a, b idValue) int { return cmp.Compare(a.id, b.id) }
	slices.SortFunc(snap.messages, byID)
	slices.SortFunc(snap.retained, func(a, b topicID) int { return cmp.Compare(a.key, b.key) })
	slices.SortFunc(snap.clients, func(a, b clientSnap) int { return cmp.Compare(a.id, b.id) })
	for i := range snap.clients {
		c := &snap.clients[i]
		slices.SortFunc(c.subs, func(a, b subValue) int {
			return cmp.Or(cmp.Compare(a.key.group, b.key.group), cmp.Compare(a.key.filter, b.key.filter))
		})
		slices.SortFunc(c.deliveries, byID)
		slices.SortFunc(c.inbound, func(a, b inboundID) int { return cmp.Compare(a.id, b.id) })
	}
}

// ReadQueue returns the client's deliveries after afterSeq, in order, at
// most max, each with its message.
func (s *Store) ReadQueue(clientID string, afterSeq uint64, max int) ([]storage.QueueEntry, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, storage.ErrClosed
	}
	var ds []idValue
	if c := s.clients[clientID]; c != nil {
		for seq, v := range c.deliveries {
			if seq > afterSeq {
				ds = append(ds, idValue{seq, v})
			}
		}
	}
	slices.SortFunc(ds, func(a, b idValue) int { return cmp.Compare(a.id, b.id) })
	if max > 0 && len(ds) > max {
		ds = ds[:max]
	}
	out := make([]storage.QueueEntry, len(ds))
	msgs := make(map[uint64][]byte)
	for i, e := range ds {
		out[i].Delivery = storage.Delivery{ClientID: clientID, Seq: e.id}
		if err := storage.DecodeDelivery(e.value, &out[i].Delivery); err != nil {
			s.mu.RUnlock()
			return nil, err
		}
		id := out[i].Delivery.MessageID
		if _, ok := msgs[id]; !ok {
			msgs[id] = s.messages[id]
		}
	}
	s.mu.RUnlock()
	decoded := make(map[uint64]*storage.Message, len(msgs))
	for id, v := range msgs {
		if v == nil {
			continue
		}
		m := &storage.Message{ID: id}
		if err := storage.DecodeMessage(v, m); err != nil {
			return nil, err
		}
		decoded[id] = m
	}
	for i := range out {
		out[i].Message = decoded[out[i].Delivery.MessageID]
	}
	return out, nil
}
