package terntest

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreeAddr returns one loopback address from FreeAddrs.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return FreeAddrs(t, 1)[0]
}

// FreeAddrs returns n distinct loopback addresses ("127.0.0.1:port") that
// nothing listens on now, for a test that must name a port before the
// process that binds it starts (a child process, a cluster node, a node
// restarted on the same address). The ports are taken below the kernel's
// ephemeral range, so neither outgoing connections nor listeners on port
// 0 in other tests can take them between this call and the bind.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	hi := ephemeralStart()
	lo := max(10000, hi-16000)
	seen := map[int]bool{}
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries == 10000 {
			t.Fatalf("terntest: no free port in [%d, %d)", lo, hi)
		}
		port := lo + rand.IntN(hi-lo)
		if seen[port] {
			continue
		}
		seen[port] = true
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		out = append(out, addr)
	}
	return out
}

// ephemeralStart is the first port of the kernel's ephemeral range (Linux
// reads it from /proc; 32768 elsewhere).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if p, err := strconv.Atoi(f[0]); err == nil && p > 11024 {
				return p
			}
		}
	}
	return 32768
}
