package bench

import (
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
)

// tracker accounts for the messages one subscriber receives from one
// publisher. Only the subscriber's reading goroutine writes it; distinct is
// also read by the publisher for flow control and by the runner.
type tracker struct {
	pub        *publisher // nil for a publisher outside this run (Sub)
	owner      *client    // the subscriber's connection
	seen       []uint64   // bit set of sequence numbers received
	distinct   atomic.Int64
	dups       int64
	outOfOrder int64
	minSeq     int64 // smallest sequence number seen, -1 before the first
	maxSeq     int64 // largest sequence number seen, -1 before the first
}

func newTracker(p *publisher, owner *client) *tracker {
	return &tracker{pub: p, owner: owner, minSeq: -1, maxSeq: -1}
}

// add records sequence number seq.
func (t *tracker) add(seq uint32) {
	w := int(seq >> 6)
	if w >= len(t.seen) {
		n := max(2*len(t.seen), w+1, 64)
		grown := make([]uint64, n)
		copy(grown, t.seen)
		t.seen = grown
	}
	bit := uint64(1) << (seq & 63)
	if t.seen[w]&bit != 0 {
		t.dups++
		return
	}
	t.seen[w] |= bit
	s := int64(seq)
	if s < t.maxSeq {
		t.outOfOrder++
	}
	t.maxSeq = max(t.maxSeq, s)
	if t.minSeq < 0 || s < t.minSeq {
		t.minSeq = s
	}
	t.distinct.Add(1)
	if t.pub != nil {
		t.pub.wakeUp()
	}
}

// expected returns how many messages the subscriber should have received:
// all the publisher sent, or, for a publisher outside the run, every
// sequence number between the first and the last seen.
func (t *tracker) expected() int64 {
	if t.pub != nil {
		return t.pub.sent.Load()
	}
	if t.maxSeq < 0 {
		return 0
	}
	return t.maxSeq - t.minSeq + 1
}

// trackerKey names a publisher of any run.
type trackerKey struct{ run, pub uint32 }

// subscriber receives messages on one connection and accounts for them.
type subscriber struct {
	c      *client
	filter string
	runID  uint32
	// known holds the trackers of the run's publishers base, base+1, ...
	// that the subscriber expects; nil where it expects none.
	known []*tracker
	base  uint32
	// dynamic accepts messages from any run and publisher (Sub).
	dynamic bool
	others  map[trackerKey]*tracker

	received   atomic.Int64
	unexpected atomic.Int64
	lastAt     atomic.Int64 // Unix nanoseconds of the latest message
	latency    histogram
	gaps       *gapMeter // measures gaps between deliveries (Stuck); nil for none
}

// newSubscriber makes c a subscriber to filter that expects the messages of
// publishers pubs, whose numbers are consecutive.
func newSubscriber(c *client, filter string, pubs []*publisher) *subscriber {
	s := &subscriber{c: c, filter: filter, runID: c.r.runID}
	if len(pubs) > 0 {
		s.base = pubs[0].n
		s.known = make([]*tracker, len(pubs))
		for i, p := range pubs {
			s.known[i] = newTracker(p, c)
		}
	}
	c.sub = s
	return s
}

// receive accounts for one PUBLISH.
func (s *subscriber) receive(p *packets.Publish) {
	now := time.Now().UnixNano()
	s.received.Add(1)
	s.lastAt.Store(now)
	if s.gaps != nil {
		s.gaps.record(now)
	}
	h, err := ParseHeader(p.Payload)
	if err != nil {
		s.unexpected.Add(1)
		return
	}
	s.latency.record(now - h.SentAt)
	if t := s.trackerFor(h); t != nil {
		t.add(h.Seq)
		return
	}
	s.unexpected.Add(1)
}

func (s *subscriber) trackerFor(h Header) *tracker {
	if i := h.Publisher - s.base; h.Run == s.runID && h.Publisher >= s.base && int(i) < len(s.known) && s.known[i] != nil {
		return s.known[i]
	}
	if !s.dynamic {
		return nil
	}
	k := trackerKey{h.Run, h.Publisher}
	t := s.others[k]
	if t == nil {
		if s.others == nil {
			s.others = make(map[trackerKey]*tracker)
		}
		t = newTracker(nil, s.c)
		s.others[k] = t
	}
	return t
}

// trackers calls fn for every tracker of the subscriber. Call it only once
// the reading goroutine has ended.
func (s *subscriber) trackers(fn func(*tracker)) {
	for _, t := range s.known {
		if t != nil {
			fn(t)
		}
	}
	for _, t := range s.others {
		fn(t)
	}
}
