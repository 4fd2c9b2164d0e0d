package tern

import (
	"bytes"
	"crypto/tls"
	"net"
	"reflect"
	"unsafe"
)

// A tls.Conn keeps, for the life of the connection, the read buffers its
// handshake grew: rawInput (the raw records, grown to the ClientHello's
// size and more) and hand (the handshake messages), about 3.5 KB with a
// Go client's ClientHello; its input reader keeps a slice of rawInput's
// array. For an idle connection that is half of what the connection
// holds. crypto/tls has no way to release them, so trimTLS does, through
// the fields' offsets found by name and type with reflect: when crypto/tls
// changes them, trimming turns itself off (and TestTrimTLSFields fails).
// It only replaces empty buffers with zero ones, which crypto/tls treats
// alike (it grows them again as it needs); only the reader calls it, after
// Read returned and before the connection parks, so nothing else uses the
// fields meanwhile (they are the read side's, under its lock, and Close,
// Write and ConnectionState do not touch them).
var tlsBufs = findTLSBufs()

// tlsBufOffsets are the offsets in tls.Conn of its read buffers.
type tlsBufOffsets struct {
	rawInput, input, hand uintptr
	ok                    bool
}

func findTLSBufs() tlsBufOffsets {
	t := reflect.TypeFor[tls.Conn]()
	field := func(name string, typ reflect.Type) (uintptr, bool) {
		f, ok := t.FieldByName(name)
		return f.Offset, ok && len(f.Index) == 1 && f.Type == typ
	}
	var o tlsBufOffsets
	var ok [3]bool
	o.rawInput, ok[0] = field("rawInput", reflect.TypeFor[bytes.Buffer]())
	o.input, ok[1] = field("input", reflect.TypeFor[bytes.Reader]())
	o.hand, ok[2] = field("hand", reflect.TypeFor[bytes.Buffer]())
	o.ok = ok == [3]bool{true, true, true}
	return o
}

// trimTLS releases the read buffers of nc's tls.Conn, if it is a TLS
// connection, those that are empty. The caller is the connection's reader,
// between two calls of Read.
func trimTLS(nc net.Conn) {
	if !tlsBufs.ok {
		return
	}
	var tc *tls.Conn
	switch c := nc.(type) {
	case *tls.Conn:
		tc = c
	case interface{ TLS() *tls.Conn }: // listeners.TLSConn
		tc = c.TLS()
	}
	if tc == nil {
		return
	}
	p := unsafe.Pointer(tc)
	input := (*bytes.Reader)(unsafe.Add(p, tlsBufs.input))
	if input.Len() != 0 {
		return // decrypted bytes not yet read: rawInput holds them
	}
	*input = bytes.Reader{}
	if raw := (*bytes.Buffer)(unsafe.Add(p, tlsBufs.rawInput)); raw.Len() == 0 {
		*raw = bytes.Buffer{}
	}
	if hand := (*bytes.Buffer)(unsafe.Add(p, tlsBufs.hand)); hand.Len() == 0 {
		*hand = bytes.Buffer{}
	}
}
