// Package tern is an embeddable MQTT 3.1, 3.1.1 and 5.0 broker.
//
// Create a [Server] with [New], attach listeners with [Server.AddListener]
// and hooks with [Server.AddHook], then call [Server.Serve]. The server can
// publish and subscribe in-process ([Server.Publish], [Server.Subscribe])
// under the same rules and hooks as network clients.
//
//	srv, err := tern.New(nil)
//	if err != nil { ... }
//	srv.AddListener(listeners.NewTCP("tcp", "127.0.0.1:1883"))
//	err = srv.Serve()
//
// Lock order (outermost first): Server.mu, session.mu. The subscription and
// retained indexes lock internally and may be called under either. A
// function whose name ends in Locked expects the caller to hold the lock of
// the session it works on.
package tern
