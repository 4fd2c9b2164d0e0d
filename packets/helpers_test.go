package packets

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

// hexb parses hex with optional spaces, tabs and newlines between bytes.
func hexb(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// decodeBytes decodes one packet from b the way a connection does with a
// buffer: DecodeFixedHeader, then Decode on everything after the header,
// which fails unless that is exactly the body.
func decodeBytes(b []byte, version byte, maxSize int) (Packet, error) {
	h, n, err := DecodeFixedHeader(b, maxSize)
	if err != nil {
		return nil, err
	}
	return Decode(h, b[n:], version)
}

// readBytes decodes one packet from b with ReadPacket. It fails if b holds
// more than one packet.
func readBytes(b []byte, version byte, maxSize int) (Packet, error) {
	r := bytes.NewReader(b)
	p, err := ReadPacket(r, version, maxSize)
	if err == nil && r.Len() != 0 {
		return p, ErrTrailingBytes
	}
	return p, err
}

// onlyReader hides every method but Read, so ReadPacket takes its path for
// readers that are not io.ByteReaders.
type onlyReader struct{ r *bytes.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// normProps sets empty slices that mean "absent" to nil.
func normProps(p *Properties) {
	if len(p.User) == 0 {
		p.User = nil
	}
	if len(p.SubscriptionIDs) == 0 {
		p.SubscriptionIDs = nil
	}
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// normalize returns a copy of p in which empty slices whose emptiness and
// absence mean the same (payloads, passwords, lists, user properties) are
// nil, so packets compare with reflect.DeepEqual. Correlation and
// authentication data keep the difference: there nil means absent.
func normalize(p Packet) Packet {
	switch p := p.(type) {
	case *Connect:
		c := *p
		c.Password = nilIfEmpty(c.Password)
		normProps(&c.Properties)
		if c.Will != nil {
			w := *c.Will
			w.Payload = nilIfEmpty(w.Payload)
			normProps(&w.Properties)
			c.Will = &w
		}
		return &c
	case *Connack:
		c := *p
		normProps(&c.Properties)
		return &c
	case *Publish:
		c := *p
		c.Payload = nilIfEmpty(c.Payload)
		normProps(&c.Properties)
		return &c
	case *Puback:
		c := *p
		normProps(&c.Properties)
		return &c
	case *Pubrec:
		c := *p
		normProps(&c.Properties)
		return &c
	case *Pubrel:
		c := *p
		normProps(&c.Properties)
		return &c
	case *Pubcomp:
		c := *p
		normProps(&c.Properties)
		return &c
	case *Subscribe:
		c := *p
		c.Subscriptions = nilIfEmpty(c.Subscriptions)
		normProps(&c.Properties)
		return &c
	case *Suback:
		c := *p
		c.ReasonCodes = nilIfEmpty(c.ReasonCodes)
		normProps(&c.Properties)
		return &c
	case *Unsubscribe:
		c := *p
		c.Filters = nilIfEmpty(c.Filters)
		normProps(&c.Properties)
		return &c
	case *Unsuback:
		c := *p
		c.ReasonCodes = nilIfEmpty(c.ReasonCodes)
		normProps(&c.Properties)
		return &c
	case *Disconnect:
		c := *p
		normProps(&c.Properties)
		return &c
	case *Auth:
		c := *p
		normProps(&c.Properties)
		return &c
	}
	return p
}

// equalPackets compares two packets after normalising them.
func equalPackets(a, b Packet) bool {
	return reflect.DeepEqual(normalize(a), normalize(b))
}

// mustEncode encodes p or fails the test.
func mustEncode(t testing.TB, p Packet, version byte) []byte {
	t.Helper()
	b, err := p.Encode(nil, version)
	if err != nil {
		t.Fatalf("Encode(%T, v%d): %v", p, version, err)
	}
	return b
}

// versionName names a protocol version for test names.
func versionName(v byte) string {
	switch v {
	case V31:
		return "v3.1"
	case V311:
		return "v3.1.1"
	case V5:
		return "v5"
	}
	return "v?"
}
