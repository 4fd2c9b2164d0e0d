package tern

import (
	"container/heap"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The idle poller lets a connection that has been quiet for a while give up
// its reading goroutine, and with it the goroutine's stack and read buffer:
// the socket is watched by an epoll instance of the server's and a new
// goroutine resumes reading when bytes arrive (or when the keep alive runs
// out, or the server must end the connection). Go's own poller keeps the
// descriptor too; registering one descriptor in two epoll sets is allowed,
// and ours is one-shot.
//
// Each server has its own poller (several servers may run in one process),
// started on the first park and stopped by Shutdown once every connection
// has ended. Its two goroutines are its own: loop waits on the epoll set,
// expire ends parked connections whose keep alive ran out, found in a heap
// ordered by deadline, so a check costs the expired ones, not every parked
// one (BenchmarkParkedExpiry).
//
// If epoll_wait fails for any reason but EINTR (EBADF, EFAULT, EINVAL:
// none goes away by itself), the poller gives every parked connection its
// goroutine back, logs the error and refuses to park from then on: the
// server goes on serving, at the memory cost of a goroutine per idle
// connection.
type idlePoller struct {
	log  *slog.Logger
	once sync.Once
	epfd int
	wake int // eventfd in the epoll set: written to stop loop
	err  error
	// wait is unix.EpollWait; tests replace it before the first park.
	wait func(epfd int, events []unix.EpollEvent, msec int) (int, error)

	mu     sync.Mutex
	parked map[int32]*Client
	due    parkHeap // parked connections with a keep alive, earliest deadline first
	closed bool
	failed bool // epoll_wait failed: nothing parks any more
	stop   chan struct{}
	wg     sync.WaitGroup

	pings   atomic.Int64 // PINGREQs answered by the poller itself (answerPing)
	refused atomic.Int64 // readers that tried to park and could not (a busy writer, a failed poller)
}

func newIdlePoller(log *slog.Logger) *idlePoller {
	return &idlePoller{log: log, epfd: -1, wake: -1, stop: make(chan struct{}), wait: unix.EpollWait}
}

func (p *idlePoller) init() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.err = net.ErrClosed
		return
	}
	p.epfd, p.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if p.err != nil {
		return
	}
	p.wake, p.err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if p.err != nil {
		unix.Close(p.epfd)
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p.wake)}
	if p.err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, p.wake, &ev); p.err != nil {
		unix.Close(p.wake)
		unix.Close(p.epfd)
		return
	}
	p.parked = make(map[int32]*Client)
	p.wg.Add(2)
	go p.loop()   // ends on close (Done in loop)
	go p.expire() // ends on close (Done in expire)
}

// close stops the poller's goroutines and waits for them. The server calls
// it once no connection is left.
func (p *idlePoller) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	started := p.parked != nil
	p.mu.Unlock()
	if !started {
		return
	}
	unix.Write(p.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	p.wg.Wait()
	unix.Close(p.wake)
	unix.Close(p.epfd)
}

// keepAliveCheck is how often parked connections are checked for an
// expired keep alive.
const keepAliveCheck = 250 * time.Millisecond

// expire wakes parked connections whose keep alive has run out, so that
// their reader ends them [MQTT-3.1.2-22].
func (p *idlePoller) expire() {
	defer p.wg.Done()
	t := time.NewTicker(keepAliveCheck)
	defer t.Stop()
	var due []*Client
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.mu.Lock()
		due = p.expiredLocked(time.Now().UnixNano(), due)
		p.mu.Unlock()
		for i, c := range due {
			go c.resume() // the connection's goroutine: counted in Server.wg since serveConn
			due[i] = nil
		}
		due = due[:0]
	}
}

// expiredLocked takes the parked connections whose keep alive deadline
// is not after now out of the poller and appends them to due: the cost is
// that of the expired ones, O(log n) each. The caller holds p.mu and
// resumes them.
func (p *idlePoller) expiredLocked(now int64, due []*Client) []*Client {
	for len(p.due) > 0 && p.due[0].parkDeadline <= now {
		c := p.due[0]
		p.unparkLocked(c)
		due = append(due, c)
	}
	return due
}

func (p *idlePoller) loop() {
	defer p.wg.Done()
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := p.wait(p.epfd, events, -1)
		if err == unix.EINTR {
			continue // a signal: nothing happened
		}
		if err != nil {
			select {
			case <-p.stop:
				return
			default:
			}
			p.fail(err)
			return
		}
		for i := 0; i < n; i++ {
			fd := events[i].Fd
			if fd == int32(p.wake) {
				return
			}
			p.mu.Lock()
			c := p.parked[fd]
			if c != nil {
				p.unparkLocked(c) // one-shot: still registered, disarmed
			}
			p.mu.Unlock()
			if c != nil && !c.answerPing(p) {
				go c.resume() // the connection's goroutine: counted in Server.wg since serveConn
			}
		}
	}
}

// fail ends the poller's use of epoll after epoll_wait failed with err:
// every parked connection resumes on a goroutine of its own and park
// refuses from now on, so that no connection waits for an event that will
// not come.
func (p *idlePoller) fail(err error) {
	p.mu.Lock()
	p.failed = true
	woken := make([]*Client, 0, len(p.parked))
	for _, c := range p.parked {
		p.unparkLocked(c)
		woken = append(woken, c)
	}
	p.mu.Unlock()
	p.log.Error("idle poller: epoll_wait failed; idle connections keep their reading goroutines from now on",
		"err", err, "resumed", len(woken))
	for _, c := range woken {
		go c.resume() // the connection's goroutine: counted in Server.wg since serveConn
	}
}

// unparkLocked takes c out of the parked set, the deadline heap and the
// epoll set (a one-shot descriptor stays in the set, disarmed, and that of
// a detached connection is closed by its revive while its socket lives on
// in the new one). The caller holds p.mu and takes c's reading side.
func (p *idlePoller) unparkLocked(c *Client) {
	delete(p.parked, int32(c.fd))
	c.isParked = false
	if c.heapPos > 0 {
		heap.Remove(&p.due, int(c.heapPos-1))
	}
	if c.pollRegistered {
		unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
		c.pollRegistered = false
	}
}

// parkFD returns the descriptor of a connection the poller can watch, or
// -1: only plain TCP and Unix sockets, whose reads have no buffering above
// the socket, and TLS over an idleConn (see tlspark_linux.go).
func parkFD(nc net.Conn) int {
	var sc interface{ Control(func(fd uintptr)) error } // a syscall.RawConn
	switch c := nc.(type) {
	case *idleConn:
		return c.fd()
	case *net.TCPConn:
		sc, _ = c.SyscallConn()
	case *net.UnixConn:
		sc, _ = c.SyscallConn()
	default:
		return tlsParkFD(nc)
	}
	fd := -1
	if sc != nil {
		sc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}

// park hands c to the poller until it is readable or, when deadline is
// not 0, until then. It reports false when the poller is not available;
// then the caller keeps reading, having revived the connection (a plain
// TCP one is detached first, see idleConn). After true the caller's
// goroutine must not touch c again.
func (p *idlePoller) park(c *Client, deadline int64) bool {
	if c.fd < 0 {
		return false
	}
	p.once.Do(p.init)
	if p.err != nil {
		return false
	}
	if ic := idleOf(c.conn); ic != nil && ic.live() && !c.detach(ic) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.failed || c.closed.Load() || c.stopping.Load() {
		// The server is ending the connection (its take found nothing
		// parked, so the reader must stay to finish it), or epoll failed.
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(c.fd)}
	op := unix.EPOLL_CTL_MOD
	if !c.pollRegistered {
		op = unix.EPOLL_CTL_ADD
	}
	if err := unix.EpollCtl(p.epfd, op, c.fd, &ev); err != nil {
		return false
	}
	c.pollRegistered = true
	c.isParked = true
	c.parkDeadline = deadline
	p.parked[int32(c.fd)] = c
	if deadline != 0 {
		heap.Push(&p.due, c)
	}
	return true
}

// take removes c from the poller if it is parked and reports whether it
// was: the caller then owns the reading side and must resume it.
func (p *idlePoller) take(c *Client) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c.isParked { // c.fd is the reader's to change while it is not parked
		return false
	}
	p.unparkLocked(c)
	return true
}

// detach lets go of the net.TCPConn of c, which is about to park, unless a
// writer is running or about to (it needs the socket): then it reports
// false and c does not park this time. c.fd becomes the duplicate
// descriptor the poller watches.
func (c *Client) detach(ic *idleConn) bool {
	ss := c.sess
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if c.flushing || c.closing || len(c.out) > 0 || c.closed.Load() {
		return false
	}
	fd, err := ic.detach()
	if err != nil {
		return false
	}
	c.fd = fd
	return true
}

// revive gives a detached connection its net.TCPConn back; the caller owns
// the reading side (it has just been taken out of the poller). A
// connection the server is ending gets its brief drain deadline again.
func (c *Client) revive() error {
	ic := idleOf(c.conn)
	if ic == nil || ic.live() {
		return nil
	}
	fd, err := ic.revive()
	if err != nil {
		return err
	}
	c.fd = fd
	if c.stopping.Load() {
		ic.SetReadDeadline(time.Now().Add(2 * time.Second))
	}
	return nil
}

// ensureLive makes sure the connection has its socket before the writer
// writes: a detached one is taken out of the poller and its reader resumed,
// which revives it; the writer waits for that (microseconds), or for the
// connection to be closed. Whoever else holds the reading side (the poller
// answering a PINGREQ, a reader being resumed) parks it again or revives
// it soon: a detached connection does not park again while a writer runs.
func (c *Client) ensureLive() {
	ic := idleOf(c.conn)
	if ic == nil {
		return
	}
	for !ic.live() && !ic.isClosed() {
		if c.srv.poller.take(c) {
			go c.resume() // the connection's goroutine: counted in Server.wg since serveConn
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// wrapConn returns the connection the server keeps for nc: an idleConn
// for a plain TCP connection, nc itself otherwise.
func wrapConn(nc net.Conn) net.Conn {
	if tc, ok := nc.(*net.TCPConn); ok {
		if ic := newIdleConn(tc); ic != nil {
			return ic
		}
	}
	return nc
}

// rawIO runs f with the connection's descriptor, for the poller's own
// reads and writes (answerPing). For a detached connection it holds the
// idleConn's lock, so that Close cannot close the descriptor meanwhile
// (and the system give its number to another connection); it reports
// false, without calling f, when the connection is closed or not
// detached.
func (c *Client) rawIO(f func(fd int)) bool {
	ic := idleOf(c.conn)
	if ic == nil {
		f(c.fd)
		return true
	}
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.closed || int(ic.raw) != c.fd {
		return false
	}
	f(c.fd)
	return true
}

// parkHeap orders parked connections by keep alive deadline; each knows
// its place (heapPos, 1 + its index; 0 when not in it), so that one woken
// early is removed at once.
type parkHeap []*Client

func (h parkHeap) Len() int           { return len(h) }
func (h parkHeap) Less(i, j int) bool { return h[i].parkDeadline < h[j].parkDeadline }
func (h parkHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapPos, h[j].heapPos = int32(i+1), int32(j+1)
}
func (h *parkHeap) Push(x any) {
	c := x.(*Client)
	*h = append(*h, c)
	c.heapPos = int32(len(*h))
}
func (h *parkHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.heapPos = 0
	return c
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
	var n int
	var err error
	if !c.rawIO(func(fd int) { n, _, err = unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT) }) ||
		err != nil || n != 2 || [2]byte{b[0], b[1]} != pingReq || c.stopping.Load() {
		return false
	}
	ss := c.sess
	ss.mu.Lock()
	idle := ss.client == c && !c.flushing && len(c.out) == 0 && !c.closing && !c.closed.Load()
	if idle {
		wrote := false
		if !c.rawIO(func(fd int) { m, err := unix.Write(fd, pingResp[:]); wrote = err == nil && m == 2 }) || !wrote {
			idle = false // closed, or the socket is full or failing: let the reader deal with it
		}
	}
	ss.mu.Unlock()
	if !idle {
		return false
	}
	c.rawIO(func(fd int) { unix.Read(fd, b[:2]) }) // the PINGREQ just peeked
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
