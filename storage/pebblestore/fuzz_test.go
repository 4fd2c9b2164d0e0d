package pebblestore

import (
	"errors"
	"testing"

	"github.com/ternmq/tern/storage"
)

// nopLoader accepts everything.
type nopLoader struct{}

func (nopLoader) Message(*storage.Message) error           { return nil }
func (nopLoader) Session(*storage.Session) error           { return nil }
func (nopLoader) Subscription(*storage.Subscription) error { return nil }
func (nopLoader) Delivery(*storage.Delivery) error         { return nil }
func (nopLoader) Inbound(string, uint16, int64) error      { return nil }
func (nopLoader) Retained(string, uint64) error            { return nil }
func (nopLoader) Will(*storage.Will) error                 { return nil }

// FuzzLoadRecord feeds garbage keys and values to Load's decoding: it
// must return nil or an error wrapping ErrCorrupt, never panic.
func FuzzLoadRecord(f *testing.F) {
	f.Add(messageKey(nil, 7), storage.AppendMessage(nil, &storage.Message{Topic: "t", Payload: []byte("p")}))
	f.Add(clientKey(nil, kindSession, "c"), storage.AppendSession(nil, &storage.Session{Version: 5}))
	f.Add(subscriptionKey(nil, "c", "g", "a/#"), storage.AppendSubscription(nil, &storage.Subscription{QoS: 1}))
	f.Add(deliveryKey(nil, "c", 3), storage.AppendDelivery(nil, &storage.Delivery{MessageID: 7, QoS: 1}))
	f.Add(inboundKey(nil, "c", 9), storage.AppendInbound(nil, 12345))
	f.Add(retainedKey(nil, "a/b"), storage.AppendRetained(nil, 7))
	f.Add(clientKey(nil, kindWill, "c"), storage.AppendWill(nil, &storage.Will{FireAt: 1}))
	f.Add([]byte{kindDelivery, 0xFF, 0xFF}, []byte{1})
	f.Fuzz(func(t *testing.T, key, val []byte) {
		if err := loadRecord(nopLoader{}, key, val); err != nil && !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("error does not wrap ErrCorrupt: %v", err)
		}
	})
}

func TestKeysAreExactRanges(t *testing.T) {
	// A client's key range must not hold another client's keys, whatever
	// the bytes: "a" and "ab", ids ending in 0xFF, the empty id.
	ids := []string{"", "a", "ab", "a\xff", "a\xff\xff", "\xff", "b", string(make([]byte, 200))}
	for _, kind := range []byte{kindSubscription, kindDelivery, kindInbound} {
		for _, id := range ids {
			start := clientKey(nil, kind, id)
			end := successor(clientKey(nil, kind, id))
			for _, other := range ids {
				keys := [][]byte{clientKey(nil, kind, other), deliveryKey(nil, other, 0), deliveryKey(nil, other, 1<<63),
					subscriptionKey(nil, other, "\xff", "\xff\xff"), inboundKey(nil, other, 0xFFFF)}
				for _, k := range keys {
					if k[0] != kind {
						continue
					}
					in := string(k) >= string(start) && string(k) < string(end)
					if in != (other == id) {
						t.Errorf("kind %d: key %x of %q in range of %q: %v", kind, k, other, id, in)
					}
				}
			}
		}
	}
}
