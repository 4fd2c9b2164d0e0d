package tern

import (
	"slices"
	"strings"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// handleSubscribe handles SUBSCRIBE: one reason code per filter in the
// SUBACK [MQTT-3.8.4-6], then the retained messages that match.
func (c *Client) handleSubscribe(pk *packets.Subscribe) error {
	s := c.srv
	cfg := s.cfg
	var subID uint32
	if ids := pk.Properties.SubscriptionIDs; len(ids) > 0 {
		if !cfg.subIDAvailable {
			return &packets.Error{Code: packets.SubIDsNotSupported, Msg: "subscription identifiers not available"} // section 3.2.2.3.12
		}
		subID = ids[0]
	}
	if c.refuseSubscribe(pk) {
		return nil // the store cannot write: see storehealth.go
	}
	ack := &packets.Suback{PacketID: pk.PacketID, ReasonCodes: make([]packets.ReasonCode, len(pk.Subscriptions))}
	var sendRetained []topics.Subscription
	type made struct {
		sub     topics.Subscription
		existed bool
		pending *filterRef // a FilterObserver's answer to wait for
	}
	// Without a FilterObserver nothing is waited for: each subscription
	// is stored as it is made, and no per-SUBSCRIBE list is allocated
	// (garbage that a client making a million subscriptions would pay for).
	observed := s.filters.Load() != nil
	var subs []made
	if observed {
		subs = make([]made, len(pk.Subscriptions))
	}
	for i, req := range pk.Subscriptions {
		c.bridgeOptions(&req)
		code, sub, existed, err := s.subscribe(c, req, subID)
		if err != nil {
			for j := range subs[:min(i, len(subs))] { // the connection ends: let the filters settle
				s.waitFilter(subs[j].pending, subs[j].sub.Group, subs[j].sub.Filter)
			}
			return err
		}
		ack.ReasonCodes[i] = code
		if !observed {
			if !code.IsError() {
				sendRetained = c.granted(sub, existed, sendRetained)
			}
			continue
		}
		if !code.IsError() {
			subs[i] = made{sub, existed, nil}
			if !existed {
				subs[i].pending = s.filterAdd(sub.Group, sub.Filter)
			}
		}
	}
	// The replicators, the FilterObservers and the RetainedSyncers are
	// waited for together.
	var synced func()
	if slices.ContainsFunc(pk.Subscriptions, func(req packets.Subscription) bool {
		return req.RetainHandling < 2 && !strings.HasPrefix(req.Filter, "$share/")
	}) {
		synced = s.syncRetained()
	}
	var replicated func()
	if slices.ContainsFunc(ack.ReasonCodes, func(code packets.ReasonCode) bool { return !code.IsError() }) {
		replicated = s.startReplicate(c) // another node may need them if this one dies
	}
	refused := false
	for i := range subs {
		m := &subs[i]
		if ack.ReasonCodes[i].IsError() {
			continue
		}
		if err := s.waitFilter(m.pending, m.sub.Group, m.sub.Filter); err != nil {
			refused = true
			s.log.Warn("subscription refused: filter not accepted", "client", c.id, "filter", m.sub.Filter, "err", err)
			if s.index.Unsubscribe(c.id, m.sub.Group, m.sub.Filter) {
				s.stats.Subscriptions.Add(-1)
				for _, h := range s.hooks.subscribes {
					h.OnUnsubscribed(c, m.sub.Group, m.sub.Filter)
				}
			}
			ack.ReasonCodes[i] = errFilterRefused
			continue
		}
		sendRetained = c.granted(m.sub, m.existed, sendRetained)
	}
	c.sess.mu.Lock()
	persistent := c.sess.persistentLocked()
	c.sess.mu.Unlock()
	if persistent {
		// The SUBACK promises the subscription: it must survive a crash.
		if err := s.persist.wait(); err != nil {
			return &packets.Error{Code: packets.ImplementationSpecificError, Msg: "storing the subscription failed"}
		}
	}
	if replicated != nil {
		replicated()
		if refused { // the list given had the refused ones
			s.replicateSubscriptions(c)
		}
	}
	if synced != nil {
		synced() // before since: what the sync brings was retained before the SUBSCRIBE
	}
	// Before the SUBACK: a message the client publishes once it has the
	// SUBACK is retained after since, and comes live only [MQTT-3.3.1-9].
	since := time.Now()
	c.send(ack)
	for i := range sendRetained {
		c.sess.addStream(&sendRetained[i], since)
	}
	return nil
}

// granted stores a subscription granted to c and appends it to
// sendRetained when its retained messages are to be sent: never for shared
// subscriptions (section 4.8.2); Retain Handling 0 always, 1 only for a new
// subscription, 2 never [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11].
func (c *Client) granted(sub topics.Subscription, existed bool, sendRetained []topics.Subscription) []topics.Subscription {
	c.sess.storeSubscription(&sub, false)
	if sub.Group == "" && (sub.RetainHandling == 0 || sub.RetainHandling == 1 && !existed) {
		sendRetained = append(sendRetained, sub)
	}
	return sendRetained
}

// subscribe checks and stores one subscription of a client and returns the
// reason code for it, the subscription stored and whether it replaced one.
// An error means the connection must end.
func (s *Server) subscribe(c *Client, req packets.Subscription, subID uint32) (packets.ReasonCode, topics.Subscription, bool, error) {
	cfg := s.cfg
	var sub topics.Subscription
	if err := topics.ValidateFilter(req.Filter); err != nil || c.tooManyLevels(req.Filter) {
		return packets.TopicFilterInvalid, sub, false, nil // 0x8F (section 3.9.3)
	}
	group, filter, shared := topics.ParseShared(req.Filter)
	if shared {
		if !cfg.sharedSubAvailable {
			return packets.SharedSubsNotSupported, sub, false, nil
		}
		if req.NoLocal {
			return 0, sub, false, &packets.Error{Code: packets.ProtocolError, Msg: "no local on a shared subscription"} // [MQTT-3.8.3-4]
		}
	}
	if !cfg.wildcardSubAvailable && strings.ContainsAny(filter, "+#") {
		return packets.WildcardSubsNotSupported, sub, false, nil
	}
	if !s.hooks.authorizeRequest(c, AccessRequest{Topic: req.Filter, Access: Read, QoS: req.QoS}) {
		return packets.NotAuthorized, sub, false, nil
	}
	if max := cfg.MaxSubscriptionsPerClient; max > 0 {
		n := 0
		replaces := false
		s.index.ClientSubscriptions(c.id, func(x *topics.Subscription) bool {
			n++
			replaces = replaces || x.Group == group && x.Filter == filter
			return true
		})
		if n >= max && !replaces {
			s.stats.SubscriptionsRefused.Add(1)
			s.log.Info("subscription refused: too many subscriptions", "client", c.id, "filter", req.Filter, "max", max)
			return packets.QuotaExceeded, sub, false, nil
		}
	}
	sub = topics.Subscription{
		ClientID:          c.id,
		Filter:            filter,
		Group:             group,
		QoS:               min(req.QoS, cfg.maxQoS), // [MQTT-3.2.2-10]: granted QoS never above the maximum
		NoLocal:           req.NoLocal,
		RetainAsPublished: req.RetainAsPublished,
		RetainHandling:    req.RetainHandling,
		Identifier:        subID,
		Target:            c.sess,
	}
	existed := s.index.Subscribe(sub) // replaces an identical filter [MQTT-3.8.4-3]
	if !existed {
		s.stats.Subscriptions.Add(1)
	}
	sub.Target = nil // the core's own: hooks do not see it
	for _, h := range s.hooks.subscribes {
		h.OnSubscribed(c, sub)
	}
	return packets.ReasonCode(sub.QoS), sub, existed, nil
}

// deleteRetained deletes the retained message of topic, in memory and in
// the store, if there is one and cond (when not nil) holds for it.
func (s *Server) deleteRetained(topic string, cond func(*Message) bool) bool {
	s.retainMu.Lock()
	defer s.retainMu.Unlock()
	old, ok := s.retained.Get(topic)
	if !ok || cond != nil && !cond(old) || !s.retained.Delete(topic) {
		return false
	}
	s.stats.Retained.Add(-1)
	s.persistRetained(topic, nil, old)
	return true
}

// handleUnsubscribe handles UNSUBSCRIBE [MQTT-3.10.4-1].
func (c *Client) handleUnsubscribe(pk *packets.Unsubscribe) error {
	s := c.srv
	if refused, err := c.refuseUnsubscribe(pk); refused {
		return err // the store cannot write: see storehealth.go
	}
	ack := &packets.Unsuback{PacketID: pk.PacketID, ReasonCodes: make([]packets.ReasonCode, len(pk.Filters))}
	for i, f := range pk.Filters {
		group, filter, _ := topics.ParseShared(f)
		c.sess.storeSubscription(&topics.Subscription{ClientID: c.id, Group: group, Filter: filter}, true)
		if s.unsubscribe(c.id, c, group, filter) {
			ack.ReasonCodes[i] = packets.Success
		} else {
			ack.ReasonCodes[i] = packets.NoSubscriptionExisted
		}
	}
	c.sess.mu.Lock()
	persistent := c.sess.persistentLocked()
	c.sess.mu.Unlock()
	if persistent {
		// The UNSUBACK promises the subscription is gone: a crash must not
		// bring it back.
		if err := s.persist.wait(); err != nil {
			return &packets.Error{Code: packets.ImplementationSpecificError, Msg: "storing the unsubscription failed"}
		}
	}
	if slices.Contains(ack.ReasonCodes, packets.Success) {
		s.replicateSubscriptions(c)
	}
	c.send(ack) // [MQTT-3.10.4-4]
	return nil
}

// unsubscribe removes a subscription of the client id; c is nil for the
// in-process client.
func (s *Server) unsubscribe(id string, c *Client, group, filter string) bool {
	if !s.index.Unsubscribe(id, group, filter) {
		return false
	}
	s.stats.Subscriptions.Add(-1)
	s.filterRemove(group, filter)
	for _, h := range s.hooks.subscribes {
		h.OnUnsubscribed(c, group, filter)
	}
	return true
}
