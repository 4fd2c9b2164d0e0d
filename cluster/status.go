package cluster

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/ternmq/tern/packets"
)

// Status is a node's view of the cluster: GET /api/v1/cluster.
type Status struct {
	Cluster string `json:"cluster"`
	Node    string `json:"node"`
	State   string `json:"state"` // joining, refused, ready, fenced or draining
	// Reason says why a node is refused (another live process holds its
	// name) or, while it joins, what it waits for.
	Reason   string     `json:"reason,omitempty"`
	Routes   string     `json:"route_addr"`
	LeaseAge float64    `json:"lease_age_seconds"` // since this node last sent its heartbeat
	Nodes    []NodeInfo `json:"nodes"`
	// RemoteRoutes counts the other nodes' routes this node knows.
	RemoteRoutes int      `json:"remote_routes"`
	Replicas     int      `json:"replicas"`
	Forward      Counters `json:"forward"`
}

// Status returns the node's view of the cluster.
func (c *Cluster) Status() Status {
	st := Status{Cluster: c.opts.Name, Node: c.opts.Node, State: c.state(), Routes: c.RouteAddr(),
		Nodes: c.nodes.list(), RemoteRoutes: c.routes.count(), Replicas: c.replicas(), Forward: c.fwd.counters()}
	switch st.State {
	case "refused":
		if p := c.refused.Load(); p != nil { // lifted since state()
			st.Reason = *p
		}
	case "joining":
		if p := c.joinErr.Load(); p != nil {
			st.Reason = *p
		}
		if p := c.natsDup.Load(); p != nil {
			st.Reason = strings.TrimPrefix(st.Reason+"; nats-server refused a route: "+*p, "; ")
		}
	}
	c.nodes.mu.Lock()
	if !c.nodes.renewed.IsZero() {
		st.LeaseAge = time.Since(c.nodes.renewed).Seconds()
	}
	c.nodes.mu.Unlock()
	return st
}

func (c *Cluster) state() string {
	switch {
	case c.draining.Load():
		return "draining"
	case c.refused.Load() != nil:
		return "refused"
	case c.fenced.Load():
		return "fenced"
	case c.ready.Load():
		return "ready"
	}
	return "joining"
}

// Drain evacuates the node: CONNECTs are refused and every client is
// disconnected with 0x9C Use another server and the MQTT address of
// another node as Server Reference. It returns how many clients were
// disconnected.
func (c *Cluster) Drain() int {
	c.draining.Store(true)
	n := c.srv.DisconnectAll(packets.UseAnotherServer, c.nodes.reference())
	c.log.Info("draining: clients moved to other nodes", "disconnected", n)
	return n
}

// Handler serves GET /api/v1/cluster (the Status) and POST
// /api/v1/cluster/drain (Drain), for the admin API.
func (c *Cluster) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/cluster", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("POST /api/v1/cluster/drain", func(w http.ResponseWriter, _ *http.Request) {
		n := c.Drain()
		writeJSON(w, http.StatusOK, map[string]any{"state": c.state(), "disconnected": n})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
