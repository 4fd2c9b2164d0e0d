package cluster

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/ternmq/tern/packets"
)

// Status is a node's view of the cluster: GET /api/v1/cluster.
type Status struct {
	Cluster string `json:"cluster"`
	Node    string `json:"node"`
	State   string `json:"state"` // joining, refused, catching_up, ready, fenced or draining
	// Reason says why a node is refused (another live process holds its
	// name), while it joins what it waits for, and while it catches up
	// which replica is behind (CaughtUp).
	Reason   string     `json:"reason,omitempty"`
	Routes   string     `json:"route_addr"`
	LeaseAge float64    `json:"lease_age_seconds"` // since this node last sent its heartbeat
	Nodes    []NodeInfo `json:"nodes"`
	// RemoteRoutes counts the other nodes' routes this node knows.
	RemoteRoutes int      `json:"remote_routes"`
	Replicas     int      `json:"replicas"`
	Forward      Counters `json:"forward"`
	// JetStream is filled by StatusWithJetStream only: it asks the
	// streams' leaders.
	JetStream *JetStreamStatus `json:"jetstream,omitempty"`
}

// JetStreamStatus is the state of the replicated state's JetStream
// streams, as their leaders report it.
type JetStreamStatus struct {
	MetaLeader string         `json:"meta_leader"` // the node leading JetStream's own metadata; "" during an election
	Streams    []StreamStatus `json:"streams"`
}

// StreamStatus is one of the cluster's streams (a bucket, or the park
// stream) and its replicas.
type StreamStatus struct {
	Name string `json:"name"`
	// Leader is the node whose replica takes writes; "" while the
	// stream has none (an election, or no quorum), when Error says why.
	Leader   string          `json:"leader"`
	Error    string          `json:"error,omitempty"`
	Messages uint64          `json:"messages"`
	Bytes    uint64          `json:"bytes"`
	Replicas []ReplicaStatus `json:"replicas,omitempty"` // the followers
}

// ReplicaStatus is a follower of a stream, as its leader sees it. A
// replica that stays not current with a lag while it is active does not
// catch up: a stream with fewer current replicas than a quorum stops
// taking writes when its leader goes.
type ReplicaStatus struct {
	Node    string  `json:"node"`
	Current bool    `json:"current"`
	Offline bool    `json:"offline,omitempty"`
	Lag     uint64  `json:"lag"`            // operations behind the leader
	Active  float64 `json:"active_seconds"` // since the leader last heard from it
}

// streamNames are the cluster's JetStream streams: its buckets' and the
// park stream.
var streamNames = []string{"KV_tern_members", "KV_tern_routes", "KV_tern_sessions", "KV_tern_retained",
	"KV_tern_wills", "KV_tern_subs", parkStream}

// StatusWithJetStream is Status with the JetStream streams' state, each
// asked of its leader within timeout (all at once).
func (c *Cluster) StatusWithJetStream(timeout time.Duration) Status {
	st := c.Status()
	js := &JetStreamStatus{Streams: make([]StreamStatus, len(streamNames))}
	switch {
	case c.Single():
		js.MetaLeader = c.opts.Node // JetStream not clustered: this node has it all
	case c.ns != nil:
		if info, err := c.ns.Jsz(&server.JSzOptions{}); err == nil && info.Meta != nil {
			js.MetaLeader = info.Meta.Leader
		}
	}
	var wg sync.WaitGroup
	for i, name := range streamNames {
		wg.Go(func() { js.Streams[i] = c.streamStatus(name, timeout) })
	}
	wg.Wait()
	st.JetStream = js
	return st
}

// streamStatus asks the stream's leader for its state.
func (c *Cluster) streamStatus(name string, timeout time.Duration) StreamStatus {
	out := StreamStatus{Name: name}
	if c.js == nil {
		out.Error = "not joined"
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	info := s.CachedInfo()
	out.Messages, out.Bytes = info.State.Msgs, info.State.Bytes
	out.Leader = c.opts.Node // a cluster of one: no replicas
	if ci := info.Cluster; ci != nil && !c.Single() {
		out.Leader = ci.Leader
		for _, p := range ci.Replicas {
			out.Replicas = append(out.Replicas, ReplicaStatus{Node: p.Name, Current: p.Current, Offline: p.Offline,
				Lag: p.Lag, Active: p.Active.Seconds()})
		}
	}
	return out
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
	case "ready":
		if err := c.CaughtUp(); err != nil {
			st.State, st.Reason = "catching_up", err.Error()
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
