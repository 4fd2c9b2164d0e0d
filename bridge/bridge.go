package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
)

// State is a bridge's connection state.
type State string

// States.
const (
	StateStarting   State = "starting"   // setting up its local session
	StateConnecting State = "connecting" // dialing the remote
	StateConnected  State = "connected"
	StateBackoff    State = "backoff" // waiting before the next attempt after a network failure
	StateError      State = "error"   // waiting after a refusal: TLS verification, CONNACK refusal, bad credentials
	StateStopped    State = "stopped"
)

// Bridge is one bridge: a durable session in the local broker (client
// identifier "$bridge/<name>", connected over memory with
// tern.Server.DialInProcess) joined to a connection to a remote broker.
//
// Outgoing messages wait in that session's queue, which the broker
// persists, bounds and counts like any session's; the broker delivers them
// to the bridge as its inflight window allows, and the bridge forwards
// each to the remote with the same packet identifier, acknowledging it to
// the broker only when the remote acknowledges it (PUBACK, or PUBREC and
// later PUBCOMP for QoS 2). Incoming messages are published to the broker
// with the remote's packet identifier and acknowledged to the remote only
// once the broker has acknowledged them, that is once they are stored when
// persistence is on. The bridge keeps no state of its own that a crash
// could lose: what is in flight is in the broker's session and in the
// remote's, and each side resends it.
//
// A Bridge is a tern.Hook (Starter and Stopper) for embedders that add one
// bridge; Manager runs several and reloads them.
type Bridge struct {
	cfg Config // as given
	s   *settings
	log *slog.Logger

	srv   *tern.Server
	node  string
	peers *peerTable // set by a Manager: the Tern bridges connected to this broker
	mgr   *Manager   // the Manager running it, or nil

	staleRemote []string // set by Manager.Update: remote filters of the bridge's previous rules

	stop     chan struct{} // closed by Stop
	kick     chan struct{} // Reconnect: end the current connection, retry now
	done     chan struct{} // closed when run returns
	stopOnce sync.Once
	started  atomic.Bool

	mu         sync.Mutex
	state      State
	addr       string
	since      time.Time
	lastErr    string
	lastErrAt  time.Time
	remoteNode string
	cur        *link // the current connection, nil when there is none
	local      localLimits

	sent, received, reconnects atomic.Int64
	drops                      [numReasons]atomic.Int64
}

// localLimits are the local broker's limits, learnt from its CONNACK.
type localLimits struct {
	receiveMax uint16
	maxPacket  uint32
	maxQoS     byte
}

// Drop reasons of the bridge itself; the local session's own drops
// (queue_full, packet_too_large, expired, ...) are added to them in Status.
const (
	ReasonLoop          = "loop"             // hop limit or already on the broker it would go to
	ReasonUnmappable    = "topic_unmappable" // no rule, or the rule maps it to an invalid topic
	ReasonTooLarge      = "packet_too_large" // larger than the other side accepts
	ReasonRemoteRefused = "remote_refused"   // the remote acknowledged it with an error code
	ReasonLocalRefused  = "local_refused"    // the local broker acknowledged it with an error code
	ReasonBacklog       = "qos0_backlog"     // QoS 0 for a connection that does not keep up
	ReasonPeerLink      = "peer_link"        // not lost: the remote's own bridge to this broker imports it (see peers.go)
	ReasonRedundant     = "redundant_path"   // not lost: this broker has a direct link from its origin (see peers.go)
	numReasons          = 8
)

var reasons = [numReasons]string{ReasonLoop, ReasonUnmappable, ReasonTooLarge, ReasonRemoteRefused, ReasonLocalRefused,
	ReasonBacklog, ReasonPeerLink, ReasonRedundant}

func (b *Bridge) drop(i int) { b.drops[i].Add(1) }

const (
	dropLoop = iota
	dropUnmappable
	dropTooLarge
	dropRemoteRefused
	dropLocalRefused
	dropBacklog
	dropPeerLink
	dropRedundant
)

// New returns a bridge for cfg, logging to log (nil: slog.Default()). Add
// it to a server with AddHook before Serve, or use a Manager.
func New(cfg Config, log *slog.Logger) (*Bridge, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Bridge{cfg: cfg, s: s, log: log.With("bridge", cfg.Name), state: StateStopped,
		stop: make(chan struct{}), kick: make(chan struct{}, 1), done: make(chan struct{})}, nil
}

// Name returns the bridge's name.
func (b *Bridge) Name() string { return b.s.Name }

// Config returns the bridge's configuration, as given to New.
func (b *Bridge) Config() Config { return b.cfg }

// ID implements tern.Hook.
func (b *Bridge) ID() string { return "bridge/" + b.s.Name }

var (
	_ tern.Starter = (*Bridge)(nil)
	_ tern.Stopper = (*Bridge)(nil)
)

// Start implements tern.Starter: it starts the bridge's goroutine, which
// sets up the local session and connects. It does not block.
func (b *Bridge) Start(srv *tern.Server) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("bridge: started twice")
	}
	b.srv = srv
	b.node = srv.NodeID()
	srv.SetSessionLimits(b.s.localID, &tern.SessionLimits{MaxQueuedMessages: b.s.Queue.MaxMessages,
		MaxQueuedBytes: b.s.Queue.MaxBytes, QueueFullPolicy: b.s.Queue.Overflow})
	b.setState(StateStarting)
	go b.run()
	return nil
}

// Stop implements tern.Stopper: it publishes the "0" notification, sends
// DISCONNECT to both sides and waits for the bridge's goroutine, at most
// until ctx ends. Messages in flight stay in the local session and are
// sent again by the next run.
func (b *Bridge) Stop(ctx context.Context) error {
	if !b.started.Load() {
		return nil
	}
	b.stopOnce.Do(func() { close(b.stop) })
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		if l := b.cur; l != nil {
			l.rc.close()
			l.lc.close()
		}
		b.mu.Unlock()
		return ctx.Err()
	}
}

// Reconnect ends the bridge's connection, if any, and connects again at
// once (to the primary address first with FailoverPrimary).
func (b *Bridge) Reconnect() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *Bridge) stopped() bool {
	select {
	case <-b.stop:
		return true
	default:
		return false
	}
}

func (b *Bridge) setState(st State) {
	b.mu.Lock()
	b.state = st
	b.mu.Unlock()
}

// fail records an error and the state it leaves the bridge in.
func (b *Bridge) fail(err error, addr string) {
	st := StateBackoff
	var re *refusedError
	var ve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var ae tls.AlertError
	if errors.As(err, &re) || errors.As(err, &ve) || errors.As(err, &ua) || errors.As(err, &hn) ||
		errors.As(err, &ci) || errors.As(err, &ae) {
		st = StateError
	}
	msg := err.Error()
	if addr != "" {
		msg = addr + ": " + msg
	}
	b.mu.Lock()
	b.state = st
	b.lastErr = msg
	b.lastErrAt = time.Now()
	b.mu.Unlock()
	b.log.Warn("bridge connection failed", "addr", addr, "err", err, "state", string(st))
}

// run is the bridge's goroutine: local setup, then connect, forward,
// reconnect, until Stop.
func (b *Bridge) run() {
	defer close(b.done)
	defer b.setState(StateStopped)
	bo := newBackoff(b.s.ReconnectMin, b.s.ReconnectMax)
	for {
		err := b.setupLocal()
		if err == nil {
			break
		}
		if errors.Is(err, tern.ErrServerClosed) || b.stopped() {
			return
		}
		b.fail(fmt.Errorf("local session: %w", err), "")
		if !b.sleep(bo.next()) {
			return
		}
	}
	bo.reset()
	last := -1 // index of the address last connected to
	for !b.stopped() {
		b.setState(StateConnecting)
		l, err := b.connect(last)
		if err != nil {
			if b.stopped() {
				return
			}
			if !b.sleep(bo.next()) {
				return
			}
			continue
		}
		bo.reset()
		last = l.addrIdx
		why := b.serve(l)
		b.reconnects.Add(1)
		switch why {
		case endStop:
			return
		case endKick, endPrimary:
			last = -1 // start over from the first address
			continue
		}
		if !b.sleep(bo.next()) {
			return
		}
	}
}

// sleep waits for d, or until Stop (false) or Reconnect (true, at once).
func (b *Bridge) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.kick:
		return true
	case <-b.stop:
		return false
	}
}

// backoff is decorrelated jitter: each delay is random between min and
// three times the previous one, at most max.
type backoff struct {
	min, max, prev time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, prev: min} }

func (bo *backoff) reset() { bo.prev = bo.min }

func (bo *backoff) next() time.Duration {
	hi := bo.prev * 3
	d := bo.min
	if hi > bo.min {
		d += rand.N(hi - bo.min)
	}
	d = min(d, bo.max)
	bo.prev = d
	return d
}

// localSubscriptions returns the subscriptions the local session must
// have: one per out rule, No Local (it must not export what it imported)
// and Retain As Published, retained messages only when new, identified by
// the rule's index + 1.
func (s *settings) localSubscriptions() []packets.Subscription {
	var out []packets.Subscription
	for _, r := range s.rules {
		if r.Direction.out() {
			out = append(out, packets.Subscription{Filter: r.localFilter, QoS: r.QoS, NoLocal: true,
				RetainAsPublished: true, RetainHandling: 1})
		}
	}
	return out
}

// setupLocal makes sure the local session exists with the subscriptions
// the rules want, and learns the local broker's limits. When the session
// is already as it should be (a restart with the same rules) it connects
// under another client identifier, so that nothing queued is touched.
func (b *Bridge) setupLocal() error {
	want := b.s.localSubscriptions()
	inSync := false
	if _, ok := b.srv.SessionInfo(b.s.localID); ok {
		inSync = b.subscriptionsInSync(want)
	}
	id := b.s.localID
	clean := false
	if inSync {
		id, clean = b.s.localID+"/probe", true
	}
	lc, ack, err := b.dialLocal(id, clean, 1, 0)
	if err != nil {
		return err
	}
	defer lc.flushClose(time.Second)
	b.learnLocal(ack)
	if inSync {
		lc.send(&packets.Disconnect{})
		return nil
	}
	b.log.Info("setting up the local session's subscriptions", "client", b.s.localID)
	if err := b.syncSubscriptions(lc, want, true); err != nil {
		return err
	}
	lc.send(&packets.Disconnect{})
	return nil
}

// subscriptionsInSync reports whether the local session's subscriptions
// are exactly want, with the identifiers syncSubscriptions gives.
func (b *Bridge) subscriptionsInSync(want []packets.Subscription) bool {
	have := b.srv.Subscriptions(b.s.localID)
	if len(have) != len(want) {
		return false
	}
	ids := b.subIDs()
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.Filter == w.Filter && h.Group == "" && h.QoS == w.QoS && h.NoLocal && h.RetainAsPublished &&
				h.Identifier == ids[w.Filter] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// subIDs returns the subscription identifier of each local filter: the
// index + 1 of the first out rule with that filter.
func (b *Bridge) subIDs() map[string]uint32 {
	ids := make(map[string]uint32)
	for _, r := range b.s.rules {
		if _, ok := ids[r.localFilter]; !ok && r.Direction.out() {
			ids[r.localFilter] = uint32(r.index + 1)
		}
	}
	return ids
}

// syncSubscriptions subscribes lc (the local session) to want and, when
// prune is set, unsubscribes what else it has; it waits for the
// acknowledgements when wait is set, ignoring (not acknowledging) any
// message delivered meanwhile: it stays in flight and is sent again on the
// next connection.
func (b *Bridge) syncSubscriptions(lc *mqttConn, want []packets.Subscription, wait bool) error {
	ids := b.subIDs()
	var stale []string
	keep := make(map[string]bool)
	for _, w := range want {
		keep[w.Filter] = true
	}
	for _, h := range b.srv.Subscriptions(b.s.localID) {
		if !keep[h.Filter] || h.Group != "" {
			f := h.Filter
			if h.Group != "" {
				f = "$share/" + h.Group + "/" + h.Filter
			}
			stale = append(stale, f)
		}
	}
	pending := 0
	for i, w := range want {
		sp := &packets.Subscribe{PacketID: uint16(1 + i%60000), Subscriptions: []packets.Subscription{w}}
		sp.Properties.SubscriptionIDs = []uint32{ids[w.Filter]}
		if err := lc.send(sp); err != nil {
			return err
		}
		pending++
	}
	if len(stale) > 0 {
		if err := lc.send(&packets.Unsubscribe{PacketID: 60001, Filters: stale}); err != nil {
			return err
		}
		pending++
		b.log.Info("unsubscribing the local session from filters no rule has", "filters", stale)
	}
	if !wait {
		return nil
	}
	lc.nc.SetReadDeadline(time.Now().Add(b.s.ConnectTimeout))
	defer lc.nc.SetReadDeadline(time.Time{})
	for pending > 0 {
		pk, err := lc.read()
		if err != nil {
			return err
		}
		switch p := pk.(type) {
		case *packets.Suback:
			pending--
			for _, c := range p.ReasonCodes {
				if c.IsError() {
					return fmt.Errorf("the local broker refused a subscription: %v", c)
				}
			}
		case *packets.Unsuback:
			pending--
		case *packets.Disconnect:
			return fmt.Errorf("the local broker disconnected: %v", p.ReasonCode)
		}
	}
	return nil
}

// dialLocal connects to the local broker over memory.
func (b *Bridge) dialLocal(id string, clean bool, receiveMax uint16, maxPacket uint32) (*mqttConn, *packets.Connack, error) {
	nc, err := b.srv.DialInProcess()
	if err != nil {
		return nil, nil, err
	}
	lc := newMQTTConn(nc, packets.V5)
	cp := &packets.Connect{ProtocolVersion: packets.V5, ClientID: id, CleanStart: clean}
	if !clean {
		cp.Properties.SessionExpiry = packets.Uint32(uint32(b.s.Queue.Expiry / time.Second))
	}
	cp.Properties.ReceiveMaximum = receiveMax
	cp.Properties.MaximumPacketSize = maxPacket
	if b.s.LocalUsername != "" {
		cp.UsernameFlag, cp.Username = true, b.s.LocalUsername
		cp.PasswordFlag, cp.Password = b.s.LocalPassword != "", []byte(b.s.LocalPassword)
	}
	ack, err := lc.handshake(cp, b.s.ConnectTimeout)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	lc.start()
	return lc, ack, nil
}

func (b *Bridge) learnLocal(ack *packets.Connack) {
	p := &ack.Properties
	l := localLimits{receiveMax: 65535, maxPacket: p.MaximumPacketSize, maxQoS: 2}
	if p.ReceiveMaximum != 0 {
		l.receiveMax = p.ReceiveMaximum
	}
	if p.MaximumQoS != nil {
		l.maxQoS = *p.MaximumQoS
	}
	b.mu.Lock()
	b.local = l
	b.mu.Unlock()
}

// connect connects to the remote, trying the addresses in the order the
// failover mode gives (after the one at index last), then the local
// session. The first error is recorded; it returns the last.
func (b *Bridge) connect(last int) (*link, error) {
	n := len(b.s.addrs)
	start := 0
	if b.s.Failover == FailoverRoundRobin && last >= 0 {
		start = (last + 1) % n
	}
	var err error
	for k := range n {
		i := (start + k) % n
		a := b.s.addrs[i]
		b.mu.Lock()
		b.addr = a.raw
		b.mu.Unlock()
		var l *link
		l, err = b.connectTo(i)
		if err == nil {
			return l, nil
		}
		b.fail(err, a.raw)
		if b.stopped() {
			break
		}
	}
	return nil, err
}

// connectTo connects to the remote address at index i, then to the local
// broker.
func (b *Bridge) connectTo(i int) (*link, error) {
	a := b.s.addrs[i]
	var tlsCfg *tls.Config
	if a.scheme == "tls" || a.scheme == "wss" {
		tlsCfg = b.s.TLS
		if b.s.TLSFiles != nil {
			var err error
			if tlsCfg, err = b.s.TLSFiles.Load(); err != nil {
				return nil, err
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-b.stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	nc, err := dial(ctx, a, tlsCfg, b.s.ConnectTimeout)
	cancel()
	if err != nil {
		return nil, err
	}
	v := b.s.ProtocolVersion
	rc := newMQTTConn(nc, v)
	b.mu.Lock()
	local := b.local
	b.mu.Unlock()
	cp := &packets.Connect{ProtocolVersion: v, ClientID: b.s.ClientID, CleanStart: b.s.CleanStart,
		KeepAlive: uint16(b.s.KeepAlive / time.Second), Bridge: v != packets.V5 && b.s.tryPrivate}
	if b.s.Username != "" {
		cp.UsernameFlag, cp.Username = true, b.s.Username
	}
	if b.s.Password != "" {
		cp.PasswordFlag, cp.Password = true, []byte(b.s.Password)
	}
	if v == packets.V5 {
		p := &cp.Properties
		p.SessionExpiry = packets.Uint32(uint32(b.s.SessionExpiry / time.Second))
		p.ReceiveMaximum = uint16(min(b.s.MaxInflight, int(local.receiveMax)))
		p.MaximumPacketSize = local.maxPacket
		p.User = append([]packets.UserProperty{{Key: tern.NodeProperty, Value: b.node}}, b.s.flowProperties()...)
	}
	if b.s.notifications && !b.s.NotificationsLocalOnly {
		cp.Will = &packets.Will{Topic: b.s.NotificationTopic, Payload: []byte("0"), QoS: 1, Retain: true}
	}
	ack, err := rc.handshake(cp, b.s.ConnectTimeout)
	if err != nil {
		nc.Close()
		return nil, err
	}
	l := &link{b: b, rc: rc, addrIdx: i, addr: a.raw, remoteV: v, remoteMaxQoS: 2, remoteRetain: true,
		remoteSubIDs: v == packets.V5, out: make(map[uint16]*outState), in: make(map[uint16]*inState),
		freshRemote: !ack.SessionPresent}
	remoteRM := 65535
	if v == packets.V5 {
		p := &ack.Properties
		if p.ReceiveMaximum != 0 {
			remoteRM = int(p.ReceiveMaximum)
		}
		l.remoteMaxPacket = int(p.MaximumPacketSize)
		if p.MaximumQoS != nil {
			l.remoteMaxQoS = *p.MaximumQoS
		}
		if p.RetainAvailable != nil && *p.RetainAvailable == 0 {
			l.remoteRetain = false
		}
		if p.SubIDAvailable != nil && *p.SubIDAvailable == 0 {
			l.remoteSubIDs = false
		}
		for _, u := range p.User {
			if u.Key == tern.NodeProperty {
				l.remoteNode = u.Value
			}
		}
		if ska := p.ServerKeepAlive; ska != nil && *ska > 0 {
			l.remoteKA = time.Duration(*ska) * time.Second
		}
		if p.AssignedClientID != "" {
			b.log.Warn("the remote assigned a client id", "client", p.AssignedClientID)
		}
	}
	if b.s.MaxPacketSize > 0 && (l.remoteMaxPacket == 0 || b.s.MaxPacketSize < l.remoteMaxPacket) {
		l.remoteMaxPacket = b.s.MaxPacketSize
	}
	l.viaID = l.remoteNode
	if l.viaID == "" {
		l.viaID = a.host
	}
	// The local session: the broker sends as many messages at once as the
	// remote accepts, none larger than it accepts.
	lc, lack, err := b.dialLocal(b.s.localID, false, uint16(min(b.s.MaxInflight, remoteRM)), uint32(l.remoteMaxPacket))
	if err != nil {
		rc.close()
		return nil, fmt.Errorf("local session: %w", err)
	}
	b.learnLocal(lack)
	l.lc = lc
	l.freshLocal = !lack.SessionPresent
	l.localMax = b.local
	l.localKA = maxKeepAlive
	if ska := lack.Properties.ServerKeepAlive; ska != nil && *ska > 0 {
		l.localKA = time.Duration(*ska) * time.Second
	}
	if !lack.SessionPresent {
		// The session was lost (expired, or removed): subscribe again on
		// this connection, which handles what the broker then sends.
		b.log.Warn("the local session was not present: subscribing again", "client", b.s.localID)
		if err := b.syncSubscriptions(lc, b.s.localSubscriptions(), false); err != nil {
			rc.close()
			lc.close()
			return nil, err
		}
	}
	rc.start()
	b.log.Info("bridge connected", "addr", a.raw, "protocol", v, "session_present", ack.SessionPresent,
		"remote_node", l.remoteNode)
	return l, nil
}

// maxKeepAlive stands for "no keep alive" on the local connection.
const maxKeepAlive = time.Duration(1<<63 - 1)

// Why serve returned.
type endReason int

const (
	endBroken  endReason = iota // a connection failed
	endStop                     // Stop
	endKick                     // Reconnect
	endPrimary                  // the primary address answers again
)

// serve forwards messages on a connected link until it breaks, Stop or
// Reconnect is called, or (FailoverPrimary, on a secondary address) the
// primary answers again.
func (b *Bridge) serve(l *link) endReason {
	errc := make(chan error, 2)
	go func() { errc <- l.readLocal() }()
	go func() { errc <- l.readRemote() }()
	l.subscribeRemote()
	now := time.Now()
	b.mu.Lock()
	b.cur = l
	b.state = StateConnected
	b.since = now
	b.remoteNode = l.remoteNode
	b.mu.Unlock()
	b.notify(l, "1")

	ka := b.s.KeepAlive
	if l.remoteKA > 0 {
		ka = l.remoteKA // the remote's Server Keep Alive [MQTT-3.2.2-21]
	}
	tick := time.NewTicker(max(min(ka, l.localKA)/4, 100*time.Millisecond))
	defer tick.Stop()
	var probe <-chan time.Time
	if b.s.Failover == FailoverPrimary && l.addrIdx > 0 {
		pt := time.NewTicker(b.s.ReconnectMax)
		defer pt.Stop()
		probe = pt.C
	}
	why := endBroken
	var err error
loop:
	for {
		select {
		case err = <-errc:
			break loop
		case <-b.stop:
			why = endStop
			break loop
		case <-b.kick:
			why = endKick
			err = errors.New("reconnect asked for")
			break loop
		case <-probe:
			if b.primaryAnswers() {
				why = endPrimary
				err = errors.New("the primary address answers again")
				break loop
			}
		case t := <-tick.C:
			in := time.Unix(0, l.rc.lastIn.Load())
			out := time.Unix(0, l.rc.lastOut.Load())
			if t.Sub(in) > 2*ka {
				err = errors.New("keep alive timeout: nothing from the remote")
				break loop
			}
			if t.Sub(out) >= ka || t.Sub(in) >= ka && t.Sub(l.lastPing) >= ka/2 {
				l.lastPing = t
				l.rc.send(&packets.Pingreq{})
			}
			if lka := l.localKA; lka < maxKeepAlive && t.Sub(time.Unix(0, l.lc.lastOut.Load())) >= lka/2 {
				// The local broker imposes a keep alive (limits.max_keepalive).
				l.lc.send(&packets.Pingreq{})
			}
		}
	}
	b.mu.Lock()
	b.cur = nil
	b.mu.Unlock()
	if why == endStop {
		// Say goodbye on both sides; what is in flight stays in flight.
		if b.s.notifications && !b.s.NotificationsLocalOnly {
			l.rc.send(&packets.Publish{Topic: b.s.NotificationTopic, Payload: []byte("0"), Retain: true})
		}
		l.rc.send(&packets.Disconnect{})
		l.lc.send(&packets.Disconnect{})
		l.stopping.Store(true)
		l.rc.flushClose(2 * time.Second)
		l.lc.flushClose(2 * time.Second)
	} else {
		l.stopping.Store(true)
		if why != endBroken {
			l.rc.send(&packets.Disconnect{})
			l.rc.flushClose(time.Second)
		} else {
			l.rc.close()
		}
		l.lc.send(&packets.Disconnect{})
		l.lc.flushClose(time.Second)
	}
	if err != nil {
		b.fail(err, l.addr)
	}
	// Both readers end once their connections are closed.
	readers := 2
	if why == endBroken {
		readers-- // its error ended the loop
	}
	for range readers {
		if e := <-errc; err == nil {
			err = e
		}
	}
	if why == endBroken || why == endPrimary || why == endKick {
		b.log.Info("bridge disconnected", "addr", l.addr, "why", err)
	}
	b.notifyLocal("0")
	return why
}

// primaryAnswers reports whether the first address accepts a TCP
// connection.
func (b *Bridge) primaryAnswers() bool {
	nc, err := net.DialTimeout("tcp", b.s.addrs[0].host, b.s.ConnectTimeout)
	if err != nil {
		return false
	}
	nc.Close()
	return true
}

// notify publishes the state on the notification topic, locally and on
// the remote.
func (b *Bridge) notify(l *link, state string) {
	if !b.s.notifications {
		return
	}
	b.notifyLocal(state)
	if !b.s.NotificationsLocalOnly {
		// QoS 0: every packet identifier of the link belongs to the local
		// session's messages (the will, QoS 1, says "0").
		l.rc.send(&packets.Publish{Topic: b.s.NotificationTopic, Payload: []byte(state), Retain: l.remoteRetain})
	}
}

func (b *Bridge) notifyLocal(state string) {
	if !b.s.notifications || b.srv == nil {
		return
	}
	if err := b.srv.Publish(b.s.NotificationTopic, []byte(state), true, 1); err != nil &&
		!errors.Is(err, tern.ErrServerClosed) {
		b.log.Debug("local notification not published", "err", err)
	}
}

// Status is a snapshot of a bridge.
type Status struct {
	Name            string           `json:"name"`
	State           State            `json:"state"`
	Address         string           `json:"address,omitempty"` // in use, or last tried
	ConnectedSince  *time.Time       `json:"connected_since,omitempty"`
	LastError       string           `json:"last_error,omitempty"`
	LastErrorAt     *time.Time       `json:"last_error_at,omitempty"`
	RemoteNode      string           `json:"remote_node,omitempty"` // the remote's node id, when it is a Tern broker
	ProtocolVersion byte             `json:"protocol_version"`
	ClientID        string           `json:"client_id"`       // on the remote
	LocalClientID   string           `json:"local_client_id"` // its session in the local broker
	Queued          int              `json:"queued"`          // messages waiting for the remote
	QueuedBytes     int              `json:"queued_bytes"`
	Inflight        int              `json:"inflight"` // sent to the remote, not yet acknowledged
	Sent            int64            `json:"sent"`     // messages forwarded to the remote
	Received        int64            `json:"received"` // messages forwarded from the remote
	Dropped         map[string]int64 `json:"dropped"`  // by reason
	Reconnects      int64            `json:"reconnects"`
}

// Status returns a snapshot of the bridge.
func (b *Bridge) Status() Status {
	st := Status{Name: b.s.Name, ProtocolVersion: b.s.ProtocolVersion, ClientID: b.s.ClientID,
		LocalClientID: b.s.localID, Sent: b.sent.Load(), Received: b.received.Load(),
		Reconnects: b.reconnects.Load(), Dropped: make(map[string]int64)}
	b.mu.Lock()
	st.State = b.state
	st.Address = b.addr
	if b.state == StateConnected {
		t := b.since
		st.ConnectedSince = &t
		st.RemoteNode = b.remoteNode
	}
	if b.lastErr != "" {
		st.LastError = b.lastErr
		t := b.lastErrAt
		st.LastErrorAt = &t
	}
	b.mu.Unlock()
	for i, r := range reasons {
		if n := b.drops[i].Load(); n != 0 {
			st.Dropped[r] += n
		}
	}
	if b.srv != nil {
		if si, ok := b.srv.SessionInfo(b.s.localID); ok {
			st.Queued, st.QueuedBytes, st.Inflight = si.Queued, si.QueuedBytes, si.Inflight
			for r, n := range si.Dropped {
				st.Dropped[string(r)] += n
			}
		}
	}
	return st
}

// sortStatuses sorts by name.
func sortStatuses(s []Status) {
	slices.SortFunc(s, func(a, b Status) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
}
