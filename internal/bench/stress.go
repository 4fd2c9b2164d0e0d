package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ternmq/tern/packets"
)

// StressConfig holds the settings of the stress scenarios ([Stuck],
// [RetFlood], [Partial] and [Filters]). The zero value of every field is
// replaced by the default documented on it.
type StressConfig struct {
	// RSSInterval is how often the broker's resident memory is sampled
	// when Config.BrokerPID is set. Default 100 ms.
	RSSInterval time.Duration
	// RSSLimit, in KiB, stops the load early (the scenario's clients
	// disconnect) once the broker's resident memory passes it, so that a
	// broker without bounds does not take the machine down; negative for
	// no limit. Default 6 GiB.
	RSSLimit int64
	// Settle is how long the broker's memory is still sampled after the
	// scenario's clients leave (RetFlood, Filters, Partial). Default 5 s.
	Settle time.Duration

	// StuckKeepAlive is the keep alive the stuck subscribers send in
	// CONNECT (they never ping); 0, the default, for none.
	StuckKeepAlive time.Duration
	// StuckPersistent gives the stuck subscribers persistent sessions (v5:
	// session expiry one hour; 3.1.1: clean session 0). They are removed at
	// the end of the run by connecting again with a clean session.
	StuckPersistent bool

	// Repeat is how many SUBSCRIBE "#" packets the RetFlood client sends
	// without reading. Default 2,000.
	Repeat int

	// Parts selects the parts of Partial (any of "a", "b" and "c") and of
	// Filters ("a" and "b"). Default: all of them.
	Parts string
	// Large is the number of connections of Partial (b). Default 200.
	Large int
	// Declared is the remaining length that Partial (b) and (c) announce
	// in their PUBLISH fixed header. Default 1,000,000 (within a 1 MiB
	// maximum packet size).
	Declared int
	// Body is how many bytes of that body each Partial (b) connection
	// sends before it holds. Default 900,000.
	Body int
	// CloseBound is how long Partial (a) waits for the broker to close each
	// connection. Default 4 keep alive periods.
	CloseBound time.Duration
	// DripMax bounds Partial (c): how long it drips before giving up.
	// Default 60 s.
	DripMax time.Duration

	// Levels is the number of levels of the deep filter of Filters (a). A
	// level is "a" while the filter stays within 65,535 bytes, and empty
	// beyond that. Default 65,531.
	Levels int
	// Filters is the number of distinct filters of Filters (b). Default
	// 1,000,000.
	Filters int
	// Batch is the number of filters in one SUBSCRIBE of Filters (b).
	// Default 1,000.
	Batch int
	// SubWindow is how many SUBSCRIBE packets of Filters (b) may await
	// their SUBACK at once. Default 10.
	SubWindow int
}

// Stress scenario defaults that differ from the other scenarios'.
const (
	defaultStressPayload = 256
	defaultRSSLimitKiB   = 6 << 20
)

// isStress reports whether sc is one of the stress scenarios.
func isStress(sc Scenario) bool {
	return sc == Stuck || sc == RetFlood || sc == Partial || sc == Filters
}

// stressDefaults fills in the defaults of the stress scenarios.
func (c *Config) stressDefaults() error {
	s := &c.Stress
	if c.PayloadSize == 0 {
		c.PayloadSize = defaultStressPayload
	}
	if c.Duration <= 0 {
		switch c.Scenario {
		case Stuck:
			c.Duration = 15 * time.Second
		case Partial:
			c.Duration = 10 * time.Second
		case RetFlood:
			c.Duration = 20 * time.Second
		default:
			c.Duration = 60 * time.Second
		}
	}
	if c.KeepAlive <= 0 && c.Scenario == Partial {
		c.KeepAlive = 5 * time.Second
	}
	if c.Count == 0 {
		switch c.Scenario {
		case RetFlood:
			c.Count = 10_000
		case Partial:
			c.Count = 5_000
		case Filters:
			c.Count = 20
		}
	}
	if s.RSSInterval <= 0 {
		s.RSSInterval = 100 * time.Millisecond
	}
	if s.RSSLimit == 0 {
		s.RSSLimit = defaultRSSLimitKiB
	}
	if s.Settle <= 0 {
		s.Settle = 5 * time.Second
	}
	if s.StuckKeepAlive < 0 || s.StuckKeepAlive > 65535*time.Second {
		return errors.New("bench: stuck keep alive out of range")
	}
	if s.Repeat <= 0 {
		s.Repeat = 2000
	}
	all := "abc"
	if c.Scenario == Filters {
		all = "ab"
	}
	if s.Parts == "" {
		s.Parts = all
	}
	for _, p := range s.Parts {
		if !strings.ContainsRune(all, p) {
			return fmt.Errorf("bench: %s has no part %q (parts: %s)", c.Scenario, p, all)
		}
	}
	if s.Large <= 0 {
		s.Large = 200
	}
	if s.Declared <= 0 {
		s.Declared = 1_000_000
	}
	if s.Declared > 268_435_455 {
		return errors.New("bench: declared length above MQTT's 268,435,455")
	}
	if s.Body <= 0 {
		s.Body = min(900_000, s.Declared-1)
	}
	if s.Body >= s.Declared {
		return errors.New("bench: partial body must be shorter than the declared length")
	}
	if s.CloseBound <= 0 {
		s.CloseBound = 4 * c.KeepAlive
	}
	if s.DripMax <= 0 {
		s.DripMax = 60 * time.Second
	}
	if s.Levels <= 0 {
		s.Levels = 65_531
	}
	if s.Levels > 65_536 {
		return errors.New("bench: more than 65,536 levels do not fit in a 65,535-byte filter")
	}
	if s.Filters <= 0 {
		s.Filters = 1_000_000
	}
	if s.Batch <= 0 {
		s.Batch = 1000
	}
	if s.SubWindow <= 0 {
		s.SubWindow = 10
	}
	if s.SubWindow > 65535 {
		return errors.New("bench: subscribe window above 65535")
	}
	return nil
}

// rssSampler samples a process's resident memory at a fixed interval,
// keeping the peak of the whole run and of the current window, and calls
// over once the memory passes a limit.
type rssSampler struct {
	pid   int
	limit int64
	over  func()

	mu         sync.Mutex
	last       int64
	peak       int64
	windowPeak int64
	exceeded   bool

	stop chan struct{}
	done chan struct{}
}

// startRSS starts sampling pid every interval; it returns nil when pid is
// not positive. A nil sampler's methods return -1.
func startRSS(pid int, interval time.Duration, limitKiB int64, over func()) *rssSampler {
	if pid <= 0 {
		return nil
	}
	s := &rssSampler{pid: pid, limit: limitKiB, over: over, stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

// sample reads the memory now and returns it in KiB.
func (s *rssSampler) sample() int64 {
	if s == nil {
		return -1
	}
	v := readRSS(s.pid)
	if v < 0 {
		return v
	}
	s.mu.Lock()
	s.last = v
	s.peak = max(s.peak, v)
	s.windowPeak = max(s.windowPeak, v)
	over := s.limit > 0 && v > s.limit && !s.exceeded
	if over {
		s.exceeded = true
	}
	s.mu.Unlock()
	if over && s.over != nil {
		s.over()
	}
	return v
}

// window returns the peak since the previous call (or the start) and
// starts a new window.
func (s *rssSampler) window() int64 {
	if s == nil {
		return -1
	}
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.windowPeak
	s.windowPeak = s.last
	return p
}

// close stops sampling, takes a last sample and fills in rss (which may be
// nil): its peak and whether the limit was passed.
func (s *rssSampler) close(rss *RSSStats) {
	if s == nil {
		return
	}
	close(s.stop)
	<-s.done
	s.sample()
	if rss == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rss.PeakKiB = s.peak
	rss.LimitExceeded = s.exceeded
}

// rawConn is a connection of a stress scenario that the scenario reads (or
// does not read) itself, packet by packet.
type rawConn struct {
	nc      net.Conn
	tcp     *net.TCPConn // the TCP connection under nc (TLS included)
	br      *bufio.Reader
	version byte
	connack packets.Connack
}

// dialNet opens a TCP connection to the broker, with TLS when the
// configuration has it, within ctx.
func (r *runner) dialNet(ctx context.Context) (net.Conn, *net.TCPConn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", r.cfg.Addr)
	if err != nil {
		return nil, nil, err
	}
	tcp, _ := nc.(*net.TCPConn)
	if r.cfg.TLS == nil {
		return nc, tcp, nil
	}
	conf := r.cfg.TLS
	if conf.ServerName == "" && !conf.InsecureSkipVerify {
		conf = conf.Clone()
		conf.ServerName, _, _ = net.SplitHostPort(r.cfg.Addr)
	}
	tc := tls.Client(nc, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, tcp, nil
}

// dialRaw connects, sends CONNECT with keepAlive (and a persistent session
// when persistent is set) and reads a successful CONNACK, all within the
// connect timeout. The reader buffer is small, so that a connection that
// stops reading leaves the broker's data in the socket.
func (r *runner) dialRaw(ctx context.Context, id string, keepAlive time.Duration, persistent bool) (*rawConn, error) {
	cfg := &r.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	nc, tcp, err := r.dialNet(ctx)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	c := &rawConn{nc: nc, tcp: tcp, br: bufio.NewReaderSize(nc, 512), version: cfg.Version}
	conn := r.connectPacket(id, keepAlive, persistent)
	if err := c.send(conn); err != nil {
		nc.Close()
		return nil, err
	}
	pk, err := c.read()
	if err == nil {
		if ack, ok := pk.(*packets.Connack); !ok {
			err = fmt.Errorf("bench: expected CONNACK, got %s", pk.Type())
		} else if c.connack = *ack; ack.ReasonCode != packets.Success {
			err = fmt.Errorf("bench: connection refused: %w", ack.ReasonCode)
		}
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

// connectPacket returns the CONNECT packet of client id.
func (r *runner) connectPacket(id string, keepAlive time.Duration, persistent bool) *packets.Connect {
	cfg := &r.cfg
	conn := &packets.Connect{
		ProtocolVersion: cfg.Version,
		CleanStart:      true,
		KeepAlive:       uint16(keepAlive / time.Second),
		ClientID:        id,
	}
	if persistent {
		if cfg.Version == packets.V5 {
			conn.Properties.SessionExpiry = packets.Uint32(3600)
		} else {
			conn.CleanStart = false
		}
	}
	if cfg.Username != "" {
		conn.UsernameFlag, conn.Username = true, cfg.Username
		conn.PasswordFlag, conn.Password = cfg.Password != "", []byte(cfg.Password)
	}
	return conn
}

// send writes one packet.
func (c *rawConn) send(pk packets.Packet) error {
	b, err := pk.Encode(nil, c.version)
	if err != nil {
		return err
	}
	_, err = c.nc.Write(b)
	return err
}

// read reads one packet.
func (c *rawConn) read() (packets.Packet, error) {
	return packets.ReadPacket(c.br, c.version, 0)
}

// readUntil reads packets until one of type t arrives, within d; it
// returns that packet.
func (c *rawConn) readUntil(t packets.Type, d time.Duration) (packets.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	defer c.nc.SetReadDeadline(time.Time{})
	for {
		pk, err := c.read()
		if err != nil {
			return nil, err
		}
		if pk.Type() == t {
			return pk, nil
		}
		if d, ok := pk.(*packets.Disconnect); ok {
			return nil, fmt.Errorf("bench: server sent DISCONNECT: %w", d.ReasonCode)
		}
	}
}

// close sends DISCONNECT when it can do so at once, and closes.
func (c *rawConn) close() {
	c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.send(&packets.Disconnect{})
	c.nc.Close()
}

// fd returns the file descriptor of the TCP connection, or -1.
func (c *rawConn) fd() int {
	if c.tcp == nil {
		return -1
	}
	rc, err := c.tcp.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// waitClosed reads (and discards) what the broker sends until it closes
// the connection or until deadline. It returns when the connection ended,
// or the zero time if it was still open at the deadline.
func (c *rawConn) waitClosed(deadline time.Time) time.Time {
	c.nc.SetReadDeadline(deadline)
	_, err := io.Copy(io.Discard, c.br)
	if isTimeout(err) {
		return time.Time{}
	}
	return time.Now()
}

// isTimeout reports whether err is a deadline's expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isReset reports whether err is a connection reset by the peer.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// closeWatcher notices, without reading, when the broker closes any of a
// set of connections, checking every interval: poll(2) sees a FIN or a
// reset that reached us, and, when the broker runs on this machine, its
// side's socket state in /proc/net/tcp sees a close whose FIN waits behind
// data we never read (a full receive window holds it back).
type closeWatcher struct {
	start    time.Time
	fds      []int
	keys     []string        // far-end keys for farEndClosed
	useProc  bool            // the far ends are visible in /proc/net/tcp
	closedAt []time.Duration // by index; 0 while open
	closed   atomic.Int64
	mu       sync.Mutex
	stop     chan struct{}
	done     chan struct{}
}

// watchCloses starts watching conns; times are taken from start.
func watchCloses(conns []*rawConn, start time.Time, interval time.Duration) *closeWatcher {
	w := &closeWatcher{start: start, closedAt: make([]time.Duration, len(conns)), stop: make(chan struct{}), done: make(chan struct{})}
	n := 0
	for _, c := range conns {
		w.fds = append(w.fds, c.fd())
		k := ""
		if c.tcp != nil {
			k = farEndKey(c.tcp.LocalAddr(), c.tcp.RemoteAddr())
		}
		if k != "" {
			n++
		}
		w.keys = append(w.keys, k)
	}
	if _, found, err := farEndClosed(w.keys); err == nil && n > 0 && found == n {
		w.useProc = true
	}
	go func() {
		defer close(w.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.check()
			}
		}
	}()
	return w
}

// check polls every connection still open.
func (w *closeWatcher) check() {
	var idx []int
	var fds []int
	var keys []string
	w.mu.Lock()
	for i, fd := range w.fds {
		if w.closedAt[i] == 0 && fd >= 0 {
			idx = append(idx, i)
			fds = append(fds, fd)
			keys = append(keys, w.keys[i])
		}
	}
	w.mu.Unlock()
	if len(fds) == 0 {
		return
	}
	closed, err := peerClosed(fds)
	if err != nil {
		closed = make([]bool, len(fds))
	}
	if w.useProc {
		if far, _, err := farEndClosed(keys); err == nil {
			for k := range closed {
				closed[k] = closed[k] || far[k]
			}
		}
	}
	now := time.Since(w.start)
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, i := range idx {
		if closed[k] && w.closedAt[i] == 0 {
			w.closedAt[i] = max(now, 1)
			w.closed.Add(1)
		}
	}
}

// finish stops watching after a last check and returns the times, from
// start, at which the broker closed connections, in order.
func (w *closeWatcher) finish() []time.Duration {
	close(w.stop)
	<-w.done
	w.check()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []time.Duration
	for _, d := range w.closedAt {
		if d > 0 {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// Spread summarises a set of durations in seconds.
type Spread struct {
	Count  int     `json:"count"`
	Min    float64 `json:"min_s"`
	Median float64 `json:"median_s"`
	Max    float64 `json:"max_s"`
}

// spreadOf returns the spread of ds, which it sorts.
func spreadOf(ds []time.Duration) Spread {
	if len(ds) == 0 {
		return Spread{}
	}
	slices.Sort(ds)
	return Spread{Count: len(ds), Min: ds[0].Seconds(), Median: ds[len(ds)/2].Seconds(), Max: ds[len(ds)-1].Seconds()}
}

func (s Spread) String() string {
	if s.Count == 0 {
		return "none"
	}
	return fmt.Sprintf("%d: min %.2f s, median %.2f s, max %.2f s", s.Count, s.Min, s.Median, s.Max)
}

// forEach runs fn(i) for i in [0, n) with at most par running at once,
// stopping early when ctx ends, and waits for them all.
func forEach(ctx context.Context, n, par int, fn func(i int)) {
	sem := make(chan struct{}, max(par, 1))
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}

// kib formats KiB as MiB, or "-" when unknown.
func kib(v int64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(v)/1024)
}
