// Package httpauth authenticates and authorizes MQTT clients by asking an
// HTTP service, in the request and response forms of EMQX's HTTP
// authentication and of mosquitto-go-auth's HTTP backend, so that auth
// services written for either work with Tern unchanged.
//
// # Requests
//
// Each check is a POST of a JSON object (or, with Method GET, the same
// fields as query parameters):
//
//	{"clientid": "dev1", "username": "alice", "password": "...",
//	 "peerhost": "192.0.2.7", "peerport": 50432, "listener": "tcp",
//	 "protocol": "mqtt", "proto_ver": 5, "cert_cn": "dev1"}
//
// Authorization requests (to AuthzURL) add what is asked:
//
//	"topic": "dev/1/up", "action": "publish", "qos": 1, "retain": false,
//	"acc": 2
//
// action is publish or subscribe; acc is mosquitto-go-auth's access
// number (2 publish, 4 subscribe). The password is sent to the
// authentication URL only.
//
// # Responses
//
// With Response "emqx" (the default), a 200 answer carries JSON:
//
//	{"result": "allow" | "deny" | "ignore", "is_superuser": false,
//	 "acl": [...], "expire_at": 1767225600}
//
// A 204 allows; "ignore" and a 4xx status leave the decision to the next
// hook. is_superuser lets the client do anything; acl is an access list
// in EMQX's format (package emqxacl), checked before asking AuthzURL and
// before an ACL file; expire_at (Unix seconds) disconnects the client
// then (MQTT 5: 0xA0 Maximum connect time). With Response "status"
// (mosquitto-go-auth's status mode), a 2xx status allows and a 4xx denies.
//
// A 5xx status, a response that does not parse, a failed connection and
// a timeout are errors: OnError "deny" (the default) refuses the CONNECT
// with 0x88 Server unavailable (3.1.1: 3, so devices retry) or denies the
// access; OnError "ignore" leaves the decision to the next hook.
//
// # Load
//
// At most MaxConcurrent requests are in flight at once, over at most
// that many connections; a check waits for a slot, and Timeout bounds the
// wait and the request together, so a storm of CONNECTs is answered
// within Timeout and the service sees a steady MaxConcurrent. Answers are
// cached: an authentication by client id, user name, password, address,
// listener and certificate CN (the password is only kept as part of a
// SHA-256 of the whole), for CacheTTL when allowed and NegativeCacheTTL
// when denied; an authorization per client by topic, access, QoS and
// retain flag, as long, and dropped when the client goes. So a device
// that reconnects makes no request, and one that publishes to the same
// topics makes none after the first. Deliveries (tern.Deliver) are never
// checked over HTTP: they are answered from the client's acl when the
// authentication answer had one, else left to the next hook (the
// subscription was authorized when it was made).
package httpauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/internal/authmetrics"
	"golang.org/x/sync/semaphore"
)

// Options configures the hook.
type Options struct {
	// AuthnURL authenticates CONNECTs; "" leaves authentication to other
	// hooks.
	AuthnURL string
	// AuthzURL authorizes publishes and subscriptions; "" asks nothing
	// (the acl of an authentication answer still applies).
	AuthzURL string
	// Method is POST (a JSON body, the default) or GET (query
	// parameters).
	Method string
	// Headers are added to every request (Authorization, ...).
	Headers map[string]string
	// Response is "emqx" (the default) or "status".
	Response string
	// Timeout bounds a check: the wait for a slot and the request;
	// default 5s.
	Timeout time.Duration
	// MaxConcurrent bounds the requests in flight; default 256.
	MaxConcurrent int
	// CacheTTL and NegativeCacheTTL are how long allowed and denied
	// answers are kept; 0 keeps none.
	CacheTTL         time.Duration
	NegativeCacheTTL time.Duration
	// CacheMaxEntries bounds the authentication cache (the oldest answers
	// go first when it is full) and, per client, the authorization cache;
	// default 100000 (and 1000 per client).
	CacheMaxEntries int
	// OnError is "deny" (the default) or "ignore".
	OnError string
	// TLS configures HTTPS to the service (a private CA, a client
	// certificate); nil uses the system's roots.
	TLS *tls.Config
	// Logger receives the hook's logs; nil uses slog.Default().
	Logger *slog.Logger
}

// settings are the options in force, swapped whole by Update.
type settings struct {
	opts   Options
	client *http.Client
	sem    *semaphore.Weighted
	gen    uint64 // answers cached under other settings are not used
}

// Hook is the HTTP auth hook: a tern.Authenticator, a
// tern.RequestAuthorizer, a tern.ConnectObserver and
// tern.DisconnectObserver (expire_at), and a prometheus.Collector.
type Hook struct {
	set      atomic.Pointer[settings]
	gen      atomic.Uint64
	log      *slog.Logger
	metrics  *authmetrics.Metrics
	inflight atomic.Int64
	maxSeen  atomic.Int64 // most requests in flight at once, for tests
	cache    authnCache

	inflightDesc *prometheus.Desc
}

var (
	_ tern.Authenticator      = (*Hook)(nil)
	_ tern.RequestAuthorizer  = (*Hook)(nil)
	_ tern.ConnectObserver    = (*Hook)(nil)
	_ tern.DisconnectObserver = (*Hook)(nil)
)

// New returns the hook.
func New(opts Options) (*Hook, error) {
	h := &Hook{metrics: authmetrics.New("http"),
		inflightDesc: prometheus.NewDesc("tern_auth_inflight_requests", "Requests to the HTTP auth service in flight now.", nil, prometheus.Labels{"backend": "http"})}
	if err := h.Update(opts); err != nil {
		return nil, err
	}
	return h, nil
}

// Update puts new options in force (tern serve calls it on SIGHUP).
// Checks already waiting or in flight finish under the old ones; cached
// answers are dropped.
func (h *Hook) Update(opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Method == "" {
		opts.Method = http.MethodPost
	}
	opts.Method = strings.ToUpper(opts.Method)
	if opts.Response == "" {
		opts.Response = "emqx"
	}
	if opts.OnError == "" {
		opts.OnError = "deny"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 256
	}
	if opts.CacheMaxEntries <= 0 {
		opts.CacheMaxEntries = 100_000
	}
	switch {
	case opts.AuthnURL == "" && opts.AuthzURL == "":
		return errors.New("httpauth: neither an authentication nor an authorization URL")
	case opts.Method != http.MethodPost && opts.Method != http.MethodGet:
		return fmt.Errorf("httpauth: method %q is not POST or GET", opts.Method)
	case opts.Response != "emqx" && opts.Response != "status":
		return fmt.Errorf("httpauth: response %q is not emqx or status", opts.Response)
	case opts.OnError != "deny" && opts.OnError != "ignore":
		return fmt.Errorf("httpauth: on_error %q is not deny or ignore", opts.OnError)
	case opts.CacheTTL < 0 || opts.NegativeCacheTTL < 0:
		return errors.New("httpauth: negative cache TTL")
	}
	for _, u := range []string{opts.AuthnURL, opts.AuthzURL} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("httpauth: %q is not an http or https URL", u)
		}
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: opts.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     opts.TLS,
		TLSHandshakeTimeout: opts.Timeout,
		MaxConnsPerHost:     opts.MaxConcurrent,
		MaxIdleConns:        opts.MaxConcurrent,
		MaxIdleConnsPerHost: opts.MaxConcurrent,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	st := &settings{opts: opts, client: &http.Client{Transport: tr, Timeout: opts.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		sem: semaphore.NewWeighted(int64(opts.MaxConcurrent)), gen: h.gen.Add(1)}
	h.log = opts.Logger
	old := h.set.Swap(st)
	h.cache.reset(opts.CacheMaxEntries)
	if old != nil {
		old.client.CloseIdleConnections()
	}
	return nil
}

// ID implements tern.Hook.
func (h *Hook) ID() string { return "http-auth" }

// Metrics returns the counters of checks by result, for tests and
// embedders; the same counters are exported through Collect.
func (h *Hook) Metrics() *authmetrics.Metrics { return h.metrics }

// MaxInFlight returns the most requests that were in flight at once.
func (h *Hook) MaxInFlight() int64 { return h.maxSeen.Load() }

// Describe implements prometheus.Collector.
func (h *Hook) Describe(ch chan<- *prometheus.Desc) {
	h.metrics.Describe(ch)
	ch <- h.inflightDesc
}

// Collect implements prometheus.Collector.
func (h *Hook) Collect(ch chan<- prometheus.Metric) {
	h.metrics.Collect(ch)
	ch <- prometheus.MustNewConstMetric(h.inflightDesc, prometheus.GaugeValue, float64(h.inflight.Load()))
}

// request is the body of a check.
type request struct {
	ClientID string `json:"clientid"`
	Username string `json:"username"`
	Password string `json:"password,omitempty"`
	PeerHost string `json:"peerhost"`
	PeerPort int    `json:"peerport,omitempty"`
	Listener string `json:"listener"`
	Protocol string `json:"protocol"`
	ProtoVer byte   `json:"proto_ver"`
	CertCN   string `json:"cert_cn,omitempty"`

	Topic  string `json:"topic,omitempty"`
	Action string `json:"action,omitempty"`
	QoS    *byte  `json:"qos,omitempty"`
	Retain *bool  `json:"retain,omitempty"`
	Acc    int    `json:"acc,omitempty"`
}

func (r *request) values() url.Values {
	v := url.Values{"clientid": {r.ClientID}, "username": {r.Username}, "peerhost": {r.PeerHost},
		"listener": {r.Listener}, "protocol": {r.Protocol}, "proto_ver": {strconv.Itoa(int(r.ProtoVer))}}
	if r.Password != "" {
		v.Set("password", r.Password)
	}
	if r.PeerPort != 0 {
		v.Set("peerport", strconv.Itoa(r.PeerPort))
	}
	if r.CertCN != "" {
		v.Set("cert_cn", r.CertCN)
	}
	if r.Topic != "" {
		v.Set("topic", r.Topic)
		v.Set("action", r.Action)
		v.Set("qos", strconv.Itoa(int(*r.QoS)))
		v.Set("retain", strconv.FormatBool(*r.Retain))
		v.Set("acc", strconv.Itoa(r.Acc))
	}
	return v
}

// answer is what the service said.
type answer struct {
	result    string // authmetrics.Allow, Deny, Ignore or Error
	superuser bool
	acl       json.RawMessage
	expireAt  int64
	err       error
}

// emqxAnswer is the JSON of an EMQX-form response.
type emqxAnswer struct {
	Result      string          `json:"result"`
	IsSuperuser bool            `json:"is_superuser"`
	ACL         json.RawMessage `json:"acl"`
	ExpireAt    int64           `json:"expire_at"`
}

// maxResponse bounds a response body.
const maxResponse = 1 << 20

// ask sends a check to the service, waiting for a slot first.
func (h *Hook) ask(st *settings, target string, req *request) answer {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), st.opts.Timeout)
	defer cancel()
	a := h.do(ctx, st, target, req)
	if a.err != nil && (errors.Is(a.err, context.DeadlineExceeded) || isTimeout(a.err)) {
		h.metrics.Observe(authmetrics.Timeout, time.Since(start))
		a.result = authmetrics.Error
		return a
	}
	h.metrics.Observe(a.result, time.Since(start))
	return a
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (h *Hook) do(ctx context.Context, st *settings, target string, req *request) answer {
	if err := st.sem.Acquire(ctx, 1); err != nil {
		return answer{result: authmetrics.Error, err: fmt.Errorf("waiting for a free request slot: %w", err)}
	}
	n := h.inflight.Add(1)
	for {
		m := h.maxSeen.Load()
		if n <= m || h.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	defer func() {
		h.inflight.Add(-1)
		st.sem.Release(1)
	}()
	var hr *http.Request
	var err error
	if st.opts.Method == http.MethodGet {
		u := target
		if strings.Contains(u, "?") {
			u += "&"
		} else {
			u += "?"
		}
		hr, err = http.NewRequestWithContext(ctx, http.MethodGet, u+req.values().Encode(), nil)
	} else {
		body, _ := json.Marshal(req)
		hr, err = http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
		if hr != nil {
			hr.Header.Set("Content-Type", "application/json")
		}
	}
	if err != nil {
		return answer{result: authmetrics.Error, err: err}
	}
	hr.Header.Set("Accept", "application/json")
	for k, v := range st.opts.Headers {
		hr.Header.Set(k, v)
	}
	resp, err := st.client.Do(hr)
	if err != nil {
		return answer{result: authmetrics.Error, err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return answer{result: authmetrics.Error, err: err}
	}
	return parseAnswer(st.opts.Response, resp.StatusCode, body)
}

// parseAnswer reads a response in the configured form.
func parseAnswer(form string, status int, body []byte) answer {
	switch {
	case status >= 500 || status < 200 || status >= 300 && status < 400:
		return answer{result: authmetrics.Error, err: fmt.Errorf("HTTP status %d", status)}
	case form == "status":
		if status < 300 {
			return answer{result: authmetrics.Allow}
		}
		return answer{result: authmetrics.Deny}
	case status >= 400:
		return answer{result: authmetrics.Ignore} // EMQX: a 4xx means ignore
	case status == http.StatusNoContent || len(bytes.TrimSpace(body)) == 0:
		return answer{result: authmetrics.Allow}
	}
	var e emqxAnswer
	if err := json.Unmarshal(body, &e); err != nil {
		return answer{result: authmetrics.Error, err: fmt.Errorf("response is not JSON: %w", err)}
	}
	a := answer{superuser: e.IsSuperuser, acl: e.ACL, expireAt: e.ExpireAt}
	switch strings.ToLower(e.Result) {
	case "allow":
		a.result = authmetrics.Allow
	case "deny":
		a.result = authmetrics.Deny
	case "ignore":
		a.result = authmetrics.Ignore
	default:
		return answer{result: authmetrics.Error, err: fmt.Errorf("result %q is not allow, deny or ignore", e.Result)}
	}
	return a
}

// baseRequest fills the fields that describe the client.
func baseRequest(c *tern.Client, clientID, username string) request {
	r := request{ClientID: clientID, Username: username, Listener: c.Listener(), Protocol: "mqtt",
		ProtoVer: c.ProtocolVersion(), CertCN: certCN(c.Conn())}
	if host, port, err := net.SplitHostPort(c.RemoteAddr()); err == nil {
		r.PeerHost = host
		r.PeerPort, _ = strconv.Atoi(port)
	}
	return r
}

// certCN returns the Common Name of the client certificate of a
// connection that has one.
func certCN(conn any) string {
	if pc, ok := conn.(interface {
		PeerCertificates() []*x509.Certificate
	}); ok {
		if certs := pc.PeerCertificates(); len(certs) > 0 {
			return certs[0].Subject.CommonName
		}
	}
	return ""
}

// authnKey is the cache key of an authentication: a SHA-256 of what the
// answer may depend on, so that no password is kept.
type authnKey [32]byte

func keyOf(r *request) authnKey {
	hsh := sha256.New()
	for _, s := range []string{r.ClientID, r.Username, r.Password, r.PeerHost, r.Listener, r.CertCN, strconv.Itoa(int(r.ProtoVer))} {
		hsh.Write([]byte(s))
		hsh.Write([]byte{0})
	}
	var k authnKey
	hsh.Sum(k[:0])
	return k
}

// authnCache holds authentication answers until they expire, dropping the
// oldest when full.
type authnCache struct {
	mu    sync.Mutex
	max   int
	m     map[authnKey]*cachedAuthn
	order []authnKey // insertion order, for eviction
}

type cachedAuthn struct {
	a       answer
	gen     uint64
	expires time.Time
}

func (c *authnCache) reset(max int) {
	c.mu.Lock()
	c.max, c.m, c.order = max, make(map[authnKey]*cachedAuthn), nil
	c.mu.Unlock()
}

func (c *authnCache) get(k authnKey, gen uint64, now time.Time) (answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || e.gen != gen || now.After(e.expires) {
		return answer{}, false
	}
	return e.a, true
}

func (c *authnCache) put(k authnKey, a answer, gen uint64, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok {
		for len(c.m) >= c.max && len(c.order) > 0 {
			delete(c.m, c.order[0])
			c.order = c.order[1:]
		}
		c.order = append(c.order, k)
	}
	c.m[k] = &cachedAuthn{a: a, gen: gen, expires: expires}
	if len(c.order) > 2*c.max { // keys replaced or deleted leave stale entries here
		live := c.order[:0]
		for _, o := range c.order {
			if _, ok := c.m[o]; ok {
				live = append(live, o)
			}
		}
		c.order = live
	}
}

// Len returns the number of cached authentication answers.
func (h *Hook) Len() int {
	h.cache.mu.Lock()
	defer h.cache.mu.Unlock()
	return len(h.cache.m)
}

// ttl returns how long an answer is cached.
func ttl(st *settings, a answer) time.Duration {
	switch a.result {
	case authmetrics.Allow:
		return st.opts.CacheTTL
	case authmetrics.Deny, authmetrics.Ignore:
		return st.opts.NegativeCacheTTL
	}
	return 0 // errors are not cached
}
