package admin

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

func (a *Server) routes() {
	m := a.mux
	m.HandleFunc("GET /healthz", a.healthz)
	m.HandleFunc("GET /readyz", a.readyz)
	m.Handle("GET /metrics", metricsHandler(a.registry, a.opts.Logger))
	m.HandleFunc("GET /api/v1/stats", a.withServer(a.stats))
	m.HandleFunc("GET /api/v1/clients", a.withServer(a.listClients))
	m.HandleFunc("GET /api/v1/sessions", a.withServer(a.listSessions))
	m.HandleFunc("GET /api/v1/subscriptions", a.withServer(a.listSubscriptions))
	m.HandleFunc("GET /api/v1/retained", a.withServer(a.listRetained))
	m.HandleFunc("POST /api/v1/publish", a.withServer(a.publish))
	m.HandleFunc("POST /api/v1/clients/disconnect", a.withServer(a.bulkDisconnect))
	m.HandleFunc("POST /api/v1/sessions/delete", a.withServer(a.bulkDeleteSessions))
	m.HandleFunc("GET /api/v1/subscriptions/filters", a.withServer(a.subscriptionFilters))
	m.HandleFunc("GET /api/v1/subscriptions/shared", a.withServer(a.sharedGroups))
	m.HandleFunc("GET /api/v1/topics", a.withServer(a.topicTree))
	m.HandleFunc("DELETE /api/v1/retained", a.withServer(a.deleteRetainedByFilter))
	m.HandleFunc("GET /api/v1/listeners", a.withServer(a.listeners))
	m.HandleFunc("GET /api/v1/config", a.config)
	m.HandleFunc("GET /api/v1/cluster", a.withServer(a.cluster))
	m.HandleFunc("GET /api/v1/metrics/history", a.metricsHistory)
	m.HandleFunc("GET /api/v1/metrics/stream", a.metricsStream)
	m.HandleFunc("GET /api/v1/trace", a.trace)
	a.dashboardRoutes()
	// One client, session or retained message: rawRoute, which takes the
	// path as it is encoded (the mux would clean "a//b" into "a/b").
	a.raw = []rawRoute{
		{"/api/v1/clients/", map[string]func(http.ResponseWriter, *http.Request, string){
			http.MethodGet: a.getClient, http.MethodDelete: a.kickClient}},
		{"/api/v1/sessions/", map[string]func(http.ResponseWriter, *http.Request, string){
			http.MethodGet: a.getSession, http.MethodDelete: a.deleteSession}},
		{"/api/v1/retained/", map[string]func(http.ResponseWriter, *http.Request, string){
			http.MethodGet: a.getRetained, http.MethodDelete: a.deleteRetained}},
	}
	a.banRoutes()
}

// rawRoute is a route whose last part, a client id or a topic, is taken
// from the path exactly as it is percent-encoded.
type rawRoute struct {
	prefix  string
	methods map[string]func(w http.ResponseWriter, r *http.Request, name string)
}

// rawRoute returns the handler of a request for one client, session or
// retained message, or nil when the request is for something else. A
// query parameter (?id= for clients and sessions, ?topic= for retained
// messages) may give the name instead of the path: /api/v1/retained/?topic=a//b.
func (a *Server) rawRoute(w http.ResponseWriter, r *http.Request) http.HandlerFunc {
	path := r.URL.EscapedPath()
	for _, rr := range a.raw {
		rest, ok := strings.CutPrefix(path, rr.prefix)
		if !ok {
			continue
		}
		if _, ok := rr.methods[r.Method]; !ok {
			if _, pattern := a.mux.Handler(r); pattern != "" {
				return nil // POST /api/v1/clients/disconnect and the like
			}
		}
		return func(w http.ResponseWriter, r *http.Request) {
			name, err := url.PathUnescape(rest)
			if err != nil {
				writeError(w, http.StatusBadRequest, "path: "+err.Error())
				return
			}
			q := r.URL.Query()
			for _, p := range []string{"id", "topic"} {
				if q.Has(p) {
					if name != "" {
						writeError(w, http.StatusBadRequest, "give the name in the path or as ?"+p+"=, not both")
						return
					}
					name = q.Get(p)
				}
			}
			h := rr.methods[r.Method]
			if r.Method == http.MethodHead {
				h = rr.methods[http.MethodGet]
			}
			if h == nil {
				w.Header().Set("Allow", "GET, HEAD, DELETE")
				writeError(w, http.StatusMethodNotAllowed, "method not allowed")
				return
			}
			if name == "" {
				writeError(w, http.StatusNotFound, "not found")
				return
			}
			if a.server() == nil {
				starting(w)
				return
			}
			h(w, r, name)
		}
	}
	return nil
}

// withServer answers 503 while the broker is starting.
func (a *Server) withServer(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.server() == nil {
			starting(w)
			return
		}
		h(w, r)
	}
}

func starting(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, "the broker is starting")
}

// Paging.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// Meta describes one page of a list.
type Meta struct {
	Page    int  `json:"page"`    // from 1
	Limit   int  `json:"limit"`   // most items a page holds
	Count   int  `json:"count"`   // items in the whole list
	HasNext bool `json:"hasnext"` // a later page has items
	// Next is the cursor of the next page (the after parameter), in the
	// listings of clients and sessions; "" on the last page.
	Next string `json:"next,omitempty"`
}

// Page is the answer to a list request.
type Page[T any] struct {
	Data []T  `json:"data"`
	Meta Meta `json:"meta"`
}

// paginate writes the page of items the request asks for.
func paginate[T any](w http.ResponseWriter, r *http.Request, items []T) {
	q := r.URL.Query()
	page, limit := 1, defaultLimit
	for _, p := range []struct {
		name string
		dst  *int
		max  int
	}{{"page", &page, 1 << 30}, {"limit", &limit, maxLimit}} {
		s := q.Get(p.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > p.max {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: %q is not a whole number from 1 to %d", p.name, s, p.max))
			return
		}
		*p.dst = n
	}
	start := min((page-1)*limit, len(items))
	end := min(start+limit, len(items))
	data := items[start:end]
	if data == nil {
		data = []T{}
	}
	writeJSON(w, http.StatusOK, Page[T]{Data: data, Meta: Meta{Page: page, Limit: limit, Count: len(items), HasNext: end < len(items)}})
}

// Client is a connected client as the API shows it.
type Client struct {
	ClientID        string    `json:"client_id"`
	Username        string    `json:"username"`
	RemoteAddr      string    `json:"remote_addr"`
	Listener        string    `json:"listener"`
	ProtocolVersion byte      `json:"protocol_version"` // 3 (MQTT 3.1), 4 (3.1.1) or 5
	CleanStart      bool      `json:"clean_start"`
	KeepAlive       uint16    `json:"keep_alive"`
	ConnectedAt     time.Time `json:"connected_at"`
	SessionExpiry   uint32    `json:"session_expiry_interval"`
	Inflight        int       `json:"inflight"`
	Queued          int       `json:"queued"`
	QueuedBytes     int       `json:"queued_bytes"`
	PendingBytes    int       `json:"pending_bytes"`
	// Dropped counts messages dropped instead of delivered, by reason.
	Dropped map[string]int64 `json:"dropped,omitempty"`
	// Subscriptions is given for one client, not in lists.
	Subscriptions []Subscription `json:"subscriptions,omitempty"`
	Counts
}

func clientJSON(ci tern.ClientInfo) Client {
	return Client{
		ClientID: ci.ID, Username: ci.Username, RemoteAddr: ci.RemoteAddr, Listener: ci.Listener,
		ProtocolVersion: ci.ProtocolVersion, CleanStart: ci.CleanStart, KeepAlive: ci.KeepAlive,
		ConnectedAt: ci.ConnectedAt.UTC(), SessionExpiry: ci.SessionExpiry, Inflight: ci.Inflight,
		Queued: ci.Queued, QueuedBytes: ci.QueuedBytes, PendingBytes: ci.PendingBytes, Dropped: dropsJSON(ci.Dropped),
		Counts: countsJSON(ci.Counts),
	}
}

func dropsJSON(d map[tern.DropReason]int64) map[string]int64 {
	if d == nil {
		return nil
	}
	out := make(map[string]int64, len(d))
	for k, v := range d {
		out[string(k)] = v
	}
	return out
}

// Subscription is one subscription as the API shows it.
type Subscription struct {
	ClientID          string `json:"client_id"`
	Topic             string `json:"topic"` // as subscribed, with $share/{group}/ for a shared one
	Group             string `json:"group,omitempty"`
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"no_local"`
	RetainAsPublished bool   `json:"retain_as_published"`
	RetainHandling    byte   `json:"retain_handling"`
	Identifier        uint32 `json:"subscription_identifier,omitempty"`
}

func subscriptionsJSON(subs []topics.Subscription) []Subscription {
	out := make([]Subscription, len(subs))
	for i, s := range subs {
		topic := s.Filter
		if s.Group != "" {
			topic = "$share/" + s.Group + "/" + s.Filter
		}
		out[i] = Subscription{ClientID: s.ClientID, Topic: topic, Group: s.Group, QoS: s.QoS, NoLocal: s.NoLocal,
			RetainAsPublished: s.RetainAsPublished, RetainHandling: s.RetainHandling, Identifier: s.Identifier}
	}
	return out
}

func (a *Server) getClient(w http.ResponseWriter, _ *http.Request, id string) {
	ci, ok := a.server().ClientInfo(id)
	if !ok {
		writeError(w, http.StatusNotFound, "no connected client with that id")
		return
	}
	c := clientJSON(ci)
	c.Subscriptions = subscriptionsJSON(ci.Subscriptions)
	writeJSON(w, http.StatusOK, c)
}

func (a *Server) kickClient(w http.ResponseWriter, r *http.Request, id string) {
	if !a.server().Kick(id) {
		writeError(w, http.StatusNotFound, "no connected client with that id")
		return
	}
	a.logChange(r, "client disconnected", "client", id)
	w.WriteHeader(http.StatusNoContent)
}

// Session is a session as the API shows it.
type Session struct {
	ClientID      string `json:"client_id"`
	Online        bool   `json:"online"`
	Expiry        uint32 `json:"session_expiry_interval"` // 4294967295: never
	Inflight      int    `json:"inflight"`
	Queued        int    `json:"queued"`
	QueuedBytes   int    `json:"queued_bytes"`
	Paged         int    `json:"paged,omitempty"` // of queued, kept only in the store
	Subscriptions int    `json:"subscriptions"`
	// Dropped counts messages dropped instead of delivered, by reason.
	Dropped map[string]int64 `json:"dropped,omitempty"`
	// The connection attached, or the last one while offline (see
	// tern.SessionSummary): who, from where, what it carried, and when and
	// why it ended.
	Username         string     `json:"username,omitempty"`
	RemoteAddr       string     `json:"remote_addr,omitempty"`
	Listener         string     `json:"listener,omitempty"`
	ProtocolVersion  byte       `json:"protocol_version,omitempty"`
	ConnectedAt      *time.Time `json:"connected_at,omitempty"`
	DisconnectedAt   *time.Time `json:"disconnected_at,omitempty"`
	DisconnectReason string     `json:"disconnect_reason,omitempty"`
	Counts
}

// Counts are what a connection carried.
type Counts struct {
	MessagesReceived int64 `json:"messages_received"`
	MessagesSent     int64 `json:"messages_sent"`
	BytesReceived    int64 `json:"bytes_received"`
	BytesSent        int64 `json:"bytes_sent"`
}

func countsJSON(c tern.ConnectionCounts) Counts {
	return Counts{MessagesReceived: c.MessagesReceived, MessagesSent: c.MessagesSent,
		BytesReceived: c.BytesReceived, BytesSent: c.BytesSent}
}

// sessionRow returns the Session of a summary, with what SessionInfo adds.
func (a *Server) sessionRow(srv *tern.Server, sum *tern.SessionSummary) Session {
	out := Session{ClientID: sum.ClientID, Online: sum.Online, Inflight: sum.Inflight, Queued: sum.Queued,
		Username: sum.Username, RemoteAddr: sum.RemoteAddr(), Listener: sum.Listener, ProtocolVersion: sum.ProtocolVersion,
		DisconnectReason: sum.DisconnectReason, Counts: countsJSON(sum.Counts)}
	if si, ok := srv.SessionInfo(sum.ClientID); ok {
		out.Expiry, out.QueuedBytes, out.Subscriptions, out.Dropped = si.Expiry, si.QueuedBytes, si.Subscriptions, dropsJSON(si.Dropped)
		out.Paged = si.Paged
	}
	for _, t := range []struct {
		src time.Time
		dst **time.Time
	}{{sum.ConnectedAt, &out.ConnectedAt}, {sum.DisconnectedAt, &out.DisconnectedAt}} {
		if !t.src.IsZero() {
			u := t.src.UTC()
			*t.dst = &u
		}
	}
	return out
}

func (a *Server) getSession(w http.ResponseWriter, _ *http.Request, id string) {
	srv := a.server()
	sum, ok := srv.SessionSummary(id)
	if !ok {
		writeError(w, http.StatusNotFound, "no session with that client id")
		return
	}
	writeJSON(w, http.StatusOK, a.sessionRow(srv, &sum))
}

func (a *Server) deleteSession(w http.ResponseWriter, r *http.Request, id string) {
	if !a.server().DeleteSession(id) {
		writeError(w, http.StatusNotFound, "no session with that client id")
		return
	}
	a.logChange(r, "session deleted", "client", id)
	w.WriteHeader(http.StatusNoContent)
}

func (a *Server) listSubscriptions(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Has("filter") {
		if q.Has("client_id") {
			writeError(w, http.StatusBadRequest, "give client_id or filter, not both")
			return
		}
		paginate(w, r, subscriptionsJSON(a.server().FilterSubscriptions(q.Get("filter"))))
		return
	}
	paginate(w, r, subscriptionsJSON(a.server().Subscriptions(q.Get("client_id"))))
}

// Retained is a retained message as the API shows it. Lists leave the
// payload out.
type Retained struct {
	Topic           string         `json:"topic"`
	QoS             byte           `json:"qos"`
	PayloadSize     int            `json:"payload_size"`
	Payload         *string        `json:"payload,omitempty"`
	PayloadEncoding string         `json:"payload_encoding,omitempty"` // plain (UTF-8) or base64
	Origin          string         `json:"origin"`                     // the publisher's client id
	ReceivedAt      time.Time      `json:"received_at"`
	ExpiresAt       *time.Time     `json:"expires_at,omitempty"`
	ContentType     string         `json:"content_type,omitempty"`
	ResponseTopic   string         `json:"response_topic,omitempty"`
	UserProperties  []UserProperty `json:"user_properties,omitempty"`
}

// UserProperty is an MQTT 5 user property.
type UserProperty struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func retainedJSON(m *tern.Message, withPayload bool) Retained {
	out := Retained{Topic: m.Topic, QoS: m.QoS, PayloadSize: len(m.Payload), Origin: m.Origin, ReceivedAt: m.Created.UTC()}
	if t := m.ExpiresAt(); !t.IsZero() {
		t = t.UTC()
		out.ExpiresAt = &t
	}
	if p := m.Properties; p != nil {
		out.ContentType, out.ResponseTopic = p.ContentType, p.ResponseTopic
		for _, u := range p.User {
			out.UserProperties = append(out.UserProperties, UserProperty{Key: u.Key, Value: u.Value})
		}
	}
	if withPayload {
		s, enc := string(m.Payload), "plain"
		if !utf8.Valid(m.Payload) {
			s, enc = base64.StdEncoding.EncodeToString(m.Payload), "base64"
		}
		out.Payload, out.PayloadEncoding = &s, enc
	}
	return out
}

func (a *Server) listRetained(w http.ResponseWriter, r *http.Request) {
	ms, err := a.server().RetainedMessages(r.URL.Query().Get("filter"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "filter: "+err.Error())
		return
	}
	out := make([]Retained, len(ms))
	for i, m := range ms {
		out[i] = retainedJSON(m, false)
	}
	paginate(w, r, out)
}

func (a *Server) getRetained(w http.ResponseWriter, _ *http.Request, topic string) {
	m, ok := a.server().RetainedMessage(topic)
	if !ok {
		writeError(w, http.StatusNotFound, "no retained message on that topic")
		return
	}
	writeJSON(w, http.StatusOK, retainedJSON(m, true))
}

func (a *Server) deleteRetained(w http.ResponseWriter, r *http.Request, topic string) {
	if err := a.server().StoreHealth(); err != nil {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "the store cannot write now: "+err.Error())
		return
	}
	if !a.server().DeleteRetained(topic) {
		writeError(w, http.StatusNotFound, "no retained message on that topic")
		return
	}
	a.logChange(r, "retained message deleted", "topic", topic)
	w.WriteHeader(http.StatusNoContent)
}

// PublishRequest is the body of POST /api/v1/publish. The MQTT 5
// properties (content type, response topic, message expiry, user
// properties) go to MQTT 5 subscribers.
type PublishRequest struct {
	Topic           string         `json:"topic"`
	Payload         string         `json:"payload"`
	PayloadEncoding string         `json:"payload_encoding"` // "plain" (the default: the payload as UTF-8) or "base64"
	QoS             int            `json:"qos"`
	Retain          bool           `json:"retain"`
	ContentType     string         `json:"content_type"`
	ResponseTopic   string         `json:"response_topic"`
	MessageExpiry   uint32         `json:"message_expiry_interval"` // seconds; 0: none
	UserProperties  []UserProperty `json:"user_properties"`
}

// properties returns the request's MQTT 5 properties, nil when none.
func (req *PublishRequest) properties() *packets.Properties {
	if req.ContentType == "" && req.ResponseTopic == "" && req.MessageExpiry == 0 && len(req.UserProperties) == 0 {
		return nil
	}
	p := &packets.Properties{ContentType: req.ContentType, ResponseTopic: req.ResponseTopic, MessageExpiry: req.MessageExpiry}
	for _, u := range req.UserProperties {
		p.User = append(p.User, packets.UserProperty{Key: u.Key, Value: u.Value})
	}
	return p
}

// maxPublishBody bounds the body of a publish request.
const maxPublishBody = 64 << 20

func (a *Server) publish(w http.ResponseWriter, r *http.Request) {
	var req PublishRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPublishBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "body: more than one JSON value")
		return
	}
	payload := []byte(req.Payload)
	switch req.PayloadEncoding {
	case "", "plain":
	case "base64":
		var err error
		if payload, err = base64.StdEncoding.DecodeString(req.Payload); err != nil {
			writeError(w, http.StatusBadRequest, "payload: not base64: "+err.Error())
			return
		}
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("payload_encoding: %q is not plain or base64", req.PayloadEncoding))
		return
	}
	if req.Topic == "" {
		writeError(w, http.StatusBadRequest, "topic: required")
		return
	}
	if req.QoS < 0 || req.QoS > 2 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("qos: %d is not 0, 1 or 2", req.QoS))
		return
	}
	err := a.server().PublishWith(req.Topic, payload, req.Retain, byte(req.QoS), req.properties())
	switch {
	case err == nil:
		a.logChange(r, "message published", "topic", req.Topic, "qos", req.QoS, "retain", req.Retain, "payload_size", len(payload))
		writeJSON(w, http.StatusOK, map[string]any{"topic": req.Topic, "payload_size": len(payload)})
	case errors.Is(err, tern.ErrInvalidTopic):
		writeError(w, http.StatusBadRequest, "topic: "+err.Error())
	case errors.Is(err, tern.ErrInvalidProperty):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, tern.ErrInvalidQoS):
		writeError(w, http.StatusBadRequest, "qos: above the broker's maximum QoS")
	case errors.Is(err, tern.ErrNotAuthorized):
		writeError(w, http.StatusForbidden, err.Error())
	default:
		writeError(w, http.StatusUnprocessableEntity, "refused: "+err.Error())
	}
}

// Stats is the answer to GET /api/v1/stats.
type Stats struct {
	Version             string           `json:"version"`
	StartedAt           time.Time        `json:"started_at"`
	UptimeSeconds       int64            `json:"uptime_seconds"`
	ClientsConnected    int64            `json:"clients_connected"`
	ClientsMaximum      int64            `json:"clients_maximum"`
	Sessions            int64            `json:"sessions"`
	SessionsExpired     int64            `json:"sessions_expired"`
	ConnectionsAccepted int64            `json:"connections_accepted"`
	ConnectsRefused     int64            `json:"connects_refused"`
	AuthFailures        int64            `json:"auth_failures"`
	ProtocolErrors      int64            `json:"protocol_errors"`
	MessagesReceived    int64            `json:"messages_received"`
	MessagesSent        int64            `json:"messages_sent"`
	MessagesDropped     int64            `json:"messages_dropped"`
	DroppedByReason     map[string]int64 `json:"messages_dropped_by_reason"`
	MessagesExpired     int64            `json:"messages_expired"`
	PublishDenied       int64            `json:"publish_denied"`
	BytesReceived       int64            `json:"bytes_received"`
	BytesSent           int64            `json:"bytes_sent"`
	Retained            int64            `json:"retained_messages"`
	Subscriptions       int64            `json:"subscriptions"`
	Inflight            int64            `json:"inflight_messages"`
	Queued              int64            `json:"queued_messages"`
	WillsSent           int64            `json:"wills_sent"`
	MessageMemory       int64            `json:"message_memory_bytes"`
	MessageMemoryLimit  int64            `json:"message_memory_limit_bytes"` // 0: no limit
	RetainedRefused     int64            `json:"retained_refused"`
	WriteTimeouts       int64            `json:"write_timeouts"`
	MemoryBytes         int64            `json:"memory_bytes"` // memory the Go runtime holds from the system
	HeapBytes           int64            `json:"heap_bytes"`   // of which live and unswept heap objects
	Goroutines          int64            `json:"goroutines"`
}

func (a *Server) stats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, statsOf(a.server()))
}

// statsOf returns the /api/v1/stats answer of srv.
func statsOf(srv *tern.Server) Stats {
	st := srv.Stats()
	started := srv.StartedAt()
	mem, memLimit := srv.MessageMemory()
	byReason := make(map[string]int64, len(tern.DropReasons))
	for _, r := range tern.DropReasons {
		byReason[string(r)] = st.Dropped(r)
	}
	rt := readRuntime()
	return Stats{
		Version: tern.Version, StartedAt: started.UTC(), UptimeSeconds: int64(time.Since(started).Seconds()),
		ClientsConnected: st.ClientsConnected, ClientsMaximum: st.ClientsMaximum,
		Sessions: st.ClientsTotal, SessionsExpired: st.ClientsExpired,
		ConnectionsAccepted: st.ConnectionsAccepted, ConnectsRefused: st.ConnectsRefused,
		AuthFailures: st.AuthFailures, ProtocolErrors: st.ProtocolErrors,
		MessagesReceived: st.MessagesReceived, MessagesSent: st.MessagesSent,
		MessagesDropped: st.MessagesDropped, MessagesExpired: st.MessagesExpired,
		PublishDenied: st.PublishDenied, BytesReceived: st.BytesReceived, BytesSent: st.BytesSent,
		Retained: st.Retained, Subscriptions: st.Subscriptions, Inflight: st.InflightOut,
		Queued: st.Queued, WillsSent: st.WillsSent, DroppedByReason: byReason,
		MessageMemory: mem, MessageMemoryLimit: memLimit, RetainedRefused: st.RetainedRefused,
		WriteTimeouts: st.WriteTimeouts,
		MemoryBytes:   rt.total, HeapBytes: rt.heap, Goroutines: rt.goroutines,
	}
}

// runtimeStats are the process's memory and goroutines.
type runtimeStats struct{ total, heap, goroutines int64 }

// runtimeSamples are what readRuntime reads (runtime/metrics: no
// stop-the-world, unlike runtime.ReadMemStats).
var runtimeSamples = []string{"/memory/classes/total:bytes", "/memory/classes/heap/objects:bytes", "/sched/goroutines:goroutines"}

func readRuntime() runtimeStats {
	s := make([]metrics.Sample, len(runtimeSamples))
	for i, n := range runtimeSamples {
		s[i].Name = n
	}
	metrics.Read(s)
	v := func(i int) int64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return int64(s[i].Value.Uint64())
		}
		return 0
	}
	return runtimeStats{total: v(0), heap: v(1), goroutines: v(2)}
}
