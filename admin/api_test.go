package admin_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// eventually polls cond until it holds, failing the test after
// terntest.Timeout. For state the broker reaches asynchronously (a
// connection's end) with no event to wait for.

func subscribe(t *testing.T, c *terntest.Conn, subs ...packets.Subscription) {
	t.Helper()
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: subs})
	if _, ok := c.Recv().(*packets.Suback); !ok {
		t.Fatal("no SUBACK")
	}
}

func ids[T any](items []T, id func(T) string) []string {
	var out []string
	for _, it := range items {
		out = append(out, id(it))
	}
	return out
}

func TestClients(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	alpha := e.ts.Dial(t, packets.V5)
	alpha.MustConnect("alpha")
	subscribe(t, alpha, packets.Subscription{Filter: "a/#", QoS: 1}, packets.Subscription{Filter: "$share/g/b/+"})
	beta := e.ts.Dial(t, packets.V311)
	if ack := beta.Connect(&packets.Connect{ClientID: "beta", CleanStart: true, KeepAlive: 30, UsernameFlag: true, Username: "bob"}); ack.ReasonCode != 0 {
		t.Fatal(ack.ReasonCode)
	}
	gamma := e.ts.Dial(t, packets.V5)
	gamma.MustConnect("gamma/with slash")

	var page admin.Page[admin.Client]
	e.getJSON(t, "GET", "/api/v1/clients", "", 200, &page)
	if got := ids(page.Data, func(c admin.Client) string { return c.ClientID }); !slices.Equal(got, []string{"alpha", "beta", "gamma/with slash"}) {
		t.Fatalf("clients %v", got)
	}
	if page.Meta != (admin.Meta{Page: 1, Limit: 100, Count: 3}) {
		t.Errorf("meta %+v", page.Meta)
	}
	b := page.Data[1]
	if b.Username != "bob" || b.ProtocolVersion != 4 || b.KeepAlive != 30 || b.Listener != "tcp" || !b.CleanStart ||
		!strings.HasPrefix(b.RemoteAddr, "127.0.0.1:") || time.Since(b.ConnectedAt) > time.Minute || b.Subscriptions != nil {
		t.Errorf("beta: %+v", b)
	}

	// Paging.
	tests := []struct {
		query string
		ids   []string
		meta  admin.Meta
	}{
		{"?limit=2", []string{"alpha", "beta"}, admin.Meta{Page: 1, Limit: 2, Count: 3, HasNext: true}},
		{"?limit=2&page=2", []string{"gamma/with slash"}, admin.Meta{Page: 2, Limit: 2, Count: 3}},
		{"?page=5", nil, admin.Meta{Page: 5, Limit: 100, Count: 3}},
	}
	for _, tt := range tests {
		var p admin.Page[admin.Client]
		e.getJSON(t, "GET", "/api/v1/clients"+tt.query, "", 200, &p)
		if p.Meta.HasNext == (p.Meta.Next == "") {
			t.Errorf("%s: hasnext %v, next %q", tt.query, p.Meta.HasNext, p.Meta.Next)
		}
		p.Meta.Next = ""
		if got := ids(p.Data, func(c admin.Client) string { return c.ClientID }); !slices.Equal(got, tt.ids) || p.Meta != tt.meta || p.Data == nil {
			t.Errorf("%s: %v %+v", tt.query, got, p.Meta)
		}
	}
	for _, bad := range []string{"?page=0", "?page=x", "?limit=0", "?limit=1001", "?limit=-1"} {
		if msg := e.errorOf(t, "GET", "/api/v1/clients"+bad, "", 400); !strings.Contains(msg, strings.Split(bad[1:], "=")[0]) {
			t.Errorf("%s: %q does not name the parameter", bad, msg)
		}
	}

	// One client, with its subscriptions.
	var one admin.Client
	e.getJSON(t, "GET", "/api/v1/clients/alpha", "", 200, &one)
	want := []admin.Subscription{
		{ClientID: "alpha", Topic: "a/#", QoS: 1},
		{ClientID: "alpha", Topic: "$share/g/b/+", Group: "g"},
	}
	if one.ProtocolVersion != 5 || !slices.Equal(one.Subscriptions, want) {
		t.Errorf("alpha: %+v", one)
	}
	e.getJSON(t, "GET", "/api/v1/clients/"+url.PathEscape("gamma/with slash"), "", 200, &one)
	if one.ClientID != "gamma/with slash" {
		t.Errorf("escaped id: %+v", one)
	}
	e.errorOf(t, "GET", "/api/v1/clients/nobody", "", 404)

	// Kick: v5 clients read DISCONNECT 0x98, v3 ones are closed.
	e.getJSON(t, "DELETE", "/api/v1/clients/alpha", "", 204, nil)
	got := alpha.ExpectClosed()
	if len(got) != 1 || got[0].(*packets.Disconnect).ReasonCode != packets.AdministrativeAction {
		t.Errorf("kicked v5 client read %v", got)
	}
	alpha.Close()
	e.getJSON(t, "DELETE", "/api/v1/clients/beta", "", 204, nil)
	if got := beta.ExpectClosed(); len(got) != 0 {
		t.Errorf("kicked v3 client read %v", got)
	}
	beta.Close()
	e.errorOf(t, "DELETE", "/api/v1/clients/nobody", "", 404)
	terntest.Eventually(t, "the kicked clients to leave the list", func() bool {
		var p admin.Page[admin.Client]
		e.getJSON(t, "GET", "/api/v1/clients", "", 200, &p)
		return p.Meta.Count == 1
	})
	e.errorOf(t, "DELETE", "/api/v1/clients/alpha", "", 404)
}

func TestSessionsAndSubscriptions(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	on := e.ts.Dial(t, packets.V5)
	on.MustConnect("online")
	subscribe(t, on, packets.Subscription{Filter: "x/1", QoS: 2})
	off := e.ts.Dial(t, packets.V5)
	expiry := uint32(3600)
	off.Connect(&packets.Connect{ClientID: "offline", CleanStart: true, Properties: packets.Properties{SessionExpiry: &expiry}})
	subscribe(t, off, packets.Subscription{Filter: "x/+", QoS: 1}, packets.Subscription{Filter: "y", QoS: 0})
	off.Send(&packets.Disconnect{})
	off.ExpectClosed()
	off.Close()
	if err := e.ts.Publish("x/1", []byte("queued while offline"), false, 1); err != nil {
		t.Fatal(err)
	}

	var page admin.Page[admin.Session]
	terntest.Eventually(t, "the session to go offline", func() bool {
		e.getJSON(t, "GET", "/api/v1/sessions", "", 200, &page)
		return len(page.Data) == 2 && !page.Data[0].Online
	})
	want := []admin.Session{
		{ClientID: "offline", Online: false, Expiry: 3600, Queued: 1, QueuedBytes: len("x/1queued while offline"), Subscriptions: 2},
		{ClientID: "online", Online: true, Expiry: 0, Subscriptions: 1},
	}
	// The online client's copy of the message may still be on its way.
	page.Data[1].Inflight, page.Data[1].Queued, page.Data[1].QueuedBytes = 0, 0, 0
	// What the last connection was (tested in listing_test.go).
	for i := range page.Data {
		s := &page.Data[i]
		if s.Listener != "tcp" || s.ProtocolVersion != 5 || s.ConnectedAt == nil || (s.DisconnectedAt == nil) == (s.ClientID == "offline") {
			t.Errorf("session %s: %+v", s.ClientID, s)
		}
		s.RemoteAddr, s.Listener, s.ProtocolVersion, s.ConnectedAt, s.DisconnectedAt, s.DisconnectReason, s.Counts =
			"", "", 0, nil, nil, "", admin.Counts{}
	}
	if !reflect.DeepEqual(page.Data, want) || page.Meta.Count != 2 {
		t.Errorf("sessions:\n got %+v\nwant %+v", page.Data, want)
	}
	var one admin.Session
	e.getJSON(t, "GET", "/api/v1/sessions/offline", "", 200, &one)
	if one.DisconnectReason != "client_disconnect" {
		t.Errorf("session: %+v", one)
	}
	one.RemoteAddr, one.Listener, one.ProtocolVersion, one.ConnectedAt, one.DisconnectedAt, one.DisconnectReason, one.Counts =
		"", "", 0, nil, nil, "", admin.Counts{}
	if !reflect.DeepEqual(one, want[0]) {
		t.Errorf("session: %+v", one)
	}
	e.errorOf(t, "GET", "/api/v1/sessions/nobody", "", 404)
	e.errorOf(t, "GET", "/api/v1/clients/offline", "", 404) // not connected

	var subs admin.Page[admin.Subscription]
	e.getJSON(t, "GET", "/api/v1/subscriptions", "", 200, &subs)
	if got := ids(subs.Data, func(s admin.Subscription) string { return s.ClientID + " " + s.Topic }); !slices.Equal(got, []string{"offline x/+", "offline y", "online x/1"}) {
		t.Errorf("subscriptions %v", got)
	}
	e.getJSON(t, "GET", "/api/v1/subscriptions?client_id=online&limit=1", "", 200, &subs)
	if len(subs.Data) != 1 || subs.Data[0] != (admin.Subscription{ClientID: "online", Topic: "x/1", QoS: 2}) || subs.Meta.Count != 1 {
		t.Errorf("online's subscriptions %+v", subs)
	}
}

func TestRetained(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	for _, m := range []struct {
		topic   string
		payload []byte
		qos     byte
	}{{"r/text", []byte("hello"), 1}, {"r/bin", []byte{0xff, 0x00}, 0}, {"other", []byte("x"), 0}, {"r/a b", []byte("spaced"), 0},
		{"e//mpty", []byte("levels"), 0}, {"/lead", []byte("slash"), 0}} {
		if err := e.ts.Publish(m.topic, m.payload, true, m.qos); err != nil {
			t.Fatal(err)
		}
	}
	var page admin.Page[admin.Retained]
	e.getJSON(t, "GET", "/api/v1/retained", "", 200, &page)
	if got := ids(page.Data, func(r admin.Retained) string { return r.Topic }); !slices.Equal(got, []string{"/lead", "e//mpty", "other", "r/a b", "r/bin", "r/text"}) {
		t.Errorf("retained %v", got)
	}
	if r := page.Data[2]; r.Payload != nil || r.PayloadSize != 1 || r.Origin != "$inline" {
		t.Errorf("listed retained message: %+v", r)
	}
	e.getJSON(t, "GET", "/api/v1/retained?filter="+url.QueryEscape("r/+")+"&limit=2", "", 200, &page)
	if got := ids(page.Data, func(r admin.Retained) string { return r.Topic }); !slices.Equal(got, []string{"r/a b", "r/bin"}) || !page.Meta.HasNext {
		t.Errorf("filtered %v %+v", got, page.Meta)
	}
	e.errorOf(t, "GET", "/api/v1/retained?filter="+url.QueryEscape("a/#/b"), "", 400)

	tests := []struct {
		topic, payload, encoding string
		qos                      byte
	}{
		{"r/text", "hello", "plain", 1},
		{"r/bin", "/wA=", "base64", 0},
		{"r/a b", "spaced", "plain", 0},
		{"e//mpty", "levels", "plain", 0},
		{"/lead", "slash", "plain", 0},
	}
	for _, tt := range tests {
		var r admin.Retained
		e.getJSON(t, "GET", "/api/v1/retained/"+url.PathEscape(tt.topic), "", 200, &r)
		if r.Topic != tt.topic || r.Payload == nil || *r.Payload != tt.payload || r.PayloadEncoding != tt.encoding || r.QoS != tt.qos {
			t.Errorf("%s: %+v", tt.topic, r)
		}
	}
	e.errorOf(t, "GET", "/api/v1/retained/r/none", "", 404)

	e.getJSON(t, "DELETE", "/api/v1/retained/r/text", "", 204, nil)
	e.errorOf(t, "GET", "/api/v1/retained/r/text", "", 404)
	e.errorOf(t, "DELETE", "/api/v1/retained/r/text", "", 404)
	if n := e.ts.Stats().Retained; n != 5 {
		t.Errorf("Stats().Retained = %d after the delete", n)
	}
	// A new subscriber no longer gets it.
	c := e.ts.Dial(t, packets.V5)
	c.MustConnect("late")
	subscribe(t, c, packets.Subscription{Filter: "r/text"})
	if pk, err := c.TryRecv(100 * time.Millisecond); err == nil {
		t.Errorf("deleted retained message delivered: %v", pk)
	}
}

func TestPublish(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	got := make(chan *tern.Message, 1)
	if err := e.ts.Subscribe("p/#", 1, func(m *tern.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		body    string
		status  int
		payload string
		qos     byte
		retain  bool
		errHas  string
	}{
		{"plain", `{"topic":"p/1","payload":"héllo"}`, 200, "héllo", 0, false, ""},
		{"base64, QoS 1, retained", `{"topic":"p/2","payload":"AAEC","payload_encoding":"base64","qos":1,"retain":true}`, 200, "\x00\x01\x02", 1, true, ""},
		{"empty payload", `{"topic":"p/3"}`, 200, "", 0, false, ""},
		{"no topic", `{"payload":"x"}`, 400, "", 0, false, "topic"},
		{"wildcard topic", `{"topic":"p/#","payload":"x"}`, 400, "", 0, false, "topic"},
		{"QoS 3", `{"topic":"p/1","qos":3}`, 400, "", 0, false, "qos"},
		{"bad base64", `{"topic":"p/1","payload":"!!","payload_encoding":"base64"}`, 400, "", 0, false, "base64"},
		{"unknown encoding", `{"topic":"p/1","payload_encoding":"hex"}`, 400, "", 0, false, "payload_encoding"},
		{"unknown field", `{"topic":"p/1","qso":1}`, 400, "", 0, false, "qso"},
		{"not JSON", `topic=p/1`, 400, "", 0, false, "body"},
		{"two values", `{"topic":"p/1"}{}`, 400, "", 0, false, "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.status != 200 {
				if msg := e.errorOf(t, "POST", "/api/v1/publish", tt.body, tt.status); !strings.Contains(msg, tt.errHas) {
					t.Errorf("error %q does not mention %q", msg, tt.errHas)
				}
				return
			}
			e.getJSON(t, "POST", "/api/v1/publish", tt.body, 200, nil)
			select { // in-process handlers run before Publish returns
			case m := <-got:
				if string(m.Payload) != tt.payload || m.QoS != tt.qos || m.Retain != tt.retain {
					t.Errorf("delivered %q QoS %d retain %v", m.Payload, m.QoS, m.Retain)
				}
			default:
				t.Fatal("not delivered")
			}
		})
	}
	if _, ok := e.ts.RetainedMessage("p/2"); !ok {
		t.Error("retained publish not retained")
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	c := e.ts.Dial(t, packets.V5)
	c.MustConnect("s")
	if err := e.ts.Publish("t", []byte("x"), true, 0); err != nil {
		t.Fatal(err)
	}
	var st admin.Stats
	// The connection is counted just after the CONNACK is sent, its bytes
	// when its reader flushes its counts (at the end of a read batch).
	terntest.Eventually(t, "the connection and its bytes to be counted", func() bool {
		e.getJSON(t, "GET", "/api/v1/stats", "", 200, &st)
		return st.ClientsConnected == 1 && st.BytesReceived > 0
	})
	if st.Version != tern.Version || st.ClientsConnected != 1 || st.Sessions != 1 || st.ConnectionsAccepted != 1 ||
		st.MessagesReceived != 1 || st.Retained != 1 || st.BytesReceived == 0 || time.Since(st.StartedAt) > time.Minute {
		t.Errorf("stats %+v", st)
	}
}

// Handle adds a route behind the API's authentication.
func TestHandleAddsAuthenticatedRoute(t *testing.T) {
	srv := terntest.NewServer(t, nil)
	a := admin.New(srv.Server, admin.Options{Tokens: []string{"0123456789abcdef0123"}})
	a.Handle("GET /api/v1/extra", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("extra")) }))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/v1/extra", nil)
	req.Host = "127.0.0.1" // httptest's example.com is no allowed host
	a.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("without a token: %d", rec.Code)
	}
	req = httptest.NewRequest("GET", "/api/v1/extra", nil)
	req.Host = "127.0.0.1"
	req.Header.Set("Authorization", "Bearer 0123456789abcdef0123")
	rec = httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Body.String() != "extra" {
		t.Fatalf("with a token: %d %q", rec.Code, rec.Body.String())
	}
}
