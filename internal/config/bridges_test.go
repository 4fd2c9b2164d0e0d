package config

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/bridge"
)

// The commented bridge in tern.example.yaml loads, with the defaults it
// shows.
func TestExampleBridgeLoads(t *testing.T) {
	data, err := os.ReadFile("../../tern.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "bridges: []\n")
	end := strings.Index(text[start:], "\n\n") + start
	var lines []string
	for _, l := range strings.Split(text[start:end], "\n")[1:] {
		lines = append(lines, strings.TrimPrefix(l, "#"))
	}
	file := "bridges:\n" + strings.Join(lines, "\n") + "\n"
	c, err := Load(writeFile(t, "tern.yaml", file), nil, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, file)
	}
	want := Bridge{}
	want.setDefaults()
	got := c.Bridges[0]
	if got.Name != "cloud" || len(got.Addresses) != 2 || len(got.Topics) != 3 {
		t.Fatalf("example bridge %+v", got)
	}
	got.Name, got.Addresses, got.Topics = "", nil, nil
	if !equalBridge(got, want) {
		t.Errorf("the example's values are not the defaults:\n%+v\n%+v", got, want)
	}
}

func equalBridge(a, b Bridge) bool {
	x := &Config{Bridges: []Bridge{a}}
	y := &Config{Bridges: []Bridge{b}}
	return equal(x, y)
}

const bridgeFile = `
node_id: edge-17
bridges:
  - name: cloud
    addresses: [tls://cloud-a.example:8883, cloud-b.example]
    failover: round_robin
    protocol_version: 3.1.1
    username: site17
    password: s3cret-password
    queue: {max_messages: 500, overflow: drop_oldest}
    reconnect: {max: 2m}
    tls: {ca_file: /etc/tern/ca.crt}
    topics:
      - sensors/# out 1 "" site17/
      - {pattern: "cmd/#", direction: in, qos: 1, remote_prefix: site17/}
      - {local: "modules/+/+/status", remote: "devices/site17/{1}/{2}/status", qos: 1}
  - name: backup
    addresses: ["127.0.0.1:1884"]
    topics: ["# both 2"]
`

func TestBridgesFromFile(t *testing.T) {
	c, err := Load(writeFile(t, "tern.yaml", bridgeFile), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "edge-17" || c.ServerOptions(nil).NodeID != "edge-17" {
		t.Errorf("node_id %q", c.NodeID)
	}
	cfgs, err := c.BridgeConfigs()
	if err != nil {
		t.Fatal(err)
	}
	b := cfgs[0]
	if b.ProtocolVersion != 4 || b.Failover != bridge.FailoverRoundRobin || b.Password != "s3cret-password" ||
		b.Queue.MaxMessages != 500 || b.Queue.Overflow != tern.DropOldest || b.Queue.MaxBytes != bridge.DefaultQueueBytes ||
		b.ReconnectMin != time.Second || b.ReconnectMax != 2*time.Minute || b.TLSFiles == nil || b.TLSFiles.CAFile != "/etc/tern/ca.crt" ||
		!*b.TryPrivate || !*b.Notifications || b.MaxHops != 8 || b.MaxInflight != 100 {
		t.Errorf("bridge cloud: %+v", b)
	}
	wantTopics := []bridge.Topic{
		{Pattern: "sensors/#", Direction: bridge.Out, QoS: 1, RemotePrefix: "site17/"},
		{Pattern: "cmd/#", Direction: bridge.In, QoS: 1, RemotePrefix: "site17/"},
		{Local: "modules/+/+/status", Remote: "devices/site17/{1}/{2}/status", QoS: 1},
	}
	for i, w := range wantTopics {
		if b.Topics[i] != w {
			t.Errorf("topic %d: %+v, want %+v", i, b.Topics[i], w)
		}
	}
	if cfgs[1].ProtocolVersion != 5 || cfgs[1].Topics[0].Direction != bridge.Both || cfgs[1].Topics[0].QoS != 2 {
		t.Errorf("bridge backup: %+v", cfgs[1])
	}

	// --print-config hides the password and loads back once it is put back.
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret-password") {
		t.Fatalf("password printed:\n%s", out)
	}
	if _, err := Load(writeFile(t, "printed.yaml", string(out)), nil, nil); err == nil || !strings.Contains(err.Error(), "bridges[0]") {
		t.Errorf("printed configuration with the password hidden: %v", err)
	}
	back, err := Load(writeFile(t, "printed.yaml", strings.Replace(string(out), redacted, "s3cret-password", 1)), nil, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if ch := Changed(c, back); len(ch) != 0 {
		t.Errorf("round trip changed %v:\n%s", ch, out)
	}
}

func TestBadBridges(t *testing.T) {
	tests := []struct{ file, want string }{
		{"bridges:\n  - name: x\n    adresses: [a:1]\n", `tern.yaml:3: unknown key "bridges[0].adresses" (did you mean "bridges[0].addresses"?)`},
		{"bridges:\n  - name: x\n    addresses: [a:1]\n    topics: [\"# sideways 1\"]\n", `tern.yaml:4: bridges[0].topics[0]: direction "sideways"`},
		{"bridges:\n  - name: x\n    addresses: [a:1]\n    topics: [{pattern: \"a/#/b\"}]\n", "tern.yaml:2): topics[0] (a/#/b out 0): local filter"},
		{"bridges:\n  - name: x\n    addresses: [a:1]\n", "no topic rule"},
		{"bridges:\n  - name: x\n    addresses: [a:1]\n    topics: [\"#\"]\n  - name: x\n    addresses: [b:1]\n    topics: [\"#\"]\n", `"x" is the name of another bridge`},
		{"bridges:\n  - name: x\n    addresses: [a:1]\n    protocol_version: 6\n    topics: [\"#\"]\n", `protocol_version "6"`},
		{"bridges:\n  - name: x\n    addresses: [a:1]\n    password_file: /nonexistent/pw\n    topics: [\"#\"]\n", "password_file"},
		{"bridges:\n  - name: x\n    addresses: [\"ftp://a:1\"]\n    topics: [\"#\"]\n", `scheme "ftp"`},
	}
	for _, tc := range tests {
		_, err := Load(writeFile(t, "tern.yaml", tc.file), nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.file, err, tc.want)
		}
	}
	// Bridges are in the file only.
	_, err := Load("", []string{"TERN_BRIDGES=x"}, nil)
	if err == nil || !regexp.MustCompile(`TERN_BRIDGES: bridges is set in the configuration file only`).MatchString(err.Error()) {
		t.Errorf("TERN_BRIDGES: %v", err)
	}
	if _, err := Load("", []string{"TERN_NODE_ID=n1"}, nil); err != nil {
		t.Errorf("TERN_NODE_ID: %v", err)
	}
}

// A password file gives the bridge its password (the first line).
func TestBridgePasswordFile(t *testing.T) {
	pw := writeFile(t, "pw", "from-file\n")
	c, err := Load(writeFile(t, "tern.yaml", "bridges:\n  - name: x\n    addresses: [a:1]\n    username: u\n    password_file: "+pw+"\n    topics: [\"#\"]\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfgs, _ := c.BridgeConfigs()
	if cfgs[0].Password != "from-file" {
		t.Errorf("password %q", cfgs[0].Password)
	}
}
