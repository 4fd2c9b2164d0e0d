package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// runHealthcheck runs tern healthcheck with args in the environment env and
// returns its exit status and what it printed.
func runHealthcheck(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := newHealthcheckCmd(func() []string { return env })
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		return exitCode(err), out.String() + err.Error()
	}
	return 0, out.String()
}

// tern healthcheck exits 0 only when /readyz answers 200, finds the admin
// API where tern serve would put it (file, TERN_ variables, serve's flags,
// or --url), sends the configured credentials and gives up after
// --timeout.
func TestHealthcheck(t *testing.T) {
	const token = "0123456789abcdef-token"
	var mu sync.Mutex
	var requests []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Write([]byte(`{"state":"ready"}`))
	})
	mux.HandleFunc("GET /restoring/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"state":"restoring","progress":0.5}`))
	})
	mux.HandleFunc("GET /auth/readyz", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Write([]byte("{}"))
	})
	mux.HandleFunc("GET /hang/readyz", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers only when the client gives up
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	addr := ts.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{name: "ready, --url base", args: []string{"--url", ts.URL}, want: "ready: " + ts.URL + "/readyz"},
		{name: "ready, --url full", args: []string{"--url", ts.URL + "/readyz"}, want: "ready"},
		{name: "not ready: 503 with the state", args: []string{"--url", ts.URL + "/restoring/readyz"}, code: 1, want: `503 Service Unavailable: {"state":"restoring"`},
		{name: "nothing listening", args: []string{"--url", "http://" + deadAddr}, code: 1, want: "not ready"},
		{name: "timeout", args: []string{"--url", ts.URL + "/hang/readyz", "--timeout", "200ms"}, code: 1, want: "deadline exceeded"},
		{name: "serve's flag", args: []string{"--admin-listen", addr}, want: "ready"},
		{name: "environment", env: []string{"TERN_ADMIN_LISTEN=" + addr}, want: "ready"},
		{name: "wildcard listen asked on loopback", env: []string{"TERN_ADMIN_LISTEN=0.0.0.0:" + port, "TERN_ADMIN_TOKEN=" + token}, want: "ready: http://127.0.0.1:" + port},
		{name: "no admin listener", args: []string{"--admin-listen="}, code: 1, want: "admin.listen is empty"},
		{name: "credentials from the environment", env: []string{"TERN_ADMIN_TOKEN=" + token}, args: []string{"--url", ts.URL + "/auth/"}, want: "ready"},
		{name: "credentials from the flag", args: []string{"--url", ts.URL + "/auth/readyz", "--token", token}, want: "ready"},
		{name: "missing credentials", args: []string{"--url", ts.URL + "/auth/readyz"}, code: 1, want: "401"},
		{name: "bad url", args: []string{"--url", "localhost:18083"}, code: 1, want: "want http://host:port"},
		{name: "invalid configuration", env: []string{"TERN_LIMITS_MAX_QOS=9"}, code: 1, want: "limits.max_qos"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runHealthcheck(t, tc.env, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, %q; want exit %d and %q", code, out, tc.code, tc.want)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(requests) == 0 || requests[len(requests)-1] != "Bearer "+token {
		t.Errorf("the configured token was not sent: %q", requests)
	}
}

// Against tern serve itself: 0 while it is ready, 1 once /readyz turns 503
// (draining, or restoring its store).
func TestHealthcheckBroker(t *testing.T) {
	r := startTest(t, testConfig(t), nil, nil)
	addr := r.b.admLn.Addr().String()
	if code, out := runHealthcheck(t, nil, "--admin-listen", addr); code != 0 {
		t.Fatalf("ready broker: exit %d: %s", code, out)
	}
	r.b.adm.SetReady(false)
	if code, out := runHealthcheck(t, nil, "--admin-listen", addr); code != 1 || !strings.Contains(out, "503") {
		t.Fatalf("broker not ready: exit %d: %s", code, out)
	}
}
