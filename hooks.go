package tern

import (
	"context"
	"errors"
	"math/rand/v2"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// Hook extends the server. A hook implements Hook and one or more of the
// interfaces below; [Server.AddHook] finds them once, by type assertion, so
// an event no hook wants costs nothing, and refuses a hook that implements
// none (a mistyped method would otherwise never be called: check with
// `var _ tern.Authorizer = (*MyHook)(nil)`). Hooks are added before Serve
// and called in the order they were added.
//
//	interface              when                                      on the goroutine of        may block
//	ConnectGate            a CONNECT, before any authenticator       the connection             briefly
//	Authenticator          a CONNECT, before the session is attached the connection             briefly (an HTTP call)
//	EnhancedAuthenticator  v5 AUTH exchanges, at CONNECT and later   the connection             briefly
//	Authorizer             PUBLISH (Write), SUBSCRIBE (Read), each   the publisher / subscriber no: Deliver is per message
//	                       message about to go to a client (Deliver)
//	                       (RequestAuthorizer: also given QoS, retain)
//	PublishInterceptor     each PUBLISH, after authorization         the publisher              no
//	SharedChooser          a message for a $share group              the publisher              no
//	ConnectObserver        a session established on a connection     the connection             no
//	DisconnectObserver     a connection ended                        the connection             no
//	SessionObserver        a session ended                           whoever ended it           no
//	SubscribeObserver      a subscription made or removed            the subscriber             no
//	SessionReplicator      a persistent session's subscriptions      the subscriber             no: SUBACK waits for done
//	                       changed; a session ended                  whoever ended it           no
//	RetainedSyncer         a subscription about to read retained     the subscriber             no: SUBACK waits for done
//	                       messages
//	PublishObserver        a message routed; a message written       the publisher; the writer  no
//	DropObserver           a message dropped instead of delivered    whoever dropped it         no
//	WillObserver           a will published                          whoever published it       no
//	Starter, Stopper       Serve, Shutdown                           the caller of Serve/Shutdown yes
//
// Calls come from many goroutines at once: a hook guards its own state.
// No hook is called with a lock of the server's held, so a hook may call
// the server's methods (Publish, Disconnect, ...).
//
// The in-process client ([Server.Publish], [Server.Subscribe]) is a
// *Client like any other, never nil, with IsInline true, listener
// "inline", no user name and no connection: Authorizers are asked about it
// as about any client, so an ACL that should not restrict the embedder's
// own messages says so:
//
//	if c.IsInline() {
//		return tern.Abstain // or Allow
//	}
type Hook interface {
	// ID names the hook in logs.
	ID() string
}

// Decision is an authenticator's or authorizer's answer.
type Decision int8

// Decisions. The first hook that does not abstain decides.
const (
	Abstain Decision = iota
	Allow
	Deny
)

// Access is the kind of access an Authorizer is asked about.
type Access byte

// Access kinds.
const (
	Write Access = 1 // publish to a topic name
	Read  Access = 2 // subscribe to a topic filter
	// Deliver: a message on this topic name is about to be delivered to
	// the client (checked per message, only when authorizers are added).
	Deliver Access = 3
)

// Authenticator decides whether a client may connect. With no
// authenticator added every client may connect; with some, a client that
// every authenticator abstains on is refused. An authenticator may set
// pk.Username (from a certificate, say); the client keeps the name as the
// authenticators leave it.
type Authenticator interface {
	Hook
	Authenticate(c *Client, pk *packets.Connect) Decision
}

// AuthResult is one step of enhanced authentication.
type AuthResult struct {
	// Data is sent to the client as Authentication Data.
	Data []byte
	// Continue asks the client for another step (AUTH 0x18).
	Continue bool
	// Code, when it is an error code, ends the exchange with that reason
	// (0x87 Not authorized, 0x86 Bad user name or password, ...).
	Code packets.ReasonCode
}

// EnhancedAuthenticator runs MQTT 5 enhanced authentication (section 4.12)
// for the methods it supports, at CONNECT and on re-authentication.
type EnhancedAuthenticator interface {
	Hook
	// SupportsAuthMethod reports whether the hook handles the method.
	SupportsAuthMethod(method string) bool
	// EnhancedAuth handles one step; data is the client's Authentication
	// Data. reauth is true for re-authentication of a connected client.
	EnhancedAuth(c *Client, method string, data []byte, reauth bool) AuthResult
}

// Authorizer decides whether a client may publish to a topic (Write),
// subscribe to a filter (Read) or be sent a message published to a topic
// (Deliver). With no authorizer, or when all abstain, access is allowed.
// Deliver is asked for every message routed to a network client's session
// (online or offline, with the client of its last connection), so it
// should be cheap, and an authorizer that only cares about Read and Write
// should abstain on it. A denied delivery is skipped silently and counted
// in Stats.DeliveriesDenied.
type Authorizer interface {
	Hook
	Authorize(c *Client, topic string, access Access) Decision
}

// PublishInterceptor sees every PUBLISH a client sends after authorization
// and before routing. It may modify pk but must not keep it after the call:
// the server reuses the struct; returning an error rejects the
// message: a packets.ReasonCode error is sent to v5 clients in the
// acknowledgement, anything else as 0x80 Unspecified error. Returning
// ErrDiscard drops the message quietly: it is acknowledged as if routed,
// and neither routed nor counted as refused (a bridge drops a copy that
// another path already brought).
type PublishInterceptor interface {
	Hook
	OnPublish(c *Client, pk *packets.Publish) error
}

// ErrDiscard is what a PublishInterceptor returns to drop a message
// quietly.
var ErrDiscard = errors.New("tern: message discarded by a hook")

// ConnectObserver is told of each session established on a connection.
type ConnectObserver interface {
	Hook
	OnSessionEstablished(c *Client, resumed bool)
}

// DisconnectObserver is told of each connection that ends, with the reason.
type DisconnectObserver interface {
	Hook
	OnDisconnect(c *Client, err error)
}

// SessionObserver is told when a session ends (expired, cleaned or taken
// over with clean start).
type SessionObserver interface {
	Hook
	OnSessionEnded(clientID string)
}

// SubscribeObserver is told of subscriptions made and removed.
type SubscribeObserver interface {
	Hook
	OnSubscribed(c *Client, sub topics.Subscription)
	OnUnsubscribed(c *Client, group, filter string)
}

// PublishObserver is told of each message the server routed (Published)
// and of each message it handed to a subscriber's connection (Delivered).
type PublishObserver interface {
	Hook
	OnPublished(c *Client, m *Message)
	OnDelivered(clientID string, m *Message)
}

// DropObserver is told of every message the server drops instead of
// delivering, and why.
type DropObserver interface {
	Hook
	OnMessageDropped(clientID string, m *Message, reason DropReason)
}

// WillObserver is told of every will message the server publishes.
type WillObserver interface {
	Hook
	OnWillSent(clientID string, m *Message)
}

// Starter is implemented by hooks that have work of their own to start,
// such as connections or goroutines (a bridge, a webhook sender): Serve
// calls Start once, in the order the hooks were added, before the
// listeners accept. An error stops Serve, which returns it; hooks started
// before are stopped again.
type Starter interface {
	Hook
	Start(s *Server) error
}

// Stopper is implemented by hooks that must finish their work when the
// server stops: Shutdown calls Stop in the reverse order of the hooks'
// addition, after the listeners have closed and before the clients are
// disconnected, with Shutdown's context. Stop is called only for hooks
// that started (or that need no Start).
type Stopper interface {
	Hook
	Stop(ctx context.Context) error
}

// DropReason says why a message was not delivered.
type DropReason string

// Drop reasons.
const (
	DropQueueFull     DropReason = "queue_full"       // MaxQueuedMessages or MaxQueuedBytes reached
	DropExpired       DropReason = "expired"          // message expiry interval passed
	DropTooLarge      DropReason = "packet_too_large" // larger than the client's Maximum Packet Size
	DropNotAuthorized DropReason = "not_authorized"   // a QoS 0 publish the ACL refused
	DropOfflineQoS0   DropReason = "offline_qos0"     // QoS 0 for an offline session with QueueQoS0Offline off
	DropSessionEnded  DropReason = "session_ended"    // queued when the session ended
	DropSlowConsumer  DropReason = "slow_consumer"    // QoS 0 for an online client whose pending output is at MaxPendingBytes
	DropMemoryFull    DropReason = "memory_full"      // the broker-wide MaxMessageMemory is reached
)

// hookSet holds the hooks by event, built once by AddHook.
type hookSet struct {
	all            []Hook
	authenticators []Authenticator
	enhancedAuth   []EnhancedAuthenticator
	authorizers    []Authorizer
	requestAuth    []RequestAuthorizer // parallel to authorizers: nil where one is not
	gates          []ConnectGate
	choosers       []SharedChooser
	interceptors   []PublishInterceptor
	connects       []ConnectObserver
	disconnects    []DisconnectObserver
	sessions       []SessionObserver
	subscribes     []SubscribeObserver
	publishes      []PublishObserver
	drops          []DropObserver
	wills          []WillObserver
	starters       []Starter
	stoppers       []Stopper
	retainers      []RetainObserver
	sessionGates   []SessionGate
	filters        []FilterObserver
	replicators    []SessionReplicator
	retainSyncers  []RetainedSyncer
}

// add adds h to the slices of the interfaces it implements and reports
// whether there was any.
func (hs *hookSet) add(h Hook) bool {
	n := hs.count()
	if v, ok := h.(Authenticator); ok {
		hs.authenticators = append(hs.authenticators, v)
	}
	if v, ok := h.(EnhancedAuthenticator); ok {
		hs.enhancedAuth = append(hs.enhancedAuth, v)
	}
	if v, ok := h.(Authorizer); ok {
		hs.authorizers = append(hs.authorizers, v)
		ra, _ := h.(RequestAuthorizer)
		hs.requestAuth = append(hs.requestAuth, ra)
	}
	if v, ok := h.(ConnectGate); ok {
		hs.gates = append(hs.gates, v)
	}
	if v, ok := h.(PublishInterceptor); ok {
		hs.interceptors = append(hs.interceptors, v)
	}
	if v, ok := h.(SharedChooser); ok {
		hs.choosers = append(hs.choosers, v)
	}
	if v, ok := h.(ConnectObserver); ok {
		hs.connects = append(hs.connects, v)
	}
	if v, ok := h.(DisconnectObserver); ok {
		hs.disconnects = append(hs.disconnects, v)
	}
	if v, ok := h.(SessionObserver); ok {
		hs.sessions = append(hs.sessions, v)
	}
	if v, ok := h.(SubscribeObserver); ok {
		hs.subscribes = append(hs.subscribes, v)
	}
	if v, ok := h.(PublishObserver); ok {
		hs.publishes = append(hs.publishes, v)
	}
	if v, ok := h.(DropObserver); ok {
		hs.drops = append(hs.drops, v)
	}
	if v, ok := h.(WillObserver); ok {
		hs.wills = append(hs.wills, v)
	}
	if v, ok := h.(Starter); ok {
		hs.starters = append(hs.starters, v)
	}
	if v, ok := h.(Stopper); ok {
		hs.stoppers = append(hs.stoppers, v)
	}
	if v, ok := h.(RetainObserver); ok {
		hs.retainers = append(hs.retainers, v)
	}
	if v, ok := h.(SessionGate); ok {
		hs.sessionGates = append(hs.sessionGates, v)
	}
	if v, ok := h.(FilterObserver); ok {
		hs.filters = append(hs.filters, v)
	}
	if v, ok := h.(SessionReplicator); ok {
		hs.replicators = append(hs.replicators, v)
	}
	if v, ok := h.(RetainedSyncer); ok {
		hs.retainSyncers = append(hs.retainSyncers, v)
	}
	if hs.count() == n {
		return false
	}
	hs.all = append(hs.all, h)
	return true
}

// count returns how many hook interfaces the hooks implement in all.
func (hs *hookSet) count() int {
	return len(hs.authenticators) + len(hs.enhancedAuth) + len(hs.authorizers) + len(hs.interceptors) +
		len(hs.connects) + len(hs.disconnects) + len(hs.sessions) + len(hs.subscribes) + len(hs.publishes) +
		len(hs.drops) + len(hs.wills) + len(hs.starters) + len(hs.stoppers) + len(hs.gates) + len(hs.choosers) +
		len(hs.retainers) + len(hs.sessionGates) + len(hs.filters) + len(hs.replicators) + len(hs.retainSyncers)
}

// authenticate runs the authenticators; with none, everyone may connect.
func (hs *hookSet) authenticate(c *Client, pk *packets.Connect) bool {
	if len(hs.authenticators) == 0 {
		return true
	}
	for _, h := range hs.authenticators {
		switch h.Authenticate(c, pk) {
		case Allow:
			return true
		case Deny:
			return false
		}
	}
	return false
}

func (hs *hookSet) enhancedFor(method string) EnhancedAuthenticator {
	for _, h := range hs.enhancedAuth {
		if h.SupportsAuthMethod(method) {
			return h
		}
	}
	return nil
}

// SharedChooser picks the member of a shared subscription group
// ($share/{group}/{filter}) that a message is offered to first, in place of
// the default round robin: EMQX's random, hash_topic or hash_clientid
// strategies, or a cluster preferring members on its own node. It returns
// an index into g.Members, or -1 to leave the choice to the next chooser
// (and finally to round robin). The server still skips members that are
// offline, that the authorizers deny the message to, or that would get
// their own message back (No Local): it tries the members in order from
// the chosen one, and falls back to an offline member's queue when none
// is online, so a chooser never makes a message go nowhere.
//
// ChooseShared runs on the publisher's goroutine for every message to a
// group: it must be quick and must not block. g and m must not be
// modified.
type SharedChooser interface {
	Hook
	ChooseShared(m *Message, g *topics.SharedGroup) int
}

// chooseShared returns the index of the member of g to offer m first: the
// hooks' choice, or the strategy's.
func (hs *hookSet) chooseShared(m *Message, g *topics.SharedGroup, strategy SharedStrategy) uint32 {
	for _, h := range hs.choosers {
		if i := h.ChooseShared(m, g); i >= 0 && i < len(g.Members) {
			return uint32(i)
		}
	}
	n := uint32(len(g.Members))
	switch strategy {
	case SharedRandom:
		return rand.Uint32N(n)
	case SharedHashTopic:
		return hashString(m.Topic) % n
	case SharedHashClientID:
		return hashString(m.Origin) % n
	}
	return g.Next()
}

// hashString is 32-bit FNV-1a: no allocation, stable across runs.
func hashString(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}
