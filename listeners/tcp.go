package listeners

import (
	"errors"
	"net"
	"sync"
	"time"
)

// TCP is a plain TCP listener.
type TCP struct {
	id      string
	address string

	mu sync.Mutex
	ln net.Listener
}

// NewTCP returns a TCP listener named id on address ("127.0.0.1:1883").
func NewTCP(id, address string) *TCP { return &TCP{id: id, address: address} }

// NewTCPFromListener wraps an existing net.Listener, such as one on port 0
// in tests.
func NewTCPFromListener(id string, ln net.Listener) *TCP {
	return &TCP{id: id, address: ln.Addr().String(), ln: ln}
}

// ID implements tern.Listener.
func (l *TCP) ID() string { return l.id }

// Listen opens the socket now, so that Addr reports the bound address
// (useful with port 0). Serve calls it when needed.
func (l *TCP) Listen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", l.address)
	if err != nil {
		return err
	}
	l.ln = ln
	return nil
}

// Addr implements tern.Listener.
func (l *TCP) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr()
	}
	a, err := net.ResolveTCPAddr("tcp", l.address)
	if err != nil {
		return &net.TCPAddr{}
	}
	return a
}

// Serve implements tern.Listener.
func (l *TCP) Serve(handle func(net.Conn)) error {
	if err := l.Listen(); err != nil {
		return err
	}
	l.mu.Lock()
	ln := l.ln
	l.mu.Unlock()
	return serve(ln, handle)
}

// Close implements tern.Listener.
func (l *TCP) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln == nil {
		return nil
	}
	return l.ln.Close()
}

// serve accepts connections until the listener closes, backing off on
// temporary errors such as running out of file descriptors.
func serve(ln net.Listener, handle func(net.Conn)) error {
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
		go handle(conn)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}
