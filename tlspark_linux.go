package tern

import (
	"crypto/tls"
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// A TLS connection parks as a plain TCP one does, with its socket let go
// (idleConn): the TLS listener puts an idleConn beneath tls.Server (see
// RawConnWrapper), and the reader parks a TLS connection on the same
// condition as a plain one: its read timed out with nothing left in its
// own buffer.
//
// That condition is enough because of how crypto/tls reads (conn.go, as
// of Go 1.26; the tests in tlspark_linux_test.go park in the middle of a
// record and between records): tls.Conn.Read returns an error only when
// its decrypted input is empty (it reads a record only then, and a failed
// read leaves the input reset), and it reads from the socket only when its
// raw input holds less than the record it is decoding (readFromUntil),
// processing every record it completes before the next read. So when Read
// returns (0, timeout) crypto/tls holds no plaintext and no complete
// record: at most the start of one record, or of a handshake message split
// over records, which only more bytes from the socket can complete. A
// deadline error is a temporary net.Error, which crypto/tls does not keep:
// the next Read goes on from where the timed out one stopped. Parking never
// happens inside crypto/tls: the reader parks after Read has returned.
//
// While parked, the tls.Conn keeps its state (keys, sequence numbers,
// the peer's certificates for listeners.Identity) with an idleConn
// holding only a duplicate descriptor beneath it. crypto/tls keeps a failed
// write's error for good, so a write through a parked tls.Conn must not
// fail: the writer lets it through to the descriptor (writeThrough) only
// when the socket's send queue is empty and the bytes are few, which the
// kernel takes at once; otherwise it revives the connection first
// (ensureLiveTLS). The poller never writes to a TLS connection (answerPing
// leaves anything but a plain PINGREQ to the reader, and a TLS record is
// never one).

// tlsOverIdle is a server-side TLS connection (a *tls.Conn, or a
// listeners.TLSConn embedding one).
type tlsOverIdle interface {
	NetConn() net.Conn
	ConnectionState() tls.ConnectionState
}

// idleOf returns the idleConn of a connection: nc itself, or the one
// beneath a TLS connection; nil when there is none.
func idleOf(nc net.Conn) *idleConn {
	switch c := nc.(type) {
	case *idleConn:
		return c
	case tlsOverIdle:
		ic, _ := c.NetConn().(*idleConn)
		return ic
	}
	return nil
}

// tlsParkFD returns the descriptor of a TLS connection over an idleConn,
// or -1.
func tlsParkFD(nc net.Conn) int {
	if tc, ok := nc.(tlsOverIdle); ok {
		if ic, ok := tc.NetConn().(*idleConn); ok {
			return ic.fd()
		}
	}
	return -1
}

// throughMax is the most the writer writes through the descriptor of a
// parked TLS connection without reviving it: with an empty send queue, the
// kernel takes that much at once (its send buffer is 16 KB at first, and
// tcp_wmem's minimum 4 KB only under memory pressure).
const throughMax = 2 << 10

// tlsAlertSize is the size of an encrypted TLS alert record, at most.
const tlsAlertSize = 64

// ensureLiveTLS is called by the writer before it writes n bytes through
// the tls.Conn of a TLS connection: when the connection is parked and
// detached, and the bytes may not go through its descriptor (throughMax,
// an empty send queue), it is revived first (ensureLive). Whether it
// stays detached or not, nobody else revives it, nor writes to it, before
// the write: the writer is running (no detach), and while it is detached,
// only the writer writes (or Close, a close_notify of tlsAlertSize), so
// the send queue does not grow past what the socket takes.
func (c *Client) ensureLiveTLS(n int) {
	if _, ok := c.conn.(tlsOverIdle); !ok {
		return
	}
	ic := idleOf(c.conn)
	if ic == nil || ic.live() || n <= throughMax && ic.sendQueueEmpty() {
		return
	}
	c.ensureLive()
}

// sendQueueEmpty reports whether the detached connection's socket has
// nothing waiting to be sent or acknowledged.
func (ic *idleConn) sendQueueEmpty() bool {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.closed || ic.raw < 0 {
		return false
	}
	q, err := unix.IoctlGetInt(int(ic.raw), unix.SIOCOUTQ)
	return err == nil && q == 0
}

// errThroughShort is the error of a write through a detached TLS
// connection's descriptor that the socket did not take whole (see
// ensureLiveTLS: it should not happen); crypto/tls then fails the
// connection.
var errThroughShort = errors.New("tern: the socket of a parked TLS connection did not take a write whole")

// writeThrough writes b, for the tls.Conn above, to the socket of a
// detached connection, or to the connection if it was revived meanwhile:
// all of it, or it fails.
func (ic *idleConn) writeThrough(b []byte) (int, error) {
	n, err := ic.writeDetached(b)
	switch {
	case err != nil || n == len(b):
		return n, err
	case n == 0 && ic.live(): // revived by its reader meanwhile
		return ic.Write(b)
	}
	return n, &net.OpError{Op: "write", Net: "tcp", Addr: ic.RemoteAddr(), Err: errThroughShort}
}
