package bridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/testbin"
	"github.com/ternmq/tern/terntest"
)

// Tests with real "tern serve" processes, killed with SIGKILL. They run
// unless -short; TERN_SOAK=1 runs them at the sizes of issue 17's
// acceptance (100,000 messages, 5 s outage, 20,000 and 10,000 waiting).

func soak() bool { return os.Getenv("TERN_SOAK") != "" }

// ternBinary builds cmd/tern once for the test binary's run.
func ternBinary(t testing.TB) string { return testbin.Tern(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

func freePort(t testing.TB) string { return terntest.FreeAddr(t) }

// ternProc is a tern serve process that a test kills and starts again.
type ternProc struct {
	t      testing.TB
	name   string
	args   []string
	addr   string // MQTT
	admin  string // admin API, or ""
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has ended
	logs   *bytes.Buffer
	mu     sync.Mutex
}

// startTern starts tern serve with a configuration file holding yaml,
// listening on addr, its store in dir.
func startTern(t testing.TB, name, yaml string, args ...string) *ternProc {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tern.yaml")
	addr, admin := freePort(t), freePort(t)
	text := fmt.Sprintf("node_id: %s\nlisteners:\n  tcp: [%s]\nadmin:\n  listen: %s\nsys_interval: 0\nlog:\n  level: warn\n"+
		"persistence:\n  data_dir: %s\n", name, addr, admin, filepath.Join(dir, "data")) + yaml
	writeTestFile(t, cfg, text)
	p := &ternProc{t: t, name: name, args: append([]string{"serve", "-c", cfg}, args...), addr: addr, admin: admin}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *ternProc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cmd = exec.Command(ternBinary(p.t), p.args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TERN_") { // tern serve refuses variables it does not know (TERN_SOAK)
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.logs = new(bytes.Buffer)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	exited := make(chan struct{})
	p.exited = exited
	cmd := p.cmd
	go func() {
		cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			p.t.Fatalf("%s exited:\n%s", p.name, p.logs)
		default:
		}
		if nc, err := net.DialTimeout("tcp", p.addr, 100*time.Millisecond); err == nil {
			nc.Close()
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not start:\n%s", p.name, p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to end.
func (p *ternProc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// get returns the body of an admin API request.
func (p *ternProc) get(path string) string {
	resp, err := http.Get("http://" + p.admin + path)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// bridges returns the bridges' status from the admin API.
func (p *ternProc) bridges() map[string]Status {
	resp, err := http.Get("http://" + p.admin + "/api/v1/bridges")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var page struct {
		Data []Status `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&page)
	out := make(map[string]Status)
	for _, s := range page.Data {
		out[s.Name] = s
	}
	return out
}

func (p *ternProc) waitBridge(t testing.TB, name string, cond func(Status) bool, what string, within time.Duration) Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, ok := p.bridges()[name]
		if ok && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %+v\n%s", within, what, st, p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func bridgeYAML(remote string, extra string) string {
	return "bridges:\n  - name: up\n    addresses: [" + remote + "]\n    max_inflight: 100\n" +
		"    reconnect: {min: 100ms, max: 1s}\n    connect_timeout: 2s\n" + extra +
		"    topics: [\"data/# out 1\", \"cmd/# in 1\"]\n"
}

// A's bridge sends numbered messages to B at about 5,000/s; B (sync
// durability, a persistent subscriber) is killed with SIGKILL at 30 % and
// started again after the outage. At QoS 1 every message arrives, and the
// bridge sends again at most its inflight window (100); the subscriber's
// duplicates also include what B resends to it after its restart;
// at QoS 2 every message arrives exactly once.
func TestProcessRemoteKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("kills tern serve processes; skipped with -short")
	}
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("QoS %d", qos), func(t *testing.T) { remoteKilled(t, qos) })
	}
}

func remoteKilled(t *testing.T, qos byte) {
	n, outage := 20_000, 2*time.Second
	if qos == 2 {
		n = 10_000
	}
	if soak() {
		n, outage = 100_000, 5*time.Second
	}
	// Durability sync (the default); the subscriber's queue does not
	// drop while it catches up after the restart.
	b := startTern(t, "B", "limits:\n  max_queued_messages: 0\n")
	a := startTern(t, "A", strings.ReplaceAll(bridgeYAML(b.addr, ""), " 1\"", fmt.Sprintf(" %d\"", qos)))
	a.waitBridge(t, "up", func(s Status) bool { return s.State == StateConnected }, "the bridge to connect", 10*time.Second)
	sub := newCounterQoS(t, func() string { return b.addr }, "sub", "data/#", qos)
	start := time.Now()
	restarted := make(chan struct{})
	publishNumberedQoS(t, a.addr, "data/n", qos, n, 5000, func(i int) {
		if i == n*3/10 {
			b.kill()
			go func() {
				time.Sleep(outage)
				b.start()
				close(restarted)
			}()
		}
	})
	pubTime := time.Since(start)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A's bridge: %+v", a.bridges()["up"])
			t.Logf("B's sessions: %s", b.get("/api/v1/sessions"))
			t.Logf("B's log:\n%s", b.logs)
			t.Logf("A's log:\n%s", a.logs)
		}
	})
	dups := sub.waitAll(t, n, 60*time.Second)
	<-restarted
	st := a.waitBridge(t, "up", func(s Status) bool { return s.Queued == 0 && s.Inflight == 0 }, "the bridge's queue to empty", 10*time.Second)
	t.Logf("QoS %d: %d messages published in %v; B killed at 30%% and restarted after %v: all arrived, %d duplicates; bridge: sent %d, reconnects %d",
		qos, n, pubTime.Round(time.Millisecond), outage, dups, st.Sent, st.Reconnects)
	// What the bridge sent twice is at most its window; the subscriber
	// also gets again what B had not recorded as acknowledged when it was
	// killed (its window, and acknowledgements not yet committed).
	if resent := st.Sent - int64(n); resent > 100 {
		t.Errorf("the bridge resent %d messages after one outage, more than its window of 100", resent)
	}
	switch {
	case qos == 1 && dups > 1000:
		t.Errorf("%d duplicates", dups)
	case qos == 2 && dups > 0:
		t.Errorf("QoS 2: %d duplicates", dups)
	}
}

// A (the bridging broker) is killed with SIGKILL while messages wait in its
// bridge's queue for a remote that is down; after A and B start again they
// all arrive. Then messages published on B while A is down reach A's
// subscriber once A is back (the bridge's persistent session on B).
func TestProcessLocalKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("kills tern serve processes; skipped with -short")
	}
	queued, ingress := 5_000, 2_000
	if soak() {
		queued, ingress = 20_000, 10_000
	}
	b := startTern(t, "B", "") // durability sync, the default
	a := startTern(t, "A", bridgeYAML(b.addr, ""))
	a.waitBridge(t, "up", func(s Status) bool { return s.State == StateConnected }, "the bridge to connect", 10*time.Second)
	sub := newCounter(t, func() string { return b.addr }, "sub", "data/#")
	b.kill()
	publishNumbered(t, a.addr, "data/n", queued, 0, nil)
	a.waitBridge(t, "up", func(s Status) bool { return s.Queued+s.Inflight == queued }, "the messages to wait in the queue", 10*time.Second)
	a.kill()
	a.start()
	st := a.bridges()["up"]
	t.Logf("after A's restart: queued %d, inflight %d", st.Queued, st.Inflight)
	b.start()
	dups := sub.waitAll(t, queued, 60*time.Second)
	t.Logf("%d messages queued when A was killed: all arrived, %d duplicates", queued, dups)

	// Ingress while A is down.
	a.waitBridge(t, "up", func(s Status) bool { return s.State == StateConnected }, "the bridge to reconnect", 10*time.Second)
	cmds := newCounter(t, func() string { return a.addr }, "cmdsub", "cmd/#")
	a.kill()
	publishNumbered(t, b.addr, "cmd/n", ingress, 0, nil)
	a.start()
	dups = cmds.waitAll(t, ingress, 60*time.Second)
	t.Logf("%d messages published on B while A was down: all arrived, %d duplicates", ingress, dups)
}
