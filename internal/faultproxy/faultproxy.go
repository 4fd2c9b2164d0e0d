// Package faultproxy is a TCP proxy for tests that cuts the traffic it
// carries, as a network partition would, and heals it. Route the
// connections between two processes through one Proxy per direction and
// the test decides when they can talk.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Mode is what a Proxy does with the traffic it carries.
type Mode int

const (
	// Open forwards every byte both ways.
	Open Mode = iota
	// Blackhole stops the bytes in both directions and keeps the
	// connections open, as a network that drops packets: neither end
	// learns anything until its own timeouts fire. New connections are
	// accepted and never forwarded. Going back to Open resumes the
	// connections still open (what was held goes through, a close that
	// came meanwhile too) and resets the ones accepted during the cut.
	Blackhole
	// Reset resets every connection (RST to both ends) and resets new
	// ones as soon as they are accepted, as a firewall that rejects.
	Reset
)

func (m Mode) String() string {
	switch m {
	case Open:
		return "open"
	case Blackhole:
		return "blackhole"
	case Reset:
		return "reset"
	}
	return "mode?"
}

// Proxy listens on a loopback port and forwards each connection to its
// target, subject to its Mode.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	mode    Mode
	changed chan struct{} // closed, and replaced, at each change of mode
	pairs   map[*pair]struct{}
	held    map[net.Conn]struct{} // accepted during a blackhole
	closed  bool
	wg      sync.WaitGroup
}

// pair is a client connection and its upstream connection.
type pair struct {
	down, up net.Conn
	dead     bool // reset or closed: nothing more goes through
	ended    int  // directions whose stream ended (half closes passed on)
}

// New starts a proxy on listen ("127.0.0.1:0" for any port) to target.
func New(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, changed: make(chan struct{}), pairs: map[*pair]struct{}{}, held: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Mode returns the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Conns returns how many proxied connections are open.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pairs)
}

// Set changes the mode; see Mode.
func (p *Proxy) Set(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || m == p.mode {
		return
	}
	p.mode = m
	switch m {
	case Reset:
		for pr := range p.pairs {
			p.killLocked(pr)
		}
	case Open:
		for c := range p.held {
			reset(c)
		}
		clear(p.held)
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	err := p.ln.Close()
	for pr := range p.pairs {
		p.killLocked(pr)
	}
	for c := range p.held {
		c.Close()
	}
	clear(p.held)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// killLocked resets both ends of pr.
func (p *Proxy) killLocked(pr *pair) {
	if pr.dead {
		return
	}
	pr.dead = true
	reset(pr.down)
	reset(pr.up)
	delete(p.pairs, pr)
}

// reset closes c with an RST rather than a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // a transient accept error (EMFILE): nothing to wait on
			continue
		}
		p.mu.Lock()
		switch {
		case p.closed || p.mode == Reset:
			reset(c)
			p.mu.Unlock()
			continue
		case p.mode == Blackhole:
			p.held[c] = struct{}{}
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.connect(c)
	}
}

// connect dials the target for the accepted connection c and forwards.
func (p *Proxy) connect(c net.Conn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		reset(c)
		return
	}
	pr := &pair{down: c, up: up}
	p.mu.Lock()
	if p.closed || p.mode == Reset {
		p.mu.Unlock()
		reset(c)
		reset(up)
		return
	}
	p.pairs[pr] = struct{}{}
	p.mu.Unlock()
	p.wg.Add(2)
	go p.pipe(pr, c, up)
	go p.pipe(pr, up, c)
}

// pipe copies from src to dst while the proxy is open: during a blackhole
// it holds what it read (and the end of the stream) until the proxy opens
// again, and stops reading, so that the sender's buffers fill as on a
// network that drops packets.
func (p *Proxy) pipe(pr *pair, src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if !p.waitOpen(pr) {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				p.close(pr)
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// A half close goes through as one; the other direction
				// ends the pair when it ends too.
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
					p.mu.Lock()
					pr.ended++
					both := pr.ended == 2
					p.mu.Unlock()
					if both {
						p.close(pr)
					}
					return
				}
			}
			p.close(pr)
			return
		}
	}
}

// waitOpen waits until the proxy is open; false when pr was reset or
// closed meanwhile.
func (p *Proxy) waitOpen(pr *pair) bool {
	for {
		p.mu.Lock()
		if pr.dead || p.closed {
			p.mu.Unlock()
			return false
		}
		if p.mode == Open {
			p.mu.Unlock()
			return true
		}
		ch := p.changed
		p.mu.Unlock()
		<-ch
	}
}

// close ends pr after an error on one of its ends.
func (p *Proxy) close(pr *pair) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr.dead {
		return
	}
	pr.dead = true
	pr.down.Close()
	pr.up.Close()
	delete(p.pairs, pr)
}
