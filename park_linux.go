package tern

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The idle poller lets a connection that has been quiet for a while give up
// its reading goroutine, and with it the goroutine's stack and read buffer:
// the socket is watched by one epoll instance for the whole process and a
// new goroutine resumes reading when bytes arrive (or when the keep alive
// runs out, or the server must end the connection). Go's own poller keeps
// the descriptor too; registering one descriptor in two epoll sets is
// allowed, and ours is one-shot.
type idlePoller struct {
	once sync.Once
	epfd int
	err  error

	mu     sync.Mutex
	parked map[int32]*Client

	pings atomic.Int64 // PINGREQs answered by the poller itself (answerPing)
}

var poller idlePoller

func (p *idlePoller) init() {
	p.epfd, p.err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if p.err != nil {
		return
	}
	p.mu.Lock()
	p.parked = make(map[int32]*Client)
	p.mu.Unlock()
	go p.loop()
	go p.expire()
}

// keepAliveCheck is how often parked connections are checked for an
// expired keep alive.
const keepAliveCheck = 250 * time.Millisecond

// expire wakes parked connections whose keep alive has run out, so that
// their reader ends them [MQTT-3.1.2-22]. One scan serves every parked
// connection: no timer per connection.
func (p *idlePoller) expire() {
	t := time.NewTicker(keepAliveCheck)
	defer t.Stop()
	var due []*Client
	for range t.C {
		now := time.Now().UnixNano()
		p.mu.Lock()
		for fd, c := range p.parked {
			if c.parkDeadline != 0 && now >= c.parkDeadline {
				delete(p.parked, fd)
				syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
				c.pollRegistered = false
				due = append(due, c)
			}
		}
		p.mu.Unlock()
		for i, c := range due {
			go c.resume()
			due[i] = nil
		}
		due = due[:0]
	}
}

func (p *idlePoller) loop() {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return
		}
		for i := 0; i < n; i++ {
			p.mu.Lock()
			c := p.parked[events[i].Fd]
			delete(p.parked, events[i].Fd)
			p.mu.Unlock()
			if c != nil && !c.answerPing(p) {
				go c.resume()
			}
		}
	}
}

// parkFD returns the descriptor of a connection the poller can watch, or
// -1: only plain TCP and Unix sockets, whose reads have no buffering above
// the socket.
func parkFD(nc net.Conn) int {
	var sc syscall.RawConn
	switch c := nc.(type) {
	case *net.TCPConn:
		sc, _ = c.SyscallConn()
	case *net.UnixConn:
		sc, _ = c.SyscallConn()
	default:
		return -1
	}
	fd := -1
	if sc != nil {
		sc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}

// park hands c to the poller until it is readable or, when deadline is
// not 0, until then. It reports false when the poller is not available;
// then the caller keeps reading. After true the caller's goroutine must not
// touch c again.
func (p *idlePoller) park(c *Client, deadline int64) bool {
	p.once.Do(p.init)
	if p.err != nil || c.fd < 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.closed.Load() || c.stopping.Load() {
		// The server is ending the connection: its take found nothing
		// parked, so the reader must stay to finish it.
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(c.fd)}
	op := syscall.EPOLL_CTL_MOD
	if !c.pollRegistered {
		op = syscall.EPOLL_CTL_ADD
	}
	if err := syscall.EpollCtl(p.epfd, op, c.fd, &ev); err != nil {
		return false
	}
	c.pollRegistered = true
	c.parkDeadline = deadline
	p.parked[int32(c.fd)] = c
	return true
}

// take removes c from the poller if it is parked and reports whether it
// was: the caller then owns the reading side and must resume it.
func (p *idlePoller) take(c *Client) bool {
	if c.fd < 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.parked == nil || p.parked[int32(c.fd)] != c {
		return false
	}
	delete(p.parked, int32(c.fd))
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
	c.pollRegistered = false
	return true
}

// pingReq and pingResp are the whole of a PINGREQ and a PINGRESP.
var (
	pingReq  = [2]byte{0xC0, 0x00}
	pingResp = [2]byte{0xD0, 0x00}
)

// answerPing answers a parked connection woken by a PINGREQ, and nothing
// more, on the poller's goroutine: a PINGRESP written straight to the
// socket and the connection parked again, with no goroutine or buffer, so
// that thousands of idle clients pinging together cost neither memory nor
// scheduling [MQTT-3.12.4-1]. It reports false, having consumed nothing,
// when the wake is for anything else; the caller then resumes the reader,
// which owns the connection as before.
func (c *Client) answerPing(p *idlePoller) bool {
	var b [3]byte
	n, _, err := syscall.Recvfrom(c.fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if err != nil || n != 2 || [2]byte{b[0], b[1]} != pingReq || c.stopping.Load() {
		return false
	}
	ss := c.sess
	ss.mu.Lock()
	idle := ss.client == c && !c.flushing && len(c.out) == 0 && !c.closing && !c.closed.Load()
	if idle {
		if m, err := syscall.Write(c.fd, pingResp[:]); err != nil || m != 2 {
			idle = false // the socket is full, or failing: let the reader deal with it
		}
	}
	ss.mu.Unlock()
	if !idle {
		return false
	}
	syscall.Read(c.fd, b[:2]) // the PINGREQ just peeked
	p.pings.Add(1)
	now := time.Now()
	c.lastPacket = now.UnixNano()
	c.srv.stats.BytesReceived.Add(2)
	c.srv.stats.BytesSent.Add(2)
	var deadline int64
	if c.keepAlive > 0 {
		deadline = now.Add(time.Duration(c.keepAlive) * time.Second * 3 / 2).UnixNano() // [MQTT-3.1.2-22]
	}
	if p.park(c, deadline) {
		return true
	}
	go c.resume() // the server is ending the connection: the reader finishes it
	return true
}
