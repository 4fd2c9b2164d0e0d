package packets

import (
	"bytes"
	"encoding/binary"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// reader decodes the primitive data types of section 1.5 from a buffer.
// The first failure sticks in err; later reads return zero values, so a
// decoder can read a run of fields and check err once.
type reader struct {
	buf []byte
	pos int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) remaining() int { return len(r.buf) - r.pos }

func (r *reader) done() bool { return r.pos >= len(r.buf) }

func (r *reader) byte() byte {
	if r.err != nil || r.pos >= len(r.buf) {
		r.fail(ErrShortBuffer)
		return 0
	}
	b := r.buf[r.pos]
	r.pos++
	return b
}

func (r *reader) uint16() uint16 {
	if r.err != nil || r.remaining() < 2 {
		r.fail(ErrShortBuffer)
		return 0
	}
	v := binary.BigEndian.Uint16(r.buf[r.pos:])
	r.pos += 2
	return v
}

func (r *reader) uint32() uint32 {
	if r.err != nil || r.remaining() < 4 {
		r.fail(ErrShortBuffer)
		return 0
	}
	v := binary.BigEndian.Uint32(r.buf[r.pos:])
	r.pos += 4
	return v
}

func (r *reader) vbi() int {
	if r.err != nil {
		return 0
	}
	v, n, err := decodeVBI(r.buf[r.pos:])
	if err != nil {
		r.fail(err)
		return 0
	}
	r.pos += n
	return v
}

// take returns the next n bytes, aliasing the buffer.
func (r *reader) take(n int) []byte {
	if r.err != nil || n > r.remaining() {
		r.fail(ErrShortBuffer)
		return nil
	}
	b := r.buf[r.pos : r.pos+n : r.pos+n]
	r.pos += n
	return b
}

// binary reads Binary Data: a two-byte length and that many bytes.
func (r *reader) binary() []byte {
	n := r.uint16()
	return r.take(int(n))
}

// string reads a UTF-8 Encoded String, aliasing the buffer. It rejects
// ill-formed UTF-8, encoded surrogates [MQTT-1.5.4-1] and U+0000
// [MQTT-1.5.4-2].
func (r *reader) string() string {
	b := r.binary()
	if r.err != nil {
		return ""
	}
	if err := checkUTF8(b); err != nil {
		r.fail(err)
		return ""
	}
	return unsafeString(b)
}

func checkUTF8(b []byte) error {
	if bytes.IndexByte(b, 0) >= 0 {
		return errNullChar
	}
	if !utf8.Valid(b) { // utf8.Valid also rejects U+D800..U+DFFF
		return errUTF8
	}
	return nil
}

// ValidString reports whether s may be sent as an MQTT UTF-8 Encoded
// String: well-formed UTF-8 without surrogates or U+0000, at most 65,535
// bytes.
func ValidString(s string) bool { return checkString(s) == nil }

func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// decodeVBI decodes a Variable Byte Integer (section 1.5.5) from the start
// of b and returns its value and length. It rejects encodings longer than
// four bytes and encodings that are not minimal [MQTT-1.5.5-1].
func decodeVBI(b []byte) (int, int, error) {
	v, mul := 0, 1
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, ErrShortBuffer
		}
		c := b[i]
		v += int(c&0x7F) * mul
		if c&0x80 == 0 {
			if c == 0 && i > 0 {
				return 0, 0, errVBINotMinimal
			}
			return v, i + 1, nil
		}
		mul <<= 7
	}
	return 0, 0, errVBI
}

// vbiSize returns the number of bytes the Variable Byte Integer v takes.
func vbiSize(v int) int {
	switch {
	case v < 128:
		return 1
	case v < 16384:
		return 2
	case v < 2097152:
		return 3
	}
	return 4
}

func appendVBI(dst []byte, v int) []byte {
	for {
		c := byte(v & 0x7F)
		v >>= 7
		if v > 0 {
			c |= 0x80
		}
		dst = append(dst, c)
		if v == 0 {
			return dst
		}
	}
}

func appendUint16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendUint32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func appendString(dst []byte, s string) []byte {
	dst = appendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendBinary(dst []byte, b []byte) []byte {
	dst = appendUint16(dst, uint16(len(b)))
	return append(dst, b...)
}

// appendHeader appends a fixed header with the given remaining length.
func appendHeader(dst []byte, t Type, flags byte, remaining int) ([]byte, error) {
	if remaining > MaxRemainingLength {
		return dst, &Error{Code: PacketTooLarge, Msg: "packet exceeds the maximum remaining length"}
	}
	dst = append(dst, byte(t)<<4|flags&0x0F)
	return appendVBI(dst, remaining), nil
}

// checkString verifies that a string the encoder is about to write is a
// valid MQTT UTF-8 Encoded String (at most 65,535 bytes of well-formed
// UTF-8 without U+0000), so Tern never sends a packet its peer must reject.
func checkString(s string) error {
	if len(s) > 65535 {
		return malformed("string longer than 65535 bytes")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0 {
			return errNullChar
		}
		if c >= utf8.RuneSelf { // leave the ASCII fast path
			if strings.IndexByte(s[i:], 0) >= 0 {
				return errNullChar
			}
			if !utf8.ValidString(s[i:]) {
				return errUTF8
			}
			return nil
		}
	}
	return nil
}

// checkTopicName is checkString for a topic name, which must also be free
// of wildcards, in one pass over the usual ASCII topic.
func checkTopicName(s string) error {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+' || c == '#':
			return &Error{Code: TopicNameInvalid, Msg: "wildcard in topic name"} // [MQTT-3.3.2-2]
		case c == 0 || c >= utf8.RuneSelf:
			if err := checkString(s[i:]); err != nil {
				return err
			}
			if hasWildcard(s[i:]) {
				return &Error{Code: TopicNameInvalid, Msg: "wildcard in topic name"}
			}
			return nil
		}
	}
	if len(s) > 65535 {
		return malformed("string longer than 65535 bytes")
	}
	return nil
}

// hasWildcard reports whether s contains a wildcard character, which a
// topic name must not [MQTT-3.3.2-2], [MQTT-4.7.0-1].
func hasWildcard(s string) bool {
	return strings.IndexByte(s, '+') >= 0 || strings.IndexByte(s, '#') >= 0
}
