package listeners

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gobwas/ws"
)

// DefaultWebSocketPath is the path WebSocket clients connect to unless
// WebSocket.Path says otherwise.
const DefaultWebSocketPath = "/mqtt"

// maxRequestHead bounds the HTTP upgrade request's line and headers.
const maxRequestHead = 16 << 10

// errRequestTooLarge is returned for an upgrade request over maxRequestHead.
var errRequestTooLarge = errors.New("listeners: WebSocket upgrade request too large")

// WebSocket is an MQTT over WebSocket listener (ports 8083, and 8084 for
// secure WebSocket, by convention). It upgrades HTTP requests for Path
// that offer the "mqtt" subprotocol (or "mqttv3.1", or none) and hands
// over each connection as a byte stream of its binary frames. With
// TLSConfig set it serves secure WebSocket (wss).
//
// Set the exported fields before Serve.
type WebSocket struct {
	base

	// Path is the request path clients connect to; default "/mqtt". Other
	// paths get 404 Not Found.
	Path string

	// TLSConfig, when set, makes this a secure WebSocket listener; use
	// [ServerTLS.Config] for certificate reloading.
	TLSConfig *tls.Config

	// IdentityAsUsername makes the verified client certificate's name the
	// connection's identity (see [TLSOptions.IdentityAsUsername]).
	IdentityAsUsername bool

	// Proxy, when set, requires a PROXY protocol header on every
	// connection.
	Proxy *ProxyProtocol

	// HandshakeTimeout bounds the PROXY header, the TLS handshake and the
	// HTTP upgrade; default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
}

// NewWebSocket returns a WebSocket listener named id on address
// ("0.0.0.0:8083").
func NewWebSocket(id, address string) *WebSocket {
	return &WebSocket{base: base{id: id, network: "tcp", address: address}}
}

// Listen opens the socket now, so that Addr reports the bound address
// (useful with port 0). Serve calls it when needed.
func (l *WebSocket) Listen() error {
	return l.open(func() (net.Listener, error) { return net.Listen("tcp", l.address) })
}

// Addr implements tern.Listener.
func (l *WebSocket) Addr() net.Addr { return l.addr() }

// Serve implements tern.Listener.
func (l *WebSocket) Serve(handle func(net.Conn)) error {
	proxy, err := proxyStep(l.Proxy)
	if err != nil {
		return err
	}
	if err := l.Listen(); err != nil {
		return err
	}
	path := l.Path
	if path == "" {
		path = DefaultWebSocketPath
	}
	upgrade := func(c net.Conn) (net.Conn, error) { return upgradeWebSocket(c, path) }
	return l.serve(l.listener(), handle, l.HandshakeTimeout,
		chain(proxy, tlsStep(l.TLSConfig, l.IdentityAsUsername, nil), upgrade))
}

// Close implements tern.Listener: it stops accepting and closes the
// connections still in their handshake.
func (l *WebSocket) Close() error { return l.close() }

// upgradeWebSocket answers the HTTP upgrade request on c. The request head
// is read through the connection's own small buffer so that nothing the
// client sends after it is lost.
func upgradeWebSocket(c net.Conn, path string) (net.Conn, error) {
	br := bufio.NewReaderSize(c, wsReadBufferSize)
	head, err := readRequestHead(br)
	if err != nil {
		if err == errRequestTooLarge {
			io.WriteString(c, "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n")
		}
		return nil, err
	}
	u := ws.Upgrader{
		Protocol: func(p []byte) bool {
			return string(p) == "mqtt" || string(p) == "mqttv3.1"
		},
		OnRequest: func(uri []byte) error {
			p, _, _ := strings.Cut(string(uri), "?")
			if p != path {
				return ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound), ws.RejectionReason("no MQTT endpoint at this path"))
			}
			return nil
		},
	}
	rw := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(head), c}
	if _, err := u.Upgrade(rw); err != nil {
		return nil, err
	}
	return newWSConn(c, br, false), nil
}

// readRequestHead reads an HTTP request's line and headers, through the
// blank line that ends them.
func readRequestHead(br *bufio.Reader) ([]byte, error) {
	var head []byte
	lineStart := 0
	for {
		b, err := br.ReadSlice('\n')
		head = append(head, b...)
		if len(head) > maxRequestHead {
			return nil, errRequestTooLarge
		}
		switch err {
		case nil:
			line := head[lineStart:]
			if len(line) <= 2 && strings.TrimRight(string(line), "\r\n") == "" {
				return head, nil
			}
			lineStart = len(head)
		case bufio.ErrBufferFull:
			// A long line: keep reading it.
		default:
			return nil, err
		}
	}
}
