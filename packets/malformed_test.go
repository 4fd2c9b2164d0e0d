package packets

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// mustHex parses hex with optional white space.
func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// pk builds a packet from its first byte and its body in hex, with the
// remaining length computed.
func pk(first byte, body string) []byte {
	b := mustHex(body)
	return append(appendVBI([]byte{first}, len(b)), b...)
}

// conn4 and conn5 build CONNECT bodies: protocol name "MQTT", level 4 or 5,
// the flags byte, keep alive 60, then rest (v5: properties first).
func conn4(flags byte, rest string) string {
	return fmt.Sprintf("00 04 4d 51 54 54 04 %02x 00 3c %s", flags, rest)
}

func conn5(flags byte, rest string) string {
	return fmt.Sprintf("00 04 4d 51 54 54 05 %02x 00 3c %s", flags, rest)
}

type malformedCase struct {
	name    string
	version byte
	in      []byte
	code    ReasonCode
}

func malformedCases() []malformedCase {
	const (
		mal   = MalformedPacket
		proto = ProtocolError
	)
	return []malformedCase{
		// Reserved fixed header flags, each type with fixed flags:
		// [MQTT-2.2.2-1], [MQTT-2.2.2-2] (3.1.1); [MQTT-2.1.3-1] (5.0).
		{"connect flags", V311, pk(0x11, conn4(0x02, "00 01 63")), mal},
		{"connack flags", V311, pk(0x28, "00 00"), mal},
		{"puback flags", V311, pk(0x42, "00 01"), mal},
		{"pubrec flags", V5, pk(0x51, "00 01"), mal},
		{"pubrel flags 0", V311, pk(0x60, "00 01"), mal}, // [MQTT-3.6.1-1]
		{"pubrel flags 3", V5, pk(0x63, "00 01"), mal},   // [MQTT-3.6.1-1]
		{"pubcomp flags", V311, pk(0x78, "00 01"), mal},
		{"subscribe flags 0", V311, pk(0x80, "00 01 00 01 61 00"), mal},    // [MQTT-3.8.1-1]
		{"subscribe flags 0xA", V5, pk(0x8A, "00 01 00 00 01 61 00"), mal}, // [MQTT-3.8.1-1]
		{"suback flags", V311, pk(0x92, "00 01 00"), mal},
		{"unsubscribe flags 0", V311, pk(0xA0, "00 01 00 01 61"), mal}, // [MQTT-3.10.1-1]
		{"unsuback flags", V5, pk(0xB1, "00 01 00 00"), mal},
		{"pingreq flags", V311, mustHex("c1 00"), mal},
		{"pingresp flags", V311, mustHex("d2 00"), mal},
		{"disconnect flags", V311, mustHex("e4 00"), mal},  // [MQTT-3.14.1-1] (3.1.1)
		{"disconnect flags v5", V5, mustHex("e8 00"), mal}, // [MQTT-3.14.1-1]
		{"auth flags", V5, pk(0xF1, "18 00"), mal},         // [MQTT-3.15.1-1]

		// Packet types: 0 is reserved in both versions (3.1.1 section
		// 2.2.1, 5.0 section 2.1.2); 15 is reserved before 5.0.
		{"reserved type 0", V311, mustHex("00 00"), mal},
		{"reserved type 0 with body", V5, pk(0x00, "00 01"), mal},
		{"auth in v3.1.1", V311, mustHex("f0 00"), mal},
		{"auth in v3.1", V31, pk(0xF0, "18 00"), mal},

		// PUBLISH fixed header and topic.
		{"publish qos 3", V311, pk(0x36, "00 01 61 00 01"), mal},                           // [MQTT-3.3.1-4]
		{"publish qos 3 v5", V5, pk(0x37, "00 01 61 00 01 00"), mal},                       // [MQTT-3.3.1-4]
		{"publish dup on qos 0", V311, pk(0x38, "00 01 61"), mal},                          // [MQTT-3.3.1-2]
		{"publish wildcard +", V311, pk(0x30, "00 03 61 2f 2b"), TopicNameInvalid},         // [MQTT-3.3.2-2]
		{"publish wildcard #", V5, pk(0x30, "00 03 61 2f 23 00"), TopicNameInvalid},        // [MQTT-3.3.2-2]
		{"publish empty topic", V311, pk(0x30, "00 00"), proto},                            // [MQTT-4.7.3-1]
		{"publish empty topic without alias", V5, pk(0x30, "00 00 00"), proto},             // [MQTT-4.7.3-1], section 3.3.2.3.4
		{"publish topic alias 0", V5, pk(0x30, "00 01 61 03 23 00 00"), TopicAliasInvalid}, // [MQTT-3.3.2-8]

		// Packet identifier 0: [MQTT-2.3.1-1], [MQTT-2.3.1-6],
		// [MQTT-2.3.1-7] (3.1.1); [MQTT-2.2.1-3], [MQTT-2.2.1-5] (5.0).
		{"publish packet id 0", V311, pk(0x32, "00 01 61 00 00"), proto},
		{"publish packet id 0 v5", V5, pk(0x34, "00 01 61 00 00 00"), proto},
		{"puback packet id 0", V311, pk(0x40, "00 00"), proto},
		{"pubrel packet id 0 v5", V5, pk(0x62, "00 00"), proto},
		{"subscribe packet id 0", V311, pk(0x82, "00 00 00 01 61 00"), proto},
		{"unsubscribe packet id 0", V311, pk(0xA2, "00 00 00 01 61"), proto},
		{"suback packet id 0", V311, pk(0x90, "00 00 00"), proto},
		{"unsuback packet id 0 v5", V5, pk(0xB0, "00 00 00 00"), proto},

		// Variable Byte Integers: at most four bytes (3.1.1 section 2.2.3,
		// 5.0 section 1.5.5), minimally encoded [MQTT-1.5.5-1].
		{"remaining length of 5 bytes", V311, mustHex("30 ff ff ff ff 7f"), mal},
		{"remaining length of 5 bytes, zero", V5, mustHex("c0 80 80 80 80 00"), mal},
		{"remaining length not minimal", V311, mustHex("c0 80 00"), mal},
		{"remaining length not minimal, 4 bytes", V5, mustHex("30 80 80 80 00"), mal},
		{"property length not minimal", V5, pk(0x30, "00 01 61 80 00"), mal},

		// Truncated bodies and trailing bytes.
		{"body shorter than remaining length", V311, mustHex("40 02 00"), mal},
		{"puback truncated", V311, pk(0x40, "00"), mal},
		{"connect protocol name truncated", V311, pk(0x10, "00 04 4d 51 54"), mal},
		{"connect client id truncated", V311, pk(0x10, "00 04 4d 51 54 54 04 02 00 3c 00 05 63"), mal},
		{"connect will missing", V311, pk(0x10, conn4(0x06, "00 01 63")), mal},      // [MQTT-3.1.2-9]
		{"connect user name missing", V311, pk(0x10, conn4(0x82, "00 01 63")), mal}, // [MQTT-3.1.2-19]
		{"subscribe options missing", V311, pk(0x82, "00 01 00 01 61"), mal},
		{"publish topic truncated", V311, pk(0x30, "00 05 61 62"), mal},
		{"publish packet id truncated", V311, pk(0x32, "00 01 61 00"), mal},
		{"property value beyond property length", V5, pk(0x40, "00 01 00 03 1f 00 05"), mal},
		{"four byte property truncated", V5, pk(0x30, "00 01 61 03 02 00 00"), mal},
		{"property length beyond body", V5, pk(0x30, "00 01 61 05 01 01"), mal},
		{"puback trailing byte", V311, pk(0x40, "00 01 00"), mal},
		{"puback v5 trailing byte", V5, pk(0x40, "00 01 00 00 ff"), mal},
		{"connect trailing byte", V311, pk(0x10, conn4(0x02, "00 01 63 00")), mal},
		{"connack trailing byte", V311, pk(0x20, "00 00 00"), mal},
		{"unsuback v3 with codes", V311, pk(0xB0, "00 01 00"), mal},
		{"disconnect v5 trailing byte", V5, pk(0xE0, "00 00 ff"), mal},
		{"pingreq with a body", V311, pk(0xC0, "00"), mal},
		{"pingresp with a body", V5, pk(0xD0, "00"), mal},
		{"disconnect v3 with a body", V311, pk(0xE0, "00"), mal},

		// UTF-8 Encoded Strings: [MQTT-1.5.3-1], [MQTT-1.5.3-2] (3.1.1);
		// [MQTT-1.5.4-1], [MQTT-1.5.4-2], [MQTT-1.5.7-1] (5.0).
		{"topic ill-formed utf-8", V311, pk(0x30, "00 02 c3 28"), mal},
		{"topic with U+0000", V5, pk(0x30, "00 02 61 00 00"), mal},
		{"client id with surrogate", V311, pk(0x10, conn4(0x02, "00 03 ed a0 80")), mal},
		{"filter with surrogate", V5, pk(0x82, "00 01 00 00 03 ed a0 80 00"), mal},
		{"user name overlong U+0000", V311, pk(0x10, conn4(0x82, "00 01 63 00 02 c0 80")), mal},
		{"will topic with U+0000", V311, pk(0x10, conn4(0x06, "00 01 63 00 01 00 00 01 78")), mal},
		{"user property ill-formed", V5, pk(0x40, "00 01 00 07 26 00 01 ff 00 01 61"), mal},
		{"content type ill-formed", V5, pk(0x30, "00 01 61 04 03 00 01 ff"), mal},

		// CONNECT.
		{"connect reserved flag", V311, pk(0x10, conn4(0x03, "00 01 63")), mal},                                  // [MQTT-3.1.2-3]
		{"connect reserved flag v5", V5, pk(0x10, conn5(0x01, "00 00 01 63")), mal},                              // [MQTT-3.1.2-3]
		{"will qos 3", V311, pk(0x10, conn4(0x1e, "00 01 63 00 01 77 00 01 78")), mal},                           // [MQTT-3.1.2-14]
		{"will qos 3 v5", V5, pk(0x10, conn5(0x1e, "00 00 01 63 00 00 01 77 00 01 78")), mal},                    // [MQTT-3.1.2-12]
		{"will qos without will", V311, pk(0x10, conn4(0x0a, "00 01 63")), mal},                                  // [MQTT-3.1.2-13]
		{"will retain without will", V311, pk(0x10, conn4(0x22, "00 01 63")), mal},                               // [MQTT-3.1.2-15]
		{"will qos without will v5", V5, pk(0x10, conn5(0x0a, "00 00 01 63")), mal},                              // [MQTT-3.1.2-11]
		{"password without user name", V311, pk(0x10, conn4(0x42, "00 01 63 00 01 70")), mal},                    // [MQTT-3.1.2-22]
		{"unknown protocol name", V311, pk(0x10, "00 04 4d 51 54 58 04 02 00 3c 00 01 63"), proto},               // [MQTT-3.1.2-1]
		{"protocol level 6", V5, pk(0x10, "00 04 4d 51 54 54 06 02 00 3c 00 01 63"), UnsupportedProtocolVersion}, // [MQTT-3.1.2-2]
		{"MQTT with level 3", V311, pk(0x10, "00 04 4d 51 54 54 03 02 00 3c 00 01 63"), UnsupportedProtocolVersion},
		{"MQIsdp with level 4", V311, pk(0x10, "00 06 4d 51 49 73 64 70 04 02 00 3c 00 01 63"), UnsupportedProtocolVersion},
		{"will topic with wildcard", V311, pk(0x10, conn4(0x06, "00 01 63 00 01 23 00 01 78")), TopicNameInvalid}, // [MQTT-4.7.1-1] (3.1.1)
		{"will topic empty", V5, pk(0x10, conn5(0x06, "00 00 01 63 00 00 00 00 01 78")), TopicNameInvalid},        // [MQTT-4.7.3-1]
		{"authentication data without method", V5, pk(0x10, conn5(0x02, "04 16 00 01 01 00 01 63")), proto},       // section 3.1.2.11.10

		// Properties (5.0 section 2.2.2.2: an identifier not valid for
		// the packet is Malformed; each property's section makes a second
		// copy or a value out of range a Protocol Error).
		{"duplicate session expiry", V5, pk(0x10, conn5(0x02, "0a 11 00 00 00 01 11 00 00 00 02 00 01 63")), proto},
		{"duplicate reason string", V5, pk(0x40, "00 01 00 08 1f 00 01 61 1f 00 01 62"), proto}, // [MQTT-3.4.2-2], section 3.4.2.2.2
		{"duplicate topic alias", V5, pk(0x30, "00 01 61 06 23 00 01 23 00 02"), proto},
		{"session expiry on publish", V5, pk(0x30, "00 01 61 05 11 00 00 00 01"), mal},
		{"will delay outside will properties", V5, pk(0x10, conn5(0x02, "05 18 00 00 00 01 00 01 63")), mal},
		{"subscription id on suback", V5, pk(0x90, "00 01 02 0b 01 00"), mal},
		{"unknown property 0x2b", V5, pk(0x30, "00 01 61 02 2b 00"), mal},
		{"property identifier 0", V5, pk(0x30, "00 01 61 02 00 00"), mal},
		{"property identifier 128", V5, pk(0x30, "00 01 61 03 80 01 00"), mal},
		{"receive maximum 0", V5, pk(0x10, conn5(0x02, "03 21 00 00 00 01 63")), proto},           // section 3.1.2.11.3
		{"receive maximum 0 in connack", V5, pk(0x20, "00 00 03 21 00 00"), proto},                // section 3.2.2.3.3
		{"maximum packet size 0", V5, pk(0x10, conn5(0x02, "05 27 00 00 00 00 00 01 63")), proto}, // section 3.1.2.11.4
		{"subscription id 0", V5, pk(0x82, "00 01 02 0b 00 00 01 61 00"), proto},                  // section 3.8.2.1.2
		{"subscription id 0 on publish", V5, pk(0x30, "00 01 61 02 0b 00"), proto},                // section 3.3.2.3.8
		{"two subscription ids on subscribe", V5, pk(0x82, "00 01 04 0b 01 0b 02 00 01 61 00"), proto},
		{"payload format 2", V5, pk(0x30, "00 01 61 02 01 02"), proto},                            // section 3.3.2.3.2
		{"request problem information 2", V5, pk(0x10, conn5(0x02, "02 17 02 00 01 63")), proto},  // section 3.1.2.11.7
		{"request response information 2", V5, pk(0x10, conn5(0x02, "02 19 02 00 01 63")), proto}, // section 3.1.2.11.6
		{"maximum qos 2 in connack", V5, pk(0x20, "00 00 02 24 02"), proto},                       // section 3.2.2.3.4
		{"retain available 2", V5, pk(0x20, "00 00 02 25 02"), proto},                             // section 3.2.2.3.5
		{"response topic with wildcard", V5, pk(0x30, "00 01 61 06 08 00 03 61 2f 2b"), proto},    // [MQTT-3.3.2-14]

		// SUBSCRIBE and UNSUBSCRIBE payloads.
		{"empty subscribe", V311, pk(0x82, "00 01"), proto},                                                         // [MQTT-3.8.3-3] (3.1.1)
		{"empty subscribe v5", V5, pk(0x82, "00 01 00"), proto},                                                     // [MQTT-3.8.3-2]
		{"empty unsubscribe", V311, pk(0xA2, "00 01"), proto},                                                       // [MQTT-3.10.3-2]
		{"empty unsubscribe v5", V5, pk(0xA2, "00 01 00"), proto},                                                   // [MQTT-3.10.3-2]
		{"options bit 6", V5, pk(0x82, "00 01 00 00 01 61 40"), mal},                                                // [MQTT-3.8.3-5]
		{"options bit 7", V5, pk(0x82, "00 01 00 00 01 61 81"), mal},                                                // [MQTT-3.8.3-5]
		{"v3 options bit 2", V311, pk(0x82, "00 01 00 01 61 04"), mal},                                              // [MQTT-3-8.3-4]
		{"v3 requested qos 3", V311, pk(0x82, "00 01 00 01 61 03"), mal},                                            // [MQTT-3-8.3-4]
		{"v5 maximum qos 3", V5, pk(0x82, "00 01 00 00 01 61 03"), proto},                                           // section 3.8.3.1
		{"retain handling 3", V5, pk(0x82, "00 01 00 00 01 61 30"), proto},                                          // section 3.8.3.1
		{"no local on shared subscription", V5, pk(0x82, "00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 61 04"), proto}, // [MQTT-3.8.3-4]

		// Reason codes not allowed for the packet type.
		{"puback code 0x01", V5, pk(0x40, "00 01 01"), mal},       // [MQTT-3.4.2-1]
		{"pubrec code 0x04", V5, pk(0x50, "00 01 04"), mal},       // [MQTT-3.5.2-1]
		{"pubrel code 0x10", V5, pk(0x62, "00 01 10"), mal},       // [MQTT-3.6.2-1]
		{"pubcomp code 0x80", V5, pk(0x70, "00 01 80"), mal},      // [MQTT-3.7.2-1]
		{"suback code 0x03", V5, pk(0x90, "00 01 00 03"), mal},    // [MQTT-3.9.3-2]
		{"v3 suback code 0x03", V311, pk(0x90, "00 01 03"), mal},  // [MQTT-3.9.3-2] (3.1.1)
		{"v3 suback code 0x87", V311, pk(0x90, "00 01 87"), mal},  // [MQTT-3.9.3-2] (3.1.1)
		{"unsuback code 0x01", V5, pk(0xB0, "00 01 00 01"), mal},  // [MQTT-3.11.3-2]
		{"disconnect code 0x18", V5, pk(0xE0, "18"), mal},         // [MQTT-3.14.2-1]
		{"auth code 0x80", V5, pk(0xF0, "80 00"), mal},            // [MQTT-3.15.2-1]
		{"connack code 0x10", V5, pk(0x20, "00 10 00"), mal},      // section 3.2.2.2
		{"v3 connack code 6", V311, pk(0x20, "00 06"), mal},       // 3.1.1 section 3.2.2.3
		{"suback without codes", V5, pk(0x90, "00 01 00"), proto}, // [MQTT-3.8.4-6]
		{"unsuback v5 without codes", V5, pk(0xB0, "00 01 00"), proto},

		// CONNACK flags.
		{"connack reserved flags", V5, pk(0x20, "02 00 00"), mal},               // [MQTT-3.2.2-1]
		{"connack session present refused", V311, pk(0x20, "01 05"), proto},     // [MQTT-3.2.2-4] (3.1.1)
		{"connack session present refused v5", V5, pk(0x20, "01 87 00"), proto}, // [MQTT-3.2.2-6]

		// AUTH must name its method (section 3.15.2.2.2).
		{"auth without method", V5, pk(0xF0, "18 00"), proto},
		{"auth success without method", V5, pk(0xF0, "00"), proto},
	}
}

func TestMalformed(t *testing.T) {
	cases := malformedCases()
	if len(cases) < 60 {
		t.Fatalf("only %d malformed cases", len(cases))
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			p, err := decodeBytes(tc.in, tc.version, 0)
			if err == nil {
				t.Fatalf("decode(% x) = %#v, want error %v", tc.in, p, tc.code)
			}
			if got := CodeOf(err); got != tc.code {
				t.Fatalf("decode(% x): %v, code %v; want %v", tc.in, err, got, tc.code)
			}
			if !errors.Is(err, tc.code) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.code)
			}
			// ReadPacket agrees whenever the bytes hold a whole packet.
			if h, n, herr := DecodeFixedHeader(tc.in, 0); herr == nil && n+h.Remaining == len(tc.in) || herr != nil && herr != ErrIncomplete {
				for _, r := range []io.Reader{bytes.NewReader(tc.in), onlyReader{bytes.NewReader(tc.in)}} {
					if _, err := ReadPacket(r, tc.version, 0); CodeOf(err) != tc.code {
						t.Errorf("ReadPacket(%T): %v, want code %v", r, err, tc.code)
					}
				}
			}
		})
	}
}

// TestUnsupportedVersionKeepsLevel checks that a CONNECT with an unsupported
// protocol level still reports the level, so a server can answer 0x01 to a
// 3.x client and 0x84 to a v5 one ([MQTT-3.1.2-2]).
func TestUnsupportedVersionKeepsLevel(t *testing.T) {
	p, err := decodeBytes(pk(0x10, "00 04 4d 51 54 54 06 02 00 3c 00 01 63"), V5, 0)
	c, ok := p.(*Connect)
	if CodeOf(err) != UnsupportedProtocolVersion || !ok || c.ProtocolVersion != 6 {
		t.Fatalf("got %#v, %v", p, err)
	}
}

// TestBridgeBitOnlyForV3 checks that the bridge bit is accepted on 3.1 and
// 3.1.1 levels only: 0x85 (v5 with the bit) stays an unsupported level
// [MQTT-3.1.2-2], and the bit is never encoded for v5.
func TestBridgeBitOnlyForV3(t *testing.T) {
	p, err := decodeBytes(pk(0x10, "00 04 4d 51 54 54 85 02 00 3c 00 00 01 63"), V5, 0)
	if c, ok := p.(*Connect); CodeOf(err) != UnsupportedProtocolVersion || !ok || c.Bridge {
		t.Fatalf("level 0x85: got %#v, %v", p, err)
	}
	b := mustEncode(t, &Connect{ProtocolVersion: V5, ClientID: "c", Bridge: true}, V5)
	if b[8] != V5 {
		t.Fatalf("v5 CONNECT with Bridge encodes level 0x%02x", b[8])
	}
}

// limitedReader serves data and fails the test if anything reads past it.
type limitedReader struct {
	t    *testing.T
	data []byte
}

var errReadPastHeader = errors.New("read past the fixed header")

func (r *limitedReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		r.t.Error("reader asked for more than the fixed header")
		return 0, errReadPastHeader
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func (r *limitedReader) ReadByte() (byte, error) {
	var b [1]byte
	_, err := r.Read(b[:])
	return b[0], err
}

// TestPacketTooLarge checks that a packet larger than the maximum packet
// size is refused with 0x95 from its fixed header alone ([MQTT-3.2.2-15],
// [MQTT-3.1.2-24]): nothing after the header is read or allocated.
func TestPacketTooLarge(t *testing.T) {
	tests := []struct {
		hdr      string
		maxSize  int
		tooLarge bool
	}{
		{"30 7f", 129, false}, // 2 + 127 bytes
		{"30 7f", 128, true},
		{"30 80 01", 131, false},
		{"30 80 01", 130, true},
		{"c0 00", 2, false},
		{"c0 00", 1, true},
		{"30 ff ff ff 7f", MaxPacketSize, false},
		{"30 ff ff ff 7f", MaxPacketSize - 1, true},
		{"30 ff ff ff 7f", 0, false}, // no limit
		{"82 80 80 01", 1 << 10, true},
	}
	for _, tc := range tests {
		hdr := hexb(t, tc.hdr)
		want := Success
		if tc.tooLarge {
			want = PacketTooLarge
		}
		h, n, err := DecodeFixedHeader(hdr, tc.maxSize)
		if CodeOf(err) != want || n != len(hdr) {
			t.Errorf("DecodeFixedHeader(%s, %d) = %+v, %d, %v; want %v", tc.hdr, tc.maxSize, h, n, err, want)
		}
		if !tc.tooLarge {
			continue
		}
		r := &limitedReader{t: t, data: hdr}
		if h, err := ReadFixedHeader(r, tc.maxSize); CodeOf(err) != PacketTooLarge {
			t.Errorf("ReadFixedHeader(%s, %d) = %+v, %v; want Packet too large", tc.hdr, tc.maxSize, h, err)
		}
		r = &limitedReader{t: t, data: hdr}
		if _, err := ReadPacket(r, V5, tc.maxSize); CodeOf(err) != PacketTooLarge {
			t.Errorf("ReadPacket(%s, %d): %v; want Packet too large", tc.hdr, tc.maxSize, err)
		}
		if _, err := ReadPacket(onlyReader{bytes.NewReader(hdr)}, V5, tc.maxSize); CodeOf(err) != PacketTooLarge {
			t.Errorf("ReadPacket(Reader, %s, %d): %v; want Packet too large", tc.hdr, tc.maxSize, err)
		}
	}
}

// TestReadErrors checks the io errors of the readers.
func TestReadErrors(t *testing.T) {
	if _, err := ReadPacket(bytes.NewReader(nil), V5, 0); err != io.EOF {
		t.Errorf("empty stream: %v, want io.EOF", err)
	}
	for _, in := range []string{"30", "30 80", "30 05 00 01", "c0"} {
		if _, err := ReadPacket(bytes.NewReader(hexb(t, in)), V5, 0); err != io.ErrUnexpectedEOF {
			t.Errorf("ReadPacket(%s): %v, want io.ErrUnexpectedEOF", in, err)
		}
	}
	for _, in := range []string{"", "30", "30 80", "30 ff ff", "30 80 80 80"} {
		if _, _, err := DecodeFixedHeader(hexb(t, in), 0); err != ErrIncomplete {
			t.Errorf("DecodeFixedHeader(%s): %v, want ErrIncomplete", in, err)
		}
	}
	// A stalled peer that announces 200 MB gets only what it sent
	// allocated, and an unexpected EOF.
	if _, err := ReadPacket(bytes.NewReader(hexb(t, "30 80 80 80 60 00 01 61")), V311, 0); err != io.ErrUnexpectedEOF {
		t.Errorf("announced 200 MB, sent 3 bytes: %v", err)
	}
	// Two packets back to back come out one at a time.
	r := bytes.NewReader(hexb(t, "c0 00 40 02 00 07 d0 00"))
	for _, want := range []Type{PINGREQ, PUBACK, PINGRESP} {
		p, err := ReadPacket(r, V311, 0)
		if err != nil || p.Type() != want {
			t.Fatalf("ReadPacket = %v, %v; want %v", p, err, want)
		}
	}
}

// TestReadBodyLarge reads bodies around and above the first read chunk.
func TestReadBodyLarge(t *testing.T) {
	for _, n := range []int{0, 1, readChunk - 1, readChunk, readChunk + 1, 3*readChunk + 17} {
		src := bytes.Repeat([]byte{7}, n)
		got, err := readBody(onlyReader{bytes.NewReader(src)}, n)
		if err != nil || !bytes.Equal(got, src) {
			t.Errorf("readBody(%d) = %d bytes, %v", n, len(got), err)
		}
		if n > 0 {
			if _, err := readBody(bytes.NewReader(src[:n-1]), n); err != io.ErrUnexpectedEOF {
				t.Errorf("readBody(%d) of %d bytes: %v", n, n-1, err)
			}
		}
	}
}

// TestPrefixesNeverPanic decodes every prefix of every valid packet, with
// every version, through every entry point.
func TestPrefixesNeverPanic(t *testing.T) {
	var valid [][]byte
	for _, f := range fixtures() {
		valid = append(valid, hexb(t, f.hex))
	}
	for _, tc := range roundTripCases() {
		valid = append(valid, mustEncode(t, tc.packet, tc.version))
	}
	for _, b := range valid {
		for i := 0; i <= len(b); i++ {
			prefix := b[:i]
			for _, v := range []byte{V31, V311, V5} {
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Fatalf("panic on % x (v%d): %v", prefix, v, r)
						}
					}()
					_, _ = ReadPacket(bytes.NewReader(prefix), v, 0)
					h, n, err := DecodeFixedHeader(prefix, 0)
					if err != nil {
						return
					}
					_, _ = Decode(h, prefix[n:], v)
					// Decode the truncated body as if it were whole.
					h.Remaining = len(prefix) - n
					_, _ = Decode(h, prefix[n:], v)
					if p := New(h.Type); p != nil {
						_ = p.Decode(h, prefix[n:], v)
					}
				}()
			}
		}
	}
}
