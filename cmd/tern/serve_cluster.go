package main

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/cluster"
	"github.com/ternmq/tern/internal/config"
)

// setupCluster joins the broker to its cluster when cluster.listen is
// set: the node is a hook of the server, its status and drain are on the
// admin API, /readyz waits for it and /metrics counts its traffic.
func (b *broker) setupCluster(cfg *config.Config, log *slog.Logger) error {
	cc := cfg.Cluster
	if !cc.Enabled() {
		return nil
	}
	opts := cluster.Options{Name: cc.Name, Node: cc.Node, Listen: cc.Listen, Advertise: cc.Advertise, Peers: cc.Peers,
		DataDir: cc.DataDir, Replicas: cc.Replicas, MQTTAdvertise: cc.MQTTAdvertise, LeaseTTL: time.Duration(cc.LeaseTTL),
		ForwardTimeout: time.Duration(cc.ForwardTimeout), DrainTime: time.Duration(cc.DrainTime), OnceEntries: cmp.Or(cc.OnceEntries, -1), User: cc.User, Logger: log}
	if opts.Node == "" {
		opts.Node = nodeName(b.srv.NodeID())
	}
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(cfg.Persistence.DataDir, "cluster")
	}
	if cc.PasswordFile != "" {
		pw, err := os.ReadFile(cc.PasswordFile)
		if err != nil {
			return fmt.Errorf("cluster.password_file: %w", err)
		}
		opts.Password = strings.TrimSpace(string(pw))
	}
	if cc.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cc.CertFile, cc.KeyFile)
		if err != nil {
			return fmt.Errorf("cluster.cert_file: %w", err)
		}
		tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if cc.ClientCAFile != "" {
			pem, err := os.ReadFile(cc.ClientCAFile)
			if err != nil {
				return fmt.Errorf("cluster.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("cluster.ca_file: no PEM certificate in %s", cc.ClientCAFile)
			}
			tc.RootCAs, tc.ClientCAs, tc.ClientAuth = pool, pool, tls.RequireAndVerifyClientCert
		}
		opts.TLS = tc
	}
	cl, err := cluster.New(b.srv, opts)
	if err != nil {
		return err
	}
	if err := b.srv.AddHook(cl); err != nil {
		return err
	}
	b.adm.Handle("POST /api/v1/cluster/drain", cl.Handler())
	b.adm.SetClusterView(func() admin.Cluster {
		st := cl.StatusWithJetStream(time.Second)
		out := admin.Cluster{Clustered: true, Detail: st}
		for _, n := range st.Nodes {
			state := "running"
			switch {
			case n.Self:
				state = st.State
			case n.Incompatible:
				state = "incompatible"
			case !n.Alive:
				state = "gone"
			}
			out.Nodes = append(out.Nodes, admin.Node{ID: n.Name, Self: n.Self, State: state, Version: n.Version})
		}
		return out
	})
	b.adm.AddReadyCheck(admin.ReadyCheck{Check: func() (string, error) {
		if cl.Ready() && cl.CaughtUp() == nil {
			return "", nil
		}
		st := cl.Status() // "catching_up" while a replica is behind (CaughtUp)
		cause := "cluster node " + st.State
		if st.Reason != "" {
			cause += ": " + st.Reason
		}
		return "cluster_" + st.State, errors.New(cause)
	}})
	b.adm.Registry().MustRegister(clusterCollectors(cl)...)
	b.cluster = cl
	log.Info("clustering", "cluster", opts.Name, "node", opts.Node, "listen", opts.Listen, "peers", len(opts.Peers))
	return nil
}

// nodeName turns a host name into a node name: letters, digits, - and _.
func nodeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	if len(b) > 128 {
		b = b[:128]
	}
	return string(b)
}

// clusterCollectors are the tern_cluster_* metrics.
func clusterCollectors(cl *cluster.Cluster) []prometheus.Collector {
	counter := func(name, help string, v func(c cluster.Counters) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tern_cluster_" + name, Help: help},
			func() float64 { return float64(v(cl.Status().Forward)) })
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tern_cluster_nodes", Help: "Nodes holding a lease, this one included."},
			func() float64 {
				n := 0
				for _, nd := range cl.Status().Nodes {
					if nd.Alive {
						n++
					}
				}
				return float64(n)
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tern_cluster_routes", Help: "Routes of other nodes in this node's index."},
			func() float64 { return float64(cl.Status().RemoteRoutes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tern_cluster_fenced", Help: "1 while this node is fenced (lease lost)."},
			func() float64 {
				if cl.Fenced() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tern_cluster_catching_up", Help: "1 while a replica of the replicated state on this node is behind its leader (/readyz answers 503)."},
			func() float64 {
				if cl.CaughtUp() != nil {
					return 1
				}
				return 0
			}),
		counter("forward_sent_total", "Messages sent to other nodes.", func(c cluster.Counters) uint64 { return c.Sent }),
		counter("forward_acked_total", "QoS 1/2 messages other nodes acknowledged.", func(c cluster.Counters) uint64 { return c.Acked }),
		counter("forward_timeouts_total", "QoS 1/2 messages not acknowledged within forward_timeout.", func(c cluster.Counters) uint64 { return c.Timeouts }),
		counter("forward_parked_total", "QoS 1/2 messages parked for a node that was gone.", func(c cluster.Counters) uint64 { return c.Parked }),
		counter("forward_park_retries_total", "Attempts to park a message again while the park stream had no leader.", func(c cluster.Counters) uint64 { return c.ParkRetries }),
		counter("retained_syncs_total", "Requests to the retained messages' stream leader before subscriptions read them (one per burst of SUBSCRIBEs).", func(c cluster.Counters) uint64 { return c.RetainedSyncs }),
		counter("retained_sync_failed_total", "Syncs after which subscriptions read this node's retained messages without knowing they were the latest (no answer, or no catch-up, within 2 s each).", func(c cluster.Counters) uint64 { return c.RetainedSyncFailed }),
		counter("passed_on_total", "Messages from other nodes passed on to the node a session moved to, while those nodes still routed its messages here.", func(c cluster.Counters) uint64 { return c.PassedOn }),
		counter("taken_notices_total", "Notices that a session held here was restored on another node while this one was thought gone (it is shipped there).", func(c cluster.Counters) uint64 { return c.TakenNotices }),
		counter("routed_notices_total", "Notices that every node routes a session handed over by this node to its new node (passing on stops).", func(c cluster.Counters) uint64 { return c.RoutedNotices }),
		counter("again_received_total", "QoS 2 messages another node sent again after its restart, their publisher having had no PUBREC: delivered again unless a session's duplicate window knows them.", func(c cluster.Counters) uint64 { return c.AgainReceived }),
		counter("parked_taken_total", "Messages parked for this node that it skipped: copies of a batch it had taken and acknowledged, parked by a sender that timed out before the answer.", func(c cluster.Counters) uint64 { return c.ParkedTaken }),
		counter("park_corrupt_total", "Messages of the park stream for this node that did not decode: what they held is lost.", func(c cluster.Counters) uint64 { return c.ParkCorrupt }),
		counter("once_dropped_total", "QoS 2 messages from other nodes dropped as a second copy of one taken here (sent again after their publisher's node restarted, or parked as well).", func(c cluster.Counters) uint64 { return c.OnceDropped }),
		counter("once_full_total", "Times the QoS 2 messages remembered to drop second copies reached cluster.once_entries and the older half was forgotten early.", func(c cluster.Counters) uint64 { return c.OnceFull }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tern_cluster_once_entries", Help: "QoS 2 messages from other nodes remembered to drop second copies."},
			func() float64 { return float64(cl.Status().Forward.OnceEntries) }),
		counter("orphaned_total", "QoS 1/2 messages from other nodes, or parked for this one, that nothing here took (the session had moved on or ended, or no subscription matched any more).", func(c cluster.Counters) uint64 { return c.Orphaned }),
		counter("park_stalls_total", "Times this node's park stream consumer stalled behind the stream leader (a replica that did not catch up), which was read instead.", func(c cluster.Counters) uint64 { return c.ParkStalls }),
		counter("forward_failed_total", "QoS 1/2 messages neither acknowledged by their node nor parked: their publisher was not acknowledged.", func(c cluster.Counters) uint64 { return c.Failed }),
		counter("forward_received_total", "Messages received from other nodes.", func(c cluster.Counters) uint64 { return c.Received }),
		counter("forward_shed_total", "QoS 0 messages dropped between nodes: the receiving node was too far behind (16 MiB unread, or 16 MiB unsent to it).", func(c cluster.Counters) uint64 { return c.Shed }),
		counter("takeovers_total", "Sessions taken over from another node.", func(c cluster.Counters) uint64 { return c.Takeovers }),
	}
}
