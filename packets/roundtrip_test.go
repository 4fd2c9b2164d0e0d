package packets

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"testing"
)

type roundTripCase struct {
	name    string
	version byte
	packet  Packet
}

// roundTripCases holds at least one packet of every type in each protocol
// version that has it: v3.1.1 and v5 for all, v3.1 for CONNECT and
// CONNACK, v5 only for AUTH.
func roundTripCases() []roundTripCase {
	userProps := []UserProperty{{"region", "eu"}, {"region", "us"}, {"", ""}}
	return []roundTripCase{
		// CONNECT
		{"connect/minimal", V311, &Connect{ProtocolName: "MQTT", ProtocolVersion: V311, CleanStart: true, KeepAlive: 60, ClientID: "c1"}},
		{"connect/empty client id", V311, &Connect{ProtocolName: "MQTT", ProtocolVersion: V311, CleanStart: true}},
		{"connect/full", V311, &Connect{ProtocolName: "MQTT", ProtocolVersion: V311, KeepAlive: 65535, ClientID: "dev-7",
			Will:         &Will{Topic: "dev/7/status", Payload: []byte("offline"), QoS: 2, Retain: true},
			UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte{0, 1, 0xFF}}},
		{"connect/empty username and password", V311, &Connect{ProtocolName: "MQTT", ProtocolVersion: V311, ClientID: "x",
			UsernameFlag: true, PasswordFlag: true}},
		{"connect/3.1", V31, &Connect{ProtocolName: "MQIsdp", ProtocolVersion: V31, CleanStart: true, KeepAlive: 10, ClientID: "old-client",
			Will: &Will{Topic: "w", Payload: []byte("x"), QoS: 1}, UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte("p")}},
		{"connect/v5 minimal", V5, &Connect{ProtocolName: "MQTT", ProtocolVersion: V5, CleanStart: true, ClientID: "c5"}},
		{"connect/v5 password without username", V5, &Connect{ProtocolName: "MQTT", ProtocolVersion: V5, ClientID: "c5",
			PasswordFlag: true, Password: []byte("token")}},
		{"connect/v5 full", V5, &Connect{ProtocolName: "MQTT", ProtocolVersion: V5, CleanStart: true, KeepAlive: 30, ClientID: "c5",
			Properties: Properties{SessionExpiry: Uint32(0), ReceiveMaximum: 10, MaximumPacketSize: 1 << 20,
				TopicAliasMaximum: 5, RequestResponseInfo: 1, RequestProblemInfo: Byte(0), User: userProps,
				AuthMethod: "SCRAM-SHA-1", AuthData: []byte{}},
			Will: &Will{Topic: "w/t", Payload: []byte{}, QoS: 1, Properties: Properties{WillDelay: 30, PayloadFormat: 1,
				MessageExpiry: 60, ContentType: "text/plain", ResponseTopic: "r/t", CorrelationData: []byte{1}, User: userProps[:1]}},
			UsernameFlag: true, Username: "bob", PasswordFlag: true, Password: []byte("secret")}},

		// CONNACK
		{"connack/3.1", V31, &Connack{ReasonCode: Success}},
		{"connack/3.1 refused", V31, &Connack{ReasonCode: NotAuthorized}},
		{"connack/session present", V311, &Connack{SessionPresent: true, ReasonCode: Success}},
		{"connack/refused", V311, &Connack{ReasonCode: BadUserNameOrPassword}},
		{"connack/v5 minimal", V5, &Connack{ReasonCode: Success}},
		{"connack/v5 refused", V5, &Connack{ReasonCode: QuotaExceeded, Properties: Properties{ReasonString: "slow down", ServerReference: "other:1883"}}},
		{"connack/v5 full", V5, &Connack{SessionPresent: true, Properties: Properties{SessionExpiry: Uint32(3600),
			AssignedClientID: "auto-1", ServerKeepAlive: Uint16(0), ReceiveMaximum: 100, TopicAliasMaximum: 10,
			MaximumQoS: Byte(1), RetainAvailable: Byte(0), MaximumPacketSize: 65536, WildcardSubAvailable: Byte(0),
			SubIDAvailable: Byte(1), SharedSubAvailable: Byte(0), ResponseInfo: "resp/", User: userProps}}},

		// PUBLISH
		{"publish/qos0", V311, &Publish{Topic: "a/b", Payload: []byte("hello")}},
		{"publish/qos0 empty payload retain", V311, &Publish{Topic: "a", Retain: true}},
		{"publish/qos1 dup", V311, &Publish{Dup: true, QoS: 1, PacketID: 1, Topic: "a/b/c", Payload: []byte{0}}},
		{"publish/qos2 retain", V311, &Publish{QoS: 2, Retain: true, PacketID: 65535, Topic: "$SYS/x", Payload: bytes.Repeat([]byte("z"), 300)}},
		{"publish/3.1", V31, &Publish{QoS: 1, PacketID: 9, Topic: "t", Payload: []byte("p")}},
		{"publish/v5 no properties", V5, &Publish{QoS: 1, PacketID: 7, Topic: "a/b", Payload: []byte("x")}},
		{"publish/v5 alias only", V5, &Publish{Topic: "", Properties: Properties{TopicAlias: 3}, Payload: []byte("x")}},
		{"publish/v5 full", V5, &Publish{QoS: 2, PacketID: 2, Topic: "req/1", Payload: []byte(`{"t":21.5}`),
			Properties: Properties{PayloadFormat: 1, MessageExpiry: 120, ContentType: "application/json", ResponseTopic: "resp/1",
				CorrelationData: []byte("corr"), SubscriptionIDs: []uint32{1, 127, 128, 16384, MaxSubscriptionID},
				TopicAlias: 1, User: userProps}}},

		// PUBACK, PUBREC, PUBREL, PUBCOMP
		{"puback", V311, &Puback{PacketID: 1}},
		{"pubrec", V311, &Pubrec{PacketID: 2}},
		{"pubrel", V311, &Pubrel{PacketID: 3}},
		{"pubcomp", V311, &Pubcomp{PacketID: 65535}},
		{"puback/v5 short", V5, &Puback{PacketID: 1}},
		{"puback/v5 code", V5, &Puback{PacketID: 1, ReasonCode: NoMatchingSubscribers}},
		{"puback/v5 props", V5, &Puback{PacketID: 1, ReasonCode: Success, Properties: Properties{ReasonString: "ok"}}},
		{"pubrec/v5", V5, &Pubrec{PacketID: 2, ReasonCode: QuotaExceeded, Properties: Properties{User: userProps}}},
		{"pubrel/v5", V5, &Pubrel{PacketID: 3, ReasonCode: PacketIdentifierNotFound}},
		{"pubcomp/v5", V5, &Pubcomp{PacketID: 4, Properties: Properties{ReasonString: "done", User: userProps[:1]}}},

		// SUBSCRIBE, SUBACK
		{"subscribe", V311, &Subscribe{PacketID: 10, Subscriptions: []Subscription{{Filter: "a/+", QoS: 0}, {Filter: "b/#", QoS: 1}, {Filter: "c", QoS: 2}}}},
		{"subscribe/v5", V5, &Subscribe{PacketID: 10, Properties: Properties{SubscriptionIDs: []uint32{42}, User: userProps},
			Subscriptions: []Subscription{
				{Filter: "a/+", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
				{Filter: "$share/g/b/#", QoS: 2, RetainHandling: 1},
				{Filter: "c", QoS: 0}}}},
		{"suback", V311, &Suback{PacketID: 10, ReasonCodes: []ReasonCode{GrantedQoS0, GrantedQoS1, GrantedQoS2, UnspecifiedError}}},
		{"suback/v5", V5, &Suback{PacketID: 10, Properties: Properties{ReasonString: "partly"},
			ReasonCodes: []ReasonCode{GrantedQoS2, NotAuthorized, SharedSubsNotSupported, WildcardSubsNotSupported}}},

		// UNSUBSCRIBE, UNSUBACK
		{"unsubscribe", V311, &Unsubscribe{PacketID: 11, Filters: []string{"a/+", "b/#"}}},
		{"unsubscribe/v5", V5, &Unsubscribe{PacketID: 11, Properties: Properties{User: userProps}, Filters: []string{"a/+"}}},
		{"unsuback", V311, &Unsuback{PacketID: 11}},
		{"unsuback/v5", V5, &Unsuback{PacketID: 11, Properties: Properties{ReasonString: "r"},
			ReasonCodes: []ReasonCode{Success, NoSubscriptionExisted, TopicFilterInvalid}}},

		// PINGREQ, PINGRESP, DISCONNECT, AUTH
		{"pingreq", V311, &Pingreq{}},
		{"pingresp", V311, &Pingresp{}},
		{"pingreq/v5", V5, &Pingreq{}},
		{"pingresp/v5", V5, &Pingresp{}},
		{"disconnect", V311, &Disconnect{}},
		{"disconnect/v5 short", V5, &Disconnect{}},
		{"disconnect/v5 code", V5, &Disconnect{ReasonCode: DisconnectWithWill}},
		{"disconnect/v5 full", V5, &Disconnect{ReasonCode: ServerMoved, Properties: Properties{SessionExpiry: Uint32(0),
			ReasonString: "bye", ServerReference: "b:1883", User: userProps}}},
		{"auth/v5 short", V5, &Auth{}},
		{"auth/v5 continue", V5, &Auth{ReasonCode: ContinueAuthentication, Properties: Properties{AuthMethod: "SCRAM-SHA-1",
			AuthData: []byte("client-first"), ReasonString: "step 1", User: userProps[:1]}}},
		{"auth/v5 reauth", V5, &Auth{ReasonCode: ReAuthenticate, Properties: Properties{AuthMethod: "K"}}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases() {
		t.Run(versionName(tc.version)+"/"+tc.name, func(t *testing.T) {
			b := mustEncode(t, tc.packet, tc.version)
			if got := tc.packet.Type(); Type(b[0]>>4) != got {
				t.Fatalf("first byte %#x is not a %v", b[0], got)
			}
			if p, ok := tc.packet.(*Publish); ok && p.Size(tc.version) != len(b) {
				t.Errorf("Size = %d, encoded %d bytes", p.Size(tc.version), len(b))
			}
			for _, dec := range []struct {
				name string
				fn   func([]byte) (Packet, error)
			}{
				{"Decode", func(b []byte) (Packet, error) { return decodeBytes(b, tc.version, len(b)) }},
				{"ReadPacket", func(b []byte) (Packet, error) { return readBytes(b, tc.version, len(b)) }},
				{"ReadPacket/Reader", func(b []byte) (Packet, error) {
					return ReadPacket(onlyReader{bytes.NewReader(b)}, tc.version, 0)
				}},
			} {
				got, err := dec.fn(b)
				if err != nil {
					t.Fatalf("%s(% x): %v", dec.name, b, err)
				}
				if !equalPackets(got, tc.packet) {
					t.Errorf("%s:\n got %#v\nwant %#v", dec.name, normalize(got), normalize(tc.packet))
				}
				if again := mustEncode(t, got, tc.version); !bytes.Equal(again, b) {
					t.Errorf("%s: re-encoding differs:\n got % x\nwant % x", dec.name, again, b)
				}
			}
			// Encode appends: what is already in dst stays.
			prefix := []byte{0xAA, 0xBB}
			out, err := tc.packet.Encode(prefix, tc.version)
			if err != nil || !bytes.Equal(out[:2], prefix) || !bytes.Equal(out[2:], b) {
				t.Errorf("Encode(prefix) = % x, %v; want prefix then % x", out, err, b)
			}
		})
	}
}

// TestDecodeReuse decodes every round-trip packet into a struct that already
// holds another packet of the same type and checks that nothing of the
// first survives.
func TestDecodeReuse(t *testing.T) {
	cases := roundTripCases()
	for _, a := range cases {
		for _, b := range cases {
			if a.packet.Type() != b.packet.Type() {
				continue
			}
			ab, bb := mustEncode(t, a.packet, a.version), mustEncode(t, b.packet, b.version)
			p := New(a.packet.Type())
			ha, na, _ := DecodeFixedHeader(ab, 0)
			if err := p.Decode(ha, ab[na:], a.version); err != nil {
				t.Fatalf("%s: %v", a.name, err)
			}
			hb, nb, _ := DecodeFixedHeader(bb, 0)
			if err := p.Decode(hb, bb[nb:], b.version); err != nil {
				t.Fatalf("%s after %s: %v", b.name, a.name, err)
			}
			if !equalPackets(p, b.packet) {
				t.Errorf("%s decoded after %s:\n got %#v\nwant %#v", b.name, a.name, normalize(p), normalize(b.packet))
			}
		}
	}
}

// TestAllProperties sets every property each packet type allows, with
// several user properties everywhere and several subscription identifiers
// on PUBLISH, and checks that together they cover all 27 identifiers.
func TestAllProperties(t *testing.T) {
	users := []UserProperty{{"k1", "v1"}, {"k1", "v2"}, {"ключ", "значение"}}
	full := Properties{
		PayloadFormat: 1, MessageExpiry: 3600, ContentType: "text/plain", ResponseTopic: "resp/x",
		CorrelationData: []byte{0xDE, 0xAD}, SubscriptionIDs: []uint32{1, 300, MaxSubscriptionID},
		SessionExpiry: Uint32(0xFFFFFFFF), AssignedClientID: "assigned", ServerKeepAlive: Uint16(120),
		AuthMethod: "GS2-KRB5", AuthData: []byte{1, 2, 3}, RequestProblemInfo: Byte(0), WillDelay: 5,
		RequestResponseInfo: 1, ResponseInfo: "info", ServerReference: "srv:1883", ReasonString: "why",
		ReceiveMaximum: 65535, TopicAliasMaximum: 65535, TopicAlias: 65535, MaximumQoS: Byte(0),
		RetainAvailable: Byte(1), User: users, MaximumPacketSize: 268435460, WildcardSubAvailable: Byte(1),
		SubIDAvailable: Byte(0), SharedSubAvailable: Byte(1),
	}
	// only keeps the properties allowed in t.
	only := func(t Type) Properties {
		p := full
		m := allowedMask[t]
		keep := func(id byte) bool { return m&(1<<id) != 0 }
		if !keep(PropPayloadFormat) {
			p.PayloadFormat = 0
		}
		if !keep(PropMessageExpiry) {
			p.MessageExpiry = 0
		}
		if !keep(PropContentType) {
			p.ContentType = ""
		}
		if !keep(PropResponseTopic) {
			p.ResponseTopic = ""
		}
		if !keep(PropCorrelationData) {
			p.CorrelationData = nil
		}
		if !keep(PropSubscriptionID) {
			p.SubscriptionIDs = nil
		} else if t == SUBSCRIBE {
			p.SubscriptionIDs = p.SubscriptionIDs[2:] // one at most
		}
		if !keep(PropSessionExpiry) {
			p.SessionExpiry = nil
		}
		if !keep(PropAssignedClientID) {
			p.AssignedClientID = ""
		}
		if !keep(PropServerKeepAlive) {
			p.ServerKeepAlive = nil
		}
		if !keep(PropAuthMethod) {
			p.AuthMethod = ""
		}
		if !keep(PropAuthData) {
			p.AuthData = nil
		}
		if !keep(PropRequestProblemInfo) {
			p.RequestProblemInfo = nil
		}
		if !keep(PropWillDelay) {
			p.WillDelay = 0
		}
		if !keep(PropRequestResponseInfo) {
			p.RequestResponseInfo = 0
		}
		if !keep(PropResponseInfo) {
			p.ResponseInfo = ""
		}
		if !keep(PropServerReference) {
			p.ServerReference = ""
		}
		if !keep(PropReasonString) {
			p.ReasonString = ""
		}
		if !keep(PropReceiveMaximum) {
			p.ReceiveMaximum = 0
		}
		if !keep(PropTopicAliasMaximum) {
			p.TopicAliasMaximum = 0
		}
		if !keep(PropTopicAlias) {
			p.TopicAlias = 0
		}
		if !keep(PropMaximumQoS) {
			p.MaximumQoS = nil
		}
		if !keep(PropRetainAvailable) {
			p.RetainAvailable = nil
		}
		if !keep(PropUser) {
			p.User = nil
		}
		if !keep(PropMaximumPacketSize) {
			p.MaximumPacketSize = 0
		}
		if !keep(PropWildcardSubAvailable) {
			p.WildcardSubAvailable = nil
		}
		if !keep(PropSubIDAvailable) {
			p.SubIDAvailable = nil
		}
		if !keep(PropSharedSubAvailable) {
			p.SharedSubAvailable = nil
		}
		return p
	}
	packets := []Packet{
		&Connect{ProtocolName: "MQTT", ProtocolVersion: V5, ClientID: "c", Properties: only(CONNECT),
			Will: &Will{Topic: "w", Payload: []byte("p"), Properties: only(WillProperties)}},
		&Connack{Properties: only(CONNACK)},
		&Publish{QoS: 1, PacketID: 1, Topic: "t", Properties: only(PUBLISH), Payload: []byte("x")},
		&Puback{PacketID: 1, Properties: only(PUBACK)},
		&Pubrec{PacketID: 1, Properties: only(PUBREC)},
		&Pubrel{PacketID: 1, Properties: only(PUBREL)},
		&Pubcomp{PacketID: 1, Properties: only(PUBCOMP)},
		&Subscribe{PacketID: 1, Properties: only(SUBSCRIBE), Subscriptions: []Subscription{{Filter: "f"}}},
		&Suback{PacketID: 1, Properties: only(SUBACK), ReasonCodes: []ReasonCode{0}},
		&Unsubscribe{PacketID: 1, Properties: only(UNSUBSCRIBE), Filters: []string{"f"}},
		&Unsuback{PacketID: 1, Properties: only(UNSUBACK), ReasonCodes: []ReasonCode{0}},
		&Disconnect{Properties: only(DISCONNECT)},
		&Auth{ReasonCode: ContinueAuthentication, Properties: only(AUTH)},
	}
	var covered uint64
	for _, p := range packets {
		t.Run(p.Type().String(), func(t *testing.T) {
			b := mustEncode(t, p, V5)
			got, err := decodeBytes(b, V5, 0)
			if err != nil {
				t.Fatalf("decode % x: %v", b, err)
			}
			if !equalPackets(got, p) {
				t.Fatalf("\n got %#v\nwant %#v", normalize(got), normalize(p))
			}
			props := []*Properties{propsOf(got)}
			types := []Type{p.Type()}
			if c, ok := got.(*Connect); ok {
				props = append(props, &c.Will.Properties)
				types = append(types, WillProperties)
			}
			for i, pp := range props {
				if want := allowedMask[types[i]]; pp.present() != want {
					t.Errorf("%s: properties present %b, allowed %b", propCtxName(types[i]), pp.present(), want)
				}
				if len(pp.User) != len(users) {
					t.Errorf("%s: %d user properties, want %d in order", propCtxName(types[i]), len(pp.User), len(users))
				}
				covered |= pp.present()
			}
		})
	}
	if n := bits.OnesCount64(covered); n != 27 {
		t.Errorf("covered %d property identifiers, want all 27 (%b)", n, covered)
	}
	if got := propsOf(packets[2]).SubscriptionIDs; len(got) != 3 {
		t.Errorf("PUBLISH carries %d subscription identifiers, want 3", len(got))
	}
}

// propsOf returns the properties of a packet, or nil for PINGREQ/PINGRESP.
func propsOf(p Packet) *Properties {
	switch p := p.(type) {
	case *Connect:
		return &p.Properties
	case *Connack:
		return &p.Properties
	case *Publish:
		return &p.Properties
	case *Puback:
		return &p.Properties
	case *Pubrec:
		return &p.Properties
	case *Pubrel:
		return &p.Properties
	case *Pubcomp:
		return &p.Properties
	case *Subscribe:
		return &p.Properties
	case *Suback:
		return &p.Properties
	case *Unsubscribe:
		return &p.Properties
	case *Unsuback:
		return &p.Properties
	case *Disconnect:
		return &p.Properties
	case *Auth:
		return &p.Properties
	}
	return nil
}

// TestShortForms checks the short forms of v5: an ack with Success and no
// properties is 2 bytes of body [MQTT-3.4.2-1], [MQTT-3.5.2-1],
// [MQTT-3.6.2-1], [MQTT-3.7.2-1]; DISCONNECT and AUTH with Success and no
// properties have a remaining length of 0 [MQTT-3.14.2-1], section 3.15.2.1.
func TestShortForms(t *testing.T) {
	tests := []struct {
		p    Packet
		want string
	}{
		{&Puback{PacketID: 0x0102}, "40 02 01 02"},
		{&Pubrec{PacketID: 0x0102}, "50 02 01 02"},
		{&Pubrel{PacketID: 0x0102}, "62 02 01 02"},
		{&Pubcomp{PacketID: 0x0102}, "70 02 01 02"},
		{&Puback{PacketID: 1, ReasonCode: UnspecifiedError}, "40 03 00 01 80"},                             // code, no property length
		{&Puback{PacketID: 1, Properties: Properties{ReasonString: "r"}}, "40 08 00 01 00 04 1f 00 01 72"}, // Success kept when properties follow
		{&Disconnect{}, "e0 00"},
		{&Disconnect{ReasonCode: DisconnectWithWill}, "e0 01 04"},
		{&Auth{}, "f0 00"},
	}
	for _, tc := range tests {
		if got := mustEncode(t, tc.p, V5); !bytes.Equal(got, hexb(t, tc.want)) {
			t.Errorf("%T %+v: got % x, want %s", tc.p, tc.p, got, tc.want)
		}
	}
	// A v5 ack whose Remaining Length is 3 has a reason code and no
	// property length; 2 means Success.
	for _, in := range []string{"40 02 00 01", "40 03 00 01 00", "40 04 00 01 00 00"} {
		p, err := decodeBytes(hexb(t, in), V5, 0)
		if err != nil || p.(*Puback).ReasonCode != Success || p.(*Puback).PacketID != 1 {
			t.Errorf("decode %s = %+v, %v; want PUBACK 1 Success", in, p, err)
		}
	}
}

// TestSubackV3 checks that v5 failure codes reach a v3 client as 0x80, the
// only failure 3.1.1 has [MQTT-3.9.3-2], and that codes with no v3 meaning
// are refused.
func TestSubackV3(t *testing.T) {
	s := &Suback{PacketID: 7, Properties: Properties{ReasonString: "dropped for v3"}, ReasonCodes: []ReasonCode{
		GrantedQoS0, GrantedQoS1, GrantedQoS2, UnspecifiedError, ImplementationSpecificError, NotAuthorized,
		TopicFilterInvalid, PacketIdentifierInUse, QuotaExceeded, SharedSubsNotSupported, SubIDsNotSupported,
		WildcardSubsNotSupported}}
	want := hexb(t, "90 0e 00 07 00 01 02 80 80 80 80 80 80 80 80 80")
	for _, v := range []byte{V31, V311} {
		if got := mustEncode(t, s, v); !bytes.Equal(got, want) {
			t.Errorf("%s: got % x, want % x", versionName(v), got, want)
		}
	}
	for _, c := range []ReasonCode{0x03, NoMatchingSubscribers, MalformedPacket} {
		if _, err := (&Suback{PacketID: 1, ReasonCodes: []ReasonCode{c}}).Encode(nil, V311); !errors.Is(err, MalformedPacket) {
			t.Errorf("v3 SUBACK with %v: err = %v, want Malformed Packet", c, err)
		}
	}
}

// TestConnackV3 checks the mapping of every v5 CONNACK reason code to a
// 3.1.1 return code (section 3.2.2.3 of 3.1.1: only 0x00-0x05 exist), on
// the wire and back.
func TestConnackV3(t *testing.T) {
	want := map[ReasonCode]byte{
		Success: 0, UnsupportedProtocolVersion: 1, ClientIdentifierNotValid: 2,
		BadUserNameOrPassword: 4, BadAuthenticationMethod: 4, NotAuthorized: 5, Banned: 5,
	}
	back := map[byte]ReasonCode{0: Success, 1: UnsupportedProtocolVersion, 2: ClientIdentifierNotValid,
		3: ServerUnavailable, 4: BadUserNameOrPassword, 5: NotAuthorized}
	for c := 0; c < 256; c++ {
		rc := ReasonCode(c)
		if !rc.ValidFor(CONNACK) {
			continue
		}
		w, ok := want[rc]
		if !ok {
			w = ConnRefusedServer
		}
		if got := ConnackCodeV3(rc); got != w {
			t.Errorf("ConnackCodeV3(%v) = %d, want %d", rc, got, w)
		}
		for _, v := range []byte{V31, V311} {
			b := mustEncode(t, &Connack{ReasonCode: rc}, v)
			if !bytes.Equal(b, []byte{0x20, 2, 0, w}) {
				t.Errorf("%s CONNACK %v = % x, want 20 02 00 %02x", versionName(v), rc, b, w)
			}
			p, err := decodeBytes(b, v, 0)
			if err != nil || p.(*Connack).ReasonCode != back[w] {
				t.Errorf("%s decode % x = %+v, %v; want %v", versionName(v), b, p, err, back[w])
			}
		}
	}
	// v5 properties never reach a v3 client.
	b := mustEncode(t, &Connack{SessionPresent: true, Properties: Properties{ReasonString: "x", ReceiveMaximum: 5}}, V311)
	if !bytes.Equal(b, hexb(t, "20 02 01 00")) {
		t.Errorf("v3 CONNACK with properties = % x, want 20 02 01 00", b)
	}
}

// TestEncodeRefuses checks that the encoder refuses packets that their
// receiver would have to reject.
func TestEncodeRefuses(t *testing.T) {
	tests := []struct {
		name    string
		version byte
		p       Packet
		code    ReasonCode
	}{
		{"publish qos 3", V311, &Publish{QoS: 3, PacketID: 1, Topic: "t"}, MalformedPacket},
		{"publish dup qos 0", V311, &Publish{Dup: true, Topic: "t"}, MalformedPacket},                               // [MQTT-3.3.1-2]
		{"publish packet id 0", V311, &Publish{QoS: 1, Topic: "t"}, ProtocolError},                                  // [MQTT-2.3.1-1]
		{"publish wildcard", V311, &Publish{Topic: "a/+"}, TopicNameInvalid},                                        // [MQTT-3.3.2-2]
		{"publish empty topic v3", V311, &Publish{Topic: "", Properties: Properties{TopicAlias: 1}}, ProtocolError}, // [MQTT-4.7.3-1]
		{"publish empty topic v5", V5, &Publish{Topic: ""}, ProtocolError},
		{"publish bad utf8", V311, &Publish{Topic: "a\xffb"}, MalformedPacket}, // [MQTT-1.5.3-1]
		{"publish null", V5, &Publish{Topic: "a\x00b"}, MalformedPacket},       // [MQTT-1.5.4-2]
		{"publish long topic", V311, &Publish{Topic: string(make([]byte, 65536))}, MalformedPacket},
		{"publish property not allowed", V5, &Publish{Topic: "t", Properties: Properties{SessionExpiry: Uint32(1)}}, MalformedPacket},
		{"publish payload format 2", V5, &Publish{Topic: "t", Properties: Properties{PayloadFormat: 2}}, ProtocolError},
		{"publish user property bad utf8", V5, &Publish{Topic: "t", Properties: Properties{User: []UserProperty{{"k", "\xed\xa0\x80"}}}}, MalformedPacket},
		{"publish response topic wildcard", V5, &Publish{Topic: "t", Properties: Properties{ResponseTopic: "r/#"}}, ProtocolError}, // [MQTT-3.3.2-14]
		{"publish subscription id 0", V5, &Publish{Topic: "t", Properties: Properties{SubscriptionIDs: []uint32{0}}}, ProtocolError},
		{"publish subscription id too big", V5, &Publish{Topic: "t", Properties: Properties{SubscriptionIDs: []uint32{MaxSubscriptionID + 1}}}, ProtocolError},
		{"puback id 0", V311, &Puback{}, ProtocolError},
		{"puback v5 bad code", V5, &Puback{PacketID: 1, ReasonCode: GrantedQoS1}, MalformedPacket},
		{"pubrel v5 bad code", V5, &Pubrel{PacketID: 1, ReasonCode: UnspecifiedError}, MalformedPacket},
		{"puback v5 bad property", V5, &Puback{PacketID: 1, Properties: Properties{TopicAlias: 1}}, MalformedPacket},
		{"connack session present refused", V311, &Connack{SessionPresent: true, ReasonCode: NotAuthorized}, ProtocolError}, // [MQTT-3.2.2-4]
		{"connack v5 session present refused", V5, &Connack{SessionPresent: true, ReasonCode: Banned}, ProtocolError},       // [MQTT-3.2.2-6]
		{"connack v5 bad code", V5, &Connack{ReasonCode: GrantedQoS1}, MalformedPacket},
		{"connack v5 maximum qos 2", V5, &Connack{Properties: Properties{MaximumQoS: Byte(2)}}, ProtocolError},
		{"connect will qos 3", V311, &Connect{ClientID: "c", Will: &Will{Topic: "t", QoS: 3}}, MalformedPacket},
		{"connect password without username", V311, &Connect{ClientID: "c", PasswordFlag: true}, MalformedPacket}, // [MQTT-3.1.2-22]
		{"connect will wildcard", V311, &Connect{ClientID: "c", Will: &Will{Topic: "t/#"}}, TopicNameInvalid},
		{"connect will empty topic", V5, &Connect{ClientID: "c", Will: &Will{}}, TopicNameInvalid},
		{"connect client id bad utf8", V311, &Connect{ClientID: "\xc3\x28"}, MalformedPacket},
		{"connect will delay outside will", V5, &Connect{ClientID: "c", Properties: Properties{WillDelay: 1}}, MalformedPacket},
		{"connect auth data without method", V5, &Connect{ClientID: "c", Properties: Properties{AuthData: []byte{1}}}, ProtocolError},
		{"subscribe empty", V311, &Subscribe{PacketID: 1}, ProtocolError},
		{"subscribe id 0", V311, &Subscribe{Subscriptions: []Subscription{{Filter: "f"}}}, ProtocolError},
		{"subscribe qos 3", V311, &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "f", QoS: 3}}}, MalformedPacket},
		{"subscribe retain handling 3", V5, &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "f", RetainHandling: 3}}}, MalformedPacket},
		{"subscribe no local shared", V5, &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "$share/g/f", NoLocal: true}}}, ProtocolError},
		{"subscribe two ids", V5, &Subscribe{PacketID: 1, Properties: Properties{SubscriptionIDs: []uint32{1, 2}}, Subscriptions: []Subscription{{Filter: "f"}}}, ProtocolError},
		{"unsubscribe empty", V311, &Unsubscribe{PacketID: 1}, ProtocolError},
		{"unsubscribe null", V311, &Unsubscribe{PacketID: 1, Filters: []string{"\x00"}}, MalformedPacket},
		{"suback empty", V5, &Suback{PacketID: 1}, ProtocolError},
		{"unsuback v5 empty", V5, &Unsuback{PacketID: 1}, ProtocolError},
		{"unsuback v5 bad code", V5, &Unsuback{PacketID: 1, ReasonCodes: []ReasonCode{GrantedQoS1}}, MalformedPacket},
		{"disconnect v5 bad code", V5, &Disconnect{ReasonCode: ContinueAuthentication}, MalformedPacket},
		{"auth v3", V311, &Auth{}, MalformedPacket},
		{"auth without method", V5, &Auth{ReasonCode: ContinueAuthentication}, ProtocolError},
		{"auth bad code", V5, &Auth{ReasonCode: UnspecifiedError, Properties: Properties{AuthMethod: "m"}}, MalformedPacket},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte{1, 2, 3}
			out, err := tc.p.Encode(dst, tc.version)
			if got := CodeOf(err); err == nil || got != tc.code {
				t.Fatalf("Encode = % x, %v (code %v); want code %v", out, err, got, tc.code)
			}
			if !bytes.Equal(out, dst) {
				t.Errorf("Encode changed dst on error: % x", out)
			}
		})
	}
}

func TestTypeAndReasonNames(t *testing.T) {
	for ty := Type(0); ty < 16; ty++ {
		p := New(ty)
		if (p == nil) != (ty == 0) {
			t.Errorf("New(%v) = %T", ty, p)
		}
		if p != nil && p.Type() != ty {
			t.Errorf("New(%v).Type() = %v", ty, p.Type())
		}
	}
	if s := Type(16).String(); s != "Type(16)" {
		t.Errorf("Type(16).String() = %q", s)
	}
	if s := PUBLISH.String(); s != "PUBLISH" {
		t.Errorf("PUBLISH.String() = %q", s)
	}
	if s := ReasonCode(0x03).String(); s != "ReasonCode(0x03)" {
		t.Errorf("unknown code String() = %q", s)
	}
	if s := PacketTooLarge.Error(); s != "mqtt: 0x95 Packet too large" {
		t.Errorf("PacketTooLarge.Error() = %q", s)
	}
	err := fmt.Errorf("wrapped: %w", ErrTrailingBytes)
	if !errors.Is(err, MalformedPacket) || CodeOf(err) != MalformedPacket {
		t.Errorf("errors.Is/CodeOf through wrapping failed: %v", err)
	}
	if CodeOf(nil) != Success || CodeOf(errors.New("x")) != UnspecifiedError || CodeOf(QuotaExceeded) != QuotaExceeded {
		t.Error("CodeOf of nil, a plain error or a bare reason code is wrong")
	}
	if !ValidString("héllo") || ValidString("a\x00") || ValidString("\xed\xa0\x80") || ValidString(string(make([]byte, 65536))) {
		t.Error("ValidString is wrong")
	}
	if !UnspecifiedError.IsError() || GrantedQoS2.IsError() {
		t.Error("IsError is wrong")
	}
}
