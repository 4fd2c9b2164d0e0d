package packets

import (
	"errors"
	"io"
	"slices"
)

// ErrIncomplete is returned by [DecodeFixedHeader] when the buffer holds only
// part of a fixed header: read more bytes and try again.
var ErrIncomplete = errors.New("packets: incomplete fixed header")

func checkHeader(h FixedHeader, maxSize int) error {
	if h.Type == 0 {
		return malformed("reserved packet type 0") // section 2.1.2
	}
	if h.Type != PUBLISH && h.Flags != fixedFlags(h.Type) {
		return errFlags // [MQTT-2.2.2-2]
	}
	if maxSize > 0 && h.PacketSize() > maxSize {
		return &Error{Code: PacketTooLarge, Msg: "packet larger than the maximum packet size"}
	}
	return nil
}

// DecodeFixedHeader parses the fixed header at the start of b and returns it
// with its length. It returns ErrIncomplete when b ends inside the header,
// and an error with code PacketTooLarge when maxSize > 0 and the whole
// packet would be larger than maxSize bytes.
func DecodeFixedHeader(b []byte, maxSize int) (FixedHeader, int, error) {
	if len(b) < 2 {
		return FixedHeader{}, 0, ErrIncomplete
	}
	rem, n, err := decodeVBI(b[1:])
	if err == ErrShortBuffer {
		return FixedHeader{}, 0, ErrIncomplete
	}
	if err != nil {
		return FixedHeader{}, 0, err
	}
	h := FixedHeader{Type: Type(b[0] >> 4), Flags: b[0] & 0x0F, Remaining: rem}
	return h, 1 + n, checkHeader(h, maxSize)
}

// ReadFixedHeader reads a fixed header from r. It returns io.EOF if r ends
// before the first byte, and an error with code PacketTooLarge, before
// anything else is read, when maxSize > 0 and the whole packet would be
// larger than maxSize bytes.
func ReadFixedHeader(r io.ByteReader, maxSize int) (FixedHeader, error) {
	b0, err := r.ReadByte()
	if err != nil {
		return FixedHeader{}, err
	}
	rem, mul := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return FixedHeader{}, errVBI
		}
		c, err := r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return FixedHeader{}, err
		}
		if c == 0 && i > 0 {
			return FixedHeader{}, errVBINotMinimal
		}
		rem += int(c&0x7F) * mul
		if c&0x80 == 0 {
			break
		}
		mul <<= 7
	}
	h := FixedHeader{Type: Type(b0 >> 4), Flags: b0 & 0x0F, Remaining: rem}
	return h, checkHeader(h, maxSize)
}

// Decode decodes the packet with fixed header h from its body. The packet
// aliases body.
func Decode(h FixedHeader, body []byte, version byte) (Packet, error) {
	if len(body) != h.Remaining {
		return nil, ErrShortBuffer
	}
	if h.Type == AUTH && version != V5 {
		return nil, malformed("AUTH before MQTT 5")
	}
	p := New(h.Type)
	if p == nil {
		return nil, malformed("reserved packet type")
	}
	if err := p.Decode(h, body, version); err != nil {
		return p, err
	}
	return p, nil
}

type byteReader struct {
	r   io.Reader
	buf [1]byte
}

func (b *byteReader) ReadByte() (byte, error) {
	_, err := io.ReadFull(b.r, b.buf[:])
	return b.buf[0], err
}

// ReadPacket reads one whole packet from r: the fixed header (enforcing
// maxSize when it is positive), then a body of exactly the remaining length
// in a new buffer, which the returned packet aliases. Wrap a network
// connection in a bufio.Reader first.
//
// A body larger than 64 KiB is read in growing steps, so a peer that
// announces a large remaining length and then stalls makes ReadPacket hold
// only about as much memory as it has actually sent.
func ReadPacket(r io.Reader, version byte, maxSize int) (Packet, error) {
	br, ok := r.(io.ByteReader)
	if !ok {
		br = &byteReader{r: r}
	}
	h, err := ReadFixedHeader(br, maxSize)
	if err != nil {
		return nil, err
	}
	body, err := readBody(r, h.Remaining)
	if err != nil {
		return nil, err
	}
	return Decode(h, body, version)
}

// readChunk is the body size ReadPacket allocates up front.
const readChunk = 64 << 10

func readBody(r io.Reader, n int) ([]byte, error) {
	body := make([]byte, 0, min(n, readChunk))
	for len(body) < n {
		if len(body) == cap(body) {
			body = slices.Grow(body, min(len(body), n-len(body)))
		}
		m, err := io.ReadFull(r, body[len(body):min(cap(body), n)])
		body = body[:len(body)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return body, nil
}
