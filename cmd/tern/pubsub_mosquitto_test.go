package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// runTernStreams runs tern with args and returns standard output, standard
// error and the error.
func runTernStreams(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := rootCmd()
	var out, errOut bytes.Buffer
	root.SetIn(strings.NewReader(""))
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(joinPropertyArgs(args))
	err := root.Execute()
	return out.String(), errOut.String(), err
}

// -c (and -x) keep the session: what is published while tern sub is gone
// arrives at its next run, as with mosquitto_sub -c.
func TestSubPersistentSession(t *testing.T) {
	e := newPubSubEnv(t)
	for _, tc := range []struct{ v, x string }{{"5", ""}, {"5", "60"}, {"311", ""}} {
		id := "keep-" + tc.v + "-" + tc.x
		args := []string{"-c", "-q", "1", "-t", "keep/" + id, "-C", "1", "-W", "20", "-V", tc.v}
		if tc.x != "" {
			args = append(args, "-x", tc.x)
		}
		wait := e.sub(t, id, args...)
		e.pub(t, "", "-t", "keep/"+id, "-m", "first", "-q", "1")
		if out, err := wait(); err != nil || out != "first\n" {
			t.Fatalf("-V %s: first run %q, %v", tc.v, out, err)
		}
		si, ok := e.ts.SessionInfo(id)
		want := uint32(tern.NeverExpire)
		if tc.x == "60" {
			want = 60
		}
		if !ok || si.Expiry != want {
			t.Fatalf("-V %s -x %q: session %+v (kept %v), want expiry %d", tc.v, tc.x, si, ok, want)
		}
		e.pub(t, "", "-t", "keep/"+id, "-m", "while away", "-q", "1")
		out, err := runTernOutput(t, "", e.args("sub", append([]string{"-i", id}, args...)...)...)
		if err != nil || out != "while away\n" {
			t.Errorf("-V %s: second run %q, %v", tc.v, out, err)
		}
	}
	if _, _, err := runTernStreams(t, e.args("sub", "-c", "-t", "x")...); err == nil || !strings.Contains(err.Error(), "-c needs a client id") {
		t.Errorf("-c without -i: %v", err)
	}
	if _, _, err := runTernStreams(t, e.args("sub", "-i", "x", "-x", "soon", "-t", "x")...); err == nil || !strings.Contains(err.Error(), "-x") {
		t.Errorf("-x soon: %v", err)
	}
}

// -d prints each packet as mosquitto_pub -d does.
func TestPubDebug(t *testing.T) {
	e := newPubSubEnv(t)
	for _, v := range []string{"5", "311"} {
		_, stderr, err := runTernStreams(t, e.args("pub", "-d", "-i", "dbg", "-t", "d/x", "-m", "hi", "-q", "1", "-V", v)...)
		if err != nil {
			t.Fatal(err)
		}
		rc := "16" // no subscriber
		if v == "311" {
			rc = "0"
		}
		want := "Client dbg sending CONNECT\nClient dbg received CONNACK (0)\n" +
			"Client dbg sending PUBLISH (d0, q1, r0, m1, 'd/x', ... (2 bytes))\n" +
			"Client dbg received PUBACK (Mid: 1, RC:" + rc + ")\nClient dbg sending DISCONNECT\n"
		var lines []string
		for l := range strings.Lines(stderr) {
			if !strings.Contains(l, "PING") { // the client library pings when it likes
				lines = append(lines, l)
			}
		}
		if got := strings.Join(lines, ""); got != want {
			t.Errorf("-V %s -d printed\n%s\nwant\n%s", v, got, want)
		}
	}
}

// The will flags: the will is published when the connection ends
// abnormally (here, the broker ends it).
func TestWillFlags(t *testing.T) {
	e := newPubSubEnv(t)
	got := make(chan *tern.Message, 4)
	e.ts.Subscribe("wills/#", 1, func(m *tern.Message) { got <- m })
	for _, v := range []string{"5", "311"} {
		id := "will-" + v
		wait := e.sub(t, id, "-t", "x", "-V", v, "--will-topic", "wills/"+v, "--will-payload", "gone", "--will-qos", "1", "--will-retain")
		e.ts.Kick(id)
		wait()
		m := receive(t, got, "the will")
		if m.Topic != "wills/"+v || string(m.Payload) != "gone" || m.QoS != 1 || !m.Retain {
			t.Errorf("-V %s: will %q %q qos %d retain %v", v, m.Topic, m.Payload, m.QoS, m.Retain)
		}
	}
	if _, _, err := runTernStreams(t, e.args("pub", "-t", "a", "-m", "x", "--will-payload", "p")...); err == nil || !strings.Contains(err.Error(), "--will-topic") {
		t.Errorf("--will-payload alone: %v", err)
	}
}

// -D sets MQTT 5 properties on CONNECT, PUBLISH, SUBSCRIBE, DISCONNECT and
// the will, as mosquitto_pub -D does.
func TestProperties(t *testing.T) {
	e := newPubSubEnv(t)
	got := make(chan *tern.Message, 1)
	e.ts.Subscribe("props/#", 1, func(m *tern.Message) { got <- m })
	_, _, err := runTernStreams(t, e.args("pub", "-i", "propped", "-t", "props/x", "-m", "x", "-q", "1",
		"-D", "connect", "session-expiry-interval", "30",
		"-D", "publish", "content-type", "text/plain",
		"-D", "publish", "user-property", "site", "seven",
		"-D", "publish", "response-topic", "replies/1",
		"-D", "publish", "correlation-data", "abc",
		"-D", "publish", "message-expiry-interval", "600",
		"-D", "publish", "payload-format-indicator", "1",
		"-D", "disconnect", "session-expiry-interval", "20")...)
	if err != nil {
		t.Fatal(err)
	}
	m := receive(t, got, "the message")
	p := m.Properties
	if p == nil || p.ContentType != "text/plain" || p.ResponseTopic != "replies/1" || string(p.CorrelationData) != "abc" ||
		p.PayloadFormat != 1 || len(p.User) != 1 || p.User[0].Key != "site" || p.User[0].Value != "seven" || m.ExpiresAt().IsZero() {
		t.Errorf("properties %+v", p)
	}
	terntest.Eventually(t, "the session offline", func() bool {
		si, ok := e.ts.SessionInfo("propped")
		return ok && !si.Online && si.Expiry == 20 // from the DISCONNECT's property
	})

	wait := e.sub(t, "subid", "-t", "props/s", "-D", "subscribe", "subscription-identifier", "7", "-F", "%S %p", "-C", "1")
	if subs := e.ts.Subscriptions("subid"); len(subs) != 1 || subs[0].Identifier != 7 {
		t.Errorf("subscriptions %+v", subs)
	}
	e.pub(t, "", "-t", "props/s", "-m", "tagged")
	if out, err := wait(); err != nil || out != "7 tagged\n" {
		t.Errorf("sub -F '%%S %%p': %q, %v", out, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-D", "publish", "session-expiry-interval", "5"}, "not a publish property"},
		{[]string{"-D", "nothing", "x", "y"}, "the command is one of"},
		{[]string{"-D", "connect", "receive-maximum", "70000"}, "not a number from 0 to 65535"},
		{[]string{"-D", "publish", "user-property", "k"}, "-D"},
		{[]string{"-V", "311", "-D", "publish", "content-type", "x"}, "need MQTT 5"},
		{[]string{"-V", "311", "-x", "5", "-i", "z"}, "need MQTT 5"},
	} {
		_, _, err := runTernStreams(t, e.args("pub", append([]string{"-t", "a", "-m", "x"}, tc.args...)...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// -F formats each message as mosquitto_sub -F does.
func TestFormat(t *testing.T) {
	at := time.Date(2026, 5, 4, 3, 2, 1, 123456789, time.UTC)
	one, seven, exp := byte(1), 7, uint32(60)
	m := message{topic: "a/b", payload: []byte("hé\x01"), retain: true, qos: 1, mid: 42, at: at,
		props: &paho5.PublishProperties{ContentType: "text/plain", CorrelationData: []byte("cd"), ResponseTopic: "r",
			PayloadFormat: &one, MessageExpiry: &exp, SubscriptionIdentifier: &seven,
			User: paho5.UserProperties{{Key: "k", Value: "v"}, {Key: "k2", Value: "v2"}}}}
	for format, want := range map[string]string{
		"%t %p %l %q %r %m":    "a/b hé\x01 4 1 1 42",
		"%x|%X":                "68c3a901|68C3A901",
		"%C %D %E %F %R %S %A": "text/plain cd 60 1 r 7 ",
		"%P":                   "k:v k2:v2",
		"%I|%U":                "2026-05-04T03:02:01+0000|1777863721.123456789",
		"@Y-@m-@d @H:@M:@S @s": "2026-05-04 03:02:01 1777863721",
		`%%\t@@\n\q%z`:         "%\t@\n\\q%z",
	} {
		if got := string(formatMessage(format, m)); got != want {
			t.Errorf("-F %q: %q, want %q", format, got, want)
		}
	}
	var j map[string]any
	if err := json.Unmarshal(formatMessage("%j", message{topic: "t", payload: []byte(`{"temp":21.5}`), qos: 1, mid: 3, at: at}), &j); err != nil {
		t.Fatal(err)
	}
	if j["topic"] != "t" || j["qos"] != 1.0 || j["payloadlen"] != 13.0 || j["tst"] != "2026-05-04T03:02:01.123456Z" ||
		j["payload"].(map[string]any)["temp"] != 21.5 {
		t.Errorf("%%j: %v", j)
	}
	if err := json.Unmarshal(formatMessage("%J", m), &j); err != nil || j["content-type"] != "text/plain" || j["payload"] != "hé\x01" {
		t.Errorf("%%J: %v, %v", j, err)
	}
}

// -W passing is exit status 27, as mosquitto_sub's.
func TestTimeoutExitCode(t *testing.T) {
	if exitCode(errTimedOut) != 27 || exitCode(packets.ErrIncomplete) != 1 {
		t.Errorf("exit codes %d, %d", exitCode(errTimedOut), exitCode(packets.ErrIncomplete))
	}
}

func TestJoinPropertyArgs(t *testing.T) {
	got := joinPropertyArgs([]string{"pub", "-t", "a", "-D", "publish", "user-property", "k", "v", "-D", "connect", "receive-maximum", "5", "-m", "-D"})
	want := []string{"pub", "-t", "a", "-D", "publish\x1fuser-property\x1fk\x1fv", "-D", "connect\x1freceive-maximum\x1f5", "-m", "-D"}
	if got := joinPropertyArgs([]string{"sub", "-D", "publish", "user-property", "k"}); len(got) != 3 || got[2] != "publish\x1fuser-property\x1fk" {
		t.Errorf("too few words: %q", got)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %q", got)
	}
}
