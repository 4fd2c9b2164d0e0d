package admin_test

// The API calls the dashboard makes, as a script makes them.

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/hooks/trace"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// listIDs lists sessions with the query and returns their client ids and
// the meta.
func listIDs(t *testing.T, e *env, path string) ([]string, admin.Meta) {
	t.Helper()
	var p admin.Page[admin.Session]
	e.getJSON(t, "GET", path, "", 200, &p)
	return ids(p.Data, func(s admin.Session) string { return s.ClientID }), p.Meta
}

func TestSessionListing(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	connect := func(id, user string, v byte) *terntest.Conn {
		c := e.ts.Dial(t, v)
		pk := &packets.Connect{ClientID: id, CleanStart: true, KeepAlive: 30, UsernameFlag: user != "", Username: user}
		if ack := c.Connect(pk); ack.ReasonCode != 0 {
			t.Fatal(id, ack.ReasonCode)
		}
		return c
	}
	connect("a1", "alice", packets.V5)
	connect("a2", "bob", packets.V311)
	connect("b1", "", packets.V5)
	off := e.ts.Dial(t, packets.V5)
	expiry := uint32(3600)
	off.Connect(&packets.Connect{ClientID: "off", CleanStart: true, Properties: packets.Properties{SessionExpiry: &expiry}})
	subscribe(t, off, packets.Subscription{Filter: "q/#", QoS: 1})
	off.Send(&packets.Disconnect{})
	off.ExpectClosed()
	for range 2 {
		if err := e.ts.Publish("q/1", []byte("for off"), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	terntest.Eventually(t, "off to be offline with 2 queued", func() bool {
		got, _ := listIDs(t, e, "/api/v1/sessions?state=offline&min_queued=2")
		return slices.Equal(got, []string{"off"})
	})

	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"", []string{"a1", "a2", "b1", "off"}},
		{"?search=a", []string{"a1", "a2"}},
		{"?search=ali&search_by=username", []string{"a1"}},
		{"?search=127.0.0.1:&search_by=address", []string{"a1", "a2", "b1", "off"}},
		{"?search=10.&search_by=address", nil},
		{"?state=online", []string{"a1", "a2", "b1"}},
		{"?state=offline", []string{"off"}},
		{"?protocol=4", []string{"a2"}},
		{"?listener=tcp&protocol=5", []string{"a1", "b1", "off"}},
		{"?listener=ws", nil},
		{"?min_queued=1", []string{"off"}},
		{"?sort=queued&limit=2", []string{"off", "a1"}}, // most queued first, then by id
		{"?sort=queued&order=asc&limit=3", []string{"a1", "a2", "b1"}},
	} {
		if got, _ := listIDs(t, e, "/api/v1/sessions"+tt.query); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.query, got, tt.want)
		}
	}
	// Clients are the online sessions, with the same parameters.
	var cp admin.Page[admin.Client]
	e.getJSON(t, "GET", "/api/v1/clients?search=a&sort=connected_at&order=asc", "", 200, &cp)
	if got := ids(cp.Data, func(c admin.Client) string { return c.ClientID }); !slices.Equal(got, []string{"a1", "a2"}) || cp.Meta.Count != 2 {
		t.Errorf("clients: %v %+v", got, cp.Meta)
	}

	// Cursors walk every listing to its end, in order, once each.
	for _, q := range []string{"limit=1", "limit=3", "limit=1&sort=queued", "limit=2&sort=connected_at&order=asc", "limit=1&search=a"} {
		var all []string
		next := ""
		for range 10 {
			path := "/api/v1/sessions?" + q
			if next != "" {
				path += "&after=" + next
			}
			got, meta := listIDs(t, e, path)
			all = append(all, got...)
			if !meta.HasNext {
				break
			}
			next = meta.Next
		}
		whole, _ := listIDs(t, e, "/api/v1/sessions?"+strings.Replace(q, "limit=", "x=", 1))
		if !slices.Equal(all, whole) {
			t.Errorf("%s by cursor: %v, want %v", q, all, whole)
		}
	}
	for _, bad := range []string{"search_by=id", "state=gone", "protocol=6", "sort=name", "order=up", "order=desc",
		"after=!!", "after=MA&page=2", "min_queued=-1", "sort=queued&page=1001&limit=100"} {
		e.errorOf(t, "GET", "/api/v1/sessions?"+bad, "", 400)
	}
	e.errorOf(t, "GET", "/api/v1/clients?state=offline", "", 400)
}

func TestBrowseAndBulk(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	a := e.ts.Dial(t, packets.V5)
	a.MustConnect("a")
	subscribe(t, a, packets.Subscription{Filter: "s/+", QoS: 1}, packets.Subscription{Filter: "$share/g/s/+"})
	b := e.ts.Dial(t, packets.V5)
	b.MustConnect("b")
	subscribe(t, b, packets.Subscription{Filter: "$share/g/s/+"}, packets.Subscription{Filter: "t/#"})
	for _, topic := range []string{"r/x", "r/y/z", "s/1"} {
		if err := e.ts.Publish(topic, []byte("v"), true, 0); err != nil {
			t.Fatal(err)
		}
	}

	var fs admin.Page[admin.FilterInfo]
	e.getJSON(t, "GET", "/api/v1/subscriptions/filters", "", 200, &fs)
	want := []admin.FilterInfo{{Filter: "s/+", Subscribers: 1, SharedGroups: []admin.SharedGroup{{Group: "g", Filter: "s/+", Members: []string{"a", "b"}}}},
		{Filter: "t/#", Subscribers: 1}}
	if js, wjs := mustJSON(fs.Data), mustJSON(want); js != wjs {
		t.Errorf("filters: %s, want %s", js, wjs)
	}
	e.getJSON(t, "GET", "/api/v1/subscriptions/filters?under=t", "", 200, &fs)
	if len(fs.Data) != 1 || fs.Data[0].Filter != "t/#" {
		t.Errorf("filters under t: %+v", fs.Data)
	}
	var sg admin.Page[admin.SharedGroup]
	e.getJSON(t, "GET", "/api/v1/subscriptions/shared", "", 200, &sg)
	if len(sg.Data) != 1 || sg.Data[0].Group != "g" || !slices.Equal(sg.Data[0].Members, []string{"a", "b"}) {
		t.Errorf("shared: %+v", sg.Data)
	}
	var subs admin.Page[admin.Subscription]
	e.getJSON(t, "GET", "/api/v1/subscriptions?filter=s/%2B", "", 200, &subs)
	if got := ids(subs.Data, func(s admin.Subscription) string { return s.ClientID + ":" + s.Group }); !slices.Equal(got, []string{"a:", "a:g", "b:g"}) {
		t.Errorf("subscribers of s/+: %v", got)
	}
	e.errorOf(t, "GET", "/api/v1/subscriptions?filter=s/%2B&client_id=a", "", 400)

	var tree admin.Page[admin.TopicLevel]
	e.getJSON(t, "GET", "/api/v1/topics", "", 200, &tree)
	if got := ids(tree.Data, func(l admin.TopicLevel) string { return l.Path }); !slices.Equal(got, []string{"r", "s", "t"}) {
		t.Errorf("topic tree: %v", got)
	}
	e.getJSON(t, "GET", "/api/v1/topics?parent=r", "", 200, &tree)
	if js := mustJSON(tree.Data); js != `[{"name":"x","path":"r/x","subscriptions":0,"retained":true,"below":false},{"name":"y","path":"r/y","subscriptions":0,"retained":false,"below":true}]` {
		t.Errorf("below r: %s", js)
	}

	// Retained messages deleted by filter.
	var del map[string]int
	e.getJSON(t, "DELETE", "/api/v1/retained?filter=r/%23", "", 200, &del)
	if del["deleted"] != 2 {
		t.Errorf("deleted %v", del)
	}
	var ret admin.Page[admin.Retained]
	e.getJSON(t, "GET", "/api/v1/retained", "", 200, &ret)
	if len(ret.Data) != 1 || ret.Data[0].Topic != "s/1" {
		t.Errorf("retained left: %+v", ret.Data)
	}
	e.errorOf(t, "DELETE", "/api/v1/retained", "", 400)
	e.errorOf(t, "DELETE", "/api/v1/retained?filter=a/%23/b", "", 400)

	// Bulk: JSON only, as every change.
	if code, _, _ := e.doRaw(t, "POST", "/api/v1/clients/disconnect", "text/plain", `{"client_ids":["a"]}`); code != http.StatusUnsupportedMediaType {
		t.Errorf("a text/plain bulk disconnect: %d", code)
	}
	var res admin.BulkResult
	e.getJSON(t, "POST", "/api/v1/clients/disconnect", `{"client_ids":["a","nobody"]}`, 200, &res)
	if !slices.Equal(res.Done, []string{"a"}) || !slices.Equal(res.NotFound, []string{"nobody"}) {
		t.Errorf("bulk disconnect: %+v", res)
	}
	a.ExpectClosed()
	e.getJSON(t, "POST", "/api/v1/sessions/delete", `{"client_ids":["b"]}`, 200, &res)
	if !slices.Equal(res.Done, []string{"b"}) {
		t.Errorf("bulk delete: %+v", res)
	}
	b.ExpectClosed()
	terntest.Eventually(t, "b's session to end", func() bool { _, ok := e.ts.SessionInfo("b"); return !ok })
	for _, bad := range []string{`{"client_ids":[]}`, `{"ids":["a"]}`, `{"client_ids":["a"]} {}`, `[`} {
		e.errorOf(t, "POST", "/api/v1/sessions/delete", bad, 400)
	}

	var ls admin.Page[admin.Listener]
	e.getJSON(t, "GET", "/api/v1/listeners", "", 200, &ls)
	if len(ls.Data) == 0 || ls.Data[0].ID != "tcp" || ls.Data[0].Address == "" {
		t.Errorf("listeners: %+v", ls.Data)
	}
	var cl admin.Cluster
	e.getJSON(t, "GET", "/api/v1/cluster", "", 200, &cl)
	if cl.Clustered || len(cl.Nodes) != 1 || !cl.Nodes[0].Self || cl.Nodes[0].State != "running" {
		t.Errorf("cluster: %+v", cl)
	}
	if code, _, body := e.do(t, "GET", "/api/v1/config", ""); code != http.StatusNoContent || len(body) != 0 {
		t.Errorf("config of an embedded broker: %d %q", code, body)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// doRaw sends a request with a body of the content type.
func (e *env) doRaw(t *testing.T, method, path, ctype, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.Header, nil
}

// openStream opens an event stream and returns a reader of its lines.
func (e *env) openStream(t *testing.T, path string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// nextEvent reads the next event of a stream, skipping comments.
func nextEvent(t *testing.T, rd *bufio.Reader) (name, data string) {
	t.Helper()
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			name = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		case line == "" && name != "":
			return name, data
		}
	}
}

func TestMetricsHistoryAndStream(t *testing.T) {
	e := newEnv(t, nil, admin.Options{})
	c := e.ts.Dial(t, packets.V5)
	c.MustConnect("one")

	resp, rd := e.openStream(t, "/api/v1/metrics/stream")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("stream: %d %q", resp.StatusCode, resp.Header)
	}
	var sample struct {
		Time   int64               `json:"time"`
		Values map[string]*float64 `json:"values"`
		Stats  admin.Stats         `json:"stats"`
	}
	// Samples until one counts the client (the first may predate it).
	for range 10 {
		name, data := nextEvent(t, rd)
		if name != "sample" {
			t.Fatalf("event %q", name)
		}
		if err := json.Unmarshal([]byte(data), &sample); err != nil {
			t.Fatal(err)
		}
		if sample.Stats.ClientsConnected == 1 {
			break
		}
	}
	if sample.Stats.ClientsConnected != 1 || sample.Time == 0 || sample.Values["clients_connected"] == nil {
		t.Errorf("sample: %+v", sample)
	}

	var h struct {
		Step   int                   `json:"step"`
		Time   []int64               `json:"time"`
		Series map[string][]*float64 `json:"series"`
	}
	e.getJSON(t, "GET", "/api/v1/metrics/history", "", 200, &h)
	if h.Step != 1 || len(h.Time) == 0 || len(h.Series["messages_received"]) != len(h.Time) || h.Series["dropped_queue_full"] == nil {
		t.Errorf("history: %+v", h)
	}
	e.getJSON(t, "GET", "/api/v1/metrics/history?range=24h", "", 200, &h)
	if h.Step != 10 || len(h.Time) == 0 {
		t.Errorf("24h history: step %d, %d points", h.Step, len(h.Time))
	}
	for _, bad := range []string{"0s", "25h", "day"} {
		e.errorOf(t, "GET", "/api/v1/metrics/history?range="+bad, "", 400)
	}

	// Shutdown ends the streams: it does not wait for them until its
	// context ends.
	ctx, cancel := context.WithTimeout(context.Background(), terntest.Timeout)
	defer cancel()
	if err := e.adm.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown with a stream open: %v", err)
	}
	for {
		if _, err := rd.ReadString('\n'); err != nil {
			break // the stream ended
		}
	}
}

func TestTraceStream(t *testing.T) {
	tr := trace.New(trace.Limits{})
	e := newEnv(t, nil, admin.Options{Tracer: tr}, tr)
	for _, bad := range []string{"", "?topic=a&client_id=b", "?topic=a/%23/b", "?address=nowhere", "?topic=a&format=xml",
		"?topic=a&duration=48h", "?topic=a&payload_bytes=5000"} {
		e.errorOf(t, "GET", "/api/v1/trace"+bad, "", 400)
	}
	resp, rd := e.openStream(t, "/api/v1/trace?topic=t/%23&format=jsonl&payload_bytes=4")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("trace: %d %q", resp.StatusCode, resp.Header)
	}
	terntest.Eventually(t, "the trace to run", func() bool { return tr.Stats().Active == 1 })
	if err := e.ts.Publish("t/1", []byte("payload"), false, 0); err != nil {
		t.Fatal(err)
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var ev trace.Event
	if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Type != "publish" || ev.Topic != "t/1" || ev.Payload != "payl" || !ev.Truncated {
		t.Errorf("event %s (%v)", line, err)
	}

	resp, rd = e.openStream(t, "/api/v1/trace?client_id=c")
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("trace: %q", resp.Header)
	}
	terntest.Eventually(t, "the second trace to run", func() bool { return tr.Stats().Active == 2 })
	c := e.ts.Dial(t, packets.V5)
	c.MustConnect("c")
	if name, data := nextEvent(t, rd); name != "trace" || !strings.Contains(data, `"type":"connect"`) {
		t.Errorf("event %s %s", name, data)
	}

	noTracer := newEnv(t, nil, admin.Options{})
	noTracer.errorOf(t, "GET", "/api/v1/trace?topic=x", "", 404)
}

// The dashboard's files are public, with the security headers every
// answer has, behind the same Host and Origin checks as the API.
func TestDashboardServing(t *testing.T) {
	e := newEnv(t, nil, admin.Options{Tokens: []string{"a-token-long-enough-for-this"}})
	for _, p := range []string{"/", "/ui/js/app.js", "/api/v1/stats", "/nothing"} {
		code, h, _ := e.do(t, "GET", p, "")
		if h.Get("X-Frame-Options") != "DENY" || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") ||
			h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s (%d): headers %q", p, code, h)
		}
	}
	if code, h, body := e.do(t, "GET", "/", ""); code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "ui/js/app.js") {
		t.Errorf("/: %d %q", code, h)
	}
	if code, _, _ := e.do(t, "GET", "/api/v1/stats", ""); code != 401 {
		t.Errorf("stats without credentials: %d", code)
	}
	// A page's call gets no WWW-Authenticate: the browser would ask for a
	// password itself, over the dashboard's login.
	req, _ := http.NewRequest("GET", e.base+"/api/v1/stats", nil)
	req.Header.Set("Sec-Fetch-Mode", "cors")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != "" {
		t.Errorf("a page's call: %d %q", resp.StatusCode, resp.Header)
	}
	for _, h := range [][2]string{{"Host", "attacker.example"}, {"Origin", "http://evil.example"}} {
		req, _ := http.NewRequest("GET", e.base+"/", nil)
		if h[0] == "Host" {
			req.Host = h[1]
		} else {
			req.Header.Set(h[0], h[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest && resp.StatusCode != http.StatusForbidden {
			t.Errorf("/ with %s %s: %d", h[0], h[1], resp.StatusCode)
		}
	}

	off := newEnv(t, nil, admin.Options{DisableDashboard: true})
	if code, _, _ := off.do(t, "GET", "/", ""); code != 404 {
		t.Errorf("a disabled dashboard: %d", code)
	}
	if code, _, _ := off.do(t, "GET", "/api/v1/stats", ""); code != 200 {
		t.Errorf("the API without the dashboard: %d", code)
	}
}
