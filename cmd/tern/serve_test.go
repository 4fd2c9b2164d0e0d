package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/config"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// runTernOutput runs the tern command with args and stdin, returning what
// it wrote to standard output and its error.
func runTernOutput(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := rootCmd()
	var out, errOut bytes.Buffer
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(joinPropertyArgs(args))
	err := root.Execute()
	return out.String(), err
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer = terntest.LogBuffer

// notifySocket sets NOTIFY_SOCKET to a datagram socket, as systemd does
// for Type=notify, and returns what the broker sends to it.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	notes := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			notes <- string(buf[:n])
		}
	}()
	return notes
}

func expectNotify(t *testing.T, notes <-chan string, want string) {
	t.Helper()
	select {
	case got := <-notes:
		if !strings.HasPrefix(got, want) {
			t.Fatalf("sd_notify %q, want %q", got, want)
		}
	case <-time.After(terntest.Timeout):
		t.Fatalf("no sd_notify %q", want)
	}
}

// testConfig listens on free loopback ports, without $SYS.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	c := config.Default()
	c.Listeners.TCP = []config.NetListener{{Address: "127.0.0.1:0"}}
	c.Admin.Listen = "127.0.0.1:0"
	c.SysInterval = 0
	c.Persistence.DataDir = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(terntest.Timeout):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// SIGTERM drains: /readyz turns 503 while the listener still accepts, a
// second signal cuts the drain short, and v5 clients read 0x8B.
func TestSignalDrainsAndShutsDown(t *testing.T) {
	notes := notifySocket(t)
	cfg := testConfig(t)
	cfg.DrainDelay = config.Duration(time.Hour)
	var logs syncBuffer
	b, err := startBroker(cfg, nil, &logs)
	if err != nil {
		t.Fatal(err)
	}
	expectNotify(t, notes, "READY=1")
	adminURL := "http://" + b.admLn.Addr().String()
	if code := httpStatus(t, adminURL+"/readyz"); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	ts := &terntest.Server{Server: b.srv, Addr: b.mqtt[0].Addr().String()}
	v5 := ts.Dial(t, packets.V5)
	v5.MustConnect("v5")
	v3 := ts.Dial(t, packets.V311)
	v3.MustConnect("v3")

	sig := make(chan os.Signal, 2)
	exited := make(chan int, 1)
	ran := make(chan error, 1)
	go func() { ran <- b.run(context.Background(), sig, func(code int) { exited <- code }) }()
	sig <- syscall.SIGTERM
	expectNotify(t, notes, "STOPPING=1")
	terntest.Eventually(t, "/readyz to turn 503", func() bool { return httpStatus(t, adminURL+"/readyz") == 503 })
	if code := httpStatus(t, adminURL+"/healthz"); code != 200 {
		t.Errorf("healthz %d while draining", code)
	}
	late := ts.Dial(t, packets.V5) // still accepting while draining
	late.MustConnect("late")

	sig <- syscall.SIGTERM
	if code := receive(t, exited, "the second signal to exit"); code != 1 {
		t.Errorf("exit(%d)", code)
	}
	for _, c := range []*terntest.Conn{v5, late} {
		got := c.ExpectClosed()
		if len(got) != 1 || got[0].(*packets.Disconnect).ReasonCode != packets.ServerShuttingDown {
			t.Errorf("v5 client read %v, want DISCONNECT 0x8B", got)
		}
		c.Close()
	}
	if got := v3.ExpectClosed(); len(got) != 0 {
		t.Errorf("v3 client read %v", got)
	}
	v3.Close()
	if err := receive(t, ran, "run to return"); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", ts.Addr); err == nil {
		t.Error("MQTT listener still open")
	}
	if !strings.Contains(logs.String(), "second signal") {
		t.Errorf("log:\n%s", logs.String())
	}
}

// Without a drain delay, one signal is enough, and run returns by itself.
func TestContextEndsTheBroker(t *testing.T) {
	b, err := startBroker(testConfig(t), nil, new(syncBuffer))
	if err != nil {
		t.Fatal(err)
	}
	ts := &terntest.Server{Server: b.srv, Addr: b.mqtt[0].Addr().String()}
	c := ts.Dial(t, packets.V5)
	c.MustConnect("c")
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- b.run(ctx, make(chan os.Signal), func(int) { t.Error("exit called") }) }()
	cancel()
	if got := c.ExpectClosed(); len(got) != 1 || got[0].(*packets.Disconnect).ReasonCode != packets.ServerShuttingDown {
		t.Errorf("read %v", got)
	}
	c.Close()
	if err := receive(t, ran, "run to return"); err != nil {
		t.Fatal(err)
	}
}

// connectAs logs in with a user name and password and returns the CONNACK
// code and the connection.
func connectAs(t *testing.T, ts *terntest.Server, user, pw string) (packets.ReasonCode, *terntest.Conn) {
	t.Helper()
	c := ts.Dial(t, packets.V5)
	ack := c.Connect(&packets.Connect{ClientID: user + "-" + pw, CleanStart: true, UsernameFlag: true, Username: user,
		PasswordFlag: true, Password: []byte(pw)})
	return ack.ReasonCode, c
}

// SIGHUP reloads the password file and the log level without dropping
// connections; other changed settings are reported, and a configuration
// that does not load changes nothing.
func TestReload(t *testing.T) {
	notes := notifySocket(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	if err := runTern(t, "", "passwd", "-c", "-b", pwFile, "alice", "one"); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "tern.yaml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(cfgFile, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := "listeners:\n  tcp: [127.0.0.1:0]\nadmin:\n  listen: \"\"\nsys_interval: 0\npersistence:\n  data_dir: " + filepath.Join(dir, "data") + "\nauth:\n  password_file: " + pwFile + "\n"
	write(base + "log:\n  level: info\n")
	load := func() (*config.Config, error) { return config.Load(cfgFile, nil, nil) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	b, err := startBroker(cfg, load, &logs)
	if err != nil {
		t.Fatal(err)
	}
	expectNotify(t, notes, "READY=1")
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	sig := make(chan os.Signal, 1)
	go func() { ran <- b.run(ctx, sig, func(int) {}) }()
	t.Cleanup(func() {
		cancel()
		receive(t, ran, "run to return")
	})
	ts := &terntest.Server{Server: b.srv, Addr: b.mqtt[0].Addr().String()}
	code, kept := connectAs(t, ts, "alice", "one")
	if code != packets.Success {
		t.Fatalf("alice/one: %v", code)
	}

	// A new password, a new log level and a setting that needs a restart.
	if err := runTern(t, "", "passwd", "-b", pwFile, "alice", "two"); err != nil {
		t.Fatal(err)
	}
	write(base + "log:\n  level: debug\nlimits:\n  max_qos: 1\n")
	sig <- syscall.SIGHUP
	expectNotify(t, notes, "RELOADING=1")
	expectNotify(t, notes, "READY=1")
	if code, _ := connectAs(t, ts, "alice", "two"); code != packets.Success {
		t.Errorf("alice/two after reload: %v", code)
	}
	if code, _ := connectAs(t, ts, "alice", "one"); code != packets.BadUserNameOrPassword {
		t.Errorf("alice/one after reload: %v", code)
	}
	if b.level.Level() != slog.LevelDebug {
		t.Errorf("log level %v after reload", b.level.Level())
	}
	kept.Send(&packets.Pingreq{}) // the connection made before the reload is still there
	if _, ok := kept.Recv().(*packets.Pingresp); !ok {
		t.Error("no PINGRESP on the connection made before the reload")
	}
	if l := logs.String(); !strings.Contains(l, "next restart") || !strings.Contains(l, "limits.max_qos") {
		t.Errorf("no warning about limits.max_qos:\n%s", l)
	}

	// A configuration that does not load, and a password file that does not
	// parse: both stay as they were.
	write(base + "log:\n  level: loud\n")
	os.WriteFile(pwFile, []byte("not a password line\n"), 0o600)
	sig <- syscall.SIGHUP
	expectNotify(t, notes, "RELOADING=1")
	expectNotify(t, notes, "READY=1")
	if b.level.Level() != slog.LevelDebug {
		t.Errorf("log level %v after a bad reload", b.level.Level())
	}
	if code, _ := connectAs(t, ts, "alice", "two"); code != packets.Success {
		t.Errorf("alice/two after a bad reload: %v", code)
	}
	if l := logs.String(); !strings.Contains(l, "configuration not reloaded") || !strings.Contains(l, "keeping the previous password file") {
		t.Errorf("bad reload not logged:\n%s", l)
	}
}

func TestServeConfiguration(t *testing.T) {
	t.Setenv("TERN_LOG_LEVEL", "debug")
	out, err := runTernOutput(t, "", "serve", "-c", "../../tern.example.yaml", "--max-qos", "1", "--print-config")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "printed.yaml")
	os.WriteFile(file, []byte(out), 0o600)
	c, err := config.Load(file, nil, nil)
	if err != nil {
		t.Fatalf("printed configuration: %v\n%s", err, out)
	}
	if c.Limits.MaxQoS != 1 || c.Log.Level != "debug" {
		t.Errorf("printed:\n%s", out)
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("limits:\n  max_qos: 1\n  max_inflight: 5\n"), 0o600)
	tests := []struct {
		name string
		env  string
		args []string
		want string
	}{
		{"unknown key in the file", "", []string{"serve", "-c", bad}, `unknown key "limits.max_inflight"`},
		{"file from TERN_CONFIG", "TERN_CONFIG=" + bad, []string{"serve"}, `unknown key "limits.max_inflight"`},
		{"missing file", "", []string{"serve", "-c", "/nonexistent/tern.yaml"}, "/nonexistent/tern.yaml"},
		{"port out of range", "", []string{"serve", "--durability", "off", "--listen", "127.0.0.1:70000"}, `the port "70000" is not a number from 0 to 65535`},
		{"bad flag value", "", []string{"serve", "--max-qos", "x"}, "--max-qos"},
		{"port in use", "", []string{"serve", "--durability", "off", "--admin-listen", "", "--sys-interval", "0", "--listen", "127.0.0.1:0", "--listen", taken.Addr().String()}, "listener tcp[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				k, v, _ := strings.Cut(tt.env, "=")
				t.Setenv(k, v)
			}
			_, err := runTernOutput(t, "", tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, err := runTernOutput(t, "", "version")
	if err != nil || !strings.HasPrefix(out, "tern 0.") || !strings.Contains(out, "go1.") {
		t.Errorf("tern version: %q, %v", out, err)
	}
}
