package tern_test

// What an embedder meets when using the library from its documentation:
// errors are reported where they happen, sentinel errors can be matched,
// and the in-process client is treated the same way by every hook.

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/memory"
	"github.com/ternmq/tern/terntest"
	"github.com/ternmq/tern/topics"
)

// A listener whose address is in use makes Serve fail, with nothing left
// running; with port 0, Addr reports the bound address once Serve returns.
func TestServeBindsListeners(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	srv, _ := tern.New(&tern.Options{SysInterval: -1})
	free := listeners.NewTCP("free", "127.0.0.1:0")
	srv.AddListener(free)
	srv.AddListener(listeners.NewTCP("busy", taken.Addr().String()))
	if err := srv.Serve(); err == nil {
		t.Fatal("Serve with an address in use returned nil")
	}
	srv.Close()

	srv, _ = tern.New(&tern.Options{SysInterval: -1})
	l := listeners.NewTCP("tcp", "127.0.0.1:0")
	srv.AddListener(l)
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if a := l.Addr().(*net.TCPAddr); a.Port == 0 {
		t.Fatalf("Addr after Serve: %v, want the bound port", a)
	}
	if err := srv.Serve(); !errors.Is(err, tern.ErrServing) {
		t.Fatalf("second Serve: %v, want ErrServing", err)
	}
	// Added while serving: bound at once, its error returned.
	if err := srv.AddListener(listeners.NewTCP("busy", taken.Addr().String())); err == nil {
		t.Fatal("AddListener with an address in use returned nil")
	}
}

// After Shutdown the in-process client's calls return ErrServerClosed.
func TestInProcessAfterShutdown(t *testing.T) {
	srv, _ := tern.New(&tern.Options{SysInterval: -1})
	srv.Serve()
	srv.Shutdown(context.Background())
	if err := srv.Publish("t", nil, false, 0); !errors.Is(err, tern.ErrServerClosed) {
		t.Fatalf("Publish after Shutdown: %v", err)
	}
	if err := srv.Subscribe("t", 1, func(*tern.Message) {}); !errors.Is(err, tern.ErrServerClosed) {
		t.Fatalf("Subscribe after Shutdown: %v", err)
	}
	if err := srv.Unsubscribe("t", 1); !errors.Is(err, tern.ErrNoSubscription) {
		t.Fatalf("Unsubscribe of nothing: %v", err)
	}
}

// mistypedHook means to observe publishes but its method has the wrong
// signature, so it implements no hook interface.
type mistypedHook struct{}

func (mistypedHook) ID() string                                      { return "mistyped" }
func (mistypedHook) OnPublish(c *tern.Client, m *tern.Message) error { return nil }

// AddHook refuses a hook that implements no hook interface, and any hook
// once Serve has been called.
func TestAddHookChecks(t *testing.T) {
	srv, _ := tern.New(&tern.Options{SysInterval: -1})
	if err := srv.AddHook(mistypedHook{}); !errors.Is(err, tern.ErrHookNoEvents) {
		t.Fatalf("AddHook of a hook with no interface: %v", err)
	}
	srv.Serve()
	defer srv.Close()
	if err := srv.AddHook(&inlineRecorder{}); !errors.Is(err, tern.ErrServing) {
		t.Fatalf("AddHook after Serve: %v", err)
	}
}

// inlineRecorder records the client every hook sees for in-process calls.
type inlineRecorder struct {
	mu   sync.Mutex
	seen map[string]*tern.Client
}

func (r *inlineRecorder) ID() string { return "inline-recorder" }
func (r *inlineRecorder) note(what string, c *tern.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = make(map[string]*tern.Client)
	}
	r.seen[what] = c
}
func (r *inlineRecorder) Authorize(c *tern.Client, _ string, a tern.Access) tern.Decision {
	r.note([]string{tern.Write: "authorize write", tern.Read: "authorize read", tern.Deliver: "authorize deliver"}[a], c)
	return tern.Abstain
}
func (r *inlineRecorder) OnPublish(c *tern.Client, _ *packets.Publish) error {
	r.note("intercept", c)
	return nil
}
func (r *inlineRecorder) OnSubscribed(c *tern.Client, _ topics.Subscription) { r.note("subscribed", c) }
func (r *inlineRecorder) OnUnsubscribed(c *tern.Client, _, _ string)         { r.note("unsubscribed", c) }
func (r *inlineRecorder) OnPublished(c *tern.Client, _ *tern.Message)        { r.note("published", c) }
func (r *inlineRecorder) OnDelivered(string, *tern.Message)                  {}

// Every hook sees the in-process client as the same non-nil *Client, with
// IsInline true, listener "inline" and no user name.
func TestInProcessClientInHooks(t *testing.T) {
	r := &inlineRecorder{}
	srv, _ := tern.New(&tern.Options{SysInterval: -1})
	if err := srv.AddHook(r); err != nil {
		t.Fatal(err)
	}
	srv.Serve()
	defer srv.Close()
	srv.Subscribe("i/#", 1, func(*tern.Message) {})
	srv.Publish("i/t", []byte("x"), false, 0)
	srv.Unsubscribe("i/#", 1)
	var first *tern.Client
	for _, what := range []string{"authorize read", "subscribed", "authorize write", "intercept", "published", "unsubscribed"} {
		c := r.seen[what]
		if c == nil || !c.IsInline() || c.Listener() != "inline" || c.Username() != "" {
			t.Fatalf("%s: client %+v, want the in-process client", what, c)
		}
		if first == nil {
			first = c
		} else if c != first {
			t.Fatalf("%s: another *Client than the other hooks saw", what)
		}
	}
}

// Stats returns a snapshot: changing it changes nothing in the server.
func TestStatsSnapshot(t *testing.T) {
	srv, _ := tern.New(&tern.Options{SysInterval: -1})
	srv.Serve()
	defer srv.Close()
	srv.Publish("s/t", []byte("x"), false, 0)
	st := srv.Stats()
	st.MessagesReceived = 1000
	if n := srv.Stats().MessagesReceived; n != 1 {
		t.Fatalf("MessagesReceived = %d, want 1", n)
	}
}

// blockingStore, once armed, holds every Commit until release is closed,
// and says when one is waiting.
type blockingStore struct {
	*memory.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStore) Commit(bt storage.Batch, sync bool) error {
	if !b.armed.Load() {
		return b.Store.Commit(bt, sync)
	}
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.release
	return b.Store.Commit(bt, sync)
}

// Shutdown returns only once nothing is committing to the store, even when
// its context ends first, so an embedder may close the store right after
// (virtual time).
func TestShutdownWaitsForTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &blockingStore{Store: memory.New(), entered: make(chan struct{}, 1), release: make(chan struct{})}
		srv, err := tern.New(&tern.Options{SysInterval: -1, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(); err != nil {
			t.Fatal(err)
		}
		st.armed.Store(true)
		nc, _ := srv.DialInProcess()
		c := terntest.NewConn(t, nc, packets.V5)
		c.Send(&packets.Connect{ClientID: "keep", ProtocolVersion: packets.V5,
			Properties: packets.Properties{SessionExpiry: packets.Uint32(3600)}})
		<-st.entered // the session's commit, which the CONNACK waits for

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- srv.Shutdown(ctx) }()
		time.Sleep(2 * time.Second) // virtual: ctx has ended
		synctest.Wait()             // everything is blocked: the commit on release, Shutdown on it
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v while a commit was running", err)
		default:
		}
		close(st.release)
		if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v, want the context's error", err)
		}
		var sessions int
		st.Store.Load(loaderFunc(func(*storage.Session) { sessions++ }))
		if sessions != 1 {
			t.Fatalf("%d sessions stored, want 1", sessions)
		}
	})
}

// Close is immediate: a client that does not read holds it up for no more
// than a moment to take its DISCONNECT, where Shutdown gives it time to
// take what is queued (virtual time).
func TestCloseIsImmediate(t *testing.T) {
	for _, graceful := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			srv, _ := tern.New(&tern.Options{SysInterval: -1})
			srv.Serve()
			nc, _ := srv.DialInProcess()
			c := terntest.NewConn(t, nc, packets.V5)
			c.MustConnect("stuck") // and never reads again: the DISCONNECT blocks
			start := time.Now()
			if graceful {
				srv.Shutdown(context.Background())
			} else {
				srv.Close()
			}
			took := time.Since(start)
			if !graceful && took > 50*time.Millisecond {
				t.Fatalf("Close took %v", took)
			}
			if graceful && took <= 50*time.Millisecond {
				t.Fatal("Shutdown gave the client no time to read") // the test's premise
			}
		})
	}
}

// loaderFunc is a storage.Loader that counts sessions with fn and ignores
// the rest.
type loaderFunc func(*storage.Session)

func (f loaderFunc) Message(*storage.Message) error           { return nil }
func (f loaderFunc) Session(s *storage.Session) error         { f(s); return nil }
func (f loaderFunc) Subscription(*storage.Subscription) error { return nil }
func (f loaderFunc) Delivery(*storage.Delivery) error         { return nil }
func (f loaderFunc) Inbound(string, uint16, int64) error      { return nil }
func (f loaderFunc) Retained(string, uint64) error            { return nil }
func (f loaderFunc) Will(*storage.Will) error                 { return nil }

// New names the option that is out of range, in an error embedders can
// match.
func TestNewRejectsBadOptions(t *testing.T) {
	q := byte(3)
	for _, tc := range []struct {
		field string
		opts  tern.Options
	}{
		{"MaxQoS", tern.Options{MaxQoS: &q}},
		{"MaxPacketSize", tern.Options{MaxPacketSize: 10}},
		{"MaxPendingBytes", tern.Options{MaxPendingBytes: -1}},
		{"QueueFullPolicy", tern.Options{QueueFullPolicy: 7}},
		{"SharedStrategy", tern.Options{SharedStrategy: 9}},
		{"MaxConnections", tern.Options{MaxConnections: -1}},
		{"MaxPublishRate", tern.Options{MaxPublishRate: -2}},
		{"MaxClientIDLength", tern.Options{MaxClientIDLength: 70000}},
	} {
		_, err := tern.New(&tc.opts)
		var oe *tern.OptionError
		if !errors.Is(err, tern.ErrInvalidOptions) || !errors.As(err, &oe) || oe.Field != tc.field {
			t.Errorf("%s: New = %v, want an OptionError for the field", tc.field, err)
		}
	}
}
