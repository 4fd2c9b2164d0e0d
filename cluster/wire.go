package cluster

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/storage"
)

// wireVersion starts every message between nodes and every record in
// the buckets and the park stream. 2: routes announced in batches (op
// 'A'). 3: sessions and tern_subs records say which half of the packet
// identifiers the session numbers from (storage.Session.HighIDs), and a
// shipped part its token (tern.SessionState.Token).
const wireVersion = 3

// minWireVersion is the oldest wireVersion read: records of version 2
// (in the buckets and the park stream after an upgrade) are those of 3
// without what 3 appended.
const minWireVersion = 2

// wireOK reports whether v is a wire version this node reads.
func wireOK(v byte) bool { return v >= minWireVersion && v <= wireVersion }

// protoVersion is the version of the exchanges between live nodes, given
// in heartbeats: a node of another is not routed to (its messages are
// parked). 2: wireVersion 2; 3: messages travel in batches (see batch);
// 4: wireVersion 3.
const protoVersion = 4

var errCorrupt = errors.New("cluster: corrupt message from another node")

// encodeForward encodes a message routed to another node and what it is
// for: the delivery's header, then the message in the storage codec.
func encodeForward(m *tern.Message, d tern.Delivery) []byte {
	return appendForward(make([]byte, 0, 64+len(m.Topic)+len(m.Payload)), m, d)
}

// appendForward appends encodeForward's encoding to b.
func appendForward(b []byte, m *tern.Message, d tern.Delivery) []byte {
	f := d.QoS & 3
	if d.Retain {
		f |= 4
	}
	if d.Again {
		f |= 8 // a node of an earlier version ignores it
	}
	b = append(b, wireVersion, f)
	b = appendStr(b, d.ClientID)
	b = appendStr(b, d.Group)
	b = appendStr(b, d.Filter)
	switch {
	case len(d.SubIDs) > 0:
		b = binary.AppendUvarint(b, uint64(len(d.SubIDs)))
		for _, id := range d.SubIDs {
			b = binary.AppendUvarint(b, uint64(id))
		}
	case d.SubID != 0:
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(d.SubID))
	default:
		b = append(b, 0)
	}
	return storage.AppendMessage(b, m.Record())
}

// decodeForward decodes what encodeForward made.
func decodeForward(b []byte) (*tern.Message, tern.Delivery, error) {
	var d tern.Delivery
	r := reader{b: b}
	if !wireOK(r.byte()) {
		return nil, d, errors.New("cluster: message from a node of another wire version")
	}
	f := r.byte()
	d.QoS, d.Retain, d.Again = f&3, f&4 != 0, f&8 != 0
	d.ClientID, d.Group, d.Filter = r.str(), r.str(), r.str()
	n := r.uvarint()
	if n > 1<<16 {
		return nil, d, errCorrupt
	}
	for range n {
		d.SubIDs = append(d.SubIDs, uint32(r.uvarint()))
	}
	if len(d.SubIDs) == 1 {
		d.SubID, d.SubIDs = d.SubIDs[0], nil
	}
	if r.err {
		return nil, d, errCorrupt
	}
	var rec storage.Message
	if err := storage.DecodeMessage(r.b, &rec); err != nil {
		return nil, d, err
	}
	return tern.MessageFromRecord(&rec), d, nil
}

// appendFrame appends one message of a batch to b: its length (4 bytes,
// big-endian) and encodeForward's encoding. A batch is wireVersion, then
// frames.
func appendFrame(b []byte, m *tern.Message, d tern.Delivery) []byte {
	off := len(b)
	b = appendForward(append(b, 0, 0, 0, 0), m, d)
	binary.BigEndian.PutUint32(b[off:], uint32(len(b)-off-4))
	return b
}

// decodeBatch calls fn with each message of a batch, in order, and stops
// at the first frame that does not decode. With qos0 false, QoS 0
// messages are skipped undecoded and counted in skipped.
func decodeBatch(b []byte, qos0 bool, fn func(*tern.Message, tern.Delivery)) (skipped int, err error) {
	if len(b) == 0 || !wireOK(b[0]) {
		return 0, errors.New("cluster: message from a node of another wire version")
	}
	for b = b[1:]; len(b) > 0; {
		if len(b) < 4 {
			return skipped, errCorrupt
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(n) > uint64(len(b)-4) {
			return skipped, errCorrupt
		}
		frame := b[4 : 4+n]
		b = b[4+n:]
		if !qos0 && len(frame) > 1 && frame[1]&3 == 0 { // encodeForward: version, then flags
			skipped++
			continue
		}
		m, d, err := decodeForward(frame)
		if err != nil {
			return skipped, err
		}
		fn(m, d)
	}
	return skipped, nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// reader reads what appendStr and binary.AppendUvarint wrote; err is set
// on a short or bad input.
type reader struct {
	b   []byte
	err bool
}

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.err = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err || n > uint64(len(r.b)) {
		r.err = true
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err || n > uint64(len(r.b)) {
		r.err = true
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

// hashKey returns a KV key token for strings of any content.
func hashKey(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// retainedKey maps a topic to a KV key: levels become tokens; bytes other
// than letters, digits, - and _ are written =XX, and an empty level =__.
func retainedKey(topic string) string {
	var sb strings.Builder
	for i, level := range strings.Split(topic, "/") {
		if i > 0 {
			sb.WriteByte('.')
		}
		if level == "" {
			sb.WriteString("=__")
			continue
		}
		for j := 0; j < len(level); j++ {
			c := level[j]
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
				sb.WriteByte(c)
			} else {
				const hexd = "0123456789ABCDEF"
				sb.WriteByte('=')
				sb.WriteByte(hexd[c>>4])
				sb.WriteByte(hexd[c&15])
			}
		}
	}
	return sb.String()
}

// encodeSession encodes a session on its way to another node.
func encodeSession(st *tern.SessionState) []byte {
	b := []byte{wireVersion}
	b = appendStr(b, st.Session.ClientID)
	b = appendBytes(b, storage.AppendSession(nil, &st.Session))
	b = binary.AppendUvarint(b, uint64(len(st.Subscriptions)))
	for i := range st.Subscriptions {
		sub := &st.Subscriptions[i]
		b = appendStr(b, sub.Group)
		b = appendStr(b, sub.Filter)
		b = appendBytes(b, storage.AppendSubscription(nil, sub))
	}
	b = binary.AppendUvarint(b, uint64(len(st.Messages)))
	for i := range st.Messages {
		b = binary.AppendUvarint(b, st.Messages[i].ID)
		b = appendBytes(b, storage.AppendMessage(nil, &st.Messages[i]))
	}
	b = binary.AppendUvarint(b, uint64(len(st.Deliveries)))
	for i := range st.Deliveries {
		b = binary.AppendUvarint(b, st.Deliveries[i].Seq)
		b = appendBytes(b, storage.AppendDelivery(nil, &st.Deliveries[i]))
	}
	b = binary.AppendUvarint(b, uint64(len(st.Inbound)))
	for _, id := range st.Inbound {
		b = binary.AppendUvarint(b, uint64(id))
	}
	b = appendStr(b, st.Token)
	// Appended after what earlier versions read (they stop there).
	b = binary.AppendUvarint(b, uint64(len(st.Again)))
	for _, id := range slices.Sorted(maps.Keys(st.Again)) {
		b = binary.AppendUvarint(b, uint64(id))
		b = binary.AppendVarint(b, st.Again[id])
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// decodeSession decodes what encodeSession made.
func decodeSession(b []byte) (*tern.SessionState, error) {
	r := reader{b: b}
	v := r.byte()
	if !wireOK(v) {
		return nil, errors.New("cluster: session from a node of another wire version")
	}
	st := new(tern.SessionState)
	id := r.str()
	if err := storage.DecodeSession(r.bytes(), &st.Session); err != nil {
		return nil, err
	}
	st.Session.ClientID = id
	count := func() int {
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			r.err = true
			return 0
		}
		return int(n)
	}
	for range count() {
		var s storage.Subscription
		group, filter := r.str(), r.str()
		if err := storage.DecodeSubscription(r.bytes(), &s); err != nil {
			return nil, err
		}
		s.ClientID, s.Group, s.Filter = st.Session.ClientID, group, filter
		st.Subscriptions = append(st.Subscriptions, s)
	}
	for range count() {
		id := r.uvarint()
		var m storage.Message
		if err := storage.DecodeMessage(r.bytes(), &m); err != nil {
			return nil, err
		}
		m.ID = id
		st.Messages = append(st.Messages, m)
	}
	for range count() {
		seq := r.uvarint()
		var d storage.Delivery
		if err := storage.DecodeDelivery(r.bytes(), &d); err != nil {
			return nil, err
		}
		d.ClientID, d.Seq = st.Session.ClientID, seq
		st.Deliveries = append(st.Deliveries, d)
	}
	for range count() {
		st.Inbound = append(st.Inbound, uint16(r.uvarint()))
	}
	if v >= 3 {
		st.Token = r.str()
	}
	if len(r.b) > 0 { // not from a node of an earlier version
		n := r.uvarint()
		if n > 1<<16 {
			return nil, errCorrupt
		}
		for range n {
			if st.Again == nil {
				st.Again = make(map[uint16]int64)
			}
			id := uint16(r.uvarint())
			st.Again[id] = r.varint()
		}
	}
	if r.err {
		return nil, errCorrupt
	}
	return st, nil
}

// partLimit bounds the encoding of one part of a session sent between
// nodes (splitSession), well under nats-server's payload limit
// (MaxPayload in natsOptions).
const partLimit = 8 << 20

// splitSession cuts st into parts whose encodings stay about under limit:
// the first holds the session's subscriptions, its inbound packet
// identifiers and its first deliveries; each later one the next
// deliveries, in order, with the messages they refer to. A part holds at
// least one delivery, however large.
func splitSession(st *tern.SessionState, limit int) []*tern.SessionState {
	msgs := make(map[uint64]*storage.Message, len(st.Messages))
	for i := range st.Messages {
		msgs[st.Messages[i].ID] = &st.Messages[i]
	}
	cur := &tern.SessionState{Session: st.Session, Subscriptions: st.Subscriptions, Inbound: st.Inbound, Again: st.Again}
	parts := []*tern.SessionState{cur}
	size := 0
	in := map[uint64]bool{} // messages in cur
	var buf []byte
	for _, d := range st.Deliveries {
		m := msgs[d.MessageID]
		cost := 32
		if m != nil && !in[m.ID] {
			buf = storage.AppendMessage(buf[:0], m)
			cost += len(buf)
		}
		if len(cur.Deliveries) > 0 && size+cost > limit {
			cur = &tern.SessionState{Session: st.Session}
			parts = append(parts, cur)
			size = 0
			clear(in)
			if m != nil {
				buf = storage.AppendMessage(buf[:0], m)
				cost = 32 + len(buf)
			}
		}
		if m != nil && !in[m.ID] {
			cur.Messages = append(cur.Messages, *m)
			in[m.ID] = true
		}
		cur.Deliveries = append(cur.Deliveries, d)
		size += cost
	}
	return parts
}
