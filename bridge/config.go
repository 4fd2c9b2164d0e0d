package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
)

// Config configures one bridge. Zero fields take the defaults documented on
// each; Name, Addresses and Topics are required.
type Config struct {
	// Name identifies the bridge: in logs, metrics, the admin API, the
	// client identifier of its local session ("$bridge/" + Name) and the
	// default remote client identifier. Letters, digits, "-", "_" and ".".
	Name string

	// Addresses are the remote broker's addresses, tried as Failover says:
	// "tcp://host:port", "tls://host:port", "ws://host:port/path",
	// "wss://host:port/path", or Mosquitto's "host[:port]" (port 1883, or
	// 8883 and TLS when TLS or TLSFiles is set).
	Addresses []string
	// Failover is how the addresses are used: FailoverPrimary (the
	// default: the first is the primary, the others are tried in turn when
	// it fails, and the bridge goes back to it once it answers again) or
	// FailoverRoundRobin (each failure moves on to the next address).
	Failover Failover

	// ProtocolVersion towards the remote: 5 (the default), 4 (3.1.1) or 3
	// (3.1).
	ProtocolVersion byte
	// ClientID on the remote. Default: "<host name>.<Name>", as Mosquitto.
	ClientID string
	// Username and Password on the remote.
	Username string
	Password string
	// CleanStart asks the remote for a new session at each connection.
	// Default false: the remote keeps the bridge's subscriptions and
	// queues what it publishes while the bridge is away.
	CleanStart bool
	// SessionExpiry is the session expiry interval asked of a v5 remote.
	// Default 7 days; 3.1.1 remotes keep a clean session 0 session as long
	// as they keep sessions.
	SessionExpiry time.Duration
	// KeepAlive towards the remote. Default 60 s.
	KeepAlive time.Duration
	// ConnectTimeout bounds dialing, TLS and the CONNACK. Default 10 s.
	ConnectTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the delay between connection
	// attempts, which grows with decorrelated jitter from ReconnectMin to
	// ReconnectMax (Mosquitto's restart_timeout base cap). Defaults 1 s and
	// 60 s. On a secondary address the primary is also tried every
	// ReconnectMax.
	ReconnectMin, ReconnectMax time.Duration
	// TryPrivate (3.1 and 3.1.1 only) sets the bridge bit in the protocol
	// level, so that a Mosquitto, EMQX or Tern remote treats the bridge as
	// one: no echo of what it publishes, retained flags kept. Default true.
	TryPrivate *bool

	// MaxInflight caps the QoS 1 and 2 messages sent each way and not yet
	// acknowledged (also capped by the remote's Receive Maximum). A message
	// in flight to the remote when the link fails is sent again: it is the
	// most a link failure can duplicate. Default 100.
	MaxInflight int

	// Queue bounds the messages waiting for the remote: the bridge's
	// session in the local broker.
	Queue Queue

	// OutgoingRetain keeps the RETAIN flag of forwarded messages (Mosquitto's
	// bridge_outgoing_retain). Default true.
	OutgoingRetain *bool
	// AttemptUnsubscribe (Mosquitto's bridge_attempt_unsubscribe) sends
	// the remote, at each connection, an UNSUBSCRIBE for the remote
	// filters of out-only rules, so that a rule changed from in to out
	// stops bringing messages from a session that kept the subscription;
	// after a reload it also unsubscribes filters no rule has any more.
	// Default true.
	AttemptUnsubscribe *bool
	// MaxPacketSize caps the packets sent to the remote; a v5 remote's own
	// Maximum Packet Size also applies. Larger messages are dropped and
	// counted (packet_too_large). Default 0: no cap of its own.
	MaxPacketSize int

	// Notifications publishes the bridge's state, retained "1" (connected)
	// or "0", on NotificationTopic locally and, unless
	// NotificationsLocalOnly, on the remote (where "0" is the bridge's
	// will). Default true. NotificationTopic defaults to
	// "$SYS/broker/connection/<ClientID>/state", as Mosquitto's.
	Notifications          *bool
	NotificationsLocalOnly bool
	NotificationTopic      string

	// MaxHops is the loop guard for meshes: a message that has already
	// crossed MaxHops bridges (its "tern-via" user properties) is not
	// forwarded again, nor one that has been on the broker it would go
	// to. Default 8; 1 forwards only messages published on this side.
	MaxHops int

	// TLS is the TLS configuration for tls:// and wss:// addresses (nil:
	// the system's roots). TLSFiles, when set instead, is read at every
	// connection attempt, so renewed certificates are used from the next
	// connection on.
	TLS      *tls.Config
	TLSFiles *TLSFiles

	// LocalUsername and LocalPassword, when set, are given by the bridge's
	// local session to the local broker's authenticators and ACL
	// (Mosquitto's local_username). Without them the local side is trusted
	// (see package hooks/auth).
	LocalUsername string
	LocalPassword string

	// Topics are the rules saying what is forwarded which way.
	Topics []Topic
}

// Failover says how a bridge uses several addresses.
type Failover string

// Failover modes.
const (
	FailoverPrimary    Failover = "primary"
	FailoverRoundRobin Failover = "round_robin"
)

// Queue bounds a bridge's outbound queue: the messages waiting for the
// remote in the bridge's session in the local broker.
type Queue struct {
	// MaxMessages and MaxBytes (topic and payload bytes) cap the queue.
	// Defaults 1,000,000 and 1 GiB; negative: no limit. The broker-wide
	// max_message_memory also applies.
	MaxMessages int
	MaxBytes    int
	// Overflow says what a full queue drops: tern.DropNew (the default)
	// or tern.DropOldest. Drops are counted (queue_full).
	Overflow tern.QueueFullPolicy
	// Expiry is how long the queue (the local session) lives while the
	// bridge is removed from the configuration or the broker runs without
	// it. Default 7 days.
	Expiry time.Duration
}

// TLSFiles are TLS settings read from files at each connection attempt.
type TLSFiles struct {
	CAFile             string   // PEM CA certificates to verify the remote with; empty: the system's
	CertFile           string   // PEM client certificate, for mutual TLS
	KeyFile            string   // its private key
	ServerName         string   // expected name in the remote's certificate; default: the address's host
	InsecureSkipVerify bool     // check the chain but not the name (Mosquitto's bridge_insecure)
	ALPN               []string // application protocols to offer
	MinVersion         uint16   // tls.VersionTLS12 (the default) or tls.VersionTLS13
}

// Load builds the TLS configuration the files describe.
func (f *TLSFiles) Load() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: f.ServerName, NextProtos: f.ALPN, MinVersion: max(f.MinVersion, tls.VersionTLS12)}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("bridge: ca_file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("bridge: ca_file %s: no PEM certificate in it", f.CAFile)
		}
	}
	if f.CertFile != "" || f.KeyFile != "" {
		c, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("bridge: cert_file, key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	if f.InsecureSkipVerify {
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	}
	return cfg, nil
}

// Defaults.
const (
	DefaultMaxInflight    = 100
	DefaultMaxHops        = 8
	DefaultQueueMessages  = 1_000_000
	DefaultQueueBytes     = 1 << 30
	DefaultQueueExpiry    = 7 * 24 * time.Hour
	DefaultSessionExpiry  = 7 * 24 * time.Hour
	DefaultKeepAlive      = 60 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultReconnectMin   = time.Second
	DefaultReconnectMax   = 60 * time.Second
)

// ViaProperty is the user property, one per broker, listing the brokers a
// forwarded message has been on (their node ids, oldest first).
const ViaProperty = "tern-via"

// LocalClientID returns the client identifier of a bridge's session in
// the local broker.
func LocalClientID(name string) string { return "$bridge/" + name }

// settings is a Config with its defaults applied and its rules compiled.
type settings struct {
	Config
	rules          rules
	addrs          []address
	tryPrivate     bool
	outgoingRetain bool
	notifications  bool
	unsubscribe    bool
	localID        string
}

// address is one parsed remote address.
type address struct {
	raw    string
	scheme string // tcp, tls, ws, wss
	host   string // host:port
	url    string // ws and wss: the URL to dial
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

// Validate checks the configuration and reports every problem found.
func (c *Config) Validate() error {
	_, err := c.settings()
	return err
}

func (c *Config) settings() (*settings, error) {
	s := &settings{Config: *c}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if !validName(c.Name) {
		fail("name %q: use letters, digits, '-', '_' and '.'", c.Name)
	}
	if len(c.Addresses) == 0 {
		fail("no address")
	}
	tlsSet := c.TLS != nil || c.TLSFiles != nil
	for i, a := range c.Addresses {
		pa, err := parseAddress(a, tlsSet)
		if err != nil {
			fail("addresses[%d]: %v", i, err)
			continue
		}
		s.addrs = append(s.addrs, pa)
	}
	switch c.Failover {
	case "":
		s.Failover = FailoverPrimary
	case FailoverPrimary, FailoverRoundRobin:
	default:
		fail("failover %q is not primary or round_robin", c.Failover)
	}
	switch c.ProtocolVersion {
	case 0:
		s.ProtocolVersion = packets.V5
	case packets.V5, packets.V311, packets.V31:
	default:
		fail("protocol version %d is not 5, 4 (3.1.1) or 3 (3.1)", c.ProtocolVersion)
	}
	if s.ClientID == "" {
		h, _ := os.Hostname()
		if h == "" {
			h = "tern"
		}
		s.ClientID = h + "." + c.Name
	}
	if !packets.ValidString(s.ClientID) || len(s.ClientID) > 65535 {
		fail("client id %q is not a valid client identifier", s.ClientID)
	}
	setDur := func(p *time.Duration, def time.Duration, what string) {
		switch {
		case *p == 0:
			*p = def
		case *p < 0:
			fail("%s must not be negative", what)
		}
	}
	setDur(&s.SessionExpiry, DefaultSessionExpiry, "session expiry")
	setDur(&s.KeepAlive, DefaultKeepAlive, "keep alive")
	setDur(&s.ConnectTimeout, DefaultConnectTimeout, "connect timeout")
	setDur(&s.ReconnectMin, DefaultReconnectMin, "reconnect min")
	setDur(&s.ReconnectMax, DefaultReconnectMax, "reconnect max")
	setDur(&s.Queue.Expiry, DefaultQueueExpiry, "queue expiry")
	if s.ReconnectMax < s.ReconnectMin {
		fail("reconnect max %v is below reconnect min %v", s.ReconnectMax, s.ReconnectMin)
	}
	if s.KeepAlive > 65535*time.Second || s.KeepAlive%time.Second != 0 {
		fail("keep alive %v is not a whole number of seconds up to 65535", s.KeepAlive)
	}
	if s.SessionExpiry > 0xFFFFFFFF*time.Second || s.Queue.Expiry > 0xFFFFFFFF*time.Second {
		fail("session and queue expiry must be at most 4294967295 seconds")
	}
	switch {
	case s.MaxInflight == 0:
		s.MaxInflight = DefaultMaxInflight
	case s.MaxInflight < 0 || s.MaxInflight > 65535:
		fail("max inflight %d is not between 1 and 65535", s.MaxInflight)
	}
	switch {
	case s.MaxHops == 0:
		s.MaxHops = DefaultMaxHops
	case s.MaxHops < 0:
		fail("max hops must not be negative")
	}
	if s.MaxPacketSize < 0 {
		fail("max packet size must not be negative")
	}
	if s.Queue.MaxMessages == 0 {
		s.Queue.MaxMessages = DefaultQueueMessages
	}
	if s.Queue.MaxBytes == 0 {
		s.Queue.MaxBytes = DefaultQueueBytes
	}
	if s.Queue.Overflow != tern.DropNew && s.Queue.Overflow != tern.DropOldest {
		fail("queue overflow must be tern.DropNew or tern.DropOldest")
	}
	if c.Password != "" && c.Username == "" && s.ProtocolVersion != packets.V5 {
		fail("a password needs a user name in MQTT 3.1 and 3.1.1")
	}
	s.tryPrivate = boolOr(c.TryPrivate, true)
	s.outgoingRetain = boolOr(c.OutgoingRetain, true)
	s.notifications = boolOr(c.Notifications, true)
	s.unsubscribe = boolOr(c.AttemptUnsubscribe, true)
	if s.NotificationTopic == "" {
		s.NotificationTopic = "$SYS/broker/connection/" + s.ClientID + "/state"
	}
	if s.notifications && !packets.ValidString(s.NotificationTopic) {
		fail("notification topic %q is not valid", s.NotificationTopic)
	}
	if len(c.Topics) == 0 {
		fail("no topic rule: nothing would be forwarded")
	}
	rs, err := compileRules(c.Topics)
	if err != nil {
		errs = append(errs, err)
	}
	s.rules = rs
	s.localID = LocalClientID(c.Name)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", c.Name, err)
	}
	return s, nil
}

func validName(n string) bool {
	if n == "" || len(n) > 128 {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// parseAddress parses one remote address.
func parseAddress(a string, tlsSet bool) (address, error) {
	out := address{raw: a}
	if !strings.Contains(a, "://") {
		out.scheme = "tcp"
		port := "1883"
		if tlsSet {
			out.scheme, port = "tls", "8883"
		}
		host := a
		if _, _, err := net.SplitHostPort(a); err != nil {
			if strings.Count(a, ":") > 1 && !strings.HasPrefix(a, "[") {
				return out, fmt.Errorf("%q: an IPv6 address needs [brackets] and a port", a)
			}
			host = net.JoinHostPort(a, port)
		}
		out.host = host
		return out, checkHostPort(out.host)
	}
	u, err := url.Parse(a)
	if err != nil {
		return out, err
	}
	switch u.Scheme {
	case "tcp", "mqtt":
		out.scheme = "tcp"
	case "tls", "ssl", "mqtts":
		out.scheme = "tls"
	case "ws", "wss":
		out.scheme = u.Scheme
		out.url = a
	default:
		return out, fmt.Errorf("%q: scheme %q is not tcp, tls, ws or wss", a, u.Scheme)
	}
	out.host = u.Host
	if u.Port() == "" {
		port := map[string]string{"tcp": "1883", "tls": "8883", "ws": "80", "wss": "443"}[out.scheme]
		out.host = net.JoinHostPort(u.Hostname(), port)
	}
	if out.scheme == "tcp" || out.scheme == "tls" {
		if u.Path != "" && u.Path != "/" {
			return out, fmt.Errorf("%q: a path is for ws:// and wss:// addresses", a)
		}
	}
	return out, checkHostPort(out.host)
}

func checkHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q: no host", hp)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not 1 to 65535", hp, port)
	}
	return nil
}
