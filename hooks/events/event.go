// Package events tells the world when clients come and go and what they
// do, in the forms EMQX users already consume:
//
//   - [Presence] publishes a message on
//     $SYS/brokers/<node>/clients/<client id>/connected when a client's
//     session is established and .../disconnected when its connection
//     ends, with EMQX's JSON (not retained, QoS 0).
//   - [Webhook] POSTs JSON arrays of events (client.connected,
//     client.disconnected, session.subscribed, session.unsubscribed,
//     message.publish, message.delivered, message.dropped, EMQX's names
//     and fields) to an HTTP endpoint, filtered by event and by topic,
//     from a bounded queue in batches, retrying with exponential backoff
//     while the endpoint is down, and counting every event it drops.
//
// Neither ever blocks the broker: a webhook's hooks only append to its
// queue (a full queue drops the event and counts it), and the queue is
// encoded and sent by one goroutine per webhook. A webhook registers only
// the hooks its events need ([Webhook.Hooks]), so events it does not want
// cost the broker nothing.
package events

import (
	"encoding/base64"
	"net"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/ternmq/tern"
)

// Event names, as EMQX names them.
const (
	ClientConnected     = "client.connected"
	ClientDisconnected  = "client.disconnected"
	SessionSubscribed   = "session.subscribed"
	SessionUnsubscribed = "session.unsubscribed"
	MessagePublish      = "message.publish"
	MessageDelivered    = "message.delivered"
	MessageDropped      = "message.dropped"
)

// EventNames lists every event, in a fixed order.
var EventNames = []string{ClientConnected, ClientDisconnected, SessionSubscribed, SessionUnsubscribed,
	MessagePublish, MessageDelivered, MessageDropped}

type kind uint8

const (
	kConnected kind = iota
	kDisconnected
	kSubscribed
	kUnsubscribed
	kPublish
	kDelivered
	kDropped
	numKinds
)

// event is one event as queued: what encoding needs, without encoding it
// on the broker's goroutine. A message is kept by reference (messages are
// immutable and shared).
type event struct {
	kind      kind
	qos       byte
	protoVer  byte
	clean     bool
	keepAlive uint16
	expiry    uint32
	at        int64 // unix milliseconds
	since     int64 // connected_at for connected, the message's receipt for message events
	clientID  string
	username  string
	peer      string
	peerAddr  net.Addr // formatted into peer by the sender, off the publish path
	sock      string
	text      string // the disconnect or drop reason, or the subscription's filter
	msg       *tern.Message
}

// size is what the event counts towards a queue's byte limit.
func (e *event) size() int {
	n := 160 + len(e.clientID) + len(e.username) + len(e.peer) + len(e.text)
	if e.msg != nil {
		n += len(e.msg.Topic) + len(e.msg.Payload)
	}
	return n
}

// appendJSON encodes the event as EMQX's JSON object.
func (e *event) appendJSON(b []byte, node string, payload bool) []byte {
	if e.peerAddr != nil && e.peer == "" {
		e.peer = e.peerAddr.String()
	}
	b = append(b, `{"event":`...)
	b = appendString(b, EventNames[e.kind])
	switch e.kind {
	case kDelivered, kDropped:
		b = appendField(b, "clientid", e.clientID)
		if e.msg != nil {
			b = appendField(b, "from_clientid", e.msg.Origin)
		}
	default:
		b = appendField(b, "clientid", e.clientID)
	}
	if e.kind <= kUnsubscribed || e.kind == kPublish {
		b = appendField(b, "username", e.username)
	}
	switch e.kind {
	case kConnected, kDisconnected:
		b = appendField(b, "peername", e.peer)
		b = appendField(b, "sockname", e.sock)
	case kSubscribed, kUnsubscribed, kPublish:
		host := e.peer
		if i := lastColon(host); i >= 0 {
			host = trimBrackets(host[:i])
		}
		b = appendField(b, "peerhost", host)
	}
	switch e.kind {
	case kConnected:
		b = append(b, `,"proto_name":`...)
		b = appendString(b, protoName(e.protoVer))
		b = appendInt(b, "proto_ver", int64(e.protoVer))
		b = appendInt(b, "keepalive", int64(e.keepAlive))
		b = appendBool(b, "clean_start", e.clean)
		b = appendInt(b, "expiry_interval", int64(e.expiry))
		b = appendInt(b, "connected_at", e.since)
	case kDisconnected:
		b = appendField(b, "reason", e.text)
		b = appendInt(b, "disconnected_at", e.at)
	case kSubscribed:
		b = appendField(b, "topic", e.text)
		b = appendInt(b, "qos", int64(e.qos))
	case kUnsubscribed:
		b = appendField(b, "topic", e.text)
	case kPublish, kDelivered, kDropped:
		m := e.msg
		if e.kind == kDropped {
			b = appendField(b, "reason", e.text)
		}
		b = appendField(b, "topic", m.Topic)
		b = appendInt(b, "qos", int64(m.QoS))
		b = appendBool(b, "retain", m.Retain)
		if payload {
			if utf8.Valid(m.Payload) {
				b = append(b, `,"payload":`...)
				b = appendBytesString(b, m.Payload)
			} else {
				b = append(b, `,"payload_encoding":"base64","payload":"`...)
				b = base64.StdEncoding.AppendEncode(b, m.Payload)
				b = append(b, '"')
			}
		}
		b = appendInt(b, "publish_received_at", e.since)
	}
	b = appendInt(b, "timestamp", e.at)
	b = appendField(b, "node", node)
	return append(b, '}')
}

func protoName(v byte) string {
	if v == 3 {
		return "MQIsdp"
	}
	return "MQTT"
}

func lastColon(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return i
		}
		if s[i] == ']' {
			return -1
		}
	}
	return -1
}

func trimBrackets(s string) string {
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}

func appendField(b []byte, name, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

func appendInt(b []byte, name string, v int64) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}

func appendBool(b []byte, name string, v bool) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return strconv.AppendBool(b, v)
}

const hex = "0123456789abcdef"

// plain marks the bytes a JSON string holds as they are.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	i := 0
	for i < len(s) && plain[s[i]] { // the common case: nothing to escape
		i++
	}
	if i == len(s) {
		b = append(b, s...)
		return append(b, '"')
	}
	b = append(b, s[:i]...)
	start := i
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendBytesString is appendString for a byte slice, without a copy:
// appendString only reads the string while it runs.
func appendBytesString(b, s []byte) []byte {
	return appendString(b, unsafe.String(unsafe.SliceData(s), len(s)))
}

func nowMillis() int64 { return time.Now().UnixMilli() }
