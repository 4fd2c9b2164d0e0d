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
//   - messages: core NATS to "tern.n.<node>.d", one per destination node;
//     QoS 1 and 2 as requests whose replies hold the publisher's PUBACK
//     (tern.Ack), sent once the destination queued (and stored) the
//     message. A node that is gone gets the QoS 1/2 message parked in the
//     stream tern_park, drained by that node when it is back;
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
	"strconv"
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
	// is not reachable as it is (0.0.0.0, NAT).
	Advertise string
	// Peers are the route addresses of other nodes ("host:port"); the
	// rest of the cluster is learnt from them. A host name that resolves
	// to several addresses (a Kubernetes headless service) gives a route
	// to each. Listing this node's own address does no harm.
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
	// it fences itself. Default 10 s.
	LeaseTTL time.Duration
	// ForwardTimeout bounds the wait for another node's acknowledgement of
	// a QoS 1/2 message before the message is parked. Default 2 s.
	ForwardTimeout time.Duration
	// DrainTime is how long a node whose session moved to another node
	// still forwards what it routes to that session. Default 20 s.
	DrainTime time.Duration
	// User and Password, when set, are required of every route.
	User, Password string
	// TLS, when set, encrypts the routes (mutual TLS when it has
	// ClientCAs).
	TLS *tls.Config
	// Logger receives the cluster's logs; default slog.Default().
	Logger *slog.Logger
	// NATS, when set, may change the embedded nats-server's options last.
	NATS func(*server.Options)
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

	ready    atomic.Bool
	readyC   chan struct{}
	fenced   atomic.Bool
	draining atomic.Bool

	nodes   *nodeTable
	routes  *routeTable
	fwd     *forwarder
	reg     *registry
	retain  *retainer
	kvNodes jetstream.KeyValue
	kvRoute jetstream.KeyValue
	kvSess  jetstream.KeyValue
	kvRet   jetstream.KeyValue
	kvWills jetstream.KeyValue
	kvSubs  jetstream.KeyValue
	wills   sync.Map // client identifier -> *tern.Client whose will is in tern_wills

	instance string // this process's run, in its heartbeats
	secret   string // password of the embedded server's client port
	started  time.Time

	// faults is for tests: a non-nil function that returns true stops the
	// heartbeats both ways, as a partition would.
	faults atomic.Pointer[func() bool]
}

// Version is the Tern version carried in heartbeats: a node of another
// version is reported as an error.
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
		opts.LeaseTTL = 10 * time.Second
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
	if opts.Logger == nil {
		opts.Logger = slog.Default()
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
	c.retain = &retainer{c: c}
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
func (c *Cluster) Ready() bool { return c.ready.Load() && !c.fenced.Load() && !c.draining.Load() }

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

// replicas returns the replication of buckets and streams.
func (c *Cluster) replicas() int {
	if c.opts.Replicas > 0 {
		return c.opts.Replicas
	}
	n := 1
	self := map[string]bool{c.opts.Listen: true, c.opts.Advertise: true}
	seen := map[string]bool{}
	for _, p := range c.opts.Peers {
		if !self[p] && !seen[p] {
			seen[p] = true
			n++
		}
	}
	return min(3, n)
}

// natsOptions returns the embedded server's options.
func (c *Cluster) natsOptions() (*server.Options, error) {
	host, port, _ := net.SplitHostPort(c.opts.Listen)
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen port %q: %w", port, err)
	}
	o := &server.Options{
		ServerName: c.opts.Node,
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
	nl := natsLogger{l: c.log.With("component", "nats"), fatal: new(atomic.Pointer[string])}
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
	c.js, err = jetstream.New(c.nc)
	if err != nil {
		c.stopNATS()
		return err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if err := c.fwd.subscribe(); err != nil {
		c.stopNATS()
		return err
	}
	c.log.Info("cluster node started", "cluster", c.opts.Name, "routes", c.RouteAddr(),
		"peers", len(o.Routes), "replicas", c.replicas())
	c.goTracked(c.join)
	return nil
}

// goTracked runs fn in a goroutine that Stop waits for.
func (c *Cluster) goTracked(fn func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
}

// join creates the buckets (retrying until JetStream has its quorum),
// loads the replicated state and starts the heartbeats, then marks the node
// ready.
func (c *Cluster) join() {
	t0 := time.Now()
	nextLog := t0.Add(3 * time.Second)
	for {
		var err error
		if !c.ns.JetStreamIsCurrent() {
			// No meta leader yet: a JetStream request would go unanswered
			// until its timeout.
			err = errors.New("no JetStream meta leader")
		} else if err = c.setup(); err == nil {
			break
		}
		if c.ctx.Err() != nil {
			return
		}
		if time.Now().After(nextLog) {
			c.log.Warn("waiting for the cluster: JetStream has no quorum yet (are the peers up?)",
				"err", err, "routes", c.ns.NumRoutes(), "waited", time.Since(t0).Round(time.Second).String())
			nextLog = time.Now().Add(5 * time.Second)
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
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
	if err := c.nodes.start(ctx); err != nil {
		return err
	}
	if err := c.retain.start(ctx); err != nil {
		return err
	}
	if err := c.routes.start(ctx); err != nil {
		return err
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
	c.wg.Wait()
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
}

func (n natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	n.fatal.CompareAndSwap(nil, &msg)
	n.l.Error(msg)
}
func (n natsLogger) Errorf(format string, v ...any) { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Debugf(format string, v ...any) {}
func (n natsLogger) Tracef(format string, v ...any) {}
