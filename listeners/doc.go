// Package listeners provides the network listeners of a Tern server: TCP
// (this file), and later TLS, WebSocket and Unix sockets. A listener hands
// each accepted net.Conn to the server through the callback given to Serve
// and knows nothing else of it.
package listeners
