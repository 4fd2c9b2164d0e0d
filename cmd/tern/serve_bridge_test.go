package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern/bridge"
	"github.com/ternmq/tern/internal/config"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func bridgeStatuses(t *testing.T, adminURL string) map[string]bridge.Status {
	t.Helper()
	var page struct {
		Data []bridge.Status `json:"data"`
	}
	getJSON(t, adminURL+"/api/v1/bridges", &page)
	out := make(map[string]bridge.Status)
	for _, s := range page.Data {
		out[s.Name] = s
	}
	return out
}

// tern serve runs the bridges of its configuration, shows them in the
// admin API and metrics, and reloads them on SIGHUP: a changed bridge
// reconnects, an unchanged one keeps its connection, a removed one stops
// and its queue can then be deleted.
func TestServeBridgesReload(t *testing.T) {
	remote, err := startBroker(testConfig(t), nil, new(syncBuffer))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remote.srv.Close() })
	rts := &terntest.Server{Server: remote.srv, Addr: remote.mqtt[0].Addr().String()}
	sub := rts.Dial(t, packets.V5)
	sub.MustConnect("sub")
	subscribeAll(t, sub)

	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "tern.yaml")
	write := func(bridges string) {
		t.Helper()
		text := "listeners:\n  tcp: [127.0.0.1:0]\nadmin:\n  listen: 127.0.0.1:0\nsys_interval: 0\nnode_id: edge\n" +
			"persistence:\n  data_dir: " + filepath.Join(dir, "data") + "\nbridges:\n" + bridges
		if err := os.WriteFile(cfgFile, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bridgeYAML := func(name, topic string) string {
		return "  - name: " + name + "\n    addresses: [" + rts.Addr + "]\n    reconnect: {min: 50ms, max: 500ms}\n" +
			"    notifications: false\n    topics: [\"" + topic + "\"]\n"
	}
	write(bridgeYAML("one", "a/# out 1") + bridgeYAML("two", "b/# out 1"))
	load := func() (*config.Config, error) { return config.Load(cfgFile, nil, nil) }
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	b, err := startBroker(cfg, load, new(syncBuffer))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	sig := make(chan os.Signal, 1)
	go func() { ran <- b.run(ctx, sig, func(int) {}) }()
	t.Cleanup(func() {
		cancel()
		receive(t, ran, "run to return")
	})
	adminURL := "http://" + b.admLn.Addr().String()
	terntest.Eventually(t, "both bridges to connect", func() bool {
		st := bridgeStatuses(t, adminURL)
		return st["one"].State == bridge.StateConnected && st["two"].State == bridge.StateConnected
	})
	before := bridgeStatuses(t, adminURL)
	if before["one"].RemoteNode == "" || before["one"].LocalClientID != "$bridge/one" {
		t.Errorf("status %+v", before["one"])
	}
	lts := &terntest.Server{Server: b.srv, Addr: b.mqtt[0].Addr().String()}
	pub := lts.Dial(t, packets.V311)
	pub.MustConnect("pub")
	publish := func(topic string) {
		t.Helper()
		pub.Send(&packets.Publish{Topic: topic, QoS: 1, PacketID: 1, Payload: []byte("x")})
		if _, ok := pub.Recv().(*packets.Puback); !ok {
			t.Fatal("no PUBACK")
		}
	}
	publish("a/1")
	expectTopic(t, sub, "a/1")

	// Change bridge one's rule: it reconnects; two does not.
	write(bridgeYAML("one", "c/# out 1") + bridgeYAML("two", "b/# out 1"))
	sig <- syscall.SIGHUP
	terntest.Eventually(t, "bridge one to reconnect with its new rule", func() bool {
		st := bridgeStatuses(t, adminURL)["one"]
		return st.State == bridge.StateConnected && st.ConnectedSince.After(*before["one"].ConnectedSince)
	})
	after := bridgeStatuses(t, adminURL)
	if two := after["two"]; two.Reconnects != 0 || !two.ConnectedSince.Equal(*before["two"].ConnectedSince) {
		t.Errorf("bridge two was reconnected by the reload: %+v", two)
	}
	publish("a/2") // no longer bridged
	publish("c/1")
	expectTopic(t, sub, "c/1")
	publish("b/1")
	expectTopic(t, sub, "b/1")

	// Metrics.
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`tern_bridge_up{bridge="two"} 1`, `tern_bridge_messages_total{bridge="two",direction="out"} 1`,
		`tern_bridge_queued_messages{bridge="one"} 0`, `tern_bridge_dropped_total{bridge="one",reason="queue_full"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Reconnect on demand.
	resp, err = http.Post(adminURL+"/api/v1/bridges/two/reconnect", "application/json", nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("reconnect: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	terntest.Eventually(t, "bridge two to reconnect", func() bool {
		st := bridgeStatuses(t, adminURL)["two"]
		return st.Reconnects == 1 && st.State == bridge.StateConnected
	})

	// Remove bridge one: it stops; its queue can then go.
	write(bridgeYAML("two", "b/# out 1"))
	sig <- syscall.SIGHUP
	terntest.Eventually(t, "bridge one to go", func() bool { _, ok := bridgeStatuses(t, adminURL)["one"]; return !ok })
	del := func(name string) int {
		req, _ := http.NewRequest("DELETE", adminURL+"/api/v1/bridges/"+name+"/queue", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := del("two"); code != http.StatusConflict {
		t.Errorf("DELETE the queue of a running bridge: %d", code)
	}
	if code := del("one"); code != http.StatusNoContent {
		t.Errorf("DELETE the queue of a removed bridge: %d", code)
	}
	// The clean start that deleted the queue leaves an empty session
	// with expiry 0 until its DISCONNECT is read.
	terntest.Eventually(t, "the removed bridge's session to go", func() bool {
		_, ok := b.srv.SessionInfo("$bridge/one")
		return !ok
	})
}

func subscribeAll(t *testing.T, c *terntest.Conn) {
	t.Helper()
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "#", QoS: 1}}})
	if _, ok := c.Recv().(*packets.Suback); !ok {
		t.Fatal("no SUBACK")
	}
}

func expectTopic(t *testing.T, c *terntest.Conn, topic string) {
	t.Helper()
	p, ok := c.Recv().(*packets.Publish)
	if !ok || p.Topic != topic {
		t.Fatalf("got %+v, want %s", p, topic)
	}
	c.Send(&packets.Puback{PacketID: p.PacketID})
	if pk, err := c.TryRecv(200 * time.Millisecond); err == nil {
		t.Fatalf("then unexpected %s %+v", pk.Type(), pk)
	}
}
