package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/ternmq/tern"
	"go.yaml.in/yaml/v3"
)

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// equal compares configurations, ignoring where values came from.
func equal(a, b *Config) bool {
	x, y := *a, *b
	x.origins, y.origins = nil, nil
	x.raw, y.raw = nil, nil
	x.ignoredEnv, y.ignoredEnv = nil, nil
	return reflect.DeepEqual(x, y)
}

func TestExampleFileIsTheDefaults(t *testing.T) {
	c, err := Load("../../tern.example.yaml", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(c, Default()) {
		got, _ := c.YAML()
		t.Errorf("tern.example.yaml differs from Default():\n%s", got)
	}
	// Every key is written (and so documented) in the example.
	data, _ := os.ReadFile("../../tern.example.yaml")
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		var v any = doc
		for part := range strings.SplitSeq(k.Name, ".") {
			m, _ := v.(map[string]any)
			var ok bool
			if v, ok = m[part]; !ok {
				t.Errorf("key %s is missing from tern.example.yaml", k.Name)
				break
			}
		}
	}
}

const goodFile = `
persistence:
  durability: periodic
  data_dir: /var/lib/tern
  sync_interval: 250ms
listeners:
  tcp:
    - address: 0.0.0.0:1883
      proxy_protocol: true
      proxy_trusted: [10.0.0.0/8, 192.168.1.1]
    - "[::]:1884"
    - address: localhost
      max_connections: 100
      max_connection_rate: 10
      password_file: /etc/tern/passwd-dev
      acl_file: /etc/tern/acl-dev
      allow_anonymous: false
  tls: [{address: ":8883"}, {address: 0.0.0.0, cert_file: /etc/tern/b.crt, key_file: /etc/tern/b.key, client_ca_file: /etc/tern/b-ca.crt}]
  ws:
    - address: 0.0.0.0:8083
      path: /ws
  wss: [":8084"]
  unix:
    - path: /run/tern.sock
      mode: "0660"
  ws_path: /mqtt2
tls:
  cert_file: /etc/tern/server.crt
  key_file: /etc/tern/server.key
  client_ca_file: /etc/tern/ca.crt
  min_version: "1.3"
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
  use_identity_as_username: yes
auth:
  password_file: /etc/tern/passwd
  acl_file: /etc/tern/acl
  allow_anonymous: true
limits:
  max_packet_size: 256KiB
  receive_maximum: 10
  max_inflight_messages: 20
  max_queued_messages: 30
  max_queued_bytes: 1MB
  queue_full_policy: drop_oldest
  max_pending_bytes: 512KiB
  max_message_memory: 256MiB
  max_retained_messages: 1000
  max_retained_bytes: auto
  queue_qos0_messages: false
  max_qos: 1
  retain_available: false
  wildcard_subscription_available: false
  subscription_identifier_available: false
  shared_subscription_available: false
  max_topic_alias: 0
  max_keepalive: 300
  max_session_expiry: 1d
  max_client_id_length: 64
  max_topic_levels: 8
  shared_subscription_strategy: hash_topic
  connect_timeout: 5s
  write_timeout: 1m
  max_publish_bytes_rate: 64KiB
log:
  level: debug
  format: json
  connection_messages: false
admin:
  listen: 0.0.0.0:18083
  allowed_hosts: [tern.example.svc]
  cors_origins: ["https://dash.example"]
  api_keys:
    - key: ops
      secret: 0123456789abcdef
    - ci:fedcba9876543210
  token: a-long-bearer-token
sys_interval: 0
drain_delay: 5s
shutdown_timeout: 1m
bans:
  file: /var/lib/tern/bans.json
  flapping: {max_connects: 15, window: 2m, ban_time: 10m}
events:
  node: broker-1
  presence: true
  webhooks:
    - https://hooks.example/all
    - url: http://127.0.0.1:9000/mqtt
      events: [client.connected, message.publish]
      topics: ["sensors/#"]
      batch_size: 50
      max_backoff: 10s
cluster:
  node: tern-0
  listen: 0.0.0.0:7946
  peers: [tern-1.tern:7946, tern-2.tern:7946]
  lease_ttl: 6s
`

func TestGoodFile(t *testing.T) {
	c, err := Load(writeFile(t, "tern.yaml", goodFile), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Listeners: Listeners{
			TCP: []NetListener{{Address: "0.0.0.0:1883", ProxyProtocol: true, ProxyTrusted: []string{"10.0.0.0/8", "192.168.1.1"}}, {Address: "[::]:1884"},
				{Address: "localhost:1883", PerListener: PerListener{MaxConnections: 100, MaxConnectionRate: 10,
					PasswordFile: "/etc/tern/passwd-dev", ACLFile: "/etc/tern/acl-dev", AllowAnonymous: new(false)}}},
			TLS: []NetListener{{Address: ":8883"}, {Address: "0.0.0.0:8883", PerListener: PerListener{CertFile: "/etc/tern/b.crt",
				KeyFile: "/etc/tern/b.key", ClientCAFile: "/etc/tern/b-ca.crt"}}},
			WS:     []WSListener{{Address: "0.0.0.0:8083", Path: "/ws"}},
			WSS:    []WSListener{{Address: ":8084"}},
			Unix:   []UnixListener{{Path: "/run/tern.sock", Mode: "0660"}},
			WSPath: "/mqtt2",
		},
		TLS: TLS{CertFile: "/etc/tern/server.crt", KeyFile: "/etc/tern/server.key", ClientCAFile: "/etc/tern/ca.crt",
			MinVersion: "1.3", CipherSuites: []string{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}, UseIdentityAsUsername: true},
		Auth: Auth{PasswordFile: "/etc/tern/passwd", ACLFile: "/etc/tern/acl", AllowAnonymous: true},
		Limits: Limits{MaxPacketSize: 256 << 10, ReceiveMaximum: 10, MaxInflightMessages: 20, MaxQueuedMessages: 30,
			MaxQueuedBytes: 1e6, QueueFullPolicy: "drop_oldest", MaxPendingBytes: 512 << 10, MaxMessageMemory: 256 << 20,
			MaxRetainedMessages: 1000, MaxRetainedBytes: SizeAuto, MaxQoS: 1, MaxKeepalive: Duration(300 * time.Second), MaxSessionExpiry: Duration(24 * time.Hour),
			MaxClientIDLength: 64, MaxTopicLevels: 8, SharedSubscriptionStrategy: "hash_topic", ConnectTimeout: Duration(5 * time.Second), WriteTimeout: Duration(time.Minute),
			MaxPublishBytesRate: 64 << 10, MaxQueueMemory: 1 << 20},
		Persistence: Persistence{Durability: "periodic", DataDir: "/var/lib/tern", SyncInterval: Duration(250 * time.Millisecond), Paging: true},
		Log:         Log{Level: "debug", Format: "json"},
		Admin: Admin{Listen: "0.0.0.0:18083", Token: "a-long-bearer-token", AllowedHosts: []string{"tern.example.svc"}, Dashboard: true,
			CORSOrigins: []string{"https://dash.example"},
			APIKeys:     []APIKey{{Key: "ops", Secret: "0123456789abcdef"}, {Key: "ci", Secret: "fedcba9876543210"}}},
		DrainDelay:      Duration(5 * time.Second),
		ShutdownTimeout: Duration(time.Minute),
		Bans:            Bans{File: "/var/lib/tern/bans.json", Flapping: Flapping{MaxConnects: 15, Window: Duration(2 * time.Minute), BanTime: Duration(10 * time.Minute)}},
		Events: Events{Node: "broker-1", Presence: true, Webhooks: []Webhook{{URL: "https://hooks.example/all"},
			{URL: "http://127.0.0.1:9000/mqtt", Events: []string{"client.connected", "message.publish"}, Topics: []string{"sensors/#"},
				BatchSize: 50, MaxBackoff: Duration(10 * time.Second)}}},
	}
	want.Auth.JWT, want.Auth.HTTP = defaultJWT(), defaultHTTPAuth()
	want.Cluster = defaultCluster()
	want.Cluster.Node, want.Cluster.Listen, want.Cluster.LeaseTTL = "tern-0", "0.0.0.0:7946", Duration(6*time.Second)
	want.Cluster.Peers = []string{"tern-1.tern:7946", "tern-2.tern:7946"}
	if !equal(c, want) {
		got, _ := c.YAML()
		t.Fatalf("got\n%s", got)
	}
	if w := c.Where("limits.max_qos"); !strings.HasSuffix(w, "tern.yaml:50") {
		t.Errorf("Where(limits.max_qos) = %q", w)
	}
	if w := c.Where("listeners.tcp[0].address"); !strings.HasSuffix(w, "tern.yaml:8") {
		t.Errorf("Where(listeners.tcp[0].address) = %q", w)
	}

	// Every limit reaches tern.Options.
	o := c.ServerOptions(nil)
	f, tr := false, true
	_ = tr
	wantOpts := tern.Options{
		MaxPacketSize: 256 << 10, ReceiveMaximum: 10, MaxInflight: 20, MaxQueuedMessages: 30, MaxQueuedBytes: 1e6,
		QueueFullPolicy: tern.DropOldest, MaxPendingBytes: 512 << 10, MaxMessageMemory: 256 << 20, MaxRetainedMessages: 1000,
		QueueQoS0Offline: &f, MaxQoS: ptr[byte](1), RetainAvailable: &f, WildcardSubAvailable: &f, SubIDAvailable: &f,
		SharedSubAvailable: &f, TopicAliasMaximum: ptr[uint16](0), MaxKeepAlive: 300, MaxSessionExpiry: 86400,
		MaxClientIDLength: 64, MaxTopicLevels: 8, ConnectTimeout: 5 * time.Second, WriteTimeout: time.Minute, SysInterval: -1,
		Durability: tern.DurabilityPeriodic, SyncInterval: 250 * time.Millisecond, SharedStrategy: tern.SharedHashTopic, MaxPublishBytesRate: 64 << 10,
		MaxQueueMemory: 1 << 20,
	}
	if !reflect.DeepEqual(*o, wantOpts) {
		t.Errorf("ServerOptions:\n got %+v\nwant %+v", *o, wantOpts)
	}
}

// Every tern.Options field is a configuration key, or deliberately not.
func TestEveryOptionIsConfigurable(t *testing.T) {
	covered := map[string]string{
		"MaxPacketSize": "limits.max_packet_size", "ReceiveMaximum": "limits.receive_maximum",
		"MaxInflight": "limits.max_inflight_messages", "MaxQueuedMessages": "limits.max_queued_messages",
		"MaxQueuedBytes": "limits.max_queued_bytes", "QueueQoS0Offline": "limits.queue_qos0_messages",
		"MaxQoS": "limits.max_qos", "RetainAvailable": "limits.retain_available",
		"WildcardSubAvailable": "limits.wildcard_subscription_available", "SubIDAvailable": "limits.subscription_identifier_available",
		"SharedSubAvailable": "limits.shared_subscription_available", "SharedStrategy": "limits.shared_subscription_strategy", "TopicAliasMaximum": "limits.max_topic_alias",
		"MaxKeepAlive": "limits.max_keepalive", "MaxSessionExpiry": "limits.max_session_expiry",
		"MaxClientIDLength": "limits.max_client_id_length", "MaxTopicLevels": "limits.max_topic_levels",
		"ConnectTimeout": "limits.connect_timeout", "WriteTimeout": "limits.write_timeout", "SysInterval": "sys_interval",
		"Logger":         "", // log.level and log.format build it
		"InlineClientID": "", // only matters to embedders using the in-process client
		"NodeID":         "node_id",
		"MaxConnections": "limits.max_connections", "MaxSubscriptionsPerClient": "limits.max_subscriptions_per_client",
		"MaxPublishRate": "limits.max_publish_rate", "MaxPublishBytesRate": "limits.max_publish_bytes_rate",
		"QueueFullPolicy": "limits.queue_full_policy", "MaxPendingBytes": "limits.max_pending_bytes",
		"MaxMessageMemory": "limits.max_message_memory", "MaxRetainedMessages": "limits.max_retained_messages",
		"MaxRetainedBytes": "limits.max_retained_bytes", "MaxQueueMemory": "limits.max_queue_memory",
		"DisablePaging": "persistence.paging",
		"Store":         "persistence.data_dir", "Durability": "persistence.durability", "SyncInterval": "persistence.sync_interval",
	}
	names := make(map[string]bool)
	for _, k := range Keys() {
		names[k.Name] = true
	}
	for f := range reflect.TypeFor[tern.Options]().Fields() {
		key, ok := covered[f.Name]
		if !ok {
			t.Errorf("tern.Options.%s has no configuration key: add one to config.Limits (or to the exceptions here)", f.Name)
		} else if key != "" && !names[key] {
			t.Errorf("tern.Options.%s: key %s does not exist", f.Name, key)
		}
	}
}

func TestBadFiles(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string // substrings of the error
	}{
		{"unknown top-level key", "listners:\n  tcp: []\n", []string{`tern.yaml:1: unknown key "listners"`, `did you mean "listeners"`}},
		{"unknown nested key", "limits:\n  max_packet_sise: 1024\n", []string{`tern.yaml:2: unknown key "limits.max_packet_sise"`, `"limits.max_packet_size"`}},
		{"unknown key in a listener", "listeners:\n  tcp:\n    - adress: 127.0.0.1:1\n", []string{`tern.yaml:3: unknown key "listeners.tcp[0].adress"`}},
		{"duplicate key", "log:\n  level: info\n  level: debug\n", []string{`log.level`}},
		{"not a number", "limits:\n  max_queued_messages: lots\n", []string{`tern.yaml:2: limits.max_queued_messages: "lots" is not a whole number`}},
		{"number too big", "limits:\n  receive_maximum: 70000\n", []string{`limits.receive_maximum: "70000" is not a whole number from 0 to 65535`}},
		{"not a boolean", "auth:\n  allow_anonymous: maybe\n", []string{`tern.yaml:2: auth.allow_anonymous: "maybe" is not a boolean`}},
		{"not a duration", "sys_interval: soon\n", []string{`sys_interval: "soon" is not a duration`}},
		{"not a size", "limits:\n  max_packet_size: 1 lorry\n", []string{`limits.max_packet_size: "1 lorry" is not a size`}},
		{"list for a value", "log:\n  level: [info]\n", []string{`tern.yaml:2: log.level: want a single value`}},
		{"value for a section", "limits: 5\n", []string{`tern.yaml:1: limits: want a mapping`}},
		{"missing value", "limits:\n  max_qos:\n", []string{`limits.max_qos: no value given`}},
		{"out of range", "limits:\n  max_qos: 3\n", []string{`limits.max_qos (from `, `tern.yaml:2): 3 is not 0, 1 or 2`}},
		{"packet size too small", "limits:\n  max_packet_size: 10\n", []string{`limits.max_packet_size`, `between 64 and 268435460`}},
		{"log level", "log:\n  level: loud\n", []string{`log.level (from `, `"loud" is not debug, info, warn or error`}},
		{"log format", "log:\n  format: xml\n", []string{`log.format`}},
		{"shared strategy", "limits:\n  shared_subscription_strategy: sticky\n", []string{`limits.shared_subscription_strategy (from `, `"sticky" is not round_robin, random`}},
		{"bad address", "listeners:\n  tcp: [\"local host\"]\n", []string{`listeners.tcp[0].address (from `, `"local host" is not host:port`}},
		{"named port", "listeners:\n  tcp: [localhost:mqtt]\n", []string{`listeners.tcp[0].address (from `, `the port "mqtt" is not a number from 0 to 65535`}},
		{"port out of range", "listeners:\n  tcp: [127.0.0.1:99999]\n", []string{`listeners.tcp[0].address (from `, `the port "99999"`}},
		{"admin port out of range", "admin:\n  listen: 127.0.0.1:65536\n", []string{`admin.listen (from `, `the port "65536"`}},
		{"certificate on a tcp listener", "listeners:\n  tcp: [{address: 127.0.0.1:1883, cert_file: a.crt}]\n", []string{`listeners.tcp[0].cert_file`, "only a tls or wss listener"}},
		{"negative connection rate", "listeners:\n  tcp: [{address: 127.0.0.1:1883, max_connection_rate: -1}]\n", []string{`listeners.tcp[0].max_connection_rate`}},
		{"open listener with an ACL of its own", "listeners:\n  tcp: [{address: 0.0.0.0:1883, acl_file: acl}]\nauth:\n  allow_anonymous: true\n", []string{`listeners.tcp[0]`, "password_file of its own"}},
		{"TLS without certificate", "listeners:\n  tls: [127.0.0.1:8883]\n", []string{`tls.cert_file`, `tls.key_file`}},
		{"TLS version", "tls:\n  min_version: \"1.0\"\n", []string{`tls.min_version`}},
		{"identity without CA", "tls:\n  use_identity_as_username: true\n", []string{`tls.use_identity_as_username`, `tls.client_ca_file`}},
		{"no listener", "listeners:\n  tcp: []\n", []string{`no MQTT listener`}},
		{"exposed without auth", "listeners:\n  tcp: [0.0.0.0:1883]\n", []string{`listeners.tcp[0]`, `auth.password_file`, `--password-file`}},
		{"admin exposed without keys", "admin:\n  listen: 0.0.0.0:18083\n", []string{`admin.listen`, `admin.api_keys`, `admin.token`}},
		{"short API secret", "admin:\n  api_keys: [ops:short]\n", []string{`admin.api_keys[0].secret`}},
		{"keepalive too long", "limits:\n  max_keepalive: 1d\n", []string{`limits.max_keepalive`, `at most 65535 seconds`}},
		{"proxy trusted without proxy", "listeners:\n  tcp:\n    - address: 127.0.0.1:1883\n      proxy_trusted: [nonsense]\n",
			[]string{`listeners.tcp[0].proxy_trusted (from `, `needs proxy_protocol: true`, `listeners.tcp[0].proxy_trusted[0]`}},
		{"not YAML", "limits: [\n", []string{`tern.yaml`}},
		{"socket mode", "listeners:\n  unix:\n    - path: /tmp/s\n      mode: rw\n", []string{`listeners.unix[0].mode`, `octal`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeFile(t, "tern.yaml", tt.file), nil, nil)
			if err == nil {
				t.Fatal("loaded without error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestLayers(t *testing.T) {
	file := writeFile(t, "tern.yaml", "limits:\n  max_qos: 1\n  max_topic_levels: 4\nlog:\n  level: warn\n")
	newFlags := func(args ...string) *pflag.FlagSet {
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		RegisterFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return fs
	}
	tests := []struct {
		name  string
		env   []string
		flags []string
		check func(t *testing.T, c *Config)
	}{
		{"file alone", nil, nil, func(t *testing.T, c *Config) {
			if c.Limits.MaxQoS != 1 || c.Log.Level != "warn" || c.Limits.MaxTopicLevels != 4 {
				t.Errorf("got %+v %+v", c.Limits, c.Log)
			}
		}},
		{"environment over file", []string{"TERN_LIMITS_MAX_QOS=0", "PATH=/bin", "TERN_CONFIG=ignored"}, nil, func(t *testing.T, c *Config) {
			if c.Limits.MaxQoS != 0 || c.Limits.MaxTopicLevels != 4 || c.Where("limits.max_qos") != "TERN_LIMITS_MAX_QOS" {
				t.Errorf("max_qos %d from %s", c.Limits.MaxQoS, c.Where("limits.max_qos"))
			}
		}},
		{"flags over environment", []string{"TERN_LIMITS_MAX_QOS=0", "TERN_LOG_LEVEL=error"}, []string{"--max-qos", "2"}, func(t *testing.T, c *Config) {
			if c.Limits.MaxQoS != 2 || c.Log.Level != "error" || c.Where("limits.max_qos") != "--max-qos" {
				t.Errorf("max_qos %d, level %s", c.Limits.MaxQoS, c.Log.Level)
			}
		}},
		{"lists from the environment", []string{"TERN_LISTENERS_TCP=127.0.0.1:1,127.0.0.1:2", "TERN_ADMIN_API_KEYS=a:0123456789abcdef"}, nil, func(t *testing.T, c *Config) {
			if want := []NetListener{{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2"}}; !slices.Equal(addrs(c.Listeners.TCP), addrs(want)) {
				t.Errorf("tcp %v", c.Listeners.TCP)
			}
			if len(c.Admin.APIKeys) != 1 || c.Admin.APIKeys[0] != (APIKey{"a", "0123456789abcdef"}) {
				t.Errorf("api keys %v", c.Admin.APIKeys)
			}
		}},
		{"repeated list flag", []string{"TERN_LISTENERS_TCP=127.0.0.1:9"}, []string{"-l", "127.0.0.1:1", "--listen", "127.0.0.1:2", "--unix", "/tmp/t.sock"}, func(t *testing.T, c *Config) {
			if got := addrs(c.Listeners.TCP); !slices.Equal(got, []string{"127.0.0.1:1", "127.0.0.1:2"}) || len(c.Listeners.Unix) != 1 {
				t.Errorf("tcp %v unix %v", got, c.Listeners.Unix)
			}
		}},
		{"empty list flag turns TCP off", nil, []string{"--listen", "", "--unix", "/tmp/t.sock"}, func(t *testing.T, c *Config) {
			if len(c.Listeners.TCP) != 0 {
				t.Errorf("tcp %v", c.Listeners.TCP)
			}
		}},
		{"boolean flag without value", nil, []string{"--allow-anonymous", "--listen", "0.0.0.0:1883"}, func(t *testing.T, c *Config) {
			if !c.Auth.AllowAnonymous {
				t.Error("allow_anonymous not set")
			}
		}},
		{"duration and size flags", []string{"TERN_SYS_INTERVAL=1m"}, []string{"--max-packet-size", "64KiB", "--drain-delay", "2s"}, func(t *testing.T, c *Config) {
			if c.Limits.MaxPacketSize != 64<<10 || c.DrainDelay != Duration(2*time.Second) || c.SysInterval != Duration(time.Minute) {
				t.Errorf("%v %v %v", c.Limits.MaxPacketSize, c.DrainDelay, c.SysInterval)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(file, tt.env, newFlags(tt.flags...))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func addrs(ls []NetListener) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Address)
	}
	return out
}

func TestBadEnvironmentAndFlags(t *testing.T) {
	tests := []struct {
		name  string
		env   []string
		flags []string
		want  []string
	}{
		{"bad variable", []string{"TERN_LIMITS_MAX_QOS=two"}, nil, []string{"limits.max_qos (from TERN_LIMITS_MAX_QOS)", `"two"`}},
		{"out of range variable", []string{"TERN_LIMITS_MAX_QOS=7"}, nil, []string{"limits.max_qos (from TERN_LIMITS_MAX_QOS): 7 is not 0, 1 or 2"}},
		{"out of range flag", nil, []string{"--max-qos=5"}, []string{"limits.max_qos (from --max-qos): 5 is not 0, 1 or 2"}},
		{"bad API key variable", []string{"TERN_ADMIN_API_KEYS=nocolon"}, nil, []string{"admin.api_keys (from TERN_ADMIN_API_KEYS)", "key:secret"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			RegisterFlags(fs)
			if err := fs.Parse(tt.flags); err != nil {
				t.Fatal(err)
			}
			_, err := Load("", tt.env, fs)
			if err == nil {
				t.Fatal("loaded without error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
	// A flag value that does not parse is refused by the flag parser itself.
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	RegisterFlags(fs)
	if err := fs.Parse([]string{"--max-qos", "many"}); err == nil || !strings.Contains(err.Error(), "--max-qos") {
		t.Errorf("parsing --max-qos many: %v", err)
	}
}

func TestPrintedConfigLoadsBack(t *testing.T) {
	c, err := Load(writeFile(t, "tern.yaml", goodFile), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "0123456789abcdef") || strings.Contains(string(out), "a-long-bearer-token") {
		t.Errorf("secrets printed:\n%s", out)
	}
	if _, err := Load(writeFile(t, "printed.yaml", string(out)), nil, nil); err == nil ||
		!strings.Contains(err.Error(), "admin.api_keys[0].secret") || !strings.Contains(err.Error(), "admin.token") {
		t.Errorf("printed configuration with secrets hidden: %v", err)
	}
	// With the secrets put back, it is the same configuration.
	text := strings.Replace(string(out), redacted, c.Admin.APIKeys[0].Secret, 1)
	text = strings.Replace(text, redacted, c.Admin.APIKeys[1].Secret, 1)
	text = strings.Replace(text, redacted, c.Admin.Token, 1)
	back, err := Load(writeFile(t, "printed.yaml", text), nil, nil)
	if err != nil {
		t.Fatalf("printed configuration does not load: %v\n%s", err, text)
	}
	if !equal(back, c) {
		t.Errorf("round trip changed the configuration:\n%s", out)
	}
	if ch := Changed(c, back); len(ch) != 0 {
		t.Errorf("Changed = %v", ch)
	}
	back.Log.Level = "info"
	back.Limits.MaxQoS = 2
	if ch := Changed(c, back); !slices.Equal(ch, []string{"limits.max_qos", "log.level"}) {
		t.Errorf("Changed = %v", ch)
	}
}

func TestValues(t *testing.T) {
	durations := []struct {
		in   string
		want time.Duration
		out  string
	}{
		{"30", 30 * time.Second, "30s"}, {"90s", 90 * time.Second, "90s"}, {"1h30m", 90 * time.Minute, "90m"},
		{"2d", 48 * time.Hour, "2d"}, {"1w", 7 * 24 * time.Hour, "1w"}, {"1500ms", 1500 * time.Millisecond, "1.5s"}, {"0", 0, "0s"},
	}
	for _, d := range durations {
		got, err := ParseDuration(d.in)
		if err != nil || time.Duration(got) != d.want || got.String() != d.out {
			t.Errorf("ParseDuration(%q) = %v (%s), %v; want %v (%s)", d.in, time.Duration(got), got, err, d.want, d.out)
		}
	}
	sizes := []struct {
		in   string
		want int64
		out  string
	}{
		{"1048576", 1 << 20, "1MiB"}, {"256KiB", 256 << 10, "256KiB"}, {"2GB", 2e9, "2GB"}, {"1000", 1000, "1KB"}, {"1 MiB", 1 << 20, "1MiB"}, {"100", 100, "100"},
	}
	for _, s := range sizes {
		got, err := ParseSize(s.in)
		if err != nil || int64(got) != s.want || got.String() != s.out {
			t.Errorf("ParseSize(%q) = %d (%s), %v; want %d (%s)", s.in, got, got, err, s.want, s.out)
		}
	}
	for _, bad := range []string{"", "1.5MiB", "MiB", "-"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded", bad)
		}
	}
	for _, bad := range []string{"", "soon", "1x", "d"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", bad)
		}
	}
}

func TestKeysHaveUniqueFlagsAndUsage(t *testing.T) {
	seen := map[string]string{}
	for _, k := range Keys() {
		if k.Usage == "" {
			t.Errorf("%s has no usage text", k.Name)
		}
		if k.Flag == "-" {
			continue // in the file only
		}
		if prev, ok := seen[k.Flag]; ok {
			t.Errorf("flag --%s is used by %s and %s", k.Flag, prev, k.Name)
		}
		seen[k.Flag] = k.Name
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1883": true, "127.1.2.3:1": true, "[::1]:1883": true, "localhost:1883": true,
		":1883": false, "0.0.0.0:1883": false, "[::]:1883": false, "192.168.1.2:1883": false,
		"example.com:1883": false, "garbage": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// The container image's configuration starts once auth is chosen, and not
// before.
func TestDockerConfig(t *testing.T) {
	_, err := Load("../../deploy/docker.yaml", nil, nil)
	for _, key := range []string{"listeners.tcp[0]", "TERN_AUTH_ALLOW_ANONYMOUS", "admin.listen", "TERN_ADMIN_TOKEN"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("docker.yaml without auth: %v; want it to name %s", err, key)
		}
	}
	c, err := Load("../../deploy/docker.yaml", []string{"TERN_AUTH_ALLOW_ANONYMOUS=true", "TERN_ADMIN_TOKEN=0123456789abcdef"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners.TCP[0].Address != "0.0.0.0:1883" || c.Listeners.WS[0].Address != "0.0.0.0:8083" || c.Admin.Listen != "0.0.0.0:18083" {
		t.Errorf("docker.yaml: %+v %+v", c.Listeners, c.Admin)
	}
}
