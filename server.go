package tern

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/topics"
)

// Version is the server's version, published in $SYS/broker/version.
const Version = "0.1.0"

// Listener accepts network connections for the server. Implementations
// live in package listeners; a listener knows nothing of the server beyond
// the callback it is given.
type Listener interface {
	// ID names the listener in logs and metrics.
	ID() string
	// Addr returns the address the listener listens on.
	Addr() net.Addr
	// Serve accepts connections and passes each to handle, on its own
	// goroutine, until Close is called.
	Serve(handle func(net.Conn)) error
	// Close stops the listener.
	Close() error
}

// ConnectionLimiter is implemented by listeners that cap their own number
// of open connections (the listeners package's do, through their
// MaxConnections field). The server enforces the cap.
type ConnectionLimiter interface {
	ConnectionLimit() int
}

// RawConnWrapper is implemented by listeners that run a protocol of their
// own over each accepted socket (the listeners package's TLS listener):
// before Serve, the server gives them a function to wrap the socket with,
// beneath that protocol, so that an idle connection can let its socket's
// Go structures go while keeping its protocol state (on Linux; elsewhere
// the function returns the socket as it is).
type RawConnWrapper interface {
	WrapRawConns(wrap func(net.Conn) net.Conn)
}

// Binder is implemented by listeners that can open their socket before
// accepting (the listeners package's all do). Serve binds every listener
// first, so that an address in use is Serve's error, and Addr reports the
// bound address (port 0) once Serve has returned.
type Binder interface {
	Listen() error
}

// Errors returned by the server.
var (
	ErrServerClosed   = errors.New("tern: server closed")
	ErrServing        = errors.New("tern: server already serving")
	ErrListenerExists = errors.New("tern: listener id already in use")
	ErrQuotaExceeded  = errors.New("tern: quota exceeded")
	ErrHookNoEvents   = errors.New("tern: hook implements no hook interface")
	ErrNoSubscription = errors.New("tern: no such subscription")
)

// Server is an MQTT broker. Create it with New.
type Server struct {
	cfg   *config
	log   *slog.Logger
	hooks hookSet

	index    *topics.Index
	retained *topics.Retained[*Message]

	mu          sync.Mutex // guards listeners, session creation and removal, closing
	listeners   map[string]Listener
	sessions    sessionTable // client id -> session; changed under mu
	clients     map[*Client]struct{}
	perListen   map[string]int // open connections per listener
	limitLog    time.Time      // when a connection limit was last logged
	closing     bool
	serveCalled bool // Serve was called (and has not failed)

	inline        inlineClient
	recentKeys    atomic.Int64 // messages the sessions' duplicate windows remember (dedup.go)
	stats         counters
	mem           memBudget    // message memory, against MaxMessageMemory
	poller        *idlePoller  // idle connections' sockets
	stopBy        atomic.Int64 // set by Shutdown: the connections' last write deadline, unix nanoseconds
	clock         atomic.Int64 // unix nanoseconds, updated every clockTick: for what needs no exact time
	persist       *persister   // nil without a Store
	retainMu      sync.Mutex   // serialises retained changes; guards the two below
	retainedBytes int64        // topic and payload bytes of the retained messages
	retainLog     time.Time    // when a refused retained message was last logged

	sessionLimits sync.Map                   // client id -> *queueLimits: see SetSessionLimits
	filters       atomic.Pointer[filterRefs] // subscriptions by filter, for FilterObservers (filters.go); nil without

	wg      sync.WaitGroup // every goroutine the server starts
	serving atomic.Bool
	done    chan struct{}
	started time.Time
}

// New returns a server configured by opts (nil for the defaults). It does
// not modify opts.
func New(opts *Options) (*Server, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		index:     topics.NewIndex(),
		retained:  topics.NewRetained[*Message](),
		listeners: make(map[string]Listener),
		clients:   make(map[*Client]struct{}),
		perListen: make(map[string]int),
		done:      make(chan struct{}),
		started:   time.Now(),
	}
	s.mem.limit = cfg.MaxMessageMemory
	s.poller = newIdlePoller(cfg.Logger)
	s.inline.init(s)
	if cfg.Store != nil {
		s.persist = newPersister(s, cfg.Store, cfg.Durability)
		if err := s.restore(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// AddHook adds a hook, which must implement at least one of the hook
// interfaces (see Hook), else AddHook returns ErrHookNoEvents: a method
// whose name or signature is mistyped would otherwise never be called. Add
// hooks before Serve (after it, AddHook returns ErrServing); hooks run in
// the order added.
func (s *Server) AddHook(h Hook) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serveCalled {
		return ErrServing
	}
	if !s.hooks.add(h) {
		return fmt.Errorf("%w: %s (%T)", ErrHookNoEvents, h.ID(), h)
	}
	return nil
}

// AddListener adds a listener; it starts accepting when Serve is called, or
// at once if the server is already serving, in which case a listener that
// cannot bind (see Binder) is not added and its error returned.
func (s *Server) AddListener(l Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return ErrServerClosed
	}
	if _, ok := s.listeners[l.ID()]; ok {
		return ErrListenerExists
	}
	if s.serving.Load() {
		if b, ok := l.(Binder); ok {
			if err := b.Listen(); err != nil {
				return fmt.Errorf("tern: listener %s: %w", l.ID(), err)
			}
		}
		s.startListener(l)
	}
	s.listeners[l.ID()] = l
	return nil
}

// goTracked runs fn on a goroutine tracked by the server's WaitGroup, so Close can
// wait for every goroutine it started.
func (s *Server) goTracked(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

func (s *Server) startListener(l Listener) {
	s.log.Info("listening", "listener", l.ID(), "addr", l.Addr().String())
	if w, ok := l.(RawConnWrapper); ok {
		w.WrapRawConns(wrapConn)
	}
	s.goTracked(func() {
		err := l.Serve(func(nc net.Conn) { s.serveConn(nc, l.ID()) })
		if err != nil && !s.isClosing() {
			s.log.Error("listener stopped", "listener", l.ID(), "err", err)
		}
	})
}

// Serve starts the server and returns at once (unlike net/http's Serve);
// the server runs until Close or Shutdown. It starts the hooks that
// implement Starter, binds every listener (an address in use is Serve's
// error, and nothing is left running), then accepts on them.
func (s *Server) Serve() error {
	s.mu.Lock()
	switch {
	case s.closing:
		s.mu.Unlock()
		return ErrServerClosed
	case s.serveCalled:
		s.mu.Unlock()
		return ErrServing
	}
	s.serveCalled = true
	s.mu.Unlock()

	s.startFilters()
	// Hooks start without the lock: they may call back into the server.
	stopHooks := func(n int) {
		for j := n - 1; j >= 0; j-- {
			if st, ok := s.hooks.starters[j].(Stopper); ok {
				st.Stop(context.Background())
			}
		}
	}
	failed := func(err error) error {
		s.mu.Lock()
		s.serveCalled = false
		s.mu.Unlock()
		return err
	}
	for i, h := range s.hooks.starters {
		if err := h.Start(s); err != nil {
			stopHooks(i)
			return failed(fmt.Errorf("tern: starting hook %s: %w", h.ID(), err))
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		stopHooks(len(s.hooks.starters))
		return ErrServerClosed
	}
	for _, l := range s.listeners {
		if b, ok := l.(Binder); ok {
			if err := b.Listen(); err != nil {
				for _, o := range s.listeners {
					o.Close()
				}
				stopHooks(len(s.hooks.starters))
				s.serveCalled = false
				return fmt.Errorf("tern: listener %s: %w", l.ID(), err)
			}
		}
	}
	s.serving.Store(true)
	for _, l := range s.listeners {
		s.startListener(l)
	}
	s.clock.Store(time.Now().UnixNano())
	s.goTracked(s.clockLoop)
	if s.cfg.SysInterval > 0 {
		s.goTracked(s.sysLoop)
	}
	if s.persist != nil && s.cfg.Durability == DurabilityPeriodic {
		s.goTracked(s.syncLoop)
	}
	if s.persist != nil && s.persist.sh.reporter != nil {
		s.goTracked(s.storeWatch)
	}
	return nil
}

// shutdownFlush is the most Shutdown waits for a client to take what is
// queued for it.
const shutdownFlush = 2 * time.Second

// clockTick is the resolution of Server.clock.
const clockTick = 250 * time.Millisecond

// clockLoop keeps Server.clock, a clock cheap to read on hot paths.
func (s *Server) clockLoop() {
	t := time.NewTicker(clockTick)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.clock.Store(now.UnixNano())
		}
	}
}

// syncLoop fsyncs the store every SyncInterval (DurabilityPeriodic).
func (s *Server) syncLoop() {
	t := time.NewTicker(s.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			if err := s.cfg.Store.Sync(); err != nil {
				s.log.Error("storage sync failed", "err", err)
			}
		}
	}
}

func (s *Server) isClosing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Close stops the server at once: listeners close, hooks are stopped,
// and every client is disconnected (v5 clients with 0x8B Server shutting
// down) with closeGrace to take that DISCONNECT and nothing more: what is
// queued for it stays in its session. Like Shutdown it returns only once
// the server's goroutines have ended and the store has every change, so
// the store may be closed right after.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	defer cancel()
	if err := s.shutdown(ctx, closeGrace); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// closeGrace is how long Close lets clients take their DISCONNECT.
const closeGrace = 50 * time.Millisecond

// Shutdown stops accepting connections, stops the hooks (Stopper), and
// disconnects every client (v5 clients with 0x8B Server shutting down)
// after flushing what is queued for it, for at most 2 seconds or
// WriteTimeout. When ctx ends first, the connections still open are closed
// at once and Shutdown returns ctx's error, but only after the server's
// goroutines have ended and the store has every change made so far: a
// caller may close the store as soon as Shutdown returns, whatever it
// returns.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.shutdown(ctx, min(s.cfg.WriteTimeout, shutdownFlush))
}

// shutdown is Shutdown giving clients flush to take what is queued.
func (s *Server) shutdown(ctx context.Context, flush time.Duration) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.closing = true
	close(s.done)
	for _, l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()

	// Hooks finish their own work first (a bridge its remote side, a
	// webhook sender its queue), while their clients are still served.
	if s.serving.Load() {
		for i := len(s.hooks.stoppers) - 1; i >= 0; i-- {
			h := s.hooks.stoppers[i]
			if err := h.Stop(ctx); err != nil {
				s.log.Warn("stopping hook", "hook", h.ID(), "err", err)
			}
		}
	}
	s.mu.Lock()
	clients := make([]*Client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	// What is queued for a client gets a moment to go out, not the whole
	// WriteTimeout: a stuck client must not hold up the end.
	stopBy := time.Now().Add(flush)
	s.stopBy.Store(stopBy.UnixNano())
	for _, c := range clients {
		c.conn.SetWriteDeadline(stopBy)
		c.disconnect(packets.ServerShuttingDown)
	}
	s.sessions.each(func(ss *session) { ss.stopTimers() })
	waited := make(chan struct{})
	go func() { // Shutdown waits for it, or its ctx ends first
		s.wg.Wait()
		s.poller.close()      // no connection is left to park or wake
		if s.persist != nil { // everything the connections changed reaches the disk
			s.persist.drain()
			if err := s.cfg.Store.Sync(); err != nil {
				s.log.Error("storage sync at shutdown failed", "err", err)
			}
		}
		close(waited)
	}()
	select {
	case <-waited:
		return nil
	case <-ctx.Done():
		for _, c := range clients {
			c.conn.Close()
		}
		<-waited // connections closed: their goroutines end; the store drains
		return ctx.Err()
	}
}

// InProcessListener is the listener ID of connections made with
// DialInProcess.
const InProcessListener = "inprocess"

// DialInProcess returns a connection to the server over memory (net.Pipe),
// served as a network client on listener InProcessListener would be: the
// caller speaks MQTT on it, and gets a session with everything sessions
// have (a queue, QoS, persistence, limits, hooks). It is how a hook such as
// a bridge keeps a durable session inside the broker.
func (s *Server) DialInProcess() (net.Conn, error) {
	if s.isClosing() {
		return nil, ErrServerClosed
	}
	client, server := net.Pipe()
	go s.serveConn(server, InProcessListener) // counted in s.wg by serveConn
	return client, nil
}

// session returns the session of the client id, or nil.
func (s *Server) session(id string) *session {
	return s.sessions.get(id)
}
