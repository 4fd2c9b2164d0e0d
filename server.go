package tern

import (
	"context"
	"errors"
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

// Errors returned by the server.
var (
	ErrServerClosed   = errors.New("tern: server closed")
	ErrListenerExists = errors.New("tern: listener id already in use")
)

// Server is an MQTT broker. Create it with New.
type Server struct {
	cfg   *config
	log   *slog.Logger
	hooks hookSet

	index    *topics.Index
	retained *topics.Retained[*Message]

	mu        sync.Mutex // guards listeners, session creation and removal, closing
	listeners map[string]Listener
	sessions  sync.Map // client id -> *session; written under mu
	clients   map[*Client]struct{}
	perListen map[string]int // open connections per listener
	limitLog  time.Time      // when a connection limit was last logged
	closing   bool

	inline   inlineClient
	stats    Stats
	persist  *persister // nil without a Store
	retainMu sync.Mutex // serialises retained changes

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
	s.inline.init(s)
	if cfg.Store != nil {
		s.persist = newPersister(s, cfg.Store, cfg.Durability)
		if err := s.restore(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// AddHook adds a hook. Add hooks before Serve; hooks run in the order added.
func (s *Server) AddHook(h Hook) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks.add(h)
}

// AddListener adds a listener; it starts accepting when Serve is called, or
// at once if the server is already serving.
func (s *Server) AddListener(l Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return ErrServerClosed
	}
	if _, ok := s.listeners[l.ID()]; ok {
		return ErrListenerExists
	}
	s.listeners[l.ID()] = l
	if s.serving.Load() {
		s.startListener(l)
	}
	return nil
}

// go runs fn on a goroutine tracked by the server's WaitGroup, so Close can
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
	s.goTracked(func() {
		err := l.Serve(func(nc net.Conn) { s.serveConn(nc, l.ID()) })
		if err != nil && !s.isClosing() {
			s.log.Error("listener stopped", "listener", l.ID(), "err", err)
		}
	})
}

// Serve starts the listeners and the server's housekeeping and returns at
// once; the server runs until Close or Shutdown.
func (s *Server) Serve() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return ErrServerClosed
	}
	if s.serving.Swap(true) {
		return errors.New("tern: Serve called twice")
	}
	for _, l := range s.listeners {
		s.startListener(l)
	}
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

// Close stops the server at once: listeners close and every client is
// disconnected (v5 clients with 0x8B Server shutting down).
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// Shutdown stops accepting connections, disconnects every client (v5
// clients with 0x8B Server shutting down) after flushing what is queued for
// it, and waits for the server's goroutines to end or ctx to expire.
func (s *Server) Shutdown(ctx context.Context) error {
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
	clients := make([]*Client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()

	for _, c := range clients {
		c.disconnect(packets.ServerShuttingDown)
	}
	s.sessions.Range(func(_, v any) bool {
		v.(*session).stopTimers()
		return true
	})
	waited := make(chan struct{})
	go func() {
		s.wg.Wait()
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
		return ctx.Err()
	}
}

// session returns the session of the client id, or nil.
func (s *Server) session(id string) *session {
	v, ok := s.sessions.Load(id)
	if !ok {
		return nil
	}
	return v.(*session)
}
