package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// A node name is held by one process at a time. Two processes of one name
// cannot reach each other (nats-server refuses a route from a server of
// its own name), but the other nodes have routes to both: before it
// joins, a node asks them on tern.whois whether they have a route to
// another server of its name, and stays out (state refused, /readyz 503)
// while one does. The routes, not the heartbeats, tell: the routes of a
// process that died close at once on its host, within three route pings
// (about 3 s) otherwise, so a node restarted after a crash is not refused
// for long, while a live duplicate keeps its routes.

// whoisAnswer is a node's answer on tern.whois: it has a route to another
// server of the name asked about.
type whoisAnswer struct {
	By       string `json:"by"`
	ServerID string `json:"server_id"`
	Instance string `json:"instance,omitempty"` // the process last heard under the name
	HeardMs  int64  `json:"heard_ms_ago,omitempty"`
}

// whois answers another node's question on tern.whois when this node has
// a route to another server of the name asked about (or is one); it says
// nothing otherwise (the asker takes silence for a free name).
func (t *nodeTable) whois(msg *nats.Msg) {
	c := t.c
	name, id := msg.Header.Get("Node"), msg.Header.Get("Server")
	if name == "" || id == "" || msg.Reply == "" {
		return
	}
	a := whoisAnswer{By: c.opts.Node}
	if name == c.opts.Node {
		if id == c.ns.ID() {
			return
		}
		a.ServerID, a.Instance = c.ns.ID(), c.instance
	} else {
		if a.ServerID = c.routedServer(name, id); a.ServerID == "" {
			return
		}
		t.mu.Lock()
		if n := t.nodes[name]; n != nil && n.Alive {
			a.Instance, a.HeardMs = n.instance, time.Since(n.Renewed).Milliseconds()
		}
		t.mu.Unlock()
	}
	b, _ := json.Marshal(a)
	c.nc.Publish(msg.Reply, b)
}

// routedServer returns the identifier of a server named name, other than
// except, that this node's embedded server has a route to; "" if none.
func (c *Cluster) routedServer(name, except string) string {
	rz, err := c.ns.Routez(nil)
	if err != nil {
		return ""
	}
	for _, r := range rz.Routes {
		if r.RemoteName == name && r.RemoteID != except {
			return r.RemoteID
		}
	}
	return ""
}

// nameHeld asks the other nodes whether another live server holds this
// node's name; it returns why it is held, or "" when no node says so
// within a short wait (none at all when no node listens).
func (c *Cluster) nameHeld() (string, error) {
	msg := nats.NewMsg("tern.whois")
	msg.Header.Set("Node", c.opts.Node)
	msg.Header.Set("Server", c.ns.ID())
	reply, err := c.nc.RequestMsg(msg, max(c.opts.LeaseTTL/12, 100*time.Millisecond))
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var a whoisAnswer
	if err := json.Unmarshal(reply.Data, &a); err != nil {
		return "", fmt.Errorf("tern.whois answer: %w", err)
	}
	why := fmt.Sprintf("node name %q is held by another live process: node %s has a route to it (server %s", c.opts.Node, a.By, a.ServerID)
	if a.Instance != "" {
		why += fmt.Sprintf(", instance %s, heard %dms ago", a.Instance, a.HeardMs)
	}
	return why + "); give each node its own cluster.node", nil
}

// refuse keeps this node out of the cluster for reason, logged once.
func (c *Cluster) refuse(reason string) {
	c.refusals.Add(1)
	if old := c.refused.Swap(&reason); old == nil {
		c.log.Error("node refused: not joining the cluster while another process holds its name", "reason", reason)
	}
}

// unrefuse lifts a refusal once its cause is gone.
func (c *Cluster) unrefuse() {
	if old := c.refused.Swap(nil); old != nil {
		c.log.Warn("the node name is free again: joining", "was", *old)
	}
}
