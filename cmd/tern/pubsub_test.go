package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
	"github.com/ternmq/tern/topics"
)

// subscribed tells, by client id, of each subscription made: the moment a
// publish reaches a subscriber started in the background.
type subscribed chan string

func (subscribed) ID() string { return "test-subscribed" }
func (s subscribed) OnSubscribed(c *tern.Client, _ topics.Subscription) {
	if c != nil {
		s <- c.ID()
	}
}
func (subscribed) OnUnsubscribed(*tern.Client, string, string) {}

// passwords lets in user "u" with password "p", and anonymous clients.
type passwords struct{}

func (passwords) ID() string { return "test-passwords" }
func (passwords) Authenticate(_ *tern.Client, pk *packets.Connect) tern.Decision {
	if pk.Username == "" || pk.Username == "u" && string(pk.Password) == "p" {
		return tern.Allow
	}
	return tern.Deny
}

type pubsubEnv struct {
	ts   *terntest.Server
	subs subscribed
	host string
	port string
}

func newPubSubEnv(t *testing.T) *pubsubEnv {
	t.Helper()
	subs := make(subscribed, 16)
	ts := terntest.NewServer(t, nil, subs, passwords{})
	host, port, _ := net.SplitHostPort(ts.Addr)
	return &pubsubEnv{ts: ts, subs: subs, host: host, port: port}
}

func (e *pubsubEnv) args(cmd string, more ...string) []string {
	return append([]string{cmd, "-h", e.host, "-p", e.port}, more...)
}

// sub starts tern sub in the background and returns once each of its
// filters (-t) is subscribed; the returned function waits for it to end.
func (e *pubsubEnv) sub(t *testing.T, id string, args ...string) func() (string, error) {
	t.Helper()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := runTernOutput(t, "", e.args("sub", append([]string{"-i", id}, args...)...)...)
		done <- result{out, err}
	}()
	filters := 0
	for _, a := range args {
		if a == "-t" {
			filters++
		}
	}
	for {
		select {
		case got := <-e.subs:
			if got == id {
				if filters--; filters > 0 {
					continue
				}
				return func() (string, error) {
					r := receive(t, done, "tern sub to end")
					return r.out, r.err
				}
			}
		case r := <-done:
			t.Fatalf("tern sub ended before subscribing: %v\n%s", r.err, r.out)
		}
	}
}

func (e *pubsubEnv) pub(t *testing.T, stdin string, args ...string) {
	t.Helper()
	if out, err := runTernOutput(t, stdin, e.args("pub", args...)...); err != nil {
		t.Fatalf("tern pub %v: %v\n%s", args, err, out)
	}
}

func TestPubSubEachVersion(t *testing.T) {
	e := newPubSubEnv(t)
	for _, v := range []string{"mqttv5", "mqttv311", "mqttv31", "5", "4", "3"} {
		t.Run(v, func(t *testing.T) {
			topic := "v/" + v
			wait := e.sub(t, "sub-"+v, "-V", v, "-t", topic+"/#", "-t", "other/"+v, "-v", "-C", "3", "-q", "2", "-W", "20")
			e.pub(t, "", "-V", v, "-t", topic+"/a", "-m", "hello", "-q", "1")
			e.pub(t, "", "-V", v, "-t", "other/"+v, "-m", "two words", "-q", "2", "-u", "u", "-P", "p", "-i", "pub-"+v)
			e.pub(t, "", "-V", v, "-t", topic+"/empty", "-n")
			out, err := wait()
			if err != nil {
				t.Fatal(err)
			}
			if want := topic + "/a hello\nother/" + v + " two words\n" + topic + "/empty \n"; out != want {
				t.Errorf("tern sub printed %q, want %q", out, want)
			}
		})
	}
}

func TestPubMessageSources(t *testing.T) {
	e := newPubSubEnv(t)
	file := filepath.Join(t.TempDir(), "payload")
	os.WriteFile(file, []byte("from\x00a file"), 0o600)
	wait := e.sub(t, "src", "-t", "src", "-C", "4", "-N")
	e.pub(t, "", "-t", "src", "-f", file, "-q", "1") // QoS 1: in order across connections
	e.pub(t, "all\nof it", "-t", "src", "-s", "-q", "1")
	e.pub(t, "line one\nline two\n", "-t", "src", "-l", "-q", "1")
	out, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	if want := "from\x00a fileall\nof itline oneline two"; out != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

func TestSubRetained(t *testing.T) {
	e := newPubSubEnv(t)
	e.pub(t, "", "-t", "r/1", "-m", "stale", "-r", "-q", "1")
	// Without -R the retained message is printed at once.
	out, err := runTernOutput(t, "", e.args("sub", "-t", "r/#", "-C", "1", "-W", "20")...)
	if err != nil || out != "stale\n" {
		t.Fatalf("sub: %q, %v", out, err)
	}
	// With -R it is skipped, and a fresh one is printed.
	wait := e.sub(t, "fresh", "-t", "r/#", "-C", "1", "-R", "-v")
	e.pub(t, "", "-t", "r/2", "-m", "fresh")
	if out, err := wait(); err != nil || out != "r/2 fresh\n" {
		t.Errorf("sub -R: %q, %v", out, err)
	}
	// -r -n clears it (QoS 1: the broker has it when pub returns).
	e.pub(t, "", "-t", "r/1", "-r", "-n", "-q", "1")
	if _, ok := e.ts.RetainedMessage("r/1"); ok {
		t.Error("retained message not cleared")
	}
}

func TestPubUserProperties(t *testing.T) {
	e := newPubSubEnv(t)
	got := make(chan *tern.Message, 1)
	e.ts.Subscribe("props", 1, func(m *tern.Message) { got <- m })
	e.pub(t, "", "-t", "props", "-m", "x", "--user-property", "k=v", "--user-property", "site=a=b", "-q", "1")
	m := receive(t, got, "the message")
	var props []string
	if m.Properties != nil {
		for _, u := range m.Properties.User {
			props = append(props, u.Key+"="+u.Value)
		}
	}
	if !slices.Equal(props, []string{"k=v", "site=a=b"}) {
		t.Errorf("user properties %v", props)
	}
}

func TestPubSubTLS(t *testing.T) {
	e := newPubSubEnv(t)
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir, "tern test") // for 127.0.0.1
	st, err := listeners.NewServerTLS(listeners.TLSOptions{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTLS("tls", "127.0.0.1:0", st)
	if err := l.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := e.ts.AddListener(l); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	got := make(chan *tern.Message, 4)
	e.ts.Subscribe("tls/#", 1, func(m *tern.Message) { got <- m })
	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"CA file", []string{"-h", "127.0.0.1", "--cafile", certFile}, true},
		{"insecure: the name does not match, the chain does", []string{"-h", "localhost", "--cafile", certFile, "--insecure"}, true},
		{"name mismatch", []string{"-h", "localhost", "--cafile", certFile}, false},
		{"unknown CA", []string{"-h", "127.0.0.1", "--tls-use-os-certs"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"pub", "-p", port, "-t", "tls/x", "-m", tt.name, "--connect-timeout", "5s"}, tt.args...)
			_, err := runTernOutput(t, "", args...)
			if (err == nil) != tt.ok {
				t.Fatalf("tern pub: %v", err)
			}
			if tt.ok {
				if m := receive(t, got, "the message"); string(m.Payload) != tt.name {
					t.Errorf("got %q", m.Payload)
				}
			}
		})
	}
}

func TestPubSubErrors(t *testing.T) {
	e := newPubSubEnv(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no topic", e.args("pub", "-m", "x"), "-t"},
		{"no message", e.args("pub", "-t", "a"), "exactly one of"},
		{"two messages", e.args("pub", "-t", "a", "-m", "x", "-n"), "exactly one of"},
		{"bad QoS", e.args("pub", "-t", "a", "-m", "x", "-q", "3"), "-q 3"},
		{"bad version", e.args("pub", "-t", "a", "-m", "x", "-V", "mqttv6"), "mqttv6"},
		{"user property on 3.1.1", e.args("pub", "-t", "a", "-m", "x", "-V", "4", "--user-property", "k=v"), "MQTT 5"},
		{"bad user property", e.args("pub", "-t", "a", "-m", "x", "--user-property", "novalue"), "key=value"},
		{"wrong password, v5", e.args("pub", "-t", "a", "-m", "x", "-u", "u", "-P", "wrong"), "0x86"},
		{"wrong password, 3.1.1", e.args("pub", "-t", "a", "-m", "x", "-u", "u", "-P", "wrong", "-V", "311"), "password"},
		{"invalid topic", e.args("pub", "-t", "a/#", "-m", "x", "-q", "1"), `-t "a/#"`},
		{"sub without topic", e.args("sub"), "-t"},
		{"sub refused filter", e.args("sub", "-t", "a/#/b"), "a/#/b"},
		{"nothing listening", []string{"pub", "--unix", filepath.Join(t.TempDir(), "none.sock"), "-t", "a", "-m", "x"}, "none.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runTernOutput(t, "", tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// A broker's DISCONNECT ends tern pub at once, with its reason.
func TestPubDisconnectedByBroker(t *testing.T) {
	ts := terntest.NewServer(t, &tern.Options{MaxTopicLevels: 2})
	host, port, _ := net.SplitHostPort(ts.Addr)
	_, err := runTernOutput(t, "", "pub", "-h", host, "-p", port, "-t", "a/b/c", "-m", "x", "-q", "1")
	if err == nil || !strings.Contains(err.Error(), "disconnected by the broker: 0x90") {
		t.Errorf("error %v", err)
	}
}

// A subscriber the broker disconnects ends with the reason.
func TestSubKicked(t *testing.T) {
	e := newPubSubEnv(t)
	for _, tt := range []struct{ version, want string }{{"5", "disconnected by the broker: 0x98 Administrative action"}, {"4", "connection lost"}} {
		wait := e.sub(t, "kicked-"+tt.version, "-t", "k", "-V", tt.version)
		if !e.ts.Kick("kicked-" + tt.version) {
			t.Fatal("Kick found no client")
		}
		if _, err := wait(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("-V %s: %v, want %q", tt.version, err, tt.want)
		}
	}
}

func TestSubTimeout(t *testing.T) {
	e := newPubSubEnv(t)
	_, err := runTernOutput(t, "", e.args("sub", "-t", "quiet", "-W", "1")...)
	if !errors.Is(err, errTimedOut) {
		t.Errorf("sub -W 1: %v", err)
	}
}

func TestPubSubHelp(t *testing.T) {
	for _, cmd := range []string{"pub", "sub"} {
		out, err := runTernOutput(t, "", cmd, "--help")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"-h, --host", "-p, --port", "-t, --topic", "-q, --qos", "-V, --protocol-version", "--cafile", "--insecure", "      --help"} {
			if !strings.Contains(out, want) {
				t.Errorf("tern %s --help lacks %q:\n%s", cmd, want, out)
			}
		}
	}
}
