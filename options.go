package tern

import (
	"errors"
	"log/slog"
	"math"
	"time"

	"github.com/ternmq/tern/storage"
)

// Options configures a Server. The zero value is a working configuration;
// zero fields take the defaults documented on each field.
type Options struct {
	// Logger receives the server's log; nil uses slog.Default().
	Logger *slog.Logger

	// MaxPacketSize is the largest packet, in bytes, the server accepts;
	// a client sending a larger one is disconnected (v5: 0x95 Packet too
	// large). The value is advertised to v5 clients. Default 1 MiB.
	MaxPacketSize int

	// ReceiveMaximum is how many QoS 1 and 2 PUBLISH packets a client may
	// have unacknowledged towards the server (advertised to v5 clients,
	// enforced with 0x93). Default 1024.
	ReceiveMaximum uint16

	// MaxInflight caps how many QoS 1 and 2 messages the server has
	// unacknowledged towards one client (for v5 clients, also capped by the
	// client's Receive Maximum). Default 1024.
	MaxInflight uint16

	// MaxQueuedMessages caps the messages queued for one session, offline
	// or waiting for the inflight window; QueueFullPolicy says what happens
	// at the cap. Drops are counted (Stats, the session's ClientInfo and
	// SessionInfo), logged at most once per 10 s per session and reported
	// to hooks. Retained messages sent on subscription wait in a stream
	// that does not count towards it. Default 10,000; a negative value
	// means no limit.
	MaxQueuedMessages int

	// MaxQueuedBytes caps the topic and payload bytes queued for one
	// session, with the same policy as MaxQueuedMessages. Default 64 MiB;
	// a negative value means no limit.
	MaxQueuedBytes int

	// QueueFullPolicy says which message is dropped when a session's queue
	// is at MaxQueuedMessages or MaxQueuedBytes, or the broker is at
	// MaxMessageMemory: DropNew (the default) or DropOldest. Either way a
	// queued QoS 0 message goes first to make room for a QoS 1 or 2 one.
	QueueFullPolicy QueueFullPolicy

	// MaxPendingBytes caps what waits to be written to one connected
	// client: packets encoded and not yet taken by its socket, plus queued
	// QoS 0 messages. A QoS 0 message that does not fit is dropped for
	// that client (slow_consumer, or by QueueFullPolicy); QoS 1 and 2
	// messages wait in the session queue instead, and a client whose
	// acknowledgements and other replies pass the cap is not read from
	// until it takes them. Default 1 MiB.
	MaxPendingBytes int

	// MaxMessageMemory caps, broker-wide, the memory held by messages
	// queued for sessions or inflight towards them: each message's bytes
	// once however many sessions hold it, plus about 64 bytes per queued
	// copy. At the cap QoS 0 messages are dropped (memory_full) and a
	// QoS 1 or 2 message makes room in its session by QueueFullPolicy or
	// is dropped; a v5 publisher whose QoS 1 or 2 message could be queued
	// nowhere gets 0x97 Quota exceeded. Default: a quarter of the memory
	// the process may use (the cgroup limit, or the machine's memory), at
	// least 64 MiB; a negative value means no limit.
	MaxMessageMemory int64

	// MaxQueueMemory is how much of one persistent session's queue is held
	// in memory when there is a Store: topic and payload bytes plus about
	// 64 bytes per queued message. Beyond
	// it, and whenever holding a message would pass MaxMessageMemory, the
	// session's QoS 1 and 2 messages stay only in the store, where they
	// are written anyway, and are read back in order, a page at a time,
	// as its client takes them ("paging"); they still count towards
	// MaxQueuedMessages and MaxQueuedBytes. Messages through shared
	// subscriptions, and QoS 0 ones, are never paged. Default 1 MiB; a
	// negative value means no per-session share (only MaxMessageMemory
	// pages).
	MaxQueueMemory int

	// DisablePaging keeps every queued message in memory, as without a
	// store: at MaxMessageMemory QoS 1 and 2 messages are dropped
	// (memory_full) instead of paged.
	DisablePaging bool

	// MaxRetainedMessages and MaxRetainedBytes cap the retained messages
	// (count, and topic plus payload bytes). A retained PUBLISH that would
	// pass a cap is refused: a v5 client's QoS 1 or 2 one with 0x97 Quota
	// exceeded (and not delivered); others are delivered but not retained.
	// Replacing a retained message by one no larger, and deleting one, is
	// always possible. Refusals are counted in Stats.RetainedRefused.
	// Defaults: 1,000,000 messages, and an eighth of the memory the
	// process may use, at most 1 GiB; a negative value means no limit.
	MaxRetainedMessages int
	MaxRetainedBytes    int64

	// QueueQoS0Offline, when set to a non-nil false, stops the server from
	// queueing QoS 0 messages for offline persistent sessions. Default true.
	QueueQoS0Offline *bool

	// MaxQoS is the highest QoS the server accepts and grants (0, 1 or 2).
	// Default 2. Use a pointer so that 0 can be chosen.
	MaxQoS *byte

	// RetainAvailable, WildcardSubAvailable, SubIDAvailable and
	// SharedSubAvailable switch features off when set to a non-nil false;
	// they are advertised to v5 clients. Default: all available.
	RetainAvailable      *bool
	WildcardSubAvailable *bool
	SubIDAvailable       *bool
	SharedSubAvailable   *bool

	// SharedStrategy chooses the member of a $share group each message
	// goes to first (a SharedChooser hook may choose instead). Default
	// SharedRoundRobin.
	SharedStrategy SharedStrategy

	// TopicAliasMaximum is the number of topic aliases a v5 client may use
	// towards the server. Default 65535; a non-nil 0 disables them.
	TopicAliasMaximum *uint16

	// MaxKeepAlive is the largest keep alive, in seconds, the server lets a
	// v5 client use; larger values and 0 are replaced by it through the
	// Server Keep Alive property. Default 0: no limit.
	MaxKeepAlive uint16

	// MaxSessionExpiry caps the session expiry interval, in seconds, a client
	// may ask for. It also applies to v3 persistent sessions, which otherwise
	// never expire. Default 0: no cap.
	MaxSessionExpiry uint32

	// MaxClientIDLength is the longest client identifier accepted.
	// Default 65535.
	MaxClientIDLength int

	// MaxTopicLevels is the most levels a topic name or filter may have: a
	// PUBLISH with more is refused (v5 DISCONNECT 0x90), a filter with more
	// gets 0x8F Topic filter invalid (3.1.1: 0x80) in the SUBACK. Default
	// 128, as EMQX; a negative value means no limit beyond the packet size.
	MaxTopicLevels int

	// MaxConnections caps the network connections open at once, over all
	// listeners; 0 means no limit. A listener can set its own cap too (see
	// ConnectionLimiter). A connection over a cap is closed as soon as it is
	// accepted, and counted in Stats.ConnectionsRejected.
	MaxConnections int

	// MaxSubscriptionsPerClient caps a client's subscriptions; 0 means no
	// limit. A filter beyond it gets 0x97 Quota exceeded (3.1.1: 0x80) in
	// the SUBACK and is counted in Stats.SubscriptionsRefused.
	MaxSubscriptionsPerClient int

	// MaxPublishRate caps the PUBLISH packets one client may send per
	// second, with a burst of one second's worth; 0 means no limit. A client
	// over it is disconnected (v5: 0x96 Message rate too high), logged and
	// counted in Stats.RateLimited.
	MaxPublishRate float64

	// MaxPublishBytesRate caps the PUBLISH bytes one client may send per
	// second, with a burst of one second's worth (at least one packet of
	// MaxPacketSize); 0 means no limit. A client over it is disconnected
	// (v5: 0x97 Quota exceeded), logged and counted in Stats.RateLimited.
	MaxPublishBytesRate float64

	// ConnectTimeout is how long a new connection may take to send its
	// CONNECT packet. Default 10 s.
	ConnectTimeout time.Duration

	// WriteTimeout bounds each write to a client; a client that does not
	// read for this long is disconnected. Default 30 s.
	WriteTimeout time.Duration

	// SysInterval is the period of the $SYS topics; a negative value turns
	// them off. Default 10 s.
	SysInterval time.Duration

	// Store persists persistent sessions (session expiry above 0, or 3.1.1
	// clean session 0) with their subscriptions, queued and inflight QoS 1
	// and 2 messages and inbound QoS 2 state, retained messages and
	// pending wills, and New restores them from it. Nil keeps everything in
	// memory. The caller opens and closes the store; close it after
	// Shutdown returns. QoS 0 messages are never stored.
	Store storage.Store

	// Durability is when the store's changes count as done: DurabilitySync
	// (the default: acknowledgements wait for fsync, grouped) or
	// DurabilityPeriodic (fsync every SyncInterval).
	Durability Durability

	// SyncInterval is the fsync period of DurabilityPeriodic. Default 1 s.
	SyncInterval time.Duration

	// InlineClientID is the client identifier of the in-process client,
	// used as the origin of its messages for no-local. Default "$inline".
	InlineClientID string

	// NodeID names this broker to other brokers: bridges carry it in the
	// hop list of the messages they forward (see bridging.go). Default:
	// the host name.
	NodeID string
}

// SharedStrategy says which member of a shared subscription group a message
// is offered to first. Whatever the strategy, a member that is offline, is
// denied the message or published it with No Local is passed over for the
// next one.
type SharedStrategy int

// Shared subscription strategies, named as in EMQX.
const (
	// SharedRoundRobin offers each message to the next member in turn.
	SharedRoundRobin SharedStrategy = iota
	// SharedRandom offers each message to a member chosen at random.
	SharedRandom
	// SharedHashTopic offers every message on one topic to the same
	// member while the group's members stay the same: per-topic order.
	SharedHashTopic
	// SharedHashClientID offers every message of one publisher to the same
	// member while the group's members stay the same: per-publisher
	// order.
	SharedHashClientID
)

// QueueFullPolicy says which message a full session queue drops.
type QueueFullPolicy int

// Queue policies.
const (
	// DropNew drops the message that does not fit (after a queued QoS 0
	// message has made room for a QoS 1 or 2 one), as Mosquitto does.
	DropNew QueueFullPolicy = iota
	// DropOldest drops the oldest queued message to make room for the new
	// one, so a returning client gets the most recent messages.
	DropOldest
)

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// config is the validated, defaulted form of Options the server runs on.
type config struct {
	Options
	maxQoS               byte
	retainAvailable      bool
	wildcardSubAvailable bool
	subIDAvailable       bool
	sharedSubAvailable   bool
	queueQoS0Offline     bool
	topicAliasMaximum    uint16
}

func newConfig(o *Options) (*config, error) {
	c := &config{}
	if o != nil {
		c.Options = *o
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = 1 << 20
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = 1024
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 1024
	}
	switch {
	case c.MaxQueuedMessages == 0:
		c.MaxQueuedMessages = 10_000
	case c.MaxQueuedMessages < 0:
		c.MaxQueuedMessages = math.MaxInt
	}
	switch {
	case c.MaxQueuedBytes == 0:
		c.MaxQueuedBytes = 64 << 20
	case c.MaxQueuedBytes < 0:
		c.MaxQueuedBytes = math.MaxInt
	}
	if c.MaxTopicLevels == 0 {
		c.MaxTopicLevels = 128
	}
	switch {
	case c.MaxRetainedMessages == 0:
		c.MaxRetainedMessages = 1_000_000
	case c.MaxRetainedMessages < 0:
		c.MaxRetainedMessages = math.MaxInt
	}
	switch {
	case c.MaxRetainedBytes == 0:
		c.MaxRetainedBytes = DefaultRetainedBytes()
	case c.MaxRetainedBytes < 0:
		c.MaxRetainedBytes = math.MaxInt64
	}
	if c.MaxPendingBytes == 0 {
		c.MaxPendingBytes = 1 << 20
	}
	switch {
	case c.MaxQueueMemory == 0:
		c.MaxQueueMemory = 1 << 20
	case c.MaxQueueMemory < 0:
		c.MaxQueueMemory = 0 // no share
	}
	switch {
	case c.MaxMessageMemory == 0:
		c.MaxMessageMemory = DefaultMessageMemory()
	case c.MaxMessageMemory < 0:
		c.MaxMessageMemory = 0 // no limit
	}
	if c.MaxClientIDLength == 0 {
		c.MaxClientIDLength = 65535
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.SysInterval == 0 {
		c.SysInterval = 10 * time.Second
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = time.Second
	}
	if c.InlineClientID == "" {
		c.InlineClientID = "$inline"
	}
	if c.NodeID == "" {
		c.NodeID = defaultNodeID()
	}
	c.maxQoS = 2
	if c.MaxQoS != nil {
		c.maxQoS = *c.MaxQoS
	}
	c.topicAliasMaximum = 65535
	if c.TopicAliasMaximum != nil {
		c.topicAliasMaximum = *c.TopicAliasMaximum
	}
	c.retainAvailable = boolOr(c.RetainAvailable, true)
	c.wildcardSubAvailable = boolOr(c.WildcardSubAvailable, true)
	c.subIDAvailable = boolOr(c.SubIDAvailable, true)
	c.sharedSubAvailable = boolOr(c.SharedSubAvailable, true)
	c.queueQoS0Offline = boolOr(c.QueueQoS0Offline, true)
	bad := func(field, msg string) (*config, error) { return nil, &OptionError{Field: field, Msg: msg} }
	switch {
	case c.maxQoS > 2:
		return bad("MaxQoS", "must be 0, 1 or 2")
	case c.MaxPacketSize < 64 || c.MaxPacketSize > 268435460:
		return bad("MaxPacketSize", "must be between 64 and 268435460 bytes")
	case c.MaxPendingBytes < 0:
		return bad("MaxPendingBytes", "must not be negative")
	case c.QueueFullPolicy != DropNew && c.QueueFullPolicy != DropOldest:
		return bad("QueueFullPolicy", "must be DropNew or DropOldest")
	case c.SharedStrategy < SharedRoundRobin || c.SharedStrategy > SharedHashClientID:
		return bad("SharedStrategy", "is not one of the Shared... constants")
	case c.MaxConnections < 0:
		return bad("MaxConnections", "must not be negative")
	case c.MaxSubscriptionsPerClient < 0:
		return bad("MaxSubscriptionsPerClient", "must not be negative")
	case c.MaxPublishRate < 0:
		return bad("MaxPublishRate", "must not be negative")
	case c.MaxPublishBytesRate < 0:
		return bad("MaxPublishBytesRate", "must not be negative")
	case c.MaxClientIDLength < 1 || c.MaxClientIDLength > 65535:
		return bad("MaxClientIDLength", "must be between 1 and 65535")
	}
	return c, nil
}

// ErrInvalidOptions is matched (errors.Is) by every error New returns for
// an option out of range; the error is an *OptionError naming the field.
var ErrInvalidOptions = errors.New("tern: invalid options")

// OptionError is New's error for an option out of range.
type OptionError struct {
	Field string // the Options field, e.g. "MaxQoS"
	Msg   string // what is wrong with it
}

func (e *OptionError) Error() string { return "tern: Options." + e.Field + " " + e.Msg }

// Is makes errors.Is(err, ErrInvalidOptions) true.
func (e *OptionError) Is(target error) bool { return target == ErrInvalidOptions }
