package storage

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/ternmq/tern/packets"
)

// FormatVersion is the first byte of every encoded record. A decoder
// rejects any other version with ErrCorrupt.
const FormatVersion = 1

// The record encodings below leave out the fields a backend keeps in the
// record's key (a message's ID, a delivery's ClientID and Seq, ...): the
// Decode functions set every other field and leave those alone. Integers
// are varints unless noted, strings and byte slices are a uvarint length
// followed by the bytes, and a message's payload runs to the end of the
// record. Decoders copy: a decoded record never aliases its input.

// Flag bits of an encoded message.
const (
	msgQoS    = 0x03
	msgRetain = 0x04
	msgProps  = 0x08
	msgExpire = 0x10
)

// Flag bits of encoded message properties.
const (
	propPayloadFormat = 1 << iota
	propMessageExpiry
	propContentType
	propResponseTopic
	propCorrelationData
	propUser
)

// Flag bits of an encoded subscription.
const (
	subQoS            = 0x03
	subNoLocal        = 0x04
	subRetainAsPub    = 0x08
	subRetainHandling = 0x30
)

// Flag bits of an encoded delivery.
const (
	dlvQoS      = 0x03
	dlvRetain   = 0x04
	dlvReleased = 0x08
	dlvShare    = 0x10
)

// AppendMessage appends the encoding of m, all fields but ID, to dst.
func AppendMessage(dst []byte, m *Message) []byte {
	return appendMessageBody(append(dst, FormatVersion), m)
}

// DecodeMessage decodes a record made by AppendMessage into m, setting
// every field but ID.
func DecodeMessage(b []byte, m *Message) error {
	d := decoder{b: b, kind: "message"}
	d.version()
	var v Message
	d.messageBody(&v)
	if d.err != nil {
		return d.err
	}
	v.ID = m.ID
	*m = v
	return nil
}

// AppendSession appends the encoding of s, all fields but ClientID, to dst.
func AppendSession(dst []byte, s *Session) []byte {
	dst = append(dst, FormatVersion, s.Version)
	dst = binary.AppendUvarint(dst, uint64(s.Expiry))
	dst = binary.AppendVarint(dst, s.DisconnectedAt)
	dst = appendString(dst, s.Username)
	var f byte
	if s.HighIDs {
		f |= sessionHighIDs
	}
	if s.LastImport != "" {
		f |= sessionLastImport
	}
	if f != 0 {
		dst = append(dst, f)
	}
	if s.LastImport != "" {
		dst = appendString(dst, s.LastImport)
	}
	return dst
}

// The flags byte after the user name of a session record (records
// without one end at the user name); with sessionLastImport, LastImport
// follows.
const (
	sessionHighIDs    = 1
	sessionLastImport = 2
)

// DecodeSession decodes a record made by AppendSession into s, setting
// every field but ClientID.
func DecodeSession(b []byte, s *Session) error {
	d := decoder{b: b, kind: "session"}
	d.version()
	version := d.byte()
	expiry := d.uint32()
	disc := d.varint()
	var user string
	if len(d.b) > 0 { // records written before the user name was stored end here
		user = d.string()
	}
	var f byte
	var last string
	if len(d.b) > 0 {
		if f = d.byte(); f == 0 || f&^(sessionHighIDs|sessionLastImport) != 0 {
			d.corrupt(fmt.Sprintf("unknown session flags %#x", f))
		}
		if f&sessionLastImport != 0 {
			last = d.string()
		}
	}
	d.end()
	if d.err != nil {
		return d.err
	}
	s.Version, s.Expiry, s.DisconnectedAt, s.Username = version, expiry, disc, user
	s.HighIDs, s.LastImport = f&sessionHighIDs != 0, last
	return nil
}

// AppendSubscription appends the encoding of s, all fields but ClientID,
// Group and Filter, to dst.
func AppendSubscription(dst []byte, s *Subscription) []byte {
	f := s.QoS&subQoS | (s.RetainHandling<<4)&subRetainHandling
	if s.NoLocal {
		f |= subNoLocal
	}
	if s.RetainAsPublished {
		f |= subRetainAsPub
	}
	dst = append(dst, FormatVersion, f)
	return binary.AppendUvarint(dst, uint64(s.Identifier))
}

// DecodeSubscription decodes a record made by AppendSubscription into s,
// setting every field but ClientID, Group and Filter.
func DecodeSubscription(b []byte, s *Subscription) error {
	d := decoder{b: b, kind: "subscription"}
	d.version()
	f := d.byte()
	id := d.uint32()
	d.end()
	switch {
	case d.err != nil:
		return d.err
	case f&^(subQoS|subNoLocal|subRetainAsPub|subRetainHandling) != 0:
		return d.corrupt("unknown flags")
	case f&subQoS == 3 || f&subRetainHandling == 0x30:
		return d.corrupt("bad QoS or retain handling")
	}
	s.QoS = f & subQoS
	s.NoLocal = f&subNoLocal != 0
	s.RetainAsPublished = f&subRetainAsPub != 0
	s.RetainHandling = (f & subRetainHandling) >> 4
	s.Identifier = id
	return nil
}

// AppendDelivery appends the encoding of dl, all fields but ClientID and
// Seq, to dst.
func AppendDelivery(dst []byte, dl *Delivery) []byte {
	f := dl.QoS & dlvQoS
	if dl.Retain {
		f |= dlvRetain
	}
	if dl.Released {
		f |= dlvReleased
	}
	share := dl.ShareGroup != "" || dl.ShareFilter != ""
	if share {
		f |= dlvShare
	}
	dst = append(dst, FormatVersion, f)
	dst = binary.AppendUvarint(dst, dl.MessageID)
	dst = binary.AppendUvarint(dst, uint64(dl.PacketID))
	dst = binary.AppendUvarint(dst, uint64(len(dl.SubIDs)))
	for _, id := range dl.SubIDs {
		dst = binary.AppendUvarint(dst, uint64(id))
	}
	if share {
		dst = appendString(dst, dl.ShareGroup)
		dst = appendString(dst, dl.ShareFilter)
	}
	return dst
}

// DecodeDelivery decodes a record made by AppendDelivery into dl, setting
// every field but ClientID and Seq.
func DecodeDelivery(b []byte, dl *Delivery) error {
	d := decoder{b: b, kind: "delivery"}
	d.version()
	f := d.byte()
	if d.err == nil && (f&^(dlvQoS|dlvRetain|dlvReleased|dlvShare) != 0 || f&dlvQoS == 3) {
		return d.corrupt("bad flags")
	}
	v := Delivery{ClientID: dl.ClientID, Seq: dl.Seq, QoS: f & dlvQoS,
		Retain: f&dlvRetain != 0, Released: f&dlvReleased != 0}
	v.MessageID = d.uvarint()
	pid := d.uvarint()
	if pid > math.MaxUint16 {
		return d.corrupt("packet id out of range")
	}
	v.PacketID = uint16(pid)
	if n := d.count(1); n > 0 {
		v.SubIDs = make([]uint32, n)
		for i := range v.SubIDs {
			v.SubIDs[i] = d.uint32()
		}
	}
	if f&dlvShare != 0 {
		v.ShareGroup = d.string()
		v.ShareFilter = d.string()
	}
	d.end()
	if d.err != nil {
		return d.err
	}
	*dl = v
	return nil
}

// AppendWill appends the encoding of w, all fields but ClientID, to dst.
func AppendWill(dst []byte, w *Will) []byte {
	dst = append(dst, FormatVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(w.FireAt))
	dst = binary.AppendUvarint(dst, w.Message.ID)
	return appendMessageBody(dst, &w.Message)
}

// DecodeWill decodes a record made by AppendWill into w, setting every
// field but ClientID.
func DecodeWill(b []byte, w *Will) error {
	d := decoder{b: b, kind: "will"}
	d.version()
	var v Will
	v.FireAt = int64(d.uint64())
	v.Message.ID = d.uvarint()
	d.messageBody(&v.Message)
	if d.err != nil {
		return d.err
	}
	v.ClientID = w.ClientID
	*w = v
	return nil
}

// AppendRetained appends the encoding of a retained topic's message id.
func AppendRetained(dst []byte, messageID uint64) []byte {
	return binary.AppendUvarint(append(dst, FormatVersion), messageID)
}

// DecodeRetained decodes a record made by AppendRetained.
func DecodeRetained(b []byte) (messageID uint64, err error) {
	d := decoder{b: b, kind: "retained"}
	d.version()
	id := d.uvarint()
	d.end()
	return id, d.err
}

// AppendInbound appends the encoding of an inbound QoS 2 id record: the
// format version and the message's creation time (unix nanoseconds; the
// key says the rest). Records of earlier versions of Tern hold the
// version only.
func AppendInbound(dst []byte, created int64) []byte {
	return binary.AppendVarint(append(dst, FormatVersion), created)
}

// DecodeInbound decodes a record made by AppendInbound and returns the
// creation time it holds, 0 for a record that has none.
func DecodeInbound(b []byte) (created int64, err error) {
	d := decoder{b: b, kind: "inbound"}
	d.version()
	if d.err == nil && len(d.b) > 0 {
		created = d.varint()
	}
	d.end()
	return created, d.err
}

func appendString(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

func appendBytes(dst []byte, b []byte) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(b))), b...)
}

// appendMessageBody encodes every field of m but ID, payload last.
func appendMessageBody(dst []byte, m *Message) []byte {
	f := m.QoS & msgQoS
	if m.Retain {
		f |= msgRetain
	}
	if m.Properties != nil {
		f |= msgProps
	}
	if m.ExpireAt != 0 {
		f |= msgExpire
	}
	dst = append(dst, f)
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.Created))
	if m.ExpireAt != 0 {
		dst = binary.AppendVarint(dst, m.ExpireAt-m.Created) // short: an expiry interval
	}
	dst = appendString(dst, m.Topic)
	dst = appendString(dst, m.Origin)
	if p := m.Properties; p != nil {
		dst = appendProperties(dst, p)
	}
	return append(dst, m.Payload...)
}

// appendProperties encodes the six properties a message forwards.
func appendProperties(dst []byte, p *packets.Properties) []byte {
	var f byte
	set := func(ok bool, bit byte) {
		if ok {
			f |= bit
		}
	}
	set(p.PayloadFormat != 0, propPayloadFormat)
	set(p.MessageExpiry != 0, propMessageExpiry)
	set(p.ContentType != "", propContentType)
	set(p.ResponseTopic != "", propResponseTopic)
	set(p.CorrelationData != nil, propCorrelationData)
	set(len(p.User) > 0, propUser)
	dst = append(dst, f)
	if f&propPayloadFormat != 0 {
		dst = append(dst, p.PayloadFormat)
	}
	if f&propMessageExpiry != 0 {
		dst = binary.AppendUvarint(dst, uint64(p.MessageExpiry))
	}
	if f&propContentType != 0 {
		dst = appendString(dst, p.ContentType)
	}
	if f&propResponseTopic != 0 {
		dst = appendString(dst, p.ResponseTopic)
	}
	if f&propCorrelationData != 0 {
		dst = appendBytes(dst, p.CorrelationData)
	}
	if f&propUser != 0 {
		dst = binary.AppendUvarint(dst, uint64(len(p.User)))
		for _, u := range p.User {
			dst = appendString(dst, u.Key)
			dst = appendString(dst, u.Value)
		}
	}
	return dst
}

// decoder reads a record. The first problem sets err, which wraps
// ErrCorrupt, and every read after it returns zero.
type decoder struct {
	b    []byte
	kind string
	err  error
}

func (d *decoder) corrupt(what string) error {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s record: %s", ErrCorrupt, d.kind, what)
	}
	d.b = nil
	return d.err
}

func (d *decoder) version() {
	if v := d.byte(); d.err == nil && v != FormatVersion {
		d.corrupt(fmt.Sprintf("unknown format version %d", v))
	}
}

func (d *decoder) end() {
	if d.err == nil && len(d.b) > 0 {
		d.corrupt(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.corrupt("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uint64() uint64 {
	if len(d.b) < 8 {
		d.corrupt("truncated")
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.corrupt("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.corrupt("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.corrupt("value out of range")
		return 0
	}
	return uint32(v)
}

// count reads a number of items that each take at least min bytes, and
// checks that the record can hold that many.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/min) {
		d.corrupt("count larger than the record")
		return 0
	}
	return int(n)
}

// bytes reads a length-prefixed byte slice into a new slice (non-nil, even
// when empty).
func (d *decoder) bytes() []byte {
	n := d.count(1)
	if d.err != nil {
		return nil
	}
	v := make([]byte, n)
	copy(v, d.b)
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.count(1)
	if d.err != nil {
		return ""
	}
	v := string(d.b[:n])
	d.b = d.b[n:]
	return v
}

func (d *decoder) messageBody(m *Message) {
	f := d.byte()
	if d.err == nil && (f&^(msgQoS|msgRetain|msgProps|msgExpire) != 0 || f&msgQoS == 3) {
		d.corrupt("bad flags")
		return
	}
	m.QoS, m.Retain = f&msgQoS, f&msgRetain != 0
	m.Created = int64(d.uint64())
	if f&msgExpire != 0 {
		m.ExpireAt = m.Created + d.varint()
		if m.ExpireAt == 0 && d.err == nil {
			d.corrupt("zero expiry time")
		}
	}
	m.Topic = d.string()
	m.Origin = d.string()
	if f&msgProps != 0 {
		m.Properties = d.properties()
	}
	if d.err == nil && len(d.b) > 0 {
		m.Payload = append([]byte(nil), d.b...)
		d.b = nil
	}
}

func (d *decoder) properties() *packets.Properties {
	f := d.byte()
	if d.err == nil && f >= propUser<<1 {
		d.corrupt("unknown property flags")
		return nil
	}
	p := new(packets.Properties)
	if f&propPayloadFormat != 0 {
		p.PayloadFormat = d.byte()
	}
	if f&propMessageExpiry != 0 {
		p.MessageExpiry = d.uint32()
	}
	if f&propContentType != 0 {
		p.ContentType = d.string()
	}
	if f&propResponseTopic != 0 {
		p.ResponseTopic = d.string()
	}
	if f&propCorrelationData != 0 {
		p.CorrelationData = d.bytes()
	}
	if f&propUser != 0 {
		if n := d.count(2); n > 0 {
			p.User = make([]packets.UserProperty, n)
			for i := range p.User {
				p.User[i] = packets.UserProperty{Key: d.string(), Value: d.string()}
			}
		}
	}
	return p
}
