package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/ternmq/tern/internal/bench"
	"github.com/ternmq/tern/internal/config"
	"github.com/ternmq/tern/packets"
)

// benchFlags are the flags shared by every bench scenario.
type benchFlags struct {
	host      string
	port      int
	version   protocolFlag
	keepAlive int
	persist   bool
	json      bool
	quiet     bool
	cfg       bench.Config
	flow      int
	tls       bool
	insecure  bool
	cafile    string
	// Stress scenario flags that need converting.
	stuckKeepAlive int
	rssLimitMiB    int64
	// The subcommands share f.cfg, so a flag whose default differs by
	// subcommand needs a variable of its own.
	partialParts, filtersParts string
}

var scenarioHelp = map[bench.Scenario][2]string{
	bench.Conn: {"Open -c connections at a rate and hold them idle",
		"Open -c connections, one every -i, and hold them idle for -d; report the connect rate, how many succeeded and, with --broker-pid, the broker's memory per connection."},
	bench.Pub: {"Run -c publishers with no subscribers",
		"Run -c publishers, publisher i on topic <prefix>/<i>, for -d; report how fast the broker accepts (and, at QoS 1/2, acknowledges) messages."},
	bench.Sub: {"Run -c subscribers on --filter and count what arrives",
		"Run -c subscribers on --filter (default <prefix>/#) for -d or until --limit messages; publish with \"tern bench pub\" elsewhere. Messages from tern bench publishers are checked for gaps, duplicates and order, and timed."},
	bench.FanIn: {"Run -c publishers and one subscriber to them all",
		"Run -c publishers on <prefix>/<i> and one subscriber on <prefix>/+ for -d."},
	bench.FanOut: {"Run one publisher and -c subscribers to its topic",
		"Run one publisher on <prefix>/0 and -c subscribers to it for -d."},
	bench.Pairs: {"Run -c publisher/subscriber pairs, each pair on its own topic",
		"Run -c publishers on <prefix>/<i>, each with its own subscriber, for -d."},
	bench.Latency: {"Run pairs at a fixed total --rate and report latency percentiles",
		"Run -c pairs at a total of --rate messages per second (default 1000) for -d and report end-to-end latency percentiles, measured with a timestamp in each payload."},
	bench.Retained: {"Store -c retained messages and time their delivery to a new subscriber",
		"Publish -c retained messages (QoS 1, default 100,000), each on its own topic, then time their delivery to a new subscriber to \"#\"; -d bounds that wait. The messages are cleared afterwards unless --keep-retained is set."},
	bench.Stuck: {"Stress: -c subscribers that never read beside a healthy one",
		`Stress: one publisher publishes at full speed (open loop, -s bytes, default 256) on one topic; -c subscribers (default 100) subscribe to it and then never read their socket again, and one healthy subscriber reads everything. Two phases of -d each (default 15 s): QoS 0, then QoS 1 with at most --window messages unacknowledged. Reports, per phase, what was published and acknowledged, what the healthy subscriber received, its rate and longest wait between two messages, the broker's peak memory (--broker-pid, sampled every --rss-interval), and which stuck connections the broker closed and when (seen without reading, every 500 ms). -c 0 gives the baseline. The stuck subscribers send keep alive --stuck-keepalive (default 0: none) and never ping.`},
	bench.RetFlood: {"Stress: store -c retained messages, then SUBSCRIBE \"#\" --repeat times without reading",
		`Stress: publish -c retained messages (default 10,000; QoS 1, each on its own topic, -s bytes), then one client sends SUBSCRIBE "#" (QoS -q) --repeat times (default 2,000) pipelined and never reads; it stays -d (default 20 s) unless the broker closes it, then leaves, and the broker's memory is sampled for --settle more. Reports the peak memory and the memory after the client left. The retained messages are cleared at the end unless --keep-retained is set.`},
	bench.Partial: {"Stress: connections that send incomplete packets and stall",
		`Stress, hostile partial input; --parts picks among:
  (a) -c connections (default 5,000) send CONNECT with keep alive -k (default 5 s), read CONNACK, send the first 3 bytes of a PUBLISH and nothing more; reports when the broker closes each (min, median, max) and how many were still open after --close-bound (default 4 keep alives).
  (b) --large connections (default 200) send CONNECT, then a PUBLISH whose header declares --declared bytes (default 1,000,000) and --body bytes of it (default 900,000), and hold for -d (default 10 s); reports the broker's memory before and after, per connection.
  (c) one connection drips a PUBLISH declaring --declared bytes at one byte a second; reports whether and when the broker closes it, waiting at most --drip-max (default 60 s).
(c) runs beside (a) and (b).`},
	bench.Filters: {"Stress: a filter of 65,531 levels, then a million filters",
		`Stress: extreme subscriptions; --parts picks among:
  (a) one client subscribes to a filter of --levels levels (default 65,531: "a/a/a/a/a/////..." within the 65,535-byte limit, "a" levels while they fit, empty ones after), then -c clients more (default 20) each to one of their own; reports the SUBACK reason codes (or what the broker did instead), the broker's memory after one and after all, and --settle after they left.
  (b) one client subscribes to --filters distinct filters (default 1,000,000), --batch to a SUBSCRIBE, at most --sub-window SUBSCRIBEs awaiting their SUBACK; reports the broker's memory per filter and --settle after the client left.
-d bounds each step (default 60 s).`},
}

// stressFlags adds the flags of stress scenario sc to cmd.
func stressFlags(cmd *cobra.Command, sc bench.Scenario, f *benchFlags) {
	fl := cmd.Flags()
	s := &f.cfg.Stress
	fl.DurationVar(&s.RSSInterval, "rss-interval", 100*time.Millisecond, "how often to sample the broker's memory (with --broker-pid)")
	fl.Int64Var(&f.rssLimitMiB, "rss-limit", 6144, "stop the load once the broker's memory passes this many MiB (0: no limit)")
	switch sc {
	case bench.Stuck:
		fl.IntVar(&f.stuckKeepAlive, "stuck-keepalive", 0, "keep alive, in seconds, the stuck subscribers send (0: none)")
		fl.BoolVar(&s.StuckPersistent, "stuck-persistent", false, "persistent sessions for the stuck subscribers (removed at the end)")
		return
	}
	fl.DurationVar(&s.Settle, "settle", 5*time.Second, "how long to keep sampling the broker's memory after the clients left")
	switch sc {
	case bench.RetFlood:
		fl.IntVar(&s.Repeat, "repeat", 2000, "SUBSCRIBE \"#\" packets the flooding client sends")
	case bench.Partial:
		fl.StringVar(&f.partialParts, "parts", "abc", "parts to run: any of a, b, c")
		fl.IntVar(&s.Large, "large", 200, "(b) connections")
		s.Declared, s.Body = 1_000_000, 900_000
		fl.Var(sizeFlag{&s.Declared}, "declared", "(b, c) remaining length the PUBLISH header declares (bytes, or 1MiB, ...)")
		fl.Var(sizeFlag{&s.Body}, "body", "(b) bytes of that body each connection sends (or 512KiB, ...)")
		fl.DurationVar(&s.CloseBound, "close-bound", 0, "(a) most to wait for each close (default 4 keep alives)")
		fl.DurationVar(&s.DripMax, "drip-max", 60*time.Second, "(c) most to drip")
	case bench.Filters:
		fl.StringVar(&f.filtersParts, "parts", "ab", "parts to run: any of a, b")
		fl.IntVar(&s.Levels, "levels", 65_531, "(a) levels of the deep filter")
		fl.IntVar(&s.Filters, "filters", 1_000_000, "(b) distinct filters")
		fl.IntVar(&s.Batch, "batch", 1000, "(b) filters in one SUBSCRIBE")
		fl.IntVar(&s.SubWindow, "sub-window", 10, "(b) most SUBSCRIBEs awaiting their SUBACK")
	}
}

// stressScenario reports whether sc is a stress scenario.
func stressScenario(sc bench.Scenario) bool {
	return sc == bench.Stuck || sc == bench.RetFlood || sc == bench.Partial || sc == bench.Filters
}

func benchCmd() *cobra.Command {
	f := &benchFlags{version: protocolFlag(packets.V311)}
	cmd := &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Load-test an MQTT broker (conn, pub, sub, fanin, fanout, pairs, latency, retained; stress: stuck, retflood, partial, filters)",
		Long: `Load-test an MQTT broker, in the manner of emqtt-bench.

Each scenario is a subcommand. Every message carries its publisher's
number, a sequence number and a timestamp, so subscribers report exactly
how many messages were lost, duplicated or reordered, and the end-to-end
latency. A progress line is printed to stderr every second; the summary
goes to stdout (--json for a machine-readable one). Runs always end by
themselves: after -d, a drain of at most --drain, then the connections
close. Ctrl-C ends a run early and still prints the summary.

Durations given as bare numbers are milliseconds for -i and -I and seconds
for -d, as in emqtt-bench; "500us" or "2m" also work.

Examples:
  tern bench pairs -c 100 -d 10s
  tern bench fanin -c 50 -q 1 --window 100
  tern bench latency -c 100 --rate 10000
  tern bench conn -c 10000 -i 0 -d 30s --broker-pid $(pidof tern)
  tern bench conn -p 8883 --tls --cafile ca.pem -c 10000 --broker-pid $(pidof tern)

The stress scenarios (stuck, retflood, partial, filters) misuse the broker
on purpose, as stuck, slow or hostile clients would, and report what it
did: who it served, what it closed and when, and its memory (give
--broker-pid). Their -c, -s, -d and -k default per scenario (see each).
  tern bench stuck -c 100 --broker-pid $(pidof tern)
  tern bench retflood --broker-pid $(pidof tern)`,
		Args: cobra.NoArgs,
	}
	fl := cmd.PersistentFlags()
	fl.Bool("help", false, "help for bench") // no -h shorthand: -h is the host
	fl.StringVarP(&f.host, "host", "h", "127.0.0.1", "broker host")
	fl.IntVarP(&f.port, "port", "p", 1883, "broker port")
	fl.VarP(&f.version, "protocol-version", "V", "MQTT version: 3 (3.1), 4 (3.1.1) or 5; mqttv31, mqttv311, mqttv5 also work")
	fl.IntVarP(&f.cfg.Count, "count", "c", 0, "connections of the scenario's main role (default 10; retained: messages, default 100000)")
	fl.VarP(durationFlag{&f.cfg.ConnectInterval, time.Millisecond}, "interval", "i", "pause between two connects (bare number: ms; 0: as fast as --parallel allows)")
	fl.VarP(durationFlag{&f.cfg.PublishInterval, time.Millisecond}, "pub-interval", "I", "pause between two messages of one publisher (bare number: ms; 0: no limit)")
	fl.Float64Var(&f.cfg.Rate, "rate", 0, "total messages per second over all publishers (overrides -I; latency: default 1000)")
	f.cfg.PayloadSize = 64
	fl.VarP(sizeFlag{&f.cfg.PayloadSize}, "size", "s", fmt.Sprintf("payload size in bytes, or with a unit: 1KiB, 1MiB (at least %d)", bench.HeaderSize))
	fl.Uint8VarP(&f.cfg.QoS, "qos", "q", 0, "QoS of publications and subscriptions: 0, 1 or 2")
	fl.IntVar(&f.cfg.Window, "window", 100, "most unacknowledged QoS 1/2 messages per publisher")
	fl.IntVar(&f.flow, "flow", 1000, "keep each publisher at most this many messages ahead of its slowest subscriber (0: open loop)")
	f.cfg.Duration = 10 * time.Second
	fl.VarP(durationFlag{&f.cfg.Duration, time.Second}, "duration", "d", "how long to publish (conn: hold; sub: listen; retained: most to wait) (bare number: s)")
	fl.DurationVar(&f.cfg.Drain, "drain", 5*time.Second, "most to wait after publishing for outstanding messages before counting them lost")
	fl.StringVarP(&f.cfg.TopicPrefix, "topic", "t", "tern-bench", "topic prefix: publisher i publishes on <prefix>/<i>")
	fl.StringVar(&f.cfg.Filter, "filter", "", "sub: topic filter (default <prefix>/#)")
	fl.Int64Var(&f.cfg.Limit, "limit", 0, "sub: stop after this many messages")
	fl.StringVarP(&f.cfg.Username, "username", "u", "", "user name")
	fl.StringVarP(&f.cfg.Password, "password", "P", "", "password")
	fl.IntVarP(&f.keepAlive, "keepalive", "k", 60, "keep alive in seconds")
	fl.BoolVar(&f.persist, "persistent", false, "persistent sessions (v5: session expiry 1 h; 3.1.1: clean session 0)")
	fl.BoolVar(&f.cfg.ConnSubscribe, "subscribe", false, "conn: each connection subscribes to <prefix>/<i> (at -q) before it goes idle")
	fl.StringVar(&f.cfg.ClientPrefix, "client-prefix", "tb", "client identifier prefix")
	fl.IntVar(&f.cfg.Parallel, "parallel", 100, "most connection handshakes in progress at once")
	fl.DurationVar(&f.cfg.ConnectTimeout, "connect-timeout", 10*time.Second, "bound on each connect (and subscribe) handshake")
	fl.IntVar(&f.cfg.BrokerPID, "broker-pid", 0, "process id of a local broker: report its resident memory (Linux)")
	fl.BoolVar(&f.cfg.KeepRetained, "keep-retained", false, "retained: leave the messages on the broker")
	fl.BoolVar(&f.tls, "tls", false, "connect with TLS (verifying the broker with the system's CA certificates unless --cafile or --insecure)")
	fl.StringVar(&f.cafile, "cafile", "", "PEM `file` of the CA certificates to verify the broker with (turns TLS on)")
	fl.BoolVar(&f.insecure, "insecure", false, "TLS without verifying the broker's certificate at all (turns TLS on)")
	fl.BoolVar(&f.json, "json", false, "print the summary as JSON")
	fl.BoolVar(&f.quiet, "quiet", false, "no progress lines")
	for _, sc := range bench.Scenarios {
		help := scenarioHelp[sc]
		sub := &cobra.Command{
			Use:   string(sc),
			Short: help[0],
			Long:  help[1],
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return runBench(cmd, sc, f)
			},
		}
		if stressScenario(sc) {
			stressFlags(sub, sc, f)
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

func runBench(cmd *cobra.Command, sc bench.Scenario, f *benchFlags) error {
	cfg := f.cfg
	cfg.Scenario = sc
	cfg.Addr = net.JoinHostPort(f.host, strconv.Itoa(f.port))
	cfg.Version = byte(f.version)
	cfg.KeepAlive = time.Duration(f.keepAlive) * time.Second
	cfg.Persistent = f.persist
	cfg.Flow = f.flow
	if f.flow <= 0 {
		cfg.Flow = -1
	}
	if stressScenario(sc) {
		// These flags default per scenario: leave them to the bench package.
		fl := cmd.Flags()
		for name, zero := range map[string]func(){
			"size":      func() { cfg.PayloadSize = 0 },
			"duration":  func() { cfg.Duration = 0 },
			"keepalive": func() { cfg.KeepAlive = 0 },
			"count":     func() { cfg.Count = 0 },
		} {
			if !fl.Changed(name) {
				zero()
			}
		}
		if sc == bench.Stuck && !fl.Changed("count") {
			cfg.Count = 100
		}
		cfg.Stress.Parts = map[bench.Scenario]string{bench.Partial: f.partialParts, bench.Filters: f.filtersParts}[sc]
		cfg.Stress.StuckKeepAlive = time.Duration(f.stuckKeepAlive) * time.Second
		cfg.Stress.RSSLimit = f.rssLimitMiB * 1024
		if f.rssLimitMiB <= 0 {
			cfg.Stress.RSSLimit = -1
		}
	}
	if f.tls || f.cafile != "" || f.insecure {
		tc := &tls.Config{ServerName: f.host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: f.insecure}
		if f.cafile != "" {
			pem, err := os.ReadFile(f.cafile)
			if err != nil {
				return fmt.Errorf("--cafile: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return fmt.Errorf("--cafile %s: no PEM certificate in it", f.cafile)
			}
		}
		cfg.TLS = tc
	}
	if !f.quiet {
		cfg.Progress = cmd.ErrOrStderr()
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if f.json {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		res.WriteText(cmd.OutOrStdout())
	}
	return benchFailed(sc, res)
}

// benchFailed returns the error that makes tern bench exit non-zero: any
// connection that could not be made, and for the load scenarios any error
// at all. (The stress scenarios expect the broker to end some of their
// connections.)
func benchFailed(sc bench.Scenario, res *bench.Result) error {
	if res.Connect.Failed == 0 && (stressScenario(sc) || res.Errors == 0) {
		return nil
	}
	msg := fmt.Sprintf("%d errors, %d of %d connections failed", res.Errors, res.Connect.Failed, res.Connect.Attempted)
	if res.FirstError != "" {
		msg += " (first: " + res.FirstError + ")"
	}
	return errors.New(msg)
}

// protocolFlag parses -V in the forms mosquitto_pub and emqtt-bench accept.
type protocolFlag byte

func (p *protocolFlag) String() string { return strconv.Itoa(int(*p)) }
func (p *protocolFlag) Type() string   { return "version" }
func (p *protocolFlag) Set(s string) error {
	switch strings.ToLower(s) {
	case "3", "31", "mqttv31":
		*p = protocolFlag(packets.V31)
	case "4", "311", "mqttv311":
		*p = protocolFlag(packets.V311)
	case "5", "mqttv5":
		*p = protocolFlag(packets.V5)
	default:
		return fmt.Errorf("%q is not 3, 4 or 5", s)
	}
	return nil
}

// sizeFlag is a size in bytes, written as a number or with a unit (KB,
// MB, GB, KiB, MiB, GiB), as the configuration's sizes are.
type sizeFlag struct{ n *int }

func (f sizeFlag) String() string {
	if f.n == nil {
		return "0"
	}
	return strconv.Itoa(*f.n)
}
func (f sizeFlag) Type() string { return "size" }
func (f sizeFlag) Set(s string) error {
	z, err := config.ParseSize(s)
	if err != nil || z < 0 || int64(z) > math.MaxInt32 {
		return fmt.Errorf("%q is not a size (like 256, 64KiB or 1MiB)", s)
	}
	*f.n = int(z)
	return nil
}

// durationFlag is a duration flag that also takes a bare number in unit.
type durationFlag struct {
	d    *time.Duration
	unit time.Duration
}

func (f durationFlag) String() string {
	if f.d == nil {
		return "0"
	}
	return f.d.String()
}
func (f durationFlag) Type() string { return "duration" }
func (f durationFlag) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		*f.d = time.Duration(n * float64(f.unit))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}
