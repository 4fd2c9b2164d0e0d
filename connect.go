package tern

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// serveConn runs one network connection from accept to close.
func (s *Server) serveConn(nc net.Conn, listener string) {
	s.stats.ConnectionsAccepted.Add(1)
	nc = wrapConn(nc)
	c := &Client{srv: s, conn: nc, listener: listener, fd: parkFD(nc)}
	c.rd = getReader(nc, &s.mem)

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if s.overConnectionLimitLocked(listener) {
		s.mu.Unlock()
		nc.Close()
		return
	}
	overRate := s.overConnectionRateLocked(listener)
	s.perListen[listener]++
	s.clients[c] = struct{}{}
	s.wg.Add(1) // under mu, so Shutdown's Wait sees it; Done in c.finish
	s.mu.Unlock()

	nc.SetReadDeadline(time.Now().Add(s.cfg.ConnectTimeout))
	pk, err := c.readPacket()
	if err != nil {
		if cp, ok := pk.(*packets.Connect); ok && cp.ProtocolVersion == packets.V5 {
			c.version = packets.V5 // a v5 client can be told why, with CONNACK 0x81 or 0x82
		}
		c.refuseDecode(err)
		c.finish(nil, false)
		return
	}
	connect, ok := pk.(*packets.Connect)
	if !ok {
		s.log.Debug("first packet is not CONNECT", "remote", c.RemoteAddr(), "type", pk.Type().String())
		s.stats.ProtocolErrors.Add(1)
		c.closeWith(nil) // [MQTT-3.1.0-1]
		c.finish(nil, false)
		return
	}
	if overRate {
		c.version = connect.ProtocolVersion
		c.id, c.username = connect.ClientID, connect.Username
		c.refuse(packets.ConnectionRateExceeded, "listener connection rate limit")
		s.stats.ConnectsRefused.Add(1)
		c.closeWith(nil)
		c.finish(nil, false)
		return
	}
	if !c.handshake(connect) {
		s.stats.ConnectsRefused.Add(1)
		c.closeWith(nil)
		c.finish(nil, false)
		return
	}
	c.runReader()
}

// overConnectionLimitLocked reports whether a new connection on the
// listener would pass MaxConnections or the listener's own limit, and
// counts and (at most once a second) logs the refusal.
func (s *Server) overConnectionLimitLocked(listener string) bool {
	limit, max := 0, s.cfg.MaxConnections
	if l, ok := s.listeners[listener].(ConnectionLimiter); ok {
		limit = l.ConnectionLimit()
	}
	over := max > 0 && len(s.clients) >= max || limit > 0 && s.perListen[listener] >= limit
	if over {
		s.stats.ConnectionsRejected.Add(1)
		if now := time.Now(); now.Sub(s.limitLog) > time.Second {
			s.limitLog = now
			s.log.Warn("connection limit reached: refusing connections", "listener", listener,
				"open", len(s.clients), "max_connections", max, "listener_limit", limit)
		}
	}
	return over
}

// runReader runs the read loop until the connection ends, then finishes
// it, or until the connection is parked, when it returns at once.
func (c *Client) runReader() {
	if c.rd == nil { // resumed after parking
		if err := c.revive(); err != nil {
			c.closeWith(err)
			c.finish(err, true)
			return
		}
		c.rd = getReader(c.conn, &c.srv.mem)
		c.rd.pktAt = time.Unix(0, c.lastPacket)
	}
	err, parked := c.readLoop()
	if parked {
		return
	}
	c.closeWith(err)
	c.finish(err, true)
}

// resume continues reading on a connection the idle poller woke.
func (c *Client) resume() { c.runReader() }

// finish releases what the connection holds once it has ended; established
// tells whether it had a session to detach.
func (c *Client) finish(err error, established bool) {
	s := c.srv
	c.flushCounts()
	if established {
		s.connectionEnded(c)
	}
	if c.rd != nil {
		putReader(c.rd)
		c.rd = nil
	}
	s.mu.Lock()
	s.perListen[c.listener]--
	delete(s.clients, c)
	s.mu.Unlock()
	s.wg.Done()
}

// readPacket reads and decodes the next packet.
func (c *Client) readPacket() (packets.Packet, error) {
	h, body, err := c.rd.next(c.srv.cfg.MaxPacketSize)
	if err != nil {
		return nil, err
	}
	c.rd.inBytes += int64(h.PacketSize()) // added to Stats once per read batch: flushCounts
	switch h.Type {
	case packets.PUBLISH: // the hot packets are decoded into pooled structs
		p := publishPool.Get().(*packets.Publish)
		*p = packets.Publish{} // no slice of an earlier packet may be reused: messages keep them
		return p, p.Decode(h, body, c.version)
	case packets.PUBACK, packets.PUBREC, packets.PUBREL, packets.PUBCOMP:
		a := ackPool.Get().(*packets.Ack)
		var pk packets.Packet
		switch h.Type {
		case packets.PUBACK:
			pk = (*packets.Puback)(a)
		case packets.PUBREC:
			pk = (*packets.Pubrec)(a)
		case packets.PUBREL:
			pk = (*packets.Pubrel)(a)
		default:
			pk = (*packets.Pubcomp)(a)
		}
		return pk, pk.Decode(h, body, c.version)
	}
	return packets.Decode(h, body, c.version)
}

var (
	publishPool = sync.Pool{New: func() any { return new(packets.Publish) }}
	ackPool     = sync.Pool{New: func() any { return new(packets.Ack) }}
)

// releasePacket returns a packet readPacket took from a pool, once it has
// been handled; nothing may keep it.
func releasePacket(pk packets.Packet) {
	switch p := pk.(type) {
	case *packets.Publish:
		publishPool.Put(p)
	case *packets.Puback:
		ackPool.Put((*packets.Ack)(p))
	case *packets.Pubrec:
		ackPool.Put((*packets.Ack)(p))
	case *packets.Pubrel:
		ackPool.Put((*packets.Ack)(p))
	case *packets.Pubcomp:
		ackPool.Put((*packets.Ack)(p))
	}
}

// refuseDecode answers a CONNECT that did not decode: a CONNACK with the
// reason where the client can read one, then close.
func (c *Client) refuseDecode(err error) {
	var pe *packets.Error
	if errors.As(err, &pe) {
		c.srv.stats.ProtocolErrors.Add(1)
		c.srv.log.Info("bad CONNECT", "remote", c.RemoteAddr(), "err", err)
		switch {
		case pe.Code == packets.UnsupportedProtocolVersion:
			// [MQTT-3.1.2-2]: 3.1.1 return code 0x01, which v5 clients read too.
			c.conn.Write([]byte{0x20, 0x02, 0x00, packets.ConnRefusedVersion})
		case c.version == packets.V5:
			c.writeConnack(&packets.Connack{ReasonCode: pe.Code})
		}
	}
	c.conn.Close()
}

// writeConnack writes a CONNACK straight to the connection, for refusals.
func (c *Client) writeConnack(ack *packets.Connack) {
	if c.version != packets.V5 && ack.ReasonCode.IsError() && !validV3Refusal(ack.ReasonCode) {
		return // no 3.1.1 form for this refusal: just close
	}
	b, err := ack.Encode(nil, c.version)
	if err == nil {
		c.conn.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
		c.conn.Write(b)
	}
}

func validV3Refusal(code packets.ReasonCode) bool {
	return packets.ConnackCodeV3(code) != packets.ConnRefusedServer || code == packets.ServerUnavailable ||
		code == packets.ServerBusy || code == packets.UseAnotherServer || code == packets.ServerMoved
}

// refuse answers CONNECT with an error code (and the Server Reference a
// hook set, for v5) and reports false.
func (c *Client) refuse(code packets.ReasonCode, why string) bool {
	ref := c.serverReference()
	c.srv.log.Info("connection refused", "client", c.id, "user", c.username, "remote", c.RemoteAddr(), "reason", code.String(), "why", why,
		"server_reference", ref)
	ack := &packets.Connack{ReasonCode: code}
	if c.version == packets.V5 {
		ack.Properties.ServerReference = ref
	}
	c.writeConnack(ack)
	return false
}

func assignClientID() string {
	var b [12]byte
	rand.Read(b[:])
	return "tern-" + hex.EncodeToString(b[:])
}

// handshake checks the CONNECT, authenticates, sets up the session and
// sends CONNACK. It reports whether the connection goes on.
func (c *Client) handshake(pk *packets.Connect) bool {
	s := c.srv
	cfg := s.cfg
	c.connectRead = c.rd.at.UnixNano() // the time of the read: no clock read
	c.version = pk.ProtocolVersion
	c.id = pk.ClientID
	c.username = pk.Username
	c.cleanStart = pk.CleanStart
	c.bridge = pk.Bridge
	if len(pk.Properties.User) > 0 {
		c.extras().user = pk.Properties.User
	}
	c.keepAlive = pk.KeepAlive
	v5 := c.version == packets.V5
	p := &pk.Properties

	var assigned string
	if c.id == "" {
		if !v5 && !pk.CleanStart {
			return c.refuse(packets.ClientIdentifierNotValid, "empty client id without clean session") // [MQTT-3.1.3-8]
		}
		c.id = assignClientID() // [MQTT-3.1.3-6]
		if v5 {
			assigned = c.id
		}
	}
	if len(c.id) > cfg.MaxClientIDLength || c.id[0] == 0 {
		return c.refuse(packets.ClientIdentifierNotValid, "client id too long") // [MQTT-3.1.3-5]
	}
	if w := pk.Will; w != nil {
		if err := topics.ValidateName(w.Topic); err != nil || c.tooManyLevels(w.Topic) {
			return c.refuse(packets.TopicNameInvalid, "invalid will topic")
		}
		if w.QoS > cfg.maxQoS {
			return c.refuse(packets.QoSNotSupported, "will QoS above maximum") // [MQTT-3.2.2-12]
		}
		if w.Retain && !cfg.retainAvailable {
			return c.refuse(packets.RetainNotSupported, "will retain not available") // [MQTT-3.2.2-13]
		}
		c.will.Store(w)
	}
	c.sendQuota = int32(cfg.MaxInflight)
	if v5 {
		if p.ReceiveMaximum != 0 && int32(p.ReceiveMaximum) < c.sendQuota {
			c.sendQuota = int32(p.ReceiveMaximum) // [MQTT-3.3.4-9]
		}
		c.maxPacket = int32(min(p.MaximumPacketSize, math.MaxInt32))
		c.aliasMaxOut = p.TopicAliasMaximum
		c.problemInfo = p.RequestProblemInfo == nil || *p.RequestProblemInfo == 1
	}

	// Gates (a ban list, ...), then authentication.
	if code := s.hooks.checkConnect(c, pk); code != packets.Success {
		return c.refuse(code, "refused by a connect gate")
	}
	ack := &packets.Connack{}
	if v5 && p.AuthMethod != "" {
		h := s.hooks.enhancedFor(p.AuthMethod)
		if h == nil {
			return c.refuse(packets.BadAuthenticationMethod, "unsupported authentication method")
		}
		c.extras().authMethod = p.AuthMethod
		data, code := c.enhancedAuth(h, p.AuthData, false)
		if code != packets.Success {
			s.stats.AuthFailures.Add(1)
			return c.refuse(code, "enhanced authentication failed")
		}
		ack.Properties.AuthMethod = c.authMethod()
		ack.Properties.AuthData = data
	} else if !s.hooks.authenticate(c, pk) {
		s.stats.AuthFailures.Add(1)
		return c.refuse(c.refusal(packets.BadUserNameOrPassword), "authentication failed")
	}
	c.username = pk.Username // an authenticator may have set it, e.g. from a certificate
	// Copies of their own: the identifiers outlive the connection's
	// CONNECT, whose whole body they would otherwise keep in memory.
	c.id, c.username = strings.Clone(c.id), strings.Clone(c.username)
	c.conn.SetReadDeadline(time.Time{})

	// The session: the session gates first (a cluster claims the client
	// identifier, and may bring the session over from another node).
	expiry := s.sessionExpiry(pk)
	if c.refuseConnect(expiry) {
		return c.refuse(packets.ServerUnavailable, "store unavailable: cannot keep a persistent session")
	}
	if code := s.hooks.attachGate(c, expiry); code != packets.Success {
		return c.refuse(code, "refused by a session gate")
	}
	wasStored := s.persist.sessionStored(c.id)
	ss, present, after, ok := s.attachSession(c, expiry)
	if !ok {
		return c.refuse(packets.ServerUnavailable, "server closing")
	}
	if partial, _ := c.Value(partialSessionKey{}).(bool); partial {
		present = false // see MarkSessionPartial
	}
	after() // wills and hooks of what the takeover ended, outside the server lock
	if expiry > 0 || wasStored {
		// The CONNACK promises the session (and, after a clean start, the
		// end of the old one, with its will): it goes once that is durable.
		if err := s.persist.settle(); err != nil {
			return c.refuseAttached(packets.ServerUnavailable, err)
		}
	}

	if v5 {
		ap := &ack.Properties
		ap.AssignedClientID = assigned
		if cfg.ReceiveMaximum != 65535 {
			ap.ReceiveMaximum = cfg.ReceiveMaximum
		}
		ap.MaximumPacketSize = uint32(cfg.MaxPacketSize)
		ap.TopicAliasMaximum = cfg.topicAliasMaximum
		if cfg.maxQoS < 2 {
			ap.MaximumQoS = packets.Byte(cfg.maxQoS)
		}
		if !cfg.retainAvailable {
			ap.RetainAvailable = packets.Byte(0)
		}
		if !cfg.wildcardSubAvailable {
			ap.WildcardSubAvailable = packets.Byte(0)
		}
		if !cfg.subIDAvailable {
			ap.SubIDAvailable = packets.Byte(0)
		}
		if !cfg.sharedSubAvailable {
			ap.SharedSubAvailable = packets.Byte(0)
		}
		asked := uint32(0)
		if p.SessionExpiry != nil {
			asked = *p.SessionExpiry
		}
		if expiry != asked {
			ap.SessionExpiry = packets.Uint32(expiry) // section 3.2.2.3.2: tell the client the interval in force
		}
		s.answerNode(pk, ap)
		if m := cfg.MaxKeepAlive; m > 0 && (c.keepAlive == 0 || c.keepAlive > m) {
			c.keepAlive = m
			ap.ServerKeepAlive = packets.Uint16(m) // [MQTT-3.2.2-21]
		}
	}
	ack.SessionPresent = present // [MQTT-3.2.2-2], [MQTT-3.2.2-3]
	c.connectedAt = time.Now().UnixNano()

	// CONNACK goes first, then what the session has waiting.
	ss.mu.Lock()
	c.writeLocked(ack)
	c.established.Store(true) // before the CONNACK can reach the client
	if present || len(ss.inflight) > 0 {
		// In flight without a session present: what a cluster node that
		// died had sent, shipped into a session made again (ImportSession);
		// the client, which dropped its state, takes it as new.
		c.resendLocked()
	}
	if ss.pg.active() {
		c.kickLocked() // paged deliveries wait to be read back
	}
	ss.mu.Unlock()

	s.stats.connected()
	s.log.Debug("client connected", "client", c.id, "remote", c.RemoteAddr(), "version", c.version,
		"clean", c.cleanStart, "keepalive", c.keepAlive, "present", present)
	for _, h := range s.hooks.connects {
		h.OnSessionEstablished(c, present)
	}
	return true
}

func (c *Client) tooManyLevels(topic string) bool {
	max := c.srv.cfg.MaxTopicLevels
	// A topic of n bytes has at most n+1 levels: short ones need no count.
	return max > 0 && len(topic) >= max && topics.Levels(topic) > max
}

// resendLocked sends again what was inflight when the client was last
// connected: PUBLISH with DUP set, or PUBREL [MQTT-4.4.0-1]. PUBLISH packets
// beyond the new connection's send quota wait in c.ox.resend (section 4.9).
func (c *Client) resendLocked() {
	ss := c.sess
	now := time.Now().UnixNano()
	sent := 0
	for _, m := range ss.sortedInflightLocked() {
		if m.released {
			c.writeLocked(&packets.Pubrel{PacketID: m.id})
			sent++
			continue
		}
		if sent >= int(c.sendQuota) { // [MQTT-3.3.4-9]
			x := c.outExtraLocked()
			x.resend = append(x.resend, m.id)
			continue
		}
		if !c.writePublishLocked(&m.delivery, m.id, true, now) {
			c.releaseDroppedLocked(&m)
			continue
		}
		sent++
	}
	c.kickLocked()
}

// releaseDroppedLocked forgets an in-flight message that could not be
// sent again (too large for the client's Maximum Packet Size now; counted
// as dropped). For QoS 2 the client may hold its packet identifier from
// the send it had (here, or on a cluster node that died): it is released
// instead, with a PUBREL, and stays in flight until the PUBCOMP (a client
// that does not hold it answers one too, v5 with 0x92), or the client
// would take the next message numbered so for a resend.
func (c *Client) releaseDroppedLocked(m *inflightMsg) {
	ss := c.sess
	if m.qos == 2 {
		m.released = true
		ss.inflight[m.id] = *m
		if ss.storeInflightLocked(&m.delivery, m.id, true) {
			c.needSync = true
		}
		c.writeLocked(&packets.Pubrel{PacketID: m.id})
		return
	}
	delete(ss.inflight, m.id)
	ss.finishLocked(&m.delivery)
	c.srv.stats.InflightOut.Add(-1)
}

// sendAgainLocked sends a message put in flight while the client is
// connected (ImportSession: one its previous node had in flight): PUBREL
// if released, else PUBLISH with DUP set, after what waits to be sent
// again and within the send quota (resendPendingLocked).
func (c *Client) sendAgainLocked(m *inflightMsg) {
	if m.released {
		c.writeLocked(&packets.Pubrel{PacketID: m.id})
	} else {
		x := c.outExtraLocked()
		x.resend = append(x.resend, m.id)
	}
	c.kickLocked()
}

// attachSession finds or creates the client's session, taking it over from
// a connection that holds it, and attaches c. It reports whether a previous
// session was resumed.
// The returned after must be called once the caller can take no lock: it
// publishes wills and calls hooks for what the takeover ended.
func (s *Server) attachSession(c *Client, expiry uint32) (ss *session, present bool, after func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var afters []func()
	after = func() {
		for _, fn := range afters {
			fn()
		}
	}
	if s.closing {
		return nil, false, after, false
	}
	old := s.session(c.id)
	if old != nil {
		s.takeOverLocked(old, c.cleanStart, c.RemoteAddr(), &afters)
		if c.cleanStart {
			afters = append(afters, s.endSessionLocked(old, false)) // publishes a pending will [MQTT-3.1.2-8]
			old = nil
		}
	}
	if old == nil {
		ss = newSession(s, c.id)
		s.sessions.put(ss)
		s.stats.ClientsTotal.Add(1)
	} else {
		ss, present = old, true
	}
	ss.mu.Lock()
	if expiry == 0 && ss.pg.active() {
		// Resumed with a Session Expiry of 0: the session stops being
		// persistent and its stored deliveries go; the paged ones are
		// read back into memory first.
		if err := s.unpageLocked(ss, &afters); err != nil {
			// The store cannot write: the session keeps its expiry, and
			// the CONNACK, which waits for the store, most likely fails.
			s.log.Error("resuming a paged session with expiry 0: reading its paged part back failed; it keeps its expiry",
				"client", c.id, "err", err)
			expiry = ss.expiry
		}
	}
	ss.client = c
	ss.offlineSince = 0
	ss.bridge = c.bridge || isBridgeID(c.id)
	ss.qos0Full.Store(false)
	ss.identity = c
	ss.expiry = expiry
	ss.storeSessionLocked(c.version, time.Time{})
	c.sess = ss
	ss.mu.Unlock()
	return ss, present, after, true
}

// enhancedAuth runs an enhanced authentication exchange (section 4.12) to
// its end, reading AUTH packets from the client. It returns the data for the
// final packet and the outcome.
func (c *Client) enhancedAuth(h EnhancedAuthenticator, data []byte, reauth bool) ([]byte, packets.ReasonCode) {
	for i := 0; i < 16; i++ {
		res := h.EnhancedAuth(c, c.authMethod(), data, reauth)
		if res.Code.IsError() {
			return nil, res.Code
		}
		if !res.Continue {
			return res.Data, packets.Success
		}
		if reauth {
			// During re-authentication the read loop delivers the next AUTH.
			return res.Data, packets.ContinueAuthentication
		}
		auth := &packets.Auth{ReasonCode: packets.ContinueAuthentication}
		auth.Properties.AuthMethod = c.authMethod()
		auth.Properties.AuthData = res.Data
		b, err := auth.Encode(nil, packets.V5)
		if err != nil {
			return nil, packets.ImplementationSpecificError
		}
		if _, err := c.conn.Write(b); err != nil {
			return nil, packets.UnspecifiedError
		}
		pk, err := c.readPacket()
		if err != nil {
			return nil, packets.CodeOf(err)
		}
		next, ok := pk.(*packets.Auth)
		if !ok || next.ReasonCode != packets.ContinueAuthentication || next.Properties.AuthMethod != c.authMethod() {
			return nil, packets.ProtocolError // section 4.12
		}
		data = next.Properties.AuthData
	}
	return nil, packets.NotAuthorized
}
