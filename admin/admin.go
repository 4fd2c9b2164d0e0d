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
//	GET    /api/v1/subscriptions         subscriptions (paged; ?client_id=)
//	GET    /api/v1/retained              retained messages (paged; ?filter=)
//	GET    /api/v1/retained/{topic...}   one retained message, with its payload
//	DELETE /api/v1/retained/{topic...}   delete it
//	POST   /api/v1/publish               publish a message
//	GET    /api/v1/bans                  banned clients (paged; ?as=), with Options.Bans
//	POST   /api/v1/bans                  ban a client id, user name or address
//	DELETE /api/v1/bans/{as}/{who...}    lift a ban
//
// Other packages add routes with Handle (bridge.Manager's /api/v1/bridges).
//
// Lists take page (from 1) and limit (1 to 1000, default 100) and answer
// {"data": [...], "meta": {"page", "limit", "count", "hasnext"}}. Errors
// are {"error": "..."} with a 4xx or 5xx status.
//
// With API keys or tokens configured, every request but /healthz and
// /readyz must carry one, as HTTP Basic auth (key as user name, secret as
// password) or "Authorization: Bearer <token>". Without any, [Server.Serve]
// refuses a listener that is not on a loopback address.
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
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternmq/tern"
)

// Options configures the admin interface. The zero value serves without
// authentication (loopback only) and without the per-reason counters.
type Options struct {
	// APIKeys maps API keys to their secrets, for HTTP Basic auth.
	APIKeys map[string]string
	// Tokens are the bearer tokens accepted.
	Tokens []string
	// Observer, when it was added to the server as a hook before Serve,
	// gives the metrics dropped messages and disconnections by reason.
	Observer *Observer
	// Logger receives the HTTP server's errors; nil uses slog.Default().
	Logger *slog.Logger
	// Bans, when set, is served at /api/v1/bans (see bans.go).
	Bans Bans
}

// ErrNoCredentials is returned by Serve for a listener reachable from the
// network when no API key or token is configured.
var ErrNoCredentials = errors.New("admin: an admin listener that is not on loopback needs API keys or a token")

// Server is the admin interface of one broker: an http.Handler, and an
// HTTP server when Serve is used.
type Server struct {
	srv      *tern.Server
	opts     Options
	keys     map[string][32]byte // API key -> SHA-256 of its secret
	tokens   [][32]byte
	mux      *http.ServeMux
	registry *prometheus.Registry
	ready    atomic.Bool
	http     atomic.Pointer[http.Server]
}

// New returns the admin interface of srv. It is ready (see SetReady) as
// soon as srv is serving.
func New(srv *tern.Server, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &Server{srv: srv, opts: opts, keys: make(map[string][32]byte), mux: http.NewServeMux()}
	for k, s := range opts.APIKeys {
		a.keys[k] = sha256.Sum256([]byte(s))
	}
	for _, t := range opts.Tokens {
		a.tokens = append(a.tokens, sha256.Sum256([]byte(t)))
	}
	a.ready.Store(true)
	a.registry = newRegistry(srv, opts.Observer)
	a.routes()
	return a
}

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

func (a *Server) hasCredentials() bool { return len(a.keys) > 0 || len(a.tokens) > 0 }

// ServeHTTP implements http.Handler.
func (a *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := a.mux.Handler(r)
	if pattern == "" { // no route: answer in JSON what the mux would say
		cw := &captureWriter{header: make(http.Header)}
		h.ServeHTTP(cw, r)
		if cw.status != http.StatusNotFound && cw.status != http.StatusMethodNotAllowed {
			h.ServeHTTP(w, r) // a redirect to the clean path
			return
		}
		if allow := cw.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		writeError(w, cw.status, strings.ToLower(http.StatusText(cw.status)))
		return
	}
	if pattern != "GET /healthz" && pattern != "GET /readyz" && !a.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="tern admin", charset="UTF-8"`)
		writeError(w, http.StatusUnauthorized, "an API key (HTTP Basic auth) or a bearer token is required")
		return
	}
	a.mux.ServeHTTP(w, r) // which sets the path values that Handler does not
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
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		match := 0
		for _, want := range a.tokens {
			match |= subtle.ConstantTimeCompare(got[:], want[:])
		}
		return match == 1
	}
	return false
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
	if hs := a.http.Load(); hs != nil {
		return hs.Shutdown(ctx)
	}
	return nil
}

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
	if !a.ready.Load() || !a.srv.Serving() {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		return
	}
	if err := a.srv.StoreHealth(); err != nil {
		// The broker serves, but refuses what needs its store (a full
		// or failing disk): take it out of rotation until that passes.
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "store unavailable", "cause": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
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
