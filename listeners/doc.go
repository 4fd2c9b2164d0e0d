// Package listeners provides the network listeners of a Tern server: TCP,
// TLS (with certificate reload and client certificates), WebSocket and
// secure WebSocket, and Unix domain sockets, each with the PROXY protocol
// available where it makes sense.
//
// A listener implements the server's Listener interface (ID, Addr, Serve,
// Close) and knows nothing else of the server: it accepts connections,
// finishes any handshake under a deadline (DefaultHandshakeTimeout) on the
// connection's own goroutine, and hands each resulting net.Conn to the
// callback given to Serve.
//
// Connections that carry a verified client certificate implement
// [Identity]; hooks reach it through the client's Conn method:
//
//	if id, ok := client.Conn().(listeners.Identity); ok {
//		user := id.Identity() // CN or first SAN, when the listener uses it as the user name
//	}
package listeners
