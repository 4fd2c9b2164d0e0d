package tern

import (
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// MessageHandler receives messages for an in-process subscription. It runs
// on the publisher's goroutine: it must not block, and must not modify m.
type MessageHandler func(m *Message)

// inlineClient is the server's in-process client. Each in-process
// subscription is indexed under a pseudo client identifier with a leading
// NUL, which no network client identifier can contain, and delivers to a
// handlerTarget.
type inlineClient struct {
	client *Client      // what hooks see as the publishing or subscribing client
	last   atomic.Int64 // the creation time of the last message published (unix nanoseconds)
}

// createdAt returns the creation time of a message published in process:
// now, or a nanosecond past the last one, so that no two share one (see
// Server.ExpectDuplicates).
func (ic *inlineClient) createdAt() time.Time {
	for {
		last := ic.last.Load()
		n := max(time.Now().UnixNano(), last+1)
		if ic.last.CompareAndSwap(last, n) {
			return time.Unix(0, n)
		}
	}
}

const inlinePrefix = "\x00inline/"

// inlineListener is the listener ID of the in-process client.
const inlineListener = "inline"

func (ic *inlineClient) init(s *Server) {
	ic.client = &Client{srv: s, id: s.cfg.InlineClientID, listener: inlineListener, version: packets.V5}
}

// InlineClientID returns the client identifier of the in-process client:
// the Origin of the messages published with Server.Publish
// (Options.InlineClientID).
func (s *Server) InlineClientID() string { return s.cfg.InlineClientID }

// handles reports whether a client id in the index is an in-process
// subscription's.
func (ic *inlineClient) handles(clientID string) bool {
	return strings.HasPrefix(clientID, inlinePrefix)
}

// Errors of the in-process client.
var (
	ErrInvalidTopic  = errors.New("tern: invalid topic")
	ErrInvalidQoS    = errors.New("tern: invalid QoS")
	ErrNotAuthorized = errors.New("tern: not authorized")
)

// Publish publishes a message from the in-process client, under the same
// rules and hooks (authorizers, interceptors, observers) as a network
// client's PUBLISH.
func (s *Server) Publish(topic string, payload []byte, retain bool, qos byte) error {
	return s.publishInline(topic, payload, retain, qos, nil)
}

// publishInline is Publish with properties (PublishWith).
func (s *Server) publishInline(topic string, payload []byte, retain bool, qos byte, props *packets.Properties) error {
	if s.isClosing() {
		return ErrServerClosed
	}
	if err := topics.ValidateName(topic); err != nil {
		return errors.Join(ErrInvalidTopic, err)
	}
	if qos > s.cfg.maxQoS {
		return ErrInvalidQoS
	}
	pk := &packets.Publish{Topic: topic, Payload: append([]byte(nil), payload...), Retain: retain, QoS: qos}
	if props != nil {
		pk.Properties = *props
	}
	s.stats.MessagesReceived.Add(1)
	s.stats.PublishBytesReceived.Add(int64(len(pk.Payload)))
	res := s.publish(s.inline.client, pk, s.inline.createdAt(), true)
	switch {
	case res.code == packets.NotAuthorized && res.err == nil:
		return ErrNotAuthorized
	case res.code.IsError():
		return res.err
	case res.r.retainRefused:
		return ErrQuotaExceeded
	}
	return nil
}

// publishSys publishes a $SYS message, bypassing hooks.
func (s *Server) publishSys(topic string, payload string) {
	pk := &packets.Publish{Topic: topic, Payload: []byte(payload), Retain: true}
	m := newMessage(pk, s.cfg.InlineClientID, time.Now())
	m.sys = true // recomputed every interval: no use in storing it
	s.route(m, false)
}

// Subscribe subscribes handler to filter in-process. id distinguishes
// several subscriptions to the same filter, as Unsubscribe takes it.
// Matching retained messages are delivered at once, before Subscribe
// returns. Shared subscriptions ($share/group/filter) take part in the
// group's round-robin.
func (s *Server) Subscribe(filter string, id int, handler MessageHandler) error {
	if s.isClosing() {
		return ErrServerClosed
	}
	if err := topics.ValidateFilter(filter); err != nil {
		return errors.Join(ErrInvalidTopic, err)
	}
	c := s.inline.client
	if !s.hooks.authorizeRequest(c, AccessRequest{Topic: filter, Access: Read, QoS: 2}) {
		return ErrNotAuthorized
	}
	pid := inlinePrefix + strconv.Itoa(id)
	group, f, _ := topics.ParseShared(filter)
	t := &handlerTarget{id: id, h: handler}
	sub := topics.Subscription{ClientID: pid, Filter: f, Group: group, QoS: 2, Target: t}
	if !s.index.Subscribe(sub) {
		s.stats.Subscriptions.Add(1)
		if err := s.waitFilter(s.filterAdd(group, f), group, f); err != nil {
			if s.index.Unsubscribe(pid, group, f) {
				s.stats.Subscriptions.Add(-1)
			}
			return err
		}
	}
	sub.Target = nil // the core's own: hooks do not see it
	for _, h := range s.hooks.subscribes {
		h.OnSubscribed(c, sub)
	}
	if group == "" {
		if synced := s.syncRetained(); synced != nil {
			synced()
		}
		now := time.Now().UnixNano()
		s.retained.Match(f, func(_ string, m *Message) bool {
			if !m.expired(now) {
				s.deliverHandler(t, delivery{msg: m, qos: m.QoS, retain: true})
			}
			return true
		})
	}
	return nil
}

// Unsubscribe removes the in-process subscription made with the same
// filter and id.
func (s *Server) Unsubscribe(filter string, id int) error {
	pid := inlinePrefix + strconv.Itoa(id)
	group, f, _ := topics.ParseShared(filter)
	if !s.unsubscribe(pid, s.inline.client, group, f) {
		return ErrNoSubscription
	}
	return nil
}
