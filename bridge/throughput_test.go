package bridge

import (
	"os"
	"testing"
	"time"

	"github.com/ternmq/tern"
)

// TestThroughputInProcess measures QoS 1 through a bridge with both
// brokers, the publisher and the subscriber in this process (a pessimistic
// figure on few cores): TERN_BRIDGE_BENCH=N messages.
func TestThroughputInProcess(t *testing.T) {
	n := 0
	if s := os.Getenv("TERN_BRIDGE_BENCH"); s != "" {
		n = atoi(s)
	}
	if n == 0 {
		t.Skip("set TERN_BRIDGE_BENCH=messages")
	}
	b := newNode(t, "B", nil)
	a := newNode(t, "A", nil, Config{Name: "ab", Addresses: []string{b.addr}, Topics: []Topic{{Pattern: "data/#", QoS: 1}}})
	_ = tern.DropNew
	waitConnected(t, a.m)
	sub := newCounter(t, func() string { return b.addr }, "sub", "data/#")
	start := time.Now()
	publishNumbered(t, a.addr, "data/x", n, 0, nil)
	sub.waitAll(t, n, time.Minute)
	d := time.Since(start)
	t.Logf("%d messages in %v: %.0f msg/s", n, d, float64(n)/d.Seconds())
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
