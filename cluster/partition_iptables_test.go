//go:build linux

package cluster

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ternmq/tern/internal/faultproxy"
)

// TestPartitionIPTables is TestPartition with the routes cut by the
// kernel instead of proxies: each node runs as a user of its own, the
// connections a node's user dials are marked (CONNMARK), and a cut drops
// (blackhole) or rejects with a TCP reset every packet of the node's
// route connections: those it dialed, by their mark, and those dialed to
// its route port. Root only, and opt-in as it changes the machine's
// firewall (in two chains of its own, removed at the end):
//
//	TERN_CLUSTER_IPTABLES=1 go test ./cluster -run TestPartitionIPTables -v
func TestPartitionIPTables(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tern serve processes and cuts their routes; skipped with -short")
	}
	if os.Getenv("TERN_CLUSTER_IPTABLES") != "1" {
		t.Skip("set TERN_CLUSTER_IPTABLES=1 (as root) to cut the routes with iptables")
	}
	if os.Geteuid() != 0 {
		t.Skip("iptables and other users need root")
	}
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		t.Skip("iptables is not installed")
	}
	run := func(args ...string) error {
		if out, err := exec.Command(ipt, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables %v: %v: %s", args, err, out)
		}
		return nil
	}
	must := func(args ...string) {
		t.Helper()
		if err := run(args...); err != nil {
			t.Fatal(err)
		}
	}

	// The binary and each node's directory where the nodes' users reach
	// them (the test's temporary directory is root's only).
	root, err := os.MkdirTemp("/tmp", "part-ipt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	b, err := os.ReadFile(ternBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "tern")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	ps := newProcs(t, 3)
	base := uint32(61000 + os.Getpid()%1000*3)
	for i, p := range ps {
		p.uid, p.bin = base+uint32(i), bin
		dir := filepath.Join(root, p.name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chown(dir, int(p.uid), int(p.uid))
		p.dataDir = filepath.Join(dir, "data")
		p.env = []string{"TMPDIR=" + dir, "HOME=" + dir}
	}

	tag := strconv.Itoa(os.Getpid())
	mark, cut := "TERN-MARK-"+tag, "TERN-CUT-"+tag
	must("-N", mark)
	t.Cleanup(func() { run("-F", mark); run("-X", mark) })
	must("-N", cut)
	t.Cleanup(func() { run("-F", cut); run("-X", cut) })
	must("-I", "OUTPUT", "1", "-j", mark)
	t.Cleanup(func() { run("-D", "OUTPUT", "-j", mark) })
	must("-I", "OUTPUT", "2", "-j", cut)
	t.Cleanup(func() { run("-D", "OUTPUT", "-j", cut) })
	markOf := func(i int) string { return fmt.Sprintf("0x7e%02x", i+1) }
	for i, p := range ps {
		must("-A", mark, "-p", "tcp", "-m", "owner", "--uid-owner", strconv.Itoa(int(p.uid)),
			"-m", "conntrack", "--ctstate", "NEW", "-j", "CONNMARK", "--set-mark", markOf(i))
	}
	set := func(i int, m faultproxy.Mode) {
		if err := run("-F", cut); err != nil {
			t.Error(err)
			return
		}
		var action []string
		switch m {
		case faultproxy.Open:
			return
		case faultproxy.Blackhole:
			action = []string{"-j", "DROP"}
		case faultproxy.Reset:
			action = []string{"-j", "REJECT", "--reject-with", "tcp-reset"}
		}
		_, port, _ := net.SplitHostPort(ps[i].route)
		for _, match := range [][]string{
			{"-m", "connmark", "--mark", markOf(i)}, // dialed by node i
			{"--dport", port},                       // dialed to node i, and node i's side of them
			{"--sport", port},
		} {
			args := append([]string{"-A", cut, "-p", "tcp"}, match...)
			if err := run(append(args, action...)...); err != nil {
				t.Error(err)
			}
		}
	}
	runPartition(t, ps, "as three users", set, func() {})
}
