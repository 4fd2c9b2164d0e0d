package tern_test

import (
	"testing"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

func TestSmokePubSub(t *testing.T) {
	for _, v := range []byte{packets.V311, packets.V5} {
		srv := terntest.NewServer(t, nil)
		sub := srv.Dial(t, v)
		sub.MustConnect("sub")
		sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "a/+", QoS: 2}}})
		if ack := sub.Recv().(*packets.Suback); ack.ReasonCodes[0] != 2 {
			t.Fatalf("suback %v", ack.ReasonCodes)
		}
		pub := srv.Dial(t, v)
		pub.MustConnect("pub")
		for qos := byte(0); qos <= 2; qos++ {
			pub.Send(&packets.Publish{Topic: "a/b", QoS: qos, PacketID: uint16(qos), Payload: []byte{qos}})
			switch qos {
			case 1:
				pub.Recv()
			case 2:
				pub.Recv()
				pub.Send(&packets.Pubrel{PacketID: 2})
				pub.Recv()
			}
			got := sub.Recv().(*packets.Publish)
			if got.Topic != "a/b" || got.QoS != qos || got.Payload[0] != qos {
				t.Fatalf("v%d got %+v", v, got)
			}
			switch qos {
			case 1:
				sub.Send(&packets.Puback{PacketID: got.PacketID})
			case 2:
				sub.Send(&packets.Pubrec{PacketID: got.PacketID})
				sub.Recv()
				sub.Send(&packets.Pubcomp{PacketID: got.PacketID})
			}
		}
	}
}
