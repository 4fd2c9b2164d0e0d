package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// The will record keeps what the will message needs: v5 properties, the
// delay, the session expiry and the epoch.
func TestWillRecordRoundTrip(t *testing.T) {
	in := &willRecord{clientID: "c1", username: "u", expiry: 60, epoch: 7, due: 1234567,
		will: &packets.Will{Topic: "w/c1", Payload: []byte("bye"), QoS: 2, Retain: true,
			Properties: packets.Properties{WillDelay: 5, ContentType: "text/plain", ResponseTopic: "r",
				CorrelationData: []byte{1, 2}, User: []packets.UserProperty{{Key: "k", Value: "v"}}}}}
	out, err := decodeWill(encodeWill(in))
	if err != nil {
		t.Fatal(err)
	}
	w := out.will
	if out.clientID != "c1" || out.username != "u" || out.expiry != 60 || out.epoch != 7 || out.due != 1234567 ||
		w.Topic != "w/c1" || string(w.Payload) != "bye" || w.QoS != 2 || !w.Retain || w.Properties.WillDelay != 5 ||
		w.Properties.ContentType != "text/plain" || w.Properties.ResponseTopic != "r" || len(w.Properties.CorrelationData) != 2 ||
		len(w.Properties.User) != 1 {
		t.Fatalf("got %+v %+v", out, w.Properties)
	}
	if out.delay() != 5*time.Second {
		t.Errorf("delay %v", out.delay())
	}
	b := encodeWill(in)
	for i := range len(b) - 1 {
		decodeWill(b[:i]) // never panics
	}
}

// A delayed will of a client connected to a node that dies is published
// by another node once min(Will Delay Interval, session expiry) has
// passed, with its properties, as the client's [MQTT-3.1.3-9]; a client
// that connects again (to another node) within the delay cancels it.
func TestDelayedWillOfDeadNode(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	sub := nodes[0].Dial(t, packets.V5)
	sub.MustConnect("watcher")
	subscribe(t, sub, "will/#", 1)
	connect := func(id string, delay uint32) {
		c := nodes[2].Dial(t, packets.V5)
		ack := c.Connect(&packets.Connect{ClientID: id, KeepAlive: 60, Properties: packets.Properties{SessionExpiry: new(uint32(60))},
			Will: &packets.Will{Topic: "will/" + id, Payload: []byte("bye"), QoS: 1,
				Properties: packets.Properties{WillDelay: delay, ContentType: "text/plain",
					User: []packets.UserProperty{{Key: "k", Value: id}}}}})
		if ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %v", ack.ReasonCode)
		}
	}
	connect("late", 2)
	connect("back", 2)
	died := time.Now()
	nodes[2].cl.ns.Shutdown() // n3 dies: its routes close, no goodbye
	// "back" connects again, to n1, within its delay.
	terntest.Eventually(t, "the wills adopted", func() bool { return pendingWills(nodes[:2]) == 2 })
	c := nodes[0].Dial(t, packets.V5)
	if ack := c.Connect(&packets.Connect{ClientID: "back", KeepAlive: 60, Properties: packets.Properties{SessionExpiry: new(uint32(60))}}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %v", ack.ReasonCode)
	}
	p := recvPublish(t, sub)
	if since := time.Since(died); since < 2*time.Second {
		t.Errorf("will published %v after the node died, before its 2 s delay", since)
	}
	if p.Topic != "will/late" || p.Properties.ContentType != "text/plain" || len(p.Properties.User) != 1 || p.Properties.User[0].Value != "late" {
		t.Fatalf("got %s %+v", p.Topic, p.Properties)
	}
	terntest.Eventually(t, "no will pending", func() bool { return pendingWills(nodes[:2]) == 0 })
	if pk, err := sub.TryRecv(300 * time.Millisecond); err == nil {
		t.Fatalf("a will after the client came back: %+v", pk)
	}
	// Nothing left in tern_wills for the gone node or the adopters.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, k := range []string{willKVKey("n3", "late"), willKVKey("n3", "back"), willKVKey("n1", "late"), willKVKey("n2", "late")} {
		if _, err := nodes[0].cl.kvWills.Get(ctx, k); err == nil {
			t.Errorf("%s still in tern_wills", k)
		}
	}
}

// pendingWills counts the delayed wills the nodes adopted.
func pendingWills(nodes []*testNode) int {
	n := 0
	for _, nd := range nodes {
		nd.cl.willTab.mu.Lock()
		n += len(nd.cl.willTab.pending)
		nd.cl.willTab.mu.Unlock()
	}
	return n
}
