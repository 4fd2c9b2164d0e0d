package cluster

import (
	"reflect"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/storage"
)

// A forwarded message and its delivery survive the trip between nodes;
// a truncated one is refused, never a panic.
func TestForwardRoundTrip(t *testing.T) {
	m := tern.MessageFromRecord(&storage.Message{Topic: "a/b", Payload: []byte("x"), QoS: 2, Origin: "pub"})
	for _, d := range []tern.Delivery{
		{QoS: 1},
		{QoS: 2, Retain: true, ClientID: "moved", SubID: 7},
		{QoS: 1, Group: "g", Filter: "a/+", SubIDs: []uint32{3, 4}},
	} {
		b := encodeForward(m, d)
		got, gd, err := decodeForward(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Topic != "a/b" || string(got.Payload) != "x" || got.Origin != "pub" || !reflect.DeepEqual(gd, d) {
			t.Fatalf("got %+v %+v, want %+v", got, gd, d)
		}
		for i := range b {
			decodeForward(b[:i]) // must not panic
		}
	}
}

// A session state survives the handover encoding.
func TestSessionRoundTrip(t *testing.T) {
	st := &tern.SessionState{
		Session:       storage.Session{ClientID: "c1", Expiry: 60, Version: 5, Username: "u"},
		Subscriptions: []storage.Subscription{{ClientID: "c1", Group: "g", Filter: "a/#", QoS: 1, Identifier: 9}},
		Messages:      []storage.Message{{ID: 1, Topic: "a/b", Payload: []byte("p"), QoS: 1}},
		Deliveries:    []storage.Delivery{{ClientID: "c1", MessageID: 1, Seq: 1, QoS: 1, PacketID: 3}},
		Inbound:       []uint16{5, 6},
	}
	got, err := decodeSession(encodeSession(st))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("got %+v\nwant %+v", got, st)
	}
}

// Retained keys keep letters, digits, - and _, and escape the rest.
func TestRetainedKey(t *testing.T) {
	for topic, want := range map[string]string{
		"a/b/c": "a.b.c", "/a": "=__.a", "a//b": "a.=__.b", "a.b/c": "a=2Eb.c", "$SYS/x": "=24SYS.x", "t 1/*": "t=201.=2A",
	} {
		if got := retainedKey(topic); got != want {
			t.Errorf("retainedKey(%q) = %q, want %q", topic, got, want)
		}
	}
}
