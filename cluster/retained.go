package cluster

import (
	"bytes"
	"context"
	"errors"

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
}

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
