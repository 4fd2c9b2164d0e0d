package bench

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/ternmq/tern/packets"
)

// fakeBroker is a minimal MQTT broker for the package's tests: one
// goroutine per connection, a flat list of subscriptions, QoS 0/1/2 in both
// directions, retained messages. Its faults let tests check that the
// generator's accounting sees losses and duplicates.
type fakeBroker struct {
	t  testing.TB
	ln net.Listener

	mu       sync.Mutex
	subs     []fakeSub
	retained map[string]*packets.Publish
	routed   int

	// dropEvery and dupEvery, when positive, make the broker drop or
	// deliver twice every n-th message it routes.
	dropEvery, dupEvery int
}

type fakeSub struct {
	c      *fakeConn
	filter string
	qos    byte
}

type fakeConn struct {
	nc      net.Conn
	version byte
	mu      sync.Mutex
	w       *bufio.Writer
	nextID  uint16
}

func newFakeBroker(t testing.TB) *fakeBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBroker{t: t, ln: ln, retained: map[string]*packets.Publish{}}
	var wg sync.WaitGroup
	var conns sync.Map
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(nc, true)
			wg.Add(1)
			go func() { defer wg.Done(); b.serve(nc) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return b
}

func (b *fakeBroker) addr() string { return b.ln.Addr().String() }

func (c *fakeConn) send(pk packets.Packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	buf, err := pk.Encode(nil, c.version)
	if err != nil {
		panic(err)
	}
	c.w.Write(buf)
	c.w.Flush()
}

func (b *fakeBroker) serve(nc net.Conn) {
	defer nc.Close()
	r := bufio.NewReader(nc)
	c := &fakeConn{nc: nc, w: bufio.NewWriter(nc)}
	pk, err := packets.ReadPacket(r, 0, 0)
	if err != nil {
		return
	}
	conn, ok := pk.(*packets.Connect)
	if !ok {
		return
	}
	c.version = conn.ProtocolVersion
	c.send(&packets.Connack{})
	defer b.unsubscribe(c)
	for {
		pk, err := packets.ReadPacket(r, c.version, 0)
		if err != nil {
			return
		}
		switch p := pk.(type) {
		case *packets.Subscribe:
			codes := make([]packets.ReasonCode, len(p.Subscriptions))
			var retained []*packets.Publish
			b.mu.Lock()
			for i, s := range p.Subscriptions {
				codes[i] = packets.ReasonCode(s.QoS)
				b.subs = append(b.subs, fakeSub{c, s.Filter, s.QoS})
				for topic, m := range b.retained {
					if fakeMatch(s.Filter, topic) {
						retained = append(retained, m)
					}
				}
			}
			b.mu.Unlock()
			c.send(&packets.Suback{PacketID: p.PacketID, ReasonCodes: codes})
			for _, m := range retained {
				c.deliver(m, p.Subscriptions[0].QoS)
			}
		case *packets.Publish:
			b.route(p)
			switch p.QoS {
			case 1:
				c.send(&packets.Puback{PacketID: p.PacketID})
			case 2:
				c.send(&packets.Pubrec{PacketID: p.PacketID})
			}
		case *packets.Pubrel:
			c.send(&packets.Pubcomp{PacketID: p.PacketID})
		case *packets.Pubrec:
			c.send(&packets.Pubrel{PacketID: p.PacketID})
		case *packets.Pingreq:
			c.send(&packets.Pingresp{})
		case *packets.Disconnect:
			return
		}
	}
}

func (b *fakeBroker) unsubscribe(c *fakeConn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.subs[:0]
	for _, s := range b.subs {
		if s.c != c {
			kept = append(kept, s)
		}
	}
	b.subs = kept
}

func (b *fakeBroker) route(p *packets.Publish) {
	m := &packets.Publish{QoS: p.QoS, Topic: strings.Clone(p.Topic), Payload: append([]byte(nil), p.Payload...)}
	b.mu.Lock()
	if p.Retain {
		if len(p.Payload) == 0 {
			delete(b.retained, m.Topic)
		} else {
			b.retained[m.Topic] = m
		}
	}
	var targets []fakeSub
	for _, s := range b.subs {
		if fakeMatch(s.filter, m.Topic) {
			targets = append(targets, s)
		}
	}
	b.mu.Unlock()
	for _, s := range targets {
		b.mu.Lock()
		b.routed++
		n := b.routed
		b.mu.Unlock()
		if b.dropEvery > 0 && n%b.dropEvery == 0 {
			continue
		}
		s.c.deliver(m, s.qos)
		if b.dupEvery > 0 && n%b.dupEvery == 0 {
			s.c.deliver(m, s.qos)
		}
	}
}

func (c *fakeConn) deliver(m *packets.Publish, qos byte) {
	out := *m
	out.QoS = min(m.QoS, qos)
	if out.QoS > 0 {
		c.mu.Lock()
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		out.PacketID = c.nextID
		c.mu.Unlock()
	}
	c.send(&out)
}

// fakeMatch matches a topic against a filter with + and # wildcards.
func fakeMatch(filter, topic string) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, level := range f {
		if level == "#" {
			return true
		}
		if i >= len(t) || level != "+" && level != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}
