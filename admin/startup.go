package admin

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/storage"
)

// States of the broker that /readyz reports.
const (
	StateStarting  = "starting"  // before the store is read
	StateRestoring = "restoring" // reading the store (see RestoreProgress)
	StateReady     = "ready"     // serving
	StateDraining  = "draining"  // shutting down: still serving, not ready
	StateStopped   = "stopped"   // not serving any more
)

// startState is the body of /readyz while it answers 503.
type startState struct {
	Status   string           `json:"status"` // "unavailable"
	State    string           `json:"state"`
	Progress *RestoreProgress `json:"progress,omitempty"`
}

// SetState sets the state /readyz reports until the broker serves:
// StateStarting when New returns, StateRestoring while an observed store
// (ObserveStore) is read, which it sets itself.
func (a *Server) SetState(state string) {
	a.state.Store(&startState{State: state})
}

// startupState returns what /readyz says while the broker is not ready.
func (a *Server) startupState(srv *tern.Server) startState {
	st := *a.state.Load()
	st.Status = "unavailable"
	switch {
	case srv != nil && srv.Serving(): // and not ready: a shutdown began
		st.State = StateDraining
	case srv != nil && !a.ready.Load():
		st.State = StateStopped
	}
	if p, ok := a.RestoreProgress(); ok && st.State == StateRestoring {
		st.Progress = &p
	}
	return st
}

// RestoreProgress is how far the restore from an observed store has got.
type RestoreProgress struct {
	// Records read so far, in all and by kind.
	Records       int64 `json:"records"`
	Messages      int64 `json:"messages"`
	Sessions      int64 `json:"sessions"`
	Subscriptions int64 `json:"subscriptions"`
	Deliveries    int64 `json:"deliveries"`
	Retained      int64 `json:"retained"`
	Wills         int64 `json:"wills"`
	// EstimatedRecords is the store's estimate of the records in all; 0
	// when it cannot tell.
	EstimatedRecords int64 `json:"estimated_records,omitempty"`
	// Elapsed is the time since the restore began; Remaining an estimate
	// of the time left to read the rest (0 when unknown).
	Elapsed   time.Duration `json:"-"`
	Remaining time.Duration `json:"-"`
	// ElapsedSeconds and RemainingSeconds are the same in seconds, for
	// the JSON.
	ElapsedSeconds   float64 `json:"elapsed_seconds"`
	RemainingSeconds float64 `json:"remaining_seconds,omitempty"`
	// Loaded is set once every record is read: the broker then finishes
	// (drops expired messages, removes orphans) and starts.
	Loaded bool `json:"loaded"`
}

// RestoreProgress returns how far reading the store passed to
// ObserveStore has got, and false before it began.
func (a *Server) RestoreProgress() (RestoreProgress, bool) {
	o := a.store.Load()
	if o == nil || !o.began.Load() {
		return RestoreProgress{}, false
	}
	return o.progress(), true
}

// RecordEstimator is implemented by stores that can tell, roughly and
// cheaply, how many records Load will pass (storage/pebble's does).
type RecordEstimator interface {
	EstimateRecords() (int64, error)
}

// ObserveStore returns st as a Store that reports its commits' latency
// (tern_store_commit_seconds) and the progress of the restore when the
// broker reads it (/readyz, RestoreProgress). Pass the result as
// tern.Options.Store; close st itself. Call it once, before tern.New.
func (a *Server) ObserveStore(st storage.Store) storage.Store {
	o := &observedStore{Store: st, a: a, commits: a.commitSeconds}
	a.store.Store(o)
	return o
}

// Record kinds, in the order Load passes them.
const (
	kMessage = iota
	kSession
	kSubscription
	kDelivery
	kInbound
	kRetained
	kWill
	numKinds
)

// observedStore is a Store that counts what Load passes and times Commit.
type observedStore struct {
	storage.Store
	a        *Server
	commits  prometheus.Histogram
	began    atomic.Bool
	loaded   atomic.Bool
	start    time.Time // set before began
	estimate int64     // set before began
	took     atomic.Int64
	counts   [numKinds]atomic.Int64
}

// Commit implements storage.Store, timing the commit.
func (o *observedStore) Commit(b storage.Batch, sync bool) error {
	t := time.Now()
	err := o.Store.Commit(b, sync)
	o.commits.Observe(time.Since(t).Seconds())
	return err
}

// Load implements storage.Store, counting the records passed.
func (o *observedStore) Load(l storage.Loader) error {
	o.start = time.Now()
	if e, ok := o.Store.(RecordEstimator); ok {
		if n, err := e.EstimateRecords(); err == nil {
			o.estimate = n
		}
	}
	o.a.SetState(StateRestoring)
	o.began.Store(true)
	err := o.Store.Load(&countingLoader{l: l, o: o})
	o.took.Store(int64(time.Since(o.start)))
	o.loaded.Store(true)
	return err
}

func (o *observedStore) progress() RestoreProgress {
	var p RestoreProgress
	c := &o.counts
	p.Messages, p.Sessions, p.Subscriptions = c[kMessage].Load(), c[kSession].Load(), c[kSubscription].Load()
	p.Deliveries, p.Retained, p.Wills = c[kDelivery].Load(), c[kRetained].Load(), c[kWill].Load()
	p.Records = p.Messages + p.Sessions + p.Subscriptions + p.Deliveries + c[kInbound].Load() + p.Retained + p.Wills
	p.EstimatedRecords = o.estimate
	p.Loaded = o.loaded.Load()
	p.Elapsed = time.Since(o.start)
	if p.Loaded {
		p.Elapsed = time.Duration(o.took.Load())
	}
	if !p.Loaded && p.Records > 0 && p.EstimatedRecords > p.Records {
		rate := float64(p.Records) / p.Elapsed.Seconds()
		p.Remaining = time.Duration(float64(p.EstimatedRecords-p.Records) / rate * float64(time.Second))
	}
	p.ElapsedSeconds = p.Elapsed.Round(time.Millisecond).Seconds()
	p.RemainingSeconds = p.Remaining.Round(time.Millisecond).Seconds()
	return p
}

// countingLoader passes each record on and counts it.
type countingLoader struct {
	l storage.Loader
	o *observedStore
}

func (c *countingLoader) Message(m *storage.Message) error {
	c.o.counts[kMessage].Add(1)
	return c.l.Message(m)
}

func (c *countingLoader) Session(s *storage.Session) error {
	c.o.counts[kSession].Add(1)
	return c.l.Session(s)
}

func (c *countingLoader) Subscription(s *storage.Subscription) error {
	c.o.counts[kSubscription].Add(1)
	return c.l.Subscription(s)
}

func (c *countingLoader) Delivery(d *storage.Delivery) error {
	c.o.counts[kDelivery].Add(1)
	return c.l.Delivery(d)
}

func (c *countingLoader) Inbound(clientID string, packetID uint16, created int64) error {
	c.o.counts[kInbound].Add(1)
	return c.l.Inbound(clientID, packetID, created)
}

func (c *countingLoader) Retained(topic string, id uint64) error {
	c.o.counts[kRetained].Add(1)
	return c.l.Retained(topic, id)
}

func (c *countingLoader) Will(w *storage.Will) error {
	c.o.counts[kWill].Add(1)
	return c.l.Will(w)
}

// Health passes on the store's storage.HealthReporter (nil when it has
// none), so that the broker still sees a full disk through the wrapper.
func (o *observedStore) Health() error {
	if hr, ok := o.Store.(storage.HealthReporter); ok {
		return hr.Health()
	}
	return nil
}
