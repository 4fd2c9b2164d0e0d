// Package tern is an embeddable MQTT 3.1, 3.1.1 and 5.0 broker.
//
// Create a [Server] with [New], attach listeners (package listeners) with
// [Server.AddListener] and hooks (authentication, authorization,
// observers, lifecycle; see [Hook]) with [Server.AddHook], then call
// [Server.Serve], which binds the listeners and returns. [Server.Shutdown]
// ends it gracefully. The server publishes and subscribes in-process
// ([Server.Publish], [Server.Subscribe]) under the same rules and hooks as
// network clients. With [Options.Store] it keeps persistent sessions,
// queued messages and retained messages across restarts: open the store
// before New and close it after Shutdown.
//
// The package example shows a complete embedded broker.
package tern
