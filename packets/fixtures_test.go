package packets

import (
	"bytes"
	"testing"
)

type fixture struct {
	name    string
	version byte
	hex     string // the whole packet, fixed header first
	packet  Packet
}

// fixtures are hand-written from the specifications' figures and examples;
// the comment on each names the section it follows.
func fixtures() []fixture {
	return []fixture{
		// 3.1.1 section 3.1.2.10, "Variable header non normative example":
		// protocol name "MQTT", level 4, flags 0xCE (user name, password,
		// will QoS 1, will, clean session), keep alive 10; the payload
		// carries the fields those flags promise, in the order of
		// [MQTT-3.1.3-1].
		{"connect/3.1.2.10 example", V311, `10 26
			00 04 4d 51 54 54 04 ce 00 0a
			00 04 74 65 72 6e  00 03 61 2f 62  00 03 62 79 65  00 04 75 73 65 72  00 04 70 61 73 73`,
			&Connect{ProtocolName: "MQTT", ProtocolVersion: V311, CleanStart: true, KeepAlive: 10, ClientID: "tern",
				Will:         &Will{Topic: "a/b", Payload: []byte("bye"), QoS: 1},
				UsernameFlag: true, Username: "user", PasswordFlag: true, Password: []byte("pass")}},
		// 5.0 sections 3.1.2.11 and 3.1.2.12, "Variable Header
		// non-normative example": as above with version 5 and a property
		// length of 5 holding Session Expiry Interval (17) = 10; will
		// properties are empty (section 3.1.3.2).
		{"connect/v5 3.1.2.12 example", V5, `10 2d
			00 04 4d 51 54 54 05 ce 00 0a 05 11 00 00 00 0a
			00 04 74 65 72 6e  00  00 03 61 2f 62  00 03 62 79 65  00 04 75 73 65 72  00 04 70 61 73 73`,
			&Connect{ProtocolName: "MQTT", ProtocolVersion: V5, CleanStart: true, KeepAlive: 10, ClientID: "tern",
				Properties:   Properties{SessionExpiry: Uint32(10)},
				Will:         &Will{Topic: "a/b", Payload: []byte("bye"), QoS: 1},
				UsernameFlag: true, Username: "user", PasswordFlag: true, Password: []byte("pass")}},
		// MQTT 3.1: protocol name "MQIsdp", version 3, clean session, keep
		// alive 60.
		{"connect/3.1", V31, `10 12 00 06 4d 51 49 73 64 70 03 02 00 3c 00 04 74 65 72 6e`,
			&Connect{ProtocolName: "MQIsdp", ProtocolVersion: V31, CleanStart: true, KeepAlive: 60, ClientID: "tern"}},
		// Mosquitto's try_private: a bridge sets the high bit of the
		// protocol level (0x84 for 3.1.1, 0x83 for 3.1). Not part of MQTT;
		// Mosquitto, EMQX and Tern accept it as a bridge.
		{"connect/3.1.1 bridge", V311, `10 10 00 04 4d 51 54 54 84 00 00 3c 00 04 74 65 72 6e`,
			&Connect{ProtocolName: "MQTT", ProtocolVersion: V311, KeepAlive: 60, ClientID: "tern", Bridge: true}},
		{"connect/3.1 bridge", V31, `10 12 00 06 4d 51 49 73 64 70 83 02 00 3c 00 04 74 65 72 6e`,
			&Connect{ProtocolName: "MQIsdp", ProtocolVersion: V31, CleanStart: true, KeepAlive: 60, ClientID: "tern", Bridge: true}},
		// 3.1.1 section 3.2.2.2: Session Present; 3.2.2.3 Table 3.1: 0x05
		// "Connection Refused, not authorized".
		{"connack/session present", V311, `20 02 01 00`, &Connack{SessionPresent: true}},
		{"connack/not authorized", V311, `20 02 00 05`, &Connack{ReasonCode: NotAuthorized}},
		{"connack/3.1 refused", V31, `20 02 00 02`, &Connack{ReasonCode: ClientIdentifierNotValid}},
		// 5.0 section 3.2.2: flags, reason code, properties (Assigned
		// Client Identifier 0x12).
		{"connack/v5", V5, `20 03 00 00 00`, &Connack{}},
		{"connack/v5 assigned id", V5, `20 08 00 00 05 12 00 02 61 31`, &Connack{Properties: Properties{AssignedClientID: "a1"}}},
		{"connack/v5 refused", V5, `20 03 00 8c 00`, &Connack{ReasonCode: BadAuthenticationMethod}},
		// 3.1.1 section 3.3.2.3, "Publish Packet variable header non
		// normative example": topic "a/b", packet identifier 10.
		{"publish/3.3.2.3 example", V311, `32 07 00 03 61 2f 62 00 0a`, &Publish{QoS: 1, Topic: "a/b", PacketID: 10}},
		// 5.0 section 3.3.2: the same with a property length of 0.
		{"publish/v5 3.3.2 example", V5, `32 08 00 03 61 2f 62 00 0a 00`, &Publish{QoS: 1, Topic: "a/b", PacketID: 10}},
		{"publish/qos0 payload", V311, `30 0a 00 03 61 2f 62 68 65 6c 6c 6f`, &Publish{Topic: "a/b", Payload: []byte("hello")}},
		{"publish/qos2 dup retain", V311, `3d 07 00 03 61 2f 62 ff ff`, &Publish{Dup: true, QoS: 2, Retain: true, Topic: "a/b", PacketID: 65535}},
		// 5.0 section 3.3.2.3.4: Topic Alias (0x23).
		{"publish/v5 topic alias", V5, `30 0b 00 03 61 2f 62 03 23 00 01 68 69`,
			&Publish{Topic: "a/b", Properties: Properties{TopicAlias: 1}, Payload: []byte("hi")}},
		{"publish/v5 alias only", V5, `30 06 00 00 03 23 00 01`, &Publish{Properties: Properties{TopicAlias: 1}}},
		// 5.0 sections 3.3.2.3.8 and 3.3.4: two Subscription Identifiers,
		// 1 and 268,435,455 (a four byte Variable Byte Integer).
		{"publish/v5 subscription ids", V5, `30 0e 00 01 74 07 0b 01 0b ff ff ff 7f 00 01 70`,
			&Publish{Topic: "t", Properties: Properties{SubscriptionIDs: []uint32{1, MaxSubscriptionID}}, Payload: []byte{0, 1, 0x70}}},
		// 3.1.1 sections 3.4 to 3.7.
		{"puback", V311, `40 02 00 0a`, &Puback{PacketID: 10}},
		{"pubrec", V311, `50 02 00 0a`, &Pubrec{PacketID: 10}},
		{"pubrel", V311, `62 02 00 0a`, &Pubrel{PacketID: 10}},
		{"pubcomp", V311, `70 02 00 0a`, &Pubcomp{PacketID: 10}},
		// 5.0 sections 3.4.2 to 3.7.2.
		{"puback/v5 no matching subscribers", V5, `40 03 00 0a 10`, &Puback{PacketID: 10, ReasonCode: NoMatchingSubscribers}},
		{"pubrec/v5 reason string", V5, `50 08 00 0a 97 04 1f 00 01 71`, &Pubrec{PacketID: 10, ReasonCode: QuotaExceeded, Properties: Properties{ReasonString: "q"}}},
		{"pubrel/v5 not found", V5, `62 03 00 0a 92`, &Pubrel{PacketID: 10, ReasonCode: PacketIdentifierNotFound}},
		{"pubcomp/v5 short", V5, `70 02 00 0a`, &Pubcomp{PacketID: 10}},
		// 3.1.1 section 3.8.2 and Figure 3.22 "Payload byte format non
		// normative example": packet identifier 10, "a/b" QoS 1, "c/d"
		// QoS 2.
		{"subscribe/3.8.3 example", V311, `82 0e 00 0a 00 03 61 2f 62 01 00 03 63 2f 64 02`,
			&Subscribe{PacketID: 10, Subscriptions: []Subscription{{Filter: "a/b", QoS: 1}, {Filter: "c/d", QoS: 2}}}},
		// 5.0 section 3.8.3.1: options 0x2d = Retain Handling 2, Retain
		// As Published, No Local, QoS 1; Subscription Identifier 5.
		{"subscribe/v5 options", V5, `82 0b 00 0a 02 0b 05 00 03 61 2f 62 2d`,
			&Subscribe{PacketID: 10, Properties: Properties{SubscriptionIDs: []uint32{5}},
				Subscriptions: []Subscription{{Filter: "a/b", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2}}}},
		// 3.1.1 section 3.9.3, Figure 3.26 "Payload byte format non
		// normative example": Success QoS 0, Success QoS 2, Failure.
		{"suback/3.9.3 example", V311, `90 05 00 0a 00 02 80`,
			&Suback{PacketID: 10, ReasonCodes: []ReasonCode{GrantedQoS0, GrantedQoS2, UnspecifiedError}}},
		{"suback/v5", V5, `90 06 00 0a 00 01 87 a2`,
			&Suback{PacketID: 10, ReasonCodes: []ReasonCode{GrantedQoS1, NotAuthorized, WildcardSubsNotSupported}}},
		// 3.1.1 section 3.10.3, Figure 3.30 "Payload byte format non
		// normative example": "a/b", "c/d".
		{"unsubscribe/3.10.3 example", V311, `a2 0c 00 0a 00 03 61 2f 62 00 03 63 2f 64`,
			&Unsubscribe{PacketID: 10, Filters: []string{"a/b", "c/d"}}},
		{"unsubscribe/v5", V5, `a2 08 00 0a 00 00 03 61 2f 62`, &Unsubscribe{PacketID: 10, Filters: []string{"a/b"}}},
		{"unsuback", V311, `b0 02 00 0a`, &Unsuback{PacketID: 10}},
		{"unsuback/v5", V5, `b0 05 00 0a 00 00 11`, &Unsuback{PacketID: 10, ReasonCodes: []ReasonCode{Success, NoSubscriptionExisted}}},
		// Sections 3.12 to 3.15.
		{"pingreq", V311, `c0 00`, &Pingreq{}},
		{"pingresp", V311, `d0 00`, &Pingresp{}},
		{"disconnect", V311, `e0 00`, &Disconnect{}},
		{"disconnect/v5 short", V5, `e0 00`, &Disconnect{}},
		{"disconnect/v5 session taken over", V5, `e0 07 8e 05 11 00 00 00 00`,
			&Disconnect{ReasonCode: SessionTakenOver, Properties: Properties{SessionExpiry: Uint32(0)}}},
		{"auth/v5 continue", V5, `f0 10 18 0e 15 00 05 53 43 52 41 4d 16 00 03 01 02 03`,
			&Auth{ReasonCode: ContinueAuthentication, Properties: Properties{AuthMethod: "SCRAM", AuthData: []byte{1, 2, 3}}}},
		{"auth/v5 short", V5, `f0 00`, &Auth{}},
	}
}

func TestFixtures(t *testing.T) {
	for _, f := range fixtures() {
		t.Run(versionName(f.version)+"/"+f.name, func(t *testing.T) {
			want := hexb(t, f.hex)
			got, err := decodeBytes(want, f.version, 0)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !equalPackets(got, f.packet) {
				t.Errorf("decode:\n got %#v\nwant %#v", normalize(got), normalize(f.packet))
			}
			if got, err := readBytes(want, f.version, len(want)); err != nil || !equalPackets(got, f.packet) {
				t.Errorf("ReadPacket = %#v, %v", got, err)
			}
			if enc := mustEncode(t, f.packet, f.version); !bytes.Equal(enc, want) {
				t.Errorf("encode:\n got % x\nwant % x", enc, want)
			}
		})
	}
}

// remainingLengths are the boundaries of Table 2.4 (3.1.1 section 2.2.3)
// and Table 1-1 (5.0 section 1.5.5): the largest value of each size and the
// smallest of the next.
var remainingLengths = []struct {
	value int
	hex   string
}{
	{0, "00"},
	{127, "7f"},
	{128, "80 01"},
	{16383, "ff 7f"},
	{16384, "80 80 01"},
	{2097151, "ff ff 7f"},
	{2097152, "80 80 80 01"},
	{268435455, "ff ff ff 7f"},
}

func TestRemainingLength(t *testing.T) {
	for _, tc := range remainingLengths {
		want := hexb(t, tc.hex)
		if got := appendVBI(nil, tc.value); !bytes.Equal(got, want) {
			t.Errorf("appendVBI(%d) = % x, want % x", tc.value, got, want)
		}
		if n := vbiSize(tc.value); n != len(want) {
			t.Errorf("vbiSize(%d) = %d, want %d", tc.value, n, len(want))
		}
		if v, n, err := decodeVBI(want); v != tc.value || n != len(want) || err != nil {
			t.Errorf("decodeVBI(% x) = %d, %d, %v", want, v, n, err)
		}
		hdr := append([]byte{0x30}, want...)
		h, n, err := DecodeFixedHeader(hdr, 0)
		if err != nil || n != len(hdr) || h != (FixedHeader{Type: PUBLISH, Remaining: tc.value}) || h.Size() != n {
			t.Errorf("DecodeFixedHeader(% x) = %+v, %d, %v", hdr, h, n, err)
		}
		if h2, err := ReadFixedHeader(bytes.NewReader(hdr), 0); err != nil || h2 != h {
			t.Errorf("ReadFixedHeader(% x) = %+v, %v", hdr, h2, err)
		}
		if got, err := appendHeader(nil, PUBLISH, 0, tc.value); err != nil || !bytes.Equal(got, hdr) {
			t.Errorf("appendHeader(%d) = % x, %v", tc.value, got, err)
		}
		if h.PacketSize() != len(hdr)+tc.value {
			t.Errorf("PacketSize() = %d", h.PacketSize())
		}
		// Whole packets up to 2 MB: a QoS 0 PUBLISH to "a" has 3 bytes
		// of variable header, the rest is payload.
		if tc.value < 3 || tc.value > 2097152 {
			continue
		}
		p := &Publish{Topic: "a", Payload: bytes.Repeat([]byte{0x5A}, tc.value-3)}
		b := mustEncode(t, p, V311)
		if !bytes.HasPrefix(b, hdr) || len(b) != len(hdr)+tc.value || p.Size(V311) != len(b) {
			t.Errorf("PUBLISH of remaining length %d encodes as % x... (%d bytes)", tc.value, b[:min(len(b), 8)], len(b))
		}
		if got, err := readBytes(b, V311, 0); err != nil || !equalPackets(got, p) {
			t.Errorf("PUBLISH of remaining length %d: ReadPacket = %v", tc.value, err)
		}
	}
	// One more than the largest remaining length cannot be encoded.
	if _, err := appendHeader(nil, PUBLISH, 0, MaxRemainingLength+1); CodeOf(err) != PacketTooLarge {
		t.Errorf("appendHeader(MaxRemainingLength+1) err = %v, want Packet too large", err)
	}
	if MaxPacketSize != 268435460 {
		t.Errorf("MaxPacketSize = %d", MaxPacketSize)
	}
}
