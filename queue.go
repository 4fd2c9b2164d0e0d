package tern

// queue is a FIFO ring of deliveries. Removing a QoS 0 delivery from the
// middle (to make room when the session's queue is full) leaves a hole
// that the head skips later, and a scan position remembers how far the
// queue is known to hold no QoS 0 delivery, so making room costs amortized
// O(1) instead of a scan and a shift of up to the whole queue. The
// positions are 32-bit (a queue of 2^31 deliveries would be 48 GiB of
// slots): every session has a queue, mostly empty (TestStructSizes).
type queue struct {
	buf  []delivery // empty slots (holes) are zero
	head int32
	n    int32 // slots in use from head, holes included
	live int32 // deliveries in the queue
	scan int32 // slots from head known to hold no QoS 0 delivery
}

func (q *queue) len() int { return int(q.live) }

// slot returns the index in buf of the i-th slot from head.
func (q *queue) slot(i int32) int { return (int(q.head) + int(i)) % len(q.buf) }

func (q *queue) push(d delivery) {
	if int(q.n) == len(q.buf) {
		nb := make([]delivery, max(16, 2*int(q.live)))
		var k int32
		for i := int32(0); i < q.n; i++ { // compact: holes go
			if x := q.buf[q.slot(i)]; !x.hole() {
				nb[k] = x
				k++
			}
		}
		q.buf, q.head, q.n, q.scan = nb, 0, k, 0
	}
	q.buf[q.slot(q.n)] = d
	q.n++
	q.live++
}

// releaseEmpty lets go of the ring of an empty queue.
func (q *queue) releaseEmpty() {
	if q.live == 0 {
		*q = queue{}
	}
}

// skipHoles drops holes at the head.
func (q *queue) skipHoles() {
	for q.n > 0 && q.buf[q.head].hole() {
		q.head = int32(q.slot(1))
		q.n--
		q.scan = max(q.scan-1, 0)
	}
}

// peek returns the oldest delivery; the queue must not be empty.
func (q *queue) peek() *delivery {
	q.skipHoles()
	return &q.buf[q.head]
}

// pop removes and returns the oldest delivery; the queue must not be empty.
func (q *queue) pop() delivery {
	q.skipHoles()
	d := q.buf[q.head]
	q.buf[q.head] = delivery{}
	q.head = int32(q.slot(1))
	q.n--
	q.live--
	q.scan = max(q.scan-1, 0)
	q.skipHoles()
	if q.live == 0 {
		q.head, q.n, q.scan = 0, 0, 0
		if len(q.buf) > 1024 { // give back memory after a burst
			q.buf = nil
		}
	}
	return d
}

// removeOldestQoS0 removes the oldest QoS 0 delivery and reports whether
// there was one.
func (q *queue) removeOldestQoS0() (delivery, bool) {
	for i := q.scan; i < q.n; i++ {
		if x := &q.buf[q.slot(i)]; x.msg != nil && x.qos == 0 {
			d := *x
			*x = delivery{}
			q.live--
			q.scan = i + 1
			q.skipHoles()
			return d, true
		}
	}
	q.scan = q.n
	return delivery{}, false
}

// removeOldest removes the oldest message delivery (retained streams
// stay) and reports whether there was one.
func (q *queue) removeOldest() (delivery, bool) {
	for i := int32(0); i < q.n; i++ {
		if x := &q.buf[q.slot(i)]; x.msg != nil {
			d := *x
			*x = delivery{}
			q.live-- // a hole holds no QoS 0 delivery: scan stays right
			q.skipHoles()
			return d, true
		}
	}
	return delivery{}, false
}

// each calls fn with each entry, oldest first, until fn returns false.
func (q *queue) each(fn func(d *delivery) bool) {
	for i := int32(0); i < q.n; i++ {
		if d := &q.buf[q.slot(i)]; !d.hole() && !fn(d) {
			return
		}
	}
}

// drain removes and returns every delivery, oldest first.
func (q *queue) drain() []delivery {
	out := make([]delivery, 0, q.live)
	for q.live > 0 {
		out = append(out, q.pop())
	}
	return out
}
