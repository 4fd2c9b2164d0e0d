package packets

import (
	"bytes"
	"testing"
)

// benchPublish returns the PUBLISH of the hot path: QoS 1, a 25-byte topic,
// a 64-byte payload and, for v5, a message expiry and one user property.
func benchPublish(version byte) *Publish {
	p := &Publish{QoS: 1, PacketID: 4242, Topic: "sensors/floor-3/room-12/t", Payload: bytes.Repeat([]byte{'x'}, 64)}
	if version == V5 {
		p.Properties = Properties{MessageExpiry: 300, User: []UserProperty{{"trace", "0af7651916cd43dd"}}}
	}
	return p
}

var benchVersions = []struct {
	name    string
	version byte
}{{"v3.1.1", V311}, {"v5", V5}}

// BenchmarkPublishEncode encodes into a reused buffer, as a connection's
// writer does: it must not allocate.
func BenchmarkPublishEncode(b *testing.B) {
	for _, bv := range benchVersions {
		b.Run(bv.name, func(b *testing.B) {
			p := benchPublish(bv.version)
			buf, err := p.Encode(nil, bv.version)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				buf, err = p.Encode(buf[:0], bv.version)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPublishDecode decodes from a buffer into a reused Publish, as a
// connection's reader does: it must not allocate.
func BenchmarkPublishDecode(b *testing.B) {
	for _, bv := range benchVersions {
		b.Run(bv.name, func(b *testing.B) {
			buf := mustEncode(b, benchPublish(bv.version), bv.version)
			var p Publish
			decodeInto(b, &p, buf, bv.version) // first decode sizes the reused slices
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				decodeInto(b, &p, buf, bv.version)
			}
		})
	}
}

func decodeInto(b *testing.B, p Packet, buf []byte, version byte) {
	h, n, err := DecodeFixedHeader(buf, 0)
	if err == nil {
		err = p.Decode(h, buf[n:], version)
	}
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkConnectDecode decodes a CONNECT with a will, user name and
// password (and, for v5, a few properties) into a reused Connect.
func BenchmarkConnectDecode(b *testing.B) {
	for _, bv := range benchVersions {
		b.Run(bv.name, func(b *testing.B) {
			c := &Connect{ProtocolVersion: bv.version, CleanStart: true, KeepAlive: 60, ClientID: "device-0001",
				Will:         &Will{Topic: "devices/0001/status", Payload: []byte("offline"), QoS: 1, Retain: true},
				UsernameFlag: true, Username: "device-0001", PasswordFlag: true, Password: []byte("s3cr3t-t0k3n")}
			if bv.version == V5 {
				c.Properties = Properties{SessionExpiry: Uint32(3600), ReceiveMaximum: 100, TopicAliasMaximum: 10}
				c.Will.Properties = Properties{WillDelay: 5}
			}
			buf := mustEncode(b, c, bv.version)
			var p Connect
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				decodeInto(b, &p, buf, bv.version)
			}
		})
	}
}

// BenchmarkSubscribeDecode decodes a SUBSCRIBE of three filters into a
// reused Subscribe.
func BenchmarkSubscribeDecode(b *testing.B) {
	for _, bv := range benchVersions {
		b.Run(bv.name, func(b *testing.B) {
			s := &Subscribe{PacketID: 7, Subscriptions: []Subscription{
				{Filter: "sensors/+/room-12/t", QoS: 1}, {Filter: "alerts/#", QoS: 2}, {Filter: "$SYS/broker/load", QoS: 0}}}
			if bv.version == V5 {
				s.Properties.SubscriptionIDs = []uint32{12}
				s.Subscriptions[0].NoLocal = true
				s.Subscriptions[1].RetainHandling = 1
			}
			buf := mustEncode(b, s, bv.version)
			var p Subscribe
			decodeInto(b, &p, buf, bv.version)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				decodeInto(b, &p, buf, bv.version)
			}
		})
	}
}

// BenchmarkReadPacket reads the hot-path PUBLISH from a stream: a new body
// buffer and packet struct each time, since the packet outlives the call.
func BenchmarkReadPacket(b *testing.B) {
	for _, bv := range benchVersions {
		b.Run(bv.name, func(b *testing.B) {
			buf := mustEncode(b, benchPublish(bv.version), bv.version)
			r := bytes.NewReader(buf)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				r.Reset(buf)
				if _, err := ReadPacket(r, bv.version, 1<<20); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestHotPathAllocs pins the zero-allocation promise of the benchmarks, so
// a regression fails go test and not only a benchmark run.
func TestHotPathAllocs(t *testing.T) {
	for _, bv := range benchVersions {
		p := benchPublish(bv.version)
		buf := mustEncode(t, p, bv.version)
		out := make([]byte, 0, len(buf))
		if n := testing.AllocsPerRun(100, func() { out, _ = p.Encode(out[:0], bv.version) }); n != 0 {
			t.Errorf("%s: Publish.Encode into a reused buffer: %v allocs", bv.name, n)
		}
		var q Publish
		h, hn, _ := DecodeFixedHeader(buf, 0)
		_ = q.Decode(h, buf[hn:], bv.version)
		if n := testing.AllocsPerRun(100, func() { _ = q.Decode(h, buf[hn:], bv.version) }); n != 0 {
			t.Errorf("%s: Publish.Decode into a reused struct: %v allocs", bv.name, n)
		}
		ack := &Puback{PacketID: 1}
		if n := testing.AllocsPerRun(100, func() { out, _ = ack.Encode(out[:0], bv.version) }); n != 0 {
			t.Errorf("%s: Puback.Encode: %v allocs", bv.name, n)
		}
	}
}
