package main

import (
	"log/slog"

	"github.com/ternmq/tern"
)

// connectionLog logs each client's connect and disconnect at INFO, as
// Mosquitto does with connection_messages: client id, user name, address,
// listener, protocol and keep alive; the reason of a disconnect.
type connectionLog struct{ log *slog.Logger }

var (
	_ tern.ConnectObserver    = connectionLog{}
	_ tern.DisconnectObserver = connectionLog{}
)

func (connectionLog) ID() string { return "connection-log" }

// OnSessionEstablished implements tern.ConnectObserver.
func (l connectionLog) OnSessionEstablished(c *tern.Client, resumed bool) {
	l.log.Info("client connected", "client", c.ID(), "user", c.Username(), "remote", c.RemoteAddr(),
		"listener", c.Listener(), "protocol", protocolName(c.ProtocolVersion()), "keepalive", c.KeepAlive(),
		"session_present", resumed)
}

// OnDisconnect implements tern.DisconnectObserver.
func (l connectionLog) OnDisconnect(c *tern.Client, err error) {
	args := []any{"client", c.ID(), "user", c.Username(), "remote", c.RemoteAddr(), "reason", tern.DisconnectReason(err)}
	if r := tern.DisconnectReason(err); r == "connection_error" {
		args = append(args, "err", err.Error())
	}
	l.log.Info("client disconnected", args...)
}

func protocolName(v byte) string {
	switch v {
	case 3:
		return "mqttv31"
	case 4:
		return "mqttv311"
	case 5:
		return "mqttv5"
	}
	return "unknown"
}
