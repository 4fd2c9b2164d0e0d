package listeners

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// DefaultHandshakeTimeout bounds what a listener does with a new
// connection before handing it over: reading a PROXY header, the TLS
// handshake, the WebSocket upgrade. A client that does not finish in time
// is disconnected, so it cannot hold a goroutine.
const DefaultHandshakeTimeout = 10 * time.Second

// ProxyProtocol turns on the PROXY protocol (versions 1 and 2, as sent by
// HAProxy, AWS NLB, nginx and others) on a TCP-based listener, so that a
// connection's RemoteAddr is the client's address rather than the proxy's.
//
// A listener with the PROXY protocol on requires the header on every
// connection: a connection without one is closed. Set Trusted so that only
// your proxies may connect; anyone who can reach the port can otherwise
// claim any address.
type ProxyProtocol struct {
	// Trusted lists the addresses ("10.0.0.5") and CIDR ranges
	// ("10.0.0.0/24") of the proxies allowed to connect. Connections from
	// other addresses are closed. Empty: any peer, which must send a header.
	Trusted []string
}

// prefixes parses Trusted.
func (p *ProxyProtocol) prefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range p.Trusted {
		if pf, err := netip.ParsePrefix(s); err == nil {
			out = append(out, pf.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("listeners: PROXY trusted source %q is not an address or CIDR range", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// base is what every listener shares: the socket, its address, the accept
// loop, and the connections still in their handshake, which Close ends.
type base struct {
	// MaxConnections caps the connections open through this listener at
	// once; 0 means no limit. The server enforces it when the connection is
	// accepted (tern.ConnectionLimiter).
	MaxConnections int

	// MaxConnectionRate caps the new connections per second through this
	// listener, with a burst of one second's worth; 0 means no limit. The
	// server refuses a CONNECT beyond it, MQTT 5 clients with CONNACK 0x9F
	// Connection rate exceeded (tern.ConnectionRateLimiter).
	MaxConnectionRate float64

	rateMu     sync.Mutex
	rateTokens float64
	rateAt     time.Time

	id      string
	network string // "tcp" or "unix"
	address string

	mu      sync.Mutex
	ln      net.Listener
	closed  bool
	pending map[net.Conn]struct{}
}

// ID implements tern.Listener.
func (b *base) ID() string { return b.id }

// ConnectionLimit implements tern.ConnectionLimiter.
func (b *base) ConnectionLimit() int { return b.MaxConnections }

// AllowConnection implements tern.ConnectionRateLimiter: it takes a token
// from the listener's bucket of MaxConnectionRate per second.
func (b *base) AllowConnection() bool {
	rate := b.MaxConnectionRate
	if rate <= 0 {
		return true
	}
	burst := max(rate, 1)
	now := time.Now()
	b.rateMu.Lock()
	defer b.rateMu.Unlock()
	if b.rateAt.IsZero() {
		b.rateTokens = burst
	} else {
		b.rateTokens = min(burst, b.rateTokens+now.Sub(b.rateAt).Seconds()*rate)
	}
	b.rateAt = now
	if b.rateTokens < 1 {
		return false
	}
	b.rateTokens--
	return true
}

// open opens the socket unless it is open already.
func (b *base) open(listen func() (net.Listener, error)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln != nil {
		return nil
	}
	if b.closed {
		return net.ErrClosed
	}
	ln, err := listen()
	if err != nil {
		return err
	}
	b.ln = ln
	return nil
}

// addr returns the bound address, or the configured one before Listen.
func (b *base) addr() net.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln != nil {
		return b.ln.Addr()
	}
	if b.network == "unix" {
		return &net.UnixAddr{Name: b.address, Net: "unix"}
	}
	a, err := net.ResolveTCPAddr("tcp", b.address)
	if err != nil {
		return &net.TCPAddr{}
	}
	return a
}

// listener returns the open socket.
func (b *base) listener() net.Listener {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ln
}

// close closes the socket and every connection still in its handshake.
func (b *base) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for c := range b.pending {
		c.Close()
	}
	b.pending = nil
	if b.ln == nil {
		return nil
	}
	return b.ln.Close()
}

// track records a connection in its handshake; it reports false, having
// closed the connection, when the listener is closed.
func (b *base) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		c.Close()
		return false
	}
	if b.pending == nil {
		b.pending = make(map[net.Conn]struct{})
	}
	b.pending[c] = struct{}{}
	return true
}

func (b *base) untrack(c net.Conn) {
	b.mu.Lock()
	delete(b.pending, c)
	b.mu.Unlock()
}

// preparer turns an accepted connection into the one handed to the server
// (PROXY header read, TLS handshake, WebSocket upgrade). It runs under the
// handshake deadline, which is cleared afterwards.
type preparer func(net.Conn) (net.Conn, error)

// serve accepts connections until the listener closes, backing off on
// temporary errors such as running out of file descriptors. Each
// connection is prepared on its own goroutine and handed to handle there.
func (b *base) serve(ln net.Listener, handle func(net.Conn), timeout time.Duration, prepare preparer) error {
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		if prepare == nil {
			go handle(conn)
			continue
		}
		go b.prepareAndHandle(conn, handle, timeout, prepare)
	}
}

func (b *base) prepareAndHandle(conn net.Conn, handle func(net.Conn), timeout time.Duration, prepare preparer) {
	if !b.track(conn) {
		return
	}
	conn.SetDeadline(time.Now().Add(timeout))
	c, err := prepare(conn)
	b.untrack(conn)
	if err != nil {
		conn.Close()
		return
	}
	c.SetDeadline(time.Time{})
	// A fresh goroutine serves the connection: this one's stack grew in the
	// handshake (TLS crypto) and would stay that size for the connection's
	// life, which for an idle client is most of its memory.
	go handle(c)
}

// proxyStep returns a preparer step that reads the PROXY header, or nil
// when p is nil.
func proxyStep(p *ProxyProtocol) (func(net.Conn) (net.Conn, error), error) {
	if p == nil {
		return nil, nil
	}
	trusted, err := p.prefixes()
	if err != nil {
		return nil, err
	}
	return func(c net.Conn) (net.Conn, error) {
		if len(trusted) > 0 && !trustedPeer(c.RemoteAddr(), trusted) {
			return nil, fmt.Errorf("listeners: %s is not a trusted PROXY sender", c.RemoteAddr())
		}
		pc := proxyproto.NewConn(c, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(0))
		if _, err := pc.Read(nil); err != nil { // reads and checks the header
			return nil, err
		}
		return &proxyConn{pc}, nil
	}, nil
}

func trustedPeer(a net.Addr, trusted []netip.Prefix) bool {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// proxyConn is a connection that began with a PROXY header; it keeps the
// half-close of the TCP connection underneath.
type proxyConn struct{ *proxyproto.Conn }

// CloseWrite shuts down the writing side of the TCP connection.
func (c *proxyConn) CloseWrite() error {
	if cw, ok := c.Raw().(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// chain runs the steps in order, skipping nil ones.
func chain(steps ...func(net.Conn) (net.Conn, error)) preparer {
	var live []func(net.Conn) (net.Conn, error)
	for _, s := range steps {
		if s != nil {
			live = append(live, s)
		}
	}
	if len(live) == 0 {
		return nil
	}
	return func(c net.Conn) (net.Conn, error) {
		var err error
		for _, s := range live {
			if c, err = s(c); err != nil {
				return nil, err
			}
		}
		return c, nil
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}
