package config

import (
	"net"
	"regexp"
)

// Cluster joins this broker to others as one broker (package cluster):
// any client may connect to any node. Off while listen is empty.
type Cluster struct {
	Name           string   `yaml:"name" flag:"cluster-name" usage:"cluster name: nodes of another name are refused"`
	Node           string   `yaml:"node" flag:"cluster-node" usage:"this node's name, unique in the cluster (default: node_id, else the host name)"`
	Listen         string   `yaml:"listen" flag:"cluster-listen" usage:"HOST:PORT of the route listener other nodes connect to; turns clustering on"`
	Advertise      string   `yaml:"advertise" flag:"cluster-advertise" usage:"HOST:PORT other nodes should use for this node's routes (behind NAT, or with listen on 0.0.0.0)"`
	Peers          []string `yaml:"peers" flag:"cluster-peers" usage:"route addresses of other nodes, HOST:PORT,... (a name with several addresses, as a Kubernetes headless service, gives each)"`
	MQTTAdvertise  string   `yaml:"mqtt_advertise" flag:"cluster-mqtt-advertise" usage:"this node's MQTT address, given to v5 clients in a Server Reference when another node drains or is fenced"`
	DataDir        string   `yaml:"data_dir" flag:"cluster-data-dir" usage:"directory of the replicated state (default: <persistence.data_dir>/cluster)"`
	Replicas       int      `yaml:"replicas" flag:"cluster-replicas" usage:"copies of the replicated state (0: 3, or fewer with fewer nodes in peers)"`
	LeaseTTL       Duration `yaml:"lease_ttl" flag:"cluster-lease-ttl" usage:"a node not heard from for this long is dead; one that hears no majority for 2/3 of it fences itself"`
	ForwardTimeout Duration `yaml:"forward_timeout" flag:"cluster-forward-timeout" usage:"wait for another node's acknowledgement of a QoS 1/2 message before parking it"`
	DrainTime      Duration `yaml:"drain_time" flag:"cluster-drain-time" usage:"after a session moved to another node, how long the old node forwards what arrives for it"`
	OnceEntries    int      `yaml:"once_entries" flag:"cluster-once-entries" usage:"QoS 2 messages from other nodes remembered (5 minutes at most) to drop a second copy (0: none)"`
	User           string   `yaml:"user" flag:"cluster-user" usage:"user name every route must present (with cluster.password_file)"`
	PasswordFile   string   `yaml:"password_file" flag:"cluster-password-file" usage:"file holding the routes' password"`
	CertFile       string   `yaml:"cert_file" flag:"cluster-tls-cert" usage:"PEM certificate of this node for route TLS"`
	KeyFile        string   `yaml:"key_file" flag:"cluster-tls-key" usage:"PEM private key for route TLS"`
	ClientCAFile   string   `yaml:"ca_file" flag:"cluster-tls-ca" usage:"PEM CA that signs every node's certificate (mutual route TLS)"`
}

// Enabled reports whether the broker is clustered.
func (c Cluster) Enabled() bool { return c.Listen != "" }

func defaultCluster() Cluster {
	return Cluster{Name: "tern", Replicas: 0, LeaseTTL: Duration(6e9), ForwardTimeout: Duration(2e9), DrainTime: Duration(20e9), OnceEntries: 1 << 18}
}

var nodeName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func (c *Config) validateCluster(v *validator) {
	cl := &c.Cluster
	if !cl.Enabled() {
		return
	}
	v.address("cluster.listen", cl.Listen)
	if cl.Advertise != "" {
		v.address("cluster.advertise", cl.Advertise)
	}
	for _, p := range cl.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			v.fail("cluster.peers", "%q is not HOST:PORT", p)
		}
	}
	if !nodeName.MatchString(cl.Name) {
		v.fail("cluster.name", "%q: use letters, digits, - and _ only", cl.Name)
	}
	if cl.Node != "" && !nodeName.MatchString(cl.Node) {
		v.fail("cluster.node", "%q: use letters, digits, - and _ only", cl.Node)
	}
	if cl.Replicas < 0 || cl.Replicas > 5 {
		v.fail("cluster.replicas", "%d: want 1 to 5, or 0 for the default", cl.Replicas)
	}
	if cl.LeaseTTL < Duration(1e9) {
		v.fail("cluster.lease_ttl", "must be at least 1s")
	}
	if cl.ForwardTimeout <= 0 {
		v.fail("cluster.forward_timeout", "must be positive")
	}
	if cl.DrainTime <= 0 {
		v.fail("cluster.drain_time", "must be positive")
	}
	if cl.OnceEntries < 0 {
		v.fail("cluster.once_entries", "must not be negative (0: none)")
	}
	if (cl.User == "") != (cl.PasswordFile == "") {
		v.fail("cluster.user", "cluster.user and cluster.password_file go together")
	}
	if (cl.CertFile == "") != (cl.KeyFile == "") {
		v.fail("cluster.cert_file", "cluster.cert_file and cluster.key_file go together")
	}
	if cl.ClientCAFile != "" && cl.CertFile == "" {
		v.fail("cluster.ca_file", "needs cluster.cert_file and cluster.key_file")
	}
}
