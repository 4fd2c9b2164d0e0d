package packets

// Publish is the PUBLISH packet (section 3.3).
type Publish struct {
	Dup        bool
	QoS        byte
	Retain     bool
	Topic      string // empty when a v5 packet uses only a topic alias
	PacketID   uint16 // present only for QoS 1 and 2
	Properties Properties
	Payload    []byte
}

// Type implements Packet.
func (*Publish) Type() Type { return PUBLISH }

// Decode implements Packet.
func (p *Publish) Decode(h FixedHeader, body []byte, version byte) error {
	*p = Publish{Properties: p.Properties.recycle()}
	p.Dup = h.Flags&0x08 != 0
	p.QoS = h.Flags >> 1 & 3
	p.Retain = h.Flags&0x01 != 0
	if p.QoS == 3 {
		return malformed("PUBLISH QoS 3") // [MQTT-3.3.1-4]
	}
	if p.Dup && p.QoS == 0 {
		return malformed("DUP set on a QoS 0 PUBLISH") // [MQTT-3.3.1-2]
	}
	r := reader{buf: body}
	p.Topic = r.string()
	if p.QoS > 0 {
		p.PacketID = r.uint16()
		if p.PacketID == 0 && r.err == nil {
			return errZeroPacketID // [MQTT-2.2.1-3]
		}
	}
	if version == V5 {
		p.Properties.decode(&r, PUBLISH)
	}
	if r.err != nil {
		return r.err
	}
	if err := p.checkTopic(version); err != nil {
		return err
	}
	p.Payload = body[r.pos:len(body):len(body)]
	return nil
}

// checkTopic checks the topic name: no wildcards [MQTT-3.3.2-2] and at
// least one character [MQTT-4.7.3-1] unless a v5 topic alias stands in for
// it (section 3.3.2.3.4).
func (p *Publish) checkTopic(version byte) error {
	if hasWildcard(p.Topic) {
		return &Error{Code: TopicNameInvalid, Msg: "wildcard in topic name"}
	}
	if p.Topic == "" && (version != V5 || p.Properties.TopicAlias == 0) {
		return protocolError("empty topic name without a topic alias")
	}
	return nil
}

// Size returns the size of the whole encoded packet for the version.
func (p *Publish) Size(version byte) int {
	n := p.remaining(version, p.propsSize(version))
	return 1 + vbiSize(n) + n
}

// propsSize returns the size of the properties without their length field,
// or -1 when the version has none.
func (p *Publish) propsSize(version byte) int {
	if version != V5 {
		return -1
	}
	return p.Properties.size()
}

func (p *Publish) remaining(version byte, props int) int {
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	if props >= 0 {
		n += vbiSize(props) + props
	}
	return n
}

// flags returns the fixed header flags for the packet.
func (p *Publish) flags() byte {
	f := p.QoS << 1
	if p.Dup {
		f |= 0x08
	}
	if p.Retain {
		f |= 0x01
	}
	return f
}

// Encode implements Packet.
func (p *Publish) Encode(dst []byte, version byte) ([]byte, error) {
	if p.QoS > 2 {
		return dst, malformed("PUBLISH QoS 3")
	}
	if p.QoS > 0 && p.PacketID == 0 {
		return dst, errZeroPacketID
	}
	if p.Dup && p.QoS == 0 {
		return dst, malformed("DUP set on a QoS 0 PUBLISH") // [MQTT-3.3.1-2]
	}
	if err := checkTopicName(p.Topic); err != nil {
		return dst, err
	}
	if p.Topic == "" && (version != V5 || p.Properties.TopicAlias == 0) {
		return dst, protocolError("empty topic name without a topic alias") // [MQTT-4.7.3-1]
	}
	props := p.propsSize(version)
	if props > 0 {
		if err := p.Properties.validate(PUBLISH); err != nil {
			return dst, err
		}
	}
	dst, err := appendHeader(dst, PUBLISH, p.flags(), p.remaining(version, props))
	if err != nil {
		return dst, err
	}
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendUint16(dst, p.PacketID)
	}
	if props >= 0 {
		dst = p.Properties.appendSized(dst, props)
	}
	return append(dst, p.Payload...), nil
}

// Ack holds the fields shared by PUBACK, PUBREC, PUBREL and PUBCOMP.
type Ack struct {
	PacketID   uint16
	ReasonCode ReasonCode // v5 only; Success encodes in the short form
	Properties Properties // v5 only
}

// Puback is the PUBACK packet (section 3.4).
type Puback Ack

// Pubrec is the PUBREC packet (section 3.5).
type Pubrec Ack

// Pubrel is the PUBREL packet (section 3.6).
type Pubrel Ack

// Pubcomp is the PUBCOMP packet (section 3.7).
type Pubcomp Ack

// Type implements Packet.
func (*Puback) Type() Type { return PUBACK }

// Type implements Packet.
func (*Pubrec) Type() Type { return PUBREC }

// Type implements Packet.
func (*Pubrel) Type() Type { return PUBREL }

// Type implements Packet.
func (*Pubcomp) Type() Type { return PUBCOMP }

// Decode implements Packet.
func (p *Puback) Decode(h FixedHeader, b []byte, v byte) error {
	return (*Ack)(p).decode(PUBACK, h, b, v)
}

// Decode implements Packet.
func (p *Pubrec) Decode(h FixedHeader, b []byte, v byte) error {
	return (*Ack)(p).decode(PUBREC, h, b, v)
}

// Decode implements Packet.
func (p *Pubrel) Decode(h FixedHeader, b []byte, v byte) error {
	return (*Ack)(p).decode(PUBREL, h, b, v)
}

// Decode implements Packet.
func (p *Pubcomp) Decode(h FixedHeader, b []byte, v byte) error {
	return (*Ack)(p).decode(PUBCOMP, h, b, v)
}

// Encode implements Packet.
func (p *Puback) Encode(dst []byte, v byte) ([]byte, error) {
	return (*Ack)(p).encode(dst, PUBACK, v)
}

// Encode implements Packet.
func (p *Pubrec) Encode(dst []byte, v byte) ([]byte, error) {
	return (*Ack)(p).encode(dst, PUBREC, v)
}

// Encode implements Packet.
func (p *Pubrel) Encode(dst []byte, v byte) ([]byte, error) {
	return (*Ack)(p).encode(dst, PUBREL, v)
}

// Encode implements Packet.
func (p *Pubcomp) Encode(dst []byte, v byte) ([]byte, error) {
	return (*Ack)(p).encode(dst, PUBCOMP, v)
}

// fixedFlags returns the flags a packet type must carry: 0b0010 for PUBREL,
// SUBSCRIBE and UNSUBSCRIBE, zero for the others but PUBLISH.
func fixedFlags(t Type) byte {
	switch t {
	case PUBREL, SUBSCRIBE, UNSUBSCRIBE:
		return 0x02
	}
	return 0
}

func (a *Ack) decode(t Type, h FixedHeader, body []byte, version byte) error {
	*a = Ack{Properties: a.Properties.recycle()}
	if h.Flags != fixedFlags(t) {
		return errFlags // [MQTT-3.6.1-1], [MQTT-2.2.2-2]
	}
	r := reader{buf: body}
	a.PacketID = r.uint16()
	if r.err != nil {
		return r.err
	}
	if a.PacketID == 0 {
		return errZeroPacketID // [MQTT-2.2.1-3]
	}
	if version == V5 && !r.done() { // [MQTT-3.4.2-1]: a missing reason code means Success
		a.ReasonCode = ReasonCode(r.byte())
		if !a.ReasonCode.ValidFor(t) {
			return errReason
		}
		if !r.done() {
			a.Properties.decode(&r, t)
		}
	}
	if r.err != nil {
		return r.err
	}
	if !r.done() {
		return ErrTrailingBytes
	}
	return nil
}

func (a *Ack) encode(dst []byte, t Type, version byte) ([]byte, error) {
	if a.PacketID == 0 {
		return dst, errZeroPacketID
	}
	if version != V5 {
		dst, _ = appendHeader(dst, t, fixedFlags(t), 2)
		return appendUint16(dst, a.PacketID), nil
	}
	if !a.ReasonCode.ValidFor(t) {
		return dst, errReason
	}
	props := a.Properties.size()
	n := 2
	switch {
	case props > 0:
		if err := a.Properties.validate(t); err != nil {
			return dst, err
		}
		n += 1 + vbiSize(props) + props
	case a.ReasonCode != Success:
		n++
	}
	dst, err := appendHeader(dst, t, fixedFlags(t), n)
	if err != nil {
		return dst, err
	}
	dst = appendUint16(dst, a.PacketID)
	if n > 2 {
		dst = append(dst, byte(a.ReasonCode))
	}
	if props > 0 {
		dst = a.Properties.appendTo(dst)
	}
	return dst, nil
}
