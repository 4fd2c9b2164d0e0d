package tern_test

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage"
	"github.com/ternmq/tern/storage/memory"
	"github.com/ternmq/tern/storage/storetest"
	"github.com/ternmq/tern/terntest"
)

// pagePayload is message i of a paging test: its number, padded to size.
func pagePayload(i, size int) []byte {
	b := []byte(strconv.Itoa(i) + " ")
	return append(b, bytes.Repeat([]byte("p"), max(size-len(b), 0))...)
}

// payloadNumber reads back the number pagePayload put in.
func payloadNumber(t testing.TB, p []byte) int {
	t.Helper()
	n, err := strconv.Atoi(string(p[:bytes.IndexByte(p, ' ')]))
	if err != nil {
		t.Fatalf("payload %.20q: %v", p, err)
	}
	return n
}

// publishNumbered publishes messages from..to-1 at QoS 1 from a client
// that waits for each PUBACK, and fails unless each is accepted.
func publishNumbered(t *testing.T, pub *terntest.Conn, topic string, from, to, size int, props *packets.Properties) {
	t.Helper()
	for i := from; i < to; i++ {
		pk := &packets.Publish{Topic: topic, QoS: 1, PacketID: uint16(i%60000 + 1), Payload: pagePayload(i, size)}
		if props != nil {
			pk.Properties = *props
		}
		pub.Send(pk)
		if code := recvAs[*packets.Puback](t, pub).ReasonCode; code != packets.Success {
			t.Fatalf("PUBACK %d: %v", i, code)
		}
	}
}

// receiveNumbered reads n QoS 1 or 2 messages, acknowledging each (QoS 2
// through PUBREC, PUBREL, PUBCOMP, completed before it returns), and
// returns their numbers in order. It returns once the server has handled
// every acknowledgement (a PING round trip).
func receiveNumbered(t *testing.T, c *terntest.Conn, n int) []int {
	t.Helper()
	var got []int
	released := 0 // PUBRECs sent and not yet answered
	for len(got) < n || released > 0 {
		switch pk := c.Recv().(type) {
		case *packets.Publish:
			got = append(got, payloadNumber(t, pk.Payload))
			if pk.QoS == 1 {
				c.Send(&packets.Puback{PacketID: pk.PacketID})
			} else {
				c.Send(&packets.Pubrec{PacketID: pk.PacketID})
				released++
			}
		case *packets.Pubrel:
			c.Send(&packets.Pubcomp{PacketID: pk.PacketID})
			released--
		default:
			t.Fatalf("unexpected %T", pk)
		}
	}
	return got
}

// drained checks that nothing more comes and that the server has handled
// every acknowledgement sent so far (a PING round trip).
func drained(t *testing.T, c *terntest.Conn) {
	t.Helper()
	c.Send(&packets.Pingreq{})
	recvAs[*packets.Pingresp](t, c)
	expectNothing(t, c, "more messages")
}

// checkSequence fails unless got is from, from+1, ... to-1.
func checkSequence(t *testing.T, what string, got []int, from, to int) {
	t.Helper()
	if len(got) != to-from {
		t.Fatalf("%s: got %d messages, want %d", what, len(got), to-from)
	}
	for i, n := range got {
		if n != from+i {
			t.Fatalf("%s: message %d is number %d, want %d (order or loss)", what, i, n, from+i)
		}
	}
}

// reconnectWindow resumes a persistent session with a small Receive
// Maximum, so that the paged part is read back as the window opens.
func reconnectWindow(t *testing.T, srv *terntest.Server, id string, window uint16) *terntest.Conn {
	t.Helper()
	c := srv.Dial(t, packets.V5)
	ack := c.Connect(&packets.Connect{ClientID: id, KeepAlive: 60, Properties: packets.Properties{
		SessionExpiry: packets.Uint32(3600), ReceiveMaximum: window}})
	if ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("resume %s: %v, present %v", id, ack.ReasonCode, ack.SessionPresent)
	}
	return c
}

// With a store, the queues of offline persistent sessions that pass the
// broker's message memory are paged out instead of dropped: memory stays
// under MaxMessageMemory while far more is queued, nothing is counted as
// dropped, and each session gets every message once, in order, as its
// window opens; then the memory and the paged count go back to 0.
func TestPagingAtBudget(t *testing.T) {
	t.Parallel()
	const (
		limit = 128 << 10
		n     = 2000
		size  = 1000
	)
	srv := terntest.NewServer(t, &tern.Options{Store: memory.New(), MaxMessageMemory: limit, MaxQueueMemory: -1,
		MaxQueuedMessages: -1, MaxQueuedBytes: -1})
	for i := range 3 {
		c, _ := connectStored(t, srv, fmt.Sprint("pg", i))
		subscribeRaw(t, c, 1, packets.Subscription{Filter: "pg/t", QoS: 1})
		goOffline(t, c)
	}
	pub := mustConnect(t, srv, packets.V5, "pg-pub")
	for i := 0; i < n; i += 100 {
		publishNumbered(t, pub, "pg/t", i, i+100, size, nil)
		if used, _ := srv.MessageMemory(); used > limit {
			t.Fatalf("message memory %d passed its cap %d after %d messages", used, limit, i+100)
		}
	}
	st := srv.Stats()
	if st.MessagesDropped != 0 {
		t.Fatalf("%d messages dropped, want none: paged instead", st.MessagesDropped)
	}
	if st.Queued != 3*n {
		t.Fatalf("Stats().Queued = %d, want %d (paged ones included)", st.Queued, 3*n)
	}
	// All but what fits in the budget is paged: n messages of 1 KB in
	// 128 KiB keep at most ~120 in memory per session, shared.
	if st.Paged < 3*(n-150) {
		t.Fatalf("Stats().Paged = %d, want at least %d", st.Paged, 3*(n-150))
	}
	if si, _ := srv.SessionInfo("pg0"); si.Queued != n || si.Paged < n-150 {
		t.Fatalf("SessionInfo: queued %d, paged %d; want %d queued, at least %d paged", si.Queued, si.Paged, n, n-150)
	}
	const window = 20
	for i := range 3 {
		c := reconnectWindow(t, srv, fmt.Sprint("pg", i), window)
		got := receiveNumbered(t, c, n)
		checkSequence(t, fmt.Sprint("session pg", i), got, 0, n)
		// Reading back passes the cap by about one inflight window (up to
		// two when the writer and the reader of pages interleave, as
		// seen under -race).
		if used, _ := srv.MessageMemory(); used > limit+2*window*(size+400) {
			t.Fatalf("message memory %d while reading back, cap %d + window", used, limit)
		}
		drained(t, c)
	}
	st = srv.Stats()
	if st.Paged != 0 || st.Queued != 0 || st.PageIns < 3*(n-150) {
		t.Fatalf("after draining: Paged %d Queued %d PageIns %d", st.Paged, st.Queued, st.PageIns)
	}
	if used, _ := srv.MessageMemory(); used != 0 {
		t.Fatalf("message memory %d after every session drained, want 0", used)
	}
}

// storeContents returns what the store holds: messages and deliveries.
func storeContents(t *testing.T, srv *terntest.Server, st storage.Store) (messages, deliveries int) {
	t.Helper()
	done := make(chan error, 1)
	srv.AfterStore(func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var r storetest.Recorder
	if err := st.Load(&r); err != nil {
		t.Fatal(err)
	}
	return len(r.Messages), len(r.Deliveries)
}

// storeEmpty fails unless the store holds no message and no delivery.
func storeEmpty(t *testing.T, srv *terntest.Server, st storage.Store) {
	t.Helper()
	if msgs, ds := storeContents(t, srv, st); msgs != 0 || ds != 0 {
		t.Fatalf("store holds %d messages and %d deliveries, want none", msgs, ds)
	}
}

// pagingServer starts a server on st whose sessions keep at most share
// bytes of their queue in memory.
func pagingServer(t *testing.T, st storage.Store, share int, more func(o *tern.Options), hooks ...tern.Hook) *terntest.Server {
	o := &tern.Options{Store: st, MaxQueueMemory: share, MaxQueuedMessages: -1, MaxQueuedBytes: -1}
	if more != nil {
		more(o)
	}
	return terntest.NewServer(t, o, hooks...)
}

// offlineSubscriber makes a persistent session subscribed to filter at
// qos, offline.
func offlineSubscriber(t *testing.T, srv *terntest.Server, id, filter string, qos byte) {
	t.Helper()
	c, _ := connectStored(t, srv, id)
	subscribeRaw(t, c, 1, packets.Subscription{Filter: filter, QoS: qos})
	goOffline(t, c)
}

// MaxQueueMemory is a session's own share: past it, its queue is paged
// even though the broker has memory to spare, and what it holds in memory
// stays about that size. Read back, everything comes once and in order,
// and the acknowledged messages leave the store.
func TestPagingSessionShare(t *testing.T) {
	t.Parallel()
	const (
		share = 8 << 10
		n     = 300
		size  = 1000
	)
	st := memory.New()
	srv := pagingServer(t, st, share, func(o *tern.Options) { o.MaxMessageMemory = -1 })
	offlineSubscriber(t, srv, "share", "s/t", 1)
	pub := mustConnect(t, srv, packets.V5, "share-pub")
	publishNumbered(t, pub, "s/t", 0, n, size, nil)
	if st := srv.Stats(); st.Paged < n-share/size-1 || st.MessagesDropped != 0 {
		t.Fatalf("Paged %d, dropped %d; want at least %d paged, none dropped", st.Paged, st.MessagesDropped, n-share/size-1)
	}
	if used, _ := srv.MessageMemory(); used > share+share/size*400+400 {
		t.Fatalf("message memory %d for a session whose share is %d", used, share)
	}
	if msgs, ds := storeContents(t, srv, st); msgs != n || ds != n {
		t.Fatalf("store holds %d messages and %d deliveries, want %d each", msgs, ds, n)
	}
	c := reconnectWindow(t, srv, "share", 50)
	checkSequence(t, "session share", receiveNumbered(t, c, n), 0, n)
	drained(t, c)
	storeEmpty(t, srv, st)
	if used, _ := srv.MessageMemory(); used != 0 {
		t.Fatalf("message memory %d after draining", used)
	}
}

// A session that is online and keeping up is paged as well once its queue
// passes its share (a burst while its window is full), and messages
// published while it reads back go after the paged ones: one order.
func TestPagingOnlineBurst(t *testing.T) {
	t.Parallel()
	const n = 1000
	srv := pagingServer(t, memory.New(), 4<<10, nil)
	c := reconnectWindowNew(t, srv, "burst", 10)
	subscribeRaw(t, c, 1, packets.Subscription{Filter: "b/t", QoS: 1})
	pub := mustConnect(t, srv, packets.V5, "burst-pub")
	publishNumbered(t, pub, "b/t", 0, n/2, 200, nil)
	if srv.Stats().Paged == 0 {
		t.Fatal("nothing paged while the window was full")
	}
	done := make(chan []int)
	go func() { done <- receiveNumbered(t, c.WithT(t), n) }()
	publishNumbered(t, pub, "b/t", n/2, n, 200, nil)
	checkSequence(t, "online session", <-done, 0, n)
}

// reconnectWindowNew connects a new persistent session with a Receive
// Maximum.
func reconnectWindowNew(t *testing.T, srv *terntest.Server, id string, window uint16) *terntest.Conn {
	t.Helper()
	c := srv.Dial(t, packets.V5)
	ack := c.Connect(&packets.Connect{ClientID: id, CleanStart: true, KeepAlive: 60, Properties: packets.Properties{
		SessionExpiry: packets.Uint32(3600), ReceiveMaximum: window}})
	if ack.ReasonCode != 0 {
		t.Fatalf("connect %s: %v", id, ack.ReasonCode)
	}
	return c
}

// MaxQueuedMessages counts paged messages, and QueueFullPolicy applies to
// the whole queue: DropNew refuses the newest, DropOldest drops the
// oldest, in memory first and then paged ones (deleted from the store
// when reading back reaches them). Every drop is counted, and reported to
// DropObserver hooks (a paged one when reading back reaches it).
func TestPagingQueueLimits(t *testing.T) {
	t.Parallel()
	const (
		limit = 100
		n     = 250
	)
	for _, policy := range []tern.QueueFullPolicy{tern.DropNew, tern.DropOldest} {
		t.Run(fmt.Sprint(policy), func(t *testing.T) {
			t.Parallel()
			st := memory.New()
			rec := &dropRecorder{}
			srv := pagingServer(t, st, 2<<10, func(o *tern.Options) {
				o.MaxQueuedMessages, o.QueueFullPolicy = limit, policy
			}, rec)
			offlineSubscriber(t, srv, "lim", "l/t", 1)
			pub := mustConnect(t, srv, packets.V311, "lim-pub") // no 0x97 for a v3 publisher
			publishNumbered(t, pub, "l/t", 0, n, 100, nil)
			si, _ := srv.SessionInfo("lim")
			if si.Queued != limit || si.Dropped[tern.DropQueueFull] != n-limit {
				t.Fatalf("queued %d, dropped %v; want %d queued, %d queue_full", si.Queued, si.Dropped, limit, n-limit)
			}
			if got := srv.Stats().Dropped(tern.DropQueueFull); got != n-limit {
				t.Fatalf("Stats().Dropped(queue_full) = %d, want %d", got, n-limit)
			}
			from := 0
			if policy == tern.DropOldest {
				from = n - limit
			}
			c := reconnectWindow(t, srv, "lim", 30)
			checkSequence(t, "session lim", receiveNumbered(t, c, limit), from, from+limit)
			drained(t, c)
			var dropped []int
			for _, d := range rec.get() {
				if d.client != "lim" || d.reason != tern.DropQueueFull {
					t.Fatalf("drop reported: %+v", d)
				}
				dropped = append(dropped, payloadNumber(t, []byte(d.payload)))
			}
			slices.Sort(dropped)
			if policy == tern.DropOldest {
				checkSequence(t, "dropped", dropped, 0, n-limit)
			} else {
				checkSequence(t, "dropped", dropped, limit, n)
			}
			storeEmpty(t, srv, st)
		})
	}
}

// A paged message whose expiry interval passes while it waits is dropped
// when read back, and counted (expired) [MQTT-3.3.2-5]; the rest come in
// order.
func TestPagingExpiry(t *testing.T) {
	t.Parallel()
	st := memory.New()
	srv := pagingServer(t, st, 1<<10, nil)
	offlineSubscriber(t, srv, "exp", "e/t", 1)
	pub := mustConnect(t, srv, packets.V5, "exp-pub")
	publishNumbered(t, pub, "e/t", 0, 50, 100, nil)
	publishNumbered(t, pub, "e/t", 50, 150, 100, &packets.Properties{MessageExpiry: 1})
	publishNumbered(t, pub, "e/t", 150, 200, 100, nil)
	if srv.Stats().Paged < 150 {
		t.Fatalf("only %d paged", srv.Stats().Paged)
	}
	time.Sleep(1100 * time.Millisecond) // the expiry interval passes: no event marks it
	c := reconnectWindow(t, srv, "exp", 20)
	got := receiveNumbered(t, c, 100)
	checkSequence(t, "before the expiring ones", got[:50], 0, 50)
	checkSequence(t, "after the expiring ones", got[50:], 150, 200)
	drained(t, c)
	if n := srv.Stats().Dropped(tern.DropExpired); n != 100 {
		t.Fatalf("Dropped(expired) = %d, want 100", n)
	}
	storeEmpty(t, srv, st)
}

// A session taken over by a new connection keeps its paged part: what
// was inflight is sent again with DUP, then the rest in order
// [MQTT-4.4.0-1]. A clean start then ends the session: its paged
// deliveries and the messages only they referred to leave the store, and
// the messages another session still has stay.
func TestPagingTakeover(t *testing.T) {
	t.Parallel()
	const n = 400
	st := memory.New()
	srv := pagingServer(t, st, 2<<10, nil)
	offlineSubscriber(t, srv, "to", "to/t", 1)
	offlineSubscriber(t, srv, "other", "to/t", 1)
	pub := mustConnect(t, srv, packets.V5, "to-pub")
	publishNumbered(t, pub, "to/t", 0, n, 100, nil)

	c1 := reconnectWindow(t, srv, "to", 10)
	got := receiveNumbered(t, c1, 100) // acknowledged
	var unacked []int
	for range 10 { // the window's worth, not acknowledged
		p := recvAs[*packets.Publish](t, c1)
		unacked = append(unacked, payloadNumber(t, p.Payload))
	}
	checkSequence(t, "first connection", append(got, unacked...), 0, 110)

	c2 := reconnectWindow(t, srv, "to", 10) // takes the session over
	var resent []int
	for range 10 {
		p := recvAs[*packets.Publish](t, c2)
		if !p.Dup {
			t.Fatalf("message %s sent again without DUP", p.Payload[:4])
		}
		resent = append(resent, payloadNumber(t, p.Payload))
		c2.Send(&packets.Puback{PacketID: p.PacketID})
	}
	checkSequence(t, "resent", resent, 100, 110)
	checkSequence(t, "after takeover", receiveNumbered(t, c2, 100), 110, 210)
	c2.Close()

	// A clean start ends it with 190 left, most of them paged.
	if srv.Stats().Paged == 0 {
		t.Fatal("nothing paged before the clean start")
	}
	c3 := srv.Dial(t, packets.V5)
	if ack := c3.Connect(&packets.Connect{ClientID: "to", CleanStart: true}); ack.SessionPresent {
		t.Fatal("session present after a clean start")
	}
	// Those queued or paged are counted; up to a window's worth may have
	// been inflight on the closed connection, which are not.
	if got := srv.Stats().Dropped(tern.DropSessionEnded); got < n-220 || got > n-210 {
		t.Fatalf("Dropped(session_ended) = %d, want %d to %d", got, n-220, n-210)
	}
	if msgs, ds := storeContents(t, srv, st); msgs != n || ds != n {
		t.Fatalf("store holds %d messages and %d deliveries, want %d each (the other session's)", msgs, ds, n)
	}
	c4 := reconnectWindow(t, srv, "other", 100)
	checkSequence(t, "other session", receiveNumbered(t, c4, n), 0, n)
	drained(t, c4)
	storeEmpty(t, srv, st)
}

// On restart the paged part stays in the store: the restored sessions
// hold about their share in memory and read the rest back, in order,
// QoS 1 and QoS 2 alike; at the end the store is empty.
func TestPagingRestart(t *testing.T) {
	t.Parallel()
	const n = 600
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			r := &restartable{t: t, open: open, opts: tern.Options{MaxQueueMemory: 4 << 10,
				MaxQueuedMessages: -1, MaxQueuedBytes: -1}}
			srv := r.start()
			offlineSubscriber(t, srv, "r1", "r/t", 1)
			offlineSubscriber(t, srv, "r2", "r/t", 2)
			pub := mustConnect(t, srv, packets.V5, "r-pub")
			publishNumbered(t, pub, "r/t", 0, n, 200, nil)
			pub.Close()
			srv = r.restart()
			st := srv.Stats()
			if st.Queued != 2*n || st.Paged < 2*(n-4<<10/200-1) {
				t.Fatalf("after restart: queued %d, paged %d", st.Queued, st.Paged)
			}
			if used, _ := srv.MessageMemory(); used > 2*(4<<10+25*400) {
				t.Fatalf("message memory %d after restart: the paged part was loaded", used)
			}
			for _, id := range []string{"r1", "r2"} {
				c := reconnectWindow(t, srv, id, 16)
				checkSequence(t, id, receiveNumbered(t, c, n), 0, n)
				drained(t, c)
			}
			storeEmpty(t, srv, r.st)
		})
	}
}

// A session moving to another node (ExportSession) takes its paged part
// along, after the part in memory, in order; the first server's store
// keeps nothing of it.
func TestPagingExport(t *testing.T) {
	t.Parallel()
	const n = 300
	st := memory.New()
	a := pagingServer(t, st, 2<<10, nil)
	b := terntest.NewServer(t, nil)
	offlineSubscriber(t, a, "mv", "mv/t", 1)
	pub := mustConnect(t, a, packets.V5, "mv-pub")
	publishNumbered(t, pub, "mv/t", 0, n, 100, nil)
	pub.Close()
	if a.Stats().Paged == 0 {
		t.Fatal("nothing paged")
	}
	state, err := a.ExportSession("mv", false, nil, 0, 0)
	if err != nil || state == nil || len(state.Deliveries) != n {
		t.Fatalf("export: %v, %v", state, err)
	}
	if st := a.Stats(); st.Paged != 0 || st.Queued != 0 {
		t.Fatalf("after export: paged %d, queued %d", st.Paged, st.Queued)
	}
	storeEmpty(t, a, st)
	if err := b.ImportSession(state); err != nil {
		t.Fatal(err)
	}
	c := reconnectWindow(t, b, "mv", 50)
	checkSequence(t, "moved session", receiveNumbered(t, c, n), 0, n)
	drained(t, c)
}

// Only what is stored anyway is paged: at the broker's budget a clean
// session's QoS 1 messages are dropped (memory_full) as without a store,
// while the persistent session's are paged. With DisablePaging the
// persistent session's are dropped too.
func TestPagingOnlyPersistent(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	for _, disabled := range []bool{false, true} {
		t.Run(fmt.Sprint("DisablePaging=", disabled), func(t *testing.T) {
			t.Parallel()
			srv := pagingServer(t, memory.New(), -1, func(o *tern.Options) {
				o.MaxMessageMemory, o.DisablePaging = limit, disabled
			})
			offlineSubscriber(t, srv, "kept", "o/t", 1)
			clean := srv.Dial(t, packets.V5)
			clean.Connect(&packets.Connect{ClientID: "clean", CleanStart: true, KeepAlive: 60,
				Properties: packets.Properties{ReceiveMaximum: 1}})
			subscribeRaw(t, clean, 1, packets.Subscription{Filter: "o/t", QoS: 1})
			pub := mustConnect(t, srv, packets.V311, "o-pub")
			publishNumbered(t, pub, "o/t", 0, 300, 1000, nil)
			if used, _ := srv.MessageMemory(); used > limit {
				t.Fatalf("message memory %d over its cap %d", used, limit)
			}
			kept, _ := srv.SessionInfo("kept")
			cl, _ := srv.SessionInfo("clean")
			if cl.Dropped[tern.DropMemoryFull] == 0 || cl.Paged != 0 {
				t.Fatalf("clean session: dropped %v, paged %d; want memory_full drops, nothing paged", cl.Dropped, cl.Paged)
			}
			switch {
			case !disabled && (kept.Queued != 300 || kept.Paged == 0 || len(kept.Dropped) != 0):
				t.Fatalf("persistent session: queued %d, paged %d, dropped %v; want all 300 queued, paged", kept.Queued, kept.Paged, kept.Dropped)
			case disabled && (kept.Paged != 0 || kept.Dropped[tern.DropMemoryFull] == 0):
				t.Fatalf("paging disabled: paged %d, dropped %v; want memory_full drops", kept.Paged, kept.Dropped)
			}
		})
	}
}
