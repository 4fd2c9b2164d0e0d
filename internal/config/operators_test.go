package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// KubernetesServiceLinks are the variables Kubernetes puts in every
// container of a namespace with a Service named tern (ports mqtt 1883 and
// admin 18083), as docker links did before it.
var KubernetesServiceLinks = []string{
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
	// and for a Service named tern-admin
	"TERN_ADMIN_SERVICE_HOST=10.0.0.2",
	"TERN_ADMIN_PORT=tcp://10.0.0.2:18083",
}

// Variables that are not keys are ignored, not refused: Kubernetes'
// service links above, and anything else; a name close to a key's is
// reported with the key it resembles, so the broker can warn.
func TestIgnoredEnvironment(t *testing.T) {
	env := append([]string{"TERN_LIMITS_MAX_QOSS=1", "TERN_LIMITS_MAX_QOS=1", "TERN_SOMETHING_ELSE=x"}, KubernetesServiceLinks...)
	c, err := Load("", env, nil)
	if err != nil {
		t.Fatalf("Kubernetes service links refused: %v", err)
	}
	if c.Limits.MaxQoS != 1 {
		t.Errorf("max_qos %d: the key among the ignored variables was not applied", c.Limits.MaxQoS)
	}
	got := map[string]IgnoredVar{}
	for _, v := range c.IgnoredEnv() {
		got[v.Name] = v
	}
	if len(got) != len(KubernetesServiceLinks)+2 {
		t.Errorf("ignored %d variables, want %d: %v", len(got), len(KubernetesServiceLinks)+2, c.IgnoredEnv())
	}
	for _, kv := range KubernetesServiceLinks {
		name, _, _ := strings.Cut(kv, "=")
		if v := got[name]; !v.ServiceLink || v.Suggest != "" {
			t.Errorf("%s: %+v, want a service link without suggestion", name, v)
		}
	}
	if v := got["TERN_LIMITS_MAX_QOSS"]; v.ServiceLink || v.Suggest != "TERN_LIMITS_MAX_QOS" {
		t.Errorf("misspelt key: %+v", v)
	}
	if v := got["TERN_SOMETHING_ELSE"]; v.ServiceLink || v.Suggest != "" {
		t.Errorf("unrelated variable: %+v", v)
	}
}

// --print-config prints sizes, durations and rates as they were written,
// and numbers never in exponent form.
func TestPrintConfigAsWritten(t *testing.T) {
	file := writeFile(t, "tern.yaml", "limits:\n  max_session_expiry: 168h\n  max_queued_bytes: 10000000\n  max_pending_bytes: 2 MiB\npersistence:\n  sync_interval: 1500ms\n")
	c, err := Load(file, []string{"TERN_LIMITS_MAX_PUBLISH_RATE=10000000", "TERN_LIMITS_MAX_PUBLISH_BYTES_RATE=1MiB", "TERN_DRAIN_DELAY=7d"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"max_session_expiry: 168h\n", "max_queued_bytes: 10000000\n", "max_pending_bytes: 2 MiB\n",
		"sync_interval: 1500ms\n", "max_publish_rate: 10000000\n", "max_publish_bytes_rate: 1MiB\n", "drain_delay: 7d\n",
		"max_packet_size: 1MiB\n", "max_topic_levels: 128\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("printed configuration lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "e+") {
		t.Errorf("a number in exponent form:\n%s", out)
	}
	back, err := Load(writeFile(t, "printed.yaml", string(out)), nil, nil)
	if err != nil {
		t.Fatalf("printed configuration does not load: %v", err)
	}
	if ch := Changed(c, back); len(ch) != 0 {
		t.Errorf("round trip changed %v", ch)
	}
}

// An address without a port gets the transport's port, and every loopback
// form passes the check for listeners reachable from the network;
// wildcard addresses do not.
func TestListenAddressForms(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:1883": "127.0.0.1:1883", "127.0.0.1": "127.0.0.1:1883", "localhost": "localhost:1883",
		"localhost:1883": "localhost:1883", "LocalHost": "LocalHost:1883", "[::1]": "[::1]:1883", "::1": "[::1]:1883",
		"[::1]:1883": "[::1]:1883", "127.0.0.2": "127.0.0.2:1883", "127.0.0.2:1884": "127.0.0.2:1884",
		"[::ffff:127.0.0.1]:1883": "[::ffff:127.0.0.1]:1883",
	} {
		c, err := Load("", []string{"TERN_LISTENERS_TCP=" + in}, nil)
		if err != nil {
			t.Errorf("-l %s: %v", in, err)
			continue
		}
		if got := c.Listeners.TCP[0].Address; got != want {
			t.Errorf("-l %s: address %q, want %q", in, got, want)
		}
	}
	for _, in := range []string{"0.0.0.0", "0.0.0.0:1883", ":1883", "1883", "[::]", "[::]:1883", "192.0.2.1", "example.com"} {
		_, err := Load("", []string{"TERN_LISTENERS_TCP=" + in}, nil)
		if err == nil || !strings.Contains(err.Error(), "reachable from the network") {
			t.Errorf("-l %s: %v, want it refused as reachable from the network", in, err)
		}
	}
	c, err := Load("", []string{"TERN_LISTENERS_TLS=0.0.0.0", "TERN_LISTENERS_WS=127.0.0.1", "TERN_LISTENERS_WSS=[::1]",
		"TERN_TLS_CERT_FILE=a", "TERN_TLS_KEY_FILE=b", "TERN_TLS_CLIENT_CA_FILE=c", "TERN_ADMIN_LISTEN=localhost"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listeners.TLS[0].Address != "0.0.0.0:8883" || c.Listeners.WS[0].Address != "127.0.0.1:8083" ||
		c.Listeners.WSS[0].Address != "[::1]:8084" || c.Admin.Listen != "localhost:18083" {
		t.Errorf("default ports: %+v, admin %s", c.Listeners, c.Admin.Listen)
	}
}

// A listener's own authentication settings decide whether it is open.
func TestPerListenerExposure(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		ok         bool
	}{
		{"own password file", "listeners:\n  tcp: [{address: 0.0.0.0:1883, password_file: p}]\n", true},
		{"own anonymous", "listeners:\n  tcp: [{address: 0.0.0.0:1883, allow_anonymous: true}]\n", true},
		{"own ACL only", "listeners:\n  tcp: [{address: 0.0.0.0:1883, acl_file: a}]\nauth:\n  password_file: p\n", false},
		{"own anonymous off", "listeners:\n  tcp: [{address: 0.0.0.0:1883, allow_anonymous: false}]\nauth:\n  allow_anonymous: true\n", false},
		{"global password file", "listeners:\n  tcp: [{address: 0.0.0.0:1883, max_connections: 5}]\nauth:\n  password_file: p\n", true},
		{"own client CA", "listeners:\n  tcp: []\n  tls: [{address: 0.0.0.0:8883, cert_file: c, key_file: k, client_ca_file: ca}]\n", true},
	} {
		_, err := Load(writeFile(t, "tern.yaml", tc.file), nil, nil)
		if tc.ok != (err == nil) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// Every size takes a unit (KiB, MiB), from the file, the environment and
// the flags; a key about bytes is a size; a rate says what per second,
// and a size its unit, in its help.
func TestSizesAndRatesSayTheirUnits(t *testing.T) {
	sizes := 0
	for _, k := range Keys() {
		isSize := k.typ == sizeType
		if strings.Contains(k.Name, "bytes") || strings.Contains(k.Name, "memory") || strings.HasSuffix(k.Name, "packet_size") {
			if !isSize {
				t.Errorf("%s: a size that does not take units (%s)", k.Name, k.typ)
			}
		}
		if strings.HasSuffix(k.Name, "_rate") && !strings.Contains(k.Usage, "per second") {
			t.Errorf("%s: the help does not say per what: %q", k.Name, k.Usage)
		}
		if !isSize {
			continue
		}
		sizes++
		if !strings.Contains(k.Usage, "bytes") {
			t.Errorf("%s: the help does not say what it counts: %q", k.Name, k.Usage)
		}
		for _, tc := range []struct {
			layer string
			env   []string
			flags []string
			text  string
			want  Size
		}{
			{"environment", []string{k.Env + "=3MiB"}, nil, "", 3 << 20},
			{"flag", nil, []string{"--" + k.Flag, "2MiB"}, "", 2 << 20},
			{"file", nil, nil, "3072KiB", 3 << 20},
		} {
			file := ""
			if tc.text != "" {
				file = filepath.Join(t.TempDir(), "tern.yaml")
				top, leaf, nested := strings.Cut(k.Name, ".")
				yaml := top + ": " + tc.text + "\n"
				if nested {
					yaml = top + ":\n  " + leaf + ": " + tc.text + "\n"
				}
				if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			RegisterFlags(fs)
			if err := fs.Parse(tc.flags); err != nil {
				t.Fatalf("%s: %v", k.Name, err)
			}
			c, err := Load(file, tc.env, fs)
			if err != nil {
				t.Errorf("%s from the %s: %v", k.Name, tc.layer, err)
				continue
			}
			if got := c.field(&k).Interface().(Size); got != tc.want {
				t.Errorf("%s from the %s: %d, want %d", k.Name, tc.layer, got, tc.want)
			}
		}
	}
	if sizes < 6 {
		t.Fatalf("%d size keys found", sizes)
	}
}
