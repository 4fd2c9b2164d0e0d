package events

import (
	"os"
	"strings"
	"sync/atomic"

	"github.com/ternmq/tern"
)

// Presence publishes EMQX's client presence events through the broker's
// in-process client: on $SYS/brokers/<node>/clients/<client id>/connected
// when a client's session is established, and .../disconnected when its
// connection ends, as JSON objects with EMQX's fields (clientid,
// username, ipaddress, sockport, proto_name, proto_ver, keepalive,
// clean_start, expiry_interval, connected_at, connack, ts; reason and
// disconnected_at for disconnected; times in Unix milliseconds). The
// messages are QoS 0 and not retained. A client identifier that is no
// valid topic level (it holds '+' or '#') gets no event.
//
// Subscribers need read access to the topics: "$SYS/brokers/+/clients/#"
// (a "#" filter does not match $SYS topics).
type Presence struct {
	node   string
	srv    atomic.Pointer[tern.Server]
	failed atomic.Int64
}

var (
	_ tern.ConnectObserver    = (*Presence)(nil)
	_ tern.DisconnectObserver = (*Presence)(nil)
	_ tern.Starter            = (*Presence)(nil)
)

// NewPresence returns the hook; node names the broker in the topics ("" is
// the host name).
func NewPresence(node string) *Presence {
	return &Presence{node: NodeName(node)}
}

// NodeName returns node, or the host name when node is "".
func NodeName(node string) string {
	if node != "" {
		return node
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "tern"
}

// ID implements tern.Hook.
func (p *Presence) ID() string { return "presence-events" }

// Start implements tern.Starter.
func (p *Presence) Start(s *tern.Server) error {
	p.srv.Store(s)
	return nil
}

// Failed returns how many events could not be published.
func (p *Presence) Failed() int64 { return p.failed.Load() }

func (p *Presence) topic(clientID, what string) (string, bool) {
	if clientID == "" || strings.ContainsAny(clientID, "+#\x00") {
		return "", false
	}
	return "$SYS/brokers/" + p.node + "/clients/" + clientID + "/" + what, true
}

// OnSessionEstablished implements tern.ConnectObserver.
func (p *Presence) OnSessionEstablished(c *tern.Client, _ bool) {
	srv := p.srv.Load()
	topic, ok := p.topic(c.ID(), "connected")
	if srv == nil || !ok {
		return
	}
	e := connectedEvent(srv, c)
	b := make([]byte, 0, 320)
	b = append(b, `{"clientid":`...)
	b = appendString(b, e.clientID)
	b = appendField(b, "username", e.username)
	b = appendField(b, "ipaddress", host(e.peer))
	b = appendInt(b, "sockport", port(e.sock))
	b = append(b, `,"proto_name":`...)
	b = appendString(b, protoName(e.protoVer))
	b = appendInt(b, "proto_ver", int64(e.protoVer))
	b = appendInt(b, "keepalive", int64(e.keepAlive))
	b = appendBool(b, "clean_start", e.clean)
	b = appendInt(b, "expiry_interval", int64(e.expiry))
	b = appendInt(b, "connected_at", e.since)
	b = appendInt(b, "connack", 0)
	b = appendInt(b, "ts", e.at)
	b = append(b, '}')
	p.publish(srv, topic, b)
}

// OnDisconnect implements tern.DisconnectObserver.
func (p *Presence) OnDisconnect(c *tern.Client, err error) {
	srv := p.srv.Load()
	topic, ok := p.topic(c.ID(), "disconnected")
	if srv == nil || !ok {
		return
	}
	now := nowMillis()
	b := make([]byte, 0, 256)
	b = append(b, `{"clientid":`...)
	b = appendString(b, c.ID())
	b = appendField(b, "username", c.Username())
	b = appendField(b, "ipaddress", host(c.RemoteAddr()))
	b = appendInt(b, "sockport", port(localAddr(c)))
	b = appendField(b, "reason", tern.DisconnectReason(err))
	b = append(b, `,"proto_name":`...)
	b = appendString(b, protoName(c.ProtocolVersion()))
	b = appendInt(b, "proto_ver", int64(c.ProtocolVersion()))
	b = appendInt(b, "disconnected_at", now)
	b = appendInt(b, "ts", now)
	b = append(b, '}')
	p.publish(srv, topic, b)
}

func (p *Presence) publish(srv *tern.Server, topic string, payload []byte) {
	if err := srv.Publish(topic, payload, false, 0); err != nil {
		p.failed.Add(1)
	}
}

// connectedEvent describes a client whose session was just established.
func connectedEvent(srv *tern.Server, c *tern.Client) event {
	e := event{kind: kConnected, at: nowMillis(), clientID: c.ID(), username: c.Username(), peer: c.RemoteAddr(),
		sock: localAddr(c), protoVer: c.ProtocolVersion(), since: c.ConnectedAt().UnixMilli()}
	if ci, ok := srv.ClientInfo(c.ID()); ok {
		e.clean, e.keepAlive, e.expiry = ci.CleanStart, ci.KeepAlive, ci.SessionExpiry
	}
	return e
}

func localAddr(c *tern.Client) string {
	if conn := c.Conn(); conn != nil && conn.LocalAddr() != nil {
		return conn.LocalAddr().String()
	}
	return ""
}

// host returns the host of host:port.
func host(addr string) string {
	if i := lastColon(addr); i >= 0 {
		return trimBrackets(addr[:i])
	}
	return addr
}

// port returns the port of host:port, or 0.
func port(addr string) int64 {
	i := lastColon(addr)
	if i < 0 {
		return 0
	}
	var n int64
	for _, c := range addr[i+1:] {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
