package jwt

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/auth/emqxacl"
	"github.com/ternmq/tern/hooks/internal/authmetrics"
	"github.com/ternmq/tern/packets"
)

var (
	_ tern.Authenticator         = (*Hook)(nil)
	_ tern.ConnectGate           = (*Hook)(nil)
	_ tern.EnhancedAuthenticator = (*Hook)(nil)
	_ tern.RequestAuthorizer     = (*Hook)(nil)
	_ tern.ConnectObserver       = (*Hook)(nil)
	_ tern.DisconnectObserver    = (*Hook)(nil)
	_ tern.Stopper               = (*Hook)(nil)
)

// stateKey is the client value holding a client's token state.
type stateKey struct{}

// state is what the hook keeps for a client that authenticated with a
// token.
type state struct {
	acl atomic.Pointer[emqxacl.Rules]

	mu       sync.Mutex
	deadline time.Time   // exp plus leeway; zero when none
	timer    *time.Timer // fires at deadline once the session is up
	up       bool        // the session is established
	ended    bool        // the connection ended
}

func stateOf(c *tern.Client) *state {
	st, _ := c.Value(stateKey{}).(*state)
	return st
}

// whoOf returns the identity a client's token is checked against.
func whoOf(c *tern.Client, username string) who {
	return who{clientID: c.ID(), username: username, cn: certCN(c.Conn())}
}

// check verifies a CONNECT's token and, when it verifies, keeps its state
// on the client and sets the user name from the claim.
func (h *Hook) check(c *tern.Client, pk *packets.Connect, token string) *refusal {
	start := time.Now()
	w := whoOf(c, pk.Username)
	if w.clientID == "" {
		w.clientID = pk.ClientID // a client not yet given its identifier (tests, embedders)
	}
	v, r := h.verify(token, w)
	if r != nil {
		result := authmetrics.Deny
		if r.code == packets.ServerUnavailable {
			result = authmetrics.Error
		}
		h.metrics.Observe(result, time.Since(start))
		h.log.Info("JWT refused", "client", c.ID(), "remote", c.RemoteAddr(), "reason", r.code.String(), "err", r.err)
		return r
	}
	h.metrics.Observe(authmetrics.Allow, time.Since(start))
	switch {
	case v.username != "":
		pk.Username = v.username
	case h.from == "username":
		pk.Username = "" // the token is no name, and a secret: keep it out of logs and the API
	}
	st := &state{deadline: v.deadline}
	st.acl.Store(v.acl)
	c.SetValue(stateKey{}, st)
	return nil
}

// Authenticate implements tern.Authenticator: it abstains unless the
// password (or user name) field holds something shaped like a JWT.
func (h *Hook) Authenticate(c *tern.Client, pk *packets.Connect) tern.Decision {
	token := string(pk.Password)
	if h.from == "username" {
		token = pk.Username
	}
	if !looksLikeJWT(token) {
		return tern.Abstain
	}
	if r := h.check(c, pk, token); r != nil {
		c.RefuseWith(r.code)
		return tern.Deny
	}
	return tern.Allow
}

// CheckConnect implements tern.ConnectGate: a CONNECT with the
// Authentication Method "JWT" has its token (the Authentication Data, or
// the password field when that is empty) verified here, where the
// CONNECT is at hand; EnhancedAuth then completes the exchange.
func (h *Hook) CheckConnect(c *tern.Client, pk *packets.Connect) packets.ReasonCode {
	if pk.Properties.AuthMethod != h.method {
		return packets.Success
	}
	token := string(pk.Properties.AuthData)
	if token == "" {
		token = string(pk.Password)
	}
	if r := h.check(c, pk, token); r != nil {
		return r.code
	}
	return packets.Success
}

// SupportsAuthMethod implements tern.EnhancedAuthenticator.
func (h *Hook) SupportsAuthMethod(method string) bool { return method == h.method }

// EnhancedAuth implements tern.EnhancedAuthenticator. At CONNECT the token
// was checked by CheckConnect; on re-authentication the data is a fresh
// token, which must verify and name the same client, and moves the
// deadline and replaces the access list.
func (h *Hook) EnhancedAuth(c *tern.Client, _ string, data []byte, reauth bool) tern.AuthResult {
	if !reauth {
		if stateOf(c) == nil {
			return tern.AuthResult{Code: packets.BadUserNameOrPassword}
		}
		return tern.AuthResult{}
	}
	st := stateOf(c)
	start := time.Now()
	v, r := h.verify(string(data), whoOf(c, c.Username()))
	if r == nil && v.username != "" && v.username != c.Username() {
		r = refuse(packets.NotAuthorized, "re-authentication as another user (%q, connected as %q)", v.username, c.Username())
	}
	if r == nil && st == nil {
		r = refuse(packets.NotAuthorized, "no token at connect")
	}
	if r != nil {
		h.metrics.Observe(authmetrics.Deny, time.Since(start))
		h.reauths.WithLabelValues("refused").Inc()
		h.log.Info("JWT re-authentication refused", "client", c.ID(), "reason", r.code.String(), "err", r.err)
		return tern.AuthResult{Code: r.code}
	}
	h.metrics.Observe(authmetrics.Allow, time.Since(start))
	h.reauths.WithLabelValues("ok").Inc()
	st.acl.Store(v.acl)
	st.mu.Lock()
	st.deadline = v.deadline
	h.armLocked(c, st)
	st.mu.Unlock()
	h.log.Debug("JWT renewed", "client", c.ID(), "expires", v.deadline)
	return tern.AuthResult{}
}

// OnSessionEstablished implements tern.ConnectObserver: it starts the
// expiry timer.
func (h *Hook) OnSessionEstablished(c *tern.Client, _ bool) {
	st := stateOf(c)
	if st == nil {
		return
	}
	st.mu.Lock()
	st.up = true
	h.armLocked(c, st)
	st.mu.Unlock()
}

// OnDisconnect implements tern.DisconnectObserver: it stops the expiry
// timer. The access list stays, for the will and for messages routed to
// the session while it is offline (the server checks those as its last
// client).
func (h *Hook) OnDisconnect(c *tern.Client, _ error) {
	st := stateOf(c)
	if st == nil {
		return
	}
	st.mu.Lock()
	st.ended = true
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	st.mu.Unlock()
}

// armLocked (re)starts the expiry timer for the deadline in force.
func (h *Hook) armLocked(c *tern.Client, st *state) {
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	if !st.up || st.ended || st.deadline.IsZero() || h.opts.KeepOnExpiry {
		return
	}
	deadline := st.deadline
	st.timer = time.AfterFunc(time.Until(deadline), func() { h.expire(c, st, deadline) })
}

// expire disconnects a client whose token expired, unless it was renewed
// or the client left meanwhile.
func (h *Hook) expire(c *tern.Client, st *state, deadline time.Time) {
	st.mu.Lock()
	current := !st.ended && st.deadline.Equal(deadline)
	st.mu.Unlock()
	if !current {
		return
	}
	if c.Disconnect(packets.MaximumConnectTime) {
		h.expired.Add(1)
		h.log.Info("token expired: client disconnected", "client", c.ID(), "remote", c.RemoteAddr(), "exp", deadline)
	}
}

// Authorize implements tern.Authorizer.
func (h *Hook) Authorize(c *tern.Client, topic string, acc tern.Access) tern.Decision {
	return h.AuthorizeRequest(c, tern.AccessRequest{Topic: topic, Access: acc})
}

// AuthorizeRequest implements tern.RequestAuthorizer: the client's access
// list decides, or abstains.
func (h *Hook) AuthorizeRequest(c *tern.Client, req tern.AccessRequest) tern.Decision {
	st := stateOf(c)
	if st == nil {
		return tern.Abstain
	}
	return st.acl.Load().Check(req)
}
