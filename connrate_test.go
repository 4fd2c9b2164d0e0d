package tern_test

import (
	"net"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// A listener's connection rate limit (listeners' MaxConnectionRate, a
// tern.ConnectionRateLimiter): a CONNECT beyond it is refused, an MQTT 5
// client with CONNACK 0x9F Connection rate exceeded (v5 section 3.2.2.2),
// a 3.1.1 client, which has no such return code, by closing; other
// listeners are not limited.
func TestListenerConnectionRate(t *testing.T) {
	srv, err := tern.New(&tern.Options{SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	limited, _ := net.Listen("tcp", "127.0.0.1:0")
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	l := listeners.NewTCPFromListener("limited", limited)
	l.MaxConnectionRate = 0.001 // a burst of 1, then one per 1000 s
	srv.AddListener(l)
	srv.AddListener(listeners.NewTCPFromListener("free", free))
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	dial := func(ln net.Listener, v byte) *terntest.Conn {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := terntest.NewConn(t, nc, v)
		t.Cleanup(c.Close)
		return c
	}
	if ack := dial(limited, packets.V5).Connect(&packets.Connect{ClientID: "first", CleanStart: true}); ack.ReasonCode != packets.Success {
		t.Fatalf("first connection: %v", ack.ReasonCode)
	}
	if ack := dial(limited, packets.V5).Connect(&packets.Connect{ClientID: "second", CleanStart: true}); ack.ReasonCode != packets.ConnectionRateExceeded {
		t.Fatalf("second connection: CONNACK %v, want 0x9F", ack.ReasonCode)
	}
	c := dial(limited, packets.V311)
	c.Send(&packets.Connect{ClientID: "third", CleanStart: true})
	if got := c.ExpectClosed(); len(got) != 0 {
		t.Fatalf("3.1.1 client over the rate got %v, want the connection closed", got[0].Type())
	}
	for i := range 3 {
		if ack := dial(free, packets.V5).Connect(&packets.Connect{ClientID: "free" + string(rune('0'+i)), CleanStart: true}); ack.ReasonCode != packets.Success {
			t.Fatalf("unlimited listener: %v", ack.ReasonCode)
		}
	}
	// The 3.1.1 client may see its connection closed before the refusal
	// is counted.
	terntest.Eventually(t, "2 connections rejected and 2 connects refused", func() bool {
		st := srv.Stats()
		return st.ConnectionsRejected == 2 && st.ConnectsRefused == 2
	})
}
