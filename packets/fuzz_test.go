package packets

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The seed corpora under testdata/fuzz are generated from the fixtures and
// round-trip packets by TestWriteFuzzCorpus:
//
//	go test -run=TestWriteFuzzCorpus -gencorpus ./packets/
//
// Files that the fuzzers found (crashers, property failures) live next to
// them under their hash names and stay as regression cases.
var genCorpus = flag.Bool("gencorpus", false, "write the fuzz seed corpora under testdata/fuzz")

var versions = [...]byte{V31, V311, V5}

// validPackets returns every valid packet of the tests, encoded, with the
// version it is valid in.
func validPackets(t testing.TB) (bufs [][]byte, vers []byte) {
	for _, f := range fixtures() {
		bufs, vers = append(bufs, hexb(t, f.hex)), append(vers, f.version)
	}
	for _, tc := range roundTripCases() {
		bufs, vers = append(bufs, mustEncode(t, tc.packet, tc.version)), append(vers, tc.version)
	}
	return bufs, vers
}

// FuzzDecode checks, for each protocol version, that a packet Decode
// accepts can be encoded again and that the encoding decodes to an equal
// packet and re-encodes to the same bytes: decode ∘ encode is the identity
// on everything the decoder accepts, and the encoder is canonical.
func FuzzDecode(f *testing.F) {
	bufs, _ := validPackets(f)
	for _, b := range bufs {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := DecodeFixedHeader(data, 0)
		if err != nil || len(data)-n < h.Remaining {
			return
		}
		body := data[n : n+h.Remaining]
		for _, v := range versions {
			p, err := Decode(h, body, v)
			if err != nil {
				if CodeOf(err) < 0x80 {
					t.Fatalf("v%d: error with a success code: %v", v, err)
				}
				continue
			}
			enc, err := p.Encode(nil, v)
			if err != nil {
				t.Fatalf("v%d: decoded %#v from % x but cannot encode it: %v", v, p, data[:n+h.Remaining], err)
			}
			p2, err := decodeBytes(enc, v, 0)
			if err != nil {
				t.Fatalf("v%d: re-encoded % x as % x, which does not decode: %v", v, data[:n+h.Remaining], enc, err)
			}
			if !equalPackets(p, p2) {
				t.Fatalf("v%d: round trip changed the packet:\n in  %#v\n out %#v", v, normalize(p), normalize(p2))
			}
			if enc2 := mustEncode(t, p2, v); !bytes.Equal(enc, enc2) {
				t.Fatalf("v%d: encoding not stable:\n % x\n % x", v, enc, enc2)
			}
		}
	})
}

// FuzzReadPacket checks that ReadPacket, through both its io.ByteReader and
// its plain io.Reader paths, agrees with DecodeFixedHeader + Decode on the
// same bytes and limit.
func FuzzReadPacket(f *testing.F) {
	bufs, _ := validPackets(f)
	for i, b := range bufs {
		f.Add(b, []int{0, len(b), len(b) - 1}[i%3])
	}
	f.Fuzz(func(t *testing.T, data []byte, maxSize int) {
		for _, v := range versions {
			var want Packet
			wantErr := ErrIncomplete // stands for "the stream ends inside the packet"
			h, n, err := DecodeFixedHeader(data, maxSize)
			switch {
			case err == ErrIncomplete || err == nil && len(data)-n < h.Remaining:
			case err != nil:
				wantErr = err
			default:
				want, wantErr = Decode(h, data[n:n+h.Remaining], v)
			}
			for _, r := range []interface{ Read([]byte) (int, error) }{bytes.NewReader(data), onlyReader{bytes.NewReader(data)}} {
				got, err := ReadPacket(r, v, maxSize)
				switch {
				case wantErr == ErrIncomplete:
					if err == nil {
						t.Fatalf("v%d %T: ReadPacket read a packet from % x, which is incomplete", v, r, data)
					}
				case CodeOf(err) != CodeOf(wantErr):
					t.Fatalf("v%d %T: ReadPacket: %v; Decode: %v", v, r, err, wantErr)
				case err == nil && !equalPackets(got, want):
					t.Fatalf("v%d %T: ReadPacket %#v; Decode %#v", v, r, got, want)
				}
			}
		}
	})
}

// FuzzDecodeFixedHeader checks DecodeFixedHeader against ReadFixedHeader and
// against the encoder: a header either side accepts has the same fields,
// length and error code on both, and encodes back to the same bytes.
func FuzzDecodeFixedHeader(f *testing.F) {
	bufs, _ := validPackets(f)
	for i, b := range bufs {
		f.Add(b[:min(len(b), 5)], []int{0, 2, 1 << 20}[i%3])
	}
	for _, rl := range remainingLengths {
		f.Add(append([]byte{0x30}, mustHex(rl.hex)...), 0)
	}
	f.Fuzz(func(t *testing.T, data []byte, maxSize int) {
		h, n, err := DecodeFixedHeader(data, maxSize)
		r := bytes.NewReader(data)
		h2, err2 := ReadFixedHeader(r, maxSize)
		if err == ErrIncomplete {
			if err2 == nil {
				t.Fatalf("ReadFixedHeader read %+v from % x, DecodeFixedHeader says incomplete", h2, data)
			}
			return
		}
		if CodeOf(err) != CodeOf(err2) {
			t.Fatalf("% x: DecodeFixedHeader %v, ReadFixedHeader %v", data, err, err2)
		}
		if n > 5 || (err == nil || CodeOf(err) == PacketTooLarge) && (h != h2 || n != len(data)-r.Len() || n != h.Size()) {
			t.Fatalf("% x: DecodeFixedHeader %+v %d, ReadFixedHeader %+v %d", data, h, n, h2, len(data)-r.Len())
		}
		if err != nil {
			return
		}
		if enc, err := appendHeader(nil, h.Type, h.Flags, h.Remaining); err != nil || !bytes.Equal(enc, data[:n]) {
			t.Fatalf("% x: header %+v encodes as % x, %v", data[:n], h, enc, err)
		}
		if maxSize > 0 && h.PacketSize() > maxSize {
			t.Fatalf("% x: %d bytes accepted under a limit of %d", data[:n], h.PacketSize(), maxSize)
		}
	})
}

// FuzzProperties decodes a property block for any packet type (0 stands for
// will properties) and checks that what is accepted passes the encoder's
// validation and survives encoding.
func FuzzProperties(f *testing.F) {
	f.Add(mustHex("00"), int(PUBLISH))
	f.Add(mustHex("05 11 00 00 00 0a"), int(CONNECT))
	f.Add(mustHex("07 0b 01 0b ff ff ff 7f"), int(PUBLISH))
	f.Add(mustHex("0a 26 00 01 61 00 01 62 23 00 01"), int(PUBLISH))
	for _, tc := range roundTripCases() {
		if tc.version != V5 {
			continue
		}
		if p := propsOf(tc.packet); p != nil && !p.Empty() {
			f.Add(p.appendTo(nil), int(tc.packet.Type()))
		}
		if c, ok := tc.packet.(*Connect); ok && c.Will != nil {
			f.Add(c.Will.Properties.appendTo(nil), int(WillProperties))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, typ int) {
		ty := Type(typ & 15)
		var p Properties
		r := reader{buf: data}
		p.decode(&r, ty)
		if r.err != nil {
			return
		}
		if err := p.validate(ty); err != nil {
			t.Fatalf("%v: decoded %+v from % x, which validate refuses: %v", propCtxName(ty), p, data, err)
		}
		enc := p.appendTo(nil)
		if len(enc) != p.encodedSize() {
			t.Fatalf("%v: encodedSize %d, wrote %d bytes", propCtxName(ty), p.encodedSize(), len(enc))
		}
		var p2 Properties
		r2 := reader{buf: enc}
		p2.decode(&r2, ty)
		if r2.err != nil || !r2.done() {
			t.Fatalf("%v: % x re-encoded as % x: %v", propCtxName(ty), data, enc, r2.err)
		}
		if !equalPackets(&Auth{Properties: p}, &Auth{Properties: p2}) {
			t.Fatalf("%v: round trip changed properties:\n in  %+v\n out %+v", propCtxName(ty), p, p2)
		}
	})
}

// TestWriteFuzzCorpus writes the seed corpora in the Go corpus file format.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*genCorpus {
		t.Skip("run with -gencorpus to rewrite testdata/fuzz seeds")
	}
	bufs, _ := validPackets(t)
	write := func(target string, i int, args ...any) {
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch a := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", a)
			case int:
				fmt.Fprintf(&b, "int(%d)\n", a)
			}
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		name := filepath.Join(dir, fmt.Sprintf("seed-%03d", i))
		if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range bufs {
		write("FuzzDecode", i, b)
		write("FuzzReadPacket", i, b, []int{0, len(b), len(b) - 1}[i%3])
		write("FuzzDecodeFixedHeader", i, b[:min(len(b), 5)], []int{0, 2, 1 << 20}[i%3])
	}
	i := 0
	for _, tc := range roundTripCases() {
		if p := propsOf(tc.packet); tc.version == V5 && p != nil && !p.Empty() {
			write("FuzzProperties", i, p.appendTo(nil), int(tc.packet.Type()))
			i++
		}
	}
}
