package listeners

import (
	"net"
	"time"
)

// TCP is a plain TCP listener, with the PROXY protocol optionally.
type TCP struct {
	base

	// Proxy, when set before Serve, requires a PROXY protocol header on
	// every connection and takes the client's address from it.
	Proxy *ProxyProtocol

	// HandshakeTimeout bounds the reading of the PROXY header; default
	// DefaultHandshakeTimeout. Without Proxy there is no handshake.
	HandshakeTimeout time.Duration
}

// NewTCP returns a TCP listener named id on address ("127.0.0.1:1883").
func NewTCP(id, address string) *TCP {
	return &TCP{base: base{id: id, network: "tcp", address: address}}
}

// NewTCPFromListener wraps an existing net.Listener, such as one on port 0
// in tests.
func NewTCPFromListener(id string, ln net.Listener) *TCP {
	return &TCP{base: base{id: id, network: "tcp", address: ln.Addr().String(), ln: ln}}
}

// Listen opens the socket now, so that Addr reports the bound address
// (useful with port 0). Serve calls it when needed.
func (l *TCP) Listen() error {
	return l.open(func() (net.Listener, error) { return net.Listen("tcp", l.address) })
}

// Addr implements tern.Listener.
func (l *TCP) Addr() net.Addr { return l.addr() }

// Serve implements tern.Listener.
func (l *TCP) Serve(handle func(net.Conn)) error {
	proxy, err := proxyStep(l.Proxy)
	if err != nil {
		return err
	}
	if err := l.Listen(); err != nil {
		return err
	}
	return l.serve(l.listener(), handle, l.HandshakeTimeout, chain(proxy))
}

// Close implements tern.Listener: it stops accepting and closes the
// connections still in their handshake.
func (l *TCP) Close() error { return l.close() }
