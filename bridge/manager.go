package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
)

// Manager runs a set of bridges in one broker and changes the set while it
// runs (Update, for SIGHUP). Add it to the server with AddHook before
// Serve.
type Manager struct {
	log       *slog.Logger
	peers     *peerTable   // the Tern bridges connected to this broker
	redundant atomic.Int64 // see Redundant

	mu      sync.Mutex
	srv     *tern.Server // set by Start
	bridges map[string]*Bridge
	order   []string
	stopped bool
}

var (
	_ tern.Starter = (*Manager)(nil)
	_ tern.Stopper = (*Manager)(nil)
)

// Errors of the Manager.
var (
	ErrNoBridge = errors.New("bridge: no such bridge")
	ErrRunning  = errors.New("bridge: the bridge is running")
)

// NewManager returns a manager of the bridges cfgs describe, logging to log
// (nil: slog.Default()). It reports every configuration problem at once.
func NewManager(log *slog.Logger, cfgs ...Config) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{log: log, bridges: make(map[string]*Bridge), peers: &peerTable{}}
	bs, order, err := m.build(cfgs)
	if err != nil {
		return nil, err
	}
	m.bridges, m.order = bs, order
	return m, nil
}

func (m *Manager) build(cfgs []Config) (map[string]*Bridge, []string, error) {
	bs := make(map[string]*Bridge)
	var order []string
	var errs []error
	for _, c := range cfgs {
		if _, dup := bs[c.Name]; dup {
			errs = append(errs, fmt.Errorf("bridge %s: name used twice", c.Name))
			continue
		}
		b, err := New(c, m.log)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b.peers = m.peers
		b.mgr = m
		bs[c.Name] = b
		order = append(order, c.Name)
	}
	return bs, order, errors.Join(errs...)
}

// ID implements tern.Hook.
func (m *Manager) ID() string { return "bridges" }

// Start implements tern.Starter: it starts every bridge.
func (m *Manager) Start(srv *tern.Server) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.srv = srv
	for _, name := range m.order {
		if err := m.bridges[name].Start(srv); err != nil {
			return err
		}
	}
	return nil
}

// Stop implements tern.Stopper: it stops every bridge, within ctx.
func (m *Manager) Stop(ctx context.Context) error {
	m.mu.Lock()
	m.stopped = true
	bs := make([]*Bridge, 0, len(m.bridges))
	for _, name := range m.order {
		bs = append(bs, m.bridges[name])
	}
	m.mu.Unlock()
	return stopAll(ctx, bs)
}

func stopAll(ctx context.Context, bs []*Bridge) error {
	var wg sync.WaitGroup
	errs := make([]error, len(bs))
	for i, b := range bs {
		wg.Go(func() { errs[i] = b.Stop(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Update changes the running set of bridges to cfgs: bridges whose
// configuration is unchanged keep their connection; changed ones are
// stopped and started again (their local session, and so their queue,
// stays); removed ones stop, and their queue stays until its expiry (or
// DeleteQueue); new ones start. A configuration with errors changes
// nothing.
func (m *Manager) Update(cfgs []Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return tern.ErrServerClosed
	}
	want := make(map[string]Config)
	for _, c := range cfgs {
		want[c.Name] = c
	}
	// Validate everything first.
	var fresh []Config
	for _, c := range cfgs {
		if old, ok := m.bridges[c.Name]; ok && reflect.DeepEqual(old.Config(), c) {
			continue
		}
		fresh = append(fresh, c)
	}
	built, _, err := m.build(fresh)
	if err != nil {
		return err
	}
	if _, _, err := m.build(cfgs); err != nil { // duplicate names across old and new
		return err
	}
	var stop []*Bridge
	var started, changed, removed []string
	previous := make(map[string]*Bridge)
	for name, b := range m.bridges {
		previous[name] = b
	}
	for name, b := range m.bridges {
		if _, keep := want[name]; !keep {
			stop = append(stop, b)
			removed = append(removed, name)
		} else if _, redo := built[name]; redo {
			stop = append(stop, b)
			changed = append(changed, name)
		}
	}
	if len(stop) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		stopAll(ctx, stop)
		cancel()
	}
	for _, b := range stop {
		if _, keep := want[b.Name()]; !keep && m.srv != nil {
			m.srv.SetSessionLimits(b.s.localID, nil)
		}
		delete(m.bridges, b.Name())
	}
	order := make([]string, 0, len(cfgs))
	for _, c := range cfgs {
		order = append(order, c.Name)
		if nb, ok := built[c.Name]; ok {
			if old := previous[c.Name]; old != nil {
				for _, r := range old.s.rules {
					if r.Direction.in() {
						nb.staleRemote = append(nb.staleRemote, r.remoteFilter)
					}
				}
			}
			m.bridges[c.Name] = nb
			if m.srv != nil {
				if err := nb.Start(m.srv); err != nil {
					return err
				}
			}
			if _, was := findIn(changed, c.Name); !was {
				started = append(started, c.Name)
			}
		}
	}
	m.order = order
	if len(started)+len(changed)+len(removed) > 0 {
		m.log.Info("bridges reloaded", "added", started, "changed", changed, "removed", removed,
			"unchanged", len(cfgs)-len(started)-len(changed))
	}
	return nil
}

func findIn(list []string, s string) (int, bool) {
	for i, x := range list {
		if x == s {
			return i, true
		}
	}
	return -1, false
}

// Bridge returns the running bridge of the name.
func (m *Manager) Bridge(name string) (*Bridge, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.bridges[name]
	return b, ok
}

// Status returns a snapshot of every bridge, sorted by name.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	bs := make([]*Bridge, 0, len(m.bridges))
	for _, b := range m.bridges {
		bs = append(bs, b)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.Status())
	}
	sortStatuses(out)
	return out
}

// Reconnect makes the named bridge connect again at once.
func (m *Manager) Reconnect(name string) error {
	b, ok := m.Bridge(name)
	if !ok {
		return ErrNoBridge
	}
	b.Reconnect()
	return nil
}

// DeleteQueue ends the local session, and so drops the queue, of a bridge
// that is no longer configured (a running bridge's queue cannot be
// deleted: ErrRunning). It reports ErrNoBridge when there is no such
// session.
func (m *Manager) DeleteQueue(name string) error {
	m.mu.Lock()
	srv := m.srv
	_, running := m.bridges[name]
	m.mu.Unlock()
	if running {
		return ErrRunning
	}
	if srv == nil {
		return ErrNoBridge
	}
	return deleteSession(srv, LocalClientID(name))
}

// deleteSession ends a session by connecting with clean start and
// session expiry 0.
func deleteSession(srv *tern.Server, id string) error {
	if _, ok := srv.SessionInfo(id); !ok {
		return ErrNoBridge
	}
	nc, err := srv.DialInProcess()
	if err != nil {
		return err
	}
	c := newMQTTConn(nc, packets.V5)
	if _, err := c.handshake(&packets.Connect{ProtocolVersion: packets.V5, ClientID: id, CleanStart: true}, 10*time.Second); err != nil {
		nc.Close()
		return err
	}
	c.start()
	c.send(&packets.Disconnect{})
	c.flushClose(time.Second)
	srv.SetSessionLimits(id, nil)
	return nil
}
