package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/ternmq/tern/internal/bench"
)

// benchCase is one line of the comparison: a "tern bench" run and the
// numbers taken from its result.
type benchCase struct {
	id    string
	title string
	args  []string // tern bench arguments, without the broker's address
	// bound is the most the run may take before it is killed.
	bound time.Duration
	// mochiPending, when set, is mochi's MaximumClientWritesPending for the
	// case: enough that mochi does not drop what the case keeps in flight.
	mochiPending int
	// brokerDefaults runs the brokers with their default limits (the
	// stress cases): Mosquitto without the comparison's long queues.
	brokerDefaults bool
	metrics        []metric
}

// metric is one number of a case. Higher is better unless lower is set.
type metric struct {
	name  string
	lower bool
	get   func(*bench.Result) (float64, bool)
}

func recvRate(r *bench.Result) (float64, bool) { return r.RecvRate, r.Received > 0 }

var throughput = metric{"received msg/s", false, recvRate}

// caseOptions are the settings the cases are built from.
type caseOptions struct {
	duration  time.Duration
	size      int
	version   string
	flow      int
	fanout    int
	idle      int
	retained  int
	retainMax time.Duration
}

func buildCases(o caseOptions) []*benchCase {
	d := o.duration.String()
	lat := func(name string, q float64) metric {
		return metric{name, true, func(r *bench.Result) (float64, bool) {
			if r.Latency == nil {
				return 0, false
			}
			switch q {
			case 0.5:
				return r.Latency.P50, true
			case 0.99:
				return r.Latency.P99, true
			}
			return r.Latency.Max, true
		}}
	}
	// mochi drops QoS 0 messages beyond MaximumClientWritesPending (8,192
	// by default); raise it when a case may keep more in flight to one
	// subscriber: up to flow messages from each of its publishers.
	pending := func(pubsPerSub int) int {
		if n := 2 * pubsPerSub * o.flow; n > 8192 {
			return n
		}
		return 0
	}
	common := []string{"-d", d, "-s", strconv.Itoa(o.size), "-V", o.version, "--flow", strconv.Itoa(o.flow), "--drain", "10s"}
	with := func(args ...string) []string { return append(args, common...) }
	bound := o.duration + 2*time.Minute
	return []*benchCase{
		{id: "fanin", title: "fan-in 50 → 1, QoS 0", args: with("fanin", "-c", "50", "-q", "0"),
			bound: bound, mochiPending: pending(50), metrics: []metric{throughput}},
		{id: "fanout", title: fmt.Sprintf("fan-out 1 → %d, QoS 0", o.fanout), args: with("fanout", "-c", strconv.Itoa(o.fanout), "-q", "0"),
			bound: bound, mochiPending: pending(1), metrics: []metric{throughput}},
		{id: "pairs", title: "100 pairs, QoS 0", args: with("pairs", "-c", "100", "-q", "0"),
			bound: bound, mochiPending: pending(1), metrics: []metric{throughput}},
		{id: "pairs-q1", title: "100 pairs, QoS 1, window 100", args: with("pairs", "-c", "100", "-q", "1", "--window", "100"),
			bound: bound, metrics: []metric{throughput}},
		{id: "pairs-q2", title: "100 pairs, QoS 2, window 20", args: with("pairs", "-c", "100", "-q", "2", "--window", "20"),
			bound: bound, metrics: []metric{throughput}},
		{id: "latency", title: "latency, 100 pairs at 10k msg/s, QoS 0", args: with("latency", "-c", "100", "--rate", "10000", "-q", "0"),
			bound: bound, metrics: []metric{lat("p50 µs", 0.5), lat("p99 µs", 0.99), lat("max µs", 1), throughput}},
		{id: "idle", title: fmt.Sprintf("%d idle connections", o.idle),
			args:  []string{"conn", "-c", strconv.Itoa(o.idle), "-i", "0", "-d", d, "-V", o.version, "--parallel", "200"},
			bound: bound,
			metrics: []metric{
				{"connected", false, func(r *bench.Result) (float64, bool) { return float64(r.Connect.Succeeded), true }},
				{"connects/s", false, func(r *bench.Result) (float64, bool) { return r.Connect.Rate, r.Connect.Succeeded > 0 }},
				{"RSS bytes/conn", true, func(r *bench.Result) (float64, bool) {
					if r.BrokerRSS == nil || r.Connect.Succeeded == 0 {
						return 0, false
					}
					return r.BrokerRSS.PerConnection, true
				}},
			}},
		{id: "retained", title: fmt.Sprintf("%d retained → new # subscriber", o.retained),
			args: []string{"retained", "-c", strconv.Itoa(o.retained), "-d", o.retainMax.String(), "-s", strconv.Itoa(o.size),
				"-V", o.version, "--keep-retained", "--drain", "30s"},
			bound: 2*o.retainMax + 2*time.Minute, mochiPending: 2 * o.retained,
			metrics: []metric{
				{"delivered", false, func(r *bench.Result) (float64, bool) {
					if r.Retained == nil {
						return 0, false
					}
					return float64(r.Retained.Delivered), true
				}},
				{"delivery s", true, func(r *bench.Result) (float64, bool) {
					if r.Retained == nil || r.Retained.Delivered == 0 {
						return 0, false
					}
					return r.Retained.Seconds, true
				}},
				{"store msg/s (QoS 1)", false, func(r *bench.Result) (float64, bool) {
					return r.SendRate, r.Retained != nil && r.Retained.Stored > 0
				}},
			}},
	}
}

// runBench runs tern bench for case c against the broker on port, behind
// the command prefix (nice, taskset), and returns its result; the progress
// lines go to logPath.
func runBench(ctx context.Context, ternBin string, c *benchCase, port, pid int, prefix []string, logPath string) (*bench.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, c.bound)
	defer cancel()
	args := append([]string{"bench"}, c.args...)
	args = append(args, "-p", strconv.Itoa(port), "--broker-pid", strconv.Itoa(pid), "--json")
	argv := append(append(prefix[:len(prefix):len(prefix)], ternBin), args...)
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "$ %v\n", argv)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, logFile
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("tern bench %s: %w (see %s)", c.id, err, logPath)
	}
	var res bench.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("tern bench %s: %w: %q", c.id, err, out.String())
	}
	return &res, nil
}
