package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/terntest"
)

// env is a running broker with its admin interface on a loopback port.
type env struct {
	ts    *terntest.Server
	adm   *admin.Server
	obs   *admin.Observer
	base  string // http://127.0.0.1:port
	creds func(*http.Request)
}

func newEnv(t *testing.T, opts *tern.Options, aopts admin.Options, hooks ...tern.Hook) *env {
	t.Helper()
	obs := admin.NewObserver()
	ts := terntest.NewServer(t, opts, append(hooks, obs)...)
	aopts.Observer = obs
	if aopts.Logger == nil {
		aopts.Logger = slog.New(slog.DiscardHandler)
	}
	adm := admin.New(ts.Server, aopts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- adm.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), terntest.Timeout)
		defer cancel()
		adm.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &env{ts: ts, adm: adm, obs: obs, base: "http://" + ln.Addr().String(), creds: func(*http.Request) {}}
}

// do sends a request and returns the status, the headers and the body.
func (e *env) do(t *testing.T, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), terntest.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	e.creds(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// doNoRedirect sends a request without following redirects.
func (e *env) doNoRedirect(t *testing.T, method, path string) (int, http.Header, []byte) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequest(method, e.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// getJSON sends a request, checks the status and decodes the JSON body
// into v (when v is not nil).
func (e *env) getJSON(t *testing.T, method, path, body string, status int, v any) {
	t.Helper()
	code, h, b := e.do(t, method, path, body)
	if code != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, code, status, b)
	}
	if v == nil {
		return
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s %s: %v: %s", method, path, err, b)
	}
}

// errorOf checks that a request fails with the status and returns the
// JSON error message.
func (e *env) errorOf(t *testing.T, method, path, body string, status int) string {
	t.Helper()
	var out struct {
		Error string `json:"error"`
	}
	e.getJSON(t, method, path, body, status, &out)
	if out.Error == "" {
		t.Errorf("%s %s: no error message", method, path)
	}
	return out.Error
}

func TestHealthAndReadiness(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	var st map[string]string
	e.getJSON(t, "GET", "/healthz", "", 200, &st)
	e.getJSON(t, "GET", "/readyz", "", 200, &st)
	if st["status"] != "ready" {
		t.Errorf("readyz: %v", st)
	}

	e.adm.SetReady(false) // a drain begins
	code, h, _ := e.do(t, "GET", "/readyz", "")
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Errorf("draining: status %d, Retry-After %q", code, h.Get("Retry-After"))
	}
	e.adm.SetReady(true)
	e.getJSON(t, "GET", "/readyz", "", 200, nil)

	e.ts.Close() // the broker stops serving: not ready, still alive
	e.getJSON(t, "GET", "/readyz", "", 503, nil)
	e.getJSON(t, "GET", "/healthz", "", 200, nil)
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t, nil, admin.Options{
		APIKeys: map[string]string{"ops": "0123456789abcdef"},
		Tokens:  []string{"a-long-bearer-token"},
	})
	tests := []struct {
		name   string
		path   string
		creds  func(*http.Request)
		status int
	}{
		{"health needs nothing", "/healthz", func(*http.Request) {}, 200},
		{"readiness needs nothing", "/readyz", func(*http.Request) {}, 200},
		{"no credentials", "/api/v1/stats", func(*http.Request) {}, 401},
		{"no credentials for metrics", "/metrics", func(*http.Request) {}, 401},
		{"API key", "/api/v1/stats", func(r *http.Request) { r.SetBasicAuth("ops", "0123456789abcdef") }, 200},
		{"API key for metrics", "/metrics", func(r *http.Request) { r.SetBasicAuth("ops", "0123456789abcdef") }, 200},
		{"wrong secret", "/api/v1/stats", func(r *http.Request) { r.SetBasicAuth("ops", "0123456789abcdeX") }, 401},
		{"unknown key", "/api/v1/stats", func(r *http.Request) { r.SetBasicAuth("dev", "0123456789abcdef") }, 401},
		{"bearer token", "/api/v1/stats", func(r *http.Request) { r.Header.Set("Authorization", "Bearer a-long-bearer-token") }, 200},
		{"wrong bearer token", "/api/v1/stats", func(r *http.Request) { r.Header.Set("Authorization", "Bearer a-long-bearer-tokeN") }, 401},
		{"unknown path is not found", "/api/v1/nothing", func(*http.Request) {}, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.creds = tt.creds
			code, h, body := e.do(t, "GET", tt.path, "")
			if code != tt.status {
				t.Fatalf("status %d, want %d: %s", code, tt.status, body)
			}
			if code == 401 && !strings.Contains(h.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("401 without WWW-Authenticate: %v", h)
			}
		})
	}
}

// fakeAddr makes a loopback listener look like one on every interface.
type fakeAddr struct{ net.Listener }

func (fakeAddr) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero, Port: 18083} }

func TestServeRefusesAnOpenNetworkListener(t *testing.T) {
	ts := terntest.NewServer(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = admin.New(ts.Server, admin.Options{}).Serve(fakeAddr{ln})
	if !errors.Is(err, admin.ErrNoCredentials) {
		t.Errorf("Serve on 0.0.0.0 without credentials: %v", err)
	}
	// With a token it serves.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := admin.New(ts.Server, admin.Options{Tokens: []string{"0123456789abcdef"}})
	done := make(chan error, 1)
	go func() { done <- a.Serve(fakeAddr{ln}) }()
	e := &env{base: "http://" + ln.Addr().String(), creds: func(r *http.Request) {
		r.Header.Set("Authorization", "Bearer 0123456789abcdef")
	}}
	e.getJSON(t, "GET", "/api/v1/stats", "", 200, nil) // it serves
	ctx, cancel := context.WithTimeout(context.Background(), terntest.Timeout)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve with a token: %v", err)
	}
}

func TestUnknownRoutesAnswerJSON(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	e.errorOf(t, "GET", "/api/v1/nothing", "", 404)
	e.errorOf(t, "GET", "/nothing", "", 404)
	// A path to clean is redirected, not refused.
	if code, h, _ := e.doNoRedirect(t, "GET", "/api/v1//clients"); code/100 != 3 || h.Get("Location") != "/api/v1/clients" {
		t.Errorf("GET /api/v1//clients: %d %v", code, h)
	}
	code, h, b := e.do(t, "PUT", "/api/v1/clients", "")
	if code != http.StatusMethodNotAllowed || !strings.Contains(h.Get("Allow"), "GET") || !strings.Contains(string(b), `"error"`) {
		t.Errorf("PUT /api/v1/clients: %d %v %s", code, h, b)
	}
}
