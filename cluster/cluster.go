// Package cluster makes several Tern servers one broker: any client may
// connect to any node, messages reach subscribers wherever they are,
// sessions follow their clients between nodes and retained messages are
// on every node. Each node embeds a nats-server (routes between nodes,
// JetStream for the replicated state); Tern keeps its MQTT handling, and
// the root package links none of this.
//
// What lives where (design/cluster.md of the project's shared notes):
//
//   - membership: the embedded servers' routes; each node sends a heartbeat
//     over core NATS every LeaseTTL/6 (no JetStream: a Raft election after
//     a leader's death takes 4 to 9 s) and is gone when not heard from for
//     LeaseTTL; the members are listed in the KV bucket tern_members;
//   - routes: the first local subscription to a (group, filter) puts
//     "<node>.<hash>" in tern_routes; every node watches the bucket into
//     remote routes of its own index (tern.Server.AddRemoteRoute); the
//     change also goes to every live node over core NATS, and a SUBACK
//     waits until each has it (a bucket watcher can lag for seconds while
//     JetStream elects a leader);
//   - messages: core NATS to "tern.n.<node>.d", one per destination node,
//     in batches (what accumulated for the node since the last one went);
//     a batch with QoS 1 and 2 messages is a request whose reply holds
//     their publishers' PUBACKs (tern.Ack), sent once the destination
//     queued (and stored) them. A node that is gone gets the QoS 1/2
//     message parked in the stream tern_park, drained by that node when
//     it is back;
//   - retained messages: tern_retained, watched into every node's index;
//   - sessions: tern_sessions maps a client identifier to its node and an
//     epoch, changed by compare-and-set on CONNECT; the new node takes the
//     session from the old one (tern.Server.ExportSession, ImportSession);
//   - fencing: a node that hears fewer than a majority of the members for
//     2/3 of LeaseTTL refuses CONNECTs and disconnects its clients with 0x9C Use another
//     server, naming a live node in the Server Reference.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ternmq/tern"
)

// Options configure a node. Name, Node and DataDir are needed; the rest
// have defaults.
type Options struct {
	// Name is the cluster's name: routes from nodes of another name are
	// refused. Default "tern".
	Name string
	// Node names this node, unique in the cluster. Default: the host name.
	Node string
	// Listen is the address of the route listener, "host:port" (port 0:
	// any free port, see Cluster.RouteAddr). Default "0.0.0.0:7946".
	Listen string
	// Advertise is the route address other nodes should use, when Listen
	// is not reachable as it is (0.0.0.0, NAT): the address the other
	// nodes learn by gossip, and dial when they are not routed to this
	// node yet.
	Advertise string
	// Peers are the route addresses of other nodes ("host:port"); the
	// rest of the cluster is learnt from them. A host name that resolves
	// to several addresses (a Kubernetes headless service) gives a route
	// to each. Listing this node's own address does no harm; listing no
	// other node makes a cluster of one (Single).
	Peers []string
	// DataDir holds the JetStream store of this node.
	DataDir string
	// Replicas is the replication of the cluster's buckets and streams:
	// 0 picks min(3, the nodes in Peers and this one).
	Replicas int
	// MQTTAdvertise is the MQTT address of this node given to clients in
	// a Server Reference (MQTT 5) when another node is fenced or draining.
	MQTTAdvertise string
	// LeaseTTL is how long a node whose heartbeats stopped is still taken
	// for alive; a node that hears no majority of the members for 2/3 of
	// it fences itself. A session on a node that does not answer is taken
	// over, and a SUBACK a node does not confirm is sent, only once that
	// node's lease expired: after a kill -9 they wait up to LeaseTTL.
	// Default 6 s (heartbeats every second; a node fences after 4 s).
	LeaseTTL time.Duration
	// ForwardTimeout bounds the wait for another node's acknowledgement of
	// a QoS 1/2 message before the message is parked. Default 2 s.
	ForwardTimeout time.Duration
	// DrainTime is how long a node whose session moved to another node
	// still forwards what it routes to that session. Default 20 s.
	DrainTime time.Duration
	// OnceEntries bounds the QoS 2 messages from other nodes a node
	// remembers (for 5 minutes at most, about 16 bytes each), so that a
	// second copy of one is dropped instead of delivered twice: a message
	// its publisher sends again after its node restarted, which goes to
	// every node again. Default 262,144; negative: none remembered.
	OnceEntries int
	// User and Password, when set, are required of every route.
	User, Password string
	// TLS, when set, encrypts the routes (mutual TLS when it has
	// ClientCAs).
	TLS *tls.Config
	// Logger receives the cluster's logs; default slog.Default().
	Logger *slog.Logger
	// NATS, when set, may change the embedded nats-server's options last.
	NATS func(*server.Options)

	// wire is the version given in heartbeats: protoVersion, another in
	// tests.
	wire int
}

// Cluster is one node of a cluster: a hook for its tern.Server (add it with
// AddHook before Serve).
type Cluster struct {
	opts   Options
	log    *slog.Logger
	srv    *tern.Server
	ns     *server.Server
	nc     *nats.Conn // KV, control and replies
	data   *nats.Conn // messages between nodes
	js     jetstream.JetStream
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// trackMu guards untracked: set once Stop waits for wg, after which
	// goTracked starts nothing (a NATS callback may call it then).
	trackMu   sync.Mutex
	untracked bool

	ready    atomic.Bool
	behind   atomic.Pointer[string] // why CaughtUp fails; nil when it does not
	ownFrom  atomic.Int64           // unix nanoseconds: when this node's clients could first publish (shipRule)
	readyC   chan struct{}
	refused  atomic.Pointer[string] // why the node may not join (its name held); nil when it may
	joinErr  atomic.Pointer[string] // why the node has not joined yet
	natsDup  atomic.Pointer[string] // nats-server's last refusal of a route of this node's name
	refusals atomic.Int64           // name checks that found the name held
	fenced   atomic.Bool
	fences   atomic.Int64 // times the node fenced itself
	draining atomic.Bool

	nodes  *nodeTable
	routes *routeTable
	fwd    *forwarder
	reg    *registry
	retain *retainer
	// watching holds the client identifiers (and former nodes)
	// watchPending watches.
	watching sync.Map
	kvNodes  jetstream.KeyValue
	kvRoute  jetstream.KeyValue
	kvSess   jetstream.KeyValue
	kvRet    jetstream.KeyValue
	kvWills  jetstream.KeyValue
	kvSubs   jetstream.KeyValue
	willTab  willTable

	instance string // this process's run, in its heartbeats
	secret   string // password of the embedded server's client port
	started  time.Time

	// faults is for tests: a non-nil function that returns true stops the
	// heartbeats both ways, as a partition would.
	faults atomic.Pointer[func() bool]
}

// Version is the Tern version carried in heartbeats: a node of another
// version is logged as a warning; the wire version, carried too, decides
// whether nodes work together.
const Version = tern.Version

// New returns a node of the cluster opts describes for srv. Add it to srv
// with AddHook before Serve: Serve starts it, Shutdown stops it.
func New(srv *tern.Server, opts Options) (*Cluster, error) {
	if opts.Name == "" {
		opts.Name = "tern"
	}
	if opts.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("cluster: no node name and no host name: %w", err)
		}
		opts.Node = h
	}
	if !validToken(opts.Node) {
		return nil, fmt.Errorf("cluster: node name %q: use letters, digits, - and _ only", opts.Node)
	}
	if !validToken(opts.Name) {
		return nil, fmt.Errorf("cluster: cluster name %q: use letters, digits, - and _ only", opts.Name)
	}
	if opts.DataDir == "" {
		return nil, errors.New("cluster: a data directory is needed for the replicated state")
	}
	if opts.Listen == "" {
		opts.Listen = "0.0.0.0:7946"
	}
	if _, _, err := net.SplitHostPort(opts.Listen); err != nil {
		return nil, fmt.Errorf("cluster: listen address %q: %w", opts.Listen, err)
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 6 * time.Second
	}
	if opts.LeaseTTL < time.Second {
		return nil, fmt.Errorf("cluster: lease TTL %v is below 1s", opts.LeaseTTL)
	}
	if opts.ForwardTimeout <= 0 {
		opts.ForwardTimeout = 2 * time.Second
	}
	if opts.DrainTime <= 0 {
		opts.DrainTime = 20 * time.Second
	}
	if opts.OnceEntries == 0 {
		opts.OnceEntries = 1 << 18
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.wire == 0 {
		opts.wire = protoVersion
	}
	if opts.Replicas < 0 || opts.Replicas > 5 {
		return nil, fmt.Errorf("cluster: replicas %d: want 1 to 5 (0 for the default)", opts.Replicas)
	}
	c := &Cluster{opts: opts, srv: srv, log: opts.Logger.With("component", "cluster", "node", opts.Node),
		readyC: make(chan struct{}), instance: strconv.FormatInt(time.Now().UnixNano(), 36), secret: randomSecret()}
	c.nodes = newNodeTable(c)
	c.routes = newRouteTable(c)
	c.fwd = newForwarder(c)
	c.reg = newRegistry(c)
	c.retain = &retainer{c: c, reached: make(chan struct{}, 1)}
	c.willTab = willTable{live: make(map[string]*tern.Client), pending: make(map[string]*pendingWill)}
	return c, nil
}

// randomSecret returns 128 random bits in hex.
func randomSecret() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// validToken reports whether s is usable in a NATS subject token and a KV
// key.
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// ID implements tern.Hook.
func (c *Cluster) ID() string { return "cluster" }

// Node returns this node's name.
func (c *Cluster) Node() string { return c.opts.Node }

// Ready reports whether the node has joined: the replicated state is
// loaded, and it accepts clients.
func (c *Cluster) Ready() bool {
	return c.ready.Load() && c.refused.Load() == nil && !c.fenced.Load() && !c.draining.Load()
}

// CaughtUp returns nil when every replica of the replicated state this
// node holds is current, else an error naming the streams (or
// JetStream's metadata) whose replica is not: after a restart or a partition JetStream catches a replica up
// from its stream's leader, and until it has, the stream's quorum hangs
// on the other replicas, so that losing one more node (the next node of
// a rolling restart) stops the stream. /readyz of tern serve answers 503
// meanwhile; the node serves clients all the same. It is nil while the
// node is not Ready (joining, fenced, draining): those say so themselves.
func (c *Cluster) CaughtUp() error {
	if p := c.behind.Load(); p != nil && c.Ready() {
		return errors.New(*p)
	}
	return nil
}

// Replicas are sampled every catchUpEvery. Once the node is ready (and
// again once a fence is lifted) each replica must first be seen current
// while its leader, another node, is heard (or be the leader): until
// then the node is not caught up. A replica back from a partition or a
// restart has no leader heard at first; counting that as in step would
// let /readyz answer 200 before the leader's first message tells the
// replica how far behind it is. From then on a replica is behind when it
// has not been current for catchUpAfter while its leader is heard.
// Current (nats-server's) means the replica applied all it committed: one
// that applies a moment later is not current meanwhile, in many samples
// under a steady write load, caught up all the same. A group electing a
// leader (its leader's node gone) has none to be behind: every survivor
// would be out of rotation at once if that counted.
const (
	catchUpEvery = 250 * time.Millisecond
	catchUpAfter = 3 * time.Second
)

// catchUpWatch tells replicas that are behind from samples of them.
type catchUpWatch struct {
	replicas map[string]*replicaSeen // by stream name, "" for JetStream's metadata
}

// replicaSeen is what samples showed of one replica.
type replicaSeen struct {
	confirmed bool      // seen current with its leader heard since the node joined or was fenced
	last      time.Time // when last seen current, or with no leader heard
}

// reset forgets what was seen: the node was fenced, cut off from the
// leaders.
func (w *catchUpWatch) reset() { clear(w.replicas) }

// sample records one look at a replica and returns why it is behind, or
// "".
func (w *catchUpWatch) sample(now time.Time, v replicaView) string {
	r := w.replicas[v.stream]
	if r == nil {
		r = &replicaSeen{}
		w.replicas[v.stream] = r
	}
	what := "stream " + v.stream
	if v.stream == "" {
		what = "JetStream's metadata"
	}
	switch {
	case v.self || v.heard && v.current:
		r.confirmed, r.last = true, now
		return ""
	case !r.confirmed:
		if v.leader == "" {
			return what + ": no leader yet"
		}
		return fmt.Sprintf("%s: this node's replica is not yet seen in step with the leader %s", what, v.leader)
	case !v.heard:
		r.last = now
		return ""
	case now.Sub(r.last) >= catchUpAfter:
		return fmt.Sprintf("%s: this node's replica is behind the leader %s (not current for %v)", what, v.leader, now.Sub(r.last).Round(time.Second))
	}
	return ""
}

// replicaView is one replica of the replicated state on this node, as
// nats-server sees it.
type replicaView struct {
	stream  string // "" for JetStream's metadata
	leader  string // its group's leader, "" while there is none
	self    bool   // this node leads the group
	heard   bool   // the leader, another node, was heard lately (leaderHeard)
	current bool   // heard, and the replica applied all it committed
}

// replicaViews returns the replicas of the cluster's streams this node
// holds (nats-server lists only those), and JetStream's metadata first.
func (c *Cluster) replicaViews() ([]replicaView, error) {
	info, err := c.ns.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return nil, err
	}
	var out []replicaView
	if m := info.Meta; m != nil {
		v := replicaView{leader: m.Leader, self: m.Leader == c.opts.Node, heard: leaderHeard(m.Leader, c.opts.Node, m.Replicas)}
		v.current = v.heard && c.ns.JetStreamIsCurrent()
		out = append(out, v)
	}
	for _, acc := range info.AccountDetails {
		for _, sd := range acc.Streams {
			if !slices.Contains(streamNames, sd.Name) || sd.Cluster == nil {
				continue
			}
			v := replicaView{stream: sd.Name, leader: sd.Cluster.Leader, self: sd.Cluster.Leader == c.opts.Node,
				heard: leaderHeard(sd.Cluster.Leader, c.opts.Node, sd.Cluster.Replicas)}
			v.current = v.heard && c.ns.JetStreamIsStreamCurrent(acc.Id, sd.Name)
			out = append(out, v)
		}
	}
	return out, nil
}

// unchecked is why CaughtUp fails before the replicas' first sample.
var unchecked = "the replicas of the replicated state are not checked yet"

// watchCatchUp keeps c.behind (CaughtUp) until the node stops.
func (c *Cluster) watchCatchUp() {
	t := time.NewTicker(catchUpEvery)
	defer t.Stop()
	w := catchUpWatch{replicas: map[string]*replicaSeen{}}
	fences := c.fences.Load()
	since := time.Now() // since when c.behind is set
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		if n := c.fences.Load(); n != fences || c.fenced.Load() {
			fences = n
			w.reset()
			if c.behind.Swap(&unchecked) == nil {
				since = time.Now()
			}
			continue
		}
		now := time.Now()
		views, err := c.replicaViews()
		var behind []string
		if err != nil {
			behind = append(behind, "JetStream's state not readable: "+err.Error())
		}
		for _, v := range views {
			if b := w.sample(now, v); b != "" {
				behind = append(behind, b)
			}
		}
		was := c.behind.Load()
		switch {
		case len(behind) == 0 && was != nil:
			c.behind.Store(nil)
			c.log.Info("replicas of the replicated state in step with their leaders", "took", now.Sub(since).Round(time.Millisecond).String())
		case len(behind) > 0:
			why := strings.Join(behind, "; ")
			c.behind.Store(&why)
			switch {
			case was == nil:
				since = now
				c.log.Warn("a replica of the replicated state is behind its leader: /readyz answers 503 until it catches up", "why", why)
			case *was != why:
				c.log.Debug("replicas of the replicated state not in step yet", "why", why, "for", now.Sub(since).Round(time.Millisecond).String())
			}
		}
	}
}

// leaderHeard reports whether a Raft group has a leader that is not self
// and that self heard lately, as peers (the group's other replicas as
// self sees them) say: only then can self's replica be behind it. The
// leader of a group whose leader's node just died is named until the
// election, not heard.
func leaderHeard(leader, self string, peers []*server.PeerInfo) bool {
	if leader == "" || leader == self {
		return false
	}
	for _, p := range peers {
		if p.Name == leader {
			return p.Current
		}
	}
	return false
}

// Fenced reports whether the node fenced itself, cut off from the
// majority.
func (c *Cluster) Fenced() bool { return c.fenced.Load() }

// WaitReady waits until the node has joined, or ctx ends.
func (c *Cluster) WaitReady(ctx context.Context) error {
	select {
	case <-c.readyC:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RouteAddr returns the address the route listener is bound to, once
// started.
func (c *Cluster) RouteAddr() string {
	if c.ns == nil {
		return ""
	}
	if a := c.ns.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// replicas returns the replication of buckets and streams: 1 on a
// single node.
func (c *Cluster) replicas() int {
	n := c.otherPeers()
	if n == 0 {
		return 1
	}
	if c.opts.Replicas > 0 {
		return c.opts.Replicas
	}
	return min(3, n+1)
}

// otherPeers counts the peers that are not this node's own Listen or
// Advertise address, as written (no name is resolved: the addresses of a
// headless service grow as its nodes start).
func (c *Cluster) otherPeers() int {
	self := map[string]bool{c.opts.Listen: true, c.opts.Advertise: true}
	seen := map[string]bool{}
	for _, p := range c.opts.Peers {
		if !self[p] && !seen[p] {
			seen[p] = true
		}
	}
	return len(seen)
}

// Single reports whether this node is a cluster of one: Peers lists no
// other node. Its JetStream then runs without clustering (nats-server's
// clustered JetStream needs routes to reach a quorum of two), with one
// copy of the replicated state in DataDir/single, and no route listener
// is opened. To add nodes, restart it with them in Peers: its retained
// messages and session registry are copied into the cluster's buckets
// (keys the cluster already has are kept) and DataDir/single is renamed
// DataDir/single.imported-<time>.
func (c *Cluster) Single() bool { return c.otherPeers() == 0 }

// natsOptions returns the embedded server's options.
func (c *Cluster) natsOptions() (*server.Options, error) {
	host, port, _ := net.SplitHostPort(c.opts.Listen)
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen port %q: %w", port, err)
	}
	o := &server.Options{
		ServerName: c.opts.Node,
		// A peer that is down: its first failed reconnection is logged,
		// then one in 60 (about once a minute), not four lines a second.
		ReconnectErrorReports: 60,
		// What crosses nodes in one NATS message: a forwarded message (up
		// to the MQTT maximum packet size, 1 MiB by default, plus a
		// header) and a session handed over with its whole queue. 64 MiB
		// is nats-server's ceiling.
		MaxPayload: 64 << 20,
		// Tern uses in-process connections, but nats-server starts its
		// routes only once a client port listens (DontListen would stop
		// them): a random loopback port, with a password of this
		// process's only.
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		Username:  "tern",
		Password:  c.secret,
		NoSigs:    true,
		NoLog:     true,
		JetStream: true,
		StoreDir:  c.opts.DataDir,
		// JetStream's own limits would take a share of the machine's
		// memory and disk; the buckets are small.
		DisableJetStreamBanner: true,
		Cluster: server.ClusterOpts{
			Name: c.opts.Name, Host: host, Port: p, Advertise: c.opts.Advertise,
			Username: c.opts.User, Password: c.opts.Password,
			Compression: server.CompressionOpts{Mode: server.CompressionOff},
			// A dead peer whose sockets stay open (host or network gone)
			// is noticed after about three missed pings.
			PingInterval: time.Second, MaxPingsOut: 3,
		},
	}
	if c.opts.TLS != nil {
		o.Cluster.TLSConfig = c.opts.TLS
		o.Cluster.TLSTimeout = 2
	}
	for _, peer := range expandPeers(c.opts.Peers, c.log) {
		u := &url.URL{Scheme: "nats-route", Host: peer}
		if c.opts.User != "" {
			u.User = url.UserPassword(c.opts.User, c.opts.Password)
		}
		o.Routes = append(o.Routes, u)
	}
	if c.Single() {
		// No route listener: with one, nats-server runs JetStream
		// clustered, which never has a quorum alone. The state is kept
		// apart from a clustered run's: nats-server would take streams
		// of a single node's directory for its replicas of the cluster's
		// streams, and the replicas would differ (importSingle copies
		// it instead).
		o.Cluster, o.Routes = server.ClusterOpts{}, nil
		o.StoreDir = c.singleDir()
	}
	if c.opts.NATS != nil {
		c.opts.NATS(o)
	}
	return o, nil
}

// expandPeers resolves the peers' host names, so that a name with several
// addresses (a headless service) gives a route to each; a name that does
// not resolve now is kept as it is, for nats-server to retry.
func expandPeers(peers []string, log *slog.Logger) []string {
	var out []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, p := range peers {
		host, port, err := net.SplitHostPort(p)
		if err != nil {
			log.Warn("peer address ignored: want host:port", "peer", p)
			continue
		}
		if net.ParseIP(host) != nil {
			add(p)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		addrs, err := net.DefaultResolver.LookupHost(ctx, host)
		cancel()
		if err != nil || len(addrs) == 0 {
			log.Warn("peer name does not resolve now; nats-server will retry it", "peer", p, "err", err)
			add(p)
			continue
		}
		for _, a := range addrs {
			add(net.JoinHostPort(a, port))
		}
	}
	return out
}

// Start implements tern.Starter: it starts the embedded nats-server and
// joins the cluster in the background (Ready, WaitReady): until then
// CONNECTs are refused with 0x88 Server unavailable.
func (c *Cluster) Start(srv *tern.Server) error {
	if srv != c.srv {
		return errors.New("cluster: added to another server than the one given to New")
	}
	o, err := c.natsOptions()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("cluster: data directory: %w", err)
	}
	ns, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("cluster: nats-server: %w", err)
	}
	nl := natsLogger{l: c.log.With("component", "nats"), fatal: new(atomic.Pointer[string]), dup: &c.natsDup}
	ns.SetLoggerV2(nl, false, false, false)
	go ns.Start()
	// A fatal error (the route port taken, say) ends the wait at once;
	// otherwise a loaded machine gets a generous minute.
	for deadline := time.Now().Add(time.Minute); !ns.ReadyForConnections(100 * time.Millisecond); {
		if msg := nl.fatal.Load(); msg != nil {
			ns.Shutdown()
			return fmt.Errorf("cluster: nats-server did not start (route listener %s): %s", c.opts.Listen, *msg)
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return fmt.Errorf("cluster: nats-server did not start within a minute (route listener %s)", c.opts.Listen)
		}
	}
	c.ns = ns
	c.started = time.Now()
	conn := func(name string) (*nats.Conn, error) {
		return nats.Connect("", nats.InProcessServer(ns), nats.UserInfo("tern", c.secret), nats.Name(name), nats.MaxReconnects(-1),
			nats.ReconnectBufSize(64<<20), nats.PingInterval(time.Minute))
	}
	if c.nc, err = conn("tern-control"); err == nil {
		c.data, err = conn("tern-data")
	}
	if err != nil {
		c.stopNATS()
		return fmt.Errorf("cluster: connecting to the embedded nats-server: %w", err)
	}
	// An asynchronous publish (a parked message, a route, a retained
	// message) whose stream leader is cut off gets no answer at all: it
	// fails after publishAsyncTimeout rather than holding a PUBACK or a
	// SUBACK forever.
	c.js, err = jetstream.New(c.nc, jetstream.WithPublishAsyncTimeout(publishAsyncTimeout))
	if err != nil {
		c.stopNATS()
		return err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.Single() {
		if c.opts.Replicas > 1 {
			c.log.Warn("replicas ignored: a cluster of one node keeps one copy", "replicas", c.opts.Replicas)
		}
		c.log.Info("cluster node started alone: no other node in peers, no route listener; restart with peers to add nodes",
			"cluster", c.opts.Name)
	} else {
		routeTLS := "off"
		if c.opts.TLS != nil {
			routeTLS = "on"
			if c.opts.TLS.ClientAuth == tls.RequireAndVerifyClientCert {
				routeTLS = "mutual"
			}
		}
		c.log.Info("cluster node started", "cluster", c.opts.Name, "routes", c.RouteAddr(),
			"peers", len(o.Routes), "replicas", c.replicas(), "route_tls", routeTLS, "route_auth", c.opts.User != "")
	}
	c.goTracked(c.join)
	return nil
}

// publishAsyncTimeout bounds the wait for JetStream's answer to an
// asynchronous publish, as its API requests are bounded by default.
const publishAsyncTimeout = 5 * time.Second

// goTracked runs fn in a goroutine that Stop waits for; once Stop waits,
// it does nothing (the cluster's context is cancelled by then).
func (c *Cluster) goTracked(fn func()) {
	c.trackMu.Lock()
	defer c.trackMu.Unlock()
	if c.untracked {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
}

// waitTracked makes goTracked start no more goroutines, and waits for
// those it started. Before it, a callback of a NATS subscription (a
// heartbeat saying another node leaves, its wills to reap) could call
// goTracked while Stop waited: an Add concurrent with the Wait, which
// sync.WaitGroup forbids, and a goroutine that Stop did not wait for.
func (c *Cluster) waitTracked() {
	c.trackMu.Lock()
	c.untracked = true
	c.trackMu.Unlock()
	c.wg.Wait()
}

// join checks that no other live process holds this node's name,
// listens to the node's subjects, creates the buckets (retrying until
// JetStream has its quorum), loads the replicated state and starts the
// heartbeats, then marks the node ready.
func (c *Cluster) join() {
	t0 := time.Now()
	nextLog := t0.Add(3 * time.Second)
	var nextWhois time.Time
	checked, subscribed := false, false // the name, once JetStream is current
	for {
		var err error
		current := c.ns.JetStreamIsCurrent()
		if current && !checked || time.Now().After(nextWhois) {
			// Asked before JetStream is current too: a process of this
			// name may keep it from ever being current.
			held, werr := c.nameHeld()
			nextWhois = time.Now().Add(c.opts.LeaseTTL / 6)
			switch {
			case werr != nil:
				err = werr
			case held != "":
				c.refuse(held)
				err = errors.New(held)
			default:
				c.unrefuse()
				checked = current
			}
		}
		switch {
		case err != nil:
		case !current:
			// No meta leader yet: a JetStream request would go unanswered
			// until its timeout.
			err = errors.New("no JetStream meta leader")
		case !checked:
			err = errors.New("node name not checked yet")
		case !subscribed:
			// Not before the name is checked: another process of this
			// name would take its messages.
			if err = c.fwd.subscribe(); err == nil {
				subscribed = true
				continue
			}
		default:
			err = c.setup()
		}
		if err == nil {
			c.joinErr.Store(nil)
			break
		}
		msg := err.Error()
		c.joinErr.Store(&msg)
		if c.ctx.Err() != nil {
			return
		}
		if time.Now().After(nextLog) && c.refused.Load() == nil {
			if c.ns.NumRoutes() == 0 {
				// A peer that refuses a route (TLS, credentials) says why
				// in its own log; this side may see only a closed socket.
				c.log.Warn("waiting for the cluster: no route to any peer (are they up? see their logs for a refused route: cluster name, TLS, credentials)",
					"err", err, "waited", time.Since(t0).Round(time.Second).String())
			} else {
				c.log.Warn("waiting for the cluster: JetStream has no quorum yet (are the peers up?)",
					"err", err, "routes", c.ns.NumRoutes(), "waited", time.Since(t0).Round(time.Second).String())
			}
			nextLog = time.Now().Add(5 * time.Second)
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	// From now on messages of this node's own clients may be routed
	// (wills first): see shipRule.
	c.ownFrom.Store(time.Now().UnixNano())
	c.reapWills(c.opts.Node) // what a previous run left (see wills.go)
	if !c.Single() {
		c.behind.Store(&unchecked)
		c.goTracked(c.watchCatchUp)
	}
	c.ready.Store(true)
	close(c.readyC)
	c.goTracked(c.reg.shipLost)
	c.log.Info("cluster ready", "routes", c.ns.NumRoutes(), "nodes", c.nodes.liveCount(),
		"took", time.Since(t0).Round(time.Millisecond).String())
}

// setup makes the buckets and loads them; it is retried until it works.
func (c *Cluster) setup() error {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	r := c.replicas()
	buckets := []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&c.kvNodes, jetstream.KeyValueConfig{Bucket: "tern_members", Replicas: r}},
		{&c.kvRoute, jetstream.KeyValueConfig{Bucket: "tern_routes", Replicas: r}},
		{&c.kvSess, jetstream.KeyValueConfig{Bucket: "tern_sessions", Replicas: r}},
		{&c.kvRet, jetstream.KeyValueConfig{Bucket: "tern_retained", Replicas: r}},
		{&c.kvWills, jetstream.KeyValueConfig{Bucket: "tern_wills", Replicas: r}},
		{&c.kvSubs, jetstream.KeyValueConfig{Bucket: "tern_subs", Replicas: r}},
	}
	// Concurrently: each new replicated stream waits for its Raft group.
	var wg sync.WaitGroup
	errs := make([]error, len(buckets)+1)
	for i, b := range buckets {
		if *b.kv != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			kv, err := c.bucket(ctx, b.cfg)
			if err != nil {
				errs[i] = fmt.Errorf("bucket %s: %w", b.cfg.Bucket, err)
				return
			}
			*b.kv = kv
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		errs[len(buckets)] = c.fwd.setupPark(ctx, r)
	}()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !c.Single() {
		if err := c.importSingle(ctx); err != nil {
			return fmt.Errorf("importing the state of the cluster of one in %s: %w", c.singleDir(), err)
		}
	}
	if err := c.nodes.start(ctx); err != nil {
		return err
	}
	if err := c.retain.start(ctx); err != nil {
		return err
	}
	if err := c.routes.start(ctx); err != nil {
		return err
	}
	// A message this node stored before it died may have been parked for
	// it as well (its acknowledgement did not reach the sender in time):
	// a session restored from the store with messages takes one copy.
	for _, si := range c.srv.Sessions() {
		if si.Queued+si.Inflight > 0 {
			c.srv.ExpectDuplicates(si.ClientID, dupWindow)
		}
	}
	c.fwd.startDrainPark()
	return nil
}

// bucket returns the bucket cfg names, created as cfg says when it does
// not exist (by whichever node comes first).
func (c *Cluster) bucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	kv, err := c.js.KeyValue(lctx, cfg.Bucket)
	cancel()
	if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, err
	}
	if !c.ns.JetStreamIsLeader() {
		// Only the meta leader creates: concurrent creates of one stream
		// from several nodes can go unanswered.
		return nil, errors.New("not created yet by the JetStream meta leader")
	}
	kv, err = c.js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return c.js.KeyValue(ctx, cfg.Bucket)
	}
	return kv, err
}

// Stop implements tern.Stopper: it leaves the cluster (a last heartbeat
// says so, and the others take the node for gone at once) and stops
// nats-server.
func (c *Cluster) Stop(ctx context.Context) error {
	if c.ns == nil {
		return nil
	}
	if c.ready.Load() {
		c.nodes.leave()
	}
	c.cancel()
	c.fwd.stop()
	c.stopWills()
	c.waitTracked()
	c.stopNATS()
	c.log.Info("cluster node stopped")
	return nil
}

func (c *Cluster) stopNATS() {
	if c.data != nil {
		c.data.Close()
	}
	if c.nc != nil {
		c.nc.Close()
	}
	if c.ns != nil {
		c.ns.Shutdown()
		c.ns.WaitForShutdown()
	}
}

// natsLogger passes nats-server's warnings and errors to slog; its
// notices go at DEBUG. A fatal error is also kept for Start to report.
type natsLogger struct {
	l     *slog.Logger
	fatal *atomic.Pointer[string]
	// dup keeps the last refusal of a route from a server of this one's
	// name, shown in the status while the node joins.
	dup *atomic.Pointer[string]
}

func (n natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	n.fatal.CompareAndSwap(nil, &msg)
	n.l.Error(msg)
}
func (n natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "duplicate name") {
		n.dup.Store(&msg)
	}
	n.l.Error(msg)
}
func (n natsLogger) Debugf(format string, v ...any) {}
func (n natsLogger) Tracef(format string, v ...any) {}
