package pebblestore_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/pebblestore"
)

// BenchmarkQoS1 runs the broker's QoS 1 workload: for each message, a
// PutMessage and a PutDelivery committed with sync (before the PUBACK),
// and once the subscriber has acknowledged it (16 messages later) a
// DeleteDelivery and a DeleteMessage committed without sync. Payloads are
// 256 random bytes. With 64 writers Pebble group-commits: many commits
// share one fsync.
func BenchmarkQoS1(b *testing.B) {
	for _, writers := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) { benchQoS1(b, writers) })
	}
}

func benchQoS1(b *testing.B, writers int) {
	s, err := pebblestore.Open(b.TempDir(), pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const window = 16 // messages awaiting their acknowledgement, per writer
	var next atomic.Int64
	var failed atomic.Pointer[error]
	fail := func(err error) { failed.CompareAndSwap(nil, &err) }
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := fmt.Sprint("subscriber-", w)
			payload := make([]byte, 256)
			rng := rand.NewChaCha8([32]byte{byte(w)})
			var pending []uint64
			ack := func() {
				id := pending[0]
				pending = pending[1:]
				batch := s.NewBatch()
				batch.DeleteDelivery(client, id)
				batch.DeleteMessage(id)
				if err := s.Commit(batch, false); err != nil {
					fail(err)
				}
			}
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					break
				}
				id := uint64(i)
				rng.Read(payload)
				batch := s.NewBatch()
				batch.PutMessage(&storage.Message{ID: id, Topic: "sensors/42/temperature", Payload: payload,
					QoS: 1, Origin: "publisher", Created: time.Now().UnixNano()})
				batch.PutDelivery(&storage.Delivery{ClientID: client, Seq: id, MessageID: id, QoS: 1, PacketID: uint16(id)})
				if err := s.Commit(batch, true); err != nil {
					fail(err)
					return
				}
				if pending = append(pending, id); len(pending) > window {
					ack()
				}
			}
			for len(pending) > 0 {
				ack()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

// countLoader counts what Load gives it.
type countLoader struct{ messages, retained, other int }

func (c *countLoader) Message(*storage.Message) error           { c.messages++; return nil }
func (c *countLoader) Session(*storage.Session) error           { c.other++; return nil }
func (c *countLoader) Subscription(*storage.Subscription) error { c.other++; return nil }
func (c *countLoader) Delivery(*storage.Delivery) error         { c.other++; return nil }
func (c *countLoader) Inbound(string, uint16, int64) error      { c.other++; return nil }
func (c *countLoader) Retained(string, uint64) error            { c.retained++; return nil }
func (c *countLoader) Will(*storage.Will) error                 { c.other++; return nil }

// BenchmarkLoad1M stores 1,000,000 retained messages (256 random bytes
// each, on 1,000,000 topics), reopens the store and measures Load. Writing
// the store takes a while, so it runs only with TERN_BIG=1:
//
//	TERN_BIG=1 go test -run - -bench Load1M -benchtime 1x ./storage/pebble
func BenchmarkLoad1M(b *testing.B) {
	if os.Getenv("TERN_BIG") == "" {
		b.Skip("set TERN_BIG=1 to run")
	}
	const n = 1_000_000
	dir := b.TempDir()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 256)
	rng := rand.NewChaCha8([32]byte{})
	start := time.Now()
	for i := 0; i < n; i += 10_000 {
		batch := s.NewBatch()
		for j := i; j < i+10_000; j++ {
			rng.Read(payload)
			topic := fmt.Sprintf("devices/%d/state", j)
			batch.PutMessage(&storage.Message{ID: uint64(j + 1), Topic: topic, Payload: payload, QoS: 1,
				Retain: true, Origin: "device", Created: time.Now().UnixNano()})
			batch.PutRetained(topic, uint64(j+1))
		}
		if err := s.Commit(batch, false); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote %d retained messages in %v", n, time.Since(start).Round(time.Millisecond))
	if s, err = pebblestore.Open(dir, pebblestore.Options{}); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		var c countLoader
		if err := s.Load(&c); err != nil {
			b.Fatal(err)
		}
		if c.messages != n || c.retained != n {
			b.Fatalf("loaded %d messages, %d retained", c.messages, c.retained)
		}
		el := time.Since(start)
		b.ReportMetric(el.Seconds(), "load-s")
		b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
	}
	b.StopTimer()
	size, _ := s.Size() // includes compactions still in progress
	b.ReportMetric(float64(size)/(1<<20), "store-MiB")
}
