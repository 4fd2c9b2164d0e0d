package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/memory"
	"github.com/ternmq/tern/terntest"
)

// request sends a request with the headers given (Host sets the Host
// header) and returns the status and body.
func (e *env) request(t *testing.T, method, path, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	e.creds(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A web page must not be able to use the API through the visitor's
// browser: not by posting a form or text/plain from its own origin (CSRF),
// not by making its own name resolve to 127.0.0.1 (DNS rebinding). The
// checks apply to every page, the probes included; CORS only as
// configured.
func TestBrowserRequestsRefused(t *testing.T) {
	e := newEnv(t, nil, admin.Options{AllowedHosts: []string{"tern.example.svc"}, CORSOrigins: []string{"https://dash.example"}})
	sub := e.ts.Dial(t, packets.V5)
	sub.MustConnect("csrf-watch")
	subscribe(t, sub, packets.Subscription{Filter: "csrf/#"})
	pub := `{"topic":"csrf/x","payload":"hi"}`
	host := strings.TrimPrefix(e.base, "http://")
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   string
		hdr    map[string]string
		status int
	}{
		{"text/plain from another origin", "POST", "/api/v1/publish", pub, map[string]string{"Content-Type": "text/plain", "Origin": "https://evil.example"}, 403},
		{"text/plain without Origin", "POST", "/api/v1/publish", pub, map[string]string{"Content-Type": "text/plain"}, 415},
		{"form", "POST", "/api/v1/publish", pub, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
		{"no content type", "POST", "/api/v1/publish", pub, nil, 415},
		{"JSON from another origin", "POST", "/api/v1/publish", pub, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, 403},
		{"origin null", "POST", "/api/v1/publish", pub, map[string]string{"Content-Type": "application/json", "Origin": "null"}, 403},
		{"cross-site fetch metadata", "DELETE", "/api/v1/clients/x", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"DNS rebinding", "POST", "/api/v1/publish", pub, map[string]string{"Content-Type": "application/json", "Host": "attacker.example"}, 421},
		{"DNS rebinding, with port", "GET", "/api/v1/stats", "", map[string]string{"Host": "attacker.example:18083"}, 421},
		{"DNS rebinding, probe", "GET", "/readyz", "", map[string]string{"Host": "attacker.example"}, 421},
		{"DNS rebinding, metrics", "GET", "/metrics", "", map[string]string{"Host": "attacker.example"}, 421},
		{"DNS rebinding, unknown page", "GET", "/nothing", "", map[string]string{"Host": "attacker.example"}, 421},
		// What is allowed.
		{"localhost", "GET", "/api/v1/stats", "", map[string]string{"Host": "localhost:18083"}, 200},
		{"an IP address", "GET", "/readyz", "", map[string]string{"Host": "10.1.2.3:18083"}, 200},
		{"an allowed name", "GET", "/api/v1/stats", "", map[string]string{"Host": "TERN.example.svc."}, 200},
		{"same origin", "GET", "/api/v1/stats", "", map[string]string{"Origin": "http://" + host}, 200},
		{"allowed origin", "GET", "/api/v1/stats", "", map[string]string{"Origin": "https://dash.example"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.request(t, tc.method, tc.path, tc.body, tc.hdr)
			if code != tc.status {
				t.Fatalf("status %d, want %d: %s", code, tc.status, body)
			}
			if code >= 400 && !strings.Contains(body, `"error"`) {
				t.Errorf("error without a JSON message: %s", body)
			}
		})
	}
	expectNothing(t, sub, "a message published by a refused request")

	// CORS: only for the configured origin, with a preflight.
	req, _ := http.NewRequest("OPTIONS", e.base+"/api/v1/publish", nil)
	req.Header.Set("Origin", "https://dash.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://dash.example" {
		t.Errorf("preflight from an allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
	_, h, _ := e.do(t, "GET", "/api/v1/stats", "")
	if h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS header without an Origin: %v", h)
	}
	// And the legitimate requests work.
	if code, body := e.request(t, "POST", "/api/v1/publish", pub, map[string]string{"Content-Type": "application/json; charset=utf-8", "Origin": "http://" + host}); code != 200 {
		t.Fatalf("same-origin JSON publish: %d %s", code, body)
	}
	if m := recvPublish(t, sub); m.Topic != "csrf/x" {
		t.Errorf("got %q", m.Topic)
	}
}

// A client that cannot be a browser's, with a bearer token, may post
// without a JSON content type (curl -d sends a form's).
func TestBearerTokenPostsAnyContentType(t *testing.T) {
	e := newEnv(t, nil, admin.Options{Tokens: []string{"a-long-bearer-token"}})
	e.creds = func(r *http.Request) { r.Header.Set("Authorization", "Bearer a-long-bearer-token") }
	if code, body := e.request(t, "POST", "/api/v1/publish", `{"topic":"t","payload":"x"}`,
		map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
}

func recvPublish(t *testing.T, c *terntest.Conn) *packets.Publish {
	t.Helper()
	pk := c.Recv()
	p, ok := pk.(*packets.Publish)
	if !ok {
		t.Fatalf("got %s, want PUBLISH", pk.Type())
	}
	return p
}

func expectNothing(t *testing.T, c *terntest.Conn, what string) {
	t.Helper()
	if pk, err := c.TryRecv(200 * time.Millisecond); err == nil {
		t.Fatalf("%s: %s", what, pk.Type())
	}
}

// Topics with empty levels, "+", "#", "%", spaces and non-ASCII address
// exactly that topic, in the path (percent-encoded) and as ?topic=; the
// path is never cleaned or redirected.
func TestRetainedTopicsAddressedExactly(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	topics := []string{"a/b", "a//b", "a///b", "a/", "/a", "a", "a b", "a%b", "a%2Fb", "ü/ß/日本", "a/./b", "a/../b", "sp ace/x"}
	for _, tp := range topics {
		if err := e.ts.Publish(tp, []byte(tp), true, 0); err != nil {
			t.Fatalf("%q: %v", tp, err)
		}
	}
	left := map[string]bool{}
	for _, tp := range topics {
		left[tp] = true
	}
	check := func(t *testing.T) {
		t.Helper()
		var page admin.Page[admin.Retained]
		e.getJSON(t, "GET", "/api/v1/retained?limit=1000", "", 200, &page)
		got := map[string]bool{}
		for _, r := range page.Data {
			got[r.Topic] = true
		}
		for tp := range left {
			if !got[tp] {
				t.Errorf("retained %q gone", tp)
			}
		}
		if len(got) != len(left) {
			t.Errorf("retained %v, want %v", got, left)
		}
	}
	for i, tp := range topics {
		path := "/api/v1/retained/" + url.PathEscape(tp)
		if i%2 == 1 { // every other one as a query parameter
			path = "/api/v1/retained/?topic=" + url.QueryEscape(tp)
		}
		t.Run(tp, func(t *testing.T) {
			code, h, body := e.doNoRedirect(t, "GET", path)
			var r admin.Retained
			if json.Unmarshal(body, &r); code != 200 || r.Topic != tp || r.Payload == nil || *r.Payload != tp {
				t.Fatalf("GET %s: %d %v %s", path, code, h, body)
			}
			e.getJSON(t, "DELETE", path, "", 204, nil)
			delete(left, tp)
			check(t)
			e.errorOf(t, "GET", path, "", 404)
		})
	}
	// Wildcards are not filters here: a/+ and a/# are topics that do not
	// exist, and deleting them deletes nothing.
	e.ts.Publish("a/x", []byte("x"), true, 0)
	left["a/x"] = true
	for _, p := range []string{"/api/v1/retained/a/+", "/api/v1/retained/a/%23", "/api/v1/retained/%23", "/api/v1/retained/?topic=a%2F%2B"} {
		e.errorOf(t, "DELETE", p, "", 404)
		e.errorOf(t, "GET", p, "", 404)
	}
	check(t)
	// Unescaped "a//b" in the path is that topic too.
	e.ts.Publish("x//y", []byte("x"), true, 0)
	e.ts.Publish("x/y", []byte("x"), true, 0)
	if code, h, _ := e.doNoRedirect(t, "DELETE", "/api/v1/retained/x//y"); code != 204 {
		t.Fatalf("DELETE /api/v1/retained/x//y: %d %v", code, h)
	}
	if _, ok := e.ts.RetainedMessage("x/y"); !ok {
		t.Error("DELETE x//y deleted x/y")
	}
	if _, ok := e.ts.RetainedMessage("x//y"); ok {
		t.Error("DELETE x//y left x//y")
	}
}

// Client ids are taken exactly too, and DELETE /api/v1/sessions/{id}
// ends a session, online or offline.
func TestClientAndSessionIDsAndDeleteSession(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	expiry := uint32(3600)
	ids := []string{"a/b", "a//b", "x y", "ü#1", "%25"}
	conns := map[string]*terntest.Conn{}
	for _, id := range ids {
		c := e.ts.Dial(t, packets.V5)
		c.Connect(&packets.Connect{ClientID: id, Properties: packets.Properties{SessionExpiry: &expiry}})
		defer c.Close()
		conns[id] = c
	}
	for _, id := range ids {
		var c admin.Client
		e.getJSON(t, "GET", "/api/v1/clients/"+url.PathEscape(id), "", 200, &c)
		if c.ClientID != id {
			t.Errorf("GET client %q: got %q", id, c.ClientID)
		}
	}
	// Online: disconnected, and the session ends.
	e.getJSON(t, "DELETE", "/api/v1/sessions/"+url.PathEscape("a//b"), "", 204, nil)
	if got := conns["a//b"].ExpectClosed(); len(got) != 1 || got[0].(*packets.Disconnect).ReasonCode != packets.AdministrativeAction {
		t.Errorf("client of the deleted session read %v, want DISCONNECT 0x98", got)
	}
	conns["a//b"].Close()
	terntest.Eventually(t, "session a//b gone", func() bool {
		_, ok := e.ts.SessionInfo("a//b")
		return !ok
	})
	if _, ok := e.ts.SessionInfo("a/b"); !ok {
		t.Fatal("session a/b went with a//b")
	}
	// Offline.
	e.getJSON(t, "DELETE", "/api/v1/clients/?id="+url.QueryEscape("x y"), "", 204, nil)
	conns["x y"].ExpectClosed()
	conns["x y"].Close()
	terntest.Eventually(t, "x y offline", func() bool {
		si, ok := e.ts.SessionInfo("x y")
		return ok && !si.Online
	})
	e.getJSON(t, "DELETE", "/api/v1/sessions/x%20y", "", 204, nil)
	if _, ok := e.ts.SessionInfo("x y"); ok {
		t.Fatal("offline session not deleted")
	}
	e.errorOf(t, "DELETE", "/api/v1/sessions/x%20y", "", 404)
}

// Every change made through the API is logged at INFO with who made it.
func TestChangesLogged(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e := newEnv(t, nil, admin.Options{Logger: log, APIKeys: map[string]string{"ops": "0123456789abcdef"}, Tokens: []string{"a-long-bearer-token"}})
	key := func(r *http.Request) { r.SetBasicAuth("ops", "0123456789abcdef") }
	token := func(r *http.Request) { r.Header.Set("Authorization", "Bearer a-long-bearer-token") }
	c := e.ts.Dial(t, packets.V5)
	c.MustConnect("victim")
	e.ts.Publish("r/t", []byte("x"), true, 0)

	e.creds = key
	e.getJSON(t, "POST", "/api/v1/publish", `{"topic":"p/t","payload":"x"}`, 200, nil)
	e.getJSON(t, "DELETE", "/api/v1/retained/r/t", "", 204, nil)
	e.creds = token
	e.getJSON(t, "DELETE", "/api/v1/clients/victim", "", 204, nil)
	e.getJSON(t, "DELETE", "/api/v1/sessions/victim", "", 204, nil)
	logs := buf.String()
	for _, want := range []string{
		`level=INFO msg="admin API: message published" topic=p/t qos=0 retain=false payload_size=1 by=key:ops remote=127.0.0.1:`,
		`level=INFO msg="admin API: retained message deleted" topic=r/t by=key:ops remote=127.0.0.1:`,
		`level=INFO msg="admin API: client disconnected" client=victim by=token remote=127.0.0.1:`,
		`level=INFO msg="admin API: session deleted" client=victim by=token remote=127.0.0.1:`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer = terntest.LogBuffer

// slowStore is a store whose Load stops after some records until told to
// go on, to catch a restore in the middle.
type slowStore struct {
	storage.Store
	after   int
	reached chan struct{}
	goOn    chan struct{}
}

func (s *slowStore) Load(l storage.Loader) error { return s.Store.Load(&slowLoader{Loader: l, s: s}) }

type slowLoader struct {
	storage.Loader
	s *slowStore
	n int
}

func (l *slowLoader) Retained(topic string, id uint64) error {
	if l.n++; l.n == l.s.after {
		close(l.s.reached)
		<-l.s.goOn
	}
	return l.Loader.Retained(topic, id)
}

// The admin interface starts before the broker: /healthz answers at once,
// /readyz answers 503 with the state, and with the restore's progress
// while the store is read; then 200 once the broker serves.
func TestReadinessWhileRestoring(t *testing.T) {
	st := memory.New()
	srv, err := tern.New(&tern.Options{Store: st, SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		srv.Publish("r/"+string(rune('a'+i%26))+"/"+strings.Repeat("x", i), []byte("x"), true, 1)
	}
	srv.Close()

	a := admin.New(nil, admin.Options{Logger: slog.New(slog.DiscardHandler)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go a.Serve(ln)
	defer a.Shutdown(context.Background())
	e := &env{base: "http://" + ln.Addr().String(), creds: func(*http.Request) {}}
	e.getJSON(t, "GET", "/healthz", "", 200, nil)
	var ready struct {
		Status   string                 `json:"status"`
		State    string                 `json:"state"`
		Progress *admin.RestoreProgress `json:"progress"`
	}
	e.getJSON(t, "GET", "/readyz", "", 503, &ready)
	if ready.State != admin.StateStarting {
		t.Errorf("before the restore: %+v", ready)
	}
	e.errorOf(t, "GET", "/api/v1/stats", "", 503)
	e.getJSON(t, "GET", "/metrics", "", 200, nil)

	slow := &slowStore{Store: st, after: 60, reached: make(chan struct{}), goOn: make(chan struct{})}
	done := make(chan *tern.Server)
	go func() {
		srv, err := tern.New(&tern.Options{Store: a.ObserveStore(slow), SysInterval: -1})
		if err != nil {
			t.Error(err)
		}
		done <- srv
	}()
	<-slow.reached
	e.getJSON(t, "GET", "/readyz", "", 503, &ready)
	p := ready.Progress
	if ready.State != admin.StateRestoring || p == nil || p.Retained != 59 || p.Messages != 100 || p.Records != 159 || p.Loaded {
		t.Errorf("while restoring: %+v %+v", ready, p)
	}
	close(slow.goOn)
	srv = <-done
	defer srv.Close()
	if p, ok := a.RestoreProgress(); !ok || !p.Loaded || p.Retained != 100 {
		t.Errorf("after the restore: %+v", p)
	}
	a.SetServer(srv)
	e.getJSON(t, "GET", "/readyz", "", 503, nil) // not serving yet
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	e.getJSON(t, "GET", "/readyz", "", 200, nil)
	m := e.scrape(t)
	if m["tern_restore_records"] != 200 || m["tern_retained_messages"] != 100 {
		t.Errorf("restore metrics: records %v, retained %v", m["tern_restore_records"], m["tern_retained_messages"])
	}
	// A change goes to the store, and its commit is timed.
	if err := srv.Publish("timed/commit", []byte("x"), true, 1); err != nil {
		t.Fatal(err)
	}
	terntest.Eventually(t, "a store commit timed", func() bool { return e.scrape(t)["tern_store_commit_seconds"] > 0 })
}

// The histograms an operator needs: CONNECT handling time, the delivery
// latency (sampled), the store's commit time; and the certificates'
// validity.
func TestHistogramsAndCertificates(t *testing.T) {
	notAfter := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	e := newEnv(t, nil, admin.Options{Certificates: func() []admin.Certificate {
		return []admin.Certificate{{Name: "tls", File: "/etc/tern/tls.crt", NotBefore: notAfter.AddDate(-1, 0, 0), NotAfter: notAfter}}
	}})
	sub := e.ts.Dial(t, packets.V5)
	sub.MustConnect("h-sub")
	subscribe(t, sub, packets.Subscription{Filter: "h/#"})
	for range admin.DeliverySampling * 2 {
		e.ts.Publish("h/x", []byte("x"), false, 0)
		recvPublish(t, sub)
	}
	m := e.scrape(t)
	if m["tern_connect_handling_seconds"] != 1 {
		t.Errorf("tern_connect_handling_seconds count %v, want 1", m["tern_connect_handling_seconds"])
	}
	if n := m["tern_delivery_latency_seconds"]; n != 2 {
		t.Errorf("tern_delivery_latency_seconds count %v, want 2 (1 in %d of %d)", n, admin.DeliverySampling, 2*admin.DeliverySampling)
	}
	if _, ok := m["tern_store_commit_seconds"]; !ok {
		t.Error("no tern_store_commit_seconds")
	}
	if v := m[`tern_tls_certificate_not_after_seconds{file="/etc/tern/tls.crt"}{name="tls"}`]; v != float64(notAfter.Unix()) {
		t.Errorf("certificate expiry %v, want %v", v, notAfter.Unix())
	}
}
