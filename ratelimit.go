package tern

import (
	"time"

	"github.com/ternmq/tern/packets"
)

// rateLimitError ends the connection of a client over MaxPublishRate or
// MaxPublishBytesRate. It wraps a *packets.Error (errors.As finds it, so
// the client reads the reason code) and is counted in Stats.RateLimited,
// not in Stats.ProtocolErrors: the client broke a limit, not the protocol.
type rateLimitError struct{ pe *packets.Error }

func (e rateLimitError) Error() string { return e.pe.Error() }
func (e rateLimitError) Unwrap() error { return e.pe }

func rateLimited(code packets.ReasonCode, msg string) error {
	return rateLimitError{&packets.Error{Code: code, Msg: msg}}
}

// ConnectionRateLimiter is implemented by listeners that cap the rate of
// new connections (the listeners package's do, through their
// MaxConnectionRate field). The server asks it once per accepted
// connection; when it says no, the CONNECT is refused: MQTT 5 clients get
// CONNACK 0x9F Connection rate exceeded, others are closed. Refusals are
// counted in Stats.ConnectionsRejected (and ConnectsRefused).
type ConnectionRateLimiter interface {
	AllowConnection() bool
}

// overConnectionRateLocked reports whether a new connection on the
// listener is over its connection rate, counting and (at most once a
// second) logging it. The caller holds s.mu.
func (s *Server) overConnectionRateLocked(listener string) bool {
	l, ok := s.listeners[listener].(ConnectionRateLimiter)
	if !ok || l.AllowConnection() {
		return false
	}
	s.stats.ConnectionsRejected.Add(1)
	if now := time.Now(); now.Sub(s.limitLog) > time.Second {
		s.limitLog = now
		s.log.Warn("connection rate limit reached: refusing connections", "listener", listener)
	}
	return true
}
