package listeners

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// TLSOptions configures the server side of TLS: the certificate, the
// protocol versions and cipher suites, and client certificates.
type TLSOptions struct {
	// CertFile and KeyFile are PEM files with the server's certificate
	// chain and private key. Required.
	CertFile, KeyFile string

	// ClientCAFile, when set, is a PEM file of the certificate authorities
	// that sign client certificates: every client must then present a
	// certificate that verifies against them (mutual TLS).
	ClientCAFile string

	// MinVersion is the lowest TLS version accepted: tls.VersionTLS12
	// (the default) or tls.VersionTLS13.
	MinVersion uint16

	// CipherSuites restricts the TLS 1.2 cipher suites (TLS 1.3 suites
	// are not configurable in Go). Nil: Go's secure defaults. Only suites
	// from tls.CipherSuites are accepted; see ParseCipherSuites.
	CipherSuites []uint16

	// IdentityAsUsername makes a connection's verified client certificate
	// name (its Common Name, or the first Subject Alternative Name when it
	// has none) its identity, which the auth hooks use as the user name, as
	// mosquitto's use_identity_as_username does. Requires ClientCAFile.
	IdentityAsUsername bool
}

// ServerTLS is a server TLS configuration whose certificate, key and client
// CA file can be re-read while the server runs (Reload). A TLS or secure
// WebSocket listener uses its Config; handshakes after a Reload see the new
// files.
type ServerTLS struct {
	opts  TLSOptions
	cfg   *tls.Config
	cert  atomic.Pointer[tls.Certificate]
	inner atomic.Pointer[tls.Config] // with the current client CA pool
}

// Errors of the TLS configuration.
var (
	ErrNoCertificate      = errors.New("listeners: TLS needs a certificate file and a key file")
	ErrIdentityNeedsCA    = errors.New("listeners: using the certificate identity as user name needs a client CA file")
	ErrInsecureTLSVersion = errors.New("listeners: TLS versions below 1.2 are not supported")
)

// NewServerTLS loads the files named in opts and returns the configuration.
func NewServerTLS(opts TLSOptions) (*ServerTLS, error) {
	if opts.CertFile == "" || opts.KeyFile == "" {
		return nil, ErrNoCertificate
	}
	if opts.IdentityAsUsername && opts.ClientCAFile == "" {
		return nil, ErrIdentityNeedsCA
	}
	if opts.MinVersion == 0 {
		opts.MinVersion = tls.VersionTLS12
	}
	if opts.MinVersion < tls.VersionTLS12 || opts.MinVersion > tls.VersionTLS13 {
		return nil, ErrInsecureTLSVersion
	}
	for _, id := range opts.CipherSuites {
		if !secureSuite(id) {
			return nil, fmt.Errorf("listeners: cipher suite %s is not allowed", tls.CipherSuiteName(id))
		}
	}
	opts.CipherSuites = append([]uint16(nil), opts.CipherSuites...)
	s := &ServerTLS{opts: opts}
	s.cfg = s.base()
	if opts.ClientCAFile != "" {
		s.cfg.ClientAuth = tls.RequireAndVerifyClientCert
		s.cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.inner.Load(), nil }
	}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// base returns a tls.Config with the options and the certificate callback.
func (s *ServerTLS) base() *tls.Config {
	return &tls.Config{
		MinVersion:   s.opts.MinVersion,
		CipherSuites: s.opts.CipherSuites,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		},
	}
}

// Reload re-reads the certificate, key and client CA files. On an error
// the configuration in force stays and the error is returned.
func (s *ServerTLS) Reload() error {
	cert, err := tls.LoadX509KeyPair(s.opts.CertFile, s.opts.KeyFile)
	if err != nil {
		return fmt.Errorf("listeners: loading TLS certificate: %w", err)
	}
	var inner *tls.Config
	if s.opts.ClientCAFile != "" {
		pem, err := os.ReadFile(s.opts.ClientCAFile)
		if err != nil {
			return fmt.Errorf("listeners: reading client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("listeners: no certificate in client CA file %s", s.opts.ClientCAFile)
		}
		inner = s.base()
		inner.ClientAuth = tls.RequireAndVerifyClientCert
		inner.ClientCAs = pool
	}
	s.cert.Store(&cert)
	if inner != nil {
		s.inner.Store(inner)
	}
	return nil
}

// Certificate returns the server certificate (the leaf of the chain) the
// last load read, for its validity dates.
func (s *ServerTLS) Certificate() *x509.Certificate {
	c := s.cert.Load()
	if c == nil {
		return nil
	}
	if c.Leaf != nil {
		return c.Leaf
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}

// CertFile returns the certificate file's name.
func (s *ServerTLS) CertFile() string { return s.opts.CertFile }

// Config returns the tls.Config to serve with. It stays the same across
// reloads; its callbacks return what the last Reload loaded. Do not
// modify it.
func (s *ServerTLS) Config() *tls.Config { return s.cfg }

// IdentityAsUsername reports whether connections should use the client
// certificate's name as their identity.
func (s *ServerTLS) IdentityAsUsername() bool { return s.opts.IdentityAsUsername }

// ParseTLSVersion parses "1.2" or "1.3" (also "TLS1.2", "tls13", ...).
func ParseTLSVersion(v string) (uint16, error) {
	n := strings.NewReplacer("tls", "", "v", "", ".", "", "_", "").Replace(strings.ToLower(v))
	switch n {
	case "12":
		return tls.VersionTLS12, nil
	case "13":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("listeners: TLS version %q is not 1.2 or 1.3", v)
}

// ParseCipherSuites parses cipher suite names as Go and IANA spell them
// ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"). Only secure suites are
// accepted.
func ParseCipherSuites(names []string) ([]uint16, error) {
	var ids []uint16
	for _, name := range names {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		found := false
		for _, cs := range tls.CipherSuites() {
			if cs.Name == name {
				ids = append(ids, cs.ID)
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("listeners: unknown or insecure cipher suite %q", name)
		}
	}
	return ids, nil
}

func secureSuite(id uint16) bool {
	for _, cs := range tls.CipherSuites() {
		if cs.ID == id {
			return true
		}
	}
	return false
}

// Identity is implemented by the connections of TLS and secure WebSocket
// listeners. Hooks reach it through the client's Conn method.
type Identity interface {
	// Identity returns the name of the verified client certificate (its
	// Common Name, or first Subject Alternative Name) when the listener
	// uses it as the user name, and "" otherwise.
	Identity() string
	// PeerCertificates returns the certificates the client presented,
	// leaf first; nil when it presented none.
	PeerCertificates() []*x509.Certificate
}

// TLSConn is a server-side TLS connection whose handshake is complete, as
// a TLS listener hands it over.
type TLSConn struct {
	*tls.Conn
	identity string
}

// Identity implements [Identity].
func (c *TLSConn) Identity() string { return c.identity }

// TLS returns the TLS connection, for code that holds c as a net.Conn.
func (c *TLSConn) TLS() *tls.Conn { return c.Conn }

// PeerCertificates implements [Identity].
func (c *TLSConn) PeerCertificates() []*x509.Certificate {
	return c.ConnectionState().PeerCertificates
}

var _ Identity = (*TLSConn)(nil)

// certName returns the Common Name of a certificate, or its first Subject
// Alternative Name when it has none.
func certName(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case len(c.EmailAddresses) > 0:
		return c.EmailAddresses[0]
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	}
	return ""
}

// tlsStep returns a preparer step doing the server handshake, or nil when
// cfg is nil. With identity set, the verified certificate's name becomes
// the connection's identity and a certificate without one is refused.
func tlsStep(cfg *tls.Config, identity bool, wrap func(net.Conn) net.Conn) func(net.Conn) (net.Conn, error) {
	if cfg == nil {
		return nil
	}
	return func(c net.Conn) (net.Conn, error) {
		if tcp, ok := c.(*net.TCPConn); ok && wrap != nil {
			c = wrap(tcp) // its deadline (the handshake's) is tcp's
		}
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		out := &TLSConn{Conn: tc}
		if identity {
			cs := tc.ConnectionState()
			if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
				return nil, errors.New("listeners: no verified client certificate")
			}
			if out.identity = certName(cs.PeerCertificates[0]); out.identity == "" {
				return nil, errors.New("listeners: client certificate has no name")
			}
		}
		return out, nil
	}
}

// TLS is a TLS listener (MQTT over TLS, port 8883 by convention). The
// handshake happens under HandshakeTimeout before the connection is
// handed over, as a *TLSConn.
type TLS struct {
	base
	st *ServerTLS

	// Proxy, when set before Serve, requires a PROXY protocol header
	// (before the TLS handshake) on every connection.
	Proxy *ProxyProtocol

	// HandshakeTimeout bounds the PROXY header and the TLS handshake;
	// default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	wrap func(net.Conn) net.Conn // WrapRawConns
}

// WrapRawConns implements tern.RawConnWrapper: each accepted TCP socket
// (not one behind a PROXY header) is wrapped with wrap before the TLS
// handshake. Call it before Serve.
func (l *TLS) WrapRawConns(wrap func(net.Conn) net.Conn) { l.wrap = wrap }

// NewTLS returns a TLS listener named id on address ("0.0.0.0:8883").
func NewTLS(id, address string, st *ServerTLS) *TLS {
	return &TLS{base: base{id: id, network: "tcp", address: address}, st: st}
}

// Listen opens the socket now, so that Addr reports the bound address
// (useful with port 0). Serve calls it when needed.
func (l *TLS) Listen() error {
	return l.open(func() (net.Listener, error) { return net.Listen("tcp", l.address) })
}

// Addr implements tern.Listener.
func (l *TLS) Addr() net.Addr { return l.addr() }

// Serve implements tern.Listener.
func (l *TLS) Serve(handle func(net.Conn)) error {
	if l.st == nil {
		return ErrNoCertificate
	}
	proxy, err := proxyStep(l.Proxy)
	if err != nil {
		return err
	}
	if err := l.Listen(); err != nil {
		return err
	}
	return l.serve(l.listener(), handle, l.HandshakeTimeout,
		chain(proxy, tlsStep(l.st.Config(), l.st.IdentityAsUsername(), l.wrap)))
}

// Reload re-reads the certificate, key and client CA files; see
// [ServerTLS.Reload].
func (l *TLS) Reload() error { return l.st.Reload() }

// Close implements tern.Listener: it stops accepting and closes the
// connections still in their handshake.
func (l *TLS) Close() error { return l.close() }
