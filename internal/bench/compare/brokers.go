package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// broker is one broker under comparison.
type broker struct {
	key     string // "tern", "mosquitto", "mochi"
	name    string // for the report
	version string
	// argv returns the command line that runs the broker on port for case c.
	argv func(port int, c *benchCase) ([]string, error)
}

// ternBroker returns the Tern broker built at bin.
func ternBroker(ctx context.Context, bin string) (*broker, error) {
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s version: %w", bin, err)
	}
	return &broker{
		key: "tern", name: "Tern", version: strings.TrimSpace(strings.TrimPrefix(string(out), "tern ")),
		argv: func(port int, _ *benchCase) ([]string, error) {
			// Memory only, like Mosquitto's "persistence false" here, and no
			// admin listener, so runs neither share state nor ports.
			return []string{bin, "serve", "--listen", "127.0.0.1:" + strconv.Itoa(port), "--log-level", "warn",
				"--durability", "off", "--admin-listen", ""}, nil
		},
	}, nil
}

// mosquittoConf is the configuration the comparison runs Mosquitto with:
// no persistence, anonymous access on loopback, queues long enough that no
// test case makes it drop messages, and only warnings and errors logged.
// Everything else keeps Mosquitto's defaults (max_inflight_messages 20,
// set_tcp_nodelay false).
const mosquittoConf = `listener %d 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 10000000
max_queued_bytes 0
log_dest stderr
log_type error
log_type warning
connection_messages false
`

// mosquittoStressConf is the configuration of the stress cases: the same
// without the long queues, so that Mosquitto keeps its default limits
// (max_queued_messages 1000, max_inflight_messages 20, no max_packet_size).
const mosquittoStressConf = `listener %d 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
connection_messages false
`

// mosquittoBroker finds Mosquitto, installing the Debian package when it is
// missing and this process runs as root. Configuration files go to dir.
func mosquittoBroker(ctx context.Context, dir string, logf func(string, ...any)) (*broker, error) {
	bin, err := findMosquitto()
	if err != nil && os.Geteuid() == 0 {
		logf("mosquitto not found: installing the Debian package")
		install := func() error {
			cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "mosquitto")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("apt-get install mosquitto: %w\n%s", err, out)
			}
			return nil
		}
		if err = install(); err != nil {
			if out, uerr := exec.CommandContext(ctx, "apt-get", "update").CombinedOutput(); uerr != nil {
				return nil, fmt.Errorf("apt-get update: %w\n%s", uerr, out)
			}
			err = install()
		}
		if err == nil {
			bin, err = findMosquitto()
		}
	}
	if err != nil {
		return nil, err
	}
	// "mosquitto -h" prints its version first and exits with status 3.
	out, _ := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	version, _, _ := strings.Cut(string(out), "\n")
	version = strings.TrimSpace(strings.TrimPrefix(version, "mosquitto version"))
	return &broker{
		key: "mosquitto", name: "Mosquitto", version: version,
		argv: func(port int, c *benchCase) ([]string, error) {
			conf := filepath.Join(dir, fmt.Sprintf("mosquitto-%d.conf", port))
			text := mosquittoConf
			if c.brokerDefaults {
				text = mosquittoStressConf
			}
			if err := os.WriteFile(conf, fmt.Appendf(nil, text, port), 0o644); err != nil {
				return nil, err
			}
			return []string{bin, "-c", conf}, nil
		},
	}, nil
}

func findMosquitto() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("mosquitto not found (apt-get install mosquitto)")
}

// mochiBroker returns the mochi-mqtt broker program built at bin.
func mochiBroker(bin, version string) *broker {
	return &broker{
		key: "mochi", name: "mochi", version: version,
		argv: func(port int, c *benchCase) ([]string, error) {
			argv := []string{bin, "-addr", "127.0.0.1:" + strconv.Itoa(port)}
			if c.mochiPending > 0 {
				argv = append(argv, "-writes-pending", strconv.Itoa(c.mochiPending))
			}
			return argv, nil
		},
	}
}

// process is a running broker.
type process struct {
	cmd     *exec.Cmd
	pid     int
	logPath string
	exited  chan struct{}
	waitErr error
	stopped bool
}

// startBroker runs b on a free port, behind the command prefix (nice,
// taskset), and waits until it accepts connections.
func startBroker(b *broker, c *benchCase, prefix []string, logPath string) (*process, int, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	argv, err := b.argv(port, c)
	if err != nil {
		return nil, 0, err
	}
	argv = append(prefix[:len(prefix):len(prefix)], argv...)
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, 0, err
	}
	defer logFile.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, logPath: logPath, exited: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); close(p.exited) }()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			nc.Close()
			return p, port, nil
		}
		select {
		case <-p.exited:
			return nil, 0, fmt.Errorf("%s exited at start (%v): %s", b.name, p.waitErr, logTail(logPath))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, 0, fmt.Errorf("%s does not listen on %s: %s", b.name, addr, logTail(logPath))
		}
	}
}

// crashed reports whether the broker ended before it was asked to.
func (p *process) crashed() bool {
	select {
	case <-p.exited:
		return !p.stopped
	default:
		return false
	}
}

// stop ends the broker: SIGTERM, then SIGKILL after 15 s. It returns an
// error if the broker had already ended by itself.
func (p *process) stop() error {
	if p.crashed() {
		return fmt.Errorf("broker exited during the case (%v): %s", p.waitErr, logTail(p.logPath))
	}
	p.stopped = true
	syscall.Kill(p.pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		syscall.Kill(-p.pid, syscall.SIGKILL)
		<-p.exited
		return errors.New("broker did not stop within 15 s of SIGTERM: killed")
	}
	return nil
}

// freePort returns a TCP port that is free on 127.0.0.1 right now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// logTail returns the last lines of a log file, on one line.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}
