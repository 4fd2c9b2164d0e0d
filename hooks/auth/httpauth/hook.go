package httpauth

import (
	"sync"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/auth/emqxacl"
	"github.com/ternmq/tern/hooks/internal/authmetrics"
	"github.com/ternmq/tern/packets"
)

// stateKey is the client value holding what the hook keeps per client.
type stateKey struct{}

// state is a client's authentication answer and its cached authorization
// answers.
type state struct {
	superuser bool
	acl       *emqxacl.Rules
	expireAt  time.Time // zero: none

	mu     sync.Mutex
	authz  map[authzKey]cachedAuthz
	timer  *time.Timer
	ended  bool
	hasAny bool // set once an authentication answer was kept
}

type authzKey struct {
	topic  string
	access tern.Access
	qos    byte
	retain bool
}

type cachedAuthz struct {
	d       tern.Decision
	gen     uint64
	expires time.Time
}

// stateOf returns the client's state, making one when create is set.
func stateOf(c *tern.Client, create bool) *state {
	if st, ok := c.Value(stateKey{}).(*state); ok || !create {
		return st
	}
	st := &state{}
	c.SetValue(stateKey{}, st)
	return st
}

// Authenticate implements tern.Authenticator.
func (h *Hook) Authenticate(c *tern.Client, pk *packets.Connect) tern.Decision {
	st := h.set.Load()
	if st.opts.AuthnURL == "" {
		return tern.Abstain
	}
	clientID := c.ID()
	if clientID == "" {
		clientID = pk.ClientID
	}
	req := baseRequest(c, clientID, pk.Username)
	req.Password = string(pk.Password)
	key := keyOf(&req)
	now := time.Now()
	a, cached := h.cache.get(key, st.gen, now)
	if cached {
		h.metrics.CacheHit()
	} else {
		a = h.ask(st, st.opts.AuthnURL, &req)
		if d := ttl(st, a); d > 0 {
			h.cache.put(key, a, st.gen, now.Add(d))
		}
	}
	switch a.result {
	case authmetrics.Allow:
		rules, err := emqxacl.Parse(a.acl, clientID, pk.Username)
		if err != nil {
			h.log.Warn("HTTP auth answer has a bad acl: client refused", "client", clientID, "err", err)
			c.RefuseWith(packets.NotAuthorized)
			return tern.Deny
		}
		s := stateOf(c, true)
		s.superuser, s.acl, s.hasAny = a.superuser, rules, true
		if a.expireAt > 0 {
			s.expireAt = time.Unix(a.expireAt, 0)
		}
		return tern.Allow
	case authmetrics.Deny:
		h.log.Info("HTTP auth refused the client", "client", clientID, "remote", c.RemoteAddr())
		return tern.Deny
	case authmetrics.Ignore:
		return tern.Abstain
	}
	h.log.Warn("HTTP auth service failed", "client", clientID, "url", st.opts.AuthnURL, "err", a.err, "on_error", st.opts.OnError)
	if st.opts.OnError == "ignore" {
		return tern.Abstain
	}
	c.RefuseWith(packets.ServerUnavailable)
	return tern.Deny
}

// Authorize implements tern.Authorizer.
func (h *Hook) Authorize(c *tern.Client, topic string, acc tern.Access) tern.Decision {
	return h.AuthorizeRequest(c, tern.AccessRequest{Topic: topic, Access: acc})
}

// AuthorizeRequest implements tern.RequestAuthorizer.
func (h *Hook) AuthorizeRequest(c *tern.Client, r tern.AccessRequest) tern.Decision {
	if c.IsInline() {
		return tern.Abstain
	}
	s := stateOf(c, false)
	if s != nil && s.hasAny {
		if s.superuser {
			return tern.Allow
		}
		if d := s.acl.Check(r); d != tern.Abstain {
			return d
		}
	}
	st := h.set.Load()
	if st.opts.AuthzURL == "" || r.Access == tern.Deliver || (r.Access != tern.Write && r.Access != tern.Read) {
		return tern.Abstain // never a request on the delivery path
	}
	if s == nil {
		s = stateOf(c, true)
	}
	key := authzKey{topic: r.Topic, access: r.Access, qos: r.QoS, retain: r.Retain}
	now := time.Now()
	s.mu.Lock()
	e, ok := s.authz[key]
	s.mu.Unlock()
	if ok && e.gen == st.gen && now.Before(e.expires) {
		h.metrics.CacheHit()
		return e.d
	}
	qos, retain := r.QoS, r.Retain
	req := baseRequest(c, c.ID(), c.Username())
	req.Topic, req.QoS = r.Topic, &qos
	if r.Access == tern.Write {
		req.Action, req.Acc, req.Retain = "publish", 2, &retain
	} else {
		req.Action, req.Acc, req.Retain = "subscribe", 4, &retain
	}
	a := h.ask(st, st.opts.AuthzURL, &req)
	var d tern.Decision
	switch a.result {
	case authmetrics.Allow:
		d = tern.Allow
	case authmetrics.Deny:
		d = tern.Deny
	case authmetrics.Ignore:
		d = tern.Abstain
	default:
		h.log.Warn("HTTP authorization failed", "client", c.ID(), "topic", r.Topic, "err", a.err, "on_error", st.opts.OnError)
		if st.opts.OnError == "ignore" {
			return tern.Abstain
		}
		return tern.Deny
	}
	if t := ttl(st, a); t > 0 {
		s.mu.Lock()
		if s.authz == nil {
			s.authz = make(map[authzKey]cachedAuthz)
		}
		if len(s.authz) >= perClientMax(st) {
			for k := range s.authz { // full: forget an arbitrary half
				delete(s.authz, k)
				if len(s.authz) < perClientMax(st)/2 {
					break
				}
			}
		}
		s.authz[key] = cachedAuthz{d: d, gen: st.gen, expires: now.Add(t)}
		s.mu.Unlock()
	}
	return d
}

func perClientMax(st *settings) int { return min(1000, st.opts.CacheMaxEntries) }

// OnSessionEstablished implements tern.ConnectObserver: it disconnects the
// client at the expire_at of its authentication answer.
func (h *Hook) OnSessionEstablished(c *tern.Client, _ bool) {
	s := stateOf(c, false)
	if s == nil || s.expireAt.IsZero() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.timer = time.AfterFunc(time.Until(s.expireAt), func() {
		if c.Disconnect(packets.MaximumConnectTime) {
			h.log.Info("authentication expired (expire_at): client disconnected", "client", c.ID())
		}
	})
}

// OnDisconnect implements tern.DisconnectObserver: it stops the expiry
// timer and drops the cached authorization answers. The superuser flag and
// acl stay, for the will and offline deliveries.
func (h *Hook) OnDisconnect(c *tern.Client, _ error) {
	s := stateOf(c, false)
	if s == nil {
		return
	}
	s.mu.Lock()
	s.ended = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.authz = nil
	s.mu.Unlock()
}
