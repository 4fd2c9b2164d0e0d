package tern_test

// The seams a cluster uses for the wills of clients another node held:
// Client.HasWill during OnDisconnect and Server.PublishWill.

import (
	"errors"
	"sync"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/terntest"
)

// willRecorder records HasWill at OnDisconnect, the wills sent, and denies
// writes to "w/denied" by user "mallory".
type willRecorder struct {
	mu      sync.Mutex
	hasWill map[string]bool
	sent    map[string]*tern.Message
}

func (*willRecorder) ID() string { return "will-recorder" }

func (r *willRecorder) OnDisconnect(c *tern.Client, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hasWill[c.ID()] = c.HasWill()
}

func (r *willRecorder) OnWillSent(clientID string, m *tern.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent[clientID] = m
}

func (*willRecorder) Authorize(c *tern.Client, topic string, a tern.Access) tern.Decision {
	if a == tern.Write && topic == "w/denied" && c.Username() == "mallory" {
		return tern.Deny
	}
	return tern.Abstain
}

func (r *willRecorder) get(id string) (bool, bool, *tern.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hasWill[id]
	return h, ok, r.sent[id]
}

// HasWill is true in OnDisconnect while the will is still to be published,
// false once a DISCONNECT with reason 0x00 discarded it [MQTT-3.1.2-10] or
// when the CONNECT had none.
func TestHasWillAtDisconnect(t *testing.T) {
	rec := &willRecorder{hasWill: map[string]bool{}, sent: map[string]*tern.Message{}}
	srv := terntest.NewServer(t, nil, rec)
	for _, tc := range []struct {
		id       string
		will     bool
		polite   bool
		expected bool
	}{
		{"dropped", true, false, true},
		{"polite", true, true, false},
		{"nowill", false, false, false},
	} {
		c := srv.Dial(t, packets.V5)
		pk := &packets.Connect{ClientID: tc.id, CleanStart: true}
		if tc.will {
			pk.Will = &packets.Will{Topic: "w/" + tc.id, Payload: []byte("bye")}
		}
		if ack := c.Connect(pk); ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNACK %v", tc.id, ack.ReasonCode)
		}
		if tc.polite {
			c.Send(&packets.Disconnect{})
			c.ExpectClosed()
		} else {
			c.Close()
		}
		terntest.Eventually(t, "OnDisconnect of "+tc.id, func() bool { _, ok, _ := rec.get(tc.id); return ok })
		if got, _, _ := rec.get(tc.id); got != tc.expected {
			t.Errorf("%s: HasWill %v, want %v", tc.id, got, tc.expected)
		}
	}
}

// PublishWill publishes a will as the client's own: with its properties,
// the client as origin, counted and told to WillObservers, and refused as
// that client by the authorizers.
func TestPublishWill(t *testing.T) {
	rec := &willRecorder{hasWill: map[string]bool{}, sent: map[string]*tern.Message{}}
	srv := terntest.NewServer(t, nil, rec)
	sub := srv.Dial(t, packets.V5)
	sub.MustConnect("sub")
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "w/#", QoS: 1}}})
	sub.Recv()
	w := &packets.Will{Topic: "w/gone", Payload: []byte("bye"), QoS: 1,
		Properties: packets.Properties{ContentType: "text/plain", WillDelay: 30,
			User: []packets.UserProperty{{Key: "k", Value: "v"}}}}
	if err := srv.PublishWill("gone", "alice", w); err != nil {
		t.Fatal(err)
	}
	p, ok := sub.Recv().(*packets.Publish)
	if !ok || p.Topic != "w/gone" || string(p.Payload) != "bye" || p.QoS != 1 || p.Properties.ContentType != "text/plain" ||
		len(p.Properties.User) != 1 || p.Properties.User[0].Value != "v" || p.Properties.WillDelay != 0 {
		t.Fatalf("got %+v", p)
	}
	sub.Send(&packets.Puback{PacketID: p.PacketID})
	if _, _, m := rec.get("gone"); m == nil || m.Origin != "gone" {
		t.Errorf("OnWillSent: %+v", m)
	}
	if n := srv.Stats().WillsSent; n != 1 {
		t.Errorf("WillsSent %d", n)
	}
	if err := srv.PublishWill("m", "mallory", &packets.Will{Topic: "w/denied"}); !errors.Is(err, tern.ErrNotAuthorized) {
		t.Errorf("denied will: %v", err)
	}
	if err := srv.PublishWill("x", "", &packets.Will{Topic: "w/#"}); !errors.Is(err, tern.ErrInvalidTopic) {
		t.Errorf("wildcard topic: %v", err)
	}
}

// partialGate marks every session partial (as a cluster does for one it
// rebuilt from subscriptions only).
type partialGate struct{}

func (partialGate) ID() string { return "partial-gate" }

func (partialGate) AttachSession(c *tern.Client, _ bool, _ uint32) packets.ReasonCode {
	c.MarkSessionPartial()
	return packets.Success
}

// A session a gate marks partial is answered with Session Present 0 though
// it is there, and keeps its subscriptions [MQTT-3.2.2-2].
func TestMarkSessionPartial(t *testing.T) {
	srv := terntest.NewServer(t, nil, partialGate{})
	connect := &packets.Connect{ClientID: "p", Properties: packets.Properties{SessionExpiry: packets.Uint32(60)}}
	c := srv.Dial(t, packets.V5)
	c.Connect(connect)
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "p/#", QoS: 1}}})
	c.Recv()
	c.Close()
	terntest.Eventually(t, "offline", func() bool { si, ok := srv.SessionInfo("p"); return ok && !si.Online })
	c2 := srv.Dial(t, packets.V5)
	if ack := c2.Connect(connect); ack.ReasonCode != 0 || ack.SessionPresent {
		t.Fatalf("CONNACK %+v", ack)
	}
	if err := srv.Publish("p/x", []byte("still"), false, 1); err != nil {
		t.Fatal(err)
	}
	if p, ok := c2.Recv().(*packets.Publish); !ok || string(p.Payload) != "still" {
		t.Fatalf("got %+v", p)
	}
}

// A session shipped late into one already here brings its messages, not
// its inbound QoS 2 packet identifiers: the client has released or
// dropped them since, and a new QoS 2 message with one of them is
// delivered, not taken for a resend [MQTT-4.3.3-10].
func TestImportMergeDropsInbound(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	sub := srv.Dial(t, packets.V5)
	sub.MustConnect("sub")
	sub.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "m/#", QoS: 2}}})
	sub.Recv()
	connect := &packets.Connect{ClientID: "m", Properties: packets.Properties{SessionExpiry: packets.Uint32(60)}}
	c := srv.Dial(t, packets.V5)
	c.Connect(connect)
	c.Close()
	terntest.Eventually(t, "offline", func() bool { si, ok := srv.SessionInfo("m"); return ok && !si.Online })
	if err := srv.ImportSession(&tern.SessionState{Session: storage.Session{ClientID: "m", Version: packets.V5, Expiry: 60},
		Inbound: []uint16{5}}); err != nil {
		t.Fatal(err)
	}
	c2 := srv.Dial(t, packets.V5)
	c2.Connect(connect)
	c2.Send(&packets.Publish{Topic: "m/x", QoS: 2, PacketID: 5, Payload: []byte("new")})
	if _, ok := c2.Recv().(*packets.Pubrec); !ok {
		t.Fatal("no PUBREC")
	}
	if p, ok := sub.Recv().(*packets.Publish); !ok || string(p.Payload) != "new" {
		t.Fatalf("got %+v", p)
	}
}
