package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/events"
	"github.com/ternmq/tern/internal/config"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// runningBroker starts a broker with cfg and stops it when the test ends
// (or when stop is called).
type runningBroker struct {
	b    *broker
	ts   *terntest.Server
	sig  chan os.Signal
	stop func()
}

func startTest(t *testing.T, cfg *config.Config, load func() (*config.Config, error), logs *syncBuffer) *runningBroker {
	t.Helper()
	if logs == nil {
		logs = new(syncBuffer)
	}
	b, err := startBroker(cfg, load, logs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	sig := make(chan os.Signal, 1)
	go func() { ran <- b.run(ctx, sig, func(int) {}) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			receive(t, ran, "run to return")
		})
	}
	t.Cleanup(stop)
	return &runningBroker{b: b, ts: &terntest.Server{Server: b.srv, Addr: b.mqtt[0].Addr().String()}, sig: sig, stop: stop}
}

func (r *runningBroker) adminURL() string { return "http://" + r.b.admLn.Addr().String() }

func (r *runningBroker) connect(t *testing.T, v byte, id, user, pw string) (*terntest.Conn, packets.ReasonCode) {
	t.Helper()
	c := r.ts.Dial(t, v)
	ack := c.Connect(&packets.Connect{ClientID: id, CleanStart: true, KeepAlive: 60, UsernameFlag: user != "", Username: user,
		PasswordFlag: pw != "", Password: []byte(pw)})
	return c, ack.ReasonCode
}

// Bans made with tern ban through the admin API are enforced, survive a
// restart, and can be edited offline while the broker is down (and not
// while it runs).
func TestServeBans(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.Token = "0123456789abcdef-token"
	r := startTest(t, cfg, nil, nil)
	api := []string{"--url", r.adminURL(), "--token", cfg.Admin.Token}
	ban := func(args ...string) (string, error) {
		return runTernOutput(t, "", append(append([]string{"ban"}, args...), api...)...)
	}
	c, code := r.connect(t, packets.V5, "dev1", "", "")
	if code != packets.Success {
		t.Fatal(code)
	}
	if out, err := ban("add", "clientid", "dev1", "--reason", "testing", "--for", "1h"); err != nil || !strings.Contains(out, "dev1") {
		t.Fatalf("ban add: %v\n%s", err, out)
	}
	if got := c.ExpectClosed(); len(got) != 1 || got[0].(*packets.Disconnect).ReasonCode != packets.AdministrativeAction {
		t.Fatalf("banned client read %v, want DISCONNECT 0x98", got)
	}
	c.Close()
	if _, code := r.connect(t, packets.V5, "dev1", "", ""); code != packets.Banned {
		t.Fatalf("banned client CONNACK %v", code)
	}
	if _, err := ban("add", "address", "192.0.2.0/24"); err != nil {
		t.Fatal(err)
	}
	if _, err := ban("add", "planet", "mars"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("bad kind: %v", err)
	}
	out, err := ban("list", "--json")
	var listed []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 2 {
		t.Fatalf("ban list: %v\n%s", err, out)
	}
	// The file is the broker's while it runs.
	if _, err := runTernOutput(t, "", "ban", "--offline", "--file", cfg.BansFile(), "list"); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("offline edit under a running broker: %v", err)
	}
	if out, err := ban("delete", "address", "192.0.2.0/24"); err != nil || !strings.Contains(out, "lifted") {
		t.Fatalf("ban delete: %v %s", err, out)
	}
	if _, err := ban("delete", "address", "192.0.2.0/24"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("second delete: %v", err)
	}
	r.stop()

	// Offline: the ban made through the API is in the file; lift it.
	offline := []string{"ban", "--offline", "--file", cfg.BansFile()}
	out, err = runTernOutput(t, "", append(offline, "list")...)
	if err != nil || !strings.Contains(out, "dev1") || !strings.Contains(out, "testing") {
		t.Fatalf("offline list: %v\n%s", err, out)
	}
	if _, err := runTernOutput(t, "", append(offline, "add", "username", "mallory")...); err != nil {
		t.Fatal(err)
	}

	// After a restart: dev1 still banned, and mallory too.
	r = startTest(t, cfg, nil, nil)
	if _, code := r.connect(t, packets.V5, "dev1", "", ""); code != packets.Banned {
		t.Errorf("dev1 after the restart: %v", code)
	}
	if _, code := r.connect(t, packets.V311, "x", "mallory", ""); code != packets.NotAuthorized { // 3.1.1 return code 5
		t.Errorf("mallory after the restart: %v", code)
	}
	metrics := httpBody(t, r.adminURL()+"/metrics", cfg.Admin.Token)
	for _, want := range []string{"tern_bans 2", `tern_banned_connects_total{as="clientid"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func httpBody(t *testing.T, url, token string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// hs256Token signs claims with HS256.
func hs256Token(secret []byte, claims map[string]any) string {
	h, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	p, _ := json.Marshal(claims)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// JWT and HTTP auth from the configuration, in the chain: a token verifies
// through auth.jwt, a plain password goes to the HTTP service, whose
// settings reload on SIGHUP; their metrics are on /metrics.
func TestServeJWTAndHTTPAuth(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("a-secret-of-at-least-32-bytes-long!")
	secretFile := filepath.Join(dir, "hmac")
	os.WriteFile(secretFile, append(secret, '\n'), 0o600)
	var mu sync.Mutex
	var asked []string
	authSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		asked = append(asked, req["username"].(string))
		mu.Unlock()
		if req["password"] == "letmein" {
			io.WriteString(w, `{"result":"allow"}`)
			return
		}
		w.WriteHeader(500)
	}))
	defer authSrv.Close()
	cfgFile := filepath.Join(dir, "tern.yaml")
	base := "listeners:\n  tcp: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.1:0\nsys_interval: 0\npersistence:\n  durability: \"off\"\n" +
		"auth:\n  jwt:\n    hmac_secret_file: " + secretFile + "\n    algorithms: [HS256]\n    username_claim: sub\n    claims: {clientid: \"{clientid}\"}\n" +
		"  http:\n    authn_url: " + authSrv.URL + "\n"
	write := func(extra string) {
		if err := os.WriteFile(cfgFile, []byte(base+extra), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("    on_error: deny\n")
	load := func() (*config.Config, error) { return config.Load(cfgFile, nil, nil) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	r := startTest(t, cfg, load, &logs)
	tok := hs256Token(secret, map[string]any{"sub": "alice", "clientid": "dev1", "exp": time.Now().Add(time.Hour).Unix()})
	if _, code := r.connect(t, packets.V5, "dev1", "", tok); code != packets.Success {
		t.Fatalf("token: %v", code)
	}
	if ci, _ := r.b.srv.ClientInfo("dev1"); ci.Username != "alice" {
		t.Errorf("user name %q, want the sub claim", ci.Username)
	}
	if _, code := r.connect(t, packets.V5, "dev2", "", tok); code != packets.NotAuthorized {
		t.Errorf("token of another client: %v", code)
	}
	if _, code := r.connect(t, packets.V5, "dev3", "bob", "letmein"); code != packets.Success {
		t.Errorf("HTTP allowed: %v", code)
	}
	if _, code := r.connect(t, packets.V5, "dev4", "carol", "wrong"); code != packets.ServerUnavailable {
		t.Errorf("HTTP failing with on_error deny: %v", code)
	}
	// SIGHUP: on_error ignore now; nobody after the HTTP hook decides, so
	// the client is refused as every authenticator abstained.
	write("    on_error: ignore\n")
	r.sig <- syscall.SIGHUP
	terntest.Eventually(t, "the reload", func() bool { return strings.Contains(logs.String(), "HTTP auth settings reloaded") })
	if _, code := r.connect(t, packets.V5, "dev5", "carol", "wrong"); code != packets.BadUserNameOrPassword {
		t.Errorf("after the reload: %v", code)
	}
	if strings.Contains(logs.String(), "next restart") {
		t.Errorf("auth.http change reported as needing a restart:\n%s", logs.String())
	}
	mu.Lock()
	if slices.Contains(asked, "alice") {
		t.Error("a JWT client was sent to the HTTP service")
	}
	mu.Unlock()
	metrics := httpBody(t, r.adminURL()+"/metrics", "")
	for _, want := range []string{`tern_auth_requests_total{backend="jwt",result="allow"} 1`, `tern_auth_requests_total{backend="jwt",result="deny"} 1`,
		`tern_auth_requests_total{backend="http",result="allow"} 1`, `tern_auth_request_seconds_bucket{backend="http"`, "tern_auth_inflight_requests"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// Presence events and a webhook from the configuration; flapping
// detection too.
func TestServeEventsAndFlapping(t *testing.T) {
	var mu sync.Mutex
	var got []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []map[string]any
		json.NewDecoder(r.Body).Decode(&batch)
		mu.Lock()
		for _, e := range batch {
			got = append(got, e["event"].(string)+" "+e["clientid"].(string))
		}
		mu.Unlock()
	}))
	defer hook.Close()
	cfg := testConfig(t)
	cfg.Events = config.Events{Node: "n1", Presence: true, Webhooks: []config.Webhook{{URL: hook.URL, Events: []string{"client.connected"}, BatchDelay: config.Duration(10 * time.Millisecond)}}}
	cfg.Bans.Flapping.MaxConnects = 3
	r := startTest(t, cfg, nil, nil)
	presence := make(chan string, 10)
	r.b.srv.Subscribe("$SYS/brokers/n1/clients/+/connected", 1, func(m *tern.Message) { presence <- m.Topic })
	for i := 1; i <= 4; i++ {
		c, code := r.connect(t, packets.V5, "looper", "", "")
		if want := map[bool]packets.ReasonCode{true: packets.Banned, false: packets.Success}[i == 4]; code != want {
			t.Fatalf("connect %d: %v, want %v", i, code, want)
		}
		c.Close()
	}
	if topic := <-presence; topic != "$SYS/brokers/n1/clients/looper/connected" {
		t.Errorf("presence event on %s", topic)
	}
	terntest.Eventually(t, "3 webhook events", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 3 })
	mu.Lock()
	if got[0] != "client.connected looper" {
		t.Errorf("webhook got %v", got)
	}
	mu.Unlock()
	var bans []map[string]any
	json.Unmarshal([]byte(httpBody(t, r.adminURL()+"/api/v1/bans", "")), &struct{ Data *[]map[string]any }{&bans})
	if len(bans) != 1 || bans[0]["by"] != "flapping" || bans[0]["until"] == nil {
		t.Errorf("bans %v", bans)
	}
	if m := httpBody(t, r.adminURL()+"/metrics", ""); !strings.Contains(m, "tern_flapping_bans_total 1") || !strings.Contains(m, `tern_webhook_events_sent_total{webhook=`) {
		t.Errorf("metrics:\n%s", m)
	}
}

// The configuration's event names are the events package's.
func TestEventNames(t *testing.T) {
	if !slices.Equal(config.EventNames, events.EventNames) {
		t.Fatalf("config %v, events %v", config.EventNames, events.EventNames)
	}
}
