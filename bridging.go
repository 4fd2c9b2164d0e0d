package tern

import (
	"os"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// What the core does for bridges, its own (package bridge) and other
// brokers' (Mosquitto's, EMQX's):
//
//   - A 3.1 or 3.1.1 client whose CONNECT sets the bridge bit in the
//     protocol level (0x83, 0x84: Mosquitto's try_private) is accepted as a
//     bridge. Each of its subscriptions is treated as No Local and Retain As
//     Published, as Mosquitto and EMQX do: it is not sent back what it
//     published (which would loop through the other broker) and retained
//     messages keep their flag (so the other broker retains them too).
//   - A v5 client whose CONNECT carries the user property "tern-node" (a
//     Tern bridge, giving its own node id) is told this broker's NodeID in
//     the same property of the CONNACK, so that it can keep messages from
//     going back to a broker they came from (see package bridge).

// NodeProperty is the user property in which Tern bridges exchange node
// ids: a bridge's CONNECT carries its own, and a Tern broker answers with
// its NodeID in the CONNACK.
const NodeProperty = "tern-node"

// NodeID returns the broker's node id (Options.NodeID).
func (s *Server) NodeID() string { return s.cfg.NodeID }

// UserProperties returns the user properties of the client's CONNECT (v5
// clients; nil for others). Do not modify them.
func (c *Client) UserProperties() []packets.UserProperty {
	if c.extra == nil {
		return nil
	}
	return c.extra.user
}

// IsBridge reports whether the client connected as a 3.x bridge, with the
// bridge bit set in its protocol level.
func (c *Client) IsBridge() bool { return c.bridge }

// bridgeOptions gives a subscription of a 3.x bridge the options a v5
// bridge would ask for: No Local [MQTT-3.8.3-3] (not on a shared
// subscription, where it is not allowed [MQTT-3.8.3-4]) and Retain As
// Published.
func (c *Client) bridgeOptions(req *packets.Subscription) {
	if c.bridge {
		_, _, shared := topics.ParseShared(req.Filter)
		req.NoLocal = !shared
		req.RetainAsPublished = true
	}
}

// answerNode adds the broker's node id to the CONNACK properties ap when
// the CONNECT asked for it with the NodeProperty user property.
func (s *Server) answerNode(pk *packets.Connect, ap *packets.Properties) {
	for _, u := range pk.Properties.User {
		if u.Key == NodeProperty {
			ap.User = append(ap.User, packets.UserProperty{Key: NodeProperty, Value: s.cfg.NodeID})
			return
		}
	}
}

// defaultNodeID is the host name, or "tern" when it is unknown.
func defaultNodeID() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "tern"
}
