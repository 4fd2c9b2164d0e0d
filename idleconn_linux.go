package tern

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// idleConn is a plain TCP connection that lets go of its net.Conn while
// parked. A net.TCPConn costs a few hundred bytes of heap (the netFD, its
// addresses) and a runtime poll descriptor with its two timers; for an
// idle connection, parked in the idle poller for minutes or hours, that is
// most of what it holds. While parked, idleConn keeps only a duplicate of
// the socket's descriptor (detach); whoever takes the reading side back
// makes a new net.TCPConn of it (revive) before using the connection.
//
// Its net.Conn methods may be called from any goroutine. Read and Write
// are for the reader and the writer, who revive the connection first;
// while it is detached Read fails with net.ErrClosed, and Write goes
// straight to the socket (for a tls.Conn above, see writeThrough). The
// deadlines of a detached connection are not kept: the reader and the
// writer set theirs again after a revive.
type idleConn struct {
	tc atomic.Pointer[net.TCPConn] // the live connection; nil while detached

	mu     sync.Mutex // detach, revive and Close; the fields below
	raw    int32      // while detached: the duplicate descriptor; -1 otherwise
	closed bool

	remote netip.AddrPort // the peer's address, kept while detached
}

// newIdleConn wraps tc, or returns nil when its remote address is not a
// TCP one.
func newIdleConn(tc *net.TCPConn) *idleConn {
	ra, ok := tc.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return nil
	}
	ap := ra.AddrPort()
	ic := &idleConn{raw: -1, remote: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
	ic.tc.Store(tc)
	return ic
}

// fd returns the descriptor of the live connection, or -1.
func (ic *idleConn) fd() int {
	tc := ic.tc.Load()
	if tc == nil {
		return -1
	}
	return parkFD(tc)
}

// detach closes the net.TCPConn after duplicating its descriptor, and
// returns the duplicate, which the caller registers with the poller. The
// caller owns the reading side, and no writer may be running.
func (ic *idleConn) detach() (int, error) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	tc := ic.tc.Load()
	if ic.closed || tc == nil {
		return -1, net.ErrClosed
	}
	sc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	raw := -1
	cerr := sc.Control(func(fd uintptr) {
		raw, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil || err != nil {
		if raw >= 0 {
			unix.Close(raw)
		}
		return -1, errors.Join(cerr, err)
	}
	ic.tc.Store(nil)
	ic.raw = int32(raw)
	tc.Close() // the socket stays open through raw: only the descriptor goes
	return raw, nil
}

// revive makes a live connection of a detached one again and returns its
// descriptor (the duplicate given by detach is closed). The caller owns the
// reading side and must have taken the duplicate out of the poller's
// epoll set. On a live connection it returns the descriptor; on a closed
// one, net.ErrClosed.
func (ic *idleConn) revive() (int, error) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.closed {
		return -1, net.ErrClosed
	}
	if tc := ic.tc.Load(); tc != nil {
		return parkFD(tc), nil
	}
	f := os.NewFile(uintptr(ic.raw), "")
	nc, err := net.FileConn(f) // a duplicate of raw, with a net.TCPConn around it
	f.Close()                  // closes raw
	ic.raw = -1
	if err != nil {
		ic.closed = true
		return -1, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		ic.closed = true
		return -1, net.ErrClosed
	}
	ic.tc.Store(tc)
	return parkFD(tc), nil
}

// live reports whether the connection has its net.TCPConn.
func (ic *idleConn) live() bool { return ic.tc.Load() != nil }

// isClosed reports whether Close was called.
func (ic *idleConn) isClosed() bool {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	return ic.closed
}

// Read implements net.Conn.
func (ic *idleConn) Read(b []byte) (int, error) {
	if tc := ic.tc.Load(); tc != nil {
		return tc.Read(b)
	}
	return 0, net.ErrClosed
}

// Write implements net.Conn. A detached connection is written to only
// through a tls.Conn above it (writeThrough).
func (ic *idleConn) Write(b []byte) (int, error) {
	if tc := ic.tc.Load(); tc != nil {
		return tc.Write(b)
	}
	return ic.writeThrough(b)
}

// writeDetached writes to a detached connection what its socket takes at
// once, without reviving it: a delivery to an idle client costs a write
// system call, not a new net.TCPConn. It returns 0 and no error when the
// connection is live, and fewer bytes than len(b) and no error when the
// socket is full: then the writer revives the connection (ensureLive) and
// writes the rest through it, under its write deadline.
func (ic *idleConn) writeDetached(b []byte) (int, error) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.tc.Load() != nil {
		return 0, nil
	}
	if ic.closed || ic.raw < 0 {
		return 0, net.ErrClosed
	}
	n := 0
	for n < len(b) {
		m, err := unix.Write(int(ic.raw), b[n:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return n, nil
		case err != nil:
			return n, &net.OpError{Op: "write", Net: "tcp", Addr: ic.RemoteAddr(), Err: os.NewSyscallError("write", err)}
		}
		n += m
	}
	return n, nil
}

// Close implements net.Conn: it closes the connection, live or detached.
func (ic *idleConn) Close() error {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.closed {
		return net.ErrClosed
	}
	ic.closed = true
	if tc := ic.tc.Load(); tc != nil {
		return tc.Close()
	}
	if ic.raw >= 0 {
		err := unix.Close(int(ic.raw))
		ic.raw = -1
		return err
	}
	return nil
}

// CloseWrite shuts down the writing side of the connection.
func (ic *idleConn) CloseWrite() error {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if tc := ic.tc.Load(); tc != nil {
		return tc.CloseWrite()
	}
	if ic.raw >= 0 {
		return unix.Shutdown(int(ic.raw), unix.SHUT_WR)
	}
	return net.ErrClosed
}

// setLingerZero makes the close a reset (see abortConn).
func (ic *idleConn) setLingerZero() {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if tc := ic.tc.Load(); tc != nil {
		tc.SetLinger(0)
	} else if ic.raw >= 0 {
		unix.SetsockoptLinger(int(ic.raw), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1})
	}
}

// LocalAddr implements net.Conn.
func (ic *idleConn) LocalAddr() net.Addr {
	if tc := ic.tc.Load(); tc != nil {
		if a := tc.LocalAddr(); a != nil {
			return a
		}
	}
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.raw >= 0 {
		if sa, err := unix.Getsockname(int(ic.raw)); err == nil {
			switch sa := sa.(type) {
			case *unix.SockaddrInet4:
				return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
			case *unix.SockaddrInet6:
				return &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
			}
		}
	}
	return &net.TCPAddr{}
}

// RemoteAddr implements net.Conn: the peer's address, live or detached.
func (ic *idleConn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(ic.remote) }

// SetDeadline implements net.Conn; see the type's comment.
func (ic *idleConn) SetDeadline(t time.Time) error {
	if tc := ic.tc.Load(); tc != nil {
		return tc.SetDeadline(t)
	}
	return nil
}

// SetReadDeadline implements net.Conn; see the type's comment.
func (ic *idleConn) SetReadDeadline(t time.Time) error {
	if tc := ic.tc.Load(); tc != nil {
		return tc.SetReadDeadline(t)
	}
	return nil
}

// SetWriteDeadline implements net.Conn; see the type's comment.
func (ic *idleConn) SetWriteDeadline(t time.Time) error {
	if tc := ic.tc.Load(); tc != nil {
		return tc.SetWriteDeadline(t)
	}
	return nil
}
