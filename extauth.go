package tern

// Seams for hooks that authenticate and authorize against something outside
// the broker (a JWT issuer, an HTTP service), keep a ban list, or end a
// connection on their own schedule (an expired token).

import "github.com/ternmq/tern/packets"

// ConnectGate is asked about every CONNECT before authentication, plain or
// enhanced (an Authenticator is not asked when the client uses an MQTT 5
// Authentication Method, a gate is), in the order the hooks were added. It
// returns Success to let the CONNECT go on, or an error reason code to
// refuse it with that code: 0x8A Banned, 0x9F Connection rate exceeded,
// 0x86 Bad user name or password, ... (a 3.1.1 client gets the closest
// return code, or the connection is closed when there is none). Like an
// Authenticator it may set pk.Username, and it may attach values to the
// client (Client.SetValue) for later hooks. Gates run before any
// authenticator, so a ban list or a reconnect-storm guard there spares
// the authentication backends.
type ConnectGate interface {
	Hook
	CheckConnect(c *Client, pk *packets.Connect) packets.ReasonCode
}

// AccessRequest is what an authorizer is asked, with the details that
// Authorize leaves out.
type AccessRequest struct {
	Topic  string // the topic name (Write, Deliver) or filter (Read)
	Access Access
	// QoS is the message's QoS (Write, Deliver) or the QoS the client
	// asked for (Read).
	QoS byte
	// Retain is the message's retain flag (Write, Deliver).
	Retain bool
}

// RequestAuthorizer is an Authorizer that wants the QoS and retain flag of
// what it authorizes: the server calls AuthorizeRequest instead of
// Authorize. The in-process client's Subscribe is asked about with QoS 2,
// the QoS its handlers receive.
type RequestAuthorizer interface {
	Authorizer
	AuthorizeRequest(c *Client, req AccessRequest) Decision
}

// refusalKey is the client value holding the CONNACK code chosen with
// RefuseWith.
type refusalKey struct{}

// RefuseWith chooses the reason code of the CONNACK that refuses the client
// when an Authenticator denies it: call it before returning Deny. The
// default is 0x86 Bad user name or password; 0x87 Not authorized, 0x88
// Server unavailable (an authentication backend that does not answer) and
// 0x8A Banned are the usual others. A code that is not a CONNACK error
// code is ignored. A 3.1.1 client gets the closest 3.1.1 return code.
func (c *Client) RefuseWith(code packets.ReasonCode) {
	if code.IsError() && code.ValidFor(packets.CONNACK) {
		c.SetValue(refusalKey{}, code)
	}
}

// refusal returns the code chosen with RefuseWith, or def.
func (c *Client) refusal(def packets.ReasonCode) packets.ReasonCode {
	if code, ok := c.Value(refusalKey{}).(packets.ReasonCode); ok {
		return code
	}
	return def
}

// Disconnect ends this connection as [Server.Disconnect] does, and reports
// whether it was established and not already ending. Unlike
// Server.Disconnect it never reaches another connection that has since
// taken the client identifier over, so a hook's timer for one connection
// (a token's expiry) cannot end the next.
func (c *Client) Disconnect(code packets.ReasonCode) bool {
	if !code.ValidFor(packets.DISCONNECT) || !code.IsError() {
		code = packets.AdministrativeAction
	}
	if c.conn == nil || !c.established.Load() || c.closed.Load() || c.stopping.Load() {
		return false
	}
	c.disconnect(code)
	return true
}

// checkConnect runs the connect gates; it returns Success or the code of
// the first refusal.
func (hs *hookSet) checkConnect(c *Client, pk *packets.Connect) packets.ReasonCode {
	for _, g := range hs.gates {
		if code := g.CheckConnect(c, pk); code != packets.Success {
			if !code.IsError() || !code.ValidFor(packets.CONNACK) {
				code = packets.NotAuthorized
			}
			return code
		}
	}
	return packets.Success
}

// authorizeRequest runs the authorizers; access is allowed unless one
// denies before any allows.
func (hs *hookSet) authorizeRequest(c *Client, req AccessRequest) bool {
	for i, h := range hs.authorizers {
		var d Decision
		if ra := hs.requestAuth[i]; ra != nil {
			d = ra.AuthorizeRequest(c, req)
		} else {
			d = h.Authorize(c, req.Topic, req.Access)
		}
		switch d {
		case Allow:
			return true
		case Deny:
			return false
		}
	}
	return true
}
