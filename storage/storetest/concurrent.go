package storetest

import (
	"fmt"
	"sync"

	"github.com/ternmq/tern/storage"
)

// testConcurrent commits from several goroutines at once, sync and not,
// while another loads and sizes the store; run it with -race.
func testConcurrent(e *env) {
	const writers, rounds = 8, 60
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		done = make(chan struct{})
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	changes := make([][]func(storage.Batch), writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := fmt.Sprint("client", w)
			for i := range rounds {
				id := uint64(w*rounds + i + 1)
				fn := func(b storage.Batch) {
					b.PutMessage(message(id))
					b.PutDelivery(&storage.Delivery{ClientID: client, Seq: uint64(i + 1), MessageID: id, QoS: 1})
					if i%3 == 2 { // acknowledge an earlier one
						b.DeleteDelivery(client, uint64(i))
						b.DeleteMessage(id - 1)
					}
					if i == rounds/2 {
						b.PutSession(&storage.Session{ClientID: client, Version: 5})
						b.PutInbound(client, uint16(i), int64(i))
					}
				}
				b := e.s.NewBatch()
				fn(b)
				if err := e.s.Commit(b, i%2 == 0); err != nil {
					fail(err)
					return
				}
				changes[w] = append(changes[w], fn)
			}
		}()
	}
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := e.s.Load(&Recorder{}); err != nil {
				fail(err)
				return
			}
			if _, err := e.s.Size(); err != nil {
				fail(err)
				return
			}
			if err := e.s.Sync(); err != nil {
				fail(err)
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	readers.Wait()
	for _, err := range errs {
		e.t.Error(err)
	}
	for _, fns := range changes { // writers touch disjoint keys: any order will do
		for _, fn := range fns {
			fn(e.m)
		}
	}
	e.check()
}
