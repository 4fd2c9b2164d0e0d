package packets_test

import (
	"bufio"
	"bytes"
	"fmt"

	"github.com/ternmq/tern/packets"
)

func ExampleReadPacket() {
	// Two packets as they might arrive on a connection: a QoS 1 PUBLISH
	// and a PINGREQ.
	stream := []byte{
		0x32, 0x0a, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0a, 'h', 'e', 'y',
		0xc0, 0x00,
	}
	r := bufio.NewReader(bytes.NewReader(stream))
	for {
		p, err := packets.ReadPacket(r, packets.V311, 1<<20)
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		switch p := p.(type) {
		case *packets.Publish:
			fmt.Printf("PUBLISH %s qos=%d id=%d payload=%q\n", p.Topic, p.QoS, p.PacketID, p.Payload)
		default:
			fmt.Println(p.Type())
		}
	}
	// Output:
	// PUBLISH a/b qos=1 id=10 payload="hey"
	// PINGREQ
	// error: EOF
}

func ExamplePublish_Encode() {
	p := &packets.Publish{QoS: 1, PacketID: 10, Topic: "a/b", Payload: []byte("hey")}
	var buf []byte // reuse it for the next packet: buf = p.Encode(buf[:0], ...)
	buf, err := p.Encode(buf, packets.V311)
	if err != nil {
		panic(err)
	}
	fmt.Printf("v3.1.1: % x\n", buf)

	// In v5 a message expiry travels as a property.
	p.Properties.MessageExpiry = 60
	buf, _ = p.Encode(buf[:0], packets.V5)
	fmt.Printf("v5:     % x\n", buf)
	// Output:
	// v3.1.1: 32 0a 00 03 61 2f 62 00 0a 68 65 79
	// v5:     32 10 00 03 61 2f 62 00 0a 05 02 00 00 00 3c 68 65 79
}
