package bridge

import (
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
)

// One bridge A -> B with "# both 1": a message published on either side
// reaches a subscriber on each side exactly once. The local session's No
// Local subscription [MQTT-3.8.3-3] keeps A from exporting what it
// imported, and the remote subscription's No Local keeps B from sending
// back what the bridge published there.
func TestBothWaysOneCopy(t *testing.T) {
	t.Parallel()
	for _, v := range []byte{packets.V5, packets.V311, packets.V31} {
		t.Run(map[byte]string{5: "v5", 4: "v3.1.1", 3: "v3.1"}[v], func(t *testing.T) {
			b, _ := broker(t, "B", nil)
			a, ma := broker(t, "A", nil, fast(Config{Name: "ab", Addresses: []string{b.Addr}, ProtocolVersion: v,
				Notifications: new(false), Topics: []Topic{{Pattern: "#", Direction: Both, QoS: 1}}}))
			waitConnected(t, ma)
			subA := dialClient(t, a.Addr, "subA", packets.V5, true, 0)
			subA.subscribe("t/#", 1)
			subB := dialClient(t, b.Addr, "subB", packets.V5, true, 0)
			subB.subscribe("t/#", 1)
			time.Sleep(100 * time.Millisecond) // subscriptions reach the bridge's view

			pubA := dialClient(t, a.Addr, "pubA", packets.V5, true, 0)
			pubA.publish("t/a", "from A", 1, false)
			subA.expect(1)
			subB.expect(1)
			pubB := dialClient(t, b.Addr, "pubB", packets.V311, true, 0)
			pubB.publish("t/b", "from B", 1, false)
			subA.expect(1)
			subB.expect(1)
			subA.expectNone(500 * time.Millisecond)
			subB.expectNone(10 * time.Millisecond)
			if got := a.Stats().MessagesReceived + b.Stats().MessagesReceived; got > 4 {
				t.Errorf("messages received on A and B: %d, want 4 (2 publishes, 2 forwards)", got)
			}
		})
	}
}
