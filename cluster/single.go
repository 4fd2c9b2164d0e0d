package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// singleDir is where a cluster of one keeps its JetStream store.
func (c *Cluster) singleDir() string { return filepath.Join(c.opts.DataDir, "single") }

// importSingle copies what this node kept while it was a cluster of one
// (the retained messages and the session registry in DataDir/single) into
// the cluster's buckets, each key only where the cluster has none, then
// renames the directory so that it is imported once. nats-server cannot
// take the single node's streams as they are: it would count them as
// replicas of the cluster's, which the other nodes do not have.
func (c *Cluster) importSingle(ctx context.Context) error {
	dir := c.singleDir()
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		return nil
	}
	// An in-process server of its own, with no listener, on the old store.
	ns, err := server.NewServer(&server.Options{ServerName: c.opts.Node + "-single", DontListen: true, NoSigs: true,
		NoLog: true, JetStream: true, StoreDir: dir, DisableJetStreamBanner: true})
	if err != nil {
		return err
	}
	go ns.Start()
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	if !ns.ReadyForConnections(30 * time.Second) {
		return fmt.Errorf("the store in %s did not open", dir)
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	n := 0
	for _, b := range []struct {
		name string
		to   jetstream.KeyValue
	}{{"tern_retained", c.kvRet}, {"tern_sessions", c.kvSess}} {
		from, err := js.KeyValue(ctx, b.name)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		w, err := from.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			return err
		}
		for e := range w.Updates() {
			if e == nil {
				break
			}
			if _, err := b.to.Create(ctx, e.Key(), e.Value()); err == nil {
				n++
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				w.Stop()
				return fmt.Errorf("%s: %w", b.name, err)
			}
		}
		w.Stop()
	}
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()
	done := dir + ".imported-" + time.Now().UTC().Format("20060102T150405")
	if err := os.Rename(dir, done); err != nil {
		return err
	}
	c.log.Info("the state this node kept as a cluster of one is imported into the cluster", "keys", n, "kept_in", done)
	return nil
}
