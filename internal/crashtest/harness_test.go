package crashtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/testbin"
	"github.com/ternmq/tern/packets"
	"github.com/ternmq/tern/terntest"
)

// wait bounds every single wait of these tests: a broker that does not
// answer within it is broken, not slow.
const wait = 30 * time.Second

// envInt reads a positive integer from the environment, or returns def
// (soak when TERN_SOAK=1).
func envInt(t testing.TB, name string, def, soak int) int {
	s := os.Getenv(name)
	if s == "" {
		if os.Getenv("TERN_SOAK") == "1" {
			return soak
		}
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		t.Fatalf("%s: %q is not a positive integer", name, s)
	}
	return v
}

func seed(t testing.TB) uint64 {
	if s := os.Getenv("TERN_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TERN_CRASH_SEED: %v", err)
		}
		return v
	}
	return 20260112
}

// skipUnlessLong skips the crash tests under -short: they run broker
// processes.
func skipUnlessLong(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("crash tests run and kill broker processes; skipped with -short")
	}
	if runtime.GOOS == "windows" {
		t.Skip("crash tests need SIGKILL")
	}
}

// ternBinary builds cmd/tern once per test process (with -race under
// TERN_CRASH_RACE=1: checkLog fails on "DATA RACE") and returns its path.
func ternBinary(t testing.TB) string { return testbin.Tern(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t testing.TB) string { return terntest.FreeAddr(t) }

// broker runs `tern serve` as a child process, again and again on the same
// data directory and ports.
type broker struct {
	t          testing.TB
	dataDir    string
	logDir     string
	durability string
	syncEvery  time.Duration
	extra      []string

	addr  string // MQTT
	admin string // HTTP admin API

	runs   int
	cmd    *exec.Cmd
	exited chan struct{}
	log    string // the current run's log file
}

func newBroker(t testing.TB, durability string, dataDir string) *broker {
	t.Helper()
	logDir := t.TempDir()
	if dataDir == "" {
		dataDir = filepath.Join(t.TempDir(), "data")
	}
	b := &broker{t: t, dataDir: dataDir, logDir: logDir, durability: durability, syncEvery: time.Second,
		addr: freeAddr(t), admin: freeAddr(t)}
	t.Cleanup(func() {
		if t.Failed() && b.log != "" {
			t.Logf("last broker log (%s):\n%s", b.log, b.logTail())
		}
		if b.cmd != nil && !b.exitedNow() {
			b.cmd.Process.Kill()
			<-b.exited
		}
	})
	return b
}

// start starts the broker and returns once its listeners accept.
func (b *broker) start() {
	b.t.Helper()
	b.runs++
	b.log = filepath.Join(b.logDir, fmt.Sprintf("broker-%02d.log", b.runs))
	f, err := os.Create(b.log)
	if err != nil {
		b.t.Fatal(err)
	}
	args := []string{"serve", "--listen", b.addr, "--admin-listen", b.admin, "--durability", b.durability,
		"--data-dir", b.dataDir, "--sync-interval", b.syncEvery.String(), "--sys-interval", "0", "--log-level", "info",
		// Queues without a cap: an offline subscriber's queue full at the
		// default 10,000 drops (counted, as issue 11 wants), which these
		// tests would take for a loss.
		"--max-queued-messages", "0", "--max-queued-bytes", "0"}
	b.cmd = exec.Command(ternBinary(b.t), append(args, b.extra...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TERN_") { // tern serve reads (and checks) TERN_* as configuration
			b.cmd.Env = append(b.cmd.Env, kv)
		}
	}
	ready := make(chan struct{})
	b.cmd.Stderr = &markWriter{w: f, mark: []byte("msg=listening"), hit: ready} // logged once Serve runs
	b.cmd.Stdout = f
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start tern serve: %v", err)
	}
	b.exited = make(chan struct{})
	cmd, exited := b.cmd, b.exited
	go func() {
		cmd.Wait() // copies the last of the log into f
		f.Close()
		close(exited)
	}()
	select {
	case <-ready:
	case <-exited:
		b.t.Fatalf("tern serve exited at start (%v):\n%s", cmd.ProcessState, b.logTail())
	case <-time.After(wait):
		b.t.Fatalf("tern serve did not start in %v:\n%s", wait, b.logTail())
	}
}

func (b *broker) exitedNow() bool {
	select {
	case <-b.exited:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (b *broker) kill() {
	b.t.Helper()
	b.cmd.Process.Kill()
	select {
	case <-b.exited:
	case <-time.After(wait):
		b.t.Fatal("tern serve did not exit after SIGKILL")
	}
}

func (b *broker) logText() string {
	data, _ := os.ReadFile(b.log)
	return string(data)
}

func (b *broker) logTail() string {
	s := b.logText()
	if len(s) > 6000 {
		s = "…" + s[len(s)-6000:]
	}
	return s
}

// checkLog fails the test on a panic or runtime error in the broker's log,
// and on an ERROR line unless errorsOK.
func (b *broker) checkLog(errorsOK bool) {
	b.t.Helper()
	text := b.logText()
	bad := []string{"panic:", "fatal error:", "DATA RACE"}
	if !errorsOK {
		bad = append(bad, "level=ERROR")
	}
	for _, s := range bad {
		if strings.Contains(text, s) {
			b.t.Errorf("broker log %s shows %q:\n%s", b.log, s, b.logTail())
			return
		}
	}
}

// markWriter writes to w and closes hit the first time mark is written.
type markWriter struct {
	w    io.Writer
	mark []byte
	hit  chan struct{}

	mu   sync.Mutex
	tail []byte
}

func (m *markWriter) Write(p []byte) (int, error) {
	m.mu.Lock()
	if m.hit != nil {
		m.tail = append(m.tail, p...)
		if bytes.Contains(m.tail, m.mark) {
			close(m.hit)
			m.hit, m.tail = nil, nil
		} else if len(m.tail) > 4096 {
			m.tail = m.tail[len(m.tail)-len(m.mark):]
		}
	}
	m.mu.Unlock()
	return m.w.Write(p)
}

// conn is a raw MQTT client connection.
type conn struct {
	nc      net.Conn
	br      *bufio.Reader
	version byte

	wmu sync.Mutex
	bw  *bufio.Writer

	closedByTest atomic.Bool // close was called: errors that follow are expected
}

// dial connects and sends CONNECT; it returns the CONNACK whatever its
// reason code.
func dial(addr string, version byte, pk *packets.Connect) (*conn, *packets.Connack, error) {
	nc, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		return nil, nil, err
	}
	c := &conn{nc: nc, br: bufio.NewReader(nc), bw: bufio.NewWriter(nc), version: version}
	pk.ProtocolVersion = version
	if pk.KeepAlive == 0 {
		pk.KeepAlive = 120
	}
	if err := c.send(pk); err != nil {
		nc.Close()
		return nil, nil, err
	}
	p, err := c.recv()
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("waiting for CONNACK: %w", err)
	}
	ack, ok := p.(*packets.Connack)
	if !ok {
		nc.Close()
		return nil, nil, fmt.Errorf("expected CONNACK, got %s", p.Type())
	}
	return c, ack, nil
}

// mustDial connects and fails the test unless the CONNACK is a success
// with the session present flag expected (present < 0: either).
func mustDial(t testing.TB, addr string, version byte, pk *packets.Connect, present int) *conn {
	t.Helper()
	id := pk.ClientID
	c, ack, err := dial(addr, version, pk)
	if err != nil {
		t.Fatalf("%s: connect: %v", id, err)
	}
	if ack.ReasonCode.IsError() {
		t.Fatalf("%s: CONNACK %v", id, ack.ReasonCode)
	}
	if present >= 0 && ack.SessionPresent != (present == 1) {
		t.Fatalf("%s: CONNACK session present %v, want %v [MQTT-3.2.2-2], [MQTT-3.2.2-3]", id, ack.SessionPresent, present == 1)
	}
	return c
}

// persistentConnect returns the CONNECT of a persistent session: session
// expiry 3600 s in v5, clean session 0 in 3.1.1. fresh starts it clean.
func persistentConnect(version byte, id string, fresh bool) *packets.Connect {
	pk := &packets.Connect{ClientID: id}
	if version == packets.V5 {
		pk.CleanStart = fresh
		pk.Properties.SessionExpiry = packets.Uint32(3600)
	} else if fresh {
		// 3.1.1 has no clean start with a persistent session: end the old
		// one with a clean connection first.
		pk.CleanStart = false
	}
	return pk
}

func (c *conn) send(pk packets.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(pk, true)
}

// queue encodes a packet without flushing; flush sends what is queued.
func (c *conn) queue(pk packets.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(pk, false)
}

func (c *conn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(wait))
	return c.bw.Flush()
}

func (c *conn) writeLocked(pk packets.Packet, flush bool) error {
	b, err := pk.Encode(nil, c.version)
	if err != nil {
		return err
	}
	c.nc.SetWriteDeadline(time.Now().Add(wait))
	if _, err := c.bw.Write(b); err != nil {
		return err
	}
	if flush {
		return c.bw.Flush()
	}
	return nil
}

// recv reads the next packet, waiting at most wait.
func (c *conn) recv() (packets.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(wait))
	return packets.ReadPacket(c.br, c.version, 0)
}

func (c *conn) close() {
	c.closedByTest.Store(true)
	c.nc.Close()
}

// disconnect sends DISCONNECT (normal) and closes.
func (c *conn) disconnect() {
	c.send(&packets.Disconnect{})
	c.nc.Close()
}

// subscribe subscribes to the filters at QoS 2 and returns the SUBACK.
func (c *conn) subscribe(id uint16, filters ...string) (*packets.Suback, error) {
	return c.subscribeQoS(id, 2, filters...)
}

func (c *conn) subscribeQoS(id uint16, qos byte, filters ...string) (*packets.Suback, error) {
	pk := &packets.Subscribe{PacketID: id}
	for _, f := range filters {
		pk.Subscriptions = append(pk.Subscriptions, packets.Subscription{Filter: f, QoS: qos})
	}
	if err := c.send(pk); err != nil {
		return nil, err
	}
	p, err := c.recv()
	if err != nil {
		return nil, err
	}
	ack, ok := p.(*packets.Suback)
	if !ok || ack.PacketID != id {
		return nil, fmt.Errorf("expected SUBACK %d, got %s", id, p.Type())
	}
	return ack, nil
}

func mustSubscribe(t testing.TB, c *conn, id uint16, filters ...string) {
	t.Helper()
	mustSubscribeQoS(t, c, id, 2, filters...)
}

func mustSubscribeQoS(t testing.TB, c *conn, id uint16, qos byte, filters ...string) {
	t.Helper()
	ack, err := c.subscribeQoS(id, qos, filters...)
	if err != nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	for i, code := range ack.ReasonCodes {
		if code.IsError() {
			t.Fatalf("subscribe %s: %v", filters[i], code)
		}
	}
}

// publish1 publishes one QoS 1 message and waits for its PUBACK, whose
// reason code it returns.
func (c *conn) publish1(id uint16, topic string, payload []byte, retain bool) (packets.ReasonCode, error) {
	if err := c.send(&packets.Publish{QoS: 1, PacketID: id, Topic: topic, Payload: payload, Retain: retain}); err != nil {
		return 0, err
	}
	p, err := c.recv()
	if err != nil {
		return 0, err
	}
	ack, ok := p.(*packets.Puback)
	if !ok || ack.PacketID != id {
		return 0, fmt.Errorf("expected PUBACK %d, got %s", id, p.Type())
	}
	return ack.ReasonCode, nil
}

// publish2 runs a whole QoS 2 exchange (PUBLISH, PUBREC, PUBREL, PUBCOMP).
func (c *conn) publish2(id uint16, topic string, payload []byte) error {
	if err := c.send(&packets.Publish{QoS: 2, PacketID: id, Topic: topic, Payload: payload}); err != nil {
		return err
	}
	p, err := c.recv()
	if err != nil {
		return err
	}
	rec, ok := p.(*packets.Pubrec)
	if !ok || rec.PacketID != id || rec.ReasonCode.IsError() {
		return fmt.Errorf("expected PUBREC %d, got %v", id, p)
	}
	return c.release(id)
}

// release sends PUBREL and waits for PUBCOMP.
func (c *conn) release(id uint16) error {
	if err := c.send(&packets.Pubrel{PacketID: id}); err != nil {
		return err
	}
	p, err := c.recv()
	if err != nil {
		return err
	}
	if comp, ok := p.(*packets.Pubcomp); !ok || comp.PacketID != id {
		return fmt.Errorf("expected PUBCOMP %d, got %v", id, p)
	}
	return nil
}

// receiver is the receiving side of a subscriber that does QoS 2 as the
// specification's method B describes [MQTT-4.3.3-9]: a QoS 2 PUBLISH whose
// packet identifier it holds (PUBREC sent, PUBREL not yet received) is a
// resend and is not counted again. Its state outlives connections and
// broker crashes, as a real client's would.
type receiver struct {
	name string

	mu       sync.Mutex
	pending  map[uint16]bool
	got      map[string]int // payload → times counted
	order    []string       // payloads in the order counted
	qos2Dups []string
	qos1Dups int
	onMsg    func(payload string) // called for each counted message, without the lock
}

func newReceiver(name string) *receiver {
	return &receiver{name: name, pending: make(map[uint16]bool), got: make(map[string]int)}
}

// run reads from c and acknowledges until the connection fails.
func (r *receiver) run(c *conn) error {
	for {
		c.nc.SetReadDeadline(time.Time{})
		pk, err := packets.ReadPacket(c.br, c.version, 0)
		if err != nil {
			return err
		}
		if err := r.handle(c, pk); err != nil {
			return err
		}
		if c.br.Buffered() == 0 {
			if err := c.flush(); err != nil {
				return err
			}
		}
	}
}

// handle acknowledges one packet (queued, not flushed) and counts it.
func (r *receiver) handle(c *conn, pk packets.Packet) error {
	switch p := pk.(type) {
	case *packets.Publish:
		payload := string(p.Payload)
		counted := false
		r.mu.Lock()
		switch p.QoS {
		case 0, 1:
			counted = true
		case 2:
			if !r.pending[p.PacketID] {
				r.pending[p.PacketID] = true
				counted = true
			}
		}
		if counted {
			r.got[payload]++
			r.order = append(r.order, payload)
			if r.got[payload] > 1 {
				if p.QoS == 2 {
					r.qos2Dups = append(r.qos2Dups, fmt.Sprintf("%s (packet id %d, dup %v)", payload, p.PacketID, p.Dup))
				} else {
					r.qos1Dups++
				}
			}
		}
		on := r.onMsg
		r.mu.Unlock()
		switch p.QoS {
		case 1:
			if err := c.queue(&packets.Puback{PacketID: p.PacketID}); err != nil {
				return err
			}
		case 2:
			if err := c.queue(&packets.Pubrec{PacketID: p.PacketID}); err != nil {
				return err
			}
		}
		if counted && on != nil {
			on(payload)
		}
	case *packets.Pubrel:
		r.mu.Lock()
		delete(r.pending, p.PacketID)
		r.mu.Unlock()
		return c.queue(&packets.Pubcomp{PacketID: p.PacketID})
	case *packets.Pingresp:
	case *packets.Disconnect:
		return fmt.Errorf("%s: DISCONNECT %v", r.name, p.ReasonCode)
	default:
		return fmt.Errorf("%s: unexpected %s", r.name, pk.Type())
	}
	return nil
}

// until reads from c, acknowledging, until done reports true for a counted
// payload; it returns an error if the connection fails or wait passes.
func (r *receiver) until(c *conn, done func(payload string) bool) error {
	deadline := time.Now().Add(wait)
	for {
		c.nc.SetReadDeadline(deadline)
		pk, err := packets.ReadPacket(c.br, c.version, 0)
		if err != nil {
			return err
		}
		if err := r.handle(c, pk); err != nil {
			return err
		}
		if err := c.flush(); err != nil {
			return err
		}
		if p, ok := pk.(*packets.Publish); ok && done(string(p.Payload)) {
			return nil
		}
	}
}

func (r *receiver) count(payload string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[payload]
}

// adminClient talks to a broker's admin API.
type adminClient struct {
	base string
	http *http.Client
}

func newAdmin(addr string) *adminClient {
	return &adminClient{base: "http://" + addr, http: &http.Client{Timeout: wait}}
}

func (a *adminClient) get(path string, out any) (int, string, error) {
	resp, err := a.http.Get(a.base + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, string(body), fmt.Errorf("GET %s: %w", path, err)
		}
	}
	return resp.StatusCode, string(body), nil
}

// retained returns the payload of the retained message of topic, and
// whether there is one.
func (a *adminClient) retained(topic string) (string, bool, error) {
	var r struct {
		Payload *string `json:"payload"`
	}
	code, body, err := a.get("/api/v1/retained/"+topic, &r)
	switch {
	case err != nil:
		return "", false, err
	case code == http.StatusNotFound:
		return "", false, nil
	case code != http.StatusOK || r.Payload == nil:
		return "", false, fmt.Errorf("GET retained %s: %d %s", topic, code, body)
	}
	return *r.Payload, true, nil
}

// subscriptions returns the filters the client is subscribed to.
func (a *adminClient) subscriptions(clientID string) (map[string]bool, error) {
	var page struct {
		Data []struct {
			Topic string `json:"topic"`
		} `json:"data"`
	}
	code, body, err := a.get("/api/v1/subscriptions?limit=1000&client_id="+url.QueryEscape(clientID), &page)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET subscriptions: %d %s", code, body)
	}
	out := make(map[string]bool)
	for _, s := range page.Data {
		out[s.Topic] = true
	}
	return out, nil
}

// sessionInfo is a session as the admin API shows it.
type sessionInfo struct {
	Online   bool `json:"online"`
	Inflight int  `json:"inflight"`
	Queued   int  `json:"queued"`
}

func (a *adminClient) session(clientID string) (sessionInfo, bool, error) {
	var s sessionInfo
	code, body, err := a.get("/api/v1/sessions/"+url.PathEscape(clientID), &s)
	switch {
	case err != nil:
		return s, false, err
	case code == http.StatusNotFound:
		return s, false, nil
	case code != http.StatusOK:
		return s, false, fmt.Errorf("GET session %s: %d %s", clientID, code, body)
	}
	return s, true, nil
}

// drained waits until the online session of clientID has nothing queued or
// in flight: everything was delivered and acknowledged.
func (a *adminClient) drained(clientID string, errc <-chan error) error {
	deadline := time.Now().Add(2 * wait)
	for {
		s, ok, err := a.session(clientID)
		if err != nil {
			return err
		}
		if ok && s.Online && s.Queued == 0 && s.Inflight == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("session %s not drained: %+v (present %v)", clientID, s, ok)
		}
		select {
		case err := <-errc:
			return fmt.Errorf("%s stopped receiving: %v", clientID, err)
		case <-time.After(20 * time.Millisecond): // polling the admin API: there is no event to wait on
		}
	}
}

func (a *adminClient) readyz() (int, string, error) { return a.get("/readyz", nil) }

// list abbreviates a long list of strings for an error message.
func list(s []string) string {
	const show = 20
	if len(s) > show {
		return strings.Join(s[:show], ", ") + fmt.Sprintf(", … (%d more)", len(s)-show)
	}
	return strings.Join(s, ", ")
}
