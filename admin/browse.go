package admin

// Browsing subscriptions, topics, retained messages, listeners and the
// configuration, and changes to many clients at once:
//
//	GET    /api/v1/subscriptions/filters?under=a/b  filters with subscriptions (paged), with their shared groups
//	GET    /api/v1/subscriptions/shared              shared groups with their members (paged)
//	GET    /api/v1/subscriptions?filter=a/+          the subscribers of one filter (paged)
//	GET    /api/v1/topics?parent=a/b                 the levels below a/b of the tree of filters and retained topics
//	DELETE /api/v1/retained?filter=a/#               delete the retained messages a filter matches
//	GET    /api/v1/listeners                         listeners: address, connections, certificate expiry
//	GET    /api/v1/config                            the configuration in force, secrets hidden (YAML); 204 when not known
//	GET    /api/v1/cluster                           the nodes of the cluster and their state (this one alone when not clustered)
//	POST   /api/v1/clients/disconnect                {"client_ids": [...]}: disconnect them
//	POST   /api/v1/sessions/delete                   {"client_ids": [...]}: end their sessions
//
// A path of levels (under, parent) is the levels joined by "/"; absent, it
// is the root; present and empty, the empty first level of topics like
// "/a".

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ternmq/tern"
)

// maxBulk bounds the client ids of one bulk request.
const maxBulk = 1000

// levelsParam returns the path a query parameter gives: nil when absent.
func levelsParam(r *http.Request, name string) []string {
	q := r.URL.Query()
	if !q.Has(name) {
		return nil
	}
	return strings.Split(q.Get(name), "/")
}

// FilterInfo is a filter with subscriptions, as the API shows it.
type FilterInfo struct {
	Filter       string        `json:"filter"`
	Subscribers  int           `json:"subscribers"` // plain subscriptions
	SharedGroups []SharedGroup `json:"shared_groups,omitempty"`
}

// SharedGroup is a $share group, as the API shows it.
type SharedGroup struct {
	Group   string   `json:"group"`
	Filter  string   `json:"filter"`
	Members []string `json:"members"`
}

func (a *Server) subscriptionFilters(w http.ResponseWriter, r *http.Request) {
	fs := a.server().SubscriptionFilters(levelsParam(r, "under"))
	out := make([]FilterInfo, len(fs))
	for i, f := range fs {
		out[i] = FilterInfo{Filter: f.Filter, Subscribers: f.Subscribers}
		for _, g := range f.Groups {
			out[i].SharedGroups = append(out[i].SharedGroups, SharedGroup{Group: g.Name, Filter: f.Filter, Members: g.Members})
		}
	}
	paginate(w, r, out)
}

func (a *Server) sharedGroups(w http.ResponseWriter, r *http.Request) {
	var out []SharedGroup
	for _, f := range a.server().SubscriptionFilters(nil) {
		for _, g := range f.Groups {
			out = append(out, SharedGroup{Group: g.Name, Filter: f.Filter, Members: g.Members})
		}
	}
	paginate(w, r, out)
}

// TopicLevel is one level of the topic tree, as the API shows it.
type TopicLevel struct {
	Name          string `json:"name"`
	Path          string `json:"path"` // the levels from the root, joined by "/"
	Subscriptions int    `json:"subscriptions"`
	Retained      bool   `json:"retained"`
	Below         bool   `json:"below"` // levels go on below this one
}

func (a *Server) topicTree(w http.ResponseWriter, r *http.Request) {
	parent := levelsParam(r, "parent")
	levels := a.server().TopicTree(parent)
	out := make([]TopicLevel, len(levels))
	prefix := ""
	if parent != nil {
		prefix = strings.Join(parent, "/") + "/"
	}
	for i, l := range levels {
		out[i] = TopicLevel{Name: l.Name, Path: prefix + l.Name, Subscriptions: l.Subscriptions, Retained: l.Retained, Below: l.Below}
	}
	paginate(w, r, out)
}

func (a *Server) deleteRetainedByFilter(w http.ResponseWriter, r *http.Request) {
	filter := r.URL.Query().Get("filter")
	if filter == "" {
		writeError(w, http.StatusBadRequest, "filter: required (# for every retained message but $SYS ones)")
		return
	}
	srv := a.server()
	ms, err := srv.RetainedMessages(filter)
	if err != nil {
		writeError(w, http.StatusBadRequest, "filter: "+err.Error())
		return
	}
	n := 0
	for _, m := range ms {
		if srv.DeleteRetained(m.Topic) {
			n++
		}
	}
	a.logChange(r, "retained messages deleted", "filter", filter, "count", n)
	writeJSON(w, http.StatusOK, map[string]int{"deleted": n})
}

// Listener is a listener as the API shows it.
type Listener struct {
	ID             string       `json:"id"`
	Address        string       `json:"address"`
	Connections    int          `json:"connections"`
	MaxConnections int          `json:"max_connections,omitempty"`
	Certificate    *Certificate `json:"certificate,omitempty"`
}

// MarshalJSON writes a certificate with its days left.
func (c Certificate) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		File      string    `json:"file,omitempty"`
		NotBefore time.Time `json:"not_before"`
		NotAfter  time.Time `json:"not_after"`
		DaysLeft  int       `json:"days_left"`
	}{c.File, c.NotBefore.UTC(), c.NotAfter.UTC(), int(time.Until(c.NotAfter).Hours() / 24)})
}

func (a *Server) listeners(w http.ResponseWriter, r *http.Request) {
	certs := map[string]Certificate{}
	if a.opts.Certificates != nil {
		for _, c := range a.opts.Certificates() {
			certs[c.Name] = c
		}
	}
	var out []Listener
	for _, l := range a.server().Listeners() {
		li := Listener{ID: l.ID, Address: l.Address, Connections: l.Connections, MaxConnections: l.Limit}
		if c, ok := certs[l.ID]; ok {
			li.Certificate = &c
		}
		out = append(out, li)
	}
	paginate(w, r, out)
}

// Cluster is the answer of /api/v1/cluster.
type Cluster struct {
	Clustered bool   `json:"clustered"`
	Nodes     []Node `json:"nodes"`
	// Detail is the cluster layer's own view (package cluster's Status:
	// routes, forward counters, ...), when the broker is clustered.
	Detail any `json:"detail,omitempty"`
}

// SetClusterView makes /api/v1/cluster answer what view returns: a
// clustered broker's nodes. Without it the broker is its only node.
func (a *Server) SetClusterView(view func() Cluster) { a.clusterView.Store(&view) }

// Node is a broker of the cluster.
type Node struct {
	ID        string    `json:"id"`
	Self      bool      `json:"self"`
	State     string    `json:"state"` // running, starting or stopping
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
}

func (a *Server) cluster(w http.ResponseWriter, r *http.Request) {
	if v := a.clusterView.Load(); v != nil {
		writeJSON(w, http.StatusOK, (*v)())
		return
	}
	srv := a.server()
	state := "running"
	if !srv.Serving() || !a.ready.Load() {
		state = "stopping"
	}
	writeJSON(w, http.StatusOK, Cluster{Nodes: []Node{{ID: srv.NodeID(), Self: true, State: state, Version: tern.Version,
		StartedAt: srv.StartedAt().UTC()}}})
}

func (a *Server) config(w http.ResponseWriter, r *http.Request) {
	if a.opts.Config == nil { // an embedded broker: no configuration file
		w.WriteHeader(http.StatusNoContent)
		return
	}
	b, err := a.opts.Config()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeBody(w, r, "application/yaml; charset=utf-8", b)
}

// BulkRequest is the body of the bulk requests.
type BulkRequest struct {
	ClientIDs []string `json:"client_ids"`
}

// BulkResult is the answer of a bulk request: the client ids it acted on,
// and those it did not find (not connected, or without a session).
type BulkResult struct {
	Done     []string `json:"done"`
	NotFound []string `json:"not_found"`
}

// readJSON decodes the request's body into v, refusing more than max
// bytes, unknown fields and trailing data.
func readJSON(w http.ResponseWriter, r *http.Request, max int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "body: more than one JSON value")
		return false
	}
	return true
}

// bulk runs do for each client id of the request.
func (a *Server) bulk(w http.ResponseWriter, r *http.Request, what string, do func(*tern.Server, string) bool) {
	var req BulkRequest
	if !readJSON(w, r, 1<<20, &req) {
		return
	}
	if len(req.ClientIDs) == 0 || len(req.ClientIDs) > maxBulk {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("client_ids: 1 to %d of them", maxBulk))
		return
	}
	srv := a.server()
	res := BulkResult{Done: []string{}, NotFound: []string{}}
	for _, id := range req.ClientIDs {
		if do(srv, id) {
			res.Done = append(res.Done, id)
		} else {
			res.NotFound = append(res.NotFound, id)
		}
	}
	if len(res.Done) > 0 {
		a.logChange(r, what, "clients", res.Done)
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *Server) bulkDisconnect(w http.ResponseWriter, r *http.Request) {
	a.bulk(w, r, "clients disconnected", (*tern.Server).Kick)
}

func (a *Server) bulkDeleteSessions(w http.ResponseWriter, r *http.Request) {
	a.bulk(w, r, "sessions deleted", (*tern.Server).DeleteSession)
}
