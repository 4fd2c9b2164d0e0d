package pebblestore

import (
	"encoding/binary"
	"fmt"

	"github.com/ternmq/tern/storage"
)

// Every key starts with one byte naming its kind; the kinds are numbered in
// the order Load reports them, so that one scan in key order is a load.
// Client ids (and a subscription's group) follow as a uvarint length and
// the bytes, so that the keys of client "a" are never a prefix of those of
// "ab" and one client's keys of one kind form an exact range. Integers are
// big-endian, so that they sort numerically.
//
//	meta          0x00 "tern"                               -> schema version
//	message       0x01 id(8)                                -> storage.AppendMessage
//	session       0x02 client                               -> storage.AppendSession
//	subscription  0x03 client group filter(rest)            -> storage.AppendSubscription
//	delivery      0x04 client seq(8)                        -> storage.AppendDelivery
//	inbound       0x05 client packetID(2)                   -> storage.AppendInbound (creation time)
//	retained      0x06 topic(rest)                          -> storage.AppendRetained
//	will          0x07 client                               -> storage.AppendWill
const (
	kindMeta byte = iota
	kindMessage
	kindSession
	kindSubscription
	kindDelivery
	kindInbound
	kindRetained
	kindWill
	numKinds
)

// metaKey holds the schema version of the keys and values.
var metaKey = []byte{kindMeta, 't', 'e', 'r', 'n'}

// schemaVersion is the layout described above.
const schemaVersion = 1

// appendLP appends s as a uvarint length and the bytes.
func appendLP(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

// clientKey returns the prefix of one client's keys of one kind; it is
// also the whole key of a session or a will.
func clientKey(dst []byte, kind byte, clientID string) []byte {
	return appendLP(append(dst, kind), clientID)
}

func messageKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, kindMessage), id)
}

func subscriptionKey(dst []byte, clientID, group, filter string) []byte {
	return append(appendLP(clientKey(dst, kindSubscription, clientID), group), filter...)
}

func deliveryKey(dst []byte, clientID string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(clientKey(dst, kindDelivery, clientID), seq)
}

func inboundKey(dst []byte, clientID string, packetID uint16) []byte {
	return binary.BigEndian.AppendUint16(clientKey(dst, kindInbound, clientID), packetID)
}

func retainedKey(dst []byte, topic string) []byte {
	return append(append(dst, kindRetained), topic...)
}

// successor returns the smallest key greater than every key that starts
// with prefix, in place. A prefix here always ends in a length-prefixed
// string or a kind byte below 0xFF, so it is never all 0xFF.
func successor(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xFF {
			prefix[i]++
			return prefix[:i+1]
		}
	}
	panic("pebble: no successor of an all-0xFF key")
}

// keyReader splits a key into its parts. Its first problem sets err
// (wrapping ErrCorrupt) and makes every later read return zero values.
type keyReader struct {
	key []byte // the whole key, for the error
	k   []byte // what is left to read
	err error
}

func newKeyReader(key []byte) keyReader { return keyReader{key: key, k: key[1:]} }

func (r *keyReader) fail() {
	if r.err == nil {
		r.err = fmt.Errorf("%w: malformed key %x", storage.ErrCorrupt, r.key)
	}
	r.k = nil
}

func (r *keyReader) lp() string {
	n, w := binary.Uvarint(r.k)
	if w <= 0 || n > uint64(len(r.k)-w) {
		r.fail()
		return ""
	}
	s := string(r.k[w : w+int(n)])
	r.k = r.k[w+int(n):]
	return s
}

func (r *keyReader) uint64() uint64 {
	if len(r.k) < 8 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(r.k)
	r.k = r.k[8:]
	return v
}

func (r *keyReader) uint16() uint16 {
	if len(r.k) < 2 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint16(r.k)
	r.k = r.k[2:]
	return v
}

// rest returns what is left of the key.
func (r *keyReader) rest() string {
	s := string(r.k)
	r.k = nil
	return s
}

// end fails if anything is left of the key.
func (r *keyReader) end() error {
	if len(r.k) != 0 {
		r.fail()
	}
	return r.err
}
