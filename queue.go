package tern

// queue is a FIFO ring of deliveries. Removing a QoS 0 delivery from the
// middle (to make room when the session's queue is full) leaves a hole
// that the head skips later, and a scan position remembers how far the
// queue is known to hold no QoS 0 delivery, so making room costs amortized
// O(1) instead of a scan and a shift of up to the whole queue.
type queue struct {
	buf  []delivery // empty slots (holes) are zero
	head int
	n    int // slots in use from head, holes included
	live int // deliveries in the queue
	scan int // slots from head known to hold no QoS 0 delivery
}

func (q *queue) len() int { return q.live }

func (q *queue) push(d delivery) {
	if q.n == len(q.buf) {
		nb := make([]delivery, max(16, 2*q.live))
		k := 0
		for i := 0; i < q.n; i++ { // compact: holes go
			if x := q.buf[(q.head+i)%len(q.buf)]; !x.hole() {
				nb[k] = x
				k++
			}
		}
		q.buf, q.head, q.n, q.scan = nb, 0, k, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = d
	q.n++
	q.live++
}

// skipHoles drops holes at the head.
func (q *queue) skipHoles() {
	for q.n > 0 && q.buf[q.head].hole() {
		q.head = (q.head + 1) % len(q.buf)
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
	q.head = (q.head + 1) % len(q.buf)
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
		j := (q.head + i) % len(q.buf)
		if x := &q.buf[j]; x.msg != nil && x.qos == 0 {
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
	for i := 0; i < q.n; i++ {
		j := (q.head + i) % len(q.buf)
		if x := &q.buf[j]; x.msg != nil {
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
	for i := 0; i < q.n; i++ {
		if d := &q.buf[(q.head+i)%len(q.buf)]; !d.hole() && !fn(d) {
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
