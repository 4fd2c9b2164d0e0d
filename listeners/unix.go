package listeners

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"
)

// Unix is a Unix domain socket listener, for clients on the same host.
// Starting it removes a stale socket file left by a server that did not
// stop cleanly; it refuses to start when another server answers on the
// socket or when the path is not a socket.
type Unix struct {
	base

	// Mode, when not zero, is applied to the socket file once it is
	// created (e.g. 0660 to let a group connect). Set it before Listen.
	Mode fs.FileMode
}

// NewUnix returns a Unix socket listener named id at path.
func NewUnix(id, path string) *Unix {
	return &Unix{base: base{id: id, network: "unix", address: path}}
}

// Listen creates the socket now. Serve calls it when needed.
func (l *Unix) Listen() error {
	return l.open(func() (net.Listener, error) {
		if err := removeStaleSocket(l.address); err != nil {
			return nil, err
		}
		ln, err := net.Listen("unix", l.address)
		if err != nil {
			return nil, err
		}
		if l.Mode != 0 {
			if err := os.Chmod(l.address, l.Mode); err != nil {
				ln.Close()
				return nil, err
			}
		}
		return ln, nil
	})
}

// removeStaleSocket removes path if it is a socket nobody listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listeners: %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("listeners: another server is listening on %s", path)
	}
	return os.Remove(path)
}

// Addr implements tern.Listener.
func (l *Unix) Addr() net.Addr { return l.addr() }

// Serve implements tern.Listener.
func (l *Unix) Serve(handle func(net.Conn)) error {
	if err := l.Listen(); err != nil {
		return err
	}
	return l.serve(l.listener(), handle, 0, unixStep)
}

// unixStep gives connections from unnamed sockets a printable address.
func unixStep(c net.Conn) (net.Conn, error) {
	if a := c.RemoteAddr(); a == nil || a.String() == "" || a.String() == "@" {
		return &unixConn{c.(*net.UnixConn)}, nil
	}
	return c, nil
}

// unixConn is a Unix socket connection whose peer has no address: the
// remote address reads "unix".
type unixConn struct{ *net.UnixConn }

// RemoteAddr implements net.Conn.
func (c *unixConn) RemoteAddr() net.Addr { return &net.UnixAddr{Name: "unix", Net: "unix"} }

// Close implements tern.Listener: it stops accepting and removes the
// socket file.
func (l *Unix) Close() error { return l.close() }
