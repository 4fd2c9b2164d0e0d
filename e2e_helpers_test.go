package tern_test

// Helpers for the end-to-end tests in e2e_v5_test.go and e2e_v311_test.go:
// real client libraries (paho.golang for MQTT 5, paho.mqtt.golang for
// 3.1.1) talking to a terntest broker over loopback TCP, and a hook that
// turns the broker's connection and session events into synchronisation
// points.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

const (
	// e2eTimeout bounds every wait for something that must happen.
	e2eTimeout = 10 * time.Second
	// e2eQuiet is the short bounded wait used where a test must show that
	// nothing arrives and no synchronisation point exists.
	e2eQuiet = 300 * time.Millisecond
	// e2eQuiesce is the most paho.mqtt.golang's Disconnect may wait for its
	// DISCONNECT to be written, in ms; with 0 it may close without sending it.
	e2eQuiesce = 2000
)

// e2eBroker is the broker an end-to-end test talks to: one terntest
// server, or across nodes (see e2eAcrossNodes) the nodes of an in-process
// cluster, each client dialling the next node in turn. Clients connect
// with e2eDialV5, e2eDialV3 or Dial, not to Server.Addr (the first node).
type e2eBroker struct {
	// Server is the only server or, across nodes, the first node: the
	// in-process API (Publish, Subscribe) of a test that uses it.
	*terntest.Server
	nodes []*terntest.Server
	dials atomic.Uint64
}

// e2eServer starts a broker that logs nothing (failures speak for
// themselves), hooks added to every node.
func e2eServer(t testing.TB, opts *tern.Options, hooks ...tern.Hook) *e2eBroker {
	t.Helper()
	var o tern.Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if e2eAcrossNodes(t) {
		return e2eCluster(t, &o, hooks)
	}
	s := terntest.NewServer(t, &o, hooks...)
	return &e2eBroker{Server: s, nodes: []*terntest.Server{s}}
}

// node returns the node the next client dials: round robin, from the
// second node on, so that the first client is on another node than the
// in-process API and two clients made one after the other are on different
// nodes.
func (b *e2eBroker) node() *terntest.Server {
	return b.nodes[b.dials.Add(1)%uint64(len(b.nodes))]
}

// Dial opens a raw connection to the next node.
func (b *e2eBroker) Dial(t testing.TB, version byte) *terntest.Conn {
	t.Helper()
	return b.node().Dial(t, version)
}

// e2eEvents is a hook that records connection and session events by client id,
// so tests can wait for the broker to have processed a disconnect or ended
// a session instead of sleeping.
type e2eEvents struct {
	mu    sync.Mutex
	seen  map[string]int
	waits map[string][]chan struct{}
}

func newE2EEvents() *e2eEvents {
	return &e2eEvents{seen: make(map[string]int), waits: make(map[string][]chan struct{})}
}

func (e *e2eEvents) ID() string { return "e2e-events" }

func (e *e2eEvents) fire(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen[key]++
	for _, ch := range e.waits[key] {
		close(ch)
	}
	delete(e.waits, key)
}

func (e *e2eEvents) OnSessionEstablished(c *tern.Client, _ bool) { e.fire("connected/" + c.ID()) }
func (e *e2eEvents) OnDisconnect(c *tern.Client, _ error)        { e.fire("disconnected/" + c.ID()) }
func (e *e2eEvents) OnSessionEnded(id string)                    { e.fire("ended/" + id) }

// wait waits until the event key has been seen n times.
func (e *e2eEvents) wait(t testing.TB, key string, n int) {
	t.Helper()
	deadline := time.After(e2eTimeout)
	for {
		e.mu.Lock()
		if e.seen[key] >= n {
			e.mu.Unlock()
			return
		}
		ch := make(chan struct{})
		e.waits[key] = append(e.waits[key], ch)
		e.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("event %q not seen %d times within %v", key, n, e2eTimeout)
		}
	}
}

// count returns how many times the event key has been seen.
func (e *e2eEvents) count(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen[key]
}

var (
	_ tern.ConnectObserver    = (*e2eEvents)(nil)
	_ tern.DisconnectObserver = (*e2eEvents)(nil)
	_ tern.SessionObserver    = (*e2eEvents)(nil)
)

// waitProgress waits until count() reaches n, failing when it makes no
// progress for e2eTimeout: a large transfer on a loaded machine may take
// longer than that in all, but never stalls that long.
func waitProgress(t testing.TB, count func() int64, n int64) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last, since := count(), time.Now()
	for c := last; c < n; c = count() {
		if c != last {
			last, since = c, time.Now()
		} else if time.Since(since) > e2eTimeout {
			t.Fatalf("stalled at %d of %d for %v", c, n, e2eTimeout)
		}
		<-tick.C
	}
}

// ---- MQTT 5: paho.golang ----

// e2eV5Client is a paho.golang client on its own TCP connection, with what it
// receives turned into channels.
type e2eV5Client struct {
	*paho.Client
	node  *terntest.Server // the node it dialled
	conn  net.Conn
	msgs  chan *paho.Publish
	discs chan *paho.Disconnect
	errs  chan error
}

// e2eDialV5 connects a paho.golang client and returns the CONNACK and the
// error of Connect, without failing the test on a refusal. cfg, if given,
// may change the client configuration (e.g. OnPublishReceived).
func e2eDialV5(t testing.TB, b *e2eBroker, cp *paho.Connect, cfg ...func(*paho.ClientConfig)) (*e2eV5Client, *paho.Connack, error) {
	t.Helper()
	node := b.node()
	conn, err := net.DialTimeout("tcp", node.Addr, e2eTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	vc := &e2eV5Client{
		node:  node,
		conn:  conn,
		msgs:  make(chan *paho.Publish, 1<<16),
		discs: make(chan *paho.Disconnect, 4),
		errs:  make(chan error, 64),
	}
	cc := paho.ClientConfig{
		ClientID: cp.ClientID,
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { vc.msgs <- pr.Packet; return true, nil },
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case vc.discs <- d:
			default:
			}
		},
		OnClientError: func(err error) {
			select {
			case vc.errs <- err:
			default:
			}
		},
	}
	for _, f := range cfg {
		f(&cc)
	}
	vc.Client = paho.NewClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	ack, err := vc.Client.Connect(ctx, cp)
	t.Cleanup(func() {
		if err == nil {
			vc.Client.Disconnect(&paho.Disconnect{ReasonCode: 0})
			select {
			case <-vc.Done():
			case <-time.After(e2eTimeout):
			}
		}
		conn.Close()
	})
	return vc, ack, err
}

// e2eConnectV5 connects a paho.golang client with the client id, clean start
// and session expiry interval, failing the test unless it is accepted.
func e2eConnectV5(t testing.TB, b *e2eBroker, id string, clean bool, expiry uint32) (*e2eV5Client, *paho.Connack) {
	t.Helper()
	cp := &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30}
	if expiry != 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	for deadline := time.Now().Add(e2eTimeout); ; {
		vc, ack, err := e2eDialV5(t, b, cp)
		if err == nil {
			return vc, ack
		}
		if ack != nil && e2eUnavailable(b, ack.ReasonCode == byte(packets.UseAnotherServer) ||
			ack.ReasonCode == byte(packets.ServerUnavailable), deadline) {
			t.Logf("v5 connect %q: refused with %#x by a node of the cluster (fenced for a moment on a loaded machine?): connecting again", id, ack.ReasonCode)
			continue
		}
		t.Fatalf("v5 connect %q: %v (connack %+v)", id, err, ack)
	}
}

// e2eUnavailable reports whether a connection refused by a node as
// unavailable is to be tried again: across nodes, before deadline. A
// node of a cluster on a loaded machine can miss the others' heartbeats
// for a moment and fence itself (0x9C Use another server, 0x88 Server
// unavailable; 3.1.1: return code 3), and a client behind a load
// balancer connects again; the suites test the protocol, not that.
func e2eUnavailable(b *e2eBroker, refused bool, deadline time.Time) bool {
	if !refused || len(b.nodes) < 2 || time.Now().After(deadline) {
		return false
	}
	time.Sleep(100 * time.Millisecond)
	return true
}

func (vc *e2eV5Client) subscribe(t testing.TB, filter string, qos byte) {
	t.Helper()
	vc.subscribeOpts(t, nil, paho.SubscribeOptions{Topic: filter, QoS: qos})
}

// subscribeOpts subscribes with full options (and a subscription
// identifier when subID is not nil) and fails unless every filter is
// granted.
func (vc *e2eV5Client) subscribeOpts(t testing.TB, subID *int, opts ...paho.SubscribeOptions) *paho.Suback {
	t.Helper()
	s := &paho.Subscribe{Subscriptions: opts}
	if subID != nil {
		s.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: subID}
	}
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	ack, err := vc.Subscribe(ctx, s)
	if err != nil {
		t.Fatalf("subscribe %+v: %v (suback %+v)", opts, err, ack)
	}
	return ack
}

// publish publishes and, for QoS 1 and 2, waits for the acknowledgement.
func (vc *e2eV5Client) publish(t testing.TB, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()
	resp, err := vc.Publish(ctx, p)
	if err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return resp
}

// next returns the next message received, failing after e2eTimeout.
func (vc *e2eV5Client) next(t testing.TB) *paho.Publish {
	t.Helper()
	select {
	case m := <-vc.msgs:
		return m
	case <-time.After(e2eTimeout):
		t.Fatalf("no message within %v", e2eTimeout)
		return nil
	}
}

// expectNone fails if a message arrives within d (a bounded wait used only
// where no synchronisation point exists).
func (vc *e2eV5Client) expectNone(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-vc.msgs:
		t.Fatalf("unexpected message on %q: %q", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

// bufConn buffers reads: paho.golang reads a packet header byte by byte
// from the connection, which makes large tests slow under -race. Only for
// clients with keep alive 0: paho writes a packet with net.Buffers, which
// is one writev on a *net.TCPConn but one Write per part on a wrapper, so
// its first PINGREQ, sent at once from another goroutine, could land in the
// middle of another packet.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// ---- MQTT 3.1.1: paho.mqtt.golang ----

// e2eV3Client is a paho.mqtt.golang client whose TCP connection the test can
// reach, to cut it underneath the client.
type e2eV3Client struct {
	mqtt.Client
	node *terntest.Server // the node it dialled
	msgs chan mqtt.Message
	lost chan error

	mu   sync.Mutex
	conn net.Conn
}

// e2eDialV3 connects a 3.1.1 client; it returns the connect token whatever
// the outcome. mod, if not nil, changes the options.
func e2eDialV3(t testing.TB, b *e2eBroker, id string, clean bool, mod func(*mqtt.ClientOptions)) (*e2eV3Client, *mqtt.ConnectToken) {
	t.Helper()
	vc := &e2eV3Client{node: b.node(), msgs: make(chan mqtt.Message, 1<<16), lost: make(chan error, 4)}
	o := mqtt.NewClientOptions().
		AddBroker("tcp://" + vc.node.Addr).
		SetClientID(id).
		SetCleanSession(clean).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(e2eTimeout).
		SetWriteTimeout(e2eTimeout).
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { vc.msgs <- m }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case vc.lost <- err:
			default:
			}
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			nc, err := net.DialTimeout("tcp", u.Host, e2eTimeout)
			if err == nil {
				vc.mu.Lock()
				vc.conn = nc
				vc.mu.Unlock()
			}
			return nc, err
		})
	if mod != nil {
		mod(o)
	}
	vc.Client = mqtt.NewClient(o)
	tok := vc.Connect().(*mqtt.ConnectToken)
	if !tok.WaitTimeout(e2eTimeout) {
		t.Fatalf("v3 connect %q: timed out", id)
	}
	t.Cleanup(func() {
		if vc.IsConnectionOpen() {
			vc.Disconnect(e2eQuiesce)
		}
		vc.mu.Lock()
		if vc.conn != nil {
			vc.conn.Close()
		}
		vc.mu.Unlock()
	})
	return vc, tok
}

// e2eConnectV3 connects a 3.1.1 client and fails the test unless accepted.
func e2eConnectV3(t testing.TB, b *e2eBroker, id string, clean bool) (*e2eV3Client, *mqtt.ConnectToken) {
	t.Helper()
	for deadline := time.Now().Add(e2eTimeout); ; {
		vc, tok := e2eDialV3(t, b, id, clean, nil)
		err := tok.Error()
		if err == nil {
			return vc, tok
		}
		if e2eUnavailable(b, tok.ReturnCode() == 3, deadline) {
			t.Logf("v3 connect %q: refused as unavailable by a node of the cluster: connecting again", id)
			continue
		}
		t.Fatalf("v3 connect %q: %v (return code %d)", id, err, tok.ReturnCode())
	}
}

// cut closes the TCP connection underneath the client, as a network
// failure would.
func (vc *e2eV3Client) cut() {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	vc.conn.Close()
}

func e2eWaitToken(t testing.TB, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(e2eTimeout) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// subscribe subscribes and returns the granted QoS (0x80 for a failure).
func (vc *e2eV3Client) subscribe(t testing.TB, filter string, qos byte) byte {
	t.Helper()
	tok := vc.Subscribe(filter, qos, nil).(*mqtt.SubscribeToken)
	e2eWaitToken(t, tok, "subscribe "+filter)
	return tok.Result()[filter]
}

func (vc *e2eV3Client) publish(t testing.TB, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	e2eWaitToken(t, vc.Publish(topic, qos, retain, payload), "publish "+topic)
}

func (vc *e2eV3Client) next(t testing.TB) mqtt.Message {
	t.Helper()
	select {
	case m := <-vc.msgs:
		return m
	case <-time.After(e2eTimeout):
		t.Fatalf("no message within %v", e2eTimeout)
		return nil
	}
}

// ---- raw clients (terntest) ----

// e2eRawConnect connects a scripted raw client, for the tests that must not
// acknowledge what they receive (paho acknowledges by itself).
func e2eRawConnect(t testing.TB, srv interface {
	Dial(testing.TB, byte) *terntest.Conn
}, version byte, id string, clean bool, expiry uint32) (*terntest.Conn, *packets.Connack) {
	t.Helper()
	c := srv.Dial(t, version)
	pk := &packets.Connect{ClientID: id, CleanStart: clean, KeepAlive: 60}
	if version == packets.V5 && expiry != 0 {
		pk.Properties.SessionExpiry = packets.Uint32(expiry)
	}
	ack := c.Connect(pk)
	if ack.ReasonCode != packets.Success {
		t.Fatalf("raw connect %q refused: %v", id, ack.ReasonCode)
	}
	return c, ack
}

// e2eRawSubscribe subscribes a raw client and checks the SUBACK grants qos.
func e2eRawSubscribe(t testing.TB, c *terntest.Conn, id uint16, filter string, qos byte) {
	t.Helper()
	c.Send(&packets.Subscribe{PacketID: id, Subscriptions: []packets.Subscription{{Filter: filter, QoS: qos}}})
	ack, ok := c.Recv().(*packets.Suback)
	if !ok || ack.PacketID != id || len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != packets.ReasonCode(qos) {
		t.Fatalf("raw subscribe %q: got %+v", filter, ack)
	}
}

// e2eRawPublish receives the next packet and requires a PUBLISH.
func e2eRawPublish(t testing.TB, c *terntest.Conn) *packets.Publish {
	t.Helper()
	pk := c.Recv()
	p, ok := pk.(*packets.Publish)
	if !ok {
		t.Fatalf("expected PUBLISH, got %s", pk.Type())
	}
	return p
}

// ---- shared by both versions ----

var e2eSentinelSeq atomic.Int64

// e2eSentinel sets a retained message on a fresh topic on node, and
// returns the topic.
func e2eSentinel(t testing.TB, node *terntest.Server) string {
	t.Helper()
	topic := fmt.Sprintf("e2e/sentinel/%d", e2eSentinelSeq.Add(1))
	if err := node.Publish(topic, []byte("sentinel"), true, 0); err != nil {
		t.Fatal(err)
	}
	return topic
}

// flush proves that nothing was routed to vc before this point: it sets a
// retained message on a fresh topic, on vc's node, and subscribes to it.
// The broker handles a connection's packets in order and queues in order,
// so anything routed to vc earlier arrives before the sentinel (across
// nodes: anything another node had handed over to vc's node).
func (vc *e2eV5Client) flush(t testing.TB) {
	t.Helper()
	topic := e2eSentinel(t, vc.node)
	vc.subscribe(t, topic, 0)
	if m := vc.next(t); m.Topic != topic {
		t.Fatalf("unexpected message before the sentinel: %q %q", m.Topic, m.Payload)
	}
}

func e2eU32(v uint32) *uint32 { return &v }

// flush proves that nothing was routed to vc before this point (see
// e2eV5Client.flush).
func (vc *e2eV3Client) flush(t testing.TB) {
	t.Helper()
	topic := e2eSentinel(t, vc.node)
	vc.subscribe(t, topic, 0)
	if m := vc.next(t); m.Topic() != topic {
		t.Fatalf("unexpected message before the sentinel: %q %q", m.Topic(), m.Payload())
	}
}

func e2ePtr[T any](v T) *T { return &v }

// e2eRetainedOn waits until node holds payload as the retained message of
// topic ("": none) before a test subscribes there. Across nodes a
// subscription gets every retained change whose publisher had its PUBACK
// before the SUBSCRIBE (the node syncs with the replicated bucket first:
// tern.RetainedSyncer), but a change nobody acknowledges (a will, an
// in-process or QoS 0 publish) reaches the other nodes a little after it
// is delivered live, and a subscription made there before then misses it.
// On one server it holds at once.
func e2eRetainedOn(t testing.TB, node *terntest.Server, topic, payload string) {
	t.Helper()
	terntest.Eventually(t, fmt.Sprintf("retained %q on %q", payload, topic), func() bool {
		m, ok := node.RetainedMessage(topic)
		return ok && string(m.Payload) == payload || !ok && payload == ""
	})
}

// e2eManyRetained returns how many retained messages a test of many sets:
// 100,000, or across nodes 10,000 (all of them replicated, on a 2-core
// machine with other tests: 100,000 took 25 s). It skips t in -short mode.
func e2eManyRetained(t testing.TB) int {
	t.Helper()
	if testing.Short() {
		t.Skip("many retained messages: skipped in -short mode")
	}
	if e2eAcrossNodes(t) {
		return 10_000
	}
	return 100_000
}

// e2eCheckShares checks how the messages of a shared group were shared:
// counts[i] went to the member on nodes[i], the publisher is on pubNode.
// Each member on the publisher's node gets some, in turn, and the others
// none: tern.Server.routeShared prefers an online member on its own node
// to a remote one. With no member on the publisher's node, every member
// gets some. On one server every member is on the publisher's node.
func e2eCheckShares(t testing.TB, counts []int, nodes []*terntest.Server, pubNode *terntest.Server) {
	t.Helper()
	local := func(i int) bool { return nodes[i] == pubNode }
	if !slices.ContainsFunc(nodes, func(n *terntest.Server) bool { return n == pubNode }) {
		local = func(int) bool { return true }
	}
	for i, c := range counts {
		if local(i) != (c > 0) {
			t.Fatalf("member %d got %d messages (counts %v; on the publisher's node: %v)", i, c, counts, nodes[i] == pubNode)
		}
	}
}

// willGate holds the authorization of a will on gate/will until released,
// to widen the window in which the server tears a connection down.
type willGate struct {
	once             sync.Once
	entered, release chan struct{}
}

func (*willGate) ID() string { return "e2e-will-gate" }

func (g *willGate) Authorize(_ *tern.Client, topic string, a tern.Access) tern.Decision {
	if topic == "gate/will" && a == tern.Write {
		g.once.Do(func() { close(g.entered) })
		select {
		case <-g.release:
		case <-time.After(e2eTimeout):
		}
	}
	return tern.Abstain
}

// e2ePolicy is a hook that refuses user "mallory", denies access to topics
// under secret/ and upper-cases payloads published to "shout".
type e2ePolicy struct{}

func (e2ePolicy) ID() string { return "e2e-e2ePolicy" }

func (e2ePolicy) Authenticate(_ *tern.Client, pk *packets.Connect) tern.Decision {
	if pk.Username == "mallory" {
		return tern.Deny
	}
	return tern.Allow
}

func (e2ePolicy) Authorize(_ *tern.Client, topic string, _ tern.Access) tern.Decision {
	if strings.HasPrefix(topic, "secret/") {
		return tern.Deny
	}
	return tern.Abstain
}

func (e2ePolicy) OnPublish(_ *tern.Client, pk *packets.Publish) error {
	if pk.Topic == "shout" {
		pk.Payload = bytes.ToUpper(pk.Payload)
	}
	return nil
}
