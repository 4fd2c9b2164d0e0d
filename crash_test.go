package tern_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/listeners"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/storage/pebble"
)

// The crash test runs the broker as a child process on a Pebble store,
// publishes QoS 1 and 2 messages to it from several clients, kills it with
// SIGKILL at a random moment, restarts it on the same store and checks that
// no acknowledged message was lost and no QoS 2 message was delivered
// twice [MQTT-4.3.2-*], [MQTT-4.3.3-*], [MQTT-4.1.0-1].

const (
	crashRounds     = 5                // kills per protocol version (TERN_CRASH_ROUNDS overrides it)
	crashPublishers = 4                // publishing clients
	crashWindow     = 20               // packet ids a publisher has in use at most
	crashSubID      = "crash-sub"      // the persistent subscriber
	crashWait       = 30 * time.Second // bound for any single wait
	crashQuiet      = 2 * time.Second  // the final drain ends after this long without a message
	crashMinKill    = 100 * time.Millisecond
	crashMaxKill    = 600 * time.Millisecond
)

// TestCrashChild is the broker process of TestCrash; it does nothing unless
// TestCrash started it. It serves on TERN_CRASH_ADDR with a Pebble store in
// TERN_CRASH_DIR, prints READY once the listener is bound and runs until it
// is killed (or its standard input closes: the parent is gone).
func TestCrashChild(t *testing.T) {
	if os.Getenv("TERN_CRASH_CHILD") != "1" {
		t.Skip("the broker process of TestCrash")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "crash child: %s: %v\n", what, err)
		os.Exit(3)
	}
	st, err := pebble.Open(os.Getenv("TERN_CRASH_DIR"), pebble.Options{
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		fail("open store", err)
	}
	srv, err := tern.New(&tern.Options{Store: st, Durability: tern.DurabilitySync, SysInterval: -1, Logger: log})
	if err != nil {
		fail("new server", err)
	}
	// The port was the previous broker's a moment ago: retry briefly.
	l := listeners.NewTCP("tcp", os.Getenv("TERN_CRASH_ADDR"))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := l.Listen()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			fail("listen", err)
		}
	}
	if err := srv.AddListener(l); err != nil {
		fail("add listener", err)
	}
	if err := srv.Serve(); err != nil {
		fail("serve", err)
	}
	fmt.Println("READY")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(4) // the parent went away without killing us
}

// TestCrash: see the comment at the top of the file. The kill moments come
// from a fixed seed (TERN_CRASH_SEED overrides it); the interleaving of
// the clients does not, so every run explores different crash points.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: runs a broker process and kills it; skipped with -short")
	}
	if os.Getenv("TERN_CRASH_CHILD") != "" {
		t.Skip("inside the child")
	}
	seed := uint64(20240601)
	if s := os.Getenv("TERN_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TERN_CRASH_SEED: %v", err)
		}
		seed = v
	}
	rounds := crashRounds
	if s := os.Getenv("TERN_CRASH_ROUNDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("TERN_CRASH_ROUNDS: %q", s)
		}
		rounds = v
	}
	t.Logf("seed %d (set TERN_CRASH_SEED to change it), %d rounds", seed, rounds)
	for _, v := range []struct {
		name    string
		version byte
	}{{"v5", packets.V5}, {"v311", packets.V311}} {
		t.Run(v.name, func(t *testing.T) { runCrash(t, v.version, seed+uint64(v.version), rounds) })
	}
}

func runCrash(t *testing.T, version byte, seed uint64, rounds int) {
	start := time.Now()
	rng := rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "store")
	addr := crashFreeAddr(t)
	led := &crashLedger{acked: make(map[string]int)}
	sub := &crashSub{version: version, pending: make(map[uint16]bool), got: make(map[string]int)}
	stats := make([]crashRoundStats, rounds+1)
	killedOutstanding := 0

	for round := 0; round <= rounds; round++ {
		st := &stats[round]
		sub.round = round
		child := startCrashChild(t, dir, addr, filepath.Join(tmp, fmt.Sprintf("broker-%d.log", round)))
		nc, present, err := sub.connect(addr, round == 0)
		if err != nil {
			child.fail(t, fmt.Sprintf("round %d: subscriber connect", round), err)
		}
		if round > 0 && !present {
			child.fail(t, fmt.Sprintf("round %d: subscriber session not present after restart", round), nil)
		}
		if round == 0 {
			if err := sub.subscribe(nc); err != nil {
				child.fail(t, "subscribe", err)
			}
		}

		if round == rounds { // after the last restart: drain what is left
			before := sub.counted.Load()
			err := sub.run(nc, crashQuiet, time.Minute)
			if err != nil && !isTimeout(err) {
				child.fail(t, "final drain", err)
			}
			st.received = int(sub.counted.Load() - before)
			nc.Close()
			child.kill(t)
			child.checkLog(t)
			break
		}

		subDone := make(chan error, 1)
		before := sub.counted.Load()
		go func() { subDone <- sub.run(nc, 0, 5*time.Minute) }()
		var pubs sync.WaitGroup
		for p := range crashPublishers {
			pubs.Add(1)
			go func() {
				defer pubs.Done()
				led.publish(addr, version, p, round)
			}()
		}
		killAt := crashMinKill + time.Duration(rng.Int64N(int64(crashMaxKill-crashMinKill)))
		if round%2 == 1 {
			// The subscriber drops its connection under load and comes
			// back at once: the broker is killed soon after resending
			// what was inflight on a live session.
			drop := killAt / time.Duration(2+rng.IntN(3))
			time.Sleep(drop)
			nc.Close()
			select {
			case <-subDone:
			case <-time.After(crashWait):
				t.Fatalf("round %d: subscriber did not stop", round)
			}
			var present bool
			var err error
			if nc, present, err = sub.connect(addr, false); err != nil || !present {
				child.fail(t, fmt.Sprintf("round %d: subscriber reconnect under load (session present %v)", round, present), err)
			}
			st.subDrop = drop
			go func() { subDone <- sub.run(nc, 0, 5*time.Minute) }()
			time.Sleep(killAt - drop)
		} else {
			time.Sleep(killAt)
		}
		sent, acked := led.sent.Load(), led.ackedN.Load()
		if child.exitedEarly() {
			child.fail(t, fmt.Sprintf("round %d: broker exited before the kill", round), nil)
		}
		child.kill(t)
		st.killAt, st.outstanding = killAt, int(sent-acked)
		if st.outstanding > 0 {
			killedOutstanding++
		}
		if !crashWaitGroup(&pubs, crashWait) {
			t.Fatalf("round %d: publishers did not stop after the kill", round)
		}
		select {
		case <-subDone:
		case <-time.After(crashWait):
			nc.Close()
			t.Fatalf("round %d: subscriber did not notice the kill", round)
		}
		nc.Close()
		child.checkLog(t)
		st.published, st.acked = int(led.sent.Swap(0)), int(led.ackedN.Swap(0))
		st.refused = int(led.refused.Swap(0))
		st.received = int(sub.counted.Load() - before)
		if led.connectErr != nil {
			t.Fatalf("round %d: a publisher could not connect: %v", round, led.connectErr)
		}
	}

	// Verdict.
	total := crashRoundStats{}
	for r, st := range stats {
		drop := ""
		if st.subDrop > 0 {
			drop = fmt.Sprintf(" (subscriber reconnected at %v)", st.subDrop.Round(time.Millisecond))
		}
		t.Logf("round %d: kill at %v%s with %d unacknowledged; published %d, acknowledged %d, refused %d; subscriber counted %d",
			r, st.killAt.Round(time.Millisecond), drop, st.outstanding, st.published, st.acked, st.refused, st.received)
		total.published += st.published
		total.acked += st.acked
		total.received += st.received
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	var missing []string
	for payload, round := range led.acked {
		if sub.got[payload] == 0 {
			missing = append(missing, fmt.Sprintf("%s (acknowledged in round %d)", payload, round))
		}
	}
	slices.Sort(missing)
	unique, unacked := len(sub.got), 0
	for payload := range sub.got {
		if _, ok := led.acked[payload]; !ok {
			unacked++
		}
	}
	t.Logf("total: published %d, acknowledged %d, subscriber counted %d (%d distinct, %d of them never acknowledged), "+
		"QoS 1 duplicates %d, PUBLISH packets read %d, %d rounds killed with messages unacknowledged; %v",
		total.published, total.acked, total.received, unique, unacked, sub.qos1Dups, sub.reads,
		killedOutstanding, time.Since(start).Round(time.Millisecond))
	if len(missing) > 0 {
		t.Errorf("%d acknowledged messages never reached the subscriber: %s", len(missing), crashList(missing))
	}
	if len(sub.qos2Dups) > 0 {
		t.Errorf("%d QoS 2 messages delivered twice: %s", len(sub.qos2Dups), crashList(sub.qos2Dups))
	}
	if len(sub.bad) > 0 {
		t.Errorf("%d unexpected deliveries: %s", len(sub.bad), crashList(sub.bad))
	}
	if total.acked < 500 {
		t.Errorf("only %d messages acknowledged in all rounds: the test proves little", total.acked)
	}
	if killedOutstanding == 0 {
		t.Errorf("no kill happened while messages were unacknowledged: the test proves little")
	}
}

type crashRoundStats struct {
	killAt, subDrop                     time.Duration
	outstanding                         int
	published, acked, refused, received int
}

func crashList(s []string) string {
	const show = 30
	if len(s) > show {
		return strings.Join(s[:show], ", ") + fmt.Sprintf(", … (%d more)", len(s)-show)
	}
	return strings.Join(s, ", ")
}

func crashFreeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func crashWaitGroup(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// crashChild is one run of the broker process.
type crashChild struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	exited  chan struct{}
	logPath string
}

// readyWriter is the child's standard output: it signals the READY line.
type readyWriter struct {
	mu    sync.Mutex
	buf   []byte
	ready chan struct{}
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ready != nil {
		w.buf = append(w.buf, p...)
		if bytes.Contains(w.buf, []byte("READY\n")) {
			close(w.ready)
			w.ready, w.buf = nil, nil
		}
	}
	return len(p), nil
}

func startCrashChild(t *testing.T, dir, addr, logPath string) *crashChild {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), "TERN_CRASH_CHILD=1", "TERN_CRASH_DIR="+dir, "TERN_CRASH_ADDR="+addr)
	ready := make(chan struct{})
	cmd.Stdout = &readyWriter{ready: ready}
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start broker process: %v", err)
	}
	c := &crashChild{cmd: cmd, stdin: stdin, exited: make(chan struct{}), logPath: logPath}
	go func() { cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() { c.cmd.Process.Kill(); <-c.exited })
	select {
	case <-ready:
	case <-c.exited:
		c.fail(t, "broker process exited before READY", cmd.ProcessState)
	case <-time.After(crashWait):
		c.fail(t, "broker process not READY in time", nil)
	}
	return c
}

func (c *crashChild) exitedEarly() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *crashChild) kill(t *testing.T) {
	c.cmd.Process.Kill()
	select {
	case <-c.exited:
	case <-time.After(crashWait):
		t.Fatal("broker process did not exit after SIGKILL")
	}
	c.stdin.Close()
}

func (c *crashChild) logText() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

// checkLog fails the test on a data race or panic in the broker process
// and logs what it restored.
func (c *crashChild) checkLog(t *testing.T) {
	t.Helper()
	text := c.logText()
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "restored state") {
			t.Logf("broker: %s", line)
		}
	}
	for _, bad := range []string{"DATA RACE", "panic:", "fatal error:", "level=ERROR"} {
		if strings.Contains(text, bad) {
			t.Errorf("broker log (%s) shows %q:\n%s", c.logPath, bad, crashTail(text, 8000))
			return
		}
	}
}

func (c *crashChild) fail(t *testing.T, what string, detail any) {
	t.Helper()
	c.cmd.Process.Kill()
	<-c.exited
	t.Fatalf("%s: %v\nbroker log:\n%s", what, detail, crashTail(c.logText(), 8000))
}

func crashTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// crashLedger records what the publishers sent and what the broker
// acknowledged.
type crashLedger struct {
	sent    atomic.Int64
	ackedN  atomic.Int64
	refused atomic.Int64

	mu         sync.Mutex
	acked      map[string]int // payload → round it was acknowledged in
	connectErr error
}

func (l *crashLedger) ack(payload string, round int) {
	l.mu.Lock()
	l.acked[payload] = round
	l.mu.Unlock()
	l.ackedN.Add(1)
}

// publish runs one publisher until its connection dies: QoS 1 and QoS 2
// messages alternately, with up to crashWindow packet ids in use. A
// message counts as acknowledged on its PUBACK or PUBREC; the QoS 2
// exchange is completed with PUBREL, but an unfinished one is abandoned
// (the next round connects with a clean start).
func (l *crashLedger) publish(addr string, version byte, pub, round int) {
	nc, err := net.DialTimeout("tcp", addr, crashWait)
	if err == nil {
		err = crashHandshake(nc, version, &packets.Connect{ClientID: fmt.Sprintf("crash-pub-%d", pub), CleanStart: true, KeepAlive: 60})
	}
	if err != nil {
		l.mu.Lock()
		l.connectErr = err
		l.mu.Unlock()
		if nc != nil {
			nc.Close()
		}
		return
	}
	defer nc.Close()
	br, bw := bufio.NewReader(nc), bufio.NewWriter(nc)
	ids := make(chan uint16, crashWindow)
	for id := range uint16(crashWindow) {
		ids <- id + 1
	}
	var mu sync.Mutex // guards bw and inflight
	inflight := make(map[uint16]string)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer nc.Close()
		for {
			nc.SetReadDeadline(time.Now().Add(crashWait))
			pk, err := packets.ReadPacket(br, version, 0)
			if err != nil {
				return
			}
			switch p := pk.(type) {
			case *packets.Puback:
				mu.Lock()
				payload := inflight[p.PacketID]
				delete(inflight, p.PacketID)
				mu.Unlock()
				if p.ReasonCode.IsError() {
					l.refused.Add(1)
				} else {
					l.ack(payload, round)
				}
				ids <- p.PacketID
			case *packets.Pubrec:
				mu.Lock()
				payload := inflight[p.PacketID]
				delete(inflight, p.PacketID)
				var werr error
				if !p.ReasonCode.IsError() {
					werr = crashWrite(bw, nc, &packets.Pubrel{PacketID: p.PacketID}, version, br.Buffered() == 0)
				}
				mu.Unlock()
				if p.ReasonCode.IsError() {
					l.refused.Add(1)
					ids <- p.PacketID // an error PUBREC ends the exchange
				} else {
					l.ack(payload, round)
				}
				if werr != nil {
					return
				}
			case *packets.Pubcomp:
				ids <- p.PacketID
			default:
				return // DISCONNECT or something unexpected: stop
			}
		}
	}()
	for seq := 1; ; seq++ {
		var id uint16
		select {
		case id = <-ids:
		case <-done:
			return
		default:
			mu.Lock()
			err := crashFlush(bw, nc)
			mu.Unlock()
			if err != nil {
				nc.Close()
				<-done
				return
			}
			select {
			case id = <-ids:
			case <-done:
				return
			}
		}
		qos := byte(1 + seq%2)
		payload := fmt.Sprintf("q%d/r%d/p%d/%d", qos, round, pub, seq)
		mu.Lock()
		inflight[id] = payload
		err := crashWrite(bw, nc, &packets.Publish{Topic: fmt.Sprintf("crash/p%d/q%d", pub, qos), QoS: qos,
			PacketID: id, Payload: []byte(payload)}, version, false)
		mu.Unlock()
		l.sent.Add(1)
		if err != nil {
			nc.Close()
			<-done
			return
		}
	}
}

// crashWrite encodes a packet into bw, flushing it when flush is set.
func crashWrite(bw *bufio.Writer, nc net.Conn, pk packets.Packet, version byte, flush bool) error {
	b, err := pk.Encode(nil, version)
	if err != nil {
		return err
	}
	nc.SetWriteDeadline(time.Now().Add(crashWait))
	if _, err := bw.Write(b); err != nil {
		return err
	}
	if flush {
		return bw.Flush()
	}
	return nil
}

func crashFlush(bw *bufio.Writer, nc net.Conn) error {
	nc.SetWriteDeadline(time.Now().Add(crashWait))
	return bw.Flush()
}

// crashHandshake sends CONNECT and checks the CONNACK.
func crashHandshake(nc net.Conn, version byte, pk *packets.Connect) error {
	_, err := crashHandshakeAck(nc, bufio.NewReader(nc), version, pk)
	return err
}

func crashHandshakeAck(nc net.Conn, br *bufio.Reader, version byte, pk *packets.Connect) (*packets.Connack, error) {
	pk.ProtocolVersion = version
	b, err := pk.Encode(nil, version)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(crashWait))
	defer nc.SetDeadline(time.Time{})
	if _, err := nc.Write(b); err != nil {
		return nil, err
	}
	got, err := packets.ReadPacket(br, version, 0)
	if err != nil {
		return nil, err
	}
	ack, ok := got.(*packets.Connack)
	if !ok {
		return nil, fmt.Errorf("expected CONNACK, got %s", got.Type())
	}
	if ack.ReasonCode != packets.Success {
		return nil, fmt.Errorf("CONNECT refused: %v", ack.ReasonCode)
	}
	return ack, nil
}

// crashSub is the persistent subscriber. It is a receiver that does QoS 2
// exactly as the specification describes (method B, [MQTT-4.3.3-9]): a
// QoS 2 PUBLISH whose packet id it already holds is a resend and is not
// counted. Its state (pending ids, what it received) outlives connections
// and broker crashes, as a real client's would.
type crashSub struct {
	version byte
	round   int // set between rounds
	counted atomic.Int64

	mu       sync.Mutex
	br       *bufio.Reader
	pending  map[uint16]bool // QoS 2 ids received (PUBREC sent), not yet released
	got      map[string]int  // payload → times counted
	reads    int             // PUBLISH packets read, resends included
	qos1Dups int
	qos2Dups []string
	bad      []string
}

// connect connects the subscriber; clean starts a fresh session.
func (s *crashSub) connect(addr string, clean bool) (net.Conn, bool, error) {
	var nc net.Conn
	var err error
	for deadline := time.Now().Add(crashWait); ; {
		nc, err = net.DialTimeout("tcp", addr, crashWait)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, false, err
	}
	pk := &packets.Connect{ClientID: crashSubID, KeepAlive: 60}
	if s.version == packets.V5 {
		pk.CleanStart = clean
		pk.Properties.SessionExpiry = packets.Uint32(3600)
	} // 3.1.1: clean session 0 from the start, on an empty store
	s.br = bufio.NewReader(nc)
	ack, err := crashHandshakeAck(nc, s.br, s.version, pk)
	if err != nil {
		nc.Close()
		return nil, false, err
	}
	return nc, ack.SessionPresent, nil
}

func (s *crashSub) subscribe(nc net.Conn) error {
	b, _ := (&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: "crash/#", QoS: 2}}}).Encode(nil, s.version)
	nc.SetDeadline(time.Now().Add(crashWait))
	defer nc.SetDeadline(time.Time{})
	if _, err := nc.Write(b); err != nil {
		return err
	}
	pk, err := packets.ReadPacket(s.br, s.version, 0)
	if err != nil {
		return err
	}
	ack, ok := pk.(*packets.Suback)
	if !ok || len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] != 2 {
		return fmt.Errorf("unexpected SUBACK %+v", pk)
	}
	return nil
}

// run receives until the connection fails, or, with quiet > 0, until no
// packet came for quiet; limit bounds the whole run.
func (s *crashSub) run(nc net.Conn, quiet, limit time.Duration) error {
	end := time.Now().Add(limit)
	bw := bufio.NewWriter(nc)
	for {
		deadline := end
		if q := time.Now().Add(quiet); quiet > 0 && q.Before(end) {
			deadline = q
		}
		nc.SetReadDeadline(deadline)
		pk, err := packets.ReadPacket(s.br, s.version, 0)
		if err != nil {
			return err
		}
		var reply packets.Packet
		switch p := pk.(type) {
		case *packets.Publish:
			reply = s.received(p)
		case *packets.Pubrel:
			s.mu.Lock()
			delete(s.pending, p.PacketID)
			s.mu.Unlock()
			reply = &packets.Pubcomp{PacketID: p.PacketID}
		case *packets.Pingresp:
		default:
			return fmt.Errorf("subscriber got unexpected %s", pk.Type())
		}
		if reply != nil {
			if err := crashWrite(bw, nc, reply, s.version, s.br.Buffered() == 0); err != nil {
				return err
			}
		}
	}
}

// received handles a PUBLISH and returns the acknowledgement to send.
func (s *crashSub) received(p *packets.Publish) packets.Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	payload := string(p.Payload)
	if !strings.HasPrefix(payload, fmt.Sprintf("q%d/", p.QoS)) {
		s.bad = append(s.bad, fmt.Sprintf("%q at QoS %d (round %d)", payload, p.QoS, s.round))
	}
	count := func() {
		s.got[payload]++
		s.counted.Add(1)
		if s.got[payload] > 1 {
			if p.QoS == 2 {
				s.qos2Dups = append(s.qos2Dups, fmt.Sprintf("%s (again in round %d, packet id %d, dup %v)",
					payload, s.round, p.PacketID, p.Dup))
			} else {
				s.qos1Dups++
			}
		}
	}
	switch p.QoS {
	case 1:
		count()
		return &packets.Puback{PacketID: p.PacketID}
	case 2:
		if !s.pending[p.PacketID] {
			count()
			s.pending[p.PacketID] = true
		}
		return &packets.Pubrec{PacketID: p.PacketID}
	}
	s.bad = append(s.bad, fmt.Sprintf("%q at QoS 0 (round %d)", payload, s.round))
	return nil
}
