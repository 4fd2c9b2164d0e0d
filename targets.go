package tern

import (
	"strings"
	"sync/atomic"
	"time"
)

// TargetKind says what a subscription delivers to, as nats-server's
// client kinds say what is at the other end of a connection. Routing
// dispatches on it: a client's session queues, an in-process handler is
// called, a remote target forwards to another node.
type TargetKind uint8

// Target kinds.
const (
	// KindClient is the session of an MQTT client, connected over the
	// network or with DialInProcess.
	KindClient TargetKind = iota
	// KindHandler is an in-process handler (Server.Subscribe).
	KindHandler
	// KindRemote is another node of a cluster (Server.AddRemoteRoute), or
	// a session that moved to one (Server.ExportSession).
	KindRemote
	// KindBridge is the local session of a bridge: a 3.x bridge
	// connection (protocol level with the bridge bit) or a client
	// identifier starting with "$bridge/".
	KindBridge
)

// String returns the kind's name: client, handler, remote or bridge.
func (k TargetKind) String() string {
	switch k {
	case KindClient:
		return "client"
	case KindHandler:
		return "handler"
	case KindRemote:
		return "remote"
	case KindBridge:
		return "bridge"
	}
	return "unknown"
}

// target is what a subscription's Target holds: *session, *handlerTarget
// or *remoteTarget. The index keeps it and routing switches on its type,
// so a delivery needs no lookup by client identifier.
type target interface {
	kind() TargetKind
}

func (ss *session) kind() TargetKind {
	if ss.bridge {
		return KindBridge
	}
	return KindClient
}

// isBridgeID reports whether a client identifier names a bridge's local
// session.
func isBridgeID(id string) bool { return strings.HasPrefix(id, "$bridge/") }

// handlerTarget is an in-process subscription: its handler is called on the
// routing goroutine.
type handlerTarget struct {
	id int // the id given to Subscribe, for logs
	h  MessageHandler
}

func (*handlerTarget) kind() TargetKind { return KindHandler }

// remoteTarget is a route to a Remote: the routes of another node, or the
// subscriptions of a session that moved to one, for a while.
type remoteTarget struct {
	r     Remote
	route string // the id given to AddRemoteRoute; "" for a moved session
	// passOn is when a moved session's subscriptions stop passing on
	// what other nodes route here (unix nanoseconds; 0: never do): see
	// ExportSession.
	passOn atomic.Int64
}

// skipped reports whether routing under o leaves t out for m: $SYS is
// this server's own; a message from another node never goes on to
// another node's route, nor to a session that moved away (the other
// nodes route to where it is now), but for one parked for this node
// (InjectParked), one the node that sent it chose this member of a
// shared group for (it sent it nowhere else), and, while the session's
// new node may not be known to all yet (passOn), a QoS 1/2 delivery.
func (t *remoteTarget) skipped(o *routeOpts, m *Message, qos byte, shared bool) bool {
	switch {
	case m.sys:
		return true
	case !o.local:
		return false
	case t.route != "":
		return true
	case o.moved || shared:
		return false
	}
	return qos == 0 || time.Now().UnixNano() >= t.passOn.Load()
}

func (*remoteTarget) kind() TargetKind { return KindRemote }

// dropMoved is what enqueue answers for a session that moved to another
// node: not a drop, the delivery is forwarded there (see deliverSession).
const dropMoved DropReason = "moved"

// dropDuplicate is what enqueue answers for a message the session's
// duplicate window says it already took (ExpectDuplicates): not a drop.
const dropDuplicate DropReason = "duplicate"

// targetKind returns the kind of a subscription's target.
func targetKind(t any) TargetKind {
	if x, ok := t.(target); ok {
		return x.kind()
	}
	return KindClient
}

// Remote is a delivery target outside this server, such as another node of
// a cluster. Messages reach it through its routes (Server.AddRemoteRoute)
// and through the subscriptions of sessions that moved to it
// (Server.ExportSession).
type Remote interface {
	// Forward is called once per routed message and remote route id
	// (overlapping routes of one id are merged, as a client's overlapping
	// subscriptions are), on the goroutine that routes the message: the
	// reader of the publisher's connection, a will's timer, ...; for a
	// QoS 2 message whose packet identifier goes to the store, on the
	// store's goroutine once that is committed (so other QoS 0 and 1
	// messages of the publisher may be forwarded before it). It must not
	// block.
	//
	// ack is nil unless a publisher's acknowledgement waits for the
	// message: a QoS 1 or 2 PUBLISH from a client. A remote that must make
	// the message safe first (sent and acknowledged by the other node, or
	// stored on its behalf) calls ack.Hold before Forward returns and
	// ack.Release once it is; the PUBACK or PUBREC goes when every hold is
	// released, in the order of the PUBLISH packets.
	Forward(m *Message, d Delivery, ack *Ack)
	// Reachable reports whether the remote can take messages now. Shared
	// subscriptions prefer members on this server that are online, then
	// remote members that are reachable, then offline members here.
	Reachable() bool
}

// Delivery says what a message forwarded to a Remote is for.
type Delivery struct {
	// Route is the id given to AddRemoteRoute; "" for the subscriptions
	// of a session that moved (ClientID says which).
	Route string
	// ClientID is the client identifier of a moved session, "" otherwise.
	ClientID string
	// Group and Filter name the shared subscription the message was
	// routed through when it goes to one member of a group: the remote
	// must give it to one of its members of that group only. Empty for
	// ordinary routes.
	Group, Filter string
	// For a moved session: the QoS to deliver at, the RETAIN flag to send
	// and the subscription identifiers, as computed from its
	// subscriptions. For routes they are the message's own QoS and
	// retain flag, and no identifier: the remote applies its own
	// subscriptions.
	QoS    byte
	Retain bool
	SubIDs []uint32 // nil, or several identifiers
	SubID  uint32   // the one identifier, when SubIDs is nil
	// Again says the message may have reached the remote already: its
	// publisher sent it again after this server restarted, before it had
	// its PUBREC, and the server routes it again to other nodes only (the
	// message has its first creation time, when the store kept it). A
	// remote that knows it took the message may leave it.
	Again bool
}

// Ack is a publisher's acknowledgement (PUBACK or PUBREC) waiting on
// remote targets: see Remote.Forward. It is safe for concurrent use.
type Ack struct {
	n    atomic.Int32
	err  atomic.Pointer[error]
	fire func(error) // set by the server before it releases its own hold
}

// newAck returns an Ack holding one reference for the server itself,
// released with release once fire is set.
func newAck() *Ack {
	a := new(Ack)
	a.n.Store(1)
	return a
}

// NewAck returns an acknowledgement for code that forwards a message
// itself (Remote.Forward): it holds once for its creator, who releases
// that hold once the message is handed over, and calls done when every
// hold is released, with the first error one was released with.
func NewAck(done func(error)) *Ack {
	a := newAck()
	a.fire = done
	return a
}

// Hold makes the acknowledgement wait for one more Release.
func (a *Ack) Hold() { a.n.Add(1) }

// Release ends one Hold. A non-nil err means the message could not be made
// safe: the publisher's connection is then closed instead of acknowledged,
// so that the client sends the message again.
func (a *Ack) Release(err error) {
	if err != nil {
		a.err.CompareAndSwap(nil, &err)
	}
	if a.n.Add(-1) == 0 {
		var e error
		if p := a.err.Load(); p != nil {
			e = *p
		}
		a.fire(e)
	}
}
