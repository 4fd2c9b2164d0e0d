package packets

// Pingreq is the PINGREQ packet (section 3.12).
type Pingreq struct{}

// Pingresp is the PINGRESP packet (section 3.13).
type Pingresp struct{}

// Type implements Packet.
func (*Pingreq) Type() Type { return PINGREQ }

// Type implements Packet.
func (*Pingresp) Type() Type { return PINGRESP }

// Decode implements Packet.
func (*Pingreq) Decode(h FixedHeader, body []byte, _ byte) error { return decodeEmpty(h, body) }

// Decode implements Packet.
func (*Pingresp) Decode(h FixedHeader, body []byte, _ byte) error { return decodeEmpty(h, body) }

// Encode implements Packet.
func (*Pingreq) Encode(dst []byte, _ byte) ([]byte, error) { return append(dst, 0xC0, 0), nil }

// Encode implements Packet.
func (*Pingresp) Encode(dst []byte, _ byte) ([]byte, error) { return append(dst, 0xD0, 0), nil }

func decodeEmpty(h FixedHeader, body []byte) error {
	if h.Flags != 0 {
		return errFlags
	}
	if len(body) != 0 {
		return ErrTrailingBytes
	}
	return nil
}

// Disconnect is the DISCONNECT packet (section 3.14). Only v5 carries a
// reason code and properties.
type Disconnect struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Type implements Packet.
func (*Disconnect) Type() Type { return DISCONNECT }

// Decode implements Packet.
func (d *Disconnect) Decode(h FixedHeader, body []byte, version byte) error {
	*d = Disconnect{Properties: d.Properties.recycle()}
	if version != V5 {
		return decodeEmpty(h, body)
	}
	return decodeReason(DISCONNECT, h, body, &d.ReasonCode, &d.Properties)
}

// Encode implements Packet.
func (d *Disconnect) Encode(dst []byte, version byte) ([]byte, error) {
	if version != V5 {
		return append(dst, 0xE0, 0), nil
	}
	return encodeReason(dst, DISCONNECT, d.ReasonCode, &d.Properties)
}

// Auth is the AUTH packet of MQTT 5.0 (section 3.15).
type Auth struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Type implements Packet.
func (*Auth) Type() Type { return AUTH }

// Decode implements Packet.
func (a *Auth) Decode(h FixedHeader, body []byte, version byte) error {
	*a = Auth{Properties: a.Properties.recycle()}
	if version != V5 {
		return malformed("AUTH before MQTT 5") // packet type 15 is reserved in 3.1.1 (section 2.2.1)
	}
	if err := decodeReason(AUTH, h, body, &a.ReasonCode, &a.Properties); err != nil {
		return err
	}
	if len(body) > 0 && a.Properties.AuthMethod == "" {
		return errNoAuthMethod
	}
	return nil
}

// errNoAuthMethod: "It is a Protocol Error to omit the Authentication
// Method" from an AUTH packet (section 3.15.2.2.2); only the short form
// (Remaining Length 0, Success, no properties) goes without one.
var errNoAuthMethod = protocolError("AUTH without an authentication method")

// Encode implements Packet.
func (a *Auth) Encode(dst []byte, version byte) ([]byte, error) {
	if version != V5 {
		return dst, malformed("AUTH before MQTT 5")
	}
	if (a.ReasonCode != Success || !a.Properties.Empty()) && a.Properties.AuthMethod == "" {
		return dst, errNoAuthMethod
	}
	return encodeReason(dst, AUTH, a.ReasonCode, &a.Properties)
}

// decodeReason decodes DISCONNECT and AUTH: an optional reason code and
// optional properties; a remaining length of 0 means Success
// [MQTT-3.14.2-1], [MQTT-3.15.2-1].
func decodeReason(t Type, h FixedHeader, body []byte, code *ReasonCode, props *Properties) error {
	if h.Flags != 0 {
		return errFlags // [MQTT-3.14.1-1], [MQTT-3.15.1-1]
	}
	r := reader{buf: body}
	if r.done() {
		*code = Success
		return nil
	}
	*code = ReasonCode(r.byte())
	if !code.ValidFor(t) {
		return errReason
	}
	if !r.done() {
		props.decode(&r, t)
	}
	if r.err != nil {
		return r.err
	}
	if !r.done() {
		return ErrTrailingBytes
	}
	return nil
}

func encodeReason(dst []byte, t Type, code ReasonCode, props *Properties) ([]byte, error) {
	if !code.ValidFor(t) {
		return dst, errReason
	}
	n := props.size()
	if n == 0 && code == Success {
		dst, _ = appendHeader(dst, t, 0, 0)
		return dst, nil
	}
	if err := props.validate(t); err != nil {
		return dst, err
	}
	rem := 1
	if n > 0 {
		rem += vbiSize(n) + n
	}
	dst, err := appendHeader(dst, t, 0, rem)
	if err != nil {
		return dst, err
	}
	dst = append(dst, byte(code))
	if n > 0 {
		dst = props.appendTo(dst)
	}
	return dst, nil
}
