// Package admin is Tern's HTTP admin interface: health checks for
// orchestrators, Prometheus metrics, and a JSON REST API to look at and
// act on a running broker.
//
//	GET    /healthz                      200 while the process is alive
//	GET    /readyz                       200 when accepting clients and the store writes, else 503 with Retry-After (and the cause)
//	GET    /metrics                      Prometheus metrics
//	GET    /api/v1/stats                 the broker's counters
//	GET    /api/v1/clients               connected clients (paged)
//	GET    /api/v1/clients/{id}          one client, with its subscriptions
//	DELETE /api/v1/clients/{id}          disconnect it (v5: 0x98 Administrative action)
//	GET    /api/v1/sessions              sessions, online and offline (paged)
//	GET    /api/v1/sessions/{id}         one session
//	DELETE /api/v1/sessions/{id}         end it (disconnecting its client)
//	GET    /api/v1/subscriptions         subscriptions (paged; ?client_id=)
//	GET    /api/v1/retained              retained messages (paged; ?filter=)
//	GET    /api/v1/retained/{topic...}   one retained message, with its payload
//	DELETE /api/v1/retained/{topic...}   delete it
//	POST   /api/v1/publish               publish a message
//	GET    /api/v1/bans                  banned clients (paged; ?as=), with Options.Bans
//	POST   /api/v1/bans                  ban a client id, user name or address
//	DELETE /api/v1/bans/{as}/{who...}    lift a ban
//
// and for the web dashboard (Options.DisableDashboard turns it off), also
// usable from scripts:
//
//	GET    /  and /ui/...                the dashboard (dashboard.go): public files, no data
//	GET    /api/v1/metrics/history       rates and levels of the last 15m at 1 s, or up to 24h at 10 s (live.go)
//	GET    /api/v1/metrics/stream        the same, a sample a second, as Server-Sent Events, with the stats
//	GET    /api/v1/trace                 a live trace of a client, topic filter or address (tracing.go)
//	POST   /api/v1/clients/disconnect    disconnect many clients; POST /api/v1/sessions/delete ends many sessions
//	GET    /api/v1/subscriptions/filters filters with subscribers; /subscriptions/shared shared groups (browse.go)
//	GET    /api/v1/topics                the tree of filters and retained topics, a level at a time
//	DELETE /api/v1/retained?filter=      delete the retained messages a filter matches
//	GET    /api/v1/listeners             listeners, connections, certificate expiry; /config, /cluster
//
// Clients and sessions take search, filters, sorts and cursors besides
// page and limit (listing.go).
//
// Other packages add routes with Handle (bridge.Manager's /api/v1/bridges).
//
// Lists take page (from 1) and limit (1 to 1000, default 100) and answer
// {"data": [...], "meta": {"page", "limit", "count", "hasnext"}}. Errors
// are {"error": "..."} with a 4xx or 5xx status. A client id or topic in a
// path is percent-encoded and taken exactly as encoded: empty levels,
// "+", "#" (%23), "%" (%25), spaces and non-ASCII characters address that
// very topic; ?topic= (retained) and ?id= (clients, sessions) are the same.
//
// With API keys or tokens configured, every request but /healthz and
// /readyz must carry one, as HTTP Basic auth (key as user name, secret as
// password) or "Authorization: Bearer <token>". Without any, [Server.Serve]
// refuses a listener that is not on a loopback address.
//
// Every request, to every page, also passes the checks that keep web
// pages out (see Options.AllowedHosts and Options.CORSOrigins): a Host
// header that names another host is refused with 421 (DNS rebinding), a
// request from another web origin with 403, and a request that changes
// something must send JSON (Content-Type: application/json) or carry a
// bearer token, which no web page can make a browser send to another site
// without the CORS permission the API does not give. Each change (kick,
// session or retained message deleted, publish) is logged at INFO with the
// API key, "token" or the caller's address.
//
// The admin interface can start before the broker (New with a nil server),
// so that /healthz answers and /readyz tells how a long restore is going
// (see SetState, ObserveStore and SetServer).
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/trace"
)

// Options configures the admin interface. The zero value serves without
// authentication (loopback only) and without the per-reason counters.
type Options struct {
	// APIKeys maps API keys to their secrets, for HTTP Basic auth.
	APIKeys map[string]string
	// Tokens are the bearer tokens accepted.
	Tokens []string
	// Observer, when it was added to the server as a hook before Serve,
	// gives the metrics dropped messages and disconnections by reason,
	// and the latency histograms.
	Observer *Observer
	// Logger receives the HTTP server's errors and the log of changes made
	// through the API; nil uses slog.Default().
	Logger *slog.Logger
	// Bans, when set, is served at /api/v1/bans (see bans.go).
	Bans Bans

	// AllowedHosts are the host names (without port) a request's Host
	// header may carry besides "localhost", IP addresses and the host of
	// the address Serve listens on; "*" allows any. Others are refused
	// with 421 Misdirected Request, so that a web page cannot reach the API
	// through DNS rebinding.
	AllowedHosts []string
	// CORSOrigins are the web origins ("https://dash.example") whose pages
	// may call the API from a browser. Requests with another Origin are
	// refused with 403. None by default.
	CORSOrigins []string
	// Certificates, when set, returns the TLS certificates in use, for the
	// tern_tls_certificate_* metrics and /api/v1/listeners.
	Certificates func() []Certificate

	// Tracer, when it was added to the server as a hook before Serve,
	// serves the live trace, /api/v1/trace.
	Tracer *trace.Tracer
	// Config, when set, returns the configuration in force as YAML with
	// its secrets hidden, for /api/v1/config.
	Config func() ([]byte, error)
	// DisableDashboard turns the web dashboard at / off; the API stays.
	DisableDashboard bool
}

// Certificate is a TLS certificate in use, as the metrics show it.
type Certificate struct {
	Name      string // where it is used: "tls", "tls[1]", "wss", ...
	File      string
	NotBefore time.Time
	NotAfter  time.Time
}

// ErrNoCredentials is returned by Serve for a listener reachable from the
// network when no API key or token is configured.
var ErrNoCredentials = errors.New("admin: an admin listener that is not on loopback needs API keys or a token")

// Server is the admin interface of one broker: an http.Handler, and an
// HTTP server when Serve is used.
type Server struct {
	srv      atomic.Pointer[tern.Server]
	opts     Options
	keys     map[string][32]byte // API key -> SHA-256 of its secret
	tokens   [][32]byte
	mux      *http.ServeMux
	registry *prometheus.Registry
	ready    atomic.Bool
	checks   atomic.Pointer[[]ReadyCheck]
	// clusterView answers /api/v1/cluster when the broker is clustered.
	clusterView atomic.Pointer[func() Cluster]
	state       atomic.Pointer[startState]
	store       atomic.Pointer[observedStore]
	http        atomic.Pointer[http.Server]

	commitSeconds prometheus.Histogram
	hosts         hostCheck
	origins       map[string]bool
	raw           []rawRoute
	closing       chan struct{} // closed by Shutdown: the event streams end
	closeOnce     sync.Once
	bans          Bans // nil: no /api/v1/bans
}

// New returns the admin interface of srv. It is ready (see SetReady) as
// soon as srv is serving. srv may be nil, for an admin interface started
// before the broker: /healthz answers, /readyz answers 503 with the state
// set by SetState, the other pages 503, until SetServer.
func New(srv *tern.Server, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &Server{opts: opts, bans: opts.Bans, closing: make(chan struct{}), keys: make(map[string][32]byte), mux: http.NewServeMux(), origins: make(map[string]bool)}
	for k, s := range opts.APIKeys {
		a.keys[k] = sha256.Sum256([]byte(s))
	}
	for _, t := range opts.Tokens {
		a.tokens = append(a.tokens, sha256.Sum256([]byte(t)))
	}
	for _, o := range opts.CORSOrigins {
		a.origins[strings.TrimSuffix(strings.ToLower(o), "/")] = true
	}
	a.hosts.init(opts.AllowedHosts)
	a.ready.Store(true)
	a.state.Store(&startState{State: StateStarting})
	if srv != nil {
		a.srv.Store(srv)
	}
	a.registry = newRegistry(a)
	a.routes()
	return a
}

// SetServer gives the admin interface its broker, once New (with a nil
// server) has returned it.
func (a *Server) SetServer(srv *tern.Server) { a.srv.Store(srv) }

// server returns the broker, or nil while it is starting.
func (a *Server) server() *tern.Server { return a.srv.Load() }

// Registry returns the Prometheus registry /metrics serves, for an
// embedder to add its own collectors to.
func (a *Server) Registry() *prometheus.Registry { return a.registry }

// Handle serves pattern (a net/http.ServeMux pattern, such as
// "GET /api/v1/bridges") with h, behind the same authentication as the
// rest of the API: how other packages (bridge.Manager.Handler) add routes.
// Call it before Serve.
func (a *Server) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// SetReady sets whether /readyz may answer 200; it answers 503 while the
// broker is not serving whatever this says. Set it to false when a
// graceful shutdown begins, so that load balancers stop sending clients
// before the listeners close.
func (a *Server) SetReady(ready bool) { a.ready.Store(ready) }

// ReadyCheck is a condition /readyz needs besides a serving broker and a
// healthy store: Check returns nil when it is met, else why not; State
// names it in the 503 answer ("cluster_joining", ...).
type ReadyCheck struct {
	Check func() (state string, err error)
}

// AddReadyCheck adds a condition to /readyz: a clustered node that has
// not joined, is fenced or drains is taken out of the load balancer's
// rotation.
func (a *Server) AddReadyCheck(rc ReadyCheck) {
	for {
		old := a.checks.Load()
		var next []ReadyCheck
		if old != nil {
			next = append(next, *old...)
		}
		next = append(next, rc)
		if a.checks.CompareAndSwap(old, &next) {
			return
		}
	}
}

func (a *Server) hasCredentials() bool { return len(a.keys) > 0 || len(a.tokens) > 0 }

// ServeHTTP implements http.Handler.
func (a *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	if !a.admit(w, r) {
		return
	}
	h, public := a.route(w, r)
	if h == nil {
		return // answered
	}
	if !public && !a.authorized(r) {
		// Not to a page's fetch: the browser would ask for a password
		// itself, over the dashboard's own login.
		if m := r.Header.Get("Sec-Fetch-Mode"); m == "" || m == "navigate" {
			w.Header().Set("WWW-Authenticate", `Basic realm="tern admin", charset="UTF-8"`)
		}
		writeError(w, http.StatusUnauthorized, "an API key (HTTP Basic auth) or a bearer token is required")
		return
	}
	if !admitBody(w, r) {
		return
	}
	h(w, r)
}

// route finds the handler of a request and whether it is public (the
// probes). It answers unknown routes itself and returns nil then.
func (a *Server) route(w http.ResponseWriter, r *http.Request) (http.HandlerFunc, bool) {
	if h := a.rawRoute(w, r); h != nil {
		return h, false
	}
	h, pattern := a.mux.Handler(r)
	if pattern == "" { // no route: answer in JSON what the mux would say
		cw := &captureWriter{header: make(http.Header)}
		h.ServeHTTP(cw, r)
		if cw.status != http.StatusNotFound && cw.status != http.StatusMethodNotAllowed {
			return h.ServeHTTP, false // a redirect to the clean path
		}
		if allow := cw.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		writeError(w, cw.status, strings.ToLower(http.StatusText(cw.status)))
		return nil, false
	}
	public := pattern == "GET /healthz" || pattern == "GET /readyz" || dashboardPatterns[pattern]
	return a.mux.ServeHTTP, public // which sets the path values that Handler does not
}

// captureWriter records the status the mux gives a request it has no
// route for.
type captureWriter struct {
	header http.Header
	status int
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return len(b), nil
}
func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

// authorized checks the request's credentials in constant time.
func (a *Server) authorized(r *http.Request) bool {
	if !a.hasCredentials() {
		return true // Serve allows this on loopback only
	}
	if user, pass, ok := r.BasicAuth(); ok {
		want, found := a.keys[user]
		got := sha256.Sum256([]byte(pass))
		return subtle.ConstantTimeCompare(got[:], want[:]) == 1 && found
	}
	if tok, ok := bearer(r); ok {
		got := sha256.Sum256([]byte(tok))
		match := 0
		for _, want := range a.tokens {
			match |= subtle.ConstantTimeCompare(got[:], want[:])
		}
		return match == 1
	}
	return false
}

// bearer returns the request's bearer token.
func bearer(r *http.Request) (string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return strings.TrimSpace(tok), ok
}

// caller names who made an (authorized) request, for the log of changes:
// the API key, "token", or "anonymous" on a listener without credentials.
func caller(r *http.Request) string {
	if user, _, ok := r.BasicAuth(); ok {
		return "key:" + user
	}
	if _, ok := bearer(r); ok {
		return "token"
	}
	return "anonymous"
}

// logChange logs a change made through the API, at INFO, with who made it.
func (a *Server) logChange(r *http.Request, msg string, args ...any) {
	args = append(args, "by", caller(r), "remote", r.RemoteAddr)
	a.opts.Logger.Info("admin API: "+msg, args...)
}

// Serve serves the admin interface on ln until Shutdown. It refuses a
// listener that is not on a loopback address (or a Unix socket) unless API
// keys or tokens are configured.
func (a *Server) Serve(ln net.Listener) error {
	if !a.hasCredentials() && !isLocal(ln.Addr()) {
		ln.Close()
		return ErrNoCredentials
	}
	hs := &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.opts.Logger.Handler(), slog.LevelWarn),
	}
	if !a.http.CompareAndSwap(nil, hs) {
		ln.Close()
		if a.http.Load() == shutDown {
			return nil
		}
		return errors.New("admin: Serve called twice")
	}
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the HTTP server gracefully, waiting for requests in
// progress until ctx ends.
func (a *Server) Shutdown(ctx context.Context) error {
	a.closeOnce.Do(func() { close(a.closing) }) // streams never go idle by themselves
	if a.http.CompareAndSwap(nil, shutDown) {   // before Serve: it will not serve
		return nil
	}
	if hs := a.http.Load(); hs != shutDown {
		return hs.Shutdown(ctx)
	}
	return nil
}

// shutDown marks an admin server shut down before it served.
var shutDown = new(http.Server)

func isLocal(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

func (a *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	srv := a.server()
	if srv == nil || !srv.Serving() || !a.ready.Load() {
		st := a.startupState(srv)
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, st)
		return
	}
	if err := srv.StoreHealth(); err != nil {
		// The broker serves, but refuses what needs its store (a full
		// or failing disk): take it out of rotation until that passes.
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "store unavailable", "state": "store_unavailable", "cause": err.Error()})
		return
	}
	if cs := a.checks.Load(); cs != nil {
		for _, rc := range *cs {
			if state, err := rc.Check(); err != nil {
				w.Header().Set("Retry-After", "5")
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "state": state, "cause": err.Error()})
				return
			}
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "state": StateReady})
}

// writeJSON writes v as the response body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// writeError writes {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
