package packets

// Will is the will message carried in a CONNECT packet.
type Will struct {
	Topic      string
	Payload    []byte
	QoS        byte
	Retain     bool
	Properties Properties // v5 will properties
}

// Connect is the CONNECT packet (section 3.1).
type Connect struct {
	ProtocolName    string // "MQTT", or "MQIsdp" for 3.1; empty encodes the name the version uses
	ProtocolVersion byte   // V31, V311 or V5
	CleanStart      bool   // Clean Session in 3.1.1
	KeepAlive       uint16 // seconds
	ClientID        string
	Will            *Will // nil when the client sets no will
	UsernameFlag    bool
	Username        string
	PasswordFlag    bool
	Password        []byte
	Properties      Properties
	// Bridge is set when a 3.1 or 3.1.1 CONNECT carries its protocol level
	// with the high bit set (0x83, 0x84): the client says it is a bridge
	// (Mosquitto's try_private). ProtocolVersion holds the level without
	// the bit. It is not part of MQTT; v5 bridges use No Local instead.
	Bridge bool
}

// BridgeBit is the bit a bridge sets in the protocol level of a 3.1 or
// 3.1.1 CONNECT (Mosquitto's try_private).
const BridgeBit = 0x80

// Type implements Packet.
func (*Connect) Type() Type { return CONNECT }

// Connect flag bits (section 3.1.2.3).
const (
	connFlagReserved   = 0x01
	connFlagCleanStart = 0x02
	connFlagWill       = 0x04
	connFlagWillQoS    = 0x18
	connFlagWillRetain = 0x20
	connFlagPassword   = 0x40
	connFlagUsername   = 0x80
)

func protocolNameFor(version byte) string {
	if version == V31 {
		return "MQIsdp"
	}
	return "MQTT"
}

// Decode implements Packet. The version argument is ignored: CONNECT
// carries its own. An unsupported protocol level yields an error with code
// UnsupportedProtocolVersion and leaves ProtocolVersion set, so the server
// can refuse in a form the client understands.
func (c *Connect) Decode(h FixedHeader, body []byte, _ byte) error {
	*c = Connect{Properties: c.Properties.recycle()}
	if h.Flags != 0 {
		return errFlags // [MQTT-2.2.2-2]
	}
	r := reader{buf: body}
	c.ProtocolName = r.string()
	c.ProtocolVersion = r.byte()
	if r.err != nil {
		return r.err
	}
	if v := c.ProtocolVersion &^ BridgeBit; c.ProtocolVersion&BridgeBit != 0 && (v == V31 || v == V311) {
		c.ProtocolVersion, c.Bridge = v, true
	}
	switch {
	case c.ProtocolName == "MQTT" && (c.ProtocolVersion == V311 || c.ProtocolVersion == V5),
		c.ProtocolName == "MQIsdp" && c.ProtocolVersion == V31:
	case c.ProtocolName == "MQTT" || c.ProtocolName == "MQIsdp":
		// [MQTT-3.1.2-2]: refuse with 0x01 / 0x84 and close.
		return &Error{Code: UnsupportedProtocolVersion, Msg: "unsupported protocol level"}
	default:
		return protocolError("unknown protocol name") // [MQTT-3.1.2-1]
	}
	v5 := c.ProtocolVersion == V5
	flags := r.byte()
	c.KeepAlive = r.uint16()
	if r.err != nil {
		return r.err
	}
	if flags&connFlagReserved != 0 {
		return malformed("CONNECT reserved flag set") // [MQTT-3.1.2-3]
	}
	c.CleanStart = flags&connFlagCleanStart != 0
	willQoS := flags & connFlagWillQoS >> 3
	if flags&connFlagWill == 0 {
		if willQoS != 0 || flags&connFlagWillRetain != 0 {
			return malformed("will QoS or retain set without a will") // [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15]
		}
	} else if willQoS == 3 {
		return malformed("will QoS 3") // [MQTT-3.1.2-14]
	}
	c.UsernameFlag = flags&connFlagUsername != 0
	c.PasswordFlag = flags&connFlagPassword != 0
	if !v5 && c.PasswordFlag && !c.UsernameFlag {
		return malformed("password without user name") // [MQTT-3.1.2-22]
	}
	if v5 {
		c.Properties.decode(&r, CONNECT)
		if r.err == nil && c.Properties.AuthData != nil && c.Properties.AuthMethod == "" {
			return protocolError("authentication data without a method") // section 3.1.2.11.10
		}
	}
	c.ClientID = r.string()
	if flags&connFlagWill != 0 {
		w := &Will{QoS: willQoS, Retain: flags&connFlagWillRetain != 0}
		if v5 {
			w.Properties.decode(&r, WillProperties)
		}
		w.Topic = r.string()
		w.Payload = r.binary()
		c.Will = w
	}
	if c.UsernameFlag {
		c.Username = r.string()
	}
	if c.PasswordFlag {
		c.Password = r.binary()
	}
	if r.err != nil {
		return r.err
	}
	if !r.done() {
		return ErrTrailingBytes
	}
	if c.Will != nil {
		return checkWillTopic(c.Will.Topic)
	}
	return nil
}

// checkWillTopic checks that a will topic is a valid topic name: at least
// one character [MQTT-4.7.3-1] and no wildcards [MQTT-4.7.0-1] (4.7.1-1 in
// 3.1.1). A v5 server refuses it with CONNACK 0x90.
func checkWillTopic(t string) error {
	if t == "" || hasWildcard(t) {
		return &Error{Code: TopicNameInvalid, Msg: "will topic is not a valid topic name"}
	}
	return nil
}

// Encode implements Packet. The version argument is ignored when
// ProtocolVersion is set.
func (c *Connect) Encode(dst []byte, version byte) ([]byte, error) {
	if c.ProtocolVersion != 0 {
		version = c.ProtocolVersion
	}
	name := c.ProtocolName
	if name == "" {
		name = protocolNameFor(version)
	}
	v5 := version == V5
	var flags byte
	if c.CleanStart {
		flags |= connFlagCleanStart
	}
	n := 2 + len(name) + 1 + 1 + 2 + 2 + len(c.ClientID)
	if err := checkString(name); err != nil {
		return dst, err
	}
	if err := checkString(c.ClientID); err != nil {
		return dst, err
	}
	if c.UsernameFlag {
		if err := checkString(c.Username); err != nil {
			return dst, err
		}
	}
	if v5 {
		if err := c.Properties.validate(CONNECT); err != nil {
			return dst, err
		}
		if c.Properties.AuthData != nil && c.Properties.AuthMethod == "" {
			return dst, protocolError("authentication data without a method")
		}
		n += c.Properties.encodedSize()
	}
	if w := c.Will; w != nil {
		if w.QoS > 2 {
			return dst, malformed("will QoS 3")
		}
		flags |= connFlagWill | w.QoS<<3
		if w.Retain {
			flags |= connFlagWillRetain
		}
		n += 4 + len(w.Topic) + len(w.Payload)
		if v5 {
			if err := w.Properties.validate(WillProperties); err != nil {
				return dst, err
			}
			n += w.Properties.encodedSize()
		}
		if err := checkString(w.Topic); err != nil {
			return dst, err
		}
		if err := checkWillTopic(w.Topic); err != nil {
			return dst, err
		}
		if len(w.Payload) > 65535 {
			return dst, malformed("will payload longer than 65535 bytes")
		}
	}
	if c.UsernameFlag {
		flags |= connFlagUsername
		n += 2 + len(c.Username)
	}
	if c.PasswordFlag {
		if !v5 && !c.UsernameFlag {
			return dst, malformed("password without user name")
		}
		flags |= connFlagPassword
		n += 2 + len(c.Password)
	}
	if len(c.Password) > 65535 {
		return dst, malformed("password longer than 65535 bytes")
	}
	dst, err := appendHeader(dst, CONNECT, 0, n)
	if err != nil {
		return dst, err
	}
	dst = appendString(dst, name)
	level := version
	if c.Bridge && version != V5 {
		level |= BridgeBit
	}
	dst = append(dst, level, flags)
	dst = appendUint16(dst, c.KeepAlive)
	if v5 {
		dst = c.Properties.appendTo(dst)
	}
	dst = appendString(dst, c.ClientID)
	if w := c.Will; w != nil {
		if v5 {
			dst = w.Properties.appendTo(dst)
		}
		dst = appendString(dst, w.Topic)
		dst = appendBinary(dst, w.Payload)
	}
	if c.UsernameFlag {
		dst = appendString(dst, c.Username)
	}
	if c.PasswordFlag {
		dst = appendBinary(dst, c.Password)
	}
	return dst, nil
}

// Connack is the CONNACK packet (section 3.2).
type Connack struct {
	// SessionPresent must be false when ReasonCode is a failure
	// ([MQTT-3.2.2-6], [MQTT-3.2.2-4] in 3.1.1). MQTT 3.1 has no such flag:
	// it is never encoded or decoded for V31.
	SessionPresent bool
	// ReasonCode is the v5 reason code; for v3 it is mapped to and from the
	// 3.1.1 return codes with [ConnackCodeV3].
	ReasonCode ReasonCode
	Properties Properties
}

// Type implements Packet.
func (*Connack) Type() Type { return CONNACK }

// Decode implements Packet.
func (c *Connack) Decode(h FixedHeader, body []byte, version byte) error {
	*c = Connack{Properties: c.Properties.recycle()}
	if h.Flags != 0 {
		return errFlags
	}
	r := reader{buf: body}
	ack := r.byte()
	code := r.byte()
	if r.err != nil {
		return r.err
	}
	if version == V31 {
		ack = 0 // 3.1: "Topic Name Compression Response", reserved and not used
	}
	if ack&0xFE != 0 {
		return malformed("CONNACK reserved flags set") // [MQTT-3.2.2-1]
	}
	c.SessionPresent = ack&1 != 0
	if c.SessionPresent && code != 0 {
		return protocolError("session present with a failure code") // [MQTT-3.2.2-6], [MQTT-3.2.2-4] in 3.1.1
	}
	if version == V5 {
		c.ReasonCode = ReasonCode(code)
		if !c.ReasonCode.ValidFor(CONNACK) {
			return errReason
		}
		c.Properties.decode(&r, CONNACK)
	} else {
		rc, ok := connackReasonV3(code)
		if !ok {
			return malformed("CONNACK return code out of range")
		}
		c.ReasonCode = rc
	}
	if r.err != nil {
		return r.err
	}
	if !r.done() {
		return ErrTrailingBytes
	}
	return nil
}

// Encode implements Packet.
func (c *Connack) Encode(dst []byte, version byte) ([]byte, error) {
	if c.SessionPresent && c.ReasonCode != Success {
		return dst, protocolError("session present with a failure code")
	}
	var ack byte
	if c.SessionPresent && version != V31 { // 3.1 has no session present flag
		ack = 1
	}
	if version != V5 {
		dst, _ = appendHeader(dst, CONNACK, 0, 2)
		return append(dst, ack, ConnackCodeV3(c.ReasonCode)), nil
	}
	if !c.ReasonCode.ValidFor(CONNACK) {
		return dst, errReason
	}
	if err := c.Properties.validate(CONNACK); err != nil {
		return dst, err
	}
	dst, err := appendHeader(dst, CONNACK, 0, 2+c.Properties.encodedSize())
	if err != nil {
		return dst, err
	}
	dst = append(dst, ack, byte(c.ReasonCode))
	return c.Properties.appendTo(dst), nil
}
