package trace_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/trace"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

func newServer(t *testing.T, l trace.Limits) (*terntest.Server, *trace.Tracer) {
	t.Helper()
	tr := trace.New(l)
	return terntest.NewServer(t, &tern.Options{SysInterval: -1}, tr), tr
}

// collect reads events until want of them came, failing after a timeout.
func collect(t *testing.T, tr *trace.Trace, want int) []trace.Event {
	t.Helper()
	var got []trace.Event
	timeout := time.After(terntest.Timeout)
	for len(got) < want {
		select {
		case ev := <-tr.Events():
			got = append(got, ev)
		case <-timeout:
			t.Fatalf("got %d events, want %d: %s", len(got), want, summary(got))
		}
	}
	return got
}

// expectNone checks that no event is waiting.
func expectNone(t *testing.T, tr *trace.Trace) {
	t.Helper()
	select {
	case ev := <-tr.Events():
		t.Fatalf("unexpected event %+v", ev)
	default:
	}
}

func summary(evs []trace.Event) string {
	var parts []string
	for _, ev := range evs {
		parts = append(parts, ev.Type+":"+ev.ClientID+":"+ev.Topic)
	}
	return strings.Join(parts, " ")
}

// connect connects a raw v5 client and subscribes it to filter ("" for
// none).
func connect(t *testing.T, srv *terntest.Server, id, filter string) *terntest.Conn {
	t.Helper()
	c := srv.Dial(t, packets.V5)
	c.MustConnect(id)
	if filter != "" {
		c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: 1}}})
		if _, ok := c.Recv().(*packets.Suback); !ok {
			t.Fatal("no SUBACK")
		}
	}
	return c
}

func TestFollow(t *testing.T) {
	for _, tc := range []struct {
		name   string
		filter trace.Filter
		want   string // the events of the script below, as type:client:topic
	}{
		{"client id", trace.Filter{ClientID: "sub"},
			"connect:sub: subscribe:sub:t/# deliver:sub:t/1 disconnect:sub:"},
		{"publisher", trace.Filter{ClientID: "pub"},
			"connect:pub: publish:pub:t/1 publish:pub:u/1 disconnect:pub:"},
		{"topic", trace.Filter{Topic: "t/#"},
			"subscribe:sub:t/# publish:pub:t/1 deliver:sub:t/1"},
		{"address", trace.Filter{Address: "127.0.0.1"},
			"connect:sub: subscribe:sub:t/# connect:pub: publish:pub:t/1 deliver:sub:t/1 publish:pub:u/1 disconnect:pub: disconnect:sub:"},
		{"other address", trace.Filter{Address: "10.0.0.0/8"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, tracer := newServer(t, trace.Limits{})
			tr, err := tracer.Follow(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Stop()
			sub := connect(t, srv, "sub", "t/#")
			pub := connect(t, srv, "pub", "")
			for _, topic := range []string{"t/1", "u/1"} {
				pub.Send(&packets.Publish{Topic: topic, Payload: []byte("x"), QoS: 1, PacketID: 7})
				if _, ok := pub.Recv().(*packets.Puback); !ok {
					t.Fatal("no PUBACK")
				}
			}
			sub.Recv() // t/1

			pub.Close()
			sub.Close()
			terntest.Eventually(t, "both disconnected", func() bool { return srv.Stats().ClientsConnected == 0 })
			want := strings.Fields(tc.want)
			got := collect(t, tr, len(want))
			expectNone(t, tr)
			if s := summary(got); !sameSet(s, want) {
				t.Fatalf("events %s\nwant %s", s, strings.Join(want, " "))
			}
		})
	}
}

// sameSet compares events regardless of order: a delivery may be reported
// before its publish (the subscriber's writer and the publisher raise them).
func sameSet(got string, want []string) bool {
	g := strings.Fields(got)
	if len(g) != len(want) {
		return false
	}
	count := map[string]int{}
	for _, s := range g {
		count[s]++
	}
	for _, s := range want {
		count[s]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestEventFields(t *testing.T) {
	srv, tracer := newServer(t, trace.Limits{})
	tr, err := tracer.Follow(trace.Filter{Topic: "p/#", PayloadBytes: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		payload   []byte
		excerpt   string
		encoding  string
		truncated bool
	}{
		{[]byte("hi"), "hi", "plain", false},
		{[]byte("hello"), "hell", "plain", true},
		{[]byte("abcé"), "abc", "plain", true}, // é is two bytes: not cut in two
		{[]byte{0xff, 0, 1}, "/wAB", "base64", false},
		{nil, "", "", false},
	} {
		if err := srv.Publish("p/1", tc.payload, true, 1); err != nil {
			t.Fatal(err)
		}
		ev := collect(t, tr, 1)[0]
		if ev.Type != "publish" || ev.Topic != "p/1" || ev.QoS != 1 || !ev.Retain || ev.Size != len(tc.payload) ||
			ev.Payload != tc.excerpt || ev.PayloadEncoding != tc.encoding || ev.Truncated != tc.truncated || ev.Time.IsZero() {
			t.Errorf("payload %q: event %+v", tc.payload, ev)
		}
	}
}

func TestFilterErrors(t *testing.T) {
	tracer := trace.New(trace.Limits{MaxPayload: 100})
	for _, f := range []trace.Filter{
		{},
		{ClientID: "a", Topic: "t"},
		{Topic: "a/#/b"},
		{Topic: "$share/g/t"},
		{Address: "example.com"},
		{ClientID: "a", PayloadBytes: 101},
		{ClientID: "a", PayloadBytes: -1},
	} {
		if _, err := tracer.Follow(f); !errors.Is(err, trace.ErrFilter) {
			t.Errorf("Follow(%+v) = %v, want ErrFilter", f, err)
		}
	}
}

func TestLimits(t *testing.T) {
	t.Run("traces", func(t *testing.T) {
		tracer := trace.New(trace.Limits{MaxTraces: 2})
		a, _ := tracer.Follow(trace.Filter{ClientID: "a"})
		if _, err := tracer.Follow(trace.Filter{ClientID: "b"}); err != nil {
			t.Fatal(err)
		}
		if _, err := tracer.Follow(trace.Filter{ClientID: "c"}); !errors.Is(err, trace.ErrTooMany) {
			t.Fatalf("a third trace: %v", err)
		}
		a.Stop()
		a.Stop()
		select {
		case <-a.Done():
		default:
			t.Fatal("Done not closed by Stop")
		}
		if _, err := tracer.Follow(trace.Filter{ClientID: "c"}); err != nil {
			t.Fatalf("after a stop: %v", err)
		}
		if st := tracer.Stats(); st.Active != 2 || st.Started != 3 || st.Refused != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("rate", func(t *testing.T) {
		const rate, n = 5, 40
		srv, tracer := newServer(t, trace.Limits{MaxRate: rate})
		tr, _ := tracer.Follow(trace.Filter{Topic: "#"})
		for i := range n {
			if err := srv.Publish(fmt.Sprint("r/", i), nil, false, 0); err != nil {
				t.Fatal(err)
			}
		}
		// The publishes may straddle a second: at most two seconds' worth.
		got := len(tr.Events())
		if got < rate || got > 2*rate || int64(got)+tr.Dropped() != n {
			t.Fatalf("%d events sent and %d dropped of %d at %d a second", got, tr.Dropped(), n, rate)
		}
		if st := tracer.Stats(); st.OverRate != tr.Dropped() {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("buffer", func(t *testing.T) {
		srv, tracer := newServer(t, trace.Limits{Buffer: 4})
		tr, _ := tracer.Follow(trace.Filter{Topic: "#"})
		for i := range 10 {
			if err := srv.Publish(fmt.Sprint("b/", i), nil, false, 0); err != nil {
				t.Fatal(err)
			}
		}
		if len(tr.Events()) != 4 || tr.Dropped() != 6 || tracer.Stats().OverBuffer != 6 {
			t.Fatalf("%d buffered, %d dropped", len(tr.Events()), tr.Dropped())
		}
	})
}
