package auth

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

var installMosquitto sync.Once

// mosquittoBinary finds a program of Debian's mosquitto package, installing
// the package when it is missing and the test runs as root with apt-get;
// otherwise it skips the test.
func mosquittoBinary(t *testing.T, name string) string {
	t.Helper()
	find := func() string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
			if p := filepath.Join(dir, name); fileExists(p) {
				return p
			}
		}
		return ""
	}
	if p := find(); p != "" {
		return p
	}
	apt, err := exec.LookPath("apt-get")
	if os.Geteuid() != 0 || err != nil {
		t.Skipf("%s is not installed and cannot be installed here (needs root and apt-get): install Debian package mosquitto to run this test", name)
	}
	installMosquitto.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		install := func() error {
			cmd := exec.CommandContext(ctx, apt, "install", "-y", "-q", "mosquitto")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}
		if install() != nil {
			exec.CommandContext(ctx, apt, "update", "-q").Run()
			if err := install(); err != nil {
				t.Logf("apt-get install mosquitto: %v", err)
			}
		}
	})
	if p := find(); p != "" {
		return p
	}
	t.Skipf("%s is not installed and apt-get install mosquitto failed", name)
	return ""
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// A file written by the real mosquitto_passwd, in both of its formats, is
// accepted.
func TestMosquittoPasswdFileAccepted(t *testing.T) {
	bin := mosquittoBinary(t, "mosquitto_passwd")
	path := filepath.Join(t.TempDir(), "passwd")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd %v: %v: %s", args, err, out)
		}
	}
	run("-c", "-b", path, "alice", "al1ce pw")
	run("-b", path, "bob", "üñíçødé")
	run("-H", "sha512", "-b", path, "carol", "old-style")
	p, err := NewPasswordFile(path, PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, pw string
		want     bool
	}{
		{"alice", "al1ce pw", true}, {"alice", "al1ce", false},
		{"bob", "üñíçødé", true}, {"carol", "old-style", true}, {"carol", "", false},
	} {
		if got := p.Check(c.user, c.pw); got != c.want {
			t.Errorf("Check(%q, %q) = %v, want %v", c.user, c.pw, got, c.want)
		}
	}
}

// Mosquitto itself accepts the hashes HashPassword writes.
func TestMosquittoAcceptsOurHashes(t *testing.T) {
	bin := mosquittoBinary(t, "mosquitto")
	dir := t.TempDir()
	writeFile(t, dir, "passwd", "alice:"+mustHash(t, "wonder land")+"\n")
	addr := terntest.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("listener %s 127.0.0.1\npassword_file %s\nallow_anonymous false\n", port, filepath.Join(dir, "passwd"))
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	writeFile(t, dir, "mosquitto.conf", conf)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	out, _ := os.Create(filepath.Join(dir, "log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait(); out.Close() })

	connect := func(pw string) byte {
		t.Helper()
		var nc net.Conn
		var err error
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if nc, err = net.Dial("tcp", addr); err == nil {
				break
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(dir, "log"))
				t.Fatalf("mosquitto did not start: %v\n%s", err, log)
			}
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		pk := &packets.Connect{ProtocolVersion: packets.V311, CleanStart: true, ClientID: "c",
			UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte(pw)}
		b, _ := pk.Encode(nil, packets.V311)
		nc.Write(b)
		got, err := packets.ReadPacket(bufio.NewReader(nc), packets.V311, 0)
		if err != nil {
			t.Fatalf("reading CONNACK: %v", err)
		}
		return byte(got.(*packets.Connack).ReasonCode)
	}
	if code := connect("wonder land"); code != 0 {
		t.Errorf("mosquitto refused our hash: CONNACK %#x", code)
	}
	if code := connect("wonderland"); code == 0 {
		t.Error("mosquitto accepted a wrong password")
	}
}
