package main

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/config"
	"github.com/ternmq/tern/internal/testcert"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/terntest"
)

// kubernetesServiceLinks are the variables Kubernetes sets in the pods of
// a namespace with a Service named tern (ports mqtt 1883, admin 18083).
var kubernetesServiceLinks = []string{
	"TERN_PORT=tcp://10.0.0.1:1883",
	"TERN_PORT_1883_TCP=tcp://10.0.0.1:1883",
	"TERN_PORT_1883_TCP_PROTO=tcp",
	"TERN_PORT_1883_TCP_PORT=1883",
	"TERN_PORT_1883_TCP_ADDR=10.0.0.1",
	"TERN_PORT_18083_TCP=tcp://10.0.0.1:18083",
	"TERN_PORT_18083_TCP_PROTO=tcp",
	"TERN_PORT_18083_TCP_PORT=18083",
	"TERN_PORT_18083_TCP_ADDR=10.0.0.1",
	"TERN_SERVICE_HOST=10.0.0.1",
	"TERN_SERVICE_PORT=1883",
	"TERN_SERVICE_PORT_MQTT=1883",
	"TERN_SERVICE_PORT_ADMIN=18083",
}

// tern serve starts with the variables Kubernetes injects for a Service
// named tern, logging each at DEBUG; a misspelt key gets a warning.
func TestServeWithKubernetesServiceLinks(t *testing.T) {
	for _, kv := range append(kubernetesServiceLinks, "TERN_LOG_LEVEL=debug", "TERN_LIMITS_MAX_QOSS=1",
		"TERN_LISTENERS_TCP=127.0.0.1:0", "TERN_ADMIN_LISTEN=127.0.0.1:0", "TERN_SYS_INTERVAL=0",
		"TERN_PERSISTENCE_DATA_DIR="+t.TempDir()) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	cfg, err := config.Load("", os.Environ(), nil)
	if err != nil {
		t.Fatalf("the configuration with Kubernetes' variables: %v", err)
	}
	var logs syncBuffer
	b, err := startBroker(cfg, nil, &logs)
	if err != nil {
		t.Fatalf("tern serve with Kubernetes' variables: %v", err)
	}
	defer b.shutdown(nil, func(int) {})
	l := logs.String()
	for _, kv := range kubernetesServiceLinks {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.Contains(l, "level=DEBUG msg=\"environment variable ignored: a Kubernetes service link, no configuration key\" variable="+name+"\n") {
			t.Errorf("no DEBUG line for %s:\n%s", name, l)
		}
	}
	if !strings.Contains(l, `level=WARN msg="environment variable ignored: it is no configuration key" variable=TERN_LIMITS_MAX_QOSS did_you_mean=TERN_LIMITS_MAX_QOS`) {
		t.Errorf("no warning for the misspelt key:\n%s", l)
	}
}

// gatedStore is a store whose Load stops after some records until told to
// go on, to look at the broker in the middle of a restore.
type gatedStore struct {
	storage.Store
	after   int
	reached chan struct{}
	goOn    chan struct{}
}

func (s *gatedStore) Load(l storage.Loader) error {
	return s.Store.Load(&gatedLoader{Loader: l, s: s})
}

type gatedLoader struct {
	storage.Loader
	s *gatedStore
	n int
}

func (l *gatedLoader) Retained(topic string, id uint64) error {
	if l.n++; l.n == l.s.after {
		close(l.s.reached)
		<-l.s.goOn
	}
	return l.Loader.Retained(topic, id)
}

func freePort(t *testing.T) string { return terntest.FreeAddr(t) }

// The admin listener starts before the store is read: during a long
// restore /healthz answers 200 and /readyz 503 with the state and the
// progress, and a progress line is logged every 2 s (here more often).
func TestServeAdminAnswersDuringRestore(t *testing.T) {
	cfg := testConfig(t)
	// Some retained messages in the store first.
	b, err := startBroker(cfg, nil, new(syncBuffer))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		b.srv.Publish("r/"+strings.Repeat("x", i%50)+"/"+string(rune('a'+i%26))+"/"+time.Duration(i).String(), []byte("v"), true, 1)
	}
	b.shutdown(nil, func(int) {})

	open := openStore
	gate := &gatedStore{after: 100, reached: make(chan struct{}), goOn: make(chan struct{})}
	openStore = func(dir string, log *slog.Logger) (storage.Store, error) {
		st, err := open(dir, log)
		gate.Store = st
		return gate, err
	}
	restoreLogEvery = 20 * time.Millisecond
	defer func() { openStore, restoreLogEvery = open, 2*time.Second }()
	cfg.Admin.Listen = freePort(t)
	var logs syncBuffer
	started := make(chan error, 1)
	go func() {
		var err error
		b, err = startBroker(cfg, nil, &logs)
		started <- err
	}()
	<-gate.reached
	base := "http://" + cfg.Admin.Listen
	if code := httpStatus(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz during the restore: %d", code)
	}
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ready struct {
		State    string `json:"state"`
		Progress struct {
			Records  int64 `json:"records"`
			Retained int64 `json:"retained"`
		} `json:"progress"`
	}
	json.Unmarshal(body, &ready)
	if resp.StatusCode != 503 || ready.State != "restoring" || ready.Progress.Retained != 99 || ready.Progress.Records < 599 {
		t.Errorf("/readyz during the restore: %d %s", resp.StatusCode, body)
	}
	terntest.Eventually(t, "a progress line", func() bool {
		return strings.Contains(logs.String(), `msg="restoring from the store" records=`)
	})
	close(gate.goOn)
	if err := receive(t, started, "the broker to start"); err != nil {
		t.Fatal(err)
	}
	defer b.shutdown(nil, func(int) {})
	if code := httpStatus(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz after the restore: %d", code)
	}
	if st := b.srv.Stats(); st.Retained != 500 {
		t.Errorf("restored %d retained messages, want 500", st.Retained)
	}
}

// Connects and disconnects are logged at INFO like Mosquitto's connection
// messages, failed logins with the user name and address; in JSON each
// line has one component key.
func TestServeLogs(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	if err := runTern(t, "", "passwd", "-c", "-b", "-I", "1000", pwFile, "alice", "secret"); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Auth.PasswordFile = pwFile
	cfg.Log.Format = "json"
	cfg.Log.Level = "debug"
	var logs syncBuffer
	b, err := startBroker(cfg, nil, &logs)
	if err != nil {
		t.Fatal(err)
	}
	ts := &terntest.Server{Server: b.srv, Addr: b.mqtt[0].Addr().String()}
	c := ts.Dial(t, packets.V5)
	if ack := c.Connect(&packets.Connect{ClientID: "logged", KeepAlive: 42, UsernameFlag: true, Username: "alice",
		PasswordFlag: true, Password: []byte("secret")}); ack.ReasonCode != 0 {
		t.Fatal(ack.ReasonCode)
	}
	c.Send(&packets.Disconnect{})
	c.ExpectClosed()
	if code, _ := connectAs(t, ts, "alice", "wrong"); code != packets.BadUserNameOrPassword {
		t.Fatal(code)
	}
	terntest.Eventually(t, "the disconnect logged", func() bool { return strings.Contains(logs.String(), `"msg":"client disconnected"`) })
	b.shutdown(nil, func(int) {})

	var connected, disconnected, refused map[string]any
	for line := range strings.Lines(logs.String()) {
		if n := strings.Count(line, `"component"`); n > 1 {
			t.Errorf("%d component keys: %s", n, line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %s", line)
		}
		switch {
		case m["msg"] == "client connected" && m["level"] == "INFO":
			connected = m
		case m["msg"] == "client disconnected" && m["level"] == "INFO":
			disconnected = m
		case m["msg"] == "connection refused":
			refused = m
		case m["component"] == "pebble" && m["level"] != "DEBUG" && !strings.Contains(line, "write stall"):
			t.Errorf("the store's chatter above DEBUG: %s", line)
		}
	}
	if connected["level"] != "INFO" || connected["client"] != "logged" || connected["user"] != "alice" ||
		connected["protocol"] != "mqttv5" || connected["keepalive"] != 42.0 || !strings.HasPrefix(connected["remote"].(string), "127.0.0.1:") {
		t.Errorf("connect line: %v", connected)
	}
	if disconnected["level"] != "INFO" || disconnected["client"] != "logged" || disconnected["reason"] != "client_disconnect" {
		t.Errorf("disconnect line: %v", disconnected)
	}
	if refused["level"] != "INFO" || refused["user"] != "alice" || refused["reason"] != "Bad User Name or Password" ||
		!strings.HasPrefix(refused["remote"].(string), "127.0.0.1:") {
		t.Errorf("failed login line: %v", refused)
	}
}

// certificate writes a self-signed certificate valid between the times
// given, and its key.
func certificate(t *testing.T, dir, name string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	return testcert.WriteFiles(t, dir, name,
		testcert.SelfSigned(t, testcert.Spec{CN: name, Server: true, NotBefore: notBefore, NotAfter: notAfter}))
}

// A certificate expired or not yet valid at start or reload is a warning
// with its dates, and every certificate's dates are metrics.
func TestServeCertificateValidity(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().Truncate(time.Second)
	expiredCrt, expiredKey := certificate(t, dir, "expired", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	futureCrt, futureKey := certificate(t, dir, "future", now.Add(24*time.Hour), now.Add(48*time.Hour))
	cfg := testConfig(t)
	cfg.Listeners.TLS = []config.NetListener{{Address: "127.0.0.1:0"},
		{Address: "127.0.0.1:0", PerListener: config.PerListener{CertFile: futureCrt, KeyFile: futureKey}}}
	cfg.TLS.CertFile, cfg.TLS.KeyFile = expiredCrt, expiredKey
	var logs syncBuffer
	b, err := startBroker(cfg, nil, &logs)
	if err != nil {
		t.Fatal(err)
	}
	defer b.shutdown(nil, func(int) {})
	l := logs.String()
	for _, want := range []string{
		`level=WARN msg="TLS certificate has expired: clients will refuse it" listener=tls file=` + expiredCrt + ` subject="CN=expired" not_before=` +
			now.Add(-48*time.Hour).UTC().Format(time.RFC3339) + ` not_after=` + now.Add(-24*time.Hour).UTC().Format(time.RFC3339),
		`level=WARN msg="TLS certificate is not valid yet: clients will refuse it" listener=tls[1] file=` + futureCrt,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}
	// Each TLS listener presents its own certificate.
	presented := 0
	for _, l := range b.mqtt {
		want := map[string]string{"tls[0]": "expired", "tls[1]": "future"}[l.ID()]
		if want == "" {
			continue
		}
		conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true}) // the dates are wrong on purpose
		if err != nil {
			t.Fatalf("%s: %v", l.ID(), err)
		}
		if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != want {
			t.Errorf("listener %s presents %q, want %q", l.ID(), cn, want)
		}
		conn.Close()
		presented++
	}
	if presented != 2 {
		t.Fatalf("%d TLS listeners found", presented)
	}
	// A reload of a certificate that expires within two weeks warns too.
	soonCrt, soonKey := certificate(t, dir, "soon", now.Add(-time.Hour), now.Add(72*time.Hour))
	os.Rename(soonCrt, expiredCrt)
	os.Rename(soonKey, expiredKey)
	b.reload()
	if l := logs.String(); !strings.Contains(l, `level=WARN msg="TLS certificate expires soon" listener=tls file=`+expiredCrt+` subject="CN=soon"`) {
		t.Errorf("no warning at reload:\n%s", l)
	}
	resp, err := http.Get("http://" + b.admLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for name, want := range map[string]time.Time{
		`tern_tls_certificate_not_after_seconds{file="` + expiredCrt + `",name="tls"} `:   now.Add(72 * time.Hour),
		`tern_tls_certificate_not_after_seconds{file="` + futureCrt + `",name="tls[1]"} `: now.Add(48 * time.Hour),
	} {
		_, rest, ok := strings.Cut(string(body), name)
		line, _, _ := strings.Cut(rest, "\n")
		if v, err := strconv.ParseFloat(line, 64); !ok || err != nil || int64(v) != want.Unix() {
			t.Errorf("metric %s%s, want %d", name, line, want.Unix())
		}
	}
}

// A file the broker may not read is reported with the user it runs as
// and what to do (the container image runs as 65532, tern passwd writes
// 0600).
func TestFilePermissionHint(t *testing.T) {
	f := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(f, []byte("x"), 0o600)
	err := fileHint(&fs.PathError{Op: "open", Path: f, Err: syscall.EACCES})
	msg := err.Error()
	uid := fmt.Sprint(os.Getuid())
	for _, want := range []string{"permission denied", "tern runs as uid " + uid + " ", "which cannot read it", "with mode 0600",
		"readable by uid " + uid, "chown " + uid + " " + f + ", keeping mode 0600", "mode 0640 with group " + fmt.Sprint(os.Getgid())} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Error("the hint hides the error")
	}
	if other := errors.New("x"); fileHint(other) != other {
		t.Error("other errors changed")
	}
}

// Per-listener settings, as Mosquitto's per_listener_settings: each
// listener's own password file, ACL, anonymous access, connection limit
// and connection rate; the others use the auth section's.
func TestServePerListenerSettings(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(text), 0o600)
		return p
	}
	pwA, pwGlobal := filepath.Join(dir, "passwd-a"), filepath.Join(dir, "passwd")
	if err := runTern(t, "", "passwd", "-c", "-b", "-I", "1000", pwA, "alice", "apw"); err != nil {
		t.Fatal(err)
	}
	if err := runTern(t, "", "passwd", "-c", "-b", "-I", "1000", pwGlobal, "bob", "bpw"); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Auth.PasswordFile = pwGlobal
	anon := true
	cfg.Listeners.TCP = []config.NetListener{
		{Address: "127.0.0.1:0", PerListener: config.PerListener{PasswordFile: pwA, ACLFile: write("acl-a", "user alice\ntopic readwrite a/#\n")}},
		{Address: "127.0.0.1:0"},
		{Address: "127.0.0.1:0", PerListener: config.PerListener{AllowAnonymous: &anon, MaxConnections: 1}},
		{Address: "127.0.0.1:0", PerListener: config.PerListener{AllowAnonymous: &anon, MaxConnectionRate: 0.001}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := startBroker(cfg, nil, new(syncBuffer))
	if err != nil {
		t.Fatal(err)
	}
	defer b.shutdown(nil, func(int) {})
	on := func(i int) *terntest.Server { return &terntest.Server{Server: b.srv, Addr: b.mqtt[i].Addr().String()} }
	for _, tc := range []struct {
		listener int
		user, pw string
		want     packets.ReasonCode
	}{
		{0, "alice", "apw", packets.Success},
		{0, "bob", "bpw", packets.BadUserNameOrPassword},
		{0, "", "", packets.BadUserNameOrPassword},
		{1, "bob", "bpw", packets.Success},
		{1, "alice", "apw", packets.BadUserNameOrPassword},
		{2, "", "", packets.Success},
		{3, "", "", packets.Success},
		{3, "", "", packets.ConnectionRateExceeded},
	} {
		c := on(tc.listener).Dial(t, packets.V5)
		cp := &packets.Connect{ClientID: "c" + tc.user + strconv.Itoa(tc.listener) + time.Now().String(), CleanStart: true}
		if tc.user != "" {
			cp.UsernameFlag, cp.Username, cp.PasswordFlag, cp.Password = true, tc.user, true, []byte(tc.pw)
		}
		if ack := c.Connect(cp); ack.ReasonCode != tc.want {
			t.Errorf("listener %d, user %q: CONNACK %v, want %v", tc.listener, tc.user, ack.ReasonCode, tc.want)
		}
		if tc.listener != 2 {
			c.Close()
		}
	}
	// listeners.tcp[2] holds one connection at a time.
	c := on(2).Dial(t, packets.V5)
	c.Send(&packets.Connect{ClientID: "second", CleanStart: true})
	if got := c.ExpectClosed(); len(got) != 0 {
		t.Errorf("over max_connections: got %v, want the connection closed", got)
	}
	// alice's ACL is her listener's; bob's listener has none.
	_, alice := connectAs(t, on(0), "alice", "apw")
	_, bob := connectAs(t, on(1), "bob", "bpw")
	for _, tc := range []struct {
		c     *terntest.Conn
		topic string
		want  packets.ReasonCode
	}{{alice, "a/x", packets.NoMatchingSubscribers}, {alice, "b/x", packets.NotAuthorized}, {bob, "b/x", packets.NoMatchingSubscribers}} {
		tc.c.Send(&packets.Publish{Topic: tc.topic, QoS: 1, PacketID: 1, Payload: []byte("x")})
		if ack, ok := tc.c.Recv().(*packets.Puback); !ok || ack.ReasonCode != tc.want {
			t.Errorf("publish to %s: %+v, want %v", tc.topic, ack, tc.want)
		}
	}
}

// A session restored from the store is offline and its listener unknown
// until its client comes back: deliveries to it must then pass every ACL,
// so that a listener's rules are not bypassed by a restart.
func TestServePerListenerACLAfterRestart(t *testing.T) {
	dir := t.TempDir()
	pwA := filepath.Join(dir, "passwd-a")
	if err := runTern(t, "", "passwd", "-c", "-b", "-I", "1000", pwA, "alice", "apw"); err != nil {
		t.Fatal(err)
	}
	acl := filepath.Join(dir, "acl-a")
	os.WriteFile(acl, []byte("user alice\ntopic read a/#\n"), 0o600)
	cfg := testConfig(t)
	cfg.Listeners.TCP = []config.NetListener{
		{Address: "127.0.0.1:0", PerListener: config.PerListener{PasswordFile: pwA, ACLFile: acl}},
		{Address: "127.0.0.1:0"}, // anonymous on loopback, no ACL
	}
	start := func() (*broker, *terntest.Server, *terntest.Server) {
		b, err := startBroker(cfg, nil, new(syncBuffer))
		if err != nil {
			t.Fatal(err)
		}
		return b, &terntest.Server{Server: b.srv, Addr: b.mqtt[0].Addr().String()}, &terntest.Server{Server: b.srv, Addr: b.mqtt[1].Addr().String()}
	}
	expiry := uint32(3600)
	login := &packets.Connect{ClientID: "alice-1", UsernameFlag: true, Username: "alice", PasswordFlag: true,
		Password: []byte("apw"), Properties: packets.Properties{SessionExpiry: &expiry}}
	b, a, _ := start()
	c := a.Dial(t, packets.V5)
	c.Connect(login)
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "#", QoS: 1}}})
	if ack, ok := c.Recv().(*packets.Suback); !ok || ack.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %+v", ack)
	}
	c.Close()
	terntest.Eventually(t, "alice offline", func() bool {
		si, ok := b.srv.SessionInfo("alice-1")
		return ok && !si.Online
	})
	b.shutdown(nil, func(int) {})

	b, a, open := start()
	defer b.shutdown(nil, func(int) {})
	p := open.Dial(t, packets.V5)
	p.MustConnect("publisher")
	for i, topic := range []string{"b/secret", "a/news"} {
		p.Send(&packets.Publish{Topic: topic, QoS: 1, PacketID: uint16(i + 1), Payload: []byte(topic)})
		p.Recv()
	}
	c = a.Dial(t, packets.V5)
	c.Connect(login)
	m, ok := c.Recv().(*packets.Publish)
	if !ok || m.Topic != "a/news" {
		t.Fatalf("alice got %+v, want a/news only", m)
	}
	if pk, err := c.TryRecv(200 * time.Millisecond); err == nil {
		t.Fatalf("alice got %s %+v", pk.Type(), pk)
	}
}
