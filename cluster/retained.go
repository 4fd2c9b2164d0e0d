package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/ternmq/tern"
	"github.com/ternmq/tern/storage"
)

// retainer replicates retained messages through tern_retained: a change
// published here is written there (the publisher's acknowledgement waits
// for it), and every node applies the bucket's changes to its own index.
// A deletion is written as a message with an empty payload, so that the
// watcher needs no key to topic mapping.
type retainer struct {
	c     *Cluster
	watch jetstream.KeyWatcher

	// applied is the stream sequence of the last change applied; when it
	// reaches want (not 0), reached is signalled.
	applied, want atomic.Uint64
	reached       chan struct{}
	// smu guards the SUBSCRIBEs waiting for a sync (see SyncRetained) and
	// whether a sync is running.
	smu     sync.Mutex
	waiting []func()
	syncing bool
	// applyHook, when set (by tests), is called before each change is
	// applied.
	applyHook atomic.Pointer[func()]
	// warned is when a failed sync was last logged (unix nanoseconds).
	warned atomic.Int64
}

// syncWait bounds each step of a sync: the stream leader's answer, and
// this node's copy reaching what it said.
const syncWait = 2 * time.Second

// start loads the retained messages and follows the bucket.
func (r *retainer) start(ctx context.Context) error {
	if r.watch != nil {
		return nil
	}
	w, err := r.c.kvRet.WatchAll(r.c.ctx)
	if err != nil {
		return err
	}
	n := 0
	for e := range w.Updates() {
		if e == nil {
			break
		}
		r.apply(e)
		n++
	}
	r.watch = w
	r.c.goTracked(func() {
		for e := range w.Updates() {
			if e != nil {
				r.apply(e)
			}
		}
	})
	if n > 0 {
		r.c.log.Info("retained messages loaded from the cluster", "count", n)
	}
	return nil
}

func (r *retainer) apply(e jetstream.KeyValueEntry) {
	if h := r.applyHook.Load(); h != nil {
		(*h)()
	}
	defer r.appliedTo(e.Revision())
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	var rec storage.Message
	if err := storage.DecodeMessage(e.Value(), &rec); err != nil {
		r.c.log.Warn("retained message from the cluster refused", "key", e.Key(), "err", err)
		return
	}
	if old, ok := r.c.srv.RetainedMessage(rec.Topic); ok && old.Created.UnixNano() == rec.Created &&
		old.Origin == rec.Origin && bytes.Equal(old.Payload, rec.Payload) {
		return // held already: restored from this node's store (a restart reads every key again)
	}
	r.c.srv.SetRetained(tern.MessageFromRecord(&rec))
}

// appliedTo records that the changes up to seq are applied.
func (r *retainer) appliedTo(seq uint64) {
	r.applied.Store(seq)
	if w := r.want.Load(); w != 0 && seq >= w {
		select {
		case r.reached <- struct{}{}:
		default:
		}
	}
}

// SyncRetained implements tern.RetainedSyncer. Every node applies the
// retained changes from its own copy of tern_retained, which may lag the
// stream leader by a few milliseconds (or more: a replica catching up). A
// change a publisher has its PUBACK for is on the leader; a subscription
// about to read the retained messages asks the leader for its last
// sequence and waits until this node applied that far. SUBSCRIBEs that
// come while a sync runs share the next one (one request for a burst).
// If the leader does not answer, or this node does not catch up, within
// syncWait each, the subscription reads what this node has: counted in
// Counters.RetainedSyncFailed and logged at most once a minute.
func (c *Cluster) SyncRetained(done func()) {
	r := c.retain
	if !c.ready.Load() || c.fenced.Load() || c.Single() {
		done()
		return
	}
	r.smu.Lock()
	r.waiting = append(r.waiting, done)
	if r.syncing {
		r.smu.Unlock()
		return
	}
	r.syncing = true
	r.smu.Unlock()
	go r.syncLoop()
}

// syncLoop runs syncs while SUBSCRIBEs wait: each sync is for those that
// came before it started.
func (r *retainer) syncLoop() {
	for {
		r.smu.Lock()
		batch := r.waiting
		r.waiting = nil
		if len(batch) == 0 {
			r.syncing = false
			r.smu.Unlock()
			return
		}
		r.smu.Unlock()
		if err := r.sync(); err != nil {
			r.c.fwd.cnt.retainedSyncFailed.Add(1)
			if now := time.Now().UnixNano(); now-r.warned.Load() > int64(time.Minute) {
				r.warned.Store(now)
				r.c.log.Warn("subscriptions read the retained messages this node has, maybe not the latest", "err", err)
			}
		}
		for _, done := range batch {
			done()
		}
	}
}

// sync waits until this node applied every retained change the stream
// leader has.
func (r *retainer) sync() error {
	c := r.c
	r.c.fwd.cnt.retainedSyncs.Add(1)
	ctx, cancel := context.WithTimeout(c.ctx, syncWait)
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.INFO.KV_tern_retained", nil)
	if err != nil {
		return fmt.Errorf("asking the stream leader of tern_retained: %w", err)
	}
	var resp struct {
		State *struct {
			LastSeq uint64 `json:"last_seq"`
		} `json:"state"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("asking the stream leader of tern_retained: %w", err)
	}
	if resp.Error != nil || resp.State == nil {
		return fmt.Errorf("asking the stream leader of tern_retained: %v", resp.Error)
	}
	last := resp.State.LastSeq
	if r.applied.Load() >= last {
		return nil
	}
	r.want.Store(last)
	defer r.want.Store(0)
	t := time.NewTimer(syncWait)
	defer t.Stop()
	for r.applied.Load() < last {
		select {
		case <-r.reached:
		case <-t.C:
			return fmt.Errorf("this node's copy of tern_retained is at %d, the leader's at %d", r.applied.Load(), last)
		case <-c.ctx.Done():
			return c.ctx.Err()
		}
	}
	return nil
}

// OnRetained implements tern.RetainObserver.
func (c *Cluster) OnRetained(m *tern.Message, ack *tern.Ack) {
	if !c.ready.Load() {
		return
	}
	subj, data := "$KV.tern_retained."+retainedKey(m.Topic), storage.AppendMessage(nil, m.Record())
	fut, err := c.js.PublishAsync(subj, data)
	// A burst of retained messages (thousands published at once) fills
	// the asynchronous publishes in flight: each call then waits for room,
	// and fails after a while. The change must not be dropped (the other
	// nodes would never get it, and the publisher's PUBACK would not wait
	// for it), nor go later than those after it: the publisher waits here.
	for errors.Is(err, jetstream.ErrTooManyStalledMsgs) && c.ctx.Err() == nil {
		fut, err = c.js.PublishAsync(subj, data)
	}
	if err != nil {
		c.log.Warn("retained message not replicated", "topic", m.Topic, "err", err)
		return
	}
	if ack == nil {
		return
	}
	ack.Hold()
	go func() {
		select {
		case <-fut.Ok():
			ack.Release(nil)
		case err := <-fut.Err():
			ack.Release(err)
		}
	}()
}
