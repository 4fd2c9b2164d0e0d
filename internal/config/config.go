// Package config is the configuration of the tern binary: one YAML file
// (tern serve -c tern.yaml) whose every setting can also be given as a
// TERN_… environment variable and as a command-line flag.
//
// The layers, lowest first: the defaults ([Default]), the file, the
// environment, the flags. [Load] merges them, rejects unknown keys and
// invalid values with a message naming the key and where it came from, and
// checks the result as a whole ([Config.Validate]).
//
// Keys are written with dots here: limits.max_qos is
//
//	limits:
//	  max_qos: 1
//
// in the file, TERN_LIMITS_MAX_QOS in the environment and --max-qos on the
// command line ([Key] lists every key with its variable and flag).
package config

import (
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/ternmq/tern"
)

// Config is the whole configuration of tern serve. The yaml tags are the
// keys of the file; flag tags name flags that differ from the key's last
// part; usage tags are the flags' help.
type Config struct {
	Listeners   Listeners   `yaml:"listeners"`
	TLS         TLS         `yaml:"tls"`
	Auth        Auth        `yaml:"auth"`
	Limits      Limits      `yaml:"limits"`
	Persistence Persistence `yaml:"persistence"`
	Log         Log         `yaml:"log"`
	Admin       Admin       `yaml:"admin"`
	Bans        Bans        `yaml:"bans"`
	Events      Events      `yaml:"events"`
	Cluster     Cluster     `yaml:"cluster"`

	// NodeID names this broker to other brokers: bridges carry it in the
	// hop list of what they forward. Default: the host name.
	NodeID string `yaml:"node_id" usage:"name of this broker for bridges' loop guard (default: the host name)"`
	// Bridges connect this broker to others (package bridge); they are
	// reloaded on SIGHUP. Set in the file only.
	Bridges []Bridge `yaml:"bridges" flag:"-" usage:"bridges to other brokers (in the file only)"`

	// SysInterval is the period of the $SYS/broker topics; 0 (or a
	// negative value) turns them off.
	SysInterval Duration `yaml:"sys_interval" usage:"period of the $SYS topics (0: off)"`
	// DrainDelay is how long a draining server keeps accepting connections
	// after /readyz turns 503, for load balancers to notice.
	DrainDelay Duration `yaml:"drain_delay" usage:"on SIGTERM, time between /readyz turning 503 and the listeners closing"`
	// ShutdownTimeout bounds a graceful shutdown after the drain delay:
	// when it passes, the remaining connections are closed and the process
	// exits.
	ShutdownTimeout Duration `yaml:"shutdown_timeout" usage:"longest graceful shutdown (after drain_delay) before closing what is left"`

	origins    map[string]string // key -> where its value came from, for messages
	raw        map[string]string // key -> its value as written, for YAML
	ignoredEnv []string          // TERN_ variables that are no key
}

// Listeners are the MQTT listeners, by transport. Each list may hold any
// number of listeners; an empty list turns the transport off.
type Listeners struct {
	TCP    []NetListener  `yaml:"tcp" flag:"listen" short:"l" usage:"TCP address for MQTT, repeatable (\"\" for none)"`
	TLS    []NetListener  `yaml:"tls" flag:"tls-listen" usage:"address for MQTT over TLS, repeatable (e.g. 0.0.0.0:8883)"`
	WS     []WSListener   `yaml:"ws" flag:"ws-listen" usage:"address for MQTT over WebSocket, repeatable (e.g. 0.0.0.0:8083)"`
	WSS    []WSListener   `yaml:"wss" flag:"wss-listen" usage:"address for MQTT over secure WebSocket, repeatable (e.g. 0.0.0.0:8084)"`
	Unix   []UnixListener `yaml:"unix" flag:"unix" usage:"path of a Unix socket to listen on, repeatable"`
	WSPath string         `yaml:"ws_path" flag:"ws-path" usage:"HTTP path of the WebSocket listeners that set none"`
}

// NetListener is a TCP or TLS listener.
type NetListener struct {
	// Address is host:port; a host of 0.0.0.0, [::] or none means every
	// interface. Without a port, the transport's usual one (1883, 8883).
	Address string `yaml:"address"`
	// ProxyProtocol requires a PROXY protocol (v1 or v2) header on every
	// connection, from the peers in ProxyTrusted (any peer when empty).
	ProxyProtocol bool     `yaml:"proxy_protocol,omitempty"`
	ProxyTrusted  []string `yaml:"proxy_trusted,omitempty"`

	PerListener `yaml:",inline"`
}

// WSListener is a WebSocket or secure WebSocket listener.
type WSListener struct {
	Address       string   `yaml:"address"`
	Path          string   `yaml:"path,omitempty"` // default: listeners.ws_path
	ProxyProtocol bool     `yaml:"proxy_protocol,omitempty"`
	ProxyTrusted  []string `yaml:"proxy_trusted,omitempty"`

	PerListener `yaml:",inline"`
}

// PerListener are the settings a listener may have of its own, as
// Mosquitto's per_listener_settings: its own limits, its own
// authentication and ACL (which then replace the auth section's for its
// clients) and, for tls and wss listeners, its own certificate.
type PerListener struct {
	// MaxConnections caps the connections open through the listener at
	// once (0: no limit of its own; limits.max_connections still applies).
	MaxConnections int `yaml:"max_connections,omitempty"`
	// MaxConnectionRate caps the new connections per second (with a burst
	// of one second's worth); a CONNECT beyond it is refused, v5 clients
	// with CONNACK 0x9F Connection rate exceeded. 0: no limit.
	MaxConnectionRate float64 `yaml:"max_connection_rate,omitempty"`

	// PasswordFile, ACLFile and AllowAnonymous, when any is set, replace
	// auth.password_file, auth.acl_file and auth.allow_anonymous for the
	// clients of this listener (an unset one is then off: no ACL, no
	// anonymous clients).
	PasswordFile   string `yaml:"password_file,omitempty"`
	ACLFile        string `yaml:"acl_file,omitempty"`
	AllowAnonymous *bool  `yaml:"allow_anonymous,omitempty"`

	// CertFile and KeyFile replace tls.cert_file and tls.key_file, and
	// ClientCAFile tls.client_ca_file, for this tls or wss listener.
	CertFile     string `yaml:"cert_file,omitempty"`
	KeyFile      string `yaml:"key_file,omitempty"`
	ClientCAFile string `yaml:"client_ca_file,omitempty"`
}

// OwnAuth reports whether the listener has authentication settings of its
// own.
func (p *PerListener) OwnAuth() bool {
	return p.PasswordFile != "" || p.ACLFile != "" || p.AllowAnonymous != nil
}

// OwnTLS reports whether the listener has a certificate of its own.
func (p *PerListener) OwnTLS() bool {
	return p.CertFile != "" || p.KeyFile != "" || p.ClientCAFile != ""
}

// UnixListener is a Unix domain socket listener.
type UnixListener struct {
	Path string `yaml:"path"`
	// Mode is the socket file's permissions in octal ("0660" lets the
	// group connect); empty keeps what the umask gives.
	Mode string `yaml:"mode,omitempty"`

	PerListener `yaml:",inline"`
}

// FileMode returns Mode parsed, 0 when it is empty.
func (u UnixListener) FileMode() (fs.FileMode, error) {
	if u.Mode == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(u.Mode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not a file mode in octal, like 0660", u.Mode)
	}
	return fs.FileMode(m), nil
}

// TLS is the server certificate and TLS settings, shared by every tls and
// wss listener.
type TLS struct {
	CertFile              string   `yaml:"cert_file" flag:"tls-cert" usage:"PEM certificate chain for TLS and secure WebSocket"`
	KeyFile               string   `yaml:"key_file" flag:"tls-key" usage:"PEM private key for TLS and secure WebSocket"`
	ClientCAFile          string   `yaml:"client_ca_file" flag:"tls-client-ca" usage:"PEM CA file: require client certificates signed by it"`
	MinVersion            string   `yaml:"min_version" flag:"tls-min-version" usage:"lowest TLS version accepted: 1.2 or 1.3"`
	CipherSuites          []string `yaml:"cipher_suites" flag:"tls-cipher-suites" usage:"TLS 1.2 cipher suites allowed, by Go name (default: Go's secure set)"`
	UseIdentityAsUsername bool     `yaml:"use_identity_as_username" flag:"tls-use-identity-as-username" usage:"use the client certificate's CN (or first SAN) as the user name (needs tls.client_ca_file)"`
}

// Auth is who may connect and what they may do.
type Auth struct {
	PasswordFile   string `yaml:"password_file" usage:"Mosquitto-format password file (see tern passwd); clients must log in"`
	ACLFile        string `yaml:"acl_file" usage:"Mosquitto-format ACL file; what it does not allow is denied"`
	AllowAnonymous bool   `yaml:"allow_anonymous" usage:"admit clients without a user name (with a password file), or allow network listeners without one"`
	// JWT authenticates clients by JSON Web Tokens (see config/extauth.go).
	JWT JWT `yaml:"jwt"`
	// HTTP asks an HTTP service who may connect and what they may do.
	HTTP HTTPAuth `yaml:"http"`
}

// Limits are the broker's limits and MQTT features, the fields of
// tern.Options. Where Mosquitto has the setting, the key is its name.
type Limits struct {
	MaxPacketSize                   Size     `yaml:"max_packet_size" usage:"largest packet accepted, in bytes (advertised to v5 clients)"`
	ReceiveMaximum                  uint16   `yaml:"receive_maximum" usage:"QoS 1/2 messages a client may have unacknowledged towards the broker"`
	MaxInflightMessages             uint16   `yaml:"max_inflight_messages" usage:"QoS 1/2 messages unacknowledged towards one client (0: 65535)"`
	MaxQueuedMessages               int      `yaml:"max_queued_messages" usage:"messages queued per session (0: no limit)"`
	MaxQueuedBytes                  Size     `yaml:"max_queued_bytes" usage:"topic and payload bytes queued per session (0: no limit)"`
	QueueFullPolicy                 string   `yaml:"queue_full_policy" usage:"which message a full queue drops: drop_new or drop_oldest"`
	MaxPendingBytes                 Size     `yaml:"max_pending_bytes" usage:"bytes waiting to be written to one client (encoded packets and queued QoS 0 messages); QoS 0 beyond it is dropped"`
	MaxMessageMemory                Size     `yaml:"max_message_memory" usage:"bytes of broker-wide memory for queued and inflight messages (auto: a quarter of the memory available; 0: no limit)"`
	MaxQueueMemory                  Size     `yaml:"max_queue_memory" usage:"bytes of memory for one persistent session's queue (topic and payload, plus 64 a message); beyond, its QoS 1/2 messages are paged to the store (0: no per-session share)"`
	MaxRetainedMessages             int      `yaml:"max_retained_messages" usage:"retained messages kept (0: no limit)"`
	MaxRetainedBytes                Size     `yaml:"max_retained_bytes" usage:"topic and payload bytes of retained messages (auto: an eighth of the memory available, at most 1GiB; 0: no limit)"`
	QueueQoS0Messages               bool     `yaml:"queue_qos0_messages" usage:"queue QoS 0 messages for offline persistent sessions"`
	MaxQoS                          uint8    `yaml:"max_qos" usage:"highest QoS accepted and granted: 0, 1 or 2"`
	RetainAvailable                 bool     `yaml:"retain_available" usage:"allow retained messages"`
	WildcardSubscriptionAvailable   bool     `yaml:"wildcard_subscription_available" usage:"allow wildcard subscriptions"`
	SubscriptionIdentifierAvailable bool     `yaml:"subscription_identifier_available" usage:"allow subscription identifiers"`
	SharedSubscriptionAvailable     bool     `yaml:"shared_subscription_available" usage:"allow shared subscriptions"`
	SharedSubscriptionStrategy      string   `yaml:"shared_subscription_strategy" usage:"member of a $share group a message goes to: round_robin, random, hash_topic or hash_clientid"`
	MaxTopicAlias                   uint16   `yaml:"max_topic_alias" usage:"topic aliases a v5 client may use towards the broker (0: none)"`
	MaxKeepalive                    Duration `yaml:"max_keepalive" usage:"longest keep alive a v5 client may use (0: no limit)"`
	MaxSessionExpiry                Duration `yaml:"max_session_expiry" usage:"cap on session expiry, also for v3 persistent sessions (0: no cap)"`
	MaxClientIDLength               int      `yaml:"max_client_id_length" usage:"longest client identifier accepted"`
	MaxTopicLevels                  int      `yaml:"max_topic_levels" usage:"most levels in a topic name or filter (0: no limit)"`
	ConnectTimeout                  Duration `yaml:"connect_timeout" usage:"time a new connection has to send CONNECT"`
	WriteTimeout                    Duration `yaml:"write_timeout" usage:"a client that does not read for this long is disconnected"`
	MaxConnections                  int      `yaml:"max_connections" usage:"connections open at once over all listeners (0: no limit)"`
	MaxSubscriptionsPerClient       int      `yaml:"max_subscriptions_per_client" usage:"subscriptions per client (0: no limit)"`
	MaxPublishRate                  float64  `yaml:"max_publish_rate" usage:"PUBLISH packets per second per client (0: no limit)"`
	MaxPublishBytesRate             Size     `yaml:"max_publish_bytes_rate" usage:"PUBLISH bytes per second per client, e.g. 1MiB (0: no limit)"`
}

// Persistence is where and how durably the broker keeps persistent
// sessions, queued and inflight QoS 1/2 messages, retained messages and
// pending wills across restarts.
type Persistence struct {
	Durability   string   `yaml:"durability" usage:"sync (acknowledge after fsync), periodic (fsync every sync_interval) or off (memory only)"`
	DataDir      string   `yaml:"data_dir" flag:"data-dir" usage:"directory of the embedded store"`
	SyncInterval Duration `yaml:"sync_interval" usage:"fsync period when durability is periodic"`
	Paging       bool     `yaml:"paging" usage:"page queues of persistent sessions out of memory into the store (max_message_memory, max_queue_memory)"`
}

// Log is the log's level and format. The level is reloaded on SIGHUP.
type Log struct {
	Level  string `yaml:"level" flag:"log-level" usage:"log level: debug, info, warn or error"`
	Format string `yaml:"format" flag:"log-format" usage:"log format: text or json"`
	// ConnectionMessages logs each client's connect and disconnect at
	// INFO, as Mosquitto's connection_messages.
	ConnectionMessages bool `yaml:"connection_messages" usage:"log each client connect and disconnect at info"`
}

// Admin is the HTTP admin listener: health, metrics and the REST API.
type Admin struct {
	Listen  string   `yaml:"listen" flag:"admin-listen" usage:"address of the HTTP admin API and /metrics (\"\" for none)"`
	APIKeys []APIKey `yaml:"api_keys" flag:"admin-api-key" usage:"API key for HTTP Basic auth as key:secret, repeatable"`
	Token   string   `yaml:"token" flag:"admin-token" usage:"bearer token accepted by the admin API"`
	// AllowedHosts are the host names requests may carry in their Host
	// header besides the loopback names, IP addresses and the listen host
	// (DNS rebinding protection); "*" allows any.
	AllowedHosts []string `yaml:"allowed_hosts" flag:"admin-allowed-host" usage:"host name the admin API may be reached as (besides localhost and IP addresses), repeatable; * for any"`
	// CORSOrigins are the web origins (https://dash.example) whose pages
	// may call the API from a browser; none by default.
	CORSOrigins []string `yaml:"cors_origins" flag:"admin-cors-origin" usage:"web origin allowed to call the admin API from a browser (CORS), repeatable"`
	// Dashboard serves the web dashboard at / of the admin listener.
	Dashboard bool `yaml:"dashboard" flag:"admin-dashboard" usage:"serve the web dashboard at / of the admin listener"`
}

// APIKey is a key and secret for the admin API's HTTP Basic auth (the key
// is the user name, the secret the password).
type APIKey struct {
	Key    string `yaml:"key"`
	Secret string `yaml:"secret"`
}

// Default returns the defaults: MQTT on 127.0.0.1:1883 only, anonymous
// access (loopback only), the admin API on 127.0.0.1:18083, and the
// tern.Options defaults.
func Default() *Config {
	return &Config{
		Listeners: Listeners{
			TCP:    []NetListener{{Address: "127.0.0.1:1883"}},
			WSPath: "/mqtt",
		},
		TLS:  TLS{MinVersion: "1.2"},
		Auth: Auth{JWT: defaultJWT(), HTTP: defaultHTTPAuth()},
		Limits: Limits{
			MaxPacketSize:                   1 << 20,
			ReceiveMaximum:                  1024,
			MaxInflightMessages:             1024,
			MaxQueuedMessages:               10_000,
			MaxQueuedBytes:                  64 << 20,
			QueueFullPolicy:                 "drop_new",
			SharedSubscriptionStrategy:      "round_robin",
			MaxPendingBytes:                 1 << 20,
			MaxMessageMemory:                SizeAuto,
			MaxQueueMemory:                  1 << 20,
			MaxRetainedMessages:             1_000_000,
			MaxRetainedBytes:                SizeAuto,
			MaxTopicLevels:                  128,
			QueueQoS0Messages:               true,
			MaxQoS:                          2,
			RetainAvailable:                 true,
			WildcardSubscriptionAvailable:   true,
			SubscriptionIdentifierAvailable: true,
			SharedSubscriptionAvailable:     true,
			MaxTopicAlias:                   65535,
			MaxClientIDLength:               65535,
			ConnectTimeout:                  Duration(10 * time.Second),
			WriteTimeout:                    Duration(30 * time.Second),
		},
		Persistence:     Persistence{Durability: "sync", DataDir: "tern-data", SyncInterval: Duration(time.Second), Paging: true},
		Log:             Log{Level: "info", Format: "text", ConnectionMessages: true},
		Admin:           Admin{Listen: "127.0.0.1:18083", Dashboard: true},
		Bans:            defaultBans(),
		Cluster:         defaultCluster(),
		SysInterval:     Duration(10 * time.Second),
		ShutdownTimeout: Duration(10 * time.Second),
	}
}

// ServerOptions returns the tern.Options the configuration describes, with
// logger as the server's logger.
func (c *Config) ServerOptions(logger *slog.Logger) *tern.Options {
	l := &c.Limits
	o := &tern.Options{
		Logger:               logger,
		MaxPacketSize:        int(l.MaxPacketSize),
		ReceiveMaximum:       l.ReceiveMaximum,
		MaxInflight:          l.MaxInflightMessages,
		MaxQueuedMessages:    l.MaxQueuedMessages,
		MaxQueuedBytes:       int(l.MaxQueuedBytes),
		MaxPendingBytes:      int(l.MaxPendingBytes),
		MaxMessageMemory:     int64(l.MaxMessageMemory),
		MaxQueueMemory:       int(l.MaxQueueMemory),
		DisablePaging:        !c.Persistence.Paging,
		MaxRetainedMessages:  l.MaxRetainedMessages,
		MaxRetainedBytes:     int64(l.MaxRetainedBytes),
		QueueQoS0Offline:     ptr(l.QueueQoS0Messages),
		MaxQoS:               ptr(l.MaxQoS),
		RetainAvailable:      ptr(l.RetainAvailable),
		WildcardSubAvailable: ptr(l.WildcardSubscriptionAvailable),
		SubIDAvailable:       ptr(l.SubscriptionIdentifierAvailable),
		SharedSubAvailable:   ptr(l.SharedSubscriptionAvailable),
		TopicAliasMaximum:    ptr(l.MaxTopicAlias),
		MaxKeepAlive:         uint16(time.Duration(l.MaxKeepalive) / time.Second),
		MaxSessionExpiry:     uint32(time.Duration(l.MaxSessionExpiry) / time.Second),
		MaxClientIDLength:    l.MaxClientIDLength,
		MaxTopicLevels:       l.MaxTopicLevels,
		ConnectTimeout:       time.Duration(l.ConnectTimeout),
		WriteTimeout:         time.Duration(l.WriteTimeout),
		SysInterval:          time.Duration(c.SysInterval),
		NodeID:               c.NodeID,
		SyncInterval:         time.Duration(c.Persistence.SyncInterval),

		MaxConnections:            l.MaxConnections,
		MaxSubscriptionsPerClient: l.MaxSubscriptionsPerClient,
		MaxPublishRate:            l.MaxPublishRate,
		MaxPublishBytesRate:       float64(l.MaxPublishBytesRate),
	}
	if c.Persistence.Durability == "periodic" {
		o.Durability = tern.DurabilityPeriodic
	}
	// Mosquitto's 0 means "no limit" where tern.Options' 0 means "default".
	if o.MaxInflight == 0 {
		o.MaxInflight = math.MaxUint16
	}
	for _, p := range []*int{&o.MaxQueuedMessages, &o.MaxQueuedBytes, &o.MaxRetainedMessages, &o.MaxTopicLevels, &o.MaxQueueMemory} {
		if *p == 0 {
			*p = -1
		}
	}
	for _, p := range []*int64{&o.MaxMessageMemory, &o.MaxRetainedBytes} {
		switch Size(*p) {
		case 0:
			*p = -1
		case SizeAuto:
			*p = 0 // tern.Options' default: derived from the memory available
		}
	}
	if l.QueueFullPolicy == "drop_oldest" {
		o.QueueFullPolicy = tern.DropOldest
	}
	o.SharedStrategy = sharedStrategies[l.SharedSubscriptionStrategy]
	if o.SysInterval <= 0 {
		o.SysInterval = -1
	}
	return o
}

func ptr[T any](v T) *T { return &v }

// SlogLevel returns the configured log level.
func (l Log) SlogLevel() slog.Level {
	var lv slog.Level
	lv.UnmarshalText([]byte(l.Level)) // checked by Validate
	return lv
}

// sharedStrategies maps limits.shared_subscription_strategy to the option.
var sharedStrategies = map[string]tern.SharedStrategy{
	"round_robin":   tern.SharedRoundRobin,
	"random":        tern.SharedRandom,
	"hash_topic":    tern.SharedHashTopic,
	"hash_clientid": tern.SharedHashClientID,
}
