package admin

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ternmq/tern"
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
}

func clientJSON(ci tern.ClientInfo) Client {
	return Client{
		ClientID: ci.ID, Username: ci.Username, RemoteAddr: ci.RemoteAddr, Listener: ci.Listener,
		ProtocolVersion: ci.ProtocolVersion, CleanStart: ci.CleanStart, KeepAlive: ci.KeepAlive,
		ConnectedAt: ci.ConnectedAt.UTC(), SessionExpiry: ci.SessionExpiry, Inflight: ci.Inflight,
		Queued: ci.Queued, QueuedBytes: ci.QueuedBytes, PendingBytes: ci.PendingBytes, Dropped: dropsJSON(ci.Dropped),
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

func (a *Server) listClients(w http.ResponseWriter, r *http.Request) {
	cs := a.server().Clients()
	out := make([]Client, len(cs))
	for i, c := range cs {
		out[i] = clientJSON(c)
	}
	paginate(w, r, out)
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
}

func sessionJSON(si tern.SessionInfo) Session {
	return Session{ClientID: si.ClientID, Online: si.Online, Expiry: si.Expiry, Inflight: si.Inflight,
		Queued: si.Queued, QueuedBytes: si.QueuedBytes, Paged: si.Paged, Subscriptions: si.Subscriptions, Dropped: dropsJSON(si.Dropped)}
}

func (a *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	ss := a.server().Sessions()
	out := make([]Session, len(ss))
	for i, s := range ss {
		out[i] = sessionJSON(s)
	}
	paginate(w, r, out)
}

func (a *Server) getSession(w http.ResponseWriter, _ *http.Request, id string) {
	si, ok := a.server().SessionInfo(id)
	if !ok {
		writeError(w, http.StatusNotFound, "no session with that client id")
		return
	}
	writeJSON(w, http.StatusOK, sessionJSON(si))
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
	paginate(w, r, subscriptionsJSON(a.server().Subscriptions(r.URL.Query().Get("client_id"))))
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

// PublishRequest is the body of POST /api/v1/publish.
type PublishRequest struct {
	Topic           string `json:"topic"`
	Payload         string `json:"payload"`
	PayloadEncoding string `json:"payload_encoding"` // "plain" (the default: the payload as UTF-8) or "base64"
	QoS             int    `json:"qos"`
	Retain          bool   `json:"retain"`
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
	err := a.server().Publish(req.Topic, payload, req.Retain, byte(req.QoS))
	switch {
	case err == nil:
		a.logChange(r, "message published", "topic", req.Topic, "qos", req.QoS, "retain", req.Retain, "payload_size", len(payload))
		writeJSON(w, http.StatusOK, map[string]any{"topic": req.Topic, "payload_size": len(payload)})
	case errors.Is(err, tern.ErrInvalidTopic):
		writeError(w, http.StatusBadRequest, "topic: "+err.Error())
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
}

func (a *Server) stats(w http.ResponseWriter, _ *http.Request) {
	srv := a.server()
	st := srv.Stats()
	started := srv.StartedAt()
	mem, memLimit := srv.MessageMemory()
	byReason := make(map[string]int64, len(tern.DropReasons))
	for _, r := range tern.DropReasons {
		byReason[string(r)] = st.Dropped(r)
	}
	writeJSON(w, http.StatusOK, Stats{
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
	})
}
