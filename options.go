package tern

import (
	"errors"
	"log/slog"
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
	// or waiting for the inflight window. When it is full, the oldest queued
	// QoS 0 message is dropped to make room for a QoS 1 or 2 one; otherwise
	// the new message is dropped. Drops are counted, logged once per
	// session and reported to hooks. Retained messages sent on subscription
	// are never dropped for this limit. Default 1,000,000.
	MaxQueuedMessages int

	// MaxQueuedBytes caps the payload bytes queued for one session, with the
	// same policy as MaxQueuedMessages. Default 1 GiB.
	MaxQueuedBytes int

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

	// MaxTopicLevels is the most levels a topic name or filter may have.
	// Default 0: no limit beyond the packet size.
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
}

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
	if c.MaxQueuedMessages == 0 {
		c.MaxQueuedMessages = 1_000_000
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = 1 << 30
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
	switch {
	case c.maxQoS > 2:
		return nil, errors.New("tern: MaxQoS must be 0, 1 or 2")
	case c.MaxPacketSize < 64 || c.MaxPacketSize > 268435460:
		return nil, errors.New("tern: MaxPacketSize must be between 64 and 268435460 bytes")
	case c.MaxQueuedMessages < 0 || c.MaxQueuedBytes < 0:
		return nil, errors.New("tern: MaxQueuedMessages and MaxQueuedBytes must not be negative")
	case c.MaxConnections < 0 || c.MaxSubscriptionsPerClient < 0 || c.MaxPublishRate < 0 || c.MaxPublishBytesRate < 0:
		return nil, errors.New("tern: MaxConnections, MaxSubscriptionsPerClient, MaxPublishRate and MaxPublishBytesRate must not be negative")
	case c.MaxClientIDLength < 1 || c.MaxClientIDLength > 65535:
		return nil, errors.New("tern: MaxClientIDLength must be between 1 and 65535")
	}
	return c, nil
}
