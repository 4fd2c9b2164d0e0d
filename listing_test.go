package tern_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// A session summary tells who is connected, from where, what the
// connection carried, and once offline when and why it ended.
func TestEachSession(t *testing.T) {
	ev := newE2EEvents()
	srv := terntest.NewServer(t, &tern.Options{SysInterval: -1}, ev)
	sub, _ := e2eRawConnect(t, srv, packets.V5, "sub", true, 300)
	e2eRawSubscribe(t, sub, 1, "t/#", 1)
	pub, _ := e2eRawConnect(t, srv, packets.V311, "pub", true, 0)
	pub.Send(&packets.Publish{Topic: "t/1", Payload: []byte("hello"), QoS: 1, PacketID: 1})
	if _, ok := pub.Recv().(*packets.Puback); !ok {
		t.Fatal("no PUBACK")
	}
	e2eRawPublish(t, sub)
	off, _ := e2eRawConnect(t, srv, packets.V5, "off", true, 300)
	off.Close()
	ev.wait(t, "disconnected/off", 1)

	got := map[string]tern.SessionSummary{}
	var order []string
	srv.EachSession(tern.ListOptions{}, func(s *tern.SessionSummary) bool {
		got[s.ClientID] = *s
		order = append(order, s.ClientID)
		return true
	})
	if !slices.Equal(order, []string{"off", "pub", "sub"}) {
		t.Fatalf("sessions %v", order)
	}
	s := got["sub"]
	if !s.Online || s.ProtocolVersion != packets.V5 || s.Listener != "tcp" || s.ConnectedAt.IsZero() ||
		!s.DisconnectedAt.IsZero() || s.DisconnectReason != "" || !strings.HasPrefix(s.RemoteAddr(), "127.0.0.1:") {
		t.Errorf("online summary %+v (address %q)", s, s.RemoteAddr())
	}
	terntest.Eventually(t, "the delivery to be counted", func() bool {
		s, _ = srv.SessionSummary("sub")
		return s.Counts.MessagesSent == 1
	})
	if s.Counts.BytesSent == 0 || s.Counts.BytesReceived == 0 {
		t.Errorf("sub's counts %+v", s.Counts)
	}
	o := got["off"]
	if o.Online || o.DisconnectedAt.IsZero() || o.DisconnectReason != "connection_closed" || o.ProtocolVersion != packets.V5 ||
		o.RemoteAddr() == "" {
		t.Errorf("offline summary %+v", o)
	}

	// The summary of the publisher's connection while it was up.
	pubSum, ok := srv.SessionSummary("pub")
	if !ok || pubSum.Counts.MessagesReceived != 1 {
		t.Errorf("pub: %v %+v", ok, pubSum)
	}

	// Stopping, and a cursor.
	n := 0
	srv.EachSession(tern.ListOptions{}, func(*tern.SessionSummary) bool { n++; return false })
	if n != 1 {
		t.Errorf("fn called %d times after returning false", n)
	}
	order = order[:0]
	srv.EachSession(tern.ListOptions{After: "off", Prefix: "s"}, func(s *tern.SessionSummary) bool {
		order = append(order, s.ClientID)
		return true
	})
	if !slices.Equal(order, []string{"sub"}) {
		t.Errorf("after off, prefix s: %v", order)
	}
}

func TestListeners(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{SysInterval: -1})
	c, _ := e2eRawConnect(t, srv, packets.V5, "a", true, 0)
	defer c.Close()
	ls := srv.Listeners()
	if len(ls) != 1 || ls[0].ID != "tcp" || ls[0].Address != srv.Addr || ls[0].Connections != 1 {
		t.Fatalf("listeners %+v, want tcp on %s with 1 connection", ls, srv.Addr)
	}
}

func TestSubscriptionFiltersAndTree(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{SysInterval: -1})
	for _, cs := range []struct {
		id      string
		filters []string
	}{
		{"a", []string{"x/y", "x/+/z", "$share/g/s/#"}},
		{"b", []string{"x/y", "$share/g/s/#"}},
	} {
		c, _ := e2eRawConnect(t, srv, packets.V5, cs.id, true, 0)
		defer c.Close()
		for i, f := range cs.filters {
			e2eRawSubscribe(t, c, uint16(i+1), f, 1)
		}
	}
	if err := srv.Subscribe("x/y", 1, func(*tern.Message) {}); err != nil { // in-process: not listed
		t.Fatal(err)
	}
	if err := srv.Publish("x/r", []byte("1"), true, 0); err != nil {
		t.Fatal(err)
	}

	fs := srv.SubscriptionFilters(nil)
	want := []tern.FilterInfo{
		{Filter: "s/#", Groups: []tern.SharedGroup{{Name: "g", Members: []string{"a", "b"}}}},
		{Filter: "x/+/z", Subscribers: 1},
		{Filter: "x/y", Subscribers: 2},
	}
	if len(fs) != len(want) {
		t.Fatalf("filters %+v", fs)
	}
	for i := range want {
		if fs[i].Filter != want[i].Filter || fs[i].Subscribers != want[i].Subscribers || len(fs[i].Groups) != len(want[i].Groups) ||
			len(want[i].Groups) > 0 && !slices.Equal(fs[i].Groups[0].Members, want[i].Groups[0].Members) {
			t.Errorf("filter %d: %+v, want %+v", i, fs[i], want[i])
		}
	}
	if got := srv.SubscriptionFilters([]string{"x", "+"}); len(got) != 1 || got[0].Filter != "x/+/z" {
		t.Errorf("under x/+: %+v", got)
	}

	subs := srv.FilterSubscriptions("s/#")
	if len(subs) != 2 || subs[0].ClientID != "a" || subs[0].Group != "g" || subs[1].ClientID != "b" {
		t.Errorf("subscribers of s/#: %+v", subs)
	}
	if subs := srv.FilterSubscriptions("x/y"); len(subs) != 2 || subs[0].Target != nil {
		t.Errorf("subscribers of x/y: %+v", subs)
	}

	tree := srv.TopicTree([]string{"x"})
	wantTree := []tern.TopicLevel{{Name: "+", Below: true}, {Name: "r", Retained: true}, {Name: "y", Subscriptions: 2}}
	if !slices.Equal(tree, wantTree) {
		t.Errorf("tree under x: %+v, want %+v", tree, wantTree)
	}
}

func TestPublishWith(t *testing.T) {
	srv := terntest.NewServer(t, &tern.Options{SysInterval: -1})
	got := make(chan *tern.Message, 1)
	if err := srv.Subscribe("p/#", 1, func(m *tern.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	props := &packets.Properties{ContentType: "application/json", MessageExpiry: 60,
		User: []packets.UserProperty{{Key: "k", Value: "v"}}}
	if err := srv.PublishWith("p/1", []byte(`{}`), false, 1, props); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Properties == nil || m.Properties.ContentType != "application/json" || len(m.Properties.User) != 1 ||
			m.ExpiresAt().IsZero() {
			t.Errorf("properties %+v", m.Properties)
		}
	case <-time.After(terntest.Timeout):
		t.Fatal("not delivered")
	}
	for _, bad := range []*packets.Properties{
		{ContentType: "a\x00b"},
		{ResponseTopic: "r/#"},
		{User: []packets.UserProperty{{Key: "k\x00", Value: "v"}}},
	} {
		if err := srv.PublishWith("p/2", nil, false, 0, bad); !errors.Is(err, tern.ErrInvalidProperty) {
			t.Errorf("PublishWith(%+v) = %v, want ErrInvalidProperty", bad, err)
		}
	}
}
