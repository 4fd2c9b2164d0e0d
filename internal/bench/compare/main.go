// Command compare runs "tern bench" against Tern, Mosquitto and mochi-mqtt
// side by side and prints a markdown report of medians and ratios.
//
//	go run ./bench/compare [--rounds 3] [--duration 10s] [--out FILE]
//
// It finds Mosquitto (installing the Debian package when it is missing and
// it runs as root), builds mochi-mqtt as a small program in its own module
// under the work folder (bench/work by default, which git ignores), builds
// Tern from this module, then, for each round, each case and each broker in
// turn (A B C A B C ...), starts the broker on a free loopback port pinned
// to --broker-cpus with taskset, runs "tern bench" pinned to --bench-cpus,
// and stops the broker. Every case starts a fresh broker. Logs of every
// broker and bench run are kept in the work folder.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	rounds     int
	duration   time.Duration
	brokers    string
	cases      string
	brokerCPUs string
	benchCPUs  string
	out        string
	work       string
	mochi      string
	version    string
	size       int
	flow       int
	fanout     int
	idle       int
	retained   int
	retainMax  time.Duration
	ternBin    string
	nice       int
	stressMode bool
	stress     stressOptions
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every case on every broker")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "publishing time per case (idle connections: hold time)")
	flag.StringVar(&o.brokers, "brokers", "tern,mosquitto,mochi", "brokers to compare, in running order")
	flag.StringVar(&o.cases, "cases", "fanin,fanout,pairs,pairs-q1,pairs-q2,latency,idle,retained", "cases to run")
	flag.StringVar(&o.brokerCPUs, "broker-cpus", "0", "CPUs for the broker (taskset -c); \"0,1\" for the unpinned case")
	flag.StringVar(&o.benchCPUs, "bench-cpus", "", "CPUs for tern bench (default 1 when the broker has 0, else the broker's)")
	flag.StringVar(&o.out, "out", "", "also write the report to this file")
	flag.StringVar(&o.work, "work", "", "work folder for builds, configs and logs (default bench/work in the module)")
	flag.StringVar(&o.mochi, "mochi-version", "v2.7", "mochi-mqtt version, or a prefix for its latest patch release")
	flag.StringVar(&o.version, "V", "4", "MQTT protocol version for every case: 3, 4 (3.1.1) or 5")
	flag.IntVar(&o.size, "size", 64, "payload size in bytes")
	flag.IntVar(&o.flow, "flow", 100, "tern bench --flow: how far publishers may run ahead of their subscribers (0: open loop)")
	flag.IntVar(&o.fanout, "fanout", 500, "subscribers in the fan-out case")
	flag.IntVar(&o.idle, "idle", 19000, "connections in the idle case (keep below the open-file limit)")
	flag.IntVar(&o.retained, "retained", 100000, "messages in the retained case")
	flag.DurationVar(&o.retainMax, "retained-wait", 60*time.Second, "most to wait for the retained messages")
	flag.StringVar(&o.ternBin, "tern", "", "use this tern binary instead of building ./cmd/tern")
	flag.IntVar(&o.nice, "nice", 0, "run brokers and tern bench with this niceness (negative needs root), to shield them from other load")
	flag.BoolVar(&o.stressMode, "stress", false, "run the stress scenarios (--stress-cases) instead of the throughput cases; brokers keep their default limits")
	flag.StringVar(&o.stress.cases, "stress-cases", "stuck,retflood,partial,filters", "stress scenarios to run")
	flag.IntVar(&o.stress.stuck, "stuck", 100, "stuck subscribers in the stuck scenario (each broker also runs with none)")
	flag.DurationVar(&o.stress.duration, "stress-duration", 15*time.Second, "each phase of the stuck scenario")
	flag.Int64Var(&o.stress.rssKill, "rss-kill", 8192, "kill a broker whose resident memory passes this many MiB")
	flag.Int64Var(&o.stress.rssLimit, "rss-limit", 6144, "tern bench --rss-limit: stop the load once the broker passes this many MiB")
	extra := map[string]*string{}
	for _, sc := range []string{"stuck", "retflood", "partial", "filters"} {
		extra[sc] = flag.String(sc+"-args", "", "extra tern bench arguments for the "+sc+" scenario, space-separated")
	}
	flag.Parse()
	o.stress.extra = map[string][]string{}
	for sc, v := range extra {
		o.stress.extra[sc] = strings.Fields(*v)
	}
	if o.stressMode {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["rounds"] {
			o.rounds = 1
		}
		if !set["brokers"] {
			o.brokers = "tern,mosquitto"
		}
	}
	if o.benchCPUs == "" {
		o.benchCPUs = o.brokerCPUs
		if o.brokerCPUs == "0" {
			o.benchCPUs = "1"
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, o options) error {
	log.SetFlags(log.Ltime)
	raiseFileLimit()
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	if o.work == "" {
		o.work = filepath.Join(root, "bench", "work")
	}
	logs := filepath.Join(o.work, "logs", time.Now().Format("20060102-150405"))
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	if o.brokerCPUs != "" || o.benchCPUs != "" {
		if _, err := exec.LookPath("taskset"); err != nil {
			return errors.New("taskset not found (Debian package util-linux); pass --broker-cpus '' --bench-cpus '' to run unpinned")
		}
	}

	ternBin := o.ternBin
	if ternBin == "" {
		log.Printf("building tern")
		ternBin = filepath.Join(o.work, "tern")
		build := exec.CommandContext(ctx, "go", "build", "-o", ternBin, "./cmd/tern")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/tern: %w\n%s", err, out)
		}
	}
	var brokers []*broker
	for _, key := range strings.Split(o.brokers, ",") {
		var b *broker
		switch strings.TrimSpace(key) {
		case "tern":
			b, err = ternBroker(ctx, ternBin)
		case "mosquitto":
			b, err = mosquittoBroker(ctx, o.work, log.Printf)
		case "mochi":
			log.Printf("building mochi-mqtt %s", o.mochi)
			var bin, v string
			bin, v, err = buildMochi(ctx, filepath.Join(o.work, "mochi"), o.mochi)
			if err == nil {
				b = mochiBroker(bin, v)
			}
		default:
			err = fmt.Errorf("unknown broker %q (want tern, mosquitto, mochi)", key)
		}
		if err != nil {
			return err
		}
		brokers = append(brokers, b)
	}

	started := time.Now()
	loadBefore := loadAverage()
	if o.stressMode {
		body, err := runStress(ctx, o, ternBin, brokers, logs)
		if err != nil {
			return err
		}
		var rep strings.Builder
		writeHeader(&rep, o, brokers, started, loadBefore)
		rep.WriteString(body)
		fmt.Fprintf(&rep, "\nLogs: %s\n", logs)
		os.Stdout.WriteString(rep.String())
		if o.out != "" {
			return os.WriteFile(o.out, []byte(rep.String()), 0o644)
		}
		return nil
	}

	all := buildCases(caseOptions{
		duration: o.duration, size: o.size, version: o.version, flow: o.flow,
		fanout: o.fanout, idle: o.idle, retained: o.retained, retainMax: o.retainMax,
	})
	var cases []*benchCase
	for _, id := range strings.Split(o.cases, ",") {
		found := false
		for _, c := range all {
			if c.id == strings.TrimSpace(id) {
				cases = append(cases, c)
				found = true
			}
		}
		if !found {
			return fmt.Errorf("unknown case %q", id)
		}
	}

	rs := results{}
	for round := 1; round <= o.rounds; round++ {
		for _, c := range cases {
			for _, b := range brokers {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				oc := runCase(ctx, o, ternBin, b, c, round, logs)
				rs.add(c.id, b.key, oc)
			}
		}
	}

	var rep strings.Builder
	writeHeader(&rep, o, brokers, started, loadBefore)
	writeTables(&rep, cases, brokers, rs)
	fmt.Fprintf(&rep, "\nLogs: %s\n", logs)
	os.Stdout.WriteString(rep.String())
	if o.out != "" {
		return os.WriteFile(o.out, []byte(rep.String()), 0o644)
	}
	return nil
}

// runCase runs case c once against broker b.
func runCase(ctx context.Context, o options, ternBin string, b *broker, c *benchCase, round int, logs string) outcome {
	name := fmt.Sprintf("%d-%s-%s", round, c.id, b.key)
	proc, port, err := startBroker(b, c, wrap(o.nice, o.brokerCPUs), filepath.Join(logs, name+".broker.log"))
	if err != nil {
		log.Printf("round %d %-8s %-9s: %v", round, c.id, b.key, err)
		return outcome{note: err.Error()}
	}
	res, err := runBench(ctx, ternBin, c, port, proc.pid, wrap(o.nice, o.benchCPUs), filepath.Join(logs, name+".bench.log"))
	var notes []string
	if err != nil {
		notes = append(notes, err.Error())
	}
	if err := proc.stop(); err != nil {
		notes = append(notes, err.Error())
	}
	oc := outcome{res: res, note: strings.Join(notes, "; ")}
	if res != nil {
		var parts []string
		for _, m := range c.metrics {
			if v, ok := m.get(res); ok {
				parts = append(parts, fmt.Sprintf("%s %s", m.name, num(v)))
			}
		}
		log.Printf("round %d %-8s %-9s: %s; lost %d dup %d errors %d", round, c.id, b.key,
			strings.Join(parts, ", "), res.Lost, res.Duplicates, res.Errors+int64(res.Connect.Failed))
	}
	if oc.note != "" {
		log.Printf("round %d %-8s %-9s: %s", round, c.id, b.key, oc.note)
	}
	return oc
}

// writeHeader describes the machine, the brokers and the command.
func writeHeader(w io.Writer, o options, brokers []*broker, started time.Time, loadBefore string) {
	if o.stressMode {
		fmt.Fprintf(w, "Stress run of %s, %d round(s): %s; stuck phases %v, %d stuck subscribers.\n\n",
			started.Format("2006-01-02 15:04 MST"), o.rounds, o.stress.cases, o.stress.duration, o.stress.stuck)
	} else {
		fmt.Fprintf(w, "Run of %s, %d round(s), %v per case.\n\n", started.Format("2006-01-02 15:04 MST"), o.rounds, o.duration)
	}
	goVersion := runtime.Version()
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		goVersion = strings.TrimSpace(string(out))
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(w, "- Machine: %d CPUs (%s), Linux %s, %s; load average before %s, after %s\n",
		runtime.NumCPU(), cpuModel(), strings.TrimSpace(string(kernel)), goVersion, loadBefore, loadAverage())
	var names []string
	for _, b := range brokers {
		names = append(names, b.name+" "+b.version)
	}
	fmt.Fprintf(w, "- Brokers: %s\n", strings.Join(names, ", "))
	pin := "unpinned"
	if o.brokerCPUs != "" {
		pin = fmt.Sprintf("broker on CPU %s, tern bench on CPU %s (taskset)", o.brokerCPUs, o.benchCPUs)
	}
	if o.nice != 0 {
		pin += fmt.Sprintf(", both at niceness %d", o.nice)
	}
	if o.stressMode {
		fmt.Fprintf(w, "- Pinning: %s; tern bench defaults per scenario (MQTT 3.1.1, 256-byte payloads); brokers with their default limits (Tern: --durability off; Mosquitto: persistence false)\n", pin)
	} else {
		fmt.Fprintf(w, "- Pinning: %s; MQTT level %s, %d-byte payloads, flow %d\n", pin, o.version, o.size, o.flow)
	}
	fmt.Fprintf(w, "- Command: `go run ./bench/compare %s`\n\n", strings.Join(os.Args[1:], " "))
}

// wrap returns the command prefix that runs a program at niceness nice on
// cpus: "nice -n N taskset -c CPUS", either part left out when unset.
func wrap(nice int, cpus string) []string {
	var argv []string
	if nice != 0 {
		argv = append(argv, "nice", "-n", strconv.Itoa(nice))
	}
	if cpus != "" {
		argv = append(argv, "taskset", "-c", cpus)
	}
	return argv
}

// moduleRoot returns the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run compare from inside the Tern module")
	}
	return filepath.Dir(mod), nil
}

// raiseFileLimit raises the soft open-file limit to the hard limit; the
// brokers and tern bench inherit it.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Printf("raising the open-file limit: %v", err)
	}
	log.Printf("open-file limit %d", lim.Cur)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
