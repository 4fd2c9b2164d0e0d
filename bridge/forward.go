package bridge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
)

// link is one connection of a bridge: the remote connection and the local
// session's connection, joined. Packet identifiers pass through unchanged:
// an outgoing message keeps the identifier the local broker gave it, an
// incoming one the remote's, so each side's session state (what is in
// flight, which QoS 2 identifiers await PUBREL) is all the state there is,
// and survives a restart of either side.
type link struct {
	b       *Bridge
	rc, lc  *mqttConn
	addrIdx int
	addr    string

	remoteV         byte
	remoteMaxQoS    byte
	remoteRetain    bool
	remoteSubIDs    bool
	remoteMaxPacket int    // 0: no limit
	remoteNode      string // the remote's node id (a Tern broker), or ""
	viaID           string // what incoming messages get in their hop list: remoteNode, or the address
	localMax        localLimits

	remoteKA time.Duration // the remote's Server Keep Alive, 0: ours
	localKA  time.Duration // the local broker's Server Keep Alive, maxKeepAlive: none
	lastPing time.Time     // owned by serve
	stopping atomic.Bool   // the link is being closed on purpose: read errors are expected

	mu  sync.Mutex
	out map[uint16]*outState // outgoing QoS 1/2 messages by packet id
	in  map[uint16]*inState  // incoming QoS 1/2 messages by packet id

	// A side whose session is new (CONNACK session present 0: it lost it,
	// or clean start) hands out packet ids afresh, which the other side may
	// still hold as QoS 2 ids awaiting PUBREL from the old session; a new
	// message would then be taken for a duplicate there and lost. So the
	// first QoS 2 message with each id from a new session is preceded by a
	// PUBREL that clears the id, whose PUBCOMP is not passed on.
	freshRemote, freshLocal bool
	clearedIn, clearedOut   map[uint16]bool // ids already cleared
	swallowLocal            map[uint16]int  // PUBCOMPs from the local broker not to pass on
	swallowRemote           map[uint16]int  // PUBCOMPs from the remote not to pass on
}

// clearIn clears a QoS 2 id of a new remote session on the local side
// before its first message; call it with l.mu held.
func (l *link) clearInLocked(id uint16) bool {
	if !l.freshRemote || l.clearedIn[id] {
		return false
	}
	if l.clearedIn == nil {
		l.clearedIn, l.swallowLocal = make(map[uint16]bool), make(map[uint16]int)
	}
	l.clearedIn[id] = true
	l.swallowLocal[id]++
	return true
}

// clearOutLocked is clearInLocked for a new local session's ids on the
// remote.
func (l *link) clearOutLocked(id uint16) bool {
	if !l.freshLocal || l.clearedOut[id] {
		return false
	}
	if l.clearedOut == nil {
		l.clearedOut, l.swallowRemote = make(map[uint16]bool), make(map[uint16]int)
	}
	l.clearedOut[id] = true
	l.swallowRemote[id]++
	return true
}

// outState is an outgoing message in flight: the QoS the local broker sent
// it at and the QoS it went to the remote at.
type outState struct {
	localQoS, remoteQoS byte
	done                bool // the remote side is finished; a PUBREL from the local broker is answered at once
}

// inState is an incoming message in flight.
type inState struct {
	remoteQoS, localQoS byte
	done                bool // the local side is finished; a PUBREL from the remote is answered at once
}

// subscribeRemote subscribes to the in rules' remote filters: No Local, so
// the remote does not send back what the bridge published there (v5), and
// Retain As Published, so retained messages stay retained; retained
// messages only for new subscriptions.
func (l *link) subscribeRemote() {
	s := l.b.s
	v5 := l.remoteV == packets.V5
	id := uint16(1)
	for _, r := range s.rules {
		if !r.Direction.in() {
			continue
		}
		sp := &packets.Subscribe{PacketID: id, Subscriptions: []packets.Subscription{{Filter: r.remoteFilter, QoS: r.QoS,
			NoLocal: v5, RetainAsPublished: v5, RetainHandling: map[bool]byte{true: 1}[v5]}}}
		if v5 && l.remoteSubIDs {
			sp.Properties.SubscriptionIDs = []uint32{uint32(r.index + 1)}
		}
		l.rc.send(sp)
		id++
	}
	if !s.unsubscribe {
		return
	}
	// Remote filters the bridge no longer subscribes to: those of out-only
	// rules (a rule that was in before), and after a reload those no rule
	// has any more.
	in := make(map[string]bool)
	for _, r := range s.rules {
		if r.Direction.in() {
			in[r.remoteFilter] = true
		}
	}
	var stale []string
	add := func(f string) {
		if f != "" && !in[f] && !slices.Contains(stale, f) {
			stale = append(stale, f)
		}
	}
	for _, r := range s.rules {
		if !r.Direction.in() && !r.capture {
			add(r.RemotePrefix + r.Pattern)
			if r.Pattern == "" {
				add(r.RemotePrefix)
			}
		}
	}
	for _, f := range l.b.staleRemote {
		add(f)
	}
	if len(stale) > 0 {
		l.rc.send(&packets.Unsubscribe{PacketID: id, Filters: stale})
	}
}

// closedErr turns the read error of a connection closed on purpose into nil.
func (l *link) closedErr(err error, side string) error {
	if l.stopping.Load() {
		return nil
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s connection closed", side)
	}
	return fmt.Errorf("%s: %w", side, err)
}

// readLocal handles what the local broker sends: outgoing messages and the
// acknowledgements of incoming ones.
func (l *link) readLocal() error {
	for {
		pk, err := l.lc.read()
		if err != nil {
			return l.closedErr(err, "local")
		}
		switch p := pk.(type) {
		case *packets.Publish:
			l.outPublish(p)
		case *packets.Pubrel:
			l.outPubrel(p.PacketID)
		case *packets.Puback:
			l.inAcked(p.PacketID, packets.PUBACK, p.ReasonCode)
		case *packets.Pubrec:
			l.inAcked(p.PacketID, packets.PUBREC, p.ReasonCode)
		case *packets.Pubcomp:
			l.inAcked(p.PacketID, packets.PUBCOMP, p.ReasonCode)
		case *packets.Suback:
			for _, c := range p.ReasonCodes {
				if c.IsError() {
					l.b.log.Error("the local broker refused a bridge subscription", "code", c.String())
				}
			}
		case *packets.Disconnect:
			return fmt.Errorf("the local broker disconnected the bridge: %v", p.ReasonCode)
		}
	}
}

// readRemote handles what the remote sends: incoming messages and the
// acknowledgements of outgoing ones.
func (l *link) readRemote() error {
	for {
		pk, err := l.rc.read()
		if err != nil {
			return l.closedErr(err, "remote")
		}
		switch p := pk.(type) {
		case *packets.Publish:
			l.inPublish(p)
		case *packets.Pubrel:
			l.inPubrel(p.PacketID)
		case *packets.Puback:
			l.outAcked(p.PacketID, packets.PUBACK, p.ReasonCode)
		case *packets.Pubrec:
			l.outAcked(p.PacketID, packets.PUBREC, p.ReasonCode)
		case *packets.Pubcomp:
			l.outAcked(p.PacketID, packets.PUBCOMP, p.ReasonCode)
		case *packets.Suback:
			for _, c := range p.ReasonCodes {
				if c.IsError() || l.remoteV != packets.V5 && c == 0x80 {
					l.b.log.Error("the remote refused a bridge subscription", "code", c.String())
					l.b.fail(fmt.Errorf("the remote refused a subscription: %v", c), l.addr)
					l.b.setState(StateConnected)
				}
			}
		case *packets.Disconnect:
			msg := p.ReasonCode.String()
			if p.Properties.ReasonString != "" {
				msg += ": " + p.Properties.ReasonString
			}
			return fmt.Errorf("the remote disconnected the bridge: %s", msg)
		case *packets.Auth:
			return errors.New("the remote sent AUTH, which bridges do not support")
		}
	}
}

// ackLocal completes an outgoing message the bridge does not forward (or
// forwards at QoS 0): PUBACK, or PUBREC and later PUBCOMP.
func (l *link) ackLocal(id uint16, qos byte) {
	switch qos {
	case 1:
		l.lc.send(&packets.Puback{PacketID: id})
	case 2:
		l.mu.Lock()
		l.out[id] = &outState{localQoS: 2, done: true}
		l.mu.Unlock()
		l.lc.send(&packets.Pubrec{PacketID: id})
	}
}

// outPublish forwards a message from the local broker to the remote.
func (l *link) outPublish(p *packets.Publish) {
	b := l.b
	s := b.s
	r := s.rules.outRule(p.Topic, p.Properties.SubscriptionIDs)
	if r == nil {
		b.drop(dropUnmappable)
		l.ackLocal(p.PacketID, p.QoS)
		return
	}
	if via := p.Properties.User; hops(via) >= s.MaxHops || l.remoteNode != "" && wentThrough(via, l.remoteNode) {
		b.drop(dropLoop)
		l.ackLocal(p.PacketID, p.QoS)
		return
	}
	topic, err := r.toRemote(p.Topic)
	if err != nil {
		b.drop(dropUnmappable)
		l.ackLocal(p.PacketID, p.QoS)
		return
	}
	q := min(p.QoS, r.QoS, l.remoteMaxQoS)
	if l.remoteNode != "" && r.identity() && b.peers.pulls(l.remoteNode, p.Topic, q) {
		// The remote's own bridge to this broker imports it: see peers.go.
		b.drop(dropPeerLink)
		l.ackLocal(p.PacketID, p.QoS)
		return
	}
	out := &packets.Publish{Topic: topic, Payload: p.Payload, QoS: q, Dup: p.Dup && q > 0,
		Retain: p.Retain && s.outgoingRetain && l.remoteRetain}
	if q > 0 {
		out.PacketID = p.PacketID
	}
	if l.remoteV == packets.V5 {
		out.Properties = forwardProperties(&p.Properties, b.node)
	}
	if l.remoteMaxPacket > 0 && out.Size(l.remoteV) > l.remoteMaxPacket {
		b.drop(dropTooLarge)
		l.ackLocal(p.PacketID, p.QoS)
		return
	}
	if q == 0 {
		sent, err := l.rc.sendQoS0(out)
		if err == nil && !sent {
			b.drop(dropBacklog)
		} else if sent {
			b.sent.Add(1)
		}
		l.ackLocal(p.PacketID, p.QoS)
		return
	}
	l.mu.Lock()
	l.out[p.PacketID] = &outState{localQoS: p.QoS, remoteQoS: q}
	clear := q == 2 && l.clearOutLocked(p.PacketID)
	l.mu.Unlock()
	if clear {
		l.rc.send(&packets.Pubrel{PacketID: p.PacketID})
	}
	if l.rc.send(out) == nil {
		b.sent.Add(1)
	}
}

// outPubrel passes the local broker's PUBREL on, or completes it at once
// when the remote side of the message is finished.
func (l *link) outPubrel(id uint16) {
	l.mu.Lock()
	st := l.out[id]
	local := st != nil && (st.done || st.remoteQoS < 2)
	if local {
		delete(l.out, id)
	}
	l.mu.Unlock()
	if local {
		l.lc.send(&packets.Pubcomp{PacketID: id})
		return
	}
	// In flight at QoS 2 on the remote, or unknown (sent on an earlier
	// connection): the remote answers PUBCOMP, even for an id it no
	// longer knows.
	l.rc.send(&packets.Pubrel{PacketID: id})
}

// outAcked passes the remote's acknowledgement of an outgoing message to
// the local broker.
func (l *link) outAcked(id uint16, t packets.Type, code packets.ReasonCode) {
	b := l.b
	if t == packets.PUBCOMP && l.swallowed(true, id) {
		return
	}
	if code.IsError() && t != packets.PUBCOMP {
		b.drop(dropRemoteRefused)
	}
	l.mu.Lock()
	st := l.out[id]
	localQoS := byte(1)
	if st != nil {
		localQoS = st.localQoS
	} else if t != packets.PUBACK {
		localQoS = 2
	}
	switch {
	case t == packets.PUBACK && localQoS == 2:
		// Sent at QoS 1 for a QoS 2 delivery: PUBREC now, PUBCOMP when
		// the local broker releases it.
		if st != nil {
			st.done = true
		}
	case t == packets.PUBREC && code.IsError():
		delete(l.out, id) // an error PUBREC ends the exchange on both sides
	case t == packets.PUBREC:
	default:
		delete(l.out, id)
	}
	l.mu.Unlock()
	switch {
	case t == packets.PUBACK && localQoS == 2:
		l.lc.send(&packets.Pubrec{PacketID: id})
	case t == packets.PUBACK:
		l.lc.send(&packets.Puback{PacketID: id})
	case t == packets.PUBREC:
		l.lc.send(&packets.Pubrec{PacketID: id, ReasonCode: code})
	default:
		l.lc.send(&packets.Pubcomp{PacketID: id})
	}
}

// ackRemote completes an incoming message the bridge does not publish
// locally (or publishes at QoS 0).
func (l *link) ackRemote(id uint16, qos byte, code packets.ReasonCode) {
	if l.remoteV != packets.V5 {
		code = packets.Success
	}
	switch qos {
	case 1:
		l.rc.send(&packets.Puback{PacketID: id, ReasonCode: code})
	case 2:
		if !code.IsError() {
			l.mu.Lock()
			l.in[id] = &inState{remoteQoS: 2, done: true}
			l.mu.Unlock()
		}
		l.rc.send(&packets.Pubrec{PacketID: id, ReasonCode: code})
	}
}

// inPublish publishes a message from the remote in the local broker.
func (l *link) inPublish(p *packets.Publish) {
	b := l.b
	s := b.s
	r := s.rules.inRule(p.Topic, p.Properties.SubscriptionIDs)
	if r == nil {
		// A subscription the remote kept from an earlier configuration.
		b.drop(dropUnmappable)
		l.ackRemote(p.PacketID, p.QoS, packets.Success)
		return
	}
	if via := p.Properties.User; hops(via) >= s.MaxHops || wentThrough(via, b.node) {
		b.drop(dropLoop)
		l.ackRemote(p.PacketID, p.QoS, packets.Success)
		return
	}
	topic, err := r.toLocal(p.Topic)
	if err != nil {
		b.drop(dropUnmappable)
		l.ackRemote(p.PacketID, p.QoS, packets.Success)
		return
	}
	if node, n := origin(p.Properties.User); n >= 1 && b.mgr != nil && r.identity() && b.mgr.direct(node, topic, p.QoS) {
		// A longer path than a direct link from its origin: see peers.go.
		b.drop(dropRedundant)
		l.ackRemote(p.PacketID, p.QoS, packets.Success)
		return
	}
	q := min(p.QoS, l.localMax.maxQoS)
	out := &packets.Publish{Topic: topic, Payload: p.Payload, QoS: q, Dup: p.Dup && q > 0, Retain: p.Retain}
	if q > 0 {
		out.PacketID = p.PacketID
	}
	out.Properties = forwardProperties(&p.Properties, l.viaID)
	if m := l.localMax.maxPacket; m > 0 && out.Size(packets.V5) > int(m) {
		b.drop(dropTooLarge)
		l.ackRemote(p.PacketID, p.QoS, packets.Success)
		return
	}
	if q == 0 {
		if l.lc.send(out) == nil {
			b.received.Add(1)
		}
		l.ackRemote(p.PacketID, p.QoS, packets.Success)
		return
	}
	l.mu.Lock()
	l.in[p.PacketID] = &inState{remoteQoS: p.QoS, localQoS: q}
	clear := q == 2 && l.clearInLocked(p.PacketID)
	l.mu.Unlock()
	if clear {
		l.lc.send(&packets.Pubrel{PacketID: p.PacketID})
	}
	if l.lc.send(out) == nil {
		b.received.Add(1)
	}
}

// inPubrel passes the remote's PUBREL on, or completes it at once when the
// local side of the message is finished.
func (l *link) inPubrel(id uint16) {
	l.mu.Lock()
	st := l.in[id]
	local := st != nil && (st.done || st.localQoS < 2)
	if local {
		delete(l.in, id)
	}
	l.mu.Unlock()
	if local {
		l.rc.send(&packets.Pubcomp{PacketID: id})
		return
	}
	l.lc.send(&packets.Pubrel{PacketID: id})
}

// inAcked passes the local broker's acknowledgement of an incoming message
// to the remote. The local broker acknowledges once the message is
// committed to its store (sync durability), so the remote lets go of it
// only then.
func (l *link) inAcked(id uint16, t packets.Type, code packets.ReasonCode) {
	b := l.b
	if t == packets.PUBCOMP && l.swallowed(false, id) {
		return
	}
	if code.IsError() && t != packets.PUBCOMP {
		b.drop(dropLocalRefused)
	}
	if code == packets.NoMatchingSubscribers {
		code = packets.Success // no subscriber here is no news for the remote
	}
	if l.remoteV != packets.V5 {
		code = packets.Success
	}
	l.mu.Lock()
	st := l.in[id]
	remoteQoS := byte(1)
	if st != nil {
		remoteQoS = st.remoteQoS
	} else if t != packets.PUBACK {
		remoteQoS = 2
	}
	switch {
	case t == packets.PUBACK && remoteQoS == 2:
		if st != nil {
			st.done = true
		}
	case t == packets.PUBREC && !code.IsError():
	default:
		delete(l.in, id)
	}
	l.mu.Unlock()
	switch {
	case t == packets.PUBACK && remoteQoS == 2:
		l.rc.send(&packets.Pubrec{PacketID: id, ReasonCode: code})
	case t == packets.PUBACK:
		l.rc.send(&packets.Puback{PacketID: id, ReasonCode: code})
	case t == packets.PUBREC:
		l.rc.send(&packets.Pubrec{PacketID: id, ReasonCode: code})
	default:
		l.rc.send(&packets.Pubcomp{PacketID: id})
	}
}

// swallowed reports whether a PUBCOMP from the remote (or the local
// broker) answers a clearing PUBREL (see clearInLocked), and counts it.
func (l *link) swallowed(remote bool, id uint16) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.swallowLocal
	if remote {
		m = l.swallowRemote
	}
	if m[id] == 0 {
		return false
	}
	if m[id]--; m[id] == 0 {
		delete(m, id)
	}
	return true
}

// forwardProperties returns the properties a forwarded message carries:
// those of the message (not its subscription identifiers or topic alias),
// with via added to its hop list.
func forwardProperties(p *packets.Properties, via string) packets.Properties {
	out := packets.Properties{
		PayloadFormat:   p.PayloadFormat,
		MessageExpiry:   p.MessageExpiry,
		ContentType:     p.ContentType,
		ResponseTopic:   p.ResponseTopic,
		CorrelationData: p.CorrelationData,
	}
	out.User = make([]packets.UserProperty, 0, len(p.User)+1)
	out.User = append(out.User, p.User...)
	out.User = append(out.User, packets.UserProperty{Key: ViaProperty, Value: via})
	return out
}

// hops returns how many bridges a message has crossed.
func hops(user []packets.UserProperty) int {
	n := 0
	for _, u := range user {
		if u.Key == ViaProperty {
			n++
		}
	}
	return n
}

// wentThrough reports whether node is in a message's hop list.
func wentThrough(user []packets.UserProperty, node string) bool {
	for _, u := range user {
		if u.Key == ViaProperty && u.Value == node {
			return true
		}
	}
	return false
}
