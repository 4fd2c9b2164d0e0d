package tern

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/ternmq/tern/packets"
)

// Buffer sizes of a connection. An idle connection holds only its small
// read buffer; the large buffers come from pools while traffic flows.
const (
	smallReadSize = 512
	largeReadSize = 32 << 10
	flushChunk    = 32 << 10 // encode at most this much before writing
	maxPooledCap  = 256 << 10
)

var (
	smallReads  = sync.Pool{New: func() any { b := make([]byte, smallReadSize); return &b }}
	largeReads  = sync.Pool{New: func() any { b := make([]byte, largeReadSize); return &b }}
	smallWrites = sync.Pool{New: func() any { b := make([]byte, 0, smallWriteSize); return &b }}
	largeWrites = sync.Pool{New: func() any { b := make([]byte, 0, largeWriteSize); return &b }}
)

// Write buffers come in two sizes: a small one for acknowledgements and
// other control packets (a storm of PINGREQs from thousands of idle clients
// must not take a large buffer each), a large one once messages flow.
const (
	smallWriteSize = 1 << 10
	largeWriteSize = flushChunk + 4<<10
)

// getWriteBuf returns an empty pooled buffer for about n bytes.
func getWriteBuf(n int) *[]byte {
	if n <= smallWriteSize {
		return smallWrites.Get().(*[]byte)
	}
	return largeWrites.Get().(*[]byte)
}

// putWriteBuf gives a buffer back to the pool of its size; one grown past
// maxPooledCap is left to the collector.
func putWriteBuf(b *[]byte) {
	switch c := cap(*b); {
	case c > maxPooledCap:
		return
	case c >= largeWriteSize:
		*b = (*b)[:0]
		largeWrites.Put(b)
	default:
		*b = (*b)[:0]
		smallWrites.Put(b)
	}
}

// packetReader reads packets from a connection through a pooled buffer
// that grows to a large one while data streams in and falls back to a small
// one when the connection goes quiet. A parked connection holds neither.
type packetReader struct {
	conn  net.Conn
	mem   *memBudget // the server's: large packets reserve their size from it
	small *[]byte
	large *[]byte
	buf   []byte
	r, w  int
	n     int64     // bytes read
	lastN int       // bytes the last read returned
	at    time.Time // when bytes last arrived
	pktAt time.Time // when the last complete packet arrived: keep alive counts from it
	pubAt time.Time // the creation time given to the last PUBLISH read: one per message (publishedAt)

	reserved  int64               // bytes reserved from mem for the last large packet
	big       []byte              // the body of a large packet read so far
	bigHeader packets.FixedHeader // its header

	// What the reader counted and has not yet added to Stats
	// (Client.flushCounts): kept here, not in the Client, since a parked
	// connection has nothing to count.
	inMsgs    int64 // PUBLISH packets read
	inPayload int64 // and their payload bytes
	inBytes   int64 // bytes of packets read
	inAcked   int64 // outbound QoS 1/2 messages acknowledged (InflightOut)
	inFreed   int64 // the budget memory they gave back
}

var readers = sync.Pool{New: func() any { return new(packetReader) }}

// getReader returns an empty reader of conn.
func getReader(conn net.Conn, mem *memBudget) *packetReader {
	pr := readers.Get().(*packetReader)
	pr.conn, pr.mem = conn, mem
	return pr
}

// putReader releases pr's buffers and gives it back.
func putReader(pr *packetReader) {
	pr.release()
	*pr = packetReader{}
	readers.Put(pr)
}

// fill reads more bytes from the connection into the buffer.
func (pr *packetReader) fill() error {
	if pr.small == nil {
		pr.small = smallReads.Get().(*[]byte)
	}
	if pr.buf == nil {
		pr.buf = *pr.small
	}
	if pr.r == pr.w {
		pr.r, pr.w = 0, 0
		if pr.large != nil && pr.quiet() {
			largeReads.Put(pr.large)
			pr.large, pr.buf = nil, *pr.small
		}
	}
	if pr.w == len(pr.buf) { // full: move up, or grow to the large buffer
		if pr.r > 0 {
			pr.w = copy(pr.buf, pr.buf[pr.r:pr.w])
			pr.r = 0
		}
		if pr.w == len(pr.buf) && pr.large == nil {
			pr.large = largeReads.Get().(*[]byte)
			pr.w = copy(*pr.large, pr.buf[:pr.w])
			pr.buf = *pr.large
		}
	}
	n, err := pr.conn.Read(pr.buf[pr.w:])
	if n > 0 {
		pr.at = time.Now()
	}
	pr.lastN = n
	pr.w += n
	pr.n += int64(n)
	if n > 0 && pr.w == len(pr.buf) && pr.large == nil {
		// The small buffer filled at once: traffic is flowing.
		pr.large = largeReads.Get().(*[]byte)
		pr.w = copy(*pr.large, pr.buf[pr.r:pr.w])
		pr.r = 0
		pr.buf = *pr.large
	}
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// quiet reports whether the last read was small enough for the small
// buffer, so the large buffer may go back to the pool.
func (pr *packetReader) quiet() bool { return pr.lastN < smallReadSize }

// empty reports whether no unread bytes are buffered, nor part of a large
// packet.
func (pr *packetReader) empty() bool { return pr.r == pr.w && pr.big == nil }

// errNoMemory ends a connection whose large packet found no room in the
// message memory budget.
var errNoMemory = &packets.Error{Code: packets.QuotaExceeded, Msg: "no memory for a large packet"}

// reserveWait is the most a large packet waits for room in the budget.
var reserveWait = 5 * time.Second

// reserve takes n bytes from the memory budget, waiting up to reserveWait
// for room.
func (pr *packetReader) reserve(n int64) error {
	if pr.mem == nil {
		return nil
	}
	for deadline := time.Now().Add(reserveWait); !pr.mem.reserve(n); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errNoMemory
		}
	}
	pr.reserved = n
	return nil
}

// unreserve gives back what reserve took.
func (pr *packetReader) unreserve() {
	if pr.reserved != 0 {
		pr.mem.used.Add(-pr.reserved)
		pr.reserved = 0
	}
}

// release returns the pooled buffers and any reservation; the reader must
// be empty or done.
func (pr *packetReader) release() {
	pr.unreserve()
	pr.big = nil
	if pr.large != nil {
		largeReads.Put(pr.large)
		pr.large = nil
	}
	if pr.small != nil {
		smallReads.Put(pr.small)
		pr.small = nil
	}
	pr.buf = nil
	pr.r, pr.w = 0, 0
}

// next reads the next packet's fixed header and body. The body aliases the
// read buffer when inPlace is true for the packet type; otherwise it is a
// fresh slice the caller may keep.
func (pr *packetReader) next(maxSize int) (packets.FixedHeader, []byte, error) {
	if pr.big != nil {
		return pr.readBig() // a large packet cut short by a read deadline
	}
	pr.unreserve() // the previous packet has been handled
	for {
		h, hl, err := packets.DecodeFixedHeader(pr.buf[pr.r:pr.w], maxSize)
		if err == packets.ErrIncomplete {
			if err := pr.fill(); err != nil {
				return h, nil, err
			}
			continue
		}
		if err != nil {
			return h, nil, err
		}
		total := hl + h.Remaining
		if pr.w-pr.r >= total {
			body := pr.buf[pr.r+hl : pr.r+total : pr.r+total]
			pr.r += total
			pr.pktAt = pr.at
			if !inPlace(h.Type) {
				body = append([]byte(nil), body...)
			}
			return h, body, nil
		}
		if total <= len(pr.buf) || (pr.large == nil && total <= largeReadSize) {
			if err := pr.fill(); err != nil {
				return h, nil, err
			}
			continue
		}
		// Larger than the buffer: read the body straight into its own slice.
		// Its size is reserved from the message memory budget first, so
		// unfinished packets, however many and however slow, hold no more
		// than the budget; then it is allocated at once (fresh pages take
		// memory only as bytes arrive, and growing it would leave garbage
		// twice its size).
		if err := pr.reserve(int64(h.Remaining)); err != nil {
			return h, nil, err
		}
		pr.r += hl
		pr.big = make([]byte, 0, h.Remaining)
		pr.big = append(pr.big, pr.buf[pr.r:pr.w]...)
		pr.bigHeader = h
		pr.r, pr.w = 0, 0
		return pr.readBig()
	}
}

// readBig reads the rest of a large packet's body into pr.big. A read
// error (a deadline, typically) leaves what has arrived in pr.big, and
// the next call to next goes on from there.
func (pr *packetReader) readBig() (packets.FixedHeader, []byte, error) {
	h, body := pr.bigHeader, pr.big
	for len(body) < h.Remaining {
		n, err := pr.conn.Read(body[len(body):h.Remaining])
		pr.n += int64(n)
		body = body[:len(body)+n]
		if n > 0 {
			pr.at = time.Now()
		}
		if err != nil && len(body) < h.Remaining {
			pr.big = body
			return h, nil, err
		}
	}
	pr.big = nil
	pr.at = time.Now()
	pr.pktAt = pr.at
	return h, body, nil
}

// inPlace reports whether a packet of type t is decoded straight from the
// read buffer: only packets the server keeps nothing of.
func inPlace(t packets.Type) bool {
	switch t {
	case packets.PUBACK, packets.PUBREC, packets.PUBREL, packets.PUBCOMP, packets.PINGREQ:
		return true
	}
	return false
}

// publishedAt returns the creation time of a PUBLISH just read: the time
// of the read, moved on by a nanosecond past the previous message's when
// one read brought several. A message is then known across nodes by its
// publisher, creation time and topic (Server.ExpectDuplicates).
func (pr *packetReader) publishedAt() time.Time {
	at := pr.at
	if !at.After(pr.pubAt) {
		at = pr.pubAt.Add(time.Nanosecond)
	}
	pr.pubAt = at
	return at
}
