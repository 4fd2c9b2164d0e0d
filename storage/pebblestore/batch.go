package pebblestore

import (
	"github.com/cockroachdb/pebble/v2"
	"github.com/ternmq/tern/storage"
)

// batch encodes each change straight into a Pebble batch. Pebble copies
// keys and values, so the scratch buffers are reused from one change to
// the next.
type batch struct {
	s        *Store
	b        *pebble.Batch // nil once committed
	n        int
	key, end []byte
	val      []byte
}

var _ storage.Batch = (*batch)(nil)

func (b *batch) live() *pebble.Batch {
	if b.b == nil {
		panic("storage/pebble: batch used after Commit")
	}
	b.n++
	return b.b
}

func (b *batch) set(key []byte) {
	_ = b.live().Set(key, b.val, nil) // fails only on a closed batch, which live rules out
}

func (b *batch) delete(key []byte) { _ = b.live().Delete(key, nil) }

// PutMessage implements [storage.Batch].
func (b *batch) PutMessage(m *storage.Message) {
	b.key = messageKey(b.key[:0], m.ID)
	b.val = storage.AppendMessage(b.val[:0], m)
	b.set(b.key)
}

// DeleteMessage implements [storage.Batch].
func (b *batch) DeleteMessage(id uint64) {
	b.key = messageKey(b.key[:0], id)
	b.delete(b.key)
}

// PutSession implements [storage.Batch].
func (b *batch) PutSession(s *storage.Session) {
	b.key = clientKey(b.key[:0], kindSession, s.ClientID)
	b.val = storage.AppendSession(b.val[:0], s)
	b.set(b.key)
}

// DeleteSession implements [storage.Batch]: point deletes for the session
// and the will, and a range delete over each of the client's key ranges.
// It counts as one operation.
func (b *batch) DeleteSession(clientID string) {
	pb := b.live()
	b.key = clientKey(b.key[:0], kindSession, clientID)
	_ = pb.Delete(b.key, nil)
	b.key = clientKey(b.key[:0], kindWill, clientID)
	_ = pb.Delete(b.key, nil)
	for _, kind := range []byte{kindSubscription, kindDelivery, kindInbound} {
		b.key = clientKey(b.key[:0], kind, clientID)
		b.end = successor(append(b.end[:0], b.key...))
		_ = pb.DeleteRange(b.key, b.end, nil)
	}
}

// PutSubscription implements [storage.Batch].
func (b *batch) PutSubscription(s *storage.Subscription) {
	b.key = subscriptionKey(b.key[:0], s.ClientID, s.Group, s.Filter)
	b.val = storage.AppendSubscription(b.val[:0], s)
	b.set(b.key)
}

// DeleteSubscription implements [storage.Batch].
func (b *batch) DeleteSubscription(clientID, group, filter string) {
	b.key = subscriptionKey(b.key[:0], clientID, group, filter)
	b.delete(b.key)
}

// PutDelivery implements [storage.Batch].
func (b *batch) PutDelivery(d *storage.Delivery) {
	b.key = deliveryKey(b.key[:0], d.ClientID, d.Seq)
	b.val = storage.AppendDelivery(b.val[:0], d)
	b.set(b.key)
}

// DeleteDelivery implements [storage.Batch].
func (b *batch) DeleteDelivery(clientID string, seq uint64) {
	b.key = deliveryKey(b.key[:0], clientID, seq)
	b.delete(b.key)
}

// PutInbound implements [storage.Batch].
func (b *batch) PutInbound(clientID string, packetID uint16, created int64) {
	b.key = inboundKey(b.key[:0], clientID, packetID)
	b.val = storage.AppendInbound(b.val[:0], created)
	b.set(b.key)
}

// DeleteInbound implements [storage.Batch].
func (b *batch) DeleteInbound(clientID string, packetID uint16) {
	b.key = inboundKey(b.key[:0], clientID, packetID)
	b.delete(b.key)
}

// PutRetained implements [storage.Batch].
func (b *batch) PutRetained(topic string, messageID uint64) {
	b.key = retainedKey(b.key[:0], topic)
	b.val = storage.AppendRetained(b.val[:0], messageID)
	b.set(b.key)
}

// DeleteRetained implements [storage.Batch].
func (b *batch) DeleteRetained(topic string) {
	b.key = retainedKey(b.key[:0], topic)
	b.delete(b.key)
}

// PutWill implements [storage.Batch].
func (b *batch) PutWill(w *storage.Will) {
	b.key = clientKey(b.key[:0], kindWill, w.ClientID)
	b.val = storage.AppendWill(b.val[:0], w)
	b.set(b.key)
}

// DeleteWill implements [storage.Batch].
func (b *batch) DeleteWill(clientID string) {
	b.key = clientKey(b.key[:0], kindWill, clientID)
	b.delete(b.key)
}

// Len implements [storage.Batch].
func (b *batch) Len() int { return b.n }
