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
	smallReads = sync.Pool{New: func() any { b := make([]byte, smallReadSize); return &b }}
	largeReads = sync.Pool{New: func() any { b := make([]byte, largeReadSize); return &b }}
	writeBufs  = sync.Pool{New: func() any { b := make([]byte, 0, flushChunk+4<<10); return &b }}
)

// packetReader reads packets from a connection through a pooled buffer
// that grows to a large one while data streams in and falls back to a small
// one when the connection goes quiet. A parked connection holds neither.
type packetReader struct {
	conn  net.Conn
	small *[]byte
	large *[]byte
	buf   []byte
	r, w  int
	n     int64     // bytes read
	lastN int       // bytes the last read returned
	at    time.Time // when bytes last arrived
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

// empty reports whether no unread bytes are buffered.
func (pr *packetReader) empty() bool { return pr.r == pr.w }

// release returns the pooled buffers; the reader must be empty or done.
func (pr *packetReader) release() {
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
		// Larger than the buffer: read the body straight into its own slice,
		// growing it only as bytes arrive.
		pr.r += hl
		have := pr.w - pr.r
		body := make([]byte, 0, min(h.Remaining, max(have, 64<<10)))
		body = append(body, pr.buf[pr.r:pr.w]...)
		pr.r, pr.w = 0, 0
		for len(body) < h.Remaining {
			if len(body) == cap(body) {
				body = append(body, 0)[:len(body)]
			}
			end := min(cap(body), h.Remaining)
			n, err := pr.conn.Read(body[len(body):end])
			pr.n += int64(n)
			body = body[:len(body)+n]
			if err != nil && len(body) < h.Remaining {
				return h, nil, err
			}
		}
		return h, body, nil
	}
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
