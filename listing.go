package tern

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// This file holds the views that tools listing many sessions need (the
// admin API's filtered and sorted listings at 100,000 sessions, a
// dashboard): a cheap summary of every session in one pass, the listeners,
// what is subscribed and retained as a tree of levels, and an in-process
// publish with properties. Like inspect.go, everything is a snapshot.

// SessionSummary is what a listing filters and sorts sessions by: the
// fields of SessionInfo and ClientInfo that cost nothing to read, with
// those of the last connection while the session is offline.
type SessionSummary struct {
	ClientID string
	Online   bool // a connection is attached
	// Username, Listener, ProtocolVersion and the counts are those of the
	// attached connection, or of the last one while offline (empty for a
	// session restored from the store that no connection has used since,
	// but for its user name and protocol version).
	Username        string
	Listener        string
	ProtocolVersion byte
	ConnectedAt     time.Time // when the last connection was established; zero when unknown
	// DisconnectedAt and DisconnectReason tell when and why the last
	// connection ended (see DisconnectReason for the labels); zero and ""
	// while online. A session restored from the store has the time only.
	DisconnectedAt   time.Time
	DisconnectReason string
	Inflight         int
	Queued           int
	Dropped          int64 // messages dropped instead of delivered, all reasons
	Counts           ConnectionCounts

	conn *Client // for RemoteAddr
}

// RemoteAddr returns the network address of the attached connection, or
// of the last one while offline ("" when unknown). It formats the address
// on each call, so a listing reads it only when it needs it.
func (ss *SessionSummary) RemoteAddr() string {
	if ss.conn == nil {
		return ""
	}
	return ss.conn.RemoteAddr()
}

// ConnectionCounts are what one network connection carried.
type ConnectionCounts struct {
	MessagesReceived int64 // PUBLISH packets read from the client
	MessagesSent     int64 // PUBLISH packets written to it
	BytesReceived    int64
	BytesSent        int64
}

// connCounts are a connection's live counts. The reader and the writer
// add to them once per read batch and per write, as they do to Stats.
type connCounts struct {
	msgsIn, msgsOut, bytesIn, bytesOut atomic.Int64
}

func (cc *connCounts) snapshot() ConnectionCounts {
	return ConnectionCounts{MessagesReceived: cc.msgsIn.Load(), MessagesSent: cc.msgsOut.Load(),
		BytesReceived: cc.bytesIn.Load(), BytesSent: cc.bytesOut.Load()}
}

// EachSession calls fn with a summary of each session, online or offline,
// in client identifier order, starting after o.After and keeping to the
// identifiers that start with o.Prefix (o.Limit is not used), until fn
// returns false. The summary is reused between calls: copy it to keep it.
// fn runs under the session table's read lock, so a pass over 100,000
// sessions takes a few milliseconds and no allocation; fn must not call
// the Server.
func (s *Server) EachSession(o ListOptions, fn func(*SessionSummary) bool) {
	var sum SessionSummary
	s.ascend(o, func(ss *session) bool {
		return !ss.summary(&sum) || fn(&sum)
	})
}

// SessionSummary returns the summary of the session of the client
// identifier and whether there is one.
func (s *Server) SessionSummary(id string) (SessionSummary, bool) {
	var sum SessionSummary
	ss := s.session(id)
	if ss == nil || !ss.summary(&sum) {
		return SessionSummary{}, false
	}
	return sum, true
}

// summary fills out from the session and reports whether the session is
// live.
func (ss *session) summary(out *SessionSummary) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return false
	}
	*out = SessionSummary{ClientID: ss.id, Online: ss.client != nil, Inflight: len(ss.inflight), Queued: ss.queuedLocked()}
	if d := ss.drops.Load(); d != nil {
		for i := range d.counts {
			out.Dropped += d.counts[i].Load()
		}
	}
	c := ss.client
	if c == nil {
		c = ss.identity
		if ss.offlineSince != 0 {
			out.DisconnectedAt = time.Unix(0, ss.offlineSince)
		}
		if c != nil {
			if p := c.disconnErr.Load(); p != nil || c.closed.Load() {
				var err error
				if p != nil {
					err = *p
				}
				out.DisconnectReason = DisconnectReason(err)
			}
		}
	}
	if c != nil {
		out.Username, out.Listener, out.ProtocolVersion = c.username, c.listener, c.version
		if c.connectedAt != 0 {
			out.ConnectedAt = time.Unix(0, c.connectedAt)
		}
		out.Counts = c.counts.snapshot()
		if c.conn != nil {
			out.conn = c
		}
	}
	return true
}

// ListenerInfo describes one listener.
type ListenerInfo struct {
	ID          string
	Address     string // where it listens; "" before Serve binds it
	Connections int    // open connections
	Limit       int    // its own connection limit (ConnectionLimiter); 0: none
}

// Listeners returns the server's listeners, sorted by ID.
func (s *Server) Listeners() []ListenerInfo {
	s.mu.Lock()
	out := make([]ListenerInfo, 0, len(s.listeners))
	for id, l := range s.listeners {
		li := ListenerInfo{ID: id, Connections: s.perListen[id]}
		if a := l.Addr(); a != nil {
			li.Address = a.String()
		}
		if cl, ok := l.(ConnectionLimiter); ok {
			li.Limit = cl.ConnectionLimit()
		}
		out = append(out, li)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b ListenerInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// FilterInfo is one topic filter that has subscriptions.
type FilterInfo struct {
	Filter      string
	Subscribers int           // plain (not shared) subscriptions
	Groups      []SharedGroup // shared subscription groups on the filter
}

// SharedGroup is one $share group on one filter.
type SharedGroup struct {
	Name    string
	Members []string // client identifiers, sorted
}

// SubscriptionFilters returns the topic filters subscribed to by network
// clients at or below the levels under (nil: all), sorted, with their
// subscribers. Its cost is that of the filters it returns (a sort
// included).
func (s *Server) SubscriptionFilters(under []string) []FilterInfo {
	var out []FilterInfo
	s.index.EachFilter(under, func(filter string, subs []*topics.Subscription, groups []*topics.SharedGroup) bool {
		fi := FilterInfo{Filter: filter}
		for _, sub := range subs {
			if !s.inline.handles(sub.ClientID) {
				fi.Subscribers++
			}
		}
		for _, g := range groups {
			sg := SharedGroup{Name: g.Name}
			for _, m := range g.Members {
				if !s.inline.handles(m.ClientID) {
					sg.Members = append(sg.Members, m.ClientID)
				}
			}
			if len(sg.Members) > 0 {
				slices.Sort(sg.Members)
				fi.Groups = append(fi.Groups, sg)
			}
		}
		if fi.Subscribers > 0 || len(fi.Groups) > 0 {
			out = append(out, fi)
		}
		return true
	})
	slices.SortFunc(out, func(a, b FilterInfo) int { return strings.Compare(a.Filter, b.Filter) })
	return out
}

// FilterSubscriptions returns the subscriptions of network clients to
// exactly the filter (shared group members included, with their Group
// set), sorted by client identifier then group.
func (s *Server) FilterSubscriptions(filter string) []topics.Subscription {
	var out []topics.Subscription
	under := strings.Split(filter, "/")
	s.index.EachFilter(under, func(f string, subs []*topics.Subscription, groups []*topics.SharedGroup) bool {
		if f != filter {
			return true
		}
		for _, sub := range subs {
			if !s.inline.handles(sub.ClientID) {
				cp := *sub
				cp.Target = nil
				out = append(out, cp)
			}
		}
		for _, g := range groups {
			for _, m := range g.Members {
				if !s.inline.handles(m.ClientID) {
					cp := *m
					cp.Target = nil
					out = append(out, cp)
				}
			}
		}
		return false
	})
	slices.SortFunc(out, func(a, b topics.Subscription) int {
		return cmp.Or(strings.Compare(a.ClientID, b.ClientID), strings.Compare(a.Group, b.Group))
	})
	return out
}

// TopicLevel is one level of the topic tree: subscription filters and
// retained topics, merged.
type TopicLevel struct {
	Name          string
	Subscriptions int  // subscriptions to the filter ending at this level
	Retained      bool // a retained message's topic ends at this level
	Below         bool // filters or topics go on below this level
}

// TopicTree returns the levels right below the path parent (nil: the
// first levels) of the tree of subscription filters and retained topics,
// sorted by name. It costs the filters below parent and the retained
// levels right below it; topics that were published but neither
// subscribed to by a filter nor retained are not in it.
func (s *Server) TopicTree(parent []string) []TopicLevel {
	subs := s.index.Levels(parent, func(sub *topics.Subscription) bool { return !s.inline.handles(sub.ClientID) })
	ret := s.retained.Levels(parent)
	out := make([]TopicLevel, 0, len(subs)+len(ret))
	i, j := 0, 0
	for i < len(subs) || j < len(ret) {
		switch {
		case j == len(ret) || i < len(subs) && subs[i].Name < ret[j].Name:
			out = append(out, TopicLevel{Name: subs[i].Name, Subscriptions: subs[i].Here, Below: subs[i].Below})
			i++
		case i == len(subs) || ret[j].Name < subs[i].Name:
			out = append(out, TopicLevel{Name: ret[j].Name, Retained: ret[j].Here > 0, Below: ret[j].Below})
			j++
		default: // the same name in both
			out = append(out, TopicLevel{Name: subs[i].Name, Subscriptions: subs[i].Here, Retained: ret[j].Here > 0,
				Below: subs[i].Below || ret[j].Below})
			i++
			j++
		}
	}
	return out
}

// PublishWith publishes a message from the in-process client as Publish
// does, with MQTT 5 properties: the payload format, message expiry,
// content type, response topic, correlation data and user properties of
// props go to subscribers (the others are ignored). props may be nil.
func (s *Server) PublishWith(topic string, payload []byte, retain bool, qos byte, props *packets.Properties) error {
	if props != nil {
		for _, str := range append([]string{props.ContentType, props.ResponseTopic}, userStrings(props.User)...) {
			if !packets.ValidString(str) {
				return fmt.Errorf("%w: %q is not an MQTT string (U+0000, or longer than 65,535 bytes)", ErrInvalidProperty, str)
			}
		}
		if props.ResponseTopic != "" {
			if err := topics.ValidateName(props.ResponseTopic); err != nil {
				return errors.Join(ErrInvalidProperty, err)
			}
		}
	}
	return s.publishInline(topic, payload, retain, qos, props)
}

// ErrInvalidProperty is returned by PublishWith for a property MQTT does
// not allow (a string with U+0000, a response topic with a wildcard).
var ErrInvalidProperty = errors.New("tern: invalid property")

func userStrings(ups []packets.UserProperty) []string {
	out := make([]string, 0, 2*len(ups))
	for _, u := range ups {
		out = append(out, u.Key, u.Value)
	}
	return out
}
