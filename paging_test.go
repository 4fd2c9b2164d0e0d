package tern_test

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage/memory"
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
// through PUBREC/PUBREL/PUBCOMP), and returns their numbers in order.
func receiveNumbered(t *testing.T, c *terntest.Conn, n int) []int {
	t.Helper()
	var got []int
	for len(got) < n {
		switch pk := c.Recv().(type) {
		case *packets.Publish:
			got = append(got, payloadNumber(t, pk.Payload))
			if pk.QoS == 1 {
				c.Send(&packets.Puback{PacketID: pk.PacketID})
			} else {
				c.Send(&packets.Pubrec{PacketID: pk.PacketID})
			}
		case *packets.Pubrel:
			c.Send(&packets.Pubcomp{PacketID: pk.PacketID})
		default:
			t.Fatalf("unexpected %T", pk)
		}
	}
	return got
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
	if si, _ := srv.SessionInfo("pg0"); si.Queued != n {
		t.Fatalf("SessionInfo.Queued = %d, want %d", si.Queued, n)
	}
	const window = 20
	for i := range 3 {
		c := reconnectWindow(t, srv, fmt.Sprint("pg", i), window)
		got := receiveNumbered(t, c, n)
		checkSequence(t, fmt.Sprint("session pg", i), got, 0, n)
		// Reading back passes the cap by at most one inflight window.
		if used, _ := srv.MessageMemory(); used > limit+window*(size+400) {
			t.Fatalf("message memory %d while reading back, cap %d + window", used, limit)
		}
		expectNothing(t, c, "more messages")
	}
	st = srv.Stats()
	if st.Paged != 0 || st.Queued != 0 || st.PageIns < 3*(n-150) {
		t.Fatalf("after draining: Paged %d Queued %d PageIns %d", st.Paged, st.Queued, st.PageIns)
	}
	if used, _ := srv.MessageMemory(); used != 0 {
		t.Fatalf("message memory %d after every session drained, want 0", used)
	}
}
