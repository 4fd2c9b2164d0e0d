package packets

// Property identifiers of MQTT 5.0 (section 2.2.2.2).
const (
	PropPayloadFormat        byte = 0x01
	PropMessageExpiry        byte = 0x02
	PropContentType          byte = 0x03
	PropResponseTopic        byte = 0x08
	PropCorrelationData      byte = 0x09
	PropSubscriptionID       byte = 0x0B
	PropSessionExpiry        byte = 0x11
	PropAssignedClientID     byte = 0x12
	PropServerKeepAlive      byte = 0x13
	PropAuthMethod           byte = 0x15
	PropAuthData             byte = 0x16
	PropRequestProblemInfo   byte = 0x17
	PropWillDelay            byte = 0x18
	PropRequestResponseInfo  byte = 0x19
	PropResponseInfo         byte = 0x1A
	PropServerReference      byte = 0x1C
	PropReasonString         byte = 0x1F
	PropReceiveMaximum       byte = 0x21
	PropTopicAliasMaximum    byte = 0x22
	PropTopicAlias           byte = 0x23
	PropMaximumQoS           byte = 0x24
	PropRetainAvailable      byte = 0x25
	PropUser                 byte = 0x26
	PropMaximumPacketSize    byte = 0x27
	PropWildcardSubAvailable byte = 0x28
	PropSubIDAvailable       byte = 0x29
	PropSharedSubAvailable   byte = 0x2A
)

// WillProperties is the pseudo packet type used with [PropertyAllowed] for
// the Will Properties of a CONNECT packet.
const WillProperties Type = 0

// MaxSubscriptionID is the largest Subscription Identifier (a Variable Byte
// Integer of at most four bytes).
const MaxSubscriptionID = MaxRemainingLength

// UserProperty is one name/value pair of the User Property (0x26).
type UserProperty struct {
	Key, Value string
}

// Properties holds the v5 properties of a packet or of a will message.
//
// A zero value means "absent" wherever zero is not a meaningful value on the
// wire, or means the same as absence; the few properties whose zero value
// differs from their absence are pointers (nil = absent). Use [Uint32],
// [Uint16] and [Byte] to set them.
type Properties struct {
	PayloadFormat        byte           // 0x01: 1 = UTF-8 payload; 0 is the same as absent
	MessageExpiry        uint32         // 0x02: seconds; 0 = absent, the message does not expire
	ContentType          string         // 0x03
	ResponseTopic        string         // 0x08
	CorrelationData      []byte         // 0x09: nil = absent
	SubscriptionIDs      []uint32       // 0x0B: one on SUBSCRIBE, any number on PUBLISH
	SessionExpiry        *uint32        // 0x11: seconds; absent on DISCONNECT means "as at CONNECT"
	AssignedClientID     string         // 0x12
	ServerKeepAlive      *uint16        // 0x13: seconds
	AuthMethod           string         // 0x15
	AuthData             []byte         // 0x16: nil = absent
	RequestProblemInfo   *byte          // 0x17: absent = 1
	WillDelay            uint32         // 0x18: seconds; absent = 0
	RequestResponseInfo  byte           // 0x19: absent = 0
	ResponseInfo         string         // 0x1A
	ServerReference      string         // 0x1C
	ReasonString         string         // 0x1F
	ReceiveMaximum       uint16         // 0x21: 0 = absent (65,535); 0 on the wire is a protocol error
	TopicAliasMaximum    uint16         // 0x22: absent = 0
	TopicAlias           uint16         // 0x23: 0 = absent; 0 on the wire is invalid
	MaximumQoS           *byte          // 0x24: absent = 2
	RetainAvailable      *byte          // 0x25: absent = 1
	User                 []UserProperty // 0x26: in order, duplicates allowed
	MaximumPacketSize    uint32         // 0x27: 0 = absent (no limit); 0 on the wire is a protocol error
	WildcardSubAvailable *byte          // 0x28: absent = 1
	SubIDAvailable       *byte          // 0x29: absent = 1
	SharedSubAvailable   *byte          // 0x2A: absent = 1
}

// Uint32 returns a pointer to v, for optional properties.
func Uint32(v uint32) *uint32 { return &v }

// Uint16 returns a pointer to v, for optional properties.
func Uint16(v uint16) *uint16 { return &v }

// Byte returns a pointer to v, for optional properties.
func Byte(v byte) *byte { return &v }

// contexts is a bit set of packet types; bit 0 stands for will properties.
type contexts uint16

func ctx(ts ...Type) contexts {
	var c contexts
	for _, t := range ts {
		c |= 1 << t
	}
	return c
}

var (
	pubWill     = ctx(PUBLISH, WillProperties)
	reasonCtx   = ctx(CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH)
	allowedProp = [0x2B]contexts{
		PropPayloadFormat:        pubWill,
		PropMessageExpiry:        pubWill,
		PropContentType:          pubWill,
		PropResponseTopic:        pubWill,
		PropCorrelationData:      pubWill,
		PropSubscriptionID:       ctx(PUBLISH, SUBSCRIBE),
		PropSessionExpiry:        ctx(CONNECT, CONNACK, DISCONNECT),
		PropAssignedClientID:     ctx(CONNACK),
		PropServerKeepAlive:      ctx(CONNACK),
		PropAuthMethod:           ctx(CONNECT, CONNACK, AUTH),
		PropAuthData:             ctx(CONNECT, CONNACK, AUTH),
		PropRequestProblemInfo:   ctx(CONNECT),
		PropWillDelay:            ctx(WillProperties),
		PropRequestResponseInfo:  ctx(CONNECT),
		PropResponseInfo:         ctx(CONNACK),
		PropServerReference:      ctx(CONNACK, DISCONNECT),
		PropReasonString:         reasonCtx,
		PropReceiveMaximum:       ctx(CONNECT, CONNACK),
		PropTopicAliasMaximum:    ctx(CONNECT, CONNACK),
		PropTopicAlias:           ctx(PUBLISH),
		PropMaximumQoS:           ctx(CONNACK),
		PropRetainAvailable:      ctx(CONNACK),
		PropUser:                 ctx(CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH, WillProperties),
		PropMaximumPacketSize:    ctx(CONNECT, CONNACK),
		PropWildcardSubAvailable: ctx(CONNACK),
		PropSubIDAvailable:       ctx(CONNACK),
		PropSharedSubAvailable:   ctx(CONNACK),
	}
)

// allowedMask holds, for each packet type (0 = will properties), the set of
// property identifiers it may carry, one bit an identifier.
var allowedMask = func() (m [16]uint64) {
	for id, c := range allowedProp {
		for t := range m {
			if c&(1<<t) != 0 {
				m[t] |= 1 << id
			}
		}
	}
	return m
}()

// PropertyAllowed reports whether property id may appear in a packet of
// type t (use [WillProperties] for a CONNECT's will properties).
func PropertyAllowed(id byte, t Type) bool {
	return int(id) < len(allowedProp) && int(t) < 16 && allowedProp[id]&(1<<t) != 0
}

// recycle returns empty properties that keep the backing arrays of p's
// slices, so that decoding into a reused packet does not allocate.
func (p *Properties) recycle() Properties {
	return Properties{User: p.User[:0], SubscriptionIDs: p.SubscriptionIDs[:0]}
}

// decode reads a property length and the properties that follow
// into p, checking each one against the packet type t.
func (p *Properties) decode(r *reader, t Type) {
	n := r.vbi()
	body := r.take(n)
	if r.err != nil {
		return
	}
	pr := reader{buf: body}
	var seen uint64
	for !pr.done() && pr.err == nil {
		idv := pr.vbi() // identifiers are Variable Byte Integers
		if pr.err != nil {
			break
		}
		if idv >= len(allowedProp) || !PropertyAllowed(byte(idv), t) {
			pr.fail(&Error{Code: MalformedPacket, Msg: "property not allowed in " + propCtxName(t)})
			break
		}
		id := byte(idv)
		if id != PropUser && !(id == PropSubscriptionID && t == PUBLISH) {
			if seen&(1<<id) != 0 {
				pr.fail(protocolError("duplicate property"))
				break
			}
			seen |= 1 << id
		}
		p.decodeOne(&pr, id, t)
	}
	r.fail(pr.err)
}

func propCtxName(t Type) string {
	if t == WillProperties {
		return "will properties"
	}
	return t.String()
}

// readFlag reads a byte property that may only be 0 or 1.
func readFlag(r *reader) byte {
	b := r.byte()
	if b > 1 {
		r.fail(protocolError("property value must be 0 or 1"))
	}
	return b
}

func (p *Properties) decodeOne(r *reader, id byte, t Type) {
	switch id {
	case PropPayloadFormat:
		p.PayloadFormat = readFlag(r)
	case PropMessageExpiry:
		p.MessageExpiry = r.uint32()
	case PropContentType:
		p.ContentType = r.string()
	case PropResponseTopic:
		p.ResponseTopic = r.string()
		if hasWildcard(p.ResponseTopic) {
			r.fail(protocolError("wildcard in response topic")) // [MQTT-3.3.2-14]
		}
	case PropCorrelationData:
		p.CorrelationData = r.binary()
	case PropSubscriptionID:
		v := r.vbi()
		if v == 0 && r.err == nil {
			r.fail(protocolError("subscription identifier 0"))
		}
		p.SubscriptionIDs = append(p.SubscriptionIDs, uint32(v))
	case PropSessionExpiry:
		p.SessionExpiry = Uint32(r.uint32())
	case PropAssignedClientID:
		p.AssignedClientID = r.string()
	case PropServerKeepAlive:
		p.ServerKeepAlive = Uint16(r.uint16())
	case PropAuthMethod:
		p.AuthMethod = r.string()
	case PropAuthData:
		p.AuthData = r.binary()
	case PropRequestProblemInfo:
		p.RequestProblemInfo = Byte(readFlag(r))
	case PropWillDelay:
		p.WillDelay = r.uint32()
	case PropRequestResponseInfo:
		p.RequestResponseInfo = readFlag(r)
	case PropResponseInfo:
		p.ResponseInfo = r.string()
	case PropServerReference:
		p.ServerReference = r.string()
	case PropReasonString:
		p.ReasonString = r.string()
	case PropReceiveMaximum:
		p.ReceiveMaximum = r.uint16()
		if p.ReceiveMaximum == 0 && r.err == nil {
			r.fail(protocolError("receive maximum 0"))
		}
	case PropTopicAliasMaximum:
		p.TopicAliasMaximum = r.uint16()
	case PropTopicAlias:
		p.TopicAlias = r.uint16()
		if p.TopicAlias == 0 && r.err == nil {
			r.fail(&Error{Code: TopicAliasInvalid, Msg: "topic alias 0"})
		}
	case PropMaximumQoS:
		p.MaximumQoS = Byte(readFlag(r))
	case PropRetainAvailable:
		p.RetainAvailable = Byte(readFlag(r))
	case PropUser:
		k := r.string()
		v := r.string()
		p.User = append(p.User, UserProperty{Key: k, Value: v})
	case PropMaximumPacketSize:
		p.MaximumPacketSize = r.uint32()
		if p.MaximumPacketSize == 0 && r.err == nil {
			r.fail(protocolError("maximum packet size 0"))
		}
	case PropWildcardSubAvailable:
		p.WildcardSubAvailable = Byte(readFlag(r))
	case PropSubIDAvailable:
		p.SubIDAvailable = Byte(readFlag(r))
	case PropSharedSubAvailable:
		p.SharedSubAvailable = Byte(readFlag(r))
	}
}

// size returns the length of the encoded properties, without the property
// length field in front of them.
func (p *Properties) size() int {
	if p == nil {
		return 0
	}
	n := 0
	if p.PayloadFormat != 0 {
		n += 2
	}
	if p.MessageExpiry != 0 {
		n += 5
	}
	n += strSize(p.ContentType) + strSize(p.ResponseTopic)
	if p.CorrelationData != nil {
		n += 3 + len(p.CorrelationData)
	}
	for _, id := range p.SubscriptionIDs {
		n += 1 + vbiSize(int(id))
	}
	if p.SessionExpiry != nil {
		n += 5
	}
	n += strSize(p.AssignedClientID)
	if p.ServerKeepAlive != nil {
		n += 3
	}
	n += strSize(p.AuthMethod)
	if p.AuthData != nil {
		n += 3 + len(p.AuthData)
	}
	if p.RequestProblemInfo != nil {
		n += 2
	}
	if p.WillDelay != 0 {
		n += 5
	}
	if p.RequestResponseInfo != 0 {
		n += 2
	}
	n += strSize(p.ResponseInfo) + strSize(p.ServerReference) + strSize(p.ReasonString)
	if p.ReceiveMaximum != 0 {
		n += 3
	}
	if p.TopicAliasMaximum != 0 {
		n += 3
	}
	if p.TopicAlias != 0 {
		n += 3
	}
	if p.MaximumQoS != nil {
		n += 2
	}
	if p.RetainAvailable != nil {
		n += 2
	}
	for _, u := range p.User {
		n += 5 + len(u.Key) + len(u.Value)
	}
	if p.MaximumPacketSize != 0 {
		n += 5
	}
	if p.WildcardSubAvailable != nil {
		n += 2
	}
	if p.SubIDAvailable != nil {
		n += 2
	}
	if p.SharedSubAvailable != nil {
		n += 2
	}
	return n
}

func strSize(s string) int {
	if s == "" {
		return 0
	}
	return 3 + len(s)
}

// encodedSize returns the size of the property length field plus the
// properties.
func (p *Properties) encodedSize() int {
	n := p.size()
	return vbiSize(n) + n
}

// present returns the set of properties that are set, one bit an
// identifier.
func (p *Properties) present() uint64 {
	var m uint64
	set := func(ok bool, id byte) {
		if ok {
			m |= 1 << id
		}
	}
	set(p.PayloadFormat != 0, PropPayloadFormat)
	set(p.MessageExpiry != 0, PropMessageExpiry)
	set(p.ContentType != "", PropContentType)
	set(p.ResponseTopic != "", PropResponseTopic)
	set(p.CorrelationData != nil, PropCorrelationData)
	set(len(p.SubscriptionIDs) > 0, PropSubscriptionID)
	set(p.SessionExpiry != nil, PropSessionExpiry)
	set(p.AssignedClientID != "", PropAssignedClientID)
	set(p.ServerKeepAlive != nil, PropServerKeepAlive)
	set(p.AuthMethod != "", PropAuthMethod)
	set(p.AuthData != nil, PropAuthData)
	set(p.RequestProblemInfo != nil, PropRequestProblemInfo)
	set(p.WillDelay != 0, PropWillDelay)
	set(p.RequestResponseInfo != 0, PropRequestResponseInfo)
	set(p.ResponseInfo != "", PropResponseInfo)
	set(p.ServerReference != "", PropServerReference)
	set(p.ReasonString != "", PropReasonString)
	set(p.ReceiveMaximum != 0, PropReceiveMaximum)
	set(p.TopicAliasMaximum != 0, PropTopicAliasMaximum)
	set(p.TopicAlias != 0, PropTopicAlias)
	set(p.MaximumQoS != nil, PropMaximumQoS)
	set(p.RetainAvailable != nil, PropRetainAvailable)
	set(len(p.User) > 0, PropUser)
	set(p.MaximumPacketSize != 0, PropMaximumPacketSize)
	set(p.WildcardSubAvailable != nil, PropWildcardSubAvailable)
	set(p.SubIDAvailable != nil, PropSubIDAvailable)
	set(p.SharedSubAvailable != nil, PropSharedSubAvailable)
	return m
}

// validate checks, before encoding, that every property present may be
// sent in a packet of type t and has a value its receiver accepts: flags
// are 0 or 1, strings are valid MQTT strings that fit their length field.
func (p *Properties) validate(t Type) error {
	if p == nil {
		return nil
	}
	if p.present()&^allowedMask[t&15] != 0 {
		return &Error{Code: MalformedPacket, Msg: "property not allowed in " + propCtxName(t)}
	}
	if t == SUBSCRIBE && len(p.SubscriptionIDs) > 1 {
		return protocolError("more than one subscription identifier")
	}
	for _, id := range p.SubscriptionIDs {
		if id == 0 || id > MaxSubscriptionID {
			return protocolError("subscription identifier out of range")
		}
	}
	if p.PayloadFormat > 1 || p.RequestResponseInfo > 1 || flagAbove1(p.RequestProblemInfo) ||
		flagAbove1(p.MaximumQoS) || flagAbove1(p.RetainAvailable) || flagAbove1(p.WildcardSubAvailable) ||
		flagAbove1(p.SubIDAvailable) || flagAbove1(p.SharedSubAvailable) {
		return protocolError("property value must be 0 or 1")
	}
	if len(p.CorrelationData) > 65535 || len(p.AuthData) > 65535 {
		return malformed("property value longer than 65535 bytes")
	}
	for _, s := range [...]string{p.ContentType, p.ResponseTopic, p.AssignedClientID, p.AuthMethod,
		p.ResponseInfo, p.ServerReference, p.ReasonString} {
		if err := checkString(s); err != nil {
			return err
		}
	}
	for _, u := range p.User {
		if err := checkString(u.Key); err != nil {
			return err
		}
		if err := checkString(u.Value); err != nil {
			return err
		}
	}
	if hasWildcard(p.ResponseTopic) {
		return protocolError("wildcard in response topic") // [MQTT-3.3.2-14]
	}
	return nil
}

func flagAbove1(b *byte) bool { return b != nil && *b > 1 }

// appendTo appends the property length and the properties to dst.
func (p *Properties) appendTo(dst []byte) []byte {
	if p == nil {
		return append(dst, 0)
	}
	return p.appendSized(dst, p.size())
}

// appendSized is appendTo for a caller that knows p.size() already.
func (p *Properties) appendSized(dst []byte, size int) []byte {
	dst = appendVBI(dst, size)
	if size == 0 {
		return dst
	}
	if p.PayloadFormat != 0 {
		dst = append(dst, PropPayloadFormat, p.PayloadFormat)
	}
	if p.MessageExpiry != 0 {
		dst = appendUint32(append(dst, PropMessageExpiry), p.MessageExpiry)
	}
	dst = appendStrProp(dst, PropContentType, p.ContentType)
	dst = appendStrProp(dst, PropResponseTopic, p.ResponseTopic)
	if p.CorrelationData != nil {
		dst = appendBinary(append(dst, PropCorrelationData), p.CorrelationData)
	}
	for _, id := range p.SubscriptionIDs {
		dst = appendVBI(append(dst, PropSubscriptionID), int(id))
	}
	if p.SessionExpiry != nil {
		dst = appendUint32(append(dst, PropSessionExpiry), *p.SessionExpiry)
	}
	dst = appendStrProp(dst, PropAssignedClientID, p.AssignedClientID)
	if p.ServerKeepAlive != nil {
		dst = appendUint16(append(dst, PropServerKeepAlive), *p.ServerKeepAlive)
	}
	dst = appendStrProp(dst, PropAuthMethod, p.AuthMethod)
	if p.AuthData != nil {
		dst = appendBinary(append(dst, PropAuthData), p.AuthData)
	}
	if p.RequestProblemInfo != nil {
		dst = append(dst, PropRequestProblemInfo, *p.RequestProblemInfo)
	}
	if p.WillDelay != 0 {
		dst = appendUint32(append(dst, PropWillDelay), p.WillDelay)
	}
	if p.RequestResponseInfo != 0 {
		dst = append(dst, PropRequestResponseInfo, p.RequestResponseInfo)
	}
	dst = appendStrProp(dst, PropResponseInfo, p.ResponseInfo)
	dst = appendStrProp(dst, PropServerReference, p.ServerReference)
	dst = appendStrProp(dst, PropReasonString, p.ReasonString)
	if p.ReceiveMaximum != 0 {
		dst = appendUint16(append(dst, PropReceiveMaximum), p.ReceiveMaximum)
	}
	if p.TopicAliasMaximum != 0 {
		dst = appendUint16(append(dst, PropTopicAliasMaximum), p.TopicAliasMaximum)
	}
	if p.TopicAlias != 0 {
		dst = appendUint16(append(dst, PropTopicAlias), p.TopicAlias)
	}
	if p.MaximumQoS != nil {
		dst = append(dst, PropMaximumQoS, *p.MaximumQoS)
	}
	if p.RetainAvailable != nil {
		dst = append(dst, PropRetainAvailable, *p.RetainAvailable)
	}
	for _, u := range p.User {
		dst = appendString(appendString(append(dst, PropUser), u.Key), u.Value)
	}
	if p.MaximumPacketSize != 0 {
		dst = appendUint32(append(dst, PropMaximumPacketSize), p.MaximumPacketSize)
	}
	if p.WildcardSubAvailable != nil {
		dst = append(dst, PropWildcardSubAvailable, *p.WildcardSubAvailable)
	}
	if p.SubIDAvailable != nil {
		dst = append(dst, PropSubIDAvailable, *p.SubIDAvailable)
	}
	if p.SharedSubAvailable != nil {
		dst = append(dst, PropSharedSubAvailable, *p.SharedSubAvailable)
	}
	return dst
}

func appendStrProp(dst []byte, id byte, s string) []byte {
	if s == "" {
		return dst
	}
	return appendString(append(dst, id), s)
}

// Empty reports whether no property is set.
func (p *Properties) Empty() bool { return p == nil || p.size() == 0 }
