package bridge

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// Interoperability with Mosquitto (the Debian package, 2.0.11 here): its
// stock bridge into Tern, and Tern's bridge into it. Skipped when
// mosquitto is not installed (.ci/run installs it).

func mosquittoPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	t.Skip("mosquitto is not installed (apt-get install mosquitto): Mosquitto interoperability not tested")
	return ""
}

// mosquitto is a running mosquitto process.
type mosquitto struct {
	addr               string
	cmd                *exec.Cmd
	terntest.LogBuffer // its output
}

// startMosquitto runs mosquitto with the configuration conf plus a
// listener on a free loopback port.
func startMosquitto(t testing.TB, conf string) *mosquitto {
	t.Helper()
	bin := mosquittoPath(t)
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	path := filepath.Join(dir, "mosquitto.conf")
	if !strings.Contains(conf, "persistence true") {
		conf = "persistence false\n" + conf
	}
	writeTestFile(t, path, fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\n"+
		"log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n%s", port, conf))
	m := &mosquitto{addr: addr}
	m.cmd = exec.Command(bin, "-c", path)
	m.cmd.Stdout, m.cmd.Stderr = m, m
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.cmd.Process.Signal(syscall.SIGKILL)
		m.cmd.Wait()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", m)
		}
	})
	terntest.Eventually(t, "mosquitto to listen", func() bool {
		nc, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			nc.Close()
		}
		return err == nil
	})
	return m
}

// expectOneEach publishes one message on each side and checks that a
// subscriber on each side receives it exactly once.
func expectOneEach(t *testing.T, addrs map[string]string, topic string) {
	t.Helper()
	subs := make(map[string]*testClient)
	for side, addr := range addrs {
		subs[side] = dialClient(t, addr, "sub-"+side, packets.V311, true, 0)
		subs[side].subscribe(topic+"/#", 1)
	}
	time.Sleep(300 * time.Millisecond)
	for side, addr := range addrs {
		pub := dialClient(t, addr, "pub-"+side, packets.V311, true, 0)
		pub.publish(topic+"/"+side, "from "+side, 1, false)
		for other, s := range subs {
			got := s.expect(1)
			if got[0].Topic != topic+"/"+side {
				t.Fatalf("%s received %s, want %s/%s", other, got[0].Topic, topic, side)
			}
		}
		for _, s := range subs {
			s.expectNone(500 * time.Millisecond)
		}
		pub.c.close()
	}
}

// A stock Mosquitto bridge into Tern ("topic b/# both 1", try_private by
// default, so protocol level 0x84; and as MQTT 5): Tern accepts it as a
// bridge, and a message published on either side reaches a subscriber on
// each side exactly once.
func TestMosquittoBridgeIntoTern(t *testing.T) {
	t.Parallel()
	mosquittoPath(t)
	for _, tc := range []struct{ name, conf string }{
		{"3.1.1 try_private", ""},
		{"3.1 try_private", "bridge_protocol_version mqttv31\n"},
		{"5", "bridge_protocol_version mqttv50\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tern, _ := broker(t, "T", nil)
			m := startMosquitto(t, "connection t1\naddress "+tern.Addr+"\nremote_clientid mosq.t1\ntopic b/# both 1\nrestart_timeout 1\n"+tc.conf)
			terntest.Eventually(t, "Mosquitto's bridge to connect", func() bool {
				ci, ok := tern.ClientInfo("mosq.t1")
				return ok && (ci.Bridge || ci.ProtocolVersion == packets.V5)
			})
			expectOneEach(t, map[string]string{"mosquitto": m.addr, "tern": tern.Addr}, "b")
			// Retained messages keep their flag across the bridge.
			pub := dialClient(t, m.addr, "retainer", packets.V311, true, 0)
			pub.publish("b/r", "kept", 1, true)
			terntest.Eventually(t, "the retained message on Tern", func() bool { _, ok := tern.RetainedMessage("b/r"); return ok })
		})
	}
}

// Tern's bridge into a stock Mosquitto ("# both 1"), as MQTT 5 (No Local)
// and as 3.1.1 with try_private: one copy on each side.
func TestTernBridgeIntoMosquitto(t *testing.T) {
	t.Parallel()
	mosquittoPath(t)
	for _, v := range []byte{packets.V5, packets.V311} {
		t.Run(map[byte]string{5: "v5", 4: "v3.1.1"}[v], func(t *testing.T) {
			m := startMosquitto(t, "")
			tern, mgr := broker(t, "T", nil, fast(Config{Name: "up", Addresses: []string{m.addr}, ProtocolVersion: v,
				Topics: []Topic{{Pattern: "#", Direction: Both, QoS: 1}}}))
			waitConnected(t, mgr)
			expectOneEach(t, map[string]string{"mosquitto": m.addr, "tern": tern.Addr}, "x")
			// The notification is retained on Mosquitto.
			sub := dialClient(t, m.addr, "notif", packets.V311, true, 0)
			br, _ := mgr.Bridge("up")
			sub.subscribe("$SYS/broker/connection/"+br.s.ClientID+"/state", 1)
			if p := sub.expect(1)[0]; string(p.Payload) != "1" || !p.Retain {
				t.Errorf("notification %q retain %v", p.Payload, p.Retain)
			}
		})
	}
}
