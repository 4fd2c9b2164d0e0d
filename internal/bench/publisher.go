package bench

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
)

// Packet identifier states of a publisher.
const (
	idFree     = 0
	idSent     = 1 // PUBLISH sent, PUBACK or PUBREC awaited
	idReleased = 2 // PUBREL sent, PUBCOMP awaited
)

// maxBatch caps the messages a publisher queues between two checks of its
// limits.
const maxBatch = 256

// publisher publishes numbered messages on one connection, keeping within
// its rate, its QoS window, its flow-control distance to its subscribers and
// its connection's outbound buffer.
type publisher struct {
	n      uint32
	c      *client
	topic  string
	qos    byte
	retain bool
	// perMessage makes message i go to "<topic>/<i>" (Retained).
	perMessage bool
	// empty publishes zero-length payloads (clearing retained messages).
	empty  bool
	rate   float64 // messages per second, 0 for no limit
	phase  float64 // in [0,1): staggers publishers that share a rate
	limit  int64   // stop after this many messages, 0 for no limit
	window int
	flow   int
	subs   []*tracker // trackers of the subscribers expecting these messages

	sent     atomic.Int64
	acked    atomic.Int64
	refused  atomic.Int64 // acknowledgements with a failure reason code (v5)
	inflight atomic.Int64
	waiting  atomic.Bool
	wake     chan struct{}

	mu     sync.Mutex
	ids    []byte // packet identifier states, indexed by identifier
	nextID uint16

	pk       packets.Publish
	template []byte
}

func newPublisher(n uint32, topic string, cfg *Config) *publisher {
	p := &publisher{
		n: n, topic: topic, qos: cfg.QoS,
		window: cfg.Window, flow: cfg.Flow,
		wake: make(chan struct{}, 1),
	}
	p.template = make([]byte, cfg.PayloadSize)
	for i := HeaderSize; i < len(p.template); i++ {
		p.template[i] = 'x'
	}
	return p
}

// attach makes c the publisher's connection.
func (p *publisher) attach(c *client) {
	p.c = c
	c.pub = p
	if c.recvMax > 0 && c.recvMax < p.window {
		p.window = c.recvMax
	}
}

// wakeUp wakes the publishing goroutine if it waits.
func (p *publisher) wakeUp() {
	if p.waiting.Load() {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// allowance returns how many messages may be queued now.
func (p *publisher) allowance(elapsed time.Duration) int64 {
	sent := p.sent.Load()
	n := int64(maxBatch)
	if p.limit > 0 {
		n = min(n, p.limit-sent)
	}
	if p.rate > 0 {
		due := int64(math.Floor(p.rate*elapsed.Seconds() + p.phase))
		n = min(n, due-sent)
	}
	if p.qos > 0 {
		n = min(n, int64(p.window)-p.inflight.Load())
	}
	if p.flow > 0 && len(p.subs) > 0 {
		least := int64(math.MaxInt64)
		for _, t := range p.subs {
			if !t.owner.dead.Load() { // a failed subscriber does not hold others back
				least = min(least, t.distinct.Load())
			}
		}
		if least != math.MaxInt64 {
			n = min(n, int64(p.flow)-(sent-least))
		}
	}
	if n > 0 && p.c.outLen() >= maxOut {
		return 0
	}
	return n
}

// nextDue returns when the next message is due under the rate limit, as an
// offset from the start.
func (p *publisher) nextDue() time.Duration {
	if p.rate <= 0 {
		return -1
	}
	next := float64(p.sent.Load()+1) - p.phase
	return time.Duration(next / p.rate * float64(time.Second))
}

// loop publishes from start until end, the limit, stop or a connection
// failure.
func (p *publisher) loop(start, end time.Time, stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		if !now.Before(end) || p.c.dead.Load() || p.limit > 0 && p.sent.Load() >= p.limit {
			return
		}
		select {
		case <-stop:
			return
		default:
		}
		if n := p.allowance(now.Sub(start)); n > 0 {
			p.send(int(n), now)
			continue
		}
		p.waiting.Store(true)
		if n := p.allowance(now.Sub(start)); n > 0 {
			p.waiting.Store(false)
			p.send(int(n), now)
			continue
		}
		wait := 5 * time.Millisecond // fallback poll for missed wake-ups
		if due := p.nextDue(); due >= 0 {
			wait = min(wait, start.Add(due).Sub(now))
		}
		wait = max(min(wait, end.Sub(now)), 0)
		timer.Reset(wait)
		select {
		case <-p.wake:
		case <-p.c.room:
		case <-timer.C:
		case <-stop:
		}
		p.waiting.Store(false)
	}
}

// send queues n messages and wakes the writer.
func (p *publisher) send(n int, now time.Time) {
	c := p.c
	ts := now.UnixNano()
	seq := p.sent.Load()
	if p.qos > 0 {
		p.inflight.Add(int64(n))
	}
	c.mu.Lock()
	out := c.out
	for i := range n {
		p.pk = packets.Publish{QoS: p.qos, Retain: p.retain, Topic: p.topic, Payload: p.template}
		if p.perMessage {
			p.pk.Topic = p.topic + "/" + strconv.FormatInt(seq+int64(i), 10)
		}
		if p.empty {
			p.pk.Payload = nil
		}
		if p.qos > 0 {
			p.pk.PacketID = p.allocID()
		}
		var err error
		out, err = p.pk.Encode(out, c.version)
		if err != nil {
			panic(fmt.Sprintf("bench: encoding PUBLISH: %v", err)) // the generator built an invalid packet
		}
		if !p.empty {
			Header{Run: c.r.runID, Publisher: p.n, Seq: uint32(seq) + uint32(i), SentAt: ts}.Put(out[len(out)-len(p.template):])
		}
	}
	c.out = out
	c.mu.Unlock()
	p.sent.Add(int64(n))
	c.wakeWriter()
}

// allocID returns a free packet identifier and marks it sent. The window
// (at most 65,535) guarantees that one is free.
func (p *publisher) allocID() uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ids == nil {
		p.ids = make([]byte, 65536)
	}
	for {
		p.nextID++
		if p.nextID == 0 {
			p.nextID = 1
		}
		if p.ids[p.nextID] == idFree {
			p.ids[p.nextID] = idSent
			return p.nextID
		}
	}
}

// acknowledged handles PUBACK, PUBREC and PUBCOMP from the broker.
func (p *publisher) acknowledged(t packets.Type, a *packets.Ack) error {
	p.mu.Lock()
	state := byte(idFree)
	if p.ids != nil {
		state = p.ids[a.PacketID]
	}
	ok := t == packets.PUBACK && p.qos == 1 && state == idSent ||
		t == packets.PUBREC && p.qos == 2 && state == idSent ||
		t == packets.PUBCOMP && p.qos == 2 && state == idReleased
	if !ok {
		p.mu.Unlock()
		return fmt.Errorf("bench: unexpected %s for packet id %d", t, a.PacketID)
	}
	done := t != packets.PUBREC || a.ReasonCode.IsError()
	if done {
		p.ids[a.PacketID] = idFree
	} else {
		p.ids[a.PacketID] = idReleased
	}
	p.mu.Unlock()
	if !done {
		p.c.appendAck(&packets.Pubrel{PacketID: a.PacketID})
		return nil
	}
	if a.ReasonCode.IsError() {
		p.refused.Add(1)
	} else {
		p.acked.Add(1)
	}
	p.inflight.Add(-1)
	p.wakeUp()
	return nil
}
