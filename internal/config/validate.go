package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ternmq/tern/listeners"
)

// Validate checks the configuration as a whole: ranges, the settings that
// need each other, and that no listener reachable from the network lets
// anyone in unless that is asked for. Each problem names its key and where
// the value came from; all problems are reported at once.
func (c *Config) Validate() error {
	v := &validator{c: c}
	c.validateListeners(v)
	c.validateTLS(v)
	c.validateLimits(v)
	switch p := c.Persistence; p.Durability {
	case "off":
	case "sync", "periodic":
		if p.DataDir == "" {
			v.fail("persistence.data_dir", "must be set unless persistence.durability is off")
		}
		if p.Durability == "periodic" && p.SyncInterval <= 0 {
			v.fail("persistence.sync_interval", "must be positive when persistence.durability is periodic")
		}
	default:
		v.fail("persistence.durability", "%q is not sync, periodic or off", p.Durability)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.Log.Level)); err != nil {
		v.fail("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		v.fail("log.format", "%q is not text or json", c.Log.Format)
	}
	c.validateAdmin(v)
	c.validateBridges(v)
	c.validateExtAuth(v)
	if l := c.Limits.MaxPublishBytesRate; l < 0 {
		v.fail("limits.max_publish_bytes_rate", "must not be negative (0: no limit)")
	}
	v.nonNegative("drain_delay", c.DrainDelay)
	if c.ShutdownTimeout <= 0 {
		v.fail("shutdown_timeout", "must be positive")
	}
	c.validateExposure(v)
	return errors.Join(v.errs...)
}

// CheckExposure reports, as Validate does, MQTT listeners reachable from
// the network that anyone could use: neither auth.password_file, auth.jwt,
// auth.http.authn_url nor auth.allow_anonymous is set and, for TLS ones, no
// client certificate is required.
func (c *Config) CheckExposure() error {
	v := &validator{c: c}
	c.validateExposure(v)
	return errors.Join(v.errs...)
}

type validator struct {
	c    *Config
	errs []error
}

// fail records a problem with key, saying where its value came from.
func (v *validator) fail(key, format string, args ...any) {
	where := v.c.Where(key)
	if where == "default" {
		where = ""
	} else {
		where = " (from " + where + ")"
	}
	v.errs = append(v.errs, fmt.Errorf("config: %s%s: %s", key, where, fmt.Sprintf(format, args...)))
}

func (v *validator) nonNegative(key string, d Duration) {
	if d < 0 {
		v.fail(key, "must not be negative")
	}
}

func (v *validator) seconds(key string, d Duration, most uint64) {
	switch {
	case d < 0:
		v.fail(key, "must not be negative")
	case time.Duration(d)%time.Second != 0:
		v.fail(key, "must be a whole number of seconds")
	case uint64(time.Duration(d)/time.Second) > most:
		v.fail(key, "must be at most %d seconds", most)
	}
}

func (v *validator) address(key, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.fail(key, "%q is not host:port (e.g. 0.0.0.0:1883)", addr)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.fail(key, "%q: the port %q is not a number from 0 to 65535", addr, port)
	}
}

// perListener checks the settings of a listener's own.
func (v *validator) perListener(key string, p *PerListener, tls bool) {
	if p.MaxConnections < 0 {
		v.fail(key+".max_connections", "must not be negative (0: no limit)")
	}
	if p.MaxConnectionRate < 0 {
		v.fail(key+".max_connection_rate", "must not be negative (0: no limit)")
	}
	if !tls {
		for k, set := range map[string]bool{"cert_file": p.CertFile != "", "key_file": p.KeyFile != "", "client_ca_file": p.ClientCAFile != ""} {
			if set {
				v.fail(key+"."+k, "only a tls or wss listener has a certificate")
			}
		}
		return
	}
	if (p.CertFile == "") != (p.KeyFile == "") {
		v.fail(key, "cert_file and key_file go together")
	}
}

func (v *validator) proxy(key string, on bool, trusted []string) {
	if !on && len(trusted) > 0 {
		v.fail(key+".proxy_trusted", "needs proxy_protocol: true")
	}
	for i, s := range trusted {
		if _, err := netip.ParsePrefix(s); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(s); err != nil {
			v.fail(fmt.Sprintf("%s.proxy_trusted[%d]", key, i), "%q is not an address or CIDR range", s)
		}
	}
}

func (c *Config) validateListeners(v *validator) {
	l := &c.Listeners
	if len(l.TCP)+len(l.TLS)+len(l.WS)+len(l.WSS)+len(l.Unix) == 0 {
		v.fail("listeners", "no MQTT listener: set listeners.tcp, tls, ws, wss or unix (--listen, --tls-listen, --ws-listen, --wss-listen, --unix)")
	}
	for _, g := range []struct {
		name string
		ls   []NetListener
		tls  bool
	}{{"listeners.tcp", l.TCP, false}, {"listeners.tls", l.TLS, true}} {
		name := g.name
		for i, n := range g.ls {
			key := fmt.Sprintf("%s[%d]", name, i)
			v.address(key+".address", n.Address)
			v.proxy(key, n.ProxyProtocol, n.ProxyTrusted)
			v.perListener(key, &n.PerListener, g.tls)
		}
	}
	for _, g := range []struct {
		name string
		ls   []WSListener
		tls  bool
	}{{"listeners.ws", l.WS, false}, {"listeners.wss", l.WSS, true}} {
		name := g.name
		for i, n := range g.ls {
			key := fmt.Sprintf("%s[%d]", name, i)
			v.address(key+".address", n.Address)
			v.proxy(key, n.ProxyProtocol, n.ProxyTrusted)
			v.perListener(key, &n.PerListener, g.tls)
			if n.Path != "" && !strings.HasPrefix(n.Path, "/") {
				v.fail(key+".path", "%q does not start with /", n.Path)
			}
		}
	}
	for i, u := range l.Unix {
		key := fmt.Sprintf("listeners.unix[%d]", i)
		if u.Path == "" {
			v.fail(key+".path", "no path given")
		}
		if _, err := u.FileMode(); err != nil {
			v.fail(key+".mode", "%v", err)
		}
		v.perListener(key, &u.PerListener, false)
	}
	if !strings.HasPrefix(l.WSPath, "/") {
		v.fail("listeners.ws_path", "%q does not start with /", l.WSPath)
	}
}

// defaultPorts gives an address written without a port the usual port of
// its listener, as Mosquitto's "listener 1883" gives a port without an
// address: "localhost" is localhost:1883 for listeners.tcp, "[::1]" is
// [::1]:1883, "1883" is :1883 (every interface).
func (c *Config) defaultPorts() {
	l := &c.Listeners
	for _, g := range []struct {
		ls   []NetListener
		port string
	}{{l.TCP, "1883"}, {l.TLS, "8883"}} {
		for i := range g.ls {
			g.ls[i].Address = withPort(g.ls[i].Address, g.port)
		}
	}
	for _, g := range []struct {
		ls   []WSListener
		port string
	}{{l.WS, "8083"}, {l.WSS, "8084"}} {
		for i := range g.ls {
			g.ls[i].Address = withPort(g.ls[i].Address, g.port)
		}
	}
	if c.Admin.Listen != "" {
		c.Admin.Listen = withPort(c.Admin.Listen, "18083")
	}
}

// withPort returns addr with port added when it has none.
func withPort(addr, port string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil || addr == "" {
		return addr
	}
	host := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if _, err := netip.ParseAddr(host); err == nil {
		return net.JoinHostPort(host, port)
	}
	if _, err := strconv.ParseUint(addr, 10, 16); err == nil {
		return ":" + addr // a port alone: every interface
	}
	if !strings.ContainsAny(addr, ":[]/ ") {
		return net.JoinHostPort(addr, port) // a host name
	}
	return addr
}

func (c *Config) validateTLS(v *validator) {
	t := &c.TLS
	if _, err := listeners.ParseTLSVersion(t.MinVersion); err != nil {
		v.fail("tls.min_version", "%q is not 1.2 or 1.3", t.MinVersion)
	}
	if _, err := listeners.ParseCipherSuites(t.CipherSuites); err != nil {
		v.fail("tls.cipher_suites", "%v", err)
	}
	if t.UseIdentityAsUsername && t.ClientCAFile == "" {
		v.fail("tls.use_identity_as_username", "needs tls.client_ca_file (--tls-client-ca)")
	}
	needGlobal := false // a tls or wss listener without a certificate of its own
	for _, n := range c.Listeners.TLS {
		needGlobal = needGlobal || n.CertFile == ""
	}
	for _, n := range c.Listeners.WSS {
		needGlobal = needGlobal || n.CertFile == ""
	}
	if needGlobal {
		if t.CertFile == "" {
			v.fail("tls.cert_file", "the tls and wss listeners need a certificate (--tls-cert)")
		}
		if t.KeyFile == "" {
			v.fail("tls.key_file", "the tls and wss listeners need a private key (--tls-key)")
		}
	}
}

func (c *Config) validateLimits(v *validator) {
	l := &c.Limits
	if l.MaxPacketSize < 64 || l.MaxPacketSize > 268435460 {
		v.fail("limits.max_packet_size", "%d is not between 64 and 268435460 bytes", l.MaxPacketSize)
	}
	if l.ReceiveMaximum == 0 {
		v.fail("limits.receive_maximum", "must be at least 1")
	}
	if l.MaxQueuedMessages < 0 {
		v.fail("limits.max_queued_messages", "must not be negative (0: no limit)")
	}
	if l.MaxQueuedBytes < 0 {
		v.fail("limits.max_queued_bytes", "must not be negative (0: no limit)")
	}
	if l.MaxRetainedMessages < 0 {
		v.fail("limits.max_retained_messages", "must not be negative (0: no limit)")
	}
	if l.MaxTopicLevels < 0 {
		v.fail("limits.max_topic_levels", "must not be negative (0: no limit)")
	}
	if l.QueueFullPolicy != "drop_new" && l.QueueFullPolicy != "drop_oldest" {
		v.fail("limits.queue_full_policy", "%q is not drop_new or drop_oldest", l.QueueFullPolicy)
	}
	if _, ok := sharedStrategies[l.SharedSubscriptionStrategy]; !ok {
		v.fail("limits.shared_subscription_strategy", "%q is not round_robin, random, hash_topic or hash_clientid", l.SharedSubscriptionStrategy)
	}
	for key, z := range map[string]Size{"limits.max_message_memory": l.MaxMessageMemory, "limits.max_retained_bytes": l.MaxRetainedBytes} {
		if z < 0 && z != SizeAuto {
			v.fail(key, "must not be negative (0: no limit; auto)")
		}
	}
	if l.MaxQueuedBytes == SizeAuto || l.MaxPendingBytes == SizeAuto {
		v.fail("limits", "only max_message_memory and max_retained_bytes can be auto")
	}
	if l.MaxPendingBytes < 1024 {
		v.fail("limits.max_pending_bytes", "%d is below 1 KiB", l.MaxPendingBytes)
	}
	if l.MaxQoS > 2 {
		v.fail("limits.max_qos", "%d is not 0, 1 or 2", l.MaxQoS)
	}
	v.seconds("limits.max_keepalive", l.MaxKeepalive, 65535)
	v.seconds("limits.max_session_expiry", l.MaxSessionExpiry, 1<<32-2)
	if l.MaxClientIDLength < 1 || l.MaxClientIDLength > 65535 {
		v.fail("limits.max_client_id_length", "%d is not between 1 and 65535", l.MaxClientIDLength)
	}
	if l.MaxTopicLevels < 0 {
		v.fail("limits.max_topic_levels", "must not be negative (0: no limit)")
	}
	if l.ConnectTimeout <= 0 {
		v.fail("limits.connect_timeout", "must be positive")
	}
	if l.WriteTimeout <= 0 {
		v.fail("limits.write_timeout", "must be positive")
	}
}

func (c *Config) validateAdmin(v *validator) {
	a := &c.Admin
	if a.Listen == "" {
		return
	}
	v.address("admin.listen", a.Listen)
	for i, k := range a.APIKeys {
		key := fmt.Sprintf("admin.api_keys[%d]", i)
		switch {
		case k.Key == "" || strings.ContainsAny(k.Key, ": "):
			v.fail(key+".key", "%q: an API key is a non-empty name without spaces or colons", k.Key)
		case k.Secret == redacted:
			v.fail(key+".secret", "is %s: --print-config hides secrets; put the secret back", redacted)
		case len(k.Secret) < 16:
			v.fail(key+".secret", "too short: use at least 16 characters")
		}
	}
	if a.Token == redacted {
		v.fail("admin.token", "is %s: --print-config hides secrets; put the secret back", redacted)
	} else if a.Token != "" && len(a.Token) < 16 {
		v.fail("admin.token", "too short: use at least 16 characters")
	}
	if !IsLoopback(a.Listen) && len(a.APIKeys) == 0 && a.Token == "" {
		v.fail("admin.listen", "%s is reachable from the network: set admin.api_keys (TERN_ADMIN_API_KEYS, --admin-api-key) or admin.token (TERN_ADMIN_TOKEN, --admin-token), or listen on 127.0.0.1", a.Listen)
	}
}

// validateExposure refuses MQTT listeners that anyone on the network could
// use without logging in, unless auth.allow_anonymous (or the listener's
// own allow_anonymous) says so. A TLS listener that requires client
// certificates is not open. A listener with authentication settings of its
// own is judged by them alone.
func (c *Config) validateExposure(v *validator) {
	l := &c.Listeners
	check := func(kind string, i int, addr string, tls bool, own *PerListener) {
		if IsLoopback(addr) || tls && (c.TLS.ClientCAFile != "" || own.ClientCAFile != "") {
			return
		}
		if own.OwnAuth() {
			if own.PasswordFile != "" || own.AllowAnonymous != nil && *own.AllowAnonymous {
				return
			}
			v.fail(fmt.Sprintf("listeners.%s[%d]", kind, i),
				"%s is reachable from the network, and with neither a password_file of its own nor allow_anonymous: true anyone could connect", addr)
			return
		}
		if c.Auth.PasswordFile != "" || c.Auth.AllowAnonymous || c.Auth.JWT.Enabled() || c.Auth.HTTP.AuthnURL != "" {
			return
		}
		v.fail(fmt.Sprintf("listeners.%s[%d]", kind, i),
			"%s is reachable from the network, and with neither auth.password_file (--password-file, TERN_AUTH_PASSWORD_FILE), "+
				"auth.jwt, auth.http.authn_url nor auth.allow_anonymous: true (--allow-anonymous, TERN_AUTH_ALLOW_ANONYMOUS=true) anyone could connect", addr)
	}
	for i, n := range l.TCP {
		check("tcp", i, n.Address, false, &n.PerListener)
	}
	for i, n := range l.TLS {
		check("tls", i, n.Address, true, &n.PerListener)
	}
	for i, n := range l.WS {
		check("ws", i, n.Address, false, &n.PerListener)
	}
	for i, n := range l.WSS {
		check("wss", i, n.Address, true, &n.PerListener)
	}
}

// IsLoopback reports whether a listen address (host:port) is on a loopback
// interface only. No host (every interface) or a host name other than
// localhost is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if h := strings.TrimSuffix(strings.ToLower(host), "."); h == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
