package tern_test

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage/memory"
	"github.com/ternmq/tern/terntest"
)

// Regression tests of the review of paging: sessions that stop being
// persistent or end while part of their queue is paged, export while the
// store cannot write, takeovers while a page is read back, DropOldest
// skips of paged deliveries.

// A persistent session with a paged part resumed by a v5 client with
// CleanStart=0 and SessionExpiry=0: the session (and its queue) is kept,
// so every queued message must still be delivered.
func TestPagingResumeExpiryZero(t *testing.T) {
	const n = 300
	st := memory.New()
	srv := pagingServer(t, st, 2<<10, nil)
	offlineSubscriber(t, srv, "z", "z/t", 1)
	pub := mustConnect(t, srv, packets.V5, "z-pub")
	publishNumbered(t, pub, "z/t", 0, n, 100, nil)
	if srv.Stats().Paged == 0 {
		t.Fatal("nothing paged")
	}
	c := srv.Dial(t, packets.V5)
	ack := c.Connect(&packets.Connect{ClientID: "z", KeepAlive: 60, Properties: packets.Properties{ReceiveMaximum: 20}})
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("resume: %v present %v", ack.ReasonCode, ack.SessionPresent)
	}
	checkSequence(t, "resumed with expiry 0", receiveNumbered(t, c, n), 0, n)
	drained(t, c)
}

// A v5 client whose session has a paged part disconnects with
// SessionExpiry 0: the session ends; every paged message must be counted
// dropped (session_ended), and the store must end up empty.
func TestPagingDisconnectExpiryZero(t *testing.T) {
	const n = 300
	st := memory.New()
	rec := &dropRecorder{}
	srv := pagingServer(t, st, 2<<10, nil, rec)
	offlineSubscriber(t, srv, "dz", "dz/t", 1)
	pub := mustConnect(t, srv, packets.V5, "dz-pub")
	publishNumbered(t, pub, "dz/t", 0, n, 100, nil)
	pub.Close()
	c := reconnectWindow(t, srv, "dz", 1)
	recvAs[*packets.Publish](t, c) // inflight, not acknowledged
	if p := srv.Stats().Paged; p == 0 {
		t.Fatal("nothing paged")
	}
	zero := uint32(0)
	c.Send(&packets.Disconnect{Properties: packets.Properties{SessionExpiry: &zero}})
	c.ExpectClosed()
	c.Close()
	terntest.Eventually(t, "the session to end", func() bool {
		_, ok := srv.SessionInfo("dz")
		return !ok && srv.Stats().Dropped(tern.DropSessionEnded) >= n-1
	})
	st2 := srv.Stats()
	t.Logf("paged %d queued %d dropped(session_ended) %d hooks %d", st2.Paged, st2.Queued, st2.Dropped(tern.DropSessionEnded), len(rec.get()))
	if got := st2.Dropped(tern.DropSessionEnded); got < n-1 {
		t.Errorf("Dropped(session_ended) = %d, want >= %d", got, n-1)
	}
	msgs, ds := storeContents(t, srv, st)
	if msgs != 0 || ds != 0 {
		t.Errorf("store holds %d messages and %d deliveries, want none", msgs, ds)
	}
}

// An online subscriber reads back while a publisher floods its queue
// under DropOldest: what it gets must be strictly increasing (no dup,
// no reorder), and received + dropped must be all.
func TestPagingDropOldestOnline(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprint("qos", qos), func(t *testing.T) {
			const n = 3000
			st := memory.New()
			srv := pagingServer(t, st, 2<<10, func(o *tern.Options) {
				o.MaxQueuedMessages, o.QueueFullPolicy = 200, tern.DropOldest
			})
			c := reconnectWindowNew(t, srv, "do", 5)
			subscribeRaw(t, c, 1, packets.Subscription{Filter: "do/t", QoS: qos})
			pub := mustConnect(t, srv, packets.V311, "do-pub")
			done := make(chan struct{})
			var got []int
			go func() {
				defer close(done)
				released := 0
				// The newest message is never dropped (DropOldest): it
				// comes last.
				for len(got) == 0 || got[len(got)-1] != n-1 || released > 0 {
					pk, err := c.TryRecv(10 * time.Second)
					if err != nil {
						return
					}
					switch pk := pk.(type) {
					case *packets.Publish:
						got = append(got, payloadNumber(t, pk.Payload))
						time.Sleep(50 * time.Microsecond)
						if ackPublish(c, pk) {
							released++
						}
					case *packets.Pubrel:
						c.Send(&packets.Pubcomp{PacketID: pk.PacketID})
						released--
					}
				}
			}()
			for i := 0; i < n; i++ {
				pk := &packets.Publish{Topic: "do/t", QoS: 1, PacketID: uint16(i%60000 + 1), Payload: pagePayload(i, 100)}
				pub.Send(pk)
				recvAs[*packets.Puback](t, pub)
			}
			<-done
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Fatalf("message %d is %d after %d (dup or reorder)", i, got[i], got[i-1])
				}
			}
			dropped := srv.Stats().Dropped(tern.DropQueueFull)
			t.Logf("received %d, dropped %d, paged now %d, queued %d", len(got), dropped, srv.Stats().Paged, srv.Stats().Queued)
			if int64(len(got))+dropped != n {
				t.Fatalf("received %d + dropped %d != %d", len(got), dropped, n)
			}
			if got[len(got)-1] != n-1 {
				t.Fatalf("last received %d, want %d", got[len(got)-1], n-1)
			}
			terntest.Eventually(t, "message memory to be released", func() bool {
				used, _ := srv.MessageMemory()
				return used == 0
			})
			if m, d := storeContents(t, srv, st); m != 0 || d != 0 {
				t.Errorf("store holds %d messages, %d deliveries", m, d)
			}
		})
	}
}

// Repeated takeovers while the paged part is being read back: every
// message arrives at least once, non-DUP first deliveries in order, and
// nothing stalls.
func TestPagingTakeoverLoop(t *testing.T) {
	const n = 3000
	st := memory.New()
	srv := pagingServer(t, st, 2<<10, nil)
	offlineSubscriber(t, srv, "tl", "tl/t", 2)
	pub := mustConnect(t, srv, packets.V5, "tl-pub")
	publishNumbered(t, pub, "tl/t", 0, n, 100, nil)
	seen := make(map[int]int)
	next := 0
	for round := 0; next < n; round++ {
		if round > 200 {
			t.Fatalf("too many rounds; next %d", next)
		}
		c := reconnectWindow(t, srv, "tl", 7)
		quota := 50 + round%37
		for k := 0; k < quota && next < n; {
			pk, err := c.TryRecv(10 * time.Second)
			if err != nil {
				t.Fatalf("round %d: stalled at %d (paged %d, queued %d): %v", round, next, srv.Stats().Paged, srv.Stats().Queued, err)
			}
			switch pk := pk.(type) {
			case *packets.Publish:
				v := payloadNumber(t, pk.Payload)
				seen[v]++
				if !pk.Dup {
					if v != next && seen[v] == 1 {
						t.Fatalf("round %d: first delivery %d, want %d", round, v, next)
					}
				}
				if v == next {
					next++
				}
				if seen[v] > 1 && !pk.Dup {
					t.Fatalf("round %d: %d delivered again without DUP", round, v)
				}
				ackPublish(c, pk)
				k++
			case *packets.Pubrel:
				c.Send(&packets.Pubcomp{PacketID: pk.PacketID})
			}
		}
		c.Close() // abrupt: a takeover next round (or a reconnect)
		if round%2 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// A takeover while the old connection's writer reads back a paged part
// that starts with many DropOldest-skipped deliveries: the new
// connection must get the queue without a new message to wake it.
func TestPagingTakeoverDuringSkippedRead(t *testing.T) {
	const (
		limit = 100
		n     = 8000
	)
	for attempt := 0; attempt < 20; attempt++ {
		id := fmt.Sprint("sk", attempt)
		st := memory.New()
		srv := pagingServer(t, st, 1<<10, func(o *tern.Options) {
			o.MaxQueuedMessages, o.QueueFullPolicy = limit, tern.DropOldest
		})
		offlineSubscriber(t, srv, id, "sk/t", 1)
		pub := mustConnect(t, srv, packets.V311, "sk-pub")
		for i := 0; i < n; i++ {
			pub.Send(&packets.Publish{Topic: "sk/t", QoS: 1, PacketID: uint16(i%60000 + 1), Payload: pagePayload(i, 50)})
		}
		for i := 0; i < n; i++ {
			recvAs[*packets.Puback](t, pub)
		}
		c1 := srv.Dial(t, packets.V5)
		c1.Send(&packets.Connect{ClientID: id, KeepAlive: 60, Properties: packets.Properties{
			SessionExpiry: packets.Uint32(3600), ReceiveMaximum: 10}})
		time.Sleep(time.Duration(attempt%5) * time.Millisecond)
		c2 := srv.Dial(t, packets.V5)
		c2.Send(&packets.Connect{ClientID: id, KeepAlive: 60, Properties: packets.Properties{
			SessionExpiry: packets.Uint32(3600), ReceiveMaximum: 10}})
		if pk, err := c2.TryRecv(10 * time.Second); err != nil {
			// c1's CONNECT came second and took the session over before
			// c2's CONNACK was written: not the case tested.
			t.Logf("attempt %d: c2 closed before its CONNACK (%v): c1 came second", attempt, err)
			continue
		} else if ack, ok := pk.(*packets.Connack); !ok || ack.ReasonCode != 0 || !ack.SessionPresent {
			t.Fatalf("resume %s: %+v", id, pk)
		}
		got := 0
		for got < limit {
			pk, err := c2.TryRecv(10 * time.Second)
			if ne := net.Error(nil); err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				// c1's CONNECT came second and took the session over from
				// c2: not the case tested.
				t.Logf("attempt %d: c2 closed (%v): c1 came second", attempt, err)
				break
			}
			if err != nil {
				t.Fatalf("attempt %d: stalled after %d of %d (paged %d queued %d): %v", attempt, got, limit,
					srv.Stats().Paged, srv.Stats().Queued, err)
			}
			if p, ok := pk.(*packets.Publish); ok {
				got++
				c2.Send(&packets.Puback{PacketID: p.PacketID})
			}
		}
		c1.Close()
		c2.Close()
		srv.Close()
	}
}

// Control: the same without a takeover.
func TestPagingSkippedRead(t *testing.T) {
	const (
		limit = 100
		n     = 8000
	)
	st := memory.New()
	srv := pagingServer(t, st, 1<<10, func(o *tern.Options) {
		o.MaxQueuedMessages, o.QueueFullPolicy = limit, tern.DropOldest
	})
	offlineSubscriber(t, srv, "ctl", "sk/t", 1)
	pub := mustConnect(t, srv, packets.V311, "sk-pub")
	for i := 0; i < n; i++ {
		pub.Send(&packets.Publish{Topic: "sk/t", QoS: 1, PacketID: uint16(i%60000 + 1), Payload: pagePayload(i, 50)})
	}
	for i := 0; i < n; i++ {
		recvAs[*packets.Puback](t, pub)
	}
	c2 := reconnectWindow(t, srv, "ctl", 10)
	checkSequence(t, "ctl", receiveNumbered(t, c2, limit), n-limit, n)
	drained(t, c2)
	storeEmpty(t, srv, st)
}

// ExportSession while the store cannot write: the session moves with
// every queued message, paged ones included, even those whose commit is
// still pending.
func TestPagingExportStoreDown(t *testing.T) {
	const n = 300
	st := newDownStore()
	a := pagingServer(t, st, 2<<10, nil)
	offlineSubscriber(t, a, "xd", "xd/t", 1)
	pub := mustConnect(t, a, packets.V5, "xd-pub")
	publishNumbered(t, pub, "xd/t", 0, n, 100, nil)
	st.mu.Lock()
	st.stall = true // commits wait; Health still fine
	st.mu.Unlock()
	for i := n; i < n+50; i++ { // accepted, their PUBACKs wait for the commit
		pub.Send(&packets.Publish{Topic: "xd/t", QoS: 1, PacketID: uint16(i + 1), Payload: pagePayload(i, 100)})
	}
	terntest.Eventually(t, "the messages to be queued", func() bool {
		si, _ := a.SessionInfo("xd")
		return si.Queued == n+50
	})
	st.mu.Lock()
	st.down = true // now Health reports it
	st.mu.Unlock()
	state, err := a.ExportSession("xd", false, nil, 0, 0)
	if !errors.Is(err, tern.ErrStoreUnavailable) || state != nil {
		t.Fatalf("export while the store cannot write: %v, %v; want ErrStoreUnavailable", state != nil, err)
	}
	if si, ok := a.SessionInfo("xd"); !ok || si.Queued != n+50 {
		t.Fatalf("after the refused export: session %v, queued %d, want %d", ok, si.Queued, n+50)
	}
	st.setDown(false)
	state, err = a.ExportSession("xd", false, nil, 0, 0)
	if err != nil || state == nil {
		t.Fatalf("export: %v", err)
	}
	if len(state.Deliveries) != n+50 {
		t.Errorf("exported %d deliveries, want %d (the rest of the queue is lost with the move)", len(state.Deliveries), n+50)
	}
}

// DropOldest skips paged deliveries (counted at once, reported to hooks
// when read back); the session then ends before reading back: hooks must
// still hear of every drop.
func TestPagingSkippedThenEnded(t *testing.T) {
	const (
		limit = 100
		n     = 250
	)
	st := memory.New()
	rec := &dropRecorder{}
	srv := pagingServer(t, st, 2<<10, func(o *tern.Options) {
		o.MaxQueuedMessages, o.QueueFullPolicy = limit, tern.DropOldest
	}, rec)
	offlineSubscriber(t, srv, "se", "se/t", 1)
	pub := mustConnect(t, srv, packets.V311, "se-pub")
	publishNumbered(t, pub, "se/t", 0, n, 100, nil)
	counted := srv.Stats().Dropped(tern.DropQueueFull)
	if !srv.DeleteSession("se") { // offline: ended, hooks called, before it returns
		t.Fatal("no session")
	}
	byReason := map[tern.DropReason]int{}
	for _, d := range rec.get() {
		byReason[d.reason]++
	}
	t.Logf("counted queue_full %d session_ended %d; hooks %v", counted, srv.Stats().Dropped(tern.DropSessionEnded), byReason)
	if int64(byReason[tern.DropQueueFull]) != counted {
		t.Errorf("hooks heard %d queue_full drops, %d counted", byReason[tern.DropQueueFull], counted)
	}
	storeEmpty(t, srv, st)
}

// ackPublish acknowledges a QoS 1 or 2 PUBLISH and reports whether a PUBREL
// is to come.
func ackPublish(c *terntest.Conn, pk *packets.Publish) bool {
	if pk.QoS == 1 {
		c.Send(&packets.Puback{PacketID: pk.PacketID})
		return false
	}
	c.Send(&packets.Pubrec{PacketID: pk.PacketID})
	return true
}
