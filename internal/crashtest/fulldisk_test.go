package crashtest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternmq/tern/packets"
)

// TestFullDisk runs tern serve with its data directory on an 8 MB tmpfs,
// fills the disk with 4 KB retained messages and QoS 1 messages queued for
// an offline persistent session, and checks issue item 6:
//
//   - the broker stays up while the disk is full: refusals (v5 PUBACK 0x97)
//     instead of a panic, /readyz 503 with the cause, tern_store_available
//     0, QoS 0 and clean sessions still served, a persistent CONNECT refused
//     with 0x88 [MQTT-3.2.2-6];
//   - killed with SIGKILL while the disk is full, it restarts and serves;
//   - once the file system is grown it resumes writing by itself (the time
//     it takes is logged: the design target is under 2 s);
//   - in sync mode nothing it acknowledged is lost: every retained message
//     and every queued message that got its PUBACK is there.
//
// It needs to mount a tmpfs (root, or CAP_SYS_ADMIN) and is skipped
// otherwise. The periodic variant (TERN_SOAK=1) reports what periodic mode
// lost: what was acknowledged but not yet written when the disk filled.
func TestFullDisk(t *testing.T) {
	skipUnlessLong(t)
	if runtime.GOOS != "linux" {
		t.Skip("needs Linux tmpfs")
	}
	modes := []string{"sync"}
	if os.Getenv("TERN_SOAK") == "1" {
		modes = append(modes, "periodic")
	}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { runFullDisk(t, mode) })
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory and unmounts
// it when the test ends; it skips the test when it cannot.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tern-crashtest", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a size-limited tmpfs (needs root or CAP_SYS_ADMIN): %v %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

func remount(t *testing.T, dir, size string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,size="+size, dir).CombinedOutput(); err != nil {
		t.Fatalf("growing the tmpfs: %v %s", err, out)
	}
}

func runFullDisk(t *testing.T, mode string) {
	mnt := mountTmpfs(t, "8m")
	b := newBroker(t, mode, filepath.Join(mnt, "data"))
	adm := newAdmin(b.admin)
	b.start()
	if code, body, err := adm.readyz(); err != nil || code != http.StatusOK {
		t.Fatalf("readyz before: %d %s %v", code, body, err)
	}
	sub := mustDial(t, b.addr, packets.V5, persistentConnect(packets.V5, "fd-sub", true), 0)
	mustSubscribeQoS(t, sub, 1, 1, "fd/#")
	sub.disconnect()

	// Fill the disk: a v5 publisher alternates a 4 KB message for the
	// offline session and a 4 KB retained message on a new topic, with 20
	// in flight, until the broker refuses one.
	pub := mustDial(t, b.addr, packets.V5, &packets.Connect{ClientID: "fd-pub", CleanStart: true}, 0)
	var mu sync.Mutex
	acked := make(map[string]bool) // payloads (queued) and topics (retained) acknowledged
	sent := make(map[uint16]*packets.Publish)
	refused := make(chan struct{})
	var refusedOnce sync.Once
	readerDone := make(chan error, 1)
	ids := make(chan uint16, 20)
	for i := uint16(1); i <= 20; i++ {
		ids <- i
	}
	go func() {
		for {
			pub.nc.SetReadDeadline(time.Time{})
			pk, err := packets.ReadPacket(pub.br, packets.V5, 0)
			if err != nil {
				readerDone <- err
				return
			}
			a, ok := pk.(*packets.Puback)
			if !ok {
				readerDone <- fmt.Errorf("unexpected %s", pk.Type())
				return
			}
			mu.Lock()
			p := sent[a.PacketID]
			delete(sent, a.PacketID)
			switch {
			case a.ReasonCode == packets.QuotaExceeded:
				refusedOnce.Do(func() { close(refused) })
			case a.ReasonCode.IsError():
				mu.Unlock()
				readerDone <- fmt.Errorf("PUBACK %v", a.ReasonCode)
				return
			case p.Retain:
				acked[p.Topic] = true
			default:
				acked[string(p.Payload)] = true
			}
			mu.Unlock()
			ids <- a.PacketID
		}
	}()
	filler := []byte(strings.Repeat("x", 4096))
	start := time.Now()
	n := 0
	// The disk is full when a PUBLISH is refused, or when the broker says
	// so while every packet id waits for an acknowledgement held back
	// until the disk takes writes again.
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
fill:
	for ; ; n++ {
		var id uint16
		select {
		case id = <-ids:
		case <-refused:
			break fill
		case err := <-readerDone:
			t.Fatalf("publisher: %v\n%s", err, b.logTail())
		case <-poll.C:
			if code, _, err := adm.readyz(); err == nil && code == http.StatusServiceUnavailable {
				break fill
			}
			n--
			continue
		case <-time.After(2 * wait):
			t.Fatalf("the broker neither acknowledged nor refused for %v:\n%s", 2*wait, b.logTail())
		}
		pk := &packets.Publish{QoS: 1, PacketID: id, Topic: "fd/q", Payload: append([]byte(fmt.Sprintf("m%06d-", n)), filler...)}
		if n%2 == 1 {
			pk.Topic, pk.Retain = fmt.Sprintf("fdret/%06d", n), true
		}
		mu.Lock()
		sent[id] = pk
		mu.Unlock()
		if err := pub.send(pk); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	mu.Lock()
	nAcked, inFlight := len(acked), len(sent)
	mu.Unlock()
	t.Logf("%s: disk full after %d messages in %v: %d acknowledged, %d refused or waiting for the disk", mode, n,
		time.Since(start).Round(time.Millisecond), nAcked, inFlight)
	if nAcked < 100 {
		t.Fatalf("only %d messages acknowledged before the disk filled", nAcked)
	}

	// Full: the broker is up and says why it refuses.
	checkDegraded := func(when string) {
		t.Helper()
		if b.exitedNow() {
			t.Fatalf("%s: the broker exited:\n%s", when, b.logTail())
		}
		// The store probes the disk again now and then, and a probe can
		// succeed for a moment (Pebble freed a file): /readyz and the
		// metric are read as a pair until they agree the store is down,
		// which they must within a few tries.
		waitDown := func() {
			t.Helper()
			for try := 1; ; try++ {
				code, body, err := adm.readyz()
				if err != nil {
					t.Fatalf("%s: readyz: %v", when, err)
				}
				down := code == http.StatusServiceUnavailable && strings.Contains(body, "store unavailable")
				metrics := ""
				if down {
					if _, metrics, err = adm.get("/metrics", nil); err != nil {
						t.Fatalf("%s: metrics: %v", when, err)
					}
					if strings.Contains(metrics, "tern_store_available 0") {
						t.Logf("%s: readyz %d %s", when, code, strings.TrimSpace(body))
						return
					}
				}
				if try == 20 {
					t.Fatalf("%s: never both /readyz 503 (last %d %s) and tern_store_available 0 (last: %v)", when, code, body,
						strings.Contains(metrics, "tern_store_available 1"))
				}
				time.Sleep(50 * time.Millisecond) // the store's probe runs on its own clock
			}
		}
		waitDown()
		// QoS 0 and clean sessions work: the full disk refuses only what needs the store.
		csub := mustDial(t, b.addr, packets.V5, &packets.Connect{ClientID: "fd-csub", CleanStart: true}, 0)
		mustSubscribeQoS(t, csub, 1, 0, "q0/#")
		cpub := mustDial(t, b.addr, packets.V311, &packets.Connect{ClientID: "fd-cpub", CleanStart: true}, 0)
		if err := cpub.send(&packets.Publish{Topic: "q0/x", Payload: []byte("qos0")}); err != nil {
			t.Fatal(err)
		}
		if p, err := csub.recv(); err != nil || string(p.(*packets.Publish).Payload) != "qos0" {
			t.Fatalf("%s: QoS 0 between clean sessions: %v %v", when, p, err)
		}
		csub.disconnect()
		cpub.disconnect()
		// A message that needs the store is refused: PUBACK 0x97. A write
		// that gets through (Pebble freed a file since the store was seen
		// down: its probe says so a moment later) is acknowledged: the
		// store has it. Such a moment is rare: a few tries see a refusal.
		rp := mustDial(t, b.addr, packets.V5, &packets.Connect{ClientID: "fd-rpub", CleanStart: true}, 0)
		for try := 1; ; try++ {
			code, err := rp.publish1(uint16(try), fmt.Sprintf("fdret/refused%d", try), filler, true)
			if err == nil && code == packets.QuotaExceeded {
				break
			}
			if err != nil || code.IsError() || try == 5 {
				t.Fatalf("%s: retained PUBLISH: PUBACK %v %v, want 0x97", when, code, err)
			}
			t.Logf("%s: a retained PUBLISH was stored (PUBACK %v): the disk took a write; again once the store is down", when, code)
			waitDown()
		}
		rp.disconnect()
		// A persistent session is refused [MQTT-3.2.2-6].
		c, ack, err := dial(b.addr, packets.V5, persistentConnect(packets.V5, "fd-late", true))
		if err != nil || ack.ReasonCode != packets.ServerUnavailable {
			t.Fatalf("%s: persistent CONNECT: %v %v", when, ack, err)
		}
		c.close()
	}
	checkDegraded("disk full")

	// SIGKILL while full, and a restart while still full.
	b.kill()
	pub.close()
	b.checkLog(true)
	b.start()
	checkDegraded("restarted on a full disk")

	// Space returns: writes resume by themselves.
	remount(t, mnt, "64m")
	grown := time.Now()
	for {
		code, _, err := adm.readyz()
		if err != nil {
			t.Fatal(err)
		}
		if code == http.StatusOK {
			break
		}
		if time.Since(grown) > wait {
			t.Fatalf("writes did not resume within %v of the disk growing:\n%s", wait, b.logTail())
		}
		time.Sleep(10 * time.Millisecond) // polling /readyz: the broker has nothing to wait on
	}
	resumed := time.Since(grown)
	t.Logf("%s: writes resumed %v after the disk grew", mode, resumed.Round(time.Millisecond))

	// Nothing acknowledged was lost (sync).
	var lost []string
	retained := make(map[string]bool)
	for page := 1; ; page++ {
		var p struct {
			Data []struct {
				Topic string `json:"topic"`
			} `json:"data"`
			Meta struct {
				HasNext bool `json:"hasnext"`
			} `json:"meta"`
		}
		if code, body, err := adm.get(fmt.Sprintf("/api/v1/retained?filter=fdret/%%23&limit=1000&page=%d", page), &p); err != nil || code != 200 {
			t.Fatalf("listing retained: %d %s %v", code, body, err)
		}
		for _, r := range p.Data {
			retained[r.Topic] = true
		}
		if !p.Meta.HasNext {
			break
		}
	}
	rcv := newReceiver("fd-sub")
	sub = mustDial(t, b.addr, packets.V5, persistentConnect(packets.V5, "fd-sub", false), 1)
	errc := make(chan error, 1)
	go func() { errc <- rcv.run(sub) }()
	if err := adm.drained("fd-sub", errc); err != nil {
		t.Fatal(err)
	}
	sub.close()
	for k := range acked {
		if strings.HasPrefix(k, "fdret/") {
			if !retained[k] {
				lost = append(lost, "retained "+k)
			}
		} else if rcv.count(k) == 0 {
			lost = append(lost, "queued "+k[:7])
		}
	}
	b.kill()
	b.checkLog(true)
	t.Logf("%s: %d acknowledged before the disk filled, %d lost", mode, len(acked), len(lost))
	if mode == "sync" && len(lost) > 0 {
		t.Errorf("%d acknowledged messages lost: %s", len(lost), list(lost))
	}
}
