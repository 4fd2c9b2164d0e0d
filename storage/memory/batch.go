package memory

import "github.com/ternmq/tern/storage"

type opKind uint8

const (
	opPutMessage opKind = iota
	opDeleteMessage
	opPutSession
	opDeleteSession
	opPutSubscription
	opDeleteSubscription
	opPutDelivery
	opDeleteDelivery
	opPutInbound
	opDeleteInbound
	opPutRetained
	opDeleteRetained
	opPutWill
	opDeleteWill
)

// op is one change of a batch. client holds the topic for retained ops; id
// is the message id, the delivery's Seq or the packet id.
type op struct {
	kind          opKind
	client        string
	group, filter string
	id            uint64
	value         []byte
	created       int64 // PutInbound's
}

// batch records operations, their records already encoded, for Commit to
// apply in order.
type batch struct {
	store *Store
	ops   []op
	spent bool
}

var _ storage.Batch = (*batch)(nil)

func (b *batch) add(o op) {
	if b.spent {
		panic("memory: batch used after Commit")
	}
	b.ops = append(b.ops, o)
}

// PutMessage implements [storage.Batch].
func (b *batch) PutMessage(m *storage.Message) {
	b.add(op{kind: opPutMessage, id: m.ID, value: storage.AppendMessage(nil, m)})
}

// DeleteMessage implements [storage.Batch].
func (b *batch) DeleteMessage(id uint64) { b.add(op{kind: opDeleteMessage, id: id}) }

// PutSession implements [storage.Batch].
func (b *batch) PutSession(s *storage.Session) {
	b.add(op{kind: opPutSession, client: s.ClientID, value: storage.AppendSession(nil, s)})
}

// DeleteSession implements [storage.Batch].
func (b *batch) DeleteSession(clientID string) {
	b.add(op{kind: opDeleteSession, client: clientID})
}

// PutSubscription implements [storage.Batch].
func (b *batch) PutSubscription(s *storage.Subscription) {
	b.add(op{kind: opPutSubscription, client: s.ClientID, group: s.Group, filter: s.Filter,
		value: storage.AppendSubscription(nil, s)})
}

// DeleteSubscription implements [storage.Batch].
func (b *batch) DeleteSubscription(clientID, group, filter string) {
	b.add(op{kind: opDeleteSubscription, client: clientID, group: group, filter: filter})
}

// PutDelivery implements [storage.Batch].
func (b *batch) PutDelivery(d *storage.Delivery) {
	b.add(op{kind: opPutDelivery, client: d.ClientID, id: d.Seq, value: storage.AppendDelivery(nil, d)})
}

// DeleteDelivery implements [storage.Batch].
func (b *batch) DeleteDelivery(clientID string, seq uint64) {
	b.add(op{kind: opDeleteDelivery, client: clientID, id: seq})
}

// PutInbound implements [storage.Batch].
func (b *batch) PutInbound(clientID string, packetID uint16, created int64) {
	b.add(op{kind: opPutInbound, client: clientID, id: uint64(packetID), created: created})
}

// DeleteInbound implements [storage.Batch].
func (b *batch) DeleteInbound(clientID string, packetID uint16) {
	b.add(op{kind: opDeleteInbound, client: clientID, id: uint64(packetID)})
}

// PutRetained implements [storage.Batch].
func (b *batch) PutRetained(topic string, messageID uint64) {
	b.add(op{kind: opPutRetained, client: topic, id: messageID})
}

// DeleteRetained implements [storage.Batch].
func (b *batch) DeleteRetained(topic string) { b.add(op{kind: opDeleteRetained, client: topic}) }

// PutWill implements [storage.Batch].
func (b *batch) PutWill(w *storage.Will) {
	b.add(op{kind: opPutWill, client: w.ClientID, value: storage.AppendWill(nil, w)})
}

// DeleteWill implements [storage.Batch].
func (b *batch) DeleteWill(clientID string) { b.add(op{kind: opDeleteWill, client: clientID}) }

// Len implements [storage.Batch].
func (b *batch) Len() int { return len(b.ops) }
