// Package bridge connects a Tern broker to other MQTT brokers (Tern,
// Mosquitto, EMQX, any MQTT 3.1, 3.1.1 or 5 server): store and forward,
// loop-safe, with Mosquitto's topic rules.
//
// Each bridge is a durable session inside the local broker (client id
// "$bridge/<name>", connected over memory with tern.Server.DialInProcess,
// subscribed with No Local to what it exports) joined to a client
// connection to the remote broker. What waits for the remote is that
// session's queue: persisted in the broker's store, bounded (Config.Queue),
// counted in the broker's metrics. A message leaves it only when the
// remote acknowledges it, and an incoming message is acknowledged to the
// remote only once the local broker has acknowledged it, after storing it.
// Messages are therefore delivered at least once (QoS 1) or exactly once
// (QoS 2) across a restart of either broker and a cut link; a QoS 1
// message in flight when the link fails is sent again, so a failure
// duplicates at most MaxInflight messages.
//
// Loops: the local session subscribes with No Local (a bridge never exports
// what it imported); on a v5 remote the bridge subscribes with No Local
// too, and on 3.1.x remotes it connects with the bridge bit (try_private)
// that Mosquitto, EMQX and Tern read the same way. For meshes each
// forwarded message carries the node ids of the brokers it crossed in
// "tern-via" user properties: a bridge does not forward a message to a
// broker it has been on (a Tern remote tells its node id in its CONNACK),
// nor one that has crossed MaxHops bridges. Tern bridges also announce what
// they forward unrenamed ("tern-pull", "tern-push"), so that links
// configured on both sides and full meshes deliver one copy (peers.go).
//
// Use a Manager for several bridges and reloads; New for a single bridge
// as a hook:
//
//	m, err := bridge.NewManager(log, bridge.Config{
//		Name:      "cloud",
//		Addresses: []string{"tls://cloud.example:8883"},
//		Topics:    []bridge.Topic{{Pattern: "sensors/#", Direction: bridge.Out, QoS: 1, RemotePrefix: "site17/"}},
//	})
//	if err := srv.AddHook(m); err != nil { ... } // before Serve
package bridge
