package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
)

// registry is this node's side of tern_sessions, the client identifier
// registry: which node holds each client's session, with an epoch that
// every CONNECT raises by compare-and-set. The last CONNECT wins, as
// MQTT wants, and two nodes never both think they won the same epoch.
type registry struct {
	c  *Cluster
	mu sync.Mutex
	// taken holds, for a while, the epochs other nodes claimed of client
	// identifiers this node handed over: a connection here that won an
	// older epoch must not stay.
	taken map[string]takenBy
	puts  int
}

type takenBy struct {
	epoch uint64
	at    time.Time
}

func newRegistry(c *Cluster) *registry {
	return &registry{c: c, taken: make(map[string]takenBy)}
}

// takenAfter reports whether another node claimed id with an epoch above
// epoch.
func (r *registry) takenAfter(id string, epoch uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.taken[id].epoch > epoch
}

// noteTaken records that another node claimed id with epoch.
func (r *registry) noteTaken(id string, epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.puts++; r.puts%1024 == 0 {
		for k, v := range r.taken {
			if now.Sub(v.at) > time.Minute {
				delete(r.taken, k)
			}
		}
	}
	if r.taken[id].epoch < epoch {
		r.taken[id] = takenBy{epoch, now}
	}
}

// epochKey is the client value holding the epoch its CONNECT won.
type epochKey struct{}

func sessionKey(clientID string) string { return "c." + hashKey(clientID) }

func ownerValue(node string, epoch uint64) []byte {
	return []byte(node + " " + strconv.FormatUint(epoch, 10))
}

func parseOwner(b []byte) (string, uint64) {
	node, e, _ := strings.Cut(string(b), " ")
	epoch, _ := strconv.ParseUint(e, 10, 64)
	return node, epoch
}

// AttachSession implements tern.SessionGate: it claims the client
// identifier for this node and, when its session was on another node,
// brings it here before the CONNACK. A fenced node refuses with 0x9C Use
// another server (and a Server Reference), a node that has not joined yet
// or cannot reach the registry with 0x88 Server unavailable.
func (c *Cluster) AttachSession(cl *tern.Client, cleanStart bool, expiry uint32) packets.ReasonCode {
	if c.fenced.Load() || c.draining.Load() {
		if ref := c.nodes.reference(); ref != "" {
			cl.SetServerReference(ref)
		}
		return packets.UseAnotherServer
	}
	if !c.ready.Load() {
		return packets.ServerUnavailable
	}
	id := cl.ID()
	key := sessionKey(id)
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	for range 50 {
		var owner string
		var epoch, rev uint64
		e, err := c.kvSess.Get(ctx, key)
		switch {
		case err == nil:
			owner, epoch = parseOwner(e.Value())
			rev = e.Revision()
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			c.log.Warn("client registry unreachable: CONNECT refused", "client", id, "err", err)
			return packets.ServerUnavailable
		}
		val := ownerValue(c.opts.Node, epoch+1)
		if rev == 0 {
			_, err = c.kvSess.Create(ctx, key, val)
		} else {
			_, err = c.kvSess.Update(ctx, key, val, rev)
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			continue // another node won this round: read again
		}
		if c.reg.takenAfter(id, epoch+1) {
			return packets.ServerUnavailable // a newer CONNECT on another node won meanwhile
		}
		cl.SetValue(epochKey{}, epoch+1)
		if err := c.storeWill(ctx, cl, expiry, epoch+1); err != nil {
			c.log.Warn("will not replicated: CONNECT refused", "client", id, "err", err)
			return packets.ServerUnavailable
		}
		if owner == "" || owner == c.opts.Node {
			return packets.Success
		}
		c.reg.takeOver(owner, id, cleanStart, epoch+1)
		return packets.Success
	}
	c.log.Warn("client registry: no compare-and-set won in time: CONNECT refused", "client", id)
	return packets.ServerUnavailable
}

// takeOver asks the node that held a session for it, and imports it. A
// node that is gone or does not answer gives nothing: the client starts
// with what this node has of it.
func (r *registry) takeOver(owner, id string, cleanStart bool, epoch uint64) {
	c := r.c
	req := []byte{wireVersion, 'h', 0}
	if cleanStart {
		req[2] = 1
	}
	req = binary.AppendUvarint(req, epoch)
	req = appendStr(req, c.opts.Node)
	req = appendStr(req, id)
	t0 := time.Now()
	resp, err := c.nc.Request("tern.n."+owner+".ctl", req, c.opts.ForwardTimeout)
	if err != nil {
		c.log.Warn("session not handed over: its node did not answer", "client", id, "peer", owner, "err", err)
		return
	}
	if len(resp.Data) == 0 {
		return
	}
	switch resp.Data[0] {
	case 0: // no session there
		return
	case 1:
		c.log.Warn("session not handed over", "client", id, "peer", owner, "err", string(resp.Data[1:]))
		return
	}
	st, err := decodeSession(resp.Data[1:])
	if err != nil {
		c.log.Warn("session not handed over", "client", id, "peer", owner, "err", err)
		return
	}
	if err := c.srv.ImportSession(st); err != nil {
		c.log.Warn("session imported with an error", "client", id, "peer", owner, "err", err)
	}
	c.fwd.cnt.takeovers.Add(1)
	c.log.Debug("session taken over", "client", id, "peer", owner, "deliveries", len(st.Deliveries),
		"took", time.Since(t0).String())
}

// control answers another node's requests: a handover of a session.
func (r *registry) control(msg *nats.Msg) {
	c := r.c
	rd := reader{b: msg.Data}
	var op byte
	if rd.byte() != wireVersion {
		msg.Respond([]byte{1})
		return
	}
	op = rd.byte()
	clean := rd.byte() == 1
	epoch := rd.uvarint()
	to := rd.str()
	id := rd.str()
	if rd.err || op != 'h' && op != 'i' {
		msg.Respond(append([]byte{1}, "bad request"...))
		return
	}
	if op == 'i' {
		if err := r.imported(id, rd.b); err != nil {
			msg.Respond(append([]byte{1}, err.Error()...))
			return
		}
		msg.Respond([]byte{0})
		return
	}
	r.noteTaken(id, epoch)
	var moved tern.Remote
	if !clean {
		moved = c.nodes.remote(to)
	}
	st, err := c.srv.ExportSession(id, clean, moved, c.opts.DrainTime)
	switch {
	case err != nil:
		msg.Respond(append([]byte{1}, err.Error()...))
	case st == nil:
		msg.Respond([]byte{0})
	default:
		c.fwd.cnt.handedOver.Add(1)
		msg.Respond(append([]byte{2}, encodeSession(st)...))
	}
}

// OnSessionEstablished implements tern.ConnectObserver: a client whose
// identifier another node claimed while this one was attaching it is
// disconnected, so that only the newest connection stays.
func (c *Cluster) OnSessionEstablished(cl *tern.Client, _ bool) {
	e, _ := cl.Value(epochKey{}).(uint64)
	if e == 0 {
		return
	}
	if c.reg.takenAfter(cl.ID(), e) {
		c.srv.Disconnect(cl.ID(), packets.SessionTakenOver)
	}
}

// shipLost hands the sessions this node holds but no longer owns (their
// clients connected elsewhere while it was down or cut off) to their
// owners, with what was queued for them here: late, not lost.
func (r *registry) shipLost() {
	c := r.c
	// What was parked for this node while it was away goes into the
	// sessions first, and moves with them.
	select {
	case <-c.fwd.parkCaughtUp:
	case <-time.After(10 * time.Second):
		c.log.Warn("park stream not read up to its end in 10s: shipping sessions anyway")
	case <-c.ctx.Done():
		return
	}
	live := map[string]bool{} // owners that answered a ping
	alive := func(node string) bool {
		ok, asked := live[node]
		if !asked {
			_, err := c.nc.Request("tern.n."+node+".sync", []byte{0}, c.opts.ForwardTimeout)
			ok = err == nil
			live[node] = ok
			if ok { // before its first heartbeat here: what moves there must not be parked
				c.nodes.seen(node, lease{Version: Version})
			}
		}
		return ok
	}
	shipped := 0
	for _, si := range c.srv.Sessions() {
		if si.Online || c.ctx.Err() != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		e, err := c.kvSess.Get(ctx, sessionKey(si.ClientID))
		cancel()
		if err != nil {
			continue
		}
		owner, epoch := parseOwner(e.Value())
		if owner == c.opts.Node || !alive(owner) {
			continue
		}
		st, err := c.srv.ExportSession(si.ClientID, false, c.nodes.remote(owner), c.opts.DrainTime)
		if err != nil || st == nil {
			continue
		}
		req := []byte{wireVersion, 'i', 0}
		req = binary.AppendUvarint(req, epoch)
		req = appendStr(req, c.opts.Node)
		req = appendStr(req, si.ClientID)
		req = append(req, encodeSession(st)...)
		if _, err := c.nc.Request("tern.n."+owner+".ctl", req, c.opts.ForwardTimeout); err != nil {
			c.log.Warn("a session's queue could not be shipped to its new node", "client", si.ClientID, "peer", owner,
				"deliveries", len(st.Deliveries), "err", err)
			continue
		}
		shipped++
	}
	if shipped > 0 {
		c.log.Info("sessions taken over elsewhere while this node was away: shipped to their owners", "sessions", shipped)
	}
}

// imported takes a session another node shipped late: merged into the
// session here, if the client still has one.
func (r *registry) imported(id string, data []byte) error {
	c := r.c
	if _, ok := c.srv.SessionInfo(id); !ok {
		return nil // ended here meanwhile: nothing to deliver it to
	}
	st, err := decodeSession(data)
	if err != nil {
		return err
	}
	return c.srv.ImportSession(st)
}
