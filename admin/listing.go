package admin

// Listing clients and sessions a page at a time, at any number of them:
//
//	GET /api/v1/sessions  sessions, online and offline
//	GET /api/v1/clients   connected clients (state=online implied)
//
// with these query parameters, all optional:
//
//	limit       1 to 1000 (default 100)
//	after       the cursor of the next page (meta.next of the page before); or
//	page        the page number, from 1 (deep pages of a sorted list cost more: use after)
//	search      a prefix of the field search_by names:
//	search_by   client_id (default), username or address
//	state       online or offline
//	listener    a listener's id (tcp, tls, ws, ...)
//	protocol    3 (MQTT 3.1), 4 (3.1.1) or 5
//	min_queued  at least this many messages queued (1: a backlog)
//	min_dropped at least this many messages dropped
//	sort        client_id (default), queued, inflight, dropped or connected_at
//	order       asc or desc (default: asc for client_id, desc for the others)
//
// The answer's meta has limit, count (how many match), hasnext and next
// (the cursor of the next page, absent after the last), and page (0 for a
// page asked by cursor). A page costs one pass over the sessions in the broker's session
// table (tern.Server.EachSession), with no copy of them: a few
// milliseconds at 100,000 sessions (BENCHMARKS.md). In client_id order the
// pass starts at the cursor, or at the prefix searched.

import (
	"cmp"
	"container/heap"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/ternmq/tern"
)

// sessionQuery is a listing request.
type sessionQuery struct {
	limit, page  int
	after        cursor
	search, by   string
	state        string
	listener     string
	protocol     byte
	minQueued    int
	minDropped   int64
	sort         string
	desc         bool
	byPage       bool
	onlineByPath bool // /api/v1/clients
}

// cursor is where a page starts: after the session with this id, and in a
// sorted listing this key.
type cursor struct {
	set bool
	key int64
	id  string
}

func (c cursor) String() string {
	if !c.set {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.key, 10) + "\x00" + c.id))
}

func parseCursor(s string) (cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, err
	}
	k, id, ok := strings.Cut(string(b), "\x00")
	key, err := strconv.ParseInt(k, 10, 64)
	if !ok || err != nil {
		return cursor{}, fmt.Errorf("not a cursor")
	}
	return cursor{set: true, key: key, id: id}, nil
}

// sortKeys are the sorts other than client_id, and the key each reads.
var sortKeys = map[string]func(*tern.SessionSummary) int64{
	"queued":       func(s *tern.SessionSummary) int64 { return int64(s.Queued) },
	"inflight":     func(s *tern.SessionSummary) int64 { return int64(s.Inflight) },
	"dropped":      func(s *tern.SessionSummary) int64 { return s.Dropped },
	"connected_at": func(s *tern.SessionSummary) int64 { return s.ConnectedAt.UnixNano() },
}

// maxSortedDepth bounds page × limit of a sorted listing asked by page:
// the pass keeps that many sessions.
const maxSortedDepth = 100_000

func parseSessionQuery(r *http.Request, online bool) (sessionQuery, error) {
	q := r.URL.Query()
	sq := sessionQuery{limit: defaultLimit, page: 1, by: "client_id", sort: "client_id", onlineByPath: online}
	num := func(name string, dst *int, lo, hi int) error {
		s := q.Get(name)
		if s == "" {
			return nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("%s: %q is not a whole number from %d to %d", name, s, lo, hi)
		}
		*dst = n
		return nil
	}
	var proto, dropped int
	for _, p := range []struct {
		name   string
		dst    *int
		lo, hi int
	}{{"limit", &sq.limit, 1, maxLimit}, {"page", &sq.page, 1, 1 << 30}, {"protocol", &proto, 3, 5},
		{"min_queued", &sq.minQueued, 0, 1 << 30}, {"min_dropped", &dropped, 0, 1 << 30}} {
		if err := num(p.name, p.dst, p.lo, p.hi); err != nil {
			return sq, err
		}
	}
	sq.protocol, sq.minDropped, sq.byPage = byte(proto), int64(dropped), q.Has("page")
	if s := q.Get("after"); s != "" {
		if sq.byPage {
			return sq, fmt.Errorf("give after or page, not both")
		}
		c, err := parseCursor(s)
		if err != nil {
			return sq, fmt.Errorf("after: %q is not a cursor this API gave", s)
		}
		sq.after = c
	}
	sq.search = q.Get("search")
	if by := q.Get("search_by"); by != "" {
		if by != "client_id" && by != "username" && by != "address" {
			return sq, fmt.Errorf("search_by: %q is not client_id, username or address", by)
		}
		sq.by = by
	}
	switch sq.state = q.Get("state"); sq.state {
	case "", "online", "offline":
	default:
		return sq, fmt.Errorf("state: %q is not online or offline", sq.state)
	}
	if online {
		if sq.state == "offline" {
			return sq, fmt.Errorf("state: clients are online; list offline sessions at /api/v1/sessions")
		}
		sq.state = "online"
	}
	sq.listener = q.Get("listener")
	if s := q.Get("sort"); s != "" {
		if _, ok := sortKeys[s]; !ok && s != "client_id" {
			return sq, fmt.Errorf("sort: %q is not client_id, queued, inflight, dropped or connected_at", s)
		}
		sq.sort = s
	}
	sq.desc = sq.sort != "client_id"
	switch o := q.Get("order"); o {
	case "":
	case "asc", "desc":
		sq.desc = o == "desc"
	default:
		return sq, fmt.Errorf("order: %q is not asc or desc", o)
	}
	if sq.sort == "client_id" && sq.desc {
		return sq, fmt.Errorf("order: client ids are listed in ascending order only")
	}
	if sq.sort != "client_id" && sq.byPage && sq.page*sq.limit > maxSortedDepth {
		return sq, fmt.Errorf("page: a sorted listing goes %d deep by page; use after", maxSortedDepth)
	}
	return sq, nil
}

// match reports whether a session passes the query's filters.
func (sq *sessionQuery) match(s *tern.SessionSummary) bool {
	switch {
	case sq.state == "online" && !s.Online, sq.state == "offline" && s.Online,
		sq.listener != "" && s.Listener != sq.listener,
		sq.protocol != 0 && s.ProtocolVersion != sq.protocol,
		s.Queued < sq.minQueued, s.Dropped < sq.minDropped:
		return false
	}
	switch {
	case sq.search == "" || sq.by == "client_id": // the pass keeps to the prefix
		return true
	case sq.by == "username":
		return strings.HasPrefix(s.Username, sq.search)
	}
	return strings.HasPrefix(s.RemoteAddr(), sq.search)
}

// listed is a page of a listing.
type listed struct {
	rows  []tern.SessionSummary
	count int
	next  cursor
}

// run lists the page the query asks for.
func (sq *sessionQuery) run(srv *tern.Server) listed {
	o := tern.ListOptions{}
	if sq.by == "client_id" {
		o.Prefix = sq.search
	}
	if key := sortKeys[sq.sort]; key != nil {
		return sq.runSorted(srv, o, key)
	}
	// In client id order: the pass starts at the cursor. Counting the
	// matches before it would cost a second pass; the count is that of the
	// whole listing, so a pass over all of it is made either way.
	var out listed
	skip := 0
	if sq.byPage {
		skip = (sq.page - 1) * sq.limit
	}
	srv.EachSession(o, func(s *tern.SessionSummary) bool {
		if !sq.match(s) {
			return true
		}
		out.count++
		if sq.after.set && s.ClientID <= sq.after.id {
			return true
		}
		switch {
		case skip > 0:
			skip--
		case len(out.rows) < sq.limit:
			out.rows = append(out.rows, *s)
		case !out.next.set:
			out.next = cursor{set: true, id: out.rows[len(out.rows)-1].ClientID}
		}
		return true
	})
	return out
}

// runSorted lists a page sorted by key: one pass keeping the best sessions
// after the cursor in a heap.
func (sq *sessionQuery) runSorted(srv *tern.Server, o tern.ListOptions, key func(*tern.SessionSummary) int64) listed {
	depth := sq.limit + 1
	if sq.byPage {
		depth = sq.page*sq.limit + 1
	}
	h := &rowHeap{desc: sq.desc}
	var out listed
	srv.EachSession(o, func(s *tern.SessionSummary) bool {
		if !sq.match(s) {
			return true
		}
		out.count++
		k := key(s)
		if sq.after.set && !h.before(sq.after.key, sq.after.id, k, s.ClientID) {
			return true // at or before the cursor
		}
		if h.Len() < depth {
			heap.Push(h, row{k, *s})
		} else if top := h.rows[0]; h.before(k, s.ClientID, top.key, top.sum.ClientID) {
			h.rows[0] = row{k, *s}
			heap.Fix(h, 0)
		}
		return true
	})
	sorted := make([]row, h.Len())
	for i := len(sorted) - 1; i >= 0; i-- {
		sorted[i] = heap.Pop(h).(row)
	}
	if sq.byPage {
		sorted = sorted[min((sq.page-1)*sq.limit, len(sorted)):]
	}
	if len(sorted) > sq.limit {
		last := sorted[sq.limit-1]
		out.next = cursor{set: true, key: last.key, id: last.sum.ClientID}
		sorted = sorted[:sq.limit]
	}
	for _, r := range sorted {
		out.rows = append(out.rows, r.sum)
	}
	return out
}

type row struct {
	key int64
	sum tern.SessionSummary
}

// rowHeap keeps the rows that come first in the listing's order, the last
// of them at the top.
type rowHeap struct {
	rows []row
	desc bool
}

// before reports whether (k1, id1) comes before (k2, id2) in the listing:
// by key, then by client id.
func (h *rowHeap) before(k1 int64, id1 string, k2 int64, id2 string) bool {
	c := cmp.Compare(k1, k2)
	if h.desc {
		c = -c
	}
	if c == 0 {
		c = strings.Compare(id1, id2)
	}
	return c < 0
}

func (h *rowHeap) Len() int { return len(h.rows) }
func (h *rowHeap) Less(i, j int) bool {
	return h.before(h.rows[j].key, h.rows[j].sum.ClientID, h.rows[i].key, h.rows[i].sum.ClientID)
}
func (h *rowHeap) Swap(i, j int) { h.rows[i], h.rows[j] = h.rows[j], h.rows[i] }
func (h *rowHeap) Push(x any)    { h.rows = append(h.rows, x.(row)) }
func (h *rowHeap) Pop() any {
	r := h.rows[len(h.rows)-1]
	h.rows = h.rows[:len(h.rows)-1]
	return r
}

// meta returns the meta of a page: Page is 0 for a page asked by cursor.
func (sq *sessionQuery) meta(l listed) Meta {
	m := Meta{Limit: sq.limit, Count: l.count, HasNext: l.next.set, Next: l.next.String()}
	if !sq.after.set {
		m.Page = sq.page
	}
	return m
}

func (a *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	sq, err := parseSessionQuery(r, false)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	srv := a.server()
	l := sq.run(srv)
	out := make([]Session, 0, len(l.rows))
	for i := range l.rows {
		out = append(out, a.sessionRow(srv, &l.rows[i]))
	}
	writeJSON(w, http.StatusOK, Page[Session]{out, sq.meta(l)})
}

func (a *Server) listClients(w http.ResponseWriter, r *http.Request) {
	sq, err := parseSessionQuery(r, true)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	srv := a.server()
	l := sq.run(srv)
	out := make([]Client, 0, len(l.rows))
	for _, s := range l.rows {
		if ci, ok := srv.ClientInfo(s.ClientID); ok { // gone since the pass: left out
			ci.Subscriptions = nil
			c := clientJSON(ci)
			out = append(out, c)
		}
	}
	writeJSON(w, http.StatusOK, Page[Client]{out, sq.meta(l)})
}
