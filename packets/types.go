package packets

import "fmt"

// Protocol versions as carried in the CONNECT protocol level byte.
const (
	V31  byte = 3 // MQTT 3.1, protocol name "MQIsdp"
	V311 byte = 4 // MQTT 3.1.1
	V5   byte = 5 // MQTT 5.0
)

// Type is an MQTT control packet type (the high nibble of the first byte).
type Type byte

// Control packet types.
const (
	CONNECT     Type = 1
	CONNACK     Type = 2
	PUBLISH     Type = 3
	PUBACK      Type = 4
	PUBREC      Type = 5
	PUBREL      Type = 6
	PUBCOMP     Type = 7
	SUBSCRIBE   Type = 8
	SUBACK      Type = 9
	UNSUBSCRIBE Type = 10
	UNSUBACK    Type = 11
	PINGREQ     Type = 12
	PINGRESP    Type = 13
	DISCONNECT  Type = 14
	AUTH        Type = 15
)

var typeNames = [...]string{
	"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL",
	"PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ",
	"PINGRESP", "DISCONNECT", "AUTH",
}

// String returns the packet type's name, such as "PUBLISH".
func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", byte(t))
}

// MaxRemainingLength is the largest remaining length a variable byte
// integer can carry (268,435,455 bytes).
const MaxRemainingLength = 268435455

// MaxPacketSize is the largest possible size of a whole packet: the fixed
// header (5 bytes) plus [MaxRemainingLength].
const MaxPacketSize = MaxRemainingLength + 5

// FixedHeader is the first part of every MQTT control packet.
type FixedHeader struct {
	Type      Type
	Flags     byte // the low nibble of the first byte
	Remaining int  // the remaining length: bytes after the fixed header
}

// Size returns the number of bytes the fixed header occupies on the wire.
func (h FixedHeader) Size() int { return 1 + vbiSize(h.Remaining) }

// PacketSize returns the size of the whole packet, header included.
func (h FixedHeader) PacketSize() int { return h.Size() + h.Remaining }

// Packet is implemented by every control packet type.
type Packet interface {
	// Type returns the packet's control packet type.
	Type() Type
	// Encode appends the packet's wire form for the protocol version to dst.
	Encode(dst []byte, version byte) ([]byte, error)
	// Decode parses the packet from its fixed header and the body that
	// follows it. The packet aliases body afterwards.
	Decode(h FixedHeader, body []byte, version byte) error
}

// New returns a new, empty packet of type t, or nil for a reserved type.
func New(t Type) Packet {
	switch t {
	case CONNECT:
		return new(Connect)
	case CONNACK:
		return new(Connack)
	case PUBLISH:
		return new(Publish)
	case PUBACK:
		return new(Puback)
	case PUBREC:
		return new(Pubrec)
	case PUBREL:
		return new(Pubrel)
	case PUBCOMP:
		return new(Pubcomp)
	case SUBSCRIBE:
		return new(Subscribe)
	case SUBACK:
		return new(Suback)
	case UNSUBSCRIBE:
		return new(Unsubscribe)
	case UNSUBACK:
		return new(Unsuback)
	case PINGREQ:
		return new(Pingreq)
	case PINGRESP:
		return new(Pingresp)
	case DISCONNECT:
		return new(Disconnect)
	case AUTH:
		return new(Auth)
	}
	return nil
}
