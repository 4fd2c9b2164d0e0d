package tern

import (
	"crypto/tls"
	"net"
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
// holding only a duplicate descriptor beneath it. Nothing may write through
// it then: a write would fail with net.ErrClosed, which crypto/tls keeps
// as the connection's write error. So the writer revives a parked TLS
// connection before writing (ensureLive), and a detached connection is
// never written to by the poller (answerPing leaves anything but a
// plain PINGREQ to the reader, and a TLS record is never one).

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

// ensureLiveTLS revives a parked TLS connection before something is
// written through its tls.Conn (see ensureLive).
func (c *Client) ensureLiveTLS() {
	if _, ok := c.conn.(tlsOverIdle); ok {
		c.ensureLive()
	}
}
