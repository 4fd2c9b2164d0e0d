package bench

import (
	"encoding/binary"
	"errors"
)

// HeaderSize is the number of payload bytes the generator uses for its
// [Header]; payloads must be at least this large.
const HeaderSize = 24

// headerMagic marks a payload written by this package ("TBv1").
const headerMagic uint32 = 0x54427631

// Header is the accounting information at the start of every payload the
// generator publishes, in big-endian order: magic (4 bytes), run (4),
// publisher (4), sequence (4), send time in Unix nanoseconds (8).
type Header struct {
	Run       uint32 // random per run, to tell runs apart on one broker
	Publisher uint32 // the publisher's number within the run, from 0
	Seq       uint32 // per-publisher sequence number, from 0
	SentAt    int64  // wall-clock Unix nanoseconds when the message was sent
}

// errNoHeader is returned by ParseHeader for a payload the generator did not
// write.
var errNoHeader = errors.New("bench: payload has no bench header")

// Put writes h into the first HeaderSize bytes of b.
func (h Header) Put(b []byte) {
	_ = b[HeaderSize-1]
	binary.BigEndian.PutUint32(b[0:], headerMagic)
	binary.BigEndian.PutUint32(b[4:], h.Run)
	binary.BigEndian.PutUint32(b[8:], h.Publisher)
	binary.BigEndian.PutUint32(b[12:], h.Seq)
	binary.BigEndian.PutUint64(b[16:], uint64(h.SentAt))
}

// ParseHeader reads the header at the start of a payload.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize || binary.BigEndian.Uint32(b) != headerMagic {
		return Header{}, errNoHeader
	}
	return Header{
		Run:       binary.BigEndian.Uint32(b[4:]),
		Publisher: binary.BigEndian.Uint32(b[8:]),
		Seq:       binary.BigEndian.Uint32(b[12:]),
		SentAt:    int64(binary.BigEndian.Uint64(b[16:])),
	}, nil
}
