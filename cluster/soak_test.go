package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
)

// Issue 14's acceptance item 3: three `tern serve` processes, QoS 1 and
// QoS 2 publishers and persistent subscribers spread over the nodes at
// 10,000 msg/s in all; each node in turn is killed with SIGKILL and
// restarted 5 s later. Clients of a killed node reconnect to the next one
// (clean start 0), publishers resending what was not acknowledged when
// the CONNACK says Session Present 1, discarding it when it says 0, as a
// client must [MQTT-3.2.2-5]. Every
// message acknowledged (PUBACK, or PUBREC for QoS 2) must reach every
// subscriber, QoS 2 exactly once. Run with
//
//	TERN_CLUSTER_SOAK=1 go test ./cluster -run TestClusterSoak -v -timeout 30m
//
// TERN_SOAK_RATE (messages per second in all, default 10,000) and
// TERN_SOAK_PHASE (seconds between kills, default 15) change the load;
// TERN_SOAK_LOGS names a directory to copy every node's logs into.
func TestClusterSoak(t *testing.T) {
	if os.Getenv("TERN_CLUSTER_SOAK") != "1" {
		t.Skip("set TERN_CLUSTER_SOAK=1 to kill each node of a loaded cluster in turn (a few minutes)")
	}
	env := func(k string, def int) int {
		if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
			return n
		}
		return def
	}
	rate, phase := env("TERN_SOAK_RATE", 10_000), time.Duration(env("TERN_SOAK_PHASE", 15))*time.Second
	ternBinary(t)
	ps := newProcs(t, 3)
	startProcs(t, ps)
	addrs := []string{ps[0].mqtt, ps[1].mqtt, ps[2].mqtt}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	subs := make([]*soakSub, 3)
	var wg sync.WaitGroup
	for i := range subs {
		subs[i] = &soakSub{id: fmt.Sprintf("soak-sub%d", i), addrs: addrs, next: i, got: map[string]int{}, where: map[string][]uint8{}, rel: map[uint16]bool{}}
		subs[i].ready.Add(1)
		wg.Go(func() { subs[i].run(ctx) })
		subs[i].ready.Wait()
	}
	pubCtx, stopPubs := context.WithCancel(ctx)
	pubs := make([]*soakPub, 3)
	var pwg sync.WaitGroup
	for i := range pubs {
		pubs[i] = &soakPub{id: fmt.Sprintf("soak-pub%d", i), addrs: addrs, next: i, rate: rate / len(pubs), window: 50,
			inflight: map[uint16]*soakMsg{}}
		pwg.Go(func() { pubs[i].run(pubCtx) })
	}
	for i, p := range ps {
		time.Sleep(phase - 5*time.Second) // the schedule of the test: nothing to wait on
		t.Logf("SIGKILL %s", p.name)
		p.kill()
		time.Sleep(5 * time.Second)
		p.start()
		p.ready()
		t.Logf("%s back; acknowledged so far %d", p.name, soakAcked(pubs))
		if i == len(ps)-1 {
			time.Sleep(phase / 2)
		}
	}
	stopPubs()
	pwg.Wait()
	want := map[string]byte{}
	refused, discarded := 0, 0
	for _, p := range pubs {
		for k, q := range p.acked {
			want[k] = q
		}
		refused += p.refused
		discarded += p.discarded
	}
	t.Logf("%d messages acknowledged (%d refused with an error reason code, %d in flight discarded on Session Present 0); "+
		"waiting for every subscriber to have them", len(want), refused, discarded)
	deadline := time.Now().Add(2 * procWait)
	for _, s := range subs {
		for {
			missing, _ := s.check(want)
			if missing == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond) // the subscribers' goroutines count; polled
		}
	}
	stop()
	// Counters of each node since its last start: the duplicates and
	// copies it dropped, the messages routed again to it.
	for _, p := range ps {
		resp, err := http.Get("http://" + p.admin + "/api/v1/cluster")
		if err != nil {
			continue
		}
		var view struct{ Detail Status }
		json.NewDecoder(resp.Body).Decode(&view)
		resp.Body.Close()
		f := view.Detail.Forward
		t.Logf("%s since its start: %d parked, %d unparked, %d received sent again, %d QoS 2 copies dropped, %d parked copies skipped, %d orphaned",
			p.name, f.Parked, f.Unparked, f.AgainReceived, f.OnceDropped, f.ParkedTaken, f.Orphaned)
	}
	failed := false
	for _, s := range subs {
		missing, dup2 := s.check(want)
		if missing > 0 {
			t.Logf("%s: missing %s", s.id, keyRanges(s.missingKeys(want, len(want))))
		}
		s.mu.Lock()
		t.Logf("%s: %s", s.id, strings.Join(s.log, "; "))
		s.mu.Unlock()
		if dup2 > 0 {
			t.Logf("%s: QoS 2 delivered twice, by the connections that delivered them: %s", s.id, s.dupSources(want))
		}
		s.mu.Lock()
		t.Logf("%s: %d missing, %d QoS 2 delivered twice, %d QoS 1 duplicates, %d connections, %d of them without the session",
			s.id, missing, dup2, s.dup1, s.conns, s.lostSessions)
		s.mu.Unlock()
		if missing > 0 || dup2 > 0 {
			failed = true
		}
	}
	if d := os.Getenv("TERN_SOAK_LOGS"); d != "" {
		// Every run's log of every node, for a look after the test.
		for _, p := range ps {
			files, _ := filepath.Glob(filepath.Join(p.logDir, "*.log"))
			for _, f := range files {
				if b, err := os.ReadFile(f); err == nil {
					os.WriteFile(filepath.Join(d, filepath.Base(f)), b, 0o644)
				}
			}
		}
	}
	if failed {
		t.Error("acknowledged messages lost or QoS 2 duplicated")
	}
}

func soakAcked(pubs []*soakPub) int {
	n := 0
	for _, p := range pubs {
		p.mu.Lock()
		n += len(p.acked)
		p.mu.Unlock()
	}
	return n
}

// soakDial connects to addr with clean start 0 and a session of an hour.
func soakDial(addr, id string) (net.Conn, *bufio.Reader, *packets.Connack, error) {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, nil, nil, err
	}
	b, _ := (&packets.Connect{ProtocolVersion: packets.V5, ClientID: id, KeepAlive: 30,
		Properties: packets.Properties{SessionExpiry: packets.Uint32(3600), ReceiveMaximum: 1000}}).Encode(nil, packets.V5)
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(b); err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	r := bufio.NewReader(nc)
	pk, err := packets.ReadPacket(r, packets.V5, 0)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	ack, ok := pk.(*packets.Connack)
	if !ok || ack.ReasonCode != 0 {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("CONNACK %+v", pk)
	}
	nc.SetDeadline(time.Time{})
	return nc, r, ack, nil
}

// soakSub is a persistent subscriber to soak/# at QoS 2 that moves to the
// next node when its connection fails. It keeps, as a client must, the
// packet identifiers of QoS 2 messages received and not yet released, so
// that a resend of one is not taken for a new message.
type soakSub struct {
	id    string
	addrs []string
	next  int
	ready sync.WaitGroup

	mu                  sync.Mutex
	got                 map[string]int
	where               map[string][]uint8 // QoS 2: the connections (s.conns at the time) that delivered each message
	rel                 map[uint16]bool
	dup1                int
	conns, lostSessions int
	log                 []string // the connections made
}

func (s *soakSub) run(ctx context.Context) {
	first := true
	for ctx.Err() == nil {
		nc, r, ack, err := soakDial(s.addrs[s.next%len(s.addrs)], s.id)
		if err != nil {
			s.next++
			time.Sleep(100 * time.Millisecond) // the node is down or not ready: retry elsewhere
			continue
		}
		s.mu.Lock()
		s.conns++
		s.log = append(s.log, fmt.Sprintf("connection %d to n%d at %s, session present %v", s.conns, s.next%len(s.addrs)+1,
			time.Now().Format("15:04:05.000"), ack.SessionPresent))
		if !first && !ack.SessionPresent {
			s.lostSessions++
			clear(s.rel) // a new session: the old one's packet identifiers mean nothing
		}
		s.mu.Unlock()
		if !ack.SessionPresent {
			b, _ := (&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "soak/#", QoS: 2}}}).Encode(nil, packets.V5)
			nc.Write(b)
		}
		if first {
			// Nothing is published before the first SUBACK: it comes
			// once every node routes soak/# here.
			first = false
			pk, err := packets.ReadPacket(r, packets.V5, 0)
			if _, ok := pk.(*packets.Suback); err != nil || !ok {
				panic(fmt.Sprintf("%s: no SUBACK: %v %v", s.id, pk, err))
			}
			s.ready.Done()
		}
		stopOnDone := context.AfterFunc(ctx, func() { nc.Close() })
		s.read(nc, r)
		stopOnDone()
		nc.Close()
		s.next++
	}
}

func (s *soakSub) read(nc net.Conn, r *bufio.Reader) {
	// PINGREQ every 10 s, as a client with keep alive 30 must: an idle
	// subscriber is not disconnected for silence [MQTT-3.1.2-24].
	var wmu sync.Mutex
	done := make(chan struct{})
	defer close(done)
	go func() {
		ping, _ := (&packets.Pingreq{}).Encode(nil, packets.V5)
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				wmu.Lock()
				nc.Write(ping)
				wmu.Unlock()
			}
		}
	}()
	var out []byte
	for {
		pk, err := packets.ReadPacket(r, packets.V5, 0)
		if err != nil {
			return
		}
		out = out[:0]
		s.mu.Lock()
		switch p := pk.(type) {
		case *packets.Publish:
			key := string(p.Payload)
			switch p.QoS {
			case 1:
				if s.got[key] > 0 {
					s.dup1++
				}
				s.got[key]++
				out, _ = (&packets.Puback{PacketID: p.PacketID}).Encode(out, packets.V5)
			case 2:
				if !s.rel[p.PacketID] { // a new message, not a resend before PUBREL
					s.got[key]++
					s.where[key] = append(s.where[key], uint8(s.conns))
					s.rel[p.PacketID] = true
				}
				out, _ = (&packets.Pubrec{PacketID: p.PacketID}).Encode(out, packets.V5)
			}
		case *packets.Pubrel:
			delete(s.rel, p.PacketID)
			out, _ = (&packets.Pubcomp{PacketID: p.PacketID}).Encode(out, packets.V5)
		}
		s.mu.Unlock()
		if len(out) > 0 {
			wmu.Lock()
			_, err := nc.Write(out)
			wmu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

// check counts the acknowledged messages not received, and the QoS 2
// ones received more than once.
func (s *soakSub) check(want map[string]byte) (missing, dup2 int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, q := range want {
		switch n := s.got[k]; {
		case n == 0:
			missing++
		case n > 1 && q == 2:
			dup2++
		}
	}
	return missing, dup2
}

// dupSources describes the QoS 2 messages delivered more than once: for
// each sequence of connections that delivered one (1 is the first
// connection), how many and the range of publisher sequence numbers.
func (s *soakSub) dupSources(want map[string]byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	type span struct{ n, lo, hi int }
	by := map[string]*span{}
	for k, q := range want {
		w := s.where[k]
		if q != 2 || len(w) < 2 {
			continue
		}
		pub, seqs, _ := strings.Cut(k, ":")
		seq, _ := strconv.Atoi(seqs)
		src := fmt.Sprintf("%s %v", pub, w)
		sp := by[src]
		if sp == nil {
			sp = &span{lo: seq, hi: seq}
			by[src] = sp
		}
		sp.n++
		sp.lo, sp.hi = min(sp.lo, seq), max(sp.hi, seq)
	}
	var out []string
	for src, sp := range by {
		out = append(out, fmt.Sprintf("%s: %d (seq %d-%d)", src, sp.n, sp.lo, sp.hi))
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// missingKeys returns up to n of the acknowledged messages not received,
// sorted, with their QoS.
func (s *soakSub) missingKeys(want map[string]byte, n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, q := range want {
		if s.got[k] == 0 {
			out = append(out, fmt.Sprintf("%s/q%d", k, q))
		}
	}
	slices.Sort(out)
	return out[:min(n, len(out))]
}

// soakMsg is a message of a soakPub in flight.
type soakMsg struct {
	key  string
	qos  byte
	recd bool // QoS 2: PUBREC received, PUBREL sent
}

// soakPub publishes soak/<id> messages, QoS 1 and 2 in turn, at its rate
// with up to window in flight; when its connection fails it moves to the
// next node with its session (clean start 0) and resends what was not
// acknowledged (PUBREL for what had its PUBREC).
type soakPub struct {
	id     string
	addrs  []string
	next   int
	rate   int
	window int

	mu        sync.Mutex
	seq       int
	inflight  map[uint16]*soakMsg
	acked     map[string]byte
	refused   int
	discarded int // in flight when a CONNACK said Session Present 0
}

func (p *soakPub) run(ctx context.Context) {
	p.acked = map[string]byte{}
	var pid uint16
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	perTick := max(1, p.rate/100)
	for ctx.Err() == nil {
		nc, r, ack, err := soakDial(p.addrs[p.next%len(p.addrs)], p.id)
		if err != nil {
			p.next++
			time.Sleep(100 * time.Millisecond) // the node is down or not ready: retry elsewhere
			continue
		}
		if !ack.SessionPresent {
			// The server has not the session (its node died): the
			// client discards its own session state, the messages in
			// flight among it [MQTT-3.2.2-5]. Those not acknowledged are
			// not counted; resent, they would be routed again.
			p.mu.Lock()
			p.discarded += len(p.inflight)
			clear(p.inflight)
			p.mu.Unlock()
		}
		var wmu sync.Mutex
		write := func(pk packets.Packet) error {
			b, _ := pk.Encode(nil, packets.V5)
			wmu.Lock()
			defer wmu.Unlock()
			_, err := nc.Write(b)
			return err
		}
		// Resend what is in flight [MQTT-4.4.0-1].
		p.mu.Lock()
		var resend []packets.Packet
		for id, m := range p.inflight {
			if m.recd {
				resend = append(resend, &packets.Pubrel{PacketID: id})
			} else {
				resend = append(resend, &packets.Publish{Topic: "soak/" + p.id, QoS: m.qos, PacketID: id, Dup: true, Payload: []byte(m.key)})
			}
		}
		p.mu.Unlock()
		for _, pk := range resend {
			write(pk)
		}
		var broken atomic.Bool
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			defer broken.Store(true)
			for {
				pk, err := packets.ReadPacket(r, packets.V5, 0)
				if err != nil {
					return
				}
				p.mu.Lock()
				switch a := pk.(type) {
				case *packets.Puback:
					if m := p.inflight[a.PacketID]; m != nil && m.qos == 1 {
						delete(p.inflight, a.PacketID)
						if a.ReasonCode.IsError() {
							p.refused++
						} else {
							p.acked[m.key] = 1
						}
					}
				case *packets.Pubrec:
					if m := p.inflight[a.PacketID]; m != nil && m.qos == 2 {
						if a.ReasonCode.IsError() {
							delete(p.inflight, a.PacketID)
							p.refused++
						} else {
							p.acked[m.key] = 2
							m.recd = true
							p.mu.Unlock()
							write(&packets.Pubrel{PacketID: a.PacketID})
							p.mu.Lock()
						}
					}
				case *packets.Pubcomp:
					if m := p.inflight[a.PacketID]; m != nil && m.recd {
						delete(p.inflight, a.PacketID)
					}
				}
				p.mu.Unlock()
			}
		}()
		for ctx.Err() == nil && !broken.Load() {
			<-tick.C
			for range perTick {
				p.mu.Lock()
				if len(p.inflight) >= p.window {
					p.mu.Unlock()
					break
				}
				for pid++; pid == 0 || p.inflight[pid] != nil; pid++ {
				}
				p.seq++
				m := &soakMsg{key: p.id + ":" + strconv.Itoa(p.seq), qos: byte(1 + p.seq%2)}
				p.inflight[pid] = m
				p.mu.Unlock()
				if write(&packets.Publish{Topic: "soak/" + p.id, QoS: m.qos, PacketID: pid, Payload: []byte(m.key)}) != nil {
					break
				}
			}
		}
		if ctx.Err() != nil {
			// Finish what is in flight before leaving.
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !broken.Load(); {
				p.mu.Lock()
				n := len(p.inflight)
				p.mu.Unlock()
				if n == 0 {
					break
				}
				time.Sleep(10 * time.Millisecond) // polled: the reader empties the map
			}
		}
		nc.Close()
		<-readDone
		p.next++
	}
}
