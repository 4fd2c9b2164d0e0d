package config

// The keys of external authentication (auth.jwt, auth.http), the ban list
// (bans) and events (events): see tern.example.yaml for each.

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ternmq/tern/topics"
)

// JWT is auth.jwt: authentication by JSON Web Tokens (package
// hooks/auth/jwt). It is on when jwks_url, public_key_file or
// hmac_secret_file is set.
type JWT struct {
	JWKSURL          string    `yaml:"jwks_url" flag:"jwt-jwks-url" usage:"JWKS URL of the identity provider (turns JWT authentication on)"`
	PublicKeyFile    string    `yaml:"public_key_file" flag:"jwt-public-key-file" usage:"PEM file of JWT verification keys (or certificates)"`
	HMACSecretFile   string    `yaml:"hmac_secret_file" flag:"jwt-hmac-secret-file" usage:"file holding the HMAC secret of HS256/384/512 tokens"`
	Algorithms       []string  `yaml:"algorithms" flag:"jwt-algorithms" usage:"JWT signing algorithms accepted (RS256, ES256, EdDSA, ...; never none)"`
	From             string    `yaml:"from" flag:"jwt-from" usage:"CONNECT field holding the token: password or username"`
	AuthMethod       string    `yaml:"auth_method" flag:"jwt-auth-method" usage:"MQTT 5 authentication method for tokens renewed with AUTH"`
	JWKSRefresh      Duration  `yaml:"jwks_refresh" flag:"jwt-jwks-refresh" usage:"how often the JWKS is fetched again"`
	JWKSUnknownKID   Duration  `yaml:"jwks_unknown_kid_interval" flag:"jwt-jwks-unknown-kid-interval" usage:"least time between extra JWKS fetches for unknown key ids"`
	JWKSCAFile       string    `yaml:"jwks_ca_file" flag:"jwt-jwks-ca-file" usage:"PEM CA file for the JWKS URL (default: the system's)"`
	Issuer           string    `yaml:"issuer" flag:"jwt-issuer" usage:"required iss claim"`
	Audience         string    `yaml:"audience" flag:"jwt-audience" usage:"required aud claim"`
	Leeway           Duration  `yaml:"leeway" flag:"jwt-leeway" usage:"clock skew allowed for exp, nbf and iat"`
	RequireExp       bool      `yaml:"require_exp" flag:"jwt-require-exp" usage:"refuse tokens without exp"`
	DisconnectExpiry bool      `yaml:"disconnect_on_expiry" flag:"jwt-disconnect-on-expiry" usage:"disconnect clients when their token expires (v5: 0xA0)"`
	Claims           StringMap `yaml:"claims" flag:"jwt-claims" usage:"claims that must equal a value, claim=value; {clientid}, {username} and {cn} are substituted"`
	UsernameClaim    string    `yaml:"username_claim" flag:"jwt-username-claim" usage:"claim that becomes the client's user name"`
	ACLClaim         string    `yaml:"acl_claim" flag:"jwt-acl-claim" usage:"claim holding the client's ACL in EMQX's format (\"\": none)"`
	CacheSize        int       `yaml:"cache_size" flag:"jwt-cache-size" usage:"verified tokens remembered, so a reconnect skips the signature check (0: none)"`
}

// Enabled reports whether JWT authentication is configured.
func (j *JWT) Enabled() bool {
	return j.JWKSURL != "" || j.PublicKeyFile != "" || j.HMACSecretFile != ""
}

func defaultJWT() JWT {
	return JWT{From: "password", AuthMethod: "JWT", JWKSRefresh: Duration(10 * time.Minute),
		JWKSUnknownKID: Duration(10 * time.Second), RequireExp: true, DisconnectExpiry: true, ACLClaim: "acl", CacheSize: 10_000}
}

// HTTPAuth is auth.http: authentication and authorization by an HTTP
// service (package hooks/auth/httpauth). It is on when authn_url or
// authz_url is set. Reloaded on SIGHUP.
type HTTPAuth struct {
	AuthnURL         string    `yaml:"authn_url" flag:"http-auth-authn-url" usage:"URL that authenticates CONNECTs (turns HTTP authentication on)"`
	AuthzURL         string    `yaml:"authz_url" flag:"http-auth-authz-url" usage:"URL that authorizes publishes and subscriptions"`
	Method           string    `yaml:"method" flag:"http-auth-method" usage:"POST (a JSON body) or GET (query parameters)"`
	Headers          StringMap `yaml:"headers" flag:"http-auth-headers" usage:"headers sent with every request, name=value"`
	Response         string    `yaml:"response" flag:"http-auth-response" usage:"answer form: emqx (JSON result) or status (2xx allows)"`
	Timeout          Duration  `yaml:"timeout" flag:"http-auth-timeout" usage:"longest wait for an answer, including the wait for a request slot"`
	MaxConcurrent    int       `yaml:"max_concurrent" flag:"http-auth-max-concurrent" usage:"most requests in flight to the service"`
	CacheTTL         Duration  `yaml:"cache_ttl" flag:"http-auth-cache-ttl" usage:"how long allow answers are cached (0: not)"`
	NegativeCacheTTL Duration  `yaml:"negative_cache_ttl" flag:"http-auth-negative-cache-ttl" usage:"how long deny answers are cached (0: not)"`
	CacheMaxEntries  int       `yaml:"cache_max_entries" flag:"http-auth-cache-max-entries" usage:"most cached authentication answers"`
	OnError          string    `yaml:"on_error" flag:"http-auth-on-error" usage:"when the service fails: deny (CONNACK 0x88) or ignore (next in chain)"`
	TLS              ClientTLS `yaml:"tls"`
}

// Enabled reports whether HTTP auth is configured.
func (h *HTTPAuth) Enabled() bool { return h.AuthnURL != "" || h.AuthzURL != "" }

func defaultHTTPAuth() HTTPAuth {
	return HTTPAuth{Method: "POST", Response: "emqx", Timeout: Duration(5 * time.Second), MaxConcurrent: 256,
		CacheTTL: Duration(time.Minute), NegativeCacheTTL: Duration(5 * time.Second), CacheMaxEntries: 100_000, OnError: "deny"}
}

// ClientTLS is the TLS of a connection the broker makes.
type ClientTLS struct {
	CAFile   string `yaml:"ca_file" flag:"http-auth-ca-file" usage:"PEM CA file for the HTTP auth service (default: the system's)"`
	CertFile string `yaml:"cert_file" flag:"http-auth-cert-file" usage:"PEM client certificate for the HTTP auth service"`
	KeyFile  string `yaml:"key_file" flag:"http-auth-key-file" usage:"PEM private key of the client certificate"`
}

// Bans is the ban list (package hooks/ban).
type Bans struct {
	File     string   `yaml:"file" flag:"bans-file" usage:"JSON file of the ban list (default: bans/bans.json in persistence.data_dir; memory only with durability off)"`
	Flapping Flapping `yaml:"flapping"`
}

// Flapping is bans.flapping: banning client ids that reconnect in a loop.
// Reloaded on SIGHUP.
type Flapping struct {
	MaxConnects int      `yaml:"max_connects" flag:"flapping-max-connects" usage:"CONNECTs a client id may make within flapping.window before it is banned (0: off)"`
	Window      Duration `yaml:"window" flag:"flapping-window" usage:"period the CONNECTs are counted over"`
	BanTime     Duration `yaml:"ban_time" flag:"flapping-ban-time" usage:"how long a flapping client id is banned"`
}

func defaultBans() Bans {
	return Bans{Flapping: Flapping{Window: Duration(time.Minute), BanTime: Duration(5 * time.Minute)}}
}

// BansFile returns the ban list's file: bans.file, or bans/bans.json in
// the data directory, or "" (memory only) with durability off. It is in a
// directory of its own because the store checks every file of the data
// directory against what it wrote at its last clean close, and the ban
// list changes on its own ("tern ban --offline").
func (c *Config) BansFile() string {
	switch {
	case c.Bans.File != "":
		return c.Bans.File
	case c.Persistence.Durability != "off" && c.Persistence.DataDir != "":
		return filepath.Join(c.Persistence.DataDir, "bans", "bans.json")
	}
	return ""
}

// Events are the broker's event outputs (package hooks/events).
type Events struct {
	Node     string    `yaml:"node" flag:"events-node" usage:"node name in event topics and payloads (default: the host name)"`
	Presence bool      `yaml:"presence" flag:"events-presence" usage:"publish $SYS/brokers/<node>/clients/<id>/connected|disconnected"`
	Webhooks []Webhook `yaml:"webhooks" flag:"webhook" usage:"URL to POST events to, repeatable (all events; set the rest in the file)"`
}

// Webhook is one of events.webhooks. Zero values take the defaults given.
type Webhook struct {
	URL          string    `yaml:"url"`
	Name         string    `yaml:"name,omitempty"`
	Events       []string  `yaml:"events,omitempty"`
	Topics       []string  `yaml:"topics,omitempty"`
	Headers      StringMap `yaml:"headers,omitempty"`
	OmitPayload  bool      `yaml:"omit_payload,omitempty"`
	QueueSize    int       `yaml:"queue_size,omitempty"`
	QueueBytes   Size      `yaml:"queue_bytes,omitempty"`
	BatchSize    int       `yaml:"batch_size,omitempty"`
	BatchDelay   Duration  `yaml:"batch_delay,omitempty"`
	Timeout      Duration  `yaml:"timeout,omitempty"`
	MaxRetries   int       `yaml:"max_retries,omitempty"`
	RetryBackoff Duration  `yaml:"retry_backoff,omitempty"`
	MaxBackoff   Duration  `yaml:"max_backoff,omitempty"`
	CAFile       string    `yaml:"ca_file,omitempty"`
	CertFile     string    `yaml:"cert_file,omitempty"`
	KeyFile      string    `yaml:"key_file,omitempty"`
}

func (w *Webhook) setText(s string) error {
	*w = Webhook{URL: s}
	return nil
}

func (w *Webhook) text() string { return w.URL }

// EventNames are the events a webhook may send (hooks/events keeps the
// same list).
var EventNames = []string{"client.connected", "client.disconnected", "session.subscribed", "session.unsubscribed",
	"message.publish", "message.delivered", "message.dropped"}

func (c *Config) validateExtAuth(v *validator) {
	if j := &c.Auth.JWT; j.Enabled() {
		if len(j.Algorithms) == 0 {
			v.fail("auth.jwt.algorithms", "list the algorithms your identity provider signs with (RS256, ES256, EdDSA, ...)")
		}
		hmac, asym := false, false
		for i, a := range j.Algorithms {
			switch {
			case strings.EqualFold(a, "none"):
				v.fail(fmt.Sprintf("auth.jwt.algorithms[%d]", i), `"none" is never accepted`)
			case slices.Contains([]string{"HS256", "HS384", "HS512"}, a):
				hmac = true
			case slices.Contains([]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}, a):
				asym = true
			default:
				v.fail(fmt.Sprintf("auth.jwt.algorithms[%d]", i), "%q is not a JWA signing algorithm (RS256, ES256, EdDSA, HS256, ...)", a)
			}
		}
		if hmac && j.HMACSecretFile == "" {
			v.fail("auth.jwt.hmac_secret_file", "needed by the HS algorithms listed")
		}
		if asym && j.JWKSURL == "" && j.PublicKeyFile == "" {
			v.fail("auth.jwt.jwks_url", "the algorithms listed need auth.jwt.jwks_url or auth.jwt.public_key_file")
		}
		if j.JWKSURL != "" {
			v.httpURL("auth.jwt.jwks_url", j.JWKSURL)
		}
		if j.From != "password" && j.From != "username" {
			v.fail("auth.jwt.from", "%q is not password or username", j.From)
		}
		if j.AuthMethod == "" {
			v.fail("auth.jwt.auth_method", "must not be empty")
		}
		if j.JWKSRefresh <= 0 || j.JWKSUnknownKID <= 0 {
			v.fail("auth.jwt.jwks_refresh", "jwks_refresh and jwks_unknown_kid_interval must be positive")
		}
		v.nonNegative("auth.jwt.leeway", j.Leeway)
		if j.CacheSize < 0 {
			v.fail("auth.jwt.cache_size", "must not be negative (0: no cache)")
		}
	}
	if h := &c.Auth.HTTP; h.Enabled() {
		for key, u := range map[string]string{"auth.http.authn_url": h.AuthnURL, "auth.http.authz_url": h.AuthzURL} {
			if u != "" {
				v.httpURL(key, u)
			}
		}
		if h.Method != "POST" && h.Method != "GET" {
			v.fail("auth.http.method", "%q is not POST or GET", h.Method)
		}
		if h.Response != "emqx" && h.Response != "status" {
			v.fail("auth.http.response", "%q is not emqx or status", h.Response)
		}
		if h.OnError != "deny" && h.OnError != "ignore" {
			v.fail("auth.http.on_error", "%q is not deny or ignore", h.OnError)
		}
		if h.Timeout <= 0 {
			v.fail("auth.http.timeout", "must be positive")
		}
		if h.MaxConcurrent < 1 {
			v.fail("auth.http.max_concurrent", "must be at least 1")
		}
		if h.CacheMaxEntries < 1 {
			v.fail("auth.http.cache_max_entries", "must be at least 1")
		}
		v.nonNegative("auth.http.cache_ttl", h.CacheTTL)
		v.nonNegative("auth.http.negative_cache_ttl", h.NegativeCacheTTL)
		v.headers("auth.http.headers", h.Headers)
		if (h.TLS.CertFile == "") != (h.TLS.KeyFile == "") {
			v.fail("auth.http.tls.cert_file", "cert_file and key_file go together")
		}
	}
	f := &c.Bans.Flapping
	if f.MaxConnects < 0 {
		v.fail("bans.flapping.max_connects", "must not be negative (0: off)")
	}
	if f.Window <= 0 {
		v.fail("bans.flapping.window", "must be positive")
	}
	if f.BanTime <= 0 {
		v.fail("bans.flapping.ban_time", "must be positive")
	}
	for i, w := range c.Events.Webhooks {
		key := fmt.Sprintf("events.webhooks[%d]", i)
		v.httpURL(key+".url", w.URL)
		for j, e := range w.Events {
			if !slices.Contains(EventNames, e) {
				v.fail(fmt.Sprintf("%s.events[%d]", key, j), "%q is not one of %s", e, strings.Join(EventNames, ", "))
			}
		}
		for j, t := range w.Topics {
			if err := topics.ValidateFilter(t); err != nil {
				v.fail(fmt.Sprintf("%s.topics[%d]", key, j), "%q: %v", t, err)
			}
		}
		v.headers(key+".headers", w.Headers)
		for name, n := range map[string]int{"queue_size": w.QueueSize, "batch_size": w.BatchSize, "max_retries": w.MaxRetries} {
			if n < 0 {
				v.fail(key+"."+name, "must not be negative (0: the default)")
			}
		}
		for name, d := range map[string]Duration{"batch_delay": w.BatchDelay, "timeout": w.Timeout, "retry_backoff": w.RetryBackoff, "max_backoff": w.MaxBackoff} {
			v.nonNegative(key+"."+name, d)
		}
		if w.QueueBytes < 0 {
			v.fail(key+".queue_bytes", "must not be negative (0: the default)")
		}
		if (w.CertFile == "") != (w.KeyFile == "") {
			v.fail(key+".cert_file", "cert_file and key_file go together")
		}
	}
}

func (v *validator) httpURL(key, s string) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.fail(key, "%q is not an http:// or https:// URL", s)
	}
}

func (v *validator) headers(key string, h StringMap) {
	for name, val := range h {
		if val == redacted {
			v.fail(key+"."+name, "is %s: --print-config hides header values; put the value back", redacted)
		}
		if name == "" || strings.ContainsAny(name, " :\r\n") || strings.ContainsAny(val, "\r\n") {
			v.fail(key, "%q: %q is not a valid header", name, val)
		}
	}
}

// StringMap is a mapping of names to values: a YAML mapping in the file,
// name=value,name=value in the environment and on the command line.
type StringMap map[string]string
