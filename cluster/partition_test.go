//go:build linux

package cluster

// Issue 14's acceptance item 9: a partition that cuts one node's route
// traffic. Every route connection between the `tern serve` processes goes
// through a fault proxy of the test (one per ordered pair of nodes): a
// node's peers are its proxies to the others, and it advertises an
// address that refuses connections, so that no node learns another's
// real route address by gossip and dials it around the proxies.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/ternmq/tern/internal/faultproxy"
	"github.com/ternmq/tern/packets"
)

// partitionNet is the route network of the nodes: proxies[i][j] carries
// the routes node i dials to node j.
type partitionNet struct {
	proxies [][]*faultproxy.Proxy
}

// newPartitionNet puts every route between ps through a proxy.
func newPartitionNet(t testing.TB, ps []*proc) *partitionNet {
	n := &partitionNet{proxies: make([][]*faultproxy.Proxy, len(ps))}
	for i, p := range ps {
		n.proxies[i] = make([]*faultproxy.Proxy, len(ps))
		var peers []string
		for j, q := range ps {
			if i == j {
				continue
			}
			px, err := faultproxy.New("127.0.0.1:0", q.route)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { px.Close() })
			n.proxies[i][j] = px
			peers = append(peers, px.Addr())
		}
		sink, free, err := faultproxy.Refuser()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(free)
		p.peers = peers
		p.extra = append(p.extra, "--cluster-advertise", sink)
	}
	return n
}

// set puts every proxy to or from node i in mode m.
func (n *partitionNet) set(i int, m faultproxy.Mode) {
	for j := range n.proxies {
		if j != i {
			n.proxies[i][j].Set(m)
			n.proxies[j][i].Set(m)
		}
	}
}

// clusterStatus returns a node's /api/v1/cluster detail.
func clusterStatus(p *proc) (Status, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.admin + "/api/v1/cluster")
	if err != nil {
		return Status{}, err
	}
	defer resp.Body.Close()
	var view struct{ Detail Status }
	err = json.NewDecoder(resp.Body).Decode(&view)
	return view.Detail, err
}

// readyz returns the status code of a node's /readyz, 0 when it does not
// answer.
func readyz(p *proc) int {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.admin + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// aliveSeen returns how many nodes p takes for alive.
func aliveSeen(p *proc) int {
	st, err := clusterStatus(p)
	if err != nil {
		return 0
	}
	n := 0
	for _, i := range st.Nodes {
		if i.Alive {
			n++
		}
	}
	return n
}

// waitFor polls cond every 20 ms until it holds (true) or within passes.
func waitFor(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); ; {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond) // polling the admin API or the clients' counters: no event to wait on
	}
}

// moveEvent is something that happened to a mover's connection.
type moveEvent struct {
	at     time.Time
	addr   string
	what   string // "connected", "refused", "disconnected", "lost"
	reason byte
	ref    string // Server Reference
}

// mover is a paho.golang (MQTT 5) client that moves between the nodes as
// a client behind a load balancer would: after a DISCONNECT or a refused
// CONNECT with a Server Reference it connects there, after any other
// failure to the next node.
type mover struct {
	id         string
	addrs      []string
	next       int
	persistent bool
	onPublish  func(*paho.Publish)
	sess       *state.State

	mu     sync.Mutex
	cli    *paho.Client
	at     string
	ref    string
	events []moveEvent
}

func newMover(id string, addrs []string, first int, persistent bool) *mover {
	m := &mover{id: id, addrs: addrs, next: first, persistent: persistent}
	if persistent {
		m.sess = state.NewInMemory()
	}
	return m
}

func (m *mover) note(e moveEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.at = time.Now()
	m.events = append(m.events, e)
}

// eventsSince returns the events after t.
func (m *mover) eventsSince(t time.Time) []moveEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []moveEvent
	for _, e := range m.events {
		if e.at.After(t) {
			out = append(out, e)
		}
	}
	return out
}

// addr returns the node the client is connected to, "" when it is not.
func (m *mover) addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cli == nil {
		return ""
	}
	select {
	case <-m.cli.Done():
		return ""
	default:
		return m.at
	}
}

// client returns the connected client, connecting first when the last
// connection ended (then fresh tells the session was not resumed), or
// nil once ctx ends.
func (m *mover) client(ctx context.Context) (cli *paho.Client, fresh bool) {
	m.mu.Lock()
	if m.cli != nil {
		select {
		case <-m.cli.Done():
		default:
			defer m.mu.Unlock()
			return m.cli, false
		}
	}
	m.mu.Unlock()
	for ctx.Err() == nil {
		m.mu.Lock()
		addr := m.ref
		m.ref = ""
		if addr == "" {
			addr = m.addrs[m.next%len(m.addrs)]
		}
		m.mu.Unlock()
		cli, ack, err := m.dial(ctx, addr)
		if err == nil {
			m.mu.Lock()
			m.cli, m.at = cli, addr
			m.mu.Unlock()
			m.note(moveEvent{addr: addr, what: "connected"})
			return cli, !ack.SessionPresent
		}
		e := moveEvent{addr: addr, what: "refused"}
		if ack != nil {
			e.reason = byte(ack.ReasonCode)
			if ack.Properties != nil {
				e.ref = ack.Properties.ServerReference
			}
		}
		m.note(e)
		m.mu.Lock()
		if e.ref != "" && e.ref != addr {
			m.ref = e.ref
		} else {
			m.next++
		}
		m.mu.Unlock()
		time.Sleep(100 * time.Millisecond) // a node refusing or down: no event to wait on
	}
	return nil, false
}

// dial connects to addr.
func (m *mover) dial(ctx context.Context, addr string) (*paho.Client, *paho.Connack, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, nil, err
	}
	cfg := paho.ClientConfig{ClientID: m.id, Conn: conn, PacketTimeout: 15 * time.Second,
		OnServerDisconnect: func(d *paho.Disconnect) {
			e := moveEvent{addr: addr, what: "disconnected", reason: d.ReasonCode}
			if d.Properties != nil {
				e.ref = d.Properties.ServerReference
			}
			m.note(e)
			m.mu.Lock()
			if e.ref != "" {
				m.ref = e.ref
			}
			m.mu.Unlock()
		},
		OnClientError: func(err error) { m.note(moveEvent{addr: addr, what: "lost"}) },
	}
	if m.sess != nil {
		cfg.Session = m.sess
	}
	if m.onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { m.onPublish(pr.Packet); return true, nil },
		}
	}
	cli := paho.NewClient(cfg)
	cp := &paho.Connect{ClientID: m.id, CleanStart: !m.persistent, KeepAlive: 30}
	if m.persistent {
		exp := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp}
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ack, err := cli.Connect(cctx, cp)
	if err != nil {
		conn.Close()
		return nil, ack, err
	}
	return cli, ack, nil
}

// drop closes the connection after an error, so that the next call of
// client connects again.
func (m *mover) drop(cli *paho.Client) {
	m.mu.Lock()
	if m.cli == cli {
		m.next++
	}
	m.mu.Unlock()
	cli.Disconnect(&paho.Disconnect{})
}

// stop disconnects for good.
func (m *mover) stop() {
	m.mu.Lock()
	cli := m.cli
	m.mu.Unlock()
	if cli != nil {
		cli.Disconnect(&paho.Disconnect{})
	}
}

// connCtx returns a context of 15 s that also ends with cli's connection:
// paho keeps a QoS 1 message of a lost connection in its session and waits
// for the context.
func connCtx(ctx context.Context, cli *paho.Client) (context.Context, context.CancelFunc) {
	c, cancel := context.WithTimeout(ctx, 15*time.Second)
	go func() {
		select {
		case <-cli.Done():
			cancel()
		case <-c.Done():
		}
	}()
	return c, cancel
}

// partSub is a persistent QoS 1 subscriber to part/#.
type partSub struct {
	*mover
	mu       sync.Mutex
	got      map[string]int
	lost     int // reconnections without the session
	received atomic.Int64
}

func (s *partSub) run(ctx context.Context, subscribed chan<- struct{}) {
	first := true
	for ctx.Err() == nil {
		cli, fresh := s.client(ctx)
		if cli == nil {
			return
		}
		if fresh {
			if !first {
				s.mu.Lock()
				s.lost++
				s.mu.Unlock()
			}
			sctx, cancel := connCtx(ctx, cli)
			_, err := cli.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "part/#", QoS: 1}}})
			cancel()
			if err != nil {
				s.drop(cli)
				continue
			}
		}
		if first {
			first = false
			close(subscribed)
		}
		select {
		case <-ctx.Done():
		case <-cli.Done():
		}
	}
}

func (s *partSub) record(p *paho.Publish) {
	s.received.Add(1)
	s.mu.Lock()
	s.got[string(p.Payload)]++
	s.mu.Unlock()
}

// check returns the acknowledged messages not received (sorted) and how
// many were received more than once.
func (s *partSub) check(acked []string) (missing []string, dups int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range acked {
		if s.got[k] == 0 {
			missing = append(missing, k)
		}
	}
	for _, n := range s.got {
		if n > 1 {
			dups += n - 1
		}
	}
	slices.Sort(missing)
	return missing, dups
}

// partPub publishes QoS 1 messages "<id>:<seq>" to part/<id>, one at a
// time, resending a message until it is acknowledged or refused with an
// error reason code.
type partPub struct {
	*mover
	pace    time.Duration
	mu      sync.Mutex
	acked   []string
	refused int
}

func (p *partPub) run(ctx context.Context) {
	for seq := 1; ctx.Err() == nil; {
		cli, _ := p.client(ctx)
		if cli == nil {
			return
		}
		key := fmt.Sprintf("%s:%d", p.id, seq)
		pctx, cancel := connCtx(ctx, cli)
		resp, err := cli.Publish(pctx, &paho.Publish{Topic: "part/" + p.id, QoS: 1, Payload: []byte(key)})
		cancel()
		switch {
		case err == nil:
			p.mu.Lock()
			p.acked = append(p.acked, key)
			p.mu.Unlock()
			seq++
			time.Sleep(p.pace) // the publisher's rate
		case resp != nil && resp.ReasonCode >= 0x80:
			// Refused: not acknowledged, the publisher may drop it.
			p.mu.Lock()
			p.refused++
			p.mu.Unlock()
			seq++
		default:
			if ctx.Err() == nil {
				p.drop(cli)
			}
		}
	}
}

func (p *partPub) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// Issue 14's acceptance item 9 on three `tern serve` processes whose
// route connections pass through fault proxies. Persistent QoS 1
// subscribers on n1 and n2 and QoS 1 publishers on every node run while
// one node at a time is cut off from the other two: first the bystander
// n3 (no subscriber there) with a blackhole (packets dropped, connections
// left open), then the subscriber's node n1 with a reset cut. The cut node
// must fence itself (its /readyz fails, its clients get DISCONNECT 0x9C
// with a Server Reference to a node of the majority, and a CONNECT there
// is refused, never accepted for a client id the majority serves), the
// majority must keep accepting CONNECT, SUBSCRIBE and PUBLISH, and after
// the heal the node must rejoin (ready, seen alive by every node). Every
// message acknowledged must reach both subscribers. No split brain: a
// session taken over on the majority during the cut is never still
// connected on the cut node, and nothing the cut node acknowledges after
// a SUBACK on the majority is lost.
//
// TERN_CLUSTER_PARTITION=1 runs the long form: each node cut in turn in
// each mode, for longer, with unpaced publishers. Times (fence, majority
// serving, rejoin) are logged, not asserted: the machine is shared.
// TERN_PARTITION_LOGS=DIR keeps the nodes' logs there.
func TestPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tern serve processes and cuts their routes; skipped with -short")
	}
	ternBinary(t)
	ps := newProcs(t, 3)
	pn := newPartitionNet(t, ps)
	runPartition(t, ps, "through the proxies", pn.set, func() {
		// No route around the proxies: every node's routes pass through them.
		for i := range ps {
			for j := range ps {
				if i != j && pn.proxies[i][j].Conns() == 0 && pn.proxies[j][i].Conns() == 0 {
					t.Fatalf("no route connection through the proxies between %s and %s", ps[i].name, ps[j].name)
				}
			}
		}
	})
}

// runPartition starts ps, whose route traffic setCut cuts (faultproxy.Open
// heals), checks formed once they formed, and runs TestPartition's cuts.
func runPartition(t *testing.T, ps []*proc, how string, setCut func(i int, m faultproxy.Mode), formed func()) {
	long := os.Getenv("TERN_CLUSTER_PARTITION") == "1"
	begin := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("%5.1fs "+format, append([]any{time.Since(begin).Seconds()}, args...)...)
	}
	if dir := os.Getenv("TERN_PARTITION_LOGS"); dir != "" {
		// The nodes' logs, kept for a look after the run.
		t.Cleanup(func() {
			os.MkdirAll(dir, 0o755)
			for _, p := range ps {
				for i := 1; i <= p.runs; i++ {
					name := fmt.Sprintf("%s-%02d.log", p.name, i)
					if b, err := os.ReadFile(filepath.Join(p.logDir, name)); err == nil {
						os.WriteFile(filepath.Join(dir, t.Name()+"-"+name), b, 0o644)
					}
				}
			}
		})
	}
	t0 := time.Now()
	for _, p := range ps {
		p.start()
	}
	for _, p := range ps {
		p.ready()
	}
	for _, p := range ps {
		if !waitFor(procWait, func() bool { return aliveSeen(p) == 3 }) {
			t.Fatalf("%s does not see 3 nodes alive", p.name)
		}
	}
	logf("3 nodes formed %s in %v", how, time.Since(t0).Round(time.Millisecond))
	defer func() {
		for _, p := range ps {
			p.checkLog()
		}
	}()
	formed()
	const ttl = 3 * time.Second // --cluster-lease-ttl of proc.start
	addrs := []string{ps[0].mqtt, ps[1].mqtt, ps[2].mqtt}
	nodeOf := map[string]int{}
	for i, a := range addrs {
		nodeOf[a] = i
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	subs := []*partSub{{mover: newMover("part-sub1", addrs, 0, true), got: map[string]int{}},
		{mover: newMover("part-sub2", addrs, 1, true), got: map[string]int{}}}
	for _, s := range subs {
		s.onPublish = s.record
		subscribed := make(chan struct{})
		wg.Go(func() { s.run(ctx, subscribed) })
		select {
		case <-subscribed:
		case <-time.After(procWait):
			t.Fatalf("%s never subscribed", s.id)
		}
	}
	pace := 2 * time.Millisecond
	if long {
		pace = 0
	}
	pubCtx, stopPubs := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	var pubs []*partPub
	for i := range addrs {
		p := &partPub{mover: newMover(fmt.Sprintf("part-pub%d", i+1), addrs, i, false), pace: pace}
		pubs = append(pubs, p)
		pwg.Go(func() { p.run(pubCtx) })
	}
	defer func() {
		stopPubs()
		pwg.Wait()
		stop()
		for _, s := range subs {
			s.stop()
		}
		for _, p := range pubs {
			p.stop()
		}
		wg.Wait()
	}()
	totalAcked := func() int {
		n := 0
		for _, p := range pubs {
			n += p.count()
		}
		return n
	}
	// progress waits until every publisher had n more messages
	// acknowledged.
	progress := func(n int) bool {
		var base []int
		for _, p := range pubs {
			base = append(base, p.count())
		}
		return waitFor(procWait, func() bool {
			for i, p := range pubs {
				if p.count() < base[i]+n {
					return false
				}
			}
			return true
		})
	}
	if !progress(50) {
		t.Fatal("no traffic before the partition")
	}

	type phase struct {
		node int
		mode faultproxy.Mode
	}
	phases := []phase{{2, faultproxy.Blackhole}, {0, faultproxy.Reset}}
	if long {
		phases = []phase{{2, faultproxy.Blackhole}, {0, faultproxy.Reset}, {1, faultproxy.Blackhole},
			{2, faultproxy.Reset}, {0, faultproxy.Blackhole}, {1, faultproxy.Reset}}
	}
	type figures struct {
		node                     string
		mode                     faultproxy.Mode
		fence, serving, rejoin   time.Duration
		inStep                   time.Duration // until /readyz: the node's replicas in step with their leaders
		moved, probes, probeRefs int
		overlap                  time.Duration // a session served on both sides
		lateLost                 int           // acknowledged by the cut node after a SUBACK elsewhere, lost
	}
	var figs []figures
	for phi, ph := range phases {
		cut := ps[ph.node]
		var majority []int
		for j := range ps {
			if j != ph.node {
				majority = append(majority, j)
			}
		}
		var before []*mover // clients on the node to cut
		for _, m := range append(moversOf(subs), moversOfPubs(pubs)...) {
			if m.addr() == cut.mqtt {
				before = append(before, m)
			}
		}
		// A client of the majority whose id a CONNECT on the cut node
		// tries to take.
		var held *mover
		for _, s := range subs {
			if a := s.addr(); a != "" && a != cut.mqtt {
				held = s.mover
			}
		}
		var majAddrs []string
		for _, j := range majority {
			majAddrs = append(majAddrs, addrs[j])
		}
		f := figures{node: cut.name, mode: ph.mode}
		// Clients of the node to cut for the split-brain probes: a
		// persistent session taken over on the majority during the cut,
		// and a publisher whose messages the majority subscribes to then.
		tag := fmt.Sprintf("%s-%d", cut.name, phi)
		twin := newMover("part-twin-"+tag, []string{cut.mqtt}, 0, true)
		latePub := newMover("part-latepub-"+tag, []string{cut.mqtt}, 0, false)
		if cli, _ := twin.client(ctx); cli == nil {
			t.Fatal("twin not connected")
		}
		latePubCli, _ := latePub.client(ctx)
		if latePubCli == nil {
			t.Fatal("late publisher not connected")
		}
		tCut := time.Now()
		setCut(ph.node, ph.mode)
		var twinAt time.Time
		var splitWG sync.WaitGroup
		splitWG.Go(func() {
			tw := newMover(twin.id, majAddrs, 0, true)
			for deadline := time.Now().Add(procWait); time.Now().Before(deadline) && ctx.Err() == nil; {
				cli, _, err := tw.dial(ctx, majAddrs[tw.next%len(majAddrs)])
				if err == nil {
					twinAt = time.Now()
					cli.Disconnect(&paho.Disconnect{})
					return
				}
				tw.next++
				time.Sleep(100 * time.Millisecond) // refused while the majority elects: retried
			}
		})
		lateTopic := "late/" + tag
		lateGot := map[string]bool{}
		var lateMu sync.Mutex
		lateSub := newMover("part-late-"+tag, majAddrs, 0, true)
		lateSub.onPublish = func(p *paho.Publish) {
			lateMu.Lock()
			lateGot[string(p.Payload)] = true
			lateMu.Unlock()
		}
		var subackAt time.Time
		splitWG.Go(func() {
			for deadline := time.Now().Add(procWait); time.Now().Before(deadline) && ctx.Err() == nil; {
				cli, _ := lateSub.client(ctx)
				if cli == nil {
					return
				}
				sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				sa, err := cli.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: lateTopic, QoS: 1}}})
				cancel()
				if err == nil && len(sa.Reasons) == 1 && sa.Reasons[0] < 0x80 {
					subackAt = time.Now()
					return
				}
				lateSub.drop(cli)
			}
		})
		type lateMsg struct {
			key  string
			sent time.Time
		}
		var lateAcked []lateMsg
		splitWG.Go(func() {
			for seq := 1; ; seq++ {
				m := lateMsg{key: fmt.Sprintf("%s:%d", lateTopic, seq), sent: time.Now()}
				pctx, cancel := connCtx(ctx, latePubCli)
				_, err := latePubCli.Publish(pctx, &paho.Publish{Topic: lateTopic, QoS: 1, Payload: []byte(m.key)})
				cancel()
				if err != nil {
					return
				}
				lateAcked = append(lateAcked, m)
				time.Sleep(20 * time.Millisecond) // the probe's rate
			}
		})
		logf("%s cut off (%s); %d acknowledged so far", cut.name, ph.mode, totalAcked())

		// CONNECTs on the cut node while it is cut: refused, 0x9C with a
		// Server Reference once fenced; never accepted for a client id
		// the majority serves.
		probeCtx, stopProbe := context.WithCancel(ctx)
		var probes sync.WaitGroup
		var probeErr atomic.Pointer[string]
		if held != nil {
			probes.Go(func() {
				for probeCtx.Err() == nil {
					pr := newMover(held.id, []string{cut.mqtt}, 0, true)
					cli, ack, err := pr.dial(probeCtx, cut.mqtt)
					if err == nil {
						cli.Disconnect(&paho.Disconnect{})
						msg := fmt.Sprintf("the cut node %s accepted a CONNECT of %s (session present %v)", cut.name, held.id, ack.SessionPresent)
						probeErr.Store(&msg)
						return
					}
					if ack != nil {
						f.probes++
						if ack.ReasonCode == byte(packets.UseAnotherServer) && ack.Properties != nil && ack.Properties.ServerReference != "" {
							f.probeRefs++
						}
					}
					select {
					case <-probeCtx.Done():
					case <-time.After(200 * time.Millisecond):
					}
				}
			})
		}

		// The cut node fences itself.
		if !waitFor(procWait, func() bool {
			st, err := clusterStatus(cut)
			return err == nil && st.State == "fenced"
		}) {
			t.Fatalf("%s never fenced", cut.name)
		}
		f.fence = time.Since(tCut)
		if code := readyz(cut); code == 200 {
			t.Fatalf("%s fenced and /readyz answers 200", cut.name)
		}
		// Its clients were told to go, with a reference to a majority node
		// (a publisher whose message could not be parked may have been
		// disconnected before, with 0x83: its message not acknowledged).
		for _, m := range before {
			var ev *moveEvent
			waitFor(procWait, func() bool {
				for _, e := range m.eventsSince(tCut) {
					if (e.what == "disconnected" || e.what == "lost") && e.addr == cut.mqtt {
						ev = &e
						return true
					}
				}
				return false
			})
			switch {
			case ev == nil:
				t.Fatalf("%s: never disconnected by the fenced %s: %+v", m.id, cut.name, m.eventsSince(tCut))
			case ev.what == "disconnected" && ev.reason == byte(packets.UseAnotherServer):
				if nodeOf[ev.ref] == ph.node || !slices.Contains(addrs, ev.ref) {
					t.Fatalf("%s: DISCONNECT 0x9c with Server Reference %q from the fenced %s", m.id, ev.ref, cut.name)
				}
				f.moved++
			default:
				logf("%s: %s by %s with 0x%02x %v after the cut, before its fence", m.id, ev.what, cut.name, ev.reason,
					ev.at.Sub(tCut).Round(time.Millisecond))
			}
		}
		// The majority serves: CONNECT, SUBSCRIBE and PUBLISH on each of
		// its nodes, and every publisher goes on. If that takes long, the
		// streams' state is logged while it does (not after: by then it
		// is back).
		var slowMu sync.Mutex // held while logging: the test may not end meanwhile
		slowEnded := false
		slow := time.AfterFunc(time.Until(tCut.Add(15*time.Second)), func() {
			slowMu.Lock()
			defer slowMu.Unlock()
			if slowEnded {
				return
			}
			logf("the majority is not serving yet, 15 s after the cut; its streams:")
			for _, j := range majority {
				logStreams(t, ps[j])
			}
		})
		t.Cleanup(func() {
			slow.Stop()
			slowMu.Lock()
			slowEnded = true
			slowMu.Unlock()
		})
		for _, j := range majority {
			serveCheck(t, ctx, addrs[j], fmt.Sprintf("probe-%s-%d", tag, j))
		}
		if !progress(20) {
			for _, j := range majority {
				logStreams(t, ps[j])
			}
			t.Fatalf("publishing stopped with %s cut off", cut.name)
		}
		f.serving = time.Since(tCut)
		if !slow.Stop() {
			logf("the majority served again %v after the cut", f.serving.Round(time.Millisecond))
		}
		for _, m := range before {
			if a := m.addr(); a == cut.mqtt {
				t.Fatalf("%s still on the fenced %s", m.id, cut.name)
			}
			refusals := map[string]int{}
			var back string
			for _, e := range m.eventsSince(tCut) {
				switch {
				case e.what == "refused":
					refusals[fmt.Sprintf("%s:0x%02x", e.addr, e.reason)]++
				case e.what == "connected" && e.addr != cut.mqtt && back == "":
					back = fmt.Sprintf("on %s %v after the cut", e.addr, e.at.Sub(tCut).Round(time.Millisecond))
				}
			}
			if back == "" {
				back = "not connected again yet"
			}
			logf("%s moved: %s, refused before: %v", m.id, back, refusals)
		}
		stopProbe()
		probes.Wait()
		if msg := probeErr.Load(); msg != nil {
			t.Fatal(*msg)
		}
		if long {
			time.Sleep(5 * time.Second) // a longer cut: the schedule of the test
		}

		// Heal: the node rejoins (accepts clients), then its replicas of
		// the replicated state catch up (/readyz): only then may another
		// node go without a stream losing its quorum.
		tHeal := time.Now()
		setCut(ph.node, faultproxy.Open)
		ok := waitFor(procWait, func() bool {
			if st, err := clusterStatus(cut); err != nil || st.State != "ready" && st.State != "catching_up" {
				return false
			}
			for _, p := range ps {
				if aliveSeen(p) != 3 {
					return false
				}
			}
			return true
		})
		if !ok {
			t.Fatalf("%s did not rejoin after the heal", cut.name)
		}
		f.rejoin = time.Since(tHeal)
		if !waitFor(procWait, func() bool { return readyz(cut) == 200 }) {
			st, _ := clusterStatus(cut)
			t.Fatalf("%s rejoined, and its replicas did not catch up within %v: %s", cut.name, procWait, st.Reason)
		}
		f.inStep = time.Since(tHeal)
		splitWG.Wait()
		// Split brain: the session taken over on the majority while its
		// connection on the cut node was still open; messages the cut node
		// acknowledged after a SUBACK on the majority and never delivered.
		var oldClosed time.Time
		for _, e := range twin.eventsSince(tCut) {
			if e.what == "disconnected" || e.what == "lost" {
				oldClosed = e.at
				break
			}
		}
		overlap := "none"
		if !twinAt.IsZero() && oldClosed.After(twinAt) {
			overlap = oldClosed.Sub(twinAt).Round(time.Millisecond).String()
			f.overlap = oldClosed.Sub(twinAt)
		}
		var after []string
		for _, m := range lateAcked {
			if !subackAt.IsZero() && m.sent.After(subackAt) {
				after = append(after, m.key)
			}
		}
		waitFor(10*time.Second, func() bool {
			lateMu.Lock()
			defer lateMu.Unlock()
			for _, k := range after {
				if !lateGot[k] {
					return false
				}
			}
			return true
		})
		lateMu.Lock()
		for _, k := range after {
			if !lateGot[k] {
				f.lateLost++
			}
		}
		lateMu.Unlock()
		lateSub.stop()
		twin.stop()
		latePub.stop()
		logf("%s: twin session accepted on the majority %v after the cut, its connection on %s closed %v after the cut (overlap %s); "+
			"late subscriber's SUBACK %v after the cut, %d messages the cut node acknowledged after it (%d in all), %d never delivered",
			cut.name, sinceOr(twinAt, tCut), cut.name, sinceOr(oldClosed, tCut), overlap, sinceOr(subackAt, tCut), len(after), len(lateAcked), f.lateLost)
		logf("%s (%s): fenced %v after the cut (lease TTL %v), majority serving and publishers on %v after it, "+
			"%d clients moved, %d CONNECTs refused on it (%d with a Server Reference); rejoined %v after the heal, replicas in step %v after it",
			cut.name, ph.mode, f.fence.Round(time.Millisecond), ttl, f.serving.Round(time.Millisecond), f.moved, f.probes, f.probeRefs,
			f.rejoin.Round(time.Millisecond), f.inStep.Round(time.Millisecond))
		figs = append(figs, f)
		if !progress(20) {
			for _, p := range ps {
				logStreams(t, p)
			}
			t.Fatalf("publishing stopped after %s rejoined", cut.name)
		}
		if long {
			// /readyz answers 200 before the node's JetStream replicas
			// have caught up: a cut of another node meanwhile is a second
			// failure for a group of three (a stream stays without a
			// leader, tern_park for one, until the first is back). The
			// schedule of the test gives them time.
			time.Sleep(10 * time.Second)
		}
	}
	stopPubs()
	pwg.Wait()
	var acked []string
	refused := 0
	for _, p := range pubs {
		acked = append(acked, p.acked...)
		refused += p.refused
	}
	logf("%d messages acknowledged, %d refused with an error reason code", len(acked), refused)
	failed := false
	for _, s := range subs {
		waitFor(2*procWait, func() bool { m, _ := s.check(acked); return len(m) == 0 })
		missing, dups := s.check(acked)
		s.mu.Lock()
		lost := s.lost
		s.mu.Unlock()
		logf("%s: %d of %d acknowledged messages missing, %d duplicates, %d reconnections without the session",
			s.id, len(missing), len(acked), dups, lost)
		if len(missing) > 0 {
			failed = true
			logf("%s: missing %s", s.id, keyRanges(missing))
		}
	}
	if failed {
		for _, p := range ps {
			if st, err := clusterStatus(p); err == nil {
				logf("%s forward counters: %+v", p.name, st.Forward)
			}
		}
		t.Error("acknowledged messages lost across the partitions")
	}
	for _, f := range figs {
		// A few milliseconds: the fenced node's DISCONNECT and the
		// majority's CONNACK cross in the test's goroutines.
		if f.overlap > 250*time.Millisecond {
			t.Errorf("%s (%s): one client id served on both sides of the partition for %v", f.node, f.mode, f.overlap)
		}
		if f.lateLost > 0 {
			t.Errorf("%s (%s): %d messages acknowledged by the cut node after a SUBACK on the majority never delivered", f.node, f.mode, f.lateLost)
		}
	}
	var sb strings.Builder
	for _, f := range figs {
		fmt.Fprintf(&sb, "\n  %s %-9s fence %6v  majority serving %6v  rejoin %6v  in step %6v  double session %6v  late messages lost %d", f.node, f.mode,
			f.fence.Round(10*time.Millisecond), f.serving.Round(10*time.Millisecond), f.rejoin.Round(10*time.Millisecond),
			f.inStep.Round(10*time.Millisecond), f.overlap.Round(10*time.Millisecond), f.lateLost)
	}
	logf("figures (lease TTL %v):%s", ttl, sb.String())
}

// sinceOr returns at - since, or "never" for a zero at.
func sinceOr(at, since time.Time) string {
	if at.IsZero() {
		return "never"
	}
	return at.Sub(since).Round(time.Millisecond).String()
}

func moversOf(subs []*partSub) []*mover {
	var out []*mover
	for _, s := range subs {
		out = append(out, s.mover)
	}
	return out
}

func moversOfPubs(pubs []*partPub) []*mover {
	var out []*mover
	for _, p := range pubs {
		out = append(out, p.mover)
	}
	return out
}

// serveCheck connects a fresh client to addr, subscribes and gets back
// its own QoS 1 message, retrying until the node serves it (a JetStream
// leader may be being elected on the majority side).
func serveCheck(t testing.TB, ctx context.Context, addr, id string) {
	t.Helper()
	deadline := time.Now().Add(procWait)
	var last error
	for time.Now().Before(deadline) {
		if last = serveOnce(ctx, addr, id); last == nil {
			return
		}
		time.Sleep(200 * time.Millisecond) // the majority is electing leaders: no event to wait on
	}
	t.Fatalf("%s does not serve %s: %v", addr, id, last)
}

func serveOnce(ctx context.Context, addr, id string) error {
	got := make(chan string, 1)
	m := newMover(id, []string{addr}, 0, false)
	m.onPublish = func(p *paho.Publish) {
		select {
		case got <- string(p.Payload):
		default:
		}
	}
	cli, _, err := m.dial(ctx, addr)
	if err != nil {
		return fmt.Errorf("CONNECT: %w", err)
	}
	defer cli.Disconnect(&paho.Disconnect{})
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sa, err := cli.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "serve/" + id, QoS: 1}}})
	if err != nil {
		return fmt.Errorf("SUBSCRIBE: %w", err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		return fmt.Errorf("SUBACK %v", sa.Reasons)
	}
	if _, err := cli.Publish(sctx, &paho.Publish{Topic: "serve/" + id, QoS: 1, Payload: []byte(id)}); err != nil {
		return fmt.Errorf("PUBLISH: %w", err)
	}
	select {
	case <-got:
		return nil
	case <-sctx.Done():
		return fmt.Errorf("own message not received")
	}
}

// logStreams logs the JetStream streams' state as node p's admin API
// tells it: which stream stopped, and which replicas do not keep up.
func logStreams(t *testing.T, p *proc) {
	t.Helper()
	var v struct {
		Detail Status `json:"detail"`
	}
	hc := http.Client{Timeout: 5 * time.Second} // also called with a lock held (TestPartition's slow log)
	resp, err := hc.Get("http://" + p.admin + "/api/v1/cluster")
	if err == nil {
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
	}
	if err != nil || v.Detail.JetStream == nil {
		t.Logf("%s: no JetStream state: %v", p.name, err)
		return
	}
	for _, s := range v.Detail.JetStream.Streams {
		t.Logf("%s sees %s: leader %q %s, replicas %+v", p.name, s.Name, s.Leader, s.Error, s.Replicas)
	}
}
