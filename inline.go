package tern

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// MessageHandler receives messages for an in-process subscription. It runs
// on the publisher's goroutine: it must not block, and must not modify m.
type MessageHandler func(m *Message)

// inlineClient is the server's in-process client. Each in-process
// subscriber id is a pseudo client in the index, named with a leading NUL,
// which no network client identifier can contain.
type inlineClient struct {
	srv    *Server
	client *Client // what hooks see as the publishing or subscribing client

	mu       sync.RWMutex
	handlers map[string]MessageHandler
}

const inlinePrefix = "\x00inline/"

// inlineListener is the listener ID of the in-process client.
const inlineListener = "inline"

func (ic *inlineClient) init(s *Server) {
	ic.srv = s
	ic.client = &Client{srv: s, id: s.cfg.InlineClientID, listener: inlineListener, version: packets.V5}
	ic.handlers = make(map[string]MessageHandler)
}

func (ic *inlineClient) handles(clientID string) bool {
	return strings.HasPrefix(clientID, inlinePrefix)
}

func (ic *inlineClient) deliver(clientID string, d delivery) {
	ic.mu.RLock()
	h := ic.handlers[clientID]
	ic.mu.RUnlock()
	if h == nil || d.msg.expired(time.Now().UnixNano()) {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			ic.srv.log.Error("in-process message handler panicked", "subscriber", clientID[len(inlinePrefix):], "panic", r)
		}
	}()
	h(d.msg)
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
	return s.publish(topic, payload, retain, qos, nil)
}

// publish is Publish with properties (PublishWith).
func (s *Server) publish(topic string, payload []byte, retain bool, qos byte, props *packets.Properties) error {
	if s.isClosing() {
		return ErrServerClosed
	}
	if err := topics.ValidateName(topic); err != nil {
		return errors.Join(ErrInvalidTopic, err)
	}
	if qos > s.cfg.maxQoS {
		return ErrInvalidQoS
	}
	c := s.inline.client
	if !s.hooks.authorizeRequest(c, AccessRequest{Topic: topic, Access: Write, QoS: qos, Retain: retain}) {
		return ErrNotAuthorized
	}
	pk := &packets.Publish{Topic: topic, Payload: append([]byte(nil), payload...), Retain: retain, QoS: qos}
	if props != nil {
		pk.Properties = *props
	}
	for _, h := range s.hooks.interceptors {
		if err := h.OnPublish(c, pk); err == ErrDiscard {
			return nil
		} else if err != nil {
			return err
		}
	}
	s.stats.MessagesReceived.Add(1)
	m := newMessage(pk, c.id, time.Now())
	if r := s.route(m, true); r.retainRefused {
		return ErrQuotaExceeded
	}
	for _, h := range s.hooks.publishes {
		h.OnPublished(c, m)
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
	s.inline.mu.Lock()
	s.inline.handlers[pid] = handler
	s.inline.mu.Unlock()
	group, f, _ := topics.ParseShared(filter)
	sub := topics.Subscription{ClientID: pid, Filter: f, Group: group, QoS: 2}
	if !s.index.Subscribe(sub) {
		s.stats.Subscriptions.Add(1)
	}
	for _, h := range s.hooks.subscribes {
		h.OnSubscribed(c, sub)
	}
	if group == "" {
		now := time.Now().UnixNano()
		s.retained.Match(f, func(_ string, m *Message) bool {
			if !m.expired(now) {
				s.inline.deliver(pid, delivery{msg: m, qos: m.QoS, retain: true})
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
	found := false
	s.index.ClientSubscriptions(pid, func(*topics.Subscription) bool { found = true; return false })
	if !found {
		s.inline.mu.Lock()
		delete(s.inline.handlers, pid)
		s.inline.mu.Unlock()
	}
	return nil
}
