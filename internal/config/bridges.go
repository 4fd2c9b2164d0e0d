package config

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/bridge"
	"github.com/ternmq/tern/listeners"
)

// Bridge is one bridge to another broker (package bridge). Where
// mosquitto.conf has the setting, the README maps its directive to the key.
type Bridge struct {
	Name      string   `yaml:"name"`
	Addresses []string `yaml:"addresses"`
	Failover  string   `yaml:"failover"`
	// ProtocolVersion: "5", "3.1.1" or "3.1" (also mqttv50, mqttv311,
	// mqttv31, 4 and 3).
	ProtocolVersion string          `yaml:"protocol_version"`
	ClientID        string          `yaml:"client_id"`
	Username        string          `yaml:"username"`
	Password        string          `yaml:"password"`
	PasswordFile    string          `yaml:"password_file"`
	CleanStart      bool            `yaml:"clean_start"`
	SessionExpiry   Duration        `yaml:"session_expiry"`
	KeepAlive       Duration        `yaml:"keep_alive"`
	ConnectTimeout  Duration        `yaml:"connect_timeout"`
	Reconnect       BridgeReconnect `yaml:"reconnect"`
	TryPrivate      bool            `yaml:"try_private"`
	MaxInflight     int             `yaml:"max_inflight"`
	Queue           BridgeQueue     `yaml:"queue"`
	OutgoingRetain  bool            `yaml:"outgoing_retain"`
	// AttemptUnsubscribe is Mosquitto's bridge_attempt_unsubscribe.
	AttemptUnsubscribe bool `yaml:"attempt_unsubscribe"`
	MaxPacketSize      Size `yaml:"max_packet_size"`

	Notifications          bool   `yaml:"notifications"`
	NotificationsLocalOnly bool   `yaml:"notifications_local_only"`
	NotificationTopic      string `yaml:"notification_topic"`

	MaxHops       int           `yaml:"max_hops"`
	LocalUsername string        `yaml:"local_username"`
	LocalPassword string        `yaml:"local_password"`
	TLS           BridgeTLS     `yaml:"tls"`
	Topics        []BridgeTopic `yaml:"topics"`
}

// BridgeReconnect bounds the delay between connection attempts.
type BridgeReconnect struct {
	Min Duration `yaml:"min"`
	Max Duration `yaml:"max"`
}

// BridgeQueue bounds what waits for the remote.
type BridgeQueue struct {
	MaxMessages int      `yaml:"max_messages"`
	MaxBytes    Size     `yaml:"max_bytes"`
	Overflow    string   `yaml:"overflow"`
	Expiry      Duration `yaml:"expiry"`
}

// BridgeTLS is the TLS client configuration of a bridge, used for tls://
// and wss:// addresses (and for host:port addresses once any of it is set).
type BridgeTLS struct {
	CAFile             string   `yaml:"ca_file"`
	CertFile           string   `yaml:"cert_file"`
	KeyFile            string   `yaml:"key_file"`
	ServerName         string   `yaml:"server_name"`
	InsecureSkipVerify bool     `yaml:"insecure_skip_verify"`
	ALPN               []string `yaml:"alpn"`
	MinVersion         string   `yaml:"min_version"`
}

func (t BridgeTLS) set() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify || len(t.ALPN) > 0
}

// BridgeTopic is a topic rule: Mosquitto's form (pattern, direction, qos,
// local_prefix, remote_prefix), which may also be written as the
// arguments of a mosquitto.conf "topic" line ("sensors/# out 1 \"\" site/"),
// or the capture form (local, remote, direction, qos).
type BridgeTopic struct {
	Pattern      string `yaml:"pattern,omitempty"`
	Direction    string `yaml:"direction,omitempty"`
	QoS          byte   `yaml:"qos"`
	LocalPrefix  string `yaml:"local_prefix,omitempty"`
	RemotePrefix string `yaml:"remote_prefix,omitempty"`
	Local        string `yaml:"local,omitempty"`
	Remote       string `yaml:"remote,omitempty"`
}

func (t *BridgeTopic) setText(s string) error {
	top, err := bridge.ParseTopic(s)
	if err != nil {
		return err
	}
	*t = BridgeTopic{Pattern: top.Pattern, Direction: string(top.Direction), QoS: top.QoS,
		LocalPrefix: top.LocalPrefix, RemotePrefix: top.RemotePrefix}
	return nil
}

func (t *BridgeTopic) text() string { return t.topic().String() }

// MarshalYAML writes a rule of Mosquitto's form as its one-line form.
func (t BridgeTopic) MarshalYAML() (any, error) {
	if t.Local != "" || t.Remote != "" {
		type plain BridgeTopic
		return plain(t), nil
	}
	return t.topic().String(), nil
}

func (t BridgeTopic) topic() bridge.Topic {
	return bridge.Topic{Pattern: t.Pattern, Direction: bridge.Direction(t.Direction), QoS: t.QoS,
		LocalPrefix: t.LocalPrefix, RemotePrefix: t.RemotePrefix, Local: t.Local, Remote: t.Remote}
}

// setDefaults gives a bridge read from the file the defaults of the keys
// it does not set.
func (b *Bridge) setDefaults() {
	*b = Bridge{
		Failover:        "primary",
		ProtocolVersion: "5",
		SessionExpiry:   Duration(bridge.DefaultSessionExpiry),
		KeepAlive:       Duration(bridge.DefaultKeepAlive),
		ConnectTimeout:  Duration(bridge.DefaultConnectTimeout),
		Reconnect:       BridgeReconnect{Min: Duration(bridge.DefaultReconnectMin), Max: Duration(bridge.DefaultReconnectMax)},
		TryPrivate:      true,
		MaxInflight:     bridge.DefaultMaxInflight,
		Queue: BridgeQueue{MaxMessages: bridge.DefaultQueueMessages, MaxBytes: bridge.DefaultQueueBytes,
			Overflow: "drop_new", Expiry: Duration(bridge.DefaultQueueExpiry)},
		OutgoingRetain:     true,
		AttemptUnsubscribe: true,
		Notifications:      true,
		MaxHops:            bridge.DefaultMaxHops,
		TLS:                BridgeTLS{MinVersion: "1.2"},
	}
}

// defaulter is a list element with defaults for the keys it does not set.
type defaulter interface{ setDefaults() }

func parseProtocol(v string) (byte, bool) {
	switch strings.ToLower(v) {
	case "5", "5.0", "mqttv5", "mqttv50":
		return 5, true
	case "3.1.1", "4", "mqttv311":
		return 4, true
	case "3.1", "3", "mqttv31":
		return 3, true
	}
	return 0, false
}

// BridgeConfigs returns the bridges as package bridge configures them,
// reading the password files.
func (c *Config) BridgeConfigs() ([]bridge.Config, error) {
	out := make([]bridge.Config, 0, len(c.Bridges))
	for i := range c.Bridges {
		bc, err := c.Bridges[i].config()
		if err != nil {
			return nil, fmt.Errorf("config: bridges[%d] (%s): %w", i, c.Bridges[i].Name, err)
		}
		out = append(out, bc)
	}
	return out, nil
}

func (b *Bridge) config() (bridge.Config, error) {
	v, ok := parseProtocol(b.ProtocolVersion)
	if !ok {
		return bridge.Config{}, fmt.Errorf("protocol_version %q is not 5, 3.1.1 or 3.1", b.ProtocolVersion)
	}
	cfg := bridge.Config{
		Name:                   b.Name,
		Addresses:              b.Addresses,
		Failover:               bridge.Failover(b.Failover),
		ProtocolVersion:        v,
		ClientID:               b.ClientID,
		Username:               b.Username,
		Password:               b.Password,
		CleanStart:             b.CleanStart,
		SessionExpiry:          time.Duration(b.SessionExpiry),
		KeepAlive:              time.Duration(b.KeepAlive),
		ConnectTimeout:         time.Duration(b.ConnectTimeout),
		ReconnectMin:           time.Duration(b.Reconnect.Min),
		ReconnectMax:           time.Duration(b.Reconnect.Max),
		TryPrivate:             ptr(b.TryPrivate),
		MaxInflight:            b.MaxInflight,
		Queue:                  bridge.Queue{MaxMessages: b.Queue.MaxMessages, MaxBytes: int(b.Queue.MaxBytes), Expiry: time.Duration(b.Queue.Expiry)},
		OutgoingRetain:         ptr(b.OutgoingRetain),
		AttemptUnsubscribe:     ptr(b.AttemptUnsubscribe),
		MaxPacketSize:          int(b.MaxPacketSize),
		Notifications:          ptr(b.Notifications),
		NotificationsLocalOnly: b.NotificationsLocalOnly,
		NotificationTopic:      b.NotificationTopic,
		MaxHops:                b.MaxHops,
		LocalUsername:          b.LocalUsername,
		LocalPassword:          b.LocalPassword,
	}
	// Mosquitto's 0 means no limit where package bridge's means default.
	if cfg.Queue.MaxMessages == 0 {
		cfg.Queue.MaxMessages = -1
	}
	if cfg.Queue.MaxBytes == 0 {
		cfg.Queue.MaxBytes = -1
	}
	switch b.Queue.Overflow {
	case "drop_new":
	case "drop_oldest":
		cfg.Queue.Overflow = tern.DropOldest
	default:
		return cfg, fmt.Errorf("queue.overflow %q is not drop_new or drop_oldest", b.Queue.Overflow)
	}
	if b.PasswordFile != "" {
		if b.Password != "" {
			return cfg, fmt.Errorf("password and password_file are both set")
		}
		data, err := os.ReadFile(b.PasswordFile)
		if err != nil {
			return cfg, fmt.Errorf("password_file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(data), "\r\n")
	}
	if b.TLS.set() {
		mv, err := listeners.ParseTLSVersion(b.TLS.MinVersion)
		if err != nil {
			return cfg, fmt.Errorf("tls.min_version: %w", err)
		}
		if mv == 0 {
			mv = tls.VersionTLS12
		}
		cfg.TLSFiles = &bridge.TLSFiles{CAFile: b.TLS.CAFile, CertFile: b.TLS.CertFile, KeyFile: b.TLS.KeyFile,
			ServerName: b.TLS.ServerName, InsecureSkipVerify: b.TLS.InsecureSkipVerify, ALPN: b.TLS.ALPN, MinVersion: mv}
		if (b.TLS.CertFile == "") != (b.TLS.KeyFile == "") {
			return cfg, fmt.Errorf("tls.cert_file and tls.key_file go together")
		}
	}
	for _, t := range b.Topics {
		cfg.Topics = append(cfg.Topics, t.topic())
	}
	return cfg, cfg.Validate()
}

// validateBridges checks every bridge and that names are unique.
func (c *Config) validateBridges(v *validator) {
	seen := make(map[string]bool)
	for i := range c.Bridges {
		b := &c.Bridges[i]
		key := fmt.Sprintf("bridges[%d]", i)
		if seen[b.Name] {
			v.fail(key+".name", "%q is the name of another bridge", b.Name)
		}
		seen[b.Name] = true
		if b.Password == redacted || b.LocalPassword == redacted {
			v.fail(key, "a password is %s: --print-config hides secrets; put the secret back", redacted)
			continue
		}
		if _, err := b.config(); err != nil {
			v.fail(key, "%v", strings.TrimPrefix(err.Error(), "bridge "+b.Name+": "))
		}
	}
}
