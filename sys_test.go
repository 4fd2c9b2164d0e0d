package tern_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// mosquittoSys are the 53 topics of Mosquitto 2.0's $SYS/broker tree.
var mosquittoSys = func() []string {
	out := []string{"version", "uptime", "clients/total", "clients/connected", "clients/disconnected",
		"clients/active", "clients/inactive", "clients/maximum", "clients/expired",
		"messages/received", "messages/sent", "messages/stored", "store/messages/count", "store/messages/bytes",
		"retained messages/count", "subscriptions/count", "shared_subscriptions/count", "heap/current", "heap/maximum",
		"bytes/received", "bytes/sent", "publish/messages/received", "publish/messages/sent", "publish/messages/dropped",
		"publish/bytes/received", "publish/bytes/sent"}
	for _, l := range []string{"messages/received", "messages/sent", "publish/received", "publish/sent", "publish/dropped",
		"bytes/received", "bytes/sent", "sockets", "connections"} {
		for _, w := range []string{"1min", "5min", "15min"} {
			out = append(out, "load/"+l+"/"+w)
		}
	}
	return out
}()

// $SYS/broker has every topic Mosquitto publishes, with values that follow
// the traffic.
func TestSysTopics(t *testing.T) {
	t.Parallel()
	if len(mosquittoSys) != 53 {
		t.Fatalf("%d topics listed", len(mosquittoSys))
	}
	srv := terntest.NewServer(t, &tern.Options{SysInterval: 100 * time.Millisecond})
	sub := srv.Dial(t, packets.V5)
	sub.MustConnect("sys-watch")
	got := map[string]string{}
	// A $SYS publish may come before the SUBACK: the server may send
	// matching messages as soon as the subscription exists (section 3.8.4).
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "$SYS/broker/#"},
		{Filter: "$share/g/nothing/+"}}})
	for {
		pk := sub.Recv()
		if m, ok := pk.(*packets.Publish); ok {
			got[strings.TrimPrefix(m.Topic, "$SYS/broker/")] = string(m.Payload)
			continue
		}
		if _, ok := pk.(*packets.Suback); !ok {
			t.Fatalf("expected SUBACK, got %s", pk.Type())
		}
		break
	}
	pub := mustConnect(t, srv, packets.V5, "sys-pub")
	for i := range 50 {
		pub.Send(&packets.Publish{Topic: "sys/t", Payload: []byte("12345678"), QoS: 1, PacketID: uint16(i + 1)})
		recvAs[*packets.Puback](t, pub)
	}
	deadline := time.Now().Add(terntest.Timeout)
	for time.Now().Before(deadline) {
		m := recvAs[*packets.Publish](t, sub)
		got[strings.TrimPrefix(m.Topic, "$SYS/broker/")] = string(m.Payload)
		if v, err := strconv.ParseFloat(got["load/publish/received/1min"], 64); err == nil && v > 0 &&
			got["publish/bytes/received"] == "400" {
			break
		}
	}
	for _, topic := range mosquittoSys {
		v, ok := got[topic]
		if !ok {
			t.Errorf("$SYS/broker/%s missing", topic)
			continue
		}
		if strings.HasPrefix(topic, "load/") {
			if _, err := strconv.ParseFloat(v, 64); err != nil || !strings.Contains(v, ".") {
				t.Errorf("$SYS/broker/%s = %q, want a number with decimals", topic, v)
			}
		}
	}
	for topic, want := range map[string]string{"publish/messages/received": "50", "publish/bytes/received": "400",
		"shared_subscriptions/count": "1", "subscriptions/count": "2", "clients/connected": "2", "clients/maximum": "2"} {
		if got[topic] != want {
			t.Errorf("$SYS/broker/%s = %q, want %s", topic, got[topic], want)
		}
	}
	if n, _ := strconv.ParseInt(got["heap/current"], 10, 64); n <= 0 {
		t.Errorf("heap/current %q", got["heap/current"])
	}
}
