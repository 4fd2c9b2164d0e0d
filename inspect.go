package tern

import (
	"cmp"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// This file holds the read-only views of the server that operations tools
// (the admin API, metrics) need, and Kick. Each returns a snapshot: copies
// taken under the locks in ARCHITECTURE.md's lock order, never live state.

// ClientInfo is a snapshot of one connected client.
type ClientInfo struct {
	ID              string
	Username        string
	RemoteAddr      string
	Listener        string    // ID of the listener it connected through
	ProtocolVersion byte      // 3 (MQTT 3.1), 4 (3.1.1) or 5
	CleanStart      bool      // clean start (v5) or clean session (v3)
	Bridge          bool      // a 3.x bridge: it connected with the bridge bit (see packets.BridgeBit)
	KeepAlive       uint16    // seconds, as in force (after MaxKeepAlive)
	ConnectedAt     time.Time // when the session was established
	SessionExpiry   uint32    // seconds; NeverExpire for never
	Inflight        int       // QoS 1 and 2 messages sent and not yet acknowledged
	Queued          int       // messages waiting in the session's queue
	QueuedBytes     int       // what the queued messages count towards MaxQueuedBytes
	PendingBytes    int       // waiting to be written, counted towards MaxPendingBytes
	// Dropped counts the messages dropped instead of delivered to the
	// session, by reason; nil when none were.
	Dropped map[DropReason]int64
	// Counts are what the connection carried.
	Counts ConnectionCounts

	// Subscriptions is filled by [Server.ClientInfo] and left nil by
	// [Server.Clients].
	Subscriptions []topics.Subscription
}

// SessionInfo is a snapshot of one session, online or offline.
type SessionInfo struct {
	ClientID string
	Online   bool   // a connection is attached
	Expiry   uint32 // session expiry interval, seconds; NeverExpire for never
	Inflight int
	// InflightOtherHalf counts, of Inflight, the messages whose packet
	// identifiers are of the other half than the one the session numbers
	// new messages from (HighIDs): what a cluster node that died had in
	// flight, shipped late (see storage.Session.HighIDs).
	InflightOtherHalf int
	HighIDs           bool // the session numbers new messages from the high half of the packet identifiers
	Queued            int  // paged ones included
	QueuedBytes       int
	Paged             int // of Queued, those kept only in the store (see Options.MaxQueueMemory)
	Subscriptions     int
	// Dropped counts the messages dropped instead of delivered to the
	// session, by reason; nil when none were.
	Dropped map[DropReason]int64
}

// Clients returns the clients connected now (those whose CONNECT
// handshake is complete), sorted by client identifier. Their Subscriptions
// are left nil; use [Server.ClientInfo] for one client's. ClientsPage
// lists a page at a time.
func (s *Server) Clients() []ClientInfo {
	out, _ := s.ClientsPage(ListOptions{Limit: -1})
	return out
}

// ListOptions selects a page of a listing in client identifier order: the
// entries after After (from the first when ""), whose client identifier
// starts with Prefix, at most Limit of them (0: 100; negative: all).
type ListOptions struct {
	After  string
	Prefix string
	Limit  int
}

func (o ListOptions) limit() int {
	switch {
	case o.Limit == 0:
		return 100
	case o.Limit < 0:
		return int(^uint(0) >> 1)
	}
	return o.Limit
}

// page walks the sessions for a listing: fn returns whether it took the
// session (counted towards the limit). It returns the cursor of the next
// page, "" after the last.
func (s *Server) page(o ListOptions, fn func(ss *session) bool) (next string) {
	n, limit := 0, o.limit()
	last := ""
	visit := func(ss *session) bool {
		if n == limit {
			next = last
			return false
		}
		if fn(ss) {
			n++
			last = ss.id
		}
		return true
	}
	s.ascend(o, visit)
	return next
}

// ascend calls fn with the sessions after o.After whose client identifier
// starts with o.Prefix, in identifier order, until fn returns false.
func (s *Server) ascend(o ListOptions, fn func(ss *session) bool) {
	visit := func(ss *session) bool {
		if o.Prefix != "" && !strings.HasPrefix(ss.id, o.Prefix) {
			return false // past the identifiers with the prefix
		}
		return fn(ss)
	}
	if o.Prefix > o.After { // the first identifier with the prefix is the prefix or after it
		s.sessions.ascend(o.Prefix, false, visit)
	} else {
		s.sessions.ascend(o.After, o.After != "", visit)
	}
}

// ClientsPage returns a page of the clients connected now, in client
// identifier order, and the cursor of the next page (its After), "" after
// the last. It costs the page, however many sessions there are.
func (s *Server) ClientsPage(o ListOptions) ([]ClientInfo, string) {
	var out []ClientInfo
	next := s.page(o, func(ss *session) bool {
		ci, ok := ss.clientInfo()
		if ok {
			out = append(out, ci)
		}
		return ok
	})
	return out, next
}

// ClientInfo returns a snapshot of the connected client with the
// identifier, with its subscriptions, and whether it is connected.
func (s *Server) ClientInfo(id string) (ClientInfo, bool) {
	ss := s.session(id)
	if ss == nil {
		return ClientInfo{}, false
	}
	ci, ok := ss.clientInfo()
	if ok {
		ci.Subscriptions = s.Subscriptions(id)
	}
	return ci, ok
}

// clientInfo snapshots the session's connection, if one is attached and
// established.
func (ss *session) clientInfo() (ClientInfo, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	c := ss.client
	if ss.ended || c == nil || !c.established.Load() {
		return ClientInfo{}, false
	}
	return ClientInfo{
		ID:              c.id,
		Username:        c.username,
		RemoteAddr:      c.RemoteAddr(),
		Listener:        c.listener,
		ProtocolVersion: c.version,
		CleanStart:      c.cleanStart,
		Bridge:          c.bridge,
		KeepAlive:       c.keepAlive,
		ConnectedAt:     c.ConnectedAt(),
		SessionExpiry:   ss.expiry,
		Inflight:        len(ss.inflight),
		Queued:          ss.queuedLocked(),
		QueuedBytes:     ss.qBytes,
		PendingBytes:    c.pendingLocked(),
		Dropped:         ss.dropCounts(),
		Counts:          c.counts.snapshot(),
	}, true
}

// Sessions returns every session, online and offline, sorted by client
// identifier. The in-process client has no session and is not listed.
func (s *Server) Sessions() []SessionInfo {
	out, _ := s.SessionsPage(ListOptions{Limit: -1})
	return out
}

// SessionsPage returns a page of the sessions, online and offline, in
// client identifier order, and the cursor of the next page, "" after the
// last.
func (s *Server) SessionsPage(o ListOptions) ([]SessionInfo, string) {
	var out []SessionInfo
	next := s.page(o, func(ss *session) bool {
		si, ok := s.sessionInfo(ss)
		if ok {
			out = append(out, si)
		}
		return ok
	})
	return out, next
}

// SessionInfo returns a snapshot of the session of the client identifier
// and whether there is one.
func (s *Server) SessionInfo(id string) (SessionInfo, bool) {
	ss := s.session(id)
	if ss == nil {
		return SessionInfo{}, false
	}
	return s.sessionInfo(ss)
}

func (s *Server) sessionInfo(ss *session) (SessionInfo, bool) {
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return SessionInfo{}, false
	}
	si := SessionInfo{
		ClientID:    ss.id,
		Online:      ss.client != nil,
		Expiry:      ss.expiry,
		Inflight:    len(ss.inflight),
		Queued:      ss.queuedLocked(),
		QueuedBytes: ss.qBytes,
		Paged:       ss.pg.count(),
		Dropped:     ss.dropCounts(),
		HighIDs:     ss.idHigh,
	}
	for id := range ss.inflight {
		if highPacketID(id) != ss.idHigh {
			si.InflightOtherHalf++
		}
	}
	ss.mu.Unlock()
	s.index.ClientSubscriptions(si.ClientID, func(*topics.Subscription) bool {
		si.Subscriptions++
		return true
	})
	return si, true
}

// Subscriptions returns copies of the subscriptions of the client
// identifier, or of every session when clientID is "", sorted by client
// identifier, then shared group, then filter. In-process subscriptions are
// not included.
func (s *Server) Subscriptions(clientID string) []topics.Subscription {
	var out []topics.Subscription
	collect := func(id string) {
		s.index.ClientSubscriptions(id, func(sub *topics.Subscription) bool {
			cp := *sub
			cp.Target = nil // the core's own
			out = append(out, cp)
			return true
		})
	}
	if clientID != "" {
		collect(clientID)
	} else {
		var ids []string
		s.sessions.each(func(ss *session) { ids = append(ids, ss.id) })
		for _, id := range ids {
			collect(id)
		}
	}
	slices.SortFunc(out, func(a, b topics.Subscription) int {
		return cmp.Or(strings.Compare(a.ClientID, b.ClientID), strings.Compare(a.Group, b.Group),
			strings.Compare(a.Filter, b.Filter))
	})
	return out
}

// RetainedMessages returns the retained messages whose topics match the
// filter, sorted by topic. An empty filter returns all of them, "$SYS"
// topics included (which "#" does not match). The messages are shared with
// the server: do not modify them.
func (s *Server) RetainedMessages(filter string) ([]*Message, error) {
	var out []*Message
	now := time.Now().UnixNano()
	keep := func(_ string, m *Message) bool {
		if !m.expired(now) {
			out = append(out, m)
		}
		return true
	}
	if filter == "" {
		s.retained.Range(keep)
	} else {
		if err := topics.ValidateFilter(filter); err != nil {
			return nil, errors.Join(ErrInvalidTopic, err)
		}
		if _, _, shared := topics.ParseShared(filter); shared {
			return nil, ErrInvalidTopic
		}
		s.retained.Match(filter, keep)
	}
	slices.SortFunc(out, func(a, b *Message) int { return strings.Compare(a.Topic, b.Topic) })
	return out, nil
}

// RetainedMessage returns the retained message of the topic and whether
// there is one. The message is shared with the server: do not modify it.
func (s *Server) RetainedMessage(topic string) (*Message, bool) {
	m, ok := s.retained.Get(topic)
	if !ok || m.expired(time.Now().UnixNano()) {
		return nil, false
	}
	return m, true
}

// DeleteRetained removes the retained message of the topic, as a retained
// PUBLISH with an empty payload would, and reports whether there was one.
// With a store it returns once the deletion is committed (fsync'd in
// DurabilitySync).
func (s *Server) DeleteRetained(topic string) bool {
	ok := s.deleteRetained(topic, nil)
	if ok && s.persist != nil {
		s.persist.wait()
	}
	return ok
}

// Kick disconnects the connected client with the identifier, sending MQTT
// 5 clients a DISCONNECT with reason 0x98 (Administrative action), and
// reports whether this call disconnected it. Its session stays, subject to its
// expiry interval, as after any other disconnection.
func (s *Server) Kick(id string) bool {
	return s.Disconnect(id, packets.AdministrativeAction)
}

// Disconnect disconnects the connected client with the identifier, as
// Kick does, with the reason code given for MQTT 5 clients (0xA0 Maximum
// connect time, 0x9C Use another server, ...; a code that is not a
// DISCONNECT reason [MQTT-3.14.2-1], such as 0x8A Banned, is sent as 0x98
// Administrative action), and reports whether this call disconnected it:
// false when it is not connected or is already being disconnected. What is
// already queued for the client is written first.
func (s *Server) Disconnect(id string, code packets.ReasonCode) bool {
	if !code.ValidFor(packets.DISCONNECT) || !code.IsError() {
		code = packets.AdministrativeAction
	}
	ss := s.session(id)
	if ss == nil {
		return false
	}
	ss.mu.Lock()
	c := ss.client
	ss.mu.Unlock()
	if c == nil || !c.established.Load() {
		return false
	}
	return c.disconnect(code)
}

// MessageMemory returns the memory held by queued and inflight messages
// now and its cap, MaxMessageMemory (0: none), in bytes.
func (s *Server) MessageMemory() (used, limit int64) {
	return s.mem.used.Load(), s.mem.limit
}

// StartedAt returns when the server was created.
func (s *Server) StartedAt() time.Time { return s.started }

// Serving reports whether the server is accepting connections: Serve has
// been called and Shutdown (or Close) has not.
func (s *Server) Serving() bool { return s.serving.Load() && !s.isClosing() }

// ExpiresAt returns when the message expires, or the zero time if it
// never does.
func (m *Message) ExpiresAt() time.Time {
	if m.expireAt == 0 {
		return time.Time{}
	}
	return time.Unix(0, m.expireAt)
}

// DisconnectReason classifies the error a [DisconnectObserver] receives
// into a short label from a small fixed set, for metrics and logs:
// "client_disconnect" (the client sent DISCONNECT), "connection_closed"
// (the connection ended without one), "connection_error", or the snake
// case name of the MQTT reason code that ended the connection, such as
// "keep_alive_timeout", "session_taken_over", "server_shutting_down" or
// "administrative_action".
func DisconnectReason(err error) string {
	var rc packets.ReasonCode
	var pe *packets.Error
	switch {
	case err == nil:
		return "connection_closed"
	case errors.Is(err, errClientDisconn):
		return "client_disconnect"
	case errors.As(err, &pe):
		return reasonLabel(pe.Code)
	case errors.As(err, &rc):
		return reasonLabel(rc)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return "connection_closed"
	}
	return "connection_error"
}

// reasonLabel turns "Keep Alive timeout" into "keep_alive_timeout".
func reasonLabel(c packets.ReasonCode) string {
	s := strings.ToLower(c.String())
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
}
