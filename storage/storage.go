// Package storage defines how the broker persists its state: the [Store]
// interface, the records it keeps ([Message], [Session], [Subscription],
// [Delivery], [Will], inbound QoS 2 packet ids and retained topics) and a
// compact, versioned binary encoding of those records that every backend
// shares.
//
// Backends live in their own packages: storage/pebble is the embedded,
// durable default and storage/memory keeps everything in maps, for tests
// and for running without persistence. storage/storetest is the
// conformance suite both pass.
//
// The broker changes state through a [Batch], applied atomically by
// [Store.Commit], and reads everything back once, on start, through
// [Store.Load]. Records are independent: a store does not check that a
// delivery's message exists or that a subscription's session does; the
// broker keeps them consistent by putting and deleting them in the same
// batch.
package storage

import (
	"errors"

	"github.com/ternmq/tern/packets"
)

// ErrCorrupt is returned, wrapped with detail, when stored data cannot be
// read: a record that does not decode, a damaged file. A store never wipes
// or repairs data on its own.
var ErrCorrupt = errors.New("storage: store is corrupt")

// ErrClosed is returned by a store's methods after Close.
var ErrClosed = errors.New("storage: store is closed")

// ErrBatch is returned by Commit for a batch that the store cannot apply:
// one made by another store or one already committed.
var ErrBatch = errors.New("storage: batch is spent or belongs to another store")

// ErrUnavailable is wrapped by the errors a store gives, from Health or
// from a method, while it cannot write: its disk is full or failing, or it
// was opened read-only for lack of space. Such a store keeps what it has;
// how it resumes is up to the store (see [HealthReporter]).
var ErrUnavailable = errors.New("storage: store cannot write now")

// HealthReporter is implemented by stores whose writes can fail for a
// while, such as a store on a disk that fills up. The broker asks it before
// it accepts work that needs the store, and refuses that work while Health
// returns an error.
//
// A store that reports itself unavailable still accepts Commit, which
// waits until the batch is written (or the store is closed): changes are
// never dropped and never acknowledged before they are durable. When the
// cause goes away (space is freed), the store resumes by itself and Health
// returns nil again.
type HealthReporter interface {
	// Health returns nil while the store writes normally, or an error
	// wrapping ErrUnavailable that says why it does not.
	Health() error
}

// Message is an application message, stored once however many sessions it
// is queued for.
type Message struct {
	ID      uint64 // assigned by the broker, unique, increasing
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	// Properties holds the v5 properties to forward; nil if none. Only
	// payload format, message expiry, content type, response topic,
	// correlation data and user properties are stored: other fields are
	// dropped.
	Properties *packets.Properties
	Origin     string // publisher client id
	Created    int64  // unix nanoseconds
	ExpireAt   int64  // unix nanoseconds, 0 = never
}

// Session is a client's persistent session.
type Session struct {
	ClientID       string
	Version        byte   // protocol version: 3, 4 or 5
	Expiry         uint32 // seconds; 0xFFFFFFFF never
	DisconnectedAt int64  // unix nanoseconds; 0 while connected
	// Username is the user name the client last connected with, so that
	// authorization can be asked about it while it is offline after a
	// restart.
	Username string
	// HighIDs says the server numbers the session's messages from the high
	// half of the packet identifiers (32768-65535) instead of the low one
	// (1-32767): a cluster node that takes over a session whose node died
	// uses the other half than that node did, so that the identifiers the
	// client still holds from it are never given to new messages.
	HighIDs bool
	// LastImport is the token of the last part of a session another
	// server shipped into this one (tern.SessionState.Token): a part
	// shipped again with it is not taken twice.
	LastImport string
}

// Subscription is one subscription of a client. Group is the share name of
// a $share subscription and empty otherwise; a client can hold the same
// filter both plainly and in groups.
type Subscription struct {
	ClientID          string
	Group             string
	Filter            string
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	Identifier        uint32 // subscription identifier; 0 = none
}

// Delivery is one message queued or in flight for one session. Queued
// entries have PacketID 0; sending one sets PacketID (same key,
// overwritten).
type Delivery struct {
	ClientID    string
	Seq         uint64 // order within the session, assigned by the broker
	MessageID   uint64
	QoS         byte
	Retain      bool
	SubIDs      []uint32
	ShareGroup  string // set when it came through a shared subscription
	ShareFilter string // the shared subscription's filter, with ShareGroup
	PacketID    uint16
	Released    bool // QoS 2: PUBREC received, PUBREL sent
}

// QueueEntry is a delivery that [Store.ReadQueue] read back, with its
// message. Entries of one call that refer to the same message share one
// Message.
type QueueEntry struct {
	Delivery Delivery
	Message  *Message // nil: the store holds no message of that ID
}

// Will is a will message waiting for its delay to pass.
type Will struct {
	ClientID string
	Message  Message // stored inline; its ID may be 0
	FireAt   int64   // unix nanoseconds when the will delay passes
}

// Batch collects changes that [Store.Commit] applies atomically and in the
// order they were made: a Put after a Delete of the same record in one
// batch leaves the record in place.
//
// A batch copies what it is given, so the caller may reuse its records as
// soon as a Put returns. A batch is not safe for concurrent use and is
// spent by Commit: make a new one for the next change.
type Batch interface {
	// PutMessage stores m under m.ID, replacing any message with that ID.
	PutMessage(m *Message)
	// DeleteMessage removes the message with the given ID.
	DeleteMessage(id uint64)
	// PutSession stores s under s.ClientID.
	PutSession(s *Session)
	// DeleteSession removes the client's session together with its
	// subscriptions, deliveries, inbound QoS 2 ids and will. Messages and
	// retained topics are untouched.
	DeleteSession(clientID string)
	// PutSubscription stores s under (ClientID, Group, Filter).
	PutSubscription(s *Subscription)
	// DeleteSubscription removes one subscription.
	DeleteSubscription(clientID, group, filter string)
	// PutDelivery stores d under (ClientID, Seq).
	PutDelivery(d *Delivery)
	// DeleteDelivery removes one delivery.
	DeleteDelivery(clientID string, seq uint64)
	// PutInbound records an inbound QoS 2 packet id awaiting PUBREL, and
	// its message's creation time (unix nanoseconds, 0 when unknown),
	// by which other nodes of a cluster know the message when its
	// publisher sends it again after a restart.
	PutInbound(clientID string, packetID uint16, created int64)
	// DeleteInbound forgets an inbound QoS 2 packet id.
	DeleteInbound(clientID string, packetID uint16)
	// PutRetained makes messageID the retained message of topic.
	PutRetained(topic string, messageID uint64)
	// DeleteRetained clears the retained message of topic.
	DeleteRetained(topic string)
	// PutWill stores w under w.ClientID, replacing any will of the client.
	PutWill(w *Will)
	// DeleteWill removes the client's will.
	DeleteWill(clientID string)
	// Len returns the number of operations in the batch.
	Len() int
}

// Loader receives the stored state on start. Calls come grouped by kind,
// in this order: messages (in ID order), sessions, subscriptions,
// deliveries (each client's together, in Seq order), inbound ids, retained,
// wills. Records passed to a Loader belong to it. An error from a Loader
// method stops Load, which returns that error.
type Loader interface {
	Message(m *Message) error
	Session(s *Session) error
	Subscription(s *Subscription) error
	Delivery(d *Delivery) error
	Inbound(clientID string, packetID uint16, created int64) error
	Retained(topic string, messageID uint64) error
	Will(w *Will) error
}

// Store persists the broker's state. It is safe for concurrent use.
type Store interface {
	// NewBatch returns an empty batch for this store.
	NewBatch() Batch
	// Commit applies the batch atomically. With sync it returns only when
	// the changes are durable (fsync'd); concurrent sync commits are
	// group-committed, one fsync for many. A committed batch is spent;
	// committing it again returns ErrBatch.
	Commit(b Batch, sync bool) error
	// Sync makes every commit so far durable.
	Sync() error
	// Load passes the stored state to l (see [Loader] for the order). It
	// reads a consistent snapshot; commits may run meanwhile.
	Load(l Loader) error
	// ReadQueue returns the client's deliveries whose Seq is above
	// afterSeq, in Seq order, at most max of them (max > 0), each with its
	// message (nil when no message of that id is stored). It reads what is
	// committed; the broker uses it to read back the queue of a session
	// it paged out of memory.
	ReadQueue(clientID string, afterSeq uint64, max int) ([]QueueEntry, error)
	// Size reports the store's size on disk in bytes (0 for memory).
	Size() (int64, error)
	// Close releases the store. Later calls return ErrClosed.
	Close() error
}
