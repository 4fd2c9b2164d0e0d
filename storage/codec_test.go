package storage

import (
	"errors"
	"reflect"
	"testing"

	"github.com/ternmq/tern/packets"
)

func sampleMessage() Message {
	return Message{
		ID:      7,
		Topic:   "a/b/c",
		Payload: []byte("hello"),
		QoS:     2,
		Retain:  true,
		Properties: &packets.Properties{
			PayloadFormat:   1,
			MessageExpiry:   60,
			ContentType:     "text/plain",
			ResponseTopic:   "reply/to",
			CorrelationData: []byte{},
			User:            []packets.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: ""}},
		},
		Origin:   "publisher",
		Created:  1_800_000_000_000_000_000,
		ExpireAt: 1_800_000_060_000_000_000,
	}
}

func TestMessageRoundTrip(t *testing.T) {
	cases := map[string]Message{
		"full":            sampleMessage(),
		"zero":            {},
		"no properties":   {Topic: "t", Payload: []byte{0, 1, 2}, QoS: 1, Created: -5},
		"empty props":     {Topic: "t", Properties: &packets.Properties{}},
		"expiry before 0": {Topic: "t", Created: 10, ExpireAt: -10},
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			b := AppendMessage(nil, &m)
			got := Message{ID: m.ID}
			if err := DecodeMessage(b, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
			}
			b[len(b)-1] ^= 0xFF // the payload or a length: must not alias
			if m.Payload != nil && got.Payload[len(got.Payload)-1] != m.Payload[len(m.Payload)-1] {
				t.Fatal("decoded payload aliases the record")
			}
		})
	}
}

func TestPropertiesDropUnforwarded(t *testing.T) {
	m := Message{Topic: "t", Properties: &packets.Properties{ContentType: "x", TopicAlias: 3,
		SubscriptionIDs: []uint32{1}, ReasonString: "r"}}
	var got Message
	if err := DecodeMessage(AppendMessage(nil, &m), &got); err != nil {
		t.Fatal(err)
	}
	if want := (packets.Properties{ContentType: "x"}); !reflect.DeepEqual(*got.Properties, want) {
		t.Fatalf("got %+v", *got.Properties)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	s := Session{ClientID: "c", Version: 5, Expiry: 0xFFFFFFFF, DisconnectedAt: 1_800_000_000_000_000_000, Username: "alice"}
	gs := Session{ClientID: "c"}
	if err := DecodeSession(AppendSession(nil, &s), &gs); err != nil || gs != s {
		t.Fatalf("session %+v %v", gs, err)
	}
	s.HighIDs = true
	if err := DecodeSession(AppendSession(nil, &s), &gs); err != nil || gs != s {
		t.Fatalf("session: %v %+v", err, gs)
	}
	s.HighIDs, s.LastImport = false, "n2:17:0"
	if err := DecodeSession(AppendSession(nil, &s), &gs); err != nil || gs != s {
		t.Fatalf("session: %v %+v", err, gs)
	}
	s.HighIDs = true
	if err := DecodeSession(AppendSession(nil, &s), &gs); err != nil || gs != s {
		t.Fatalf("session: %v %+v", err, gs)
	}
	sub := Subscription{ClientID: "c", Group: "g", Filter: "a/#", QoS: 2, NoLocal: true,
		RetainAsPublished: true, RetainHandling: 2, Identifier: 268435455}
	gsub := Subscription{ClientID: "c", Group: "g", Filter: "a/#"}
	if err := DecodeSubscription(AppendSubscription(nil, &sub), &gsub); err != nil || gsub != sub {
		t.Fatalf("subscription: %v %+v", err, gsub)
	}
	for _, dl := range []Delivery{
		{ClientID: "c", Seq: 9, MessageID: 1 << 60, QoS: 2, Retain: true, SubIDs: []uint32{1, 0xFFFFFFFF},
			ShareGroup: "g", ShareFilter: "a/+", PacketID: 65535, Released: true},
		{ClientID: "c", Seq: 1, MessageID: 3, QoS: 1},
	} {
		got := Delivery{ClientID: dl.ClientID, Seq: dl.Seq}
		if err := DecodeDelivery(AppendDelivery(nil, &dl), &got); err != nil || !reflect.DeepEqual(got, dl) {
			t.Fatalf("delivery: %v\n got %+v\nwant %+v", err, got, dl)
		}
	}
	w := Will{ClientID: "c", Message: sampleMessage(), FireAt: 42}
	w.Message.ID = 0
	gw := Will{ClientID: "c"}
	if err := DecodeWill(AppendWill(nil, &w), &gw); err != nil || !reflect.DeepEqual(gw, w) {
		t.Fatalf("will: %v %+v", err, gw)
	}
	if id, err := DecodeRetained(AppendRetained(nil, 1<<63)); err != nil || id != 1<<63 {
		t.Fatalf("retained: %v %d", err, id)
	}
	for _, created := range []int64{0, 1, 1 << 62, -5} {
		if got, err := DecodeInbound(AppendInbound(nil, created)); err != nil || got != created {
			t.Fatalf("inbound %d: %v %d", created, err, got)
		}
	}
	// A record of an earlier version holds the format version only.
	if got, err := DecodeInbound([]byte{FormatVersion}); err != nil || got != 0 {
		t.Fatalf("inbound without a creation time: %v %d", err, got)
	}
}

func TestDecodeRejects(t *testing.T) {
	m := sampleMessage()
	msg := AppendMessage(nil, &m)
	cases := map[string]struct {
		kind byte
		b    []byte
	}{
		"empty":             {kindMessage, nil},
		"wrong version":     {kindMessage, append([]byte{2}, msg[1:]...)},
		"message flags":     {kindMessage, []byte{1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		"message QoS 3":     {kindMessage, []byte{1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		"truncated created": {kindMessage, []byte{1, 0, 0, 0}},
		"topic too long":    {kindMessage, []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 'a'}},
		"truncated props":   {kindMessage, msg[:20]},
		"session flags":     {kindSession, []byte{1, 5, 0, 0, 0, 4}},
		"session no flags":  {kindSession, []byte{1, 5, 0, 0, 0, 0}},
		"session token":     {kindSession, []byte{1, 5, 0, 0, 0, 2, 5, 'a'}},
		"session trailing":  {kindSession, []byte{1, 5, 0, 0, 0, 1, 0}},
		"session user long": {kindSession, []byte{1, 5, 0, 0, 9, 'a'}},
		"session expiry":    {kindSession, []byte{1, 5, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0}},
		"sub RH 3":          {kindSubscription, []byte{1, 0x30, 0}},
		"sub unknown flag":  {kindSubscription, []byte{1, 0x40, 0}},
		"delivery pid":      {kindDelivery, []byte{1, 1, 1, 0xFF, 0xFF, 0x7F, 0}},
		"delivery count":    {kindDelivery, []byte{1, 1, 1, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F}},
		"delivery share":    {kindDelivery, []byte{1, 0x11, 1, 1, 0}},
		"bad varint":        {kindRetained, []byte{1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}},
		"inbound trailing":  {kindInbound, []byte{1, 0, 0}},
		"inbound varint":    {kindInbound, []byte{1, 0x80}},
		"will truncated":    {kindWill, []byte{1, 0, 0}},
	}
	for name, c := range cases {
		if err := decodeKind(c.kind, c.b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
}

// Record kinds for decodeKind (the fuzz target's first argument).
const (
	kindMessage byte = iota
	kindSession
	kindSubscription
	kindDelivery
	kindRetained
	kindInbound
	kindWill
	numKinds
)

// decodeKind decodes b as a record of the given kind; when that works it
// encodes the result again and checks that decoding it gives the same
// record.
func decodeKind(kind byte, b []byte) error {
	var first, second any
	var err error
	switch kind % numKinds {
	case kindMessage:
		var m, m2 Message
		if err = DecodeMessage(b, &m); err == nil {
			err = DecodeMessage(AppendMessage(nil, &m), &m2)
		}
		first, second = m, m2
	case kindSession:
		var s, s2 Session
		if err = DecodeSession(b, &s); err == nil {
			err = DecodeSession(AppendSession(nil, &s), &s2)
		}
		first, second = s, s2
	case kindSubscription:
		var s, s2 Subscription
		if err = DecodeSubscription(b, &s); err == nil {
			err = DecodeSubscription(AppendSubscription(nil, &s), &s2)
		}
		first, second = s, s2
	case kindDelivery:
		var d, d2 Delivery
		if err = DecodeDelivery(b, &d); err == nil {
			err = DecodeDelivery(AppendDelivery(nil, &d), &d2)
		}
		first, second = d, d2
	case kindRetained:
		var id, id2 uint64
		if id, err = DecodeRetained(b); err == nil {
			id2, err = DecodeRetained(AppendRetained(nil, id))
		}
		first, second = id, id2
	case kindInbound:
		var c, c2 int64
		if c, err = DecodeInbound(b); err == nil {
			c2, err = DecodeInbound(AppendInbound(nil, c))
		}
		first, second = c, c2
	case kindWill:
		var w, w2 Will
		if err = DecodeWill(b, &w); err == nil {
			err = DecodeWill(AppendWill(nil, &w), &w2)
		}
		first, second = w, w2
	}
	if err == nil && !reflect.DeepEqual(first, second) {
		panic("re-encoding changed the record")
	}
	return err
}

// FuzzDecodeRecords feeds garbage to every record decoder (kind picks
// one): each must either decode, and then survive re-encoding unchanged,
// or return an error wrapping ErrCorrupt; never panic.
func FuzzDecodeRecords(f *testing.F) {
	// The seed corpus is in testdata/fuzz/FuzzDecodeRecords: one valid
	// record of each kind.
	f.Fuzz(func(t *testing.T, kind byte, b []byte) {
		if err := decodeKind(kind, b); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error does not wrap ErrCorrupt: %v", err)
		}
	})
}

// A session record written before user names were stored still decodes.
func TestDecodeSessionWithoutUsername(t *testing.T) {
	var s Session
	if err := DecodeSession([]byte{FormatVersion, 4, 0x3c, 0x02}, &s); err != nil {
		t.Fatal(err)
	}
	if s.Version != 4 || s.Expiry != 60 || s.DisconnectedAt != 1 || s.Username != "" {
		t.Fatalf("decoded %+v", s)
	}
}
