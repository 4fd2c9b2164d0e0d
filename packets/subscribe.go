package packets

import "strings"

// Subscription is one topic filter of a SUBSCRIBE packet with its options.
type Subscription struct {
	Filter            string
	QoS               byte // maximum QoS
	NoLocal           bool // v5
	RetainAsPublished bool // v5
	RetainHandling    byte // v5: 0 send retained, 1 only on a new subscription, 2 never
}

// Subscribe is the SUBSCRIBE packet (section 3.8).
type Subscribe struct {
	PacketID      uint16
	Properties    Properties
	Subscriptions []Subscription
}

// Type implements Packet.
func (*Subscribe) Type() Type { return SUBSCRIBE }

// Subscription option bits (section 3.8.3.1).
const (
	subOptQoS            = 0x03
	subOptNoLocal        = 0x04
	subOptRetainAsPub    = 0x08
	subOptRetainHandling = 0x30
	subOptReserved5      = 0xC0
	subOptReservedV3     = 0xFC
)

// Decode implements Packet.
func (s *Subscribe) Decode(h FixedHeader, body []byte, version byte) error {
	*s = Subscribe{Properties: s.Properties.recycle(), Subscriptions: s.Subscriptions[:0]}
	if h.Flags != 0x02 {
		return errFlags // [MQTT-3.8.1-1]
	}
	r := reader{buf: body}
	s.PacketID = r.uint16()
	if r.err == nil && s.PacketID == 0 {
		return errZeroPacketID // [MQTT-2.2.1-3], [MQTT-2.3.1-1] in 3.1.1
	}
	if version == V5 {
		s.Properties.decode(&r, SUBSCRIBE)
	}
	if r.err != nil {
		return r.err
	}
	if r.done() {
		return protocolError("SUBSCRIBE without topic filters") // [MQTT-3.8.3-2], [MQTT-3.8.3-3] in 3.1.1
	}
	for !r.done() {
		f := r.string()
		o := r.byte()
		if r.err != nil {
			return r.err
		}
		sub, err := decodeOptions(f, o, version)
		if err != nil {
			return err
		}
		s.Subscriptions = append(s.Subscriptions, sub)
	}
	return nil
}

// decodeOptions decodes the subscription options byte that follows filter f.
func decodeOptions(f string, o, version byte) (Subscription, error) {
	sub := Subscription{Filter: f, QoS: o & subOptQoS}
	if version != V5 {
		if o&subOptReservedV3 != 0 || sub.QoS == 3 {
			return sub, malformed("reserved bits set in requested QoS") // [MQTT-3-8.3-4] in 3.1.1
		}
		return sub, nil
	}
	if o&subOptReserved5 != 0 {
		return sub, malformed("reserved subscription option bits set") // [MQTT-3.8.3-5]
	}
	if sub.QoS == 3 {
		return sub, protocolError("subscription maximum QoS 3") // section 3.8.3.1
	}
	sub.NoLocal = o&subOptNoLocal != 0
	sub.RetainAsPublished = o&subOptRetainAsPub != 0
	sub.RetainHandling = o & subOptRetainHandling >> 4
	if sub.RetainHandling == 3 {
		return sub, protocolError("retain handling 3") // section 3.8.3.1
	}
	if sub.NoLocal && isShared(f) {
		return sub, protocolError("no local on a shared subscription") // [MQTT-3.8.3-4]
	}
	return sub, nil
}

// isShared reports whether filter f names a shared subscription (section
// 4.8.2).
func isShared(f string) bool { return strings.HasPrefix(f, "$share/") }

// Encode implements Packet.
func (s *Subscribe) Encode(dst []byte, version byte) ([]byte, error) {
	if s.PacketID == 0 {
		return dst, errZeroPacketID
	}
	if len(s.Subscriptions) == 0 {
		return dst, protocolError("SUBSCRIBE without topic filters")
	}
	n := 2
	if version == V5 {
		if err := s.Properties.validate(SUBSCRIBE); err != nil {
			return dst, err
		}
		n += s.Properties.encodedSize()
	}
	for _, sub := range s.Subscriptions {
		if sub.QoS > 2 || sub.RetainHandling > 2 {
			return dst, malformed("invalid subscription options")
		}
		if version == V5 && sub.NoLocal && isShared(sub.Filter) {
			return dst, protocolError("no local on a shared subscription")
		}
		if err := checkString(sub.Filter); err != nil {
			return dst, err
		}
		n += 3 + len(sub.Filter)
	}
	dst, err := appendHeader(dst, SUBSCRIBE, 0x02, n)
	if err != nil {
		return dst, err
	}
	dst = appendUint16(dst, s.PacketID)
	if version == V5 {
		dst = s.Properties.appendTo(dst)
	}
	for _, sub := range s.Subscriptions {
		o := sub.QoS
		if version == V5 {
			if sub.NoLocal {
				o |= subOptNoLocal
			}
			if sub.RetainAsPublished {
				o |= subOptRetainAsPub
			}
			o |= sub.RetainHandling << 4
		}
		dst = append(appendString(dst, sub.Filter), o)
	}
	return dst, nil
}

// Suback is the SUBACK packet (section 3.9).
type Suback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode // one per subscription, in order
}

// Type implements Packet.
func (*Suback) Type() Type { return SUBACK }

// Decode implements Packet.
func (s *Suback) Decode(h FixedHeader, body []byte, version byte) error {
	*s = Suback{Properties: s.Properties.recycle(), ReasonCodes: s.ReasonCodes[:0]}
	return decodeCodes(SUBACK, h, body, version, &s.PacketID, &s.Properties, &s.ReasonCodes)
}

// Encode implements Packet. For v3 clients, failure codes become 0x80, the
// only failure 3.1.1 knows [MQTT-3.9.3-2].
func (s *Suback) Encode(dst []byte, version byte) ([]byte, error) {
	return encodeCodes(dst, SUBACK, version, s.PacketID, &s.Properties, s.ReasonCodes)
}

// Unsubscribe is the UNSUBSCRIBE packet (section 3.10).
type Unsubscribe struct {
	PacketID   uint16
	Properties Properties
	Filters    []string
}

// Type implements Packet.
func (*Unsubscribe) Type() Type { return UNSUBSCRIBE }

// Decode implements Packet.
func (u *Unsubscribe) Decode(h FixedHeader, body []byte, version byte) error {
	*u = Unsubscribe{Properties: u.Properties.recycle(), Filters: u.Filters[:0]}
	if h.Flags != 0x02 {
		return errFlags // [MQTT-3.10.1-1]
	}
	r := reader{buf: body}
	u.PacketID = r.uint16()
	if r.err == nil && u.PacketID == 0 {
		return errZeroPacketID // [MQTT-2.2.1-3], [MQTT-2.3.1-1] in 3.1.1
	}
	if version == V5 {
		u.Properties.decode(&r, UNSUBSCRIBE)
	}
	if r.err != nil {
		return r.err
	}
	if r.done() {
		return protocolError("UNSUBSCRIBE without topic filters") // [MQTT-3.10.3-2]
	}
	for !r.done() {
		f := r.string()
		if r.err != nil {
			return r.err
		}
		u.Filters = append(u.Filters, f)
	}
	return nil
}

// Encode implements Packet.
func (u *Unsubscribe) Encode(dst []byte, version byte) ([]byte, error) {
	if u.PacketID == 0 {
		return dst, errZeroPacketID
	}
	if len(u.Filters) == 0 {
		return dst, protocolError("UNSUBSCRIBE without topic filters")
	}
	n := 2
	if version == V5 {
		if err := u.Properties.validate(UNSUBSCRIBE); err != nil {
			return dst, err
		}
		n += u.Properties.encodedSize()
	}
	for _, f := range u.Filters {
		if err := checkString(f); err != nil {
			return dst, err
		}
		n += 2 + len(f)
	}
	dst, err := appendHeader(dst, UNSUBSCRIBE, 0x02, n)
	if err != nil {
		return dst, err
	}
	dst = appendUint16(dst, u.PacketID)
	if version == V5 {
		dst = u.Properties.appendTo(dst)
	}
	for _, f := range u.Filters {
		dst = appendString(dst, f)
	}
	return dst, nil
}

// Unsuback is the UNSUBACK packet (section 3.11). Only v5 carries reason
// codes and properties.
type Unsuback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Type implements Packet.
func (*Unsuback) Type() Type { return UNSUBACK }

// Decode implements Packet.
func (u *Unsuback) Decode(h FixedHeader, body []byte, version byte) error {
	*u = Unsuback{Properties: u.Properties.recycle(), ReasonCodes: u.ReasonCodes[:0]}
	return decodeCodes(UNSUBACK, h, body, version, &u.PacketID, &u.Properties, &u.ReasonCodes)
}

// Encode implements Packet.
func (u *Unsuback) Encode(dst []byte, version byte) ([]byte, error) {
	return encodeCodes(dst, UNSUBACK, version, u.PacketID, &u.Properties, u.ReasonCodes)
}

// decodeCodes decodes SUBACK and UNSUBACK: a packet identifier, v5
// properties, then one reason code a byte.
func decodeCodes(t Type, h FixedHeader, body []byte, version byte, id *uint16, props *Properties, codes *[]ReasonCode) error {
	if h.Flags != 0 {
		return errFlags
	}
	r := reader{buf: body}
	*id = r.uint16()
	if r.err == nil && *id == 0 {
		return errZeroPacketID
	}
	if version == V5 {
		props.decode(&r, t)
	}
	if r.err != nil {
		return r.err
	}
	if t == UNSUBACK && version != V5 {
		if !r.done() {
			return ErrTrailingBytes
		}
		return nil
	}
	if r.done() {
		return protocolError(t.String() + " without reason codes")
	}
	for _, b := range r.take(r.remaining()) {
		c := ReasonCode(b)
		if version == V5 && !c.ValidFor(t) || version != V5 && c > 2 && c != 0x80 {
			return errReason // [MQTT-3.9.3-2], [MQTT-3.11.3-2]
		}
		*codes = append(*codes, c)
	}
	return nil
}

func encodeCodes(dst []byte, t Type, version byte, id uint16, props *Properties, codes []ReasonCode) ([]byte, error) {
	if id == 0 {
		return dst, errZeroPacketID
	}
	if t == UNSUBACK && version != V5 {
		dst, _ = appendHeader(dst, t, 0, 2)
		return appendUint16(dst, id), nil
	}
	if len(codes) == 0 {
		return dst, protocolError(t.String() + " without reason codes")
	}
	for _, c := range codes {
		if !c.ValidFor(t) { // v3 SUBACK codes are mapped from valid v5 ones below
			return dst, errReason
		}
	}
	n := 2 + len(codes)
	if version == V5 {
		if err := props.validate(t); err != nil {
			return dst, err
		}
		n += props.encodedSize()
	}
	dst, err := appendHeader(dst, t, 0, n)
	if err != nil {
		return dst, err
	}
	dst = appendUint16(dst, id)
	if version == V5 {
		dst = props.appendTo(dst)
	}
	for _, c := range codes {
		if version != V5 && c.IsError() {
			c = 0x80
		}
		dst = append(dst, byte(c))
	}
	return dst, nil
}
