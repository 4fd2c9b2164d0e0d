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
// its own name), but the other nodes hear both: before it joins, a node
// asks them on tern.whois whether another process of its name is alive,
// and stays out (state refused, /readyz 503) while one is.

// whoisAnswer is a node's answer on tern.whois: the process that holds the
// name asked about, as the answering node last heard it.
type whoisAnswer struct {
	By       string `json:"by"`
	Instance string `json:"instance"`
	HeardMs  int64  `json:"heard_ms_ago"`
	Started  int64  `json:"started,omitempty"`
}

// whoisFresh is how recently a node must have heard another process of a
// name for it to hold the name: two heartbeats. A node restarted after a
// crash waits at most this long for its old heartbeats to age.
func (c *Cluster) whoisFresh() time.Duration { return c.opts.LeaseTTL / 3 }

// whois answers another node's question on tern.whois when this node
// knows another live process of the name asked about; it says nothing
// otherwise (the asker takes silence for a free name).
func (t *nodeTable) whois(msg *nats.Msg) {
	c := t.c
	name, inst := msg.Header.Get("Node"), msg.Header.Get("Instance")
	if name == "" || inst == "" || msg.Reply == "" {
		return
	}
	var a whoisAnswer
	if name == c.opts.Node {
		if inst == c.instance {
			return
		}
		a = whoisAnswer{By: c.opts.Node, Instance: c.instance, Started: c.started.UnixMilli()}
	} else {
		t.mu.Lock()
		n := t.nodes[name]
		if n == nil || !n.Alive || n.instance == inst || time.Since(n.Renewed) > c.whoisFresh() {
			t.mu.Unlock()
			return
		}
		a = whoisAnswer{By: c.opts.Node, Instance: n.instance, HeardMs: time.Since(n.Renewed).Milliseconds()}
		t.mu.Unlock()
	}
	b, _ := json.Marshal(a)
	c.nc.Publish(msg.Reply, b)
}

// nameHeld asks the other nodes whether another live process holds this
// node's name; it returns why it is held, or "" when no node says so
// within a short wait (none at all when no node listens).
func (c *Cluster) nameHeld() (string, error) {
	msg := nats.NewMsg("tern.whois")
	msg.Header.Set("Node", c.opts.Node)
	msg.Header.Set("Instance", c.instance)
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
	return fmt.Sprintf("node name %q is held by another live process (instance %s, heard by %s %dms ago): give each node its own cluster.node",
		c.opts.Node, a.Instance, a.By, a.HeardMs), nil
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
