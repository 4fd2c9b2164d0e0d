package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ternmq/tern/internal/bench"
)

// stressOptions are the settings of the stress comparison (--stress).
type stressOptions struct {
	cases    string
	stuck    int
	duration time.Duration // each phase of stuck
	rssKill  int64         // MiB: a broker above it is killed
	rssLimit int64         // MiB: tern bench stops its load above it
	extra    map[string][]string
}

// stressRun is one run of a stress scenario against one broker.
type stressRun struct {
	scenario string // "stuck", "retflood", "partial", "filters"
	label    string // the row's name in the report
	broker   string // broker key
	stuck    int    // stuck: the number of stuck subscribers
	args     []string
	bound    time.Duration
}

// stressRuns returns the runs of the chosen stress scenarios, for the
// brokers at hand: stuck runs every broker with and without stuck
// subscribers; the others run once per broker.
func stressRuns(o stressOptions, brokers []*broker) ([]stressRun, error) {
	var runs []stressRun
	limit := []string{"--rss-limit", strconv.FormatInt(o.rssLimit, 10)}
	for _, sc := range strings.Split(o.cases, ",") {
		sc = strings.TrimSpace(sc)
		switch sc {
		case "stuck":
			for _, b := range brokers {
				counts := []int{o.stuck, 0} // with stuck subscribers, then the baseline
				for _, n := range counts {
					runs = append(runs, stressRun{
						scenario: sc, broker: b.key, stuck: n,
						label: fmt.Sprintf("%s, %d stuck", b.name, n),
						args: append([]string{"stuck", "-c", strconv.Itoa(n), "-d", o.duration.String()},
							append(limit, o.extra[sc]...)...),
						bound: 2*o.duration + 3*time.Minute,
					})
				}
			}
		case "retflood", "partial", "filters":
			for _, b := range brokers {
				runs = append(runs, stressRun{
					scenario: sc, broker: b.key, label: b.name,
					args:  append(append([]string{sc}, limit...), o.extra[sc]...),
					bound: 10 * time.Minute,
				})
			}
		default:
			return nil, fmt.Errorf("unknown stress case %q (want stuck, retflood, partial, filters)", sc)
		}
	}
	return runs, nil
}

// stressOutcome is what one stress run gave.
type stressOutcome struct {
	run    stressRun
	res    *bench.Result
	note   string
	peak   int64 // the broker's peak RSS seen by the watchdog, KiB
	killed bool
}

// runStress runs every stress run once per round, each against a fresh
// broker, and writes the report.
func runStress(ctx context.Context, o options, ternBin string, brokers []*broker, logs string) (string, error) {
	runs, err := stressRuns(o.stress, brokers)
	if err != nil {
		return "", err
	}
	byKey := map[string]*broker{}
	for _, b := range brokers {
		byKey[b.key] = b
	}
	var outs []stressOutcome
	for round := 1; round <= o.rounds; round++ {
		for _, run := range runs {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			oc := runStressCase(ctx, o, ternBin, byKey[run.broker], run, round, logs)
			outs = append(outs, oc)
		}
	}
	var rep strings.Builder
	writeStressTables(&rep, outs)
	return rep.String(), nil
}

// runStressCase runs one stress run against a fresh broker, killing the
// broker if its memory passes --rss-kill.
func runStressCase(ctx context.Context, o options, ternBin string, b *broker, run stressRun, round int, logs string) stressOutcome {
	name := fmt.Sprintf("%d-%s-%s-%d", round, run.scenario, b.key, run.stuck)
	c := &benchCase{id: run.scenario, title: run.label, args: run.args, bound: run.bound, brokerDefaults: true}
	oc := stressOutcome{run: run}
	proc, port, err := startBroker(b, c, wrap(o.nice, o.brokerCPUs), filepath.Join(logs, name+".broker.log"))
	if err != nil {
		oc.note = err.Error()
		log.Printf("round %d %-24s: %v", round, run.label+" "+run.scenario, err)
		return oc
	}
	var peak atomic.Int64
	var killed atomic.Bool
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-t.C:
			}
			v := rssKiB(proc.pid)
			if v > peak.Load() {
				peak.Store(v)
			}
			if v > o.stress.rssKill*1024 && !killed.Swap(true) {
				log.Printf("%s: broker RSS %d MiB above --rss-kill: killing it", run.label, v/1024)
				syscall.Kill(-proc.pid, syscall.SIGKILL)
			}
		}
	}()
	res, err := runBench(ctx, ternBin, c, port, proc.pid, wrap(o.nice, o.benchCPUs), filepath.Join(logs, name+".bench.log"))
	stopWatch()
	<-watchDone
	var notes []string
	if err != nil {
		notes = append(notes, err.Error())
	}
	if killed.Load() {
		notes = append(notes, fmt.Sprintf("broker killed above %d MiB", o.stress.rssKill))
	} else if err := proc.stop(); err != nil {
		notes = append(notes, err.Error())
	}
	oc.res, oc.note, oc.peak, oc.killed = res, strings.Join(notes, "; "), peak.Load(), killed.Load()
	if res != nil {
		if b, err := json.MarshalIndent(res, "", "  "); err == nil {
			os.WriteFile(filepath.Join(logs, name+".json"), b, 0o644)
		}
	}
	summary := ""
	if res != nil {
		var b strings.Builder
		res.WriteText(&b)
		summary = strings.ReplaceAll(strings.TrimSpace(b.String()), "\n", "\n    ")
	}
	log.Printf("round %d %s (%s): peak RSS %s\n    %s", round, run.label, run.scenario, mib(oc.peak), summary)
	if oc.note != "" {
		log.Printf("round %d %s (%s): %s", round, run.label, run.scenario, oc.note)
	}
	return oc
}

// rssKiB returns a process's VmRSS in KiB, 0 when it cannot be read.
func rssKiB(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}

// mib formats KiB as MiB.
func mib(kib int64) string {
	if kib <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f", float64(kib)/1024)
}

// writeStressTables writes one markdown table per stress scenario.
func writeStressTables(w io.Writer, outs []stressOutcome) {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	by := map[string][]stressOutcome{}
	for _, o := range outs {
		by[o.run.scenario] = append(by[o.run.scenario], o)
	}
	if os := by["stuck"]; len(os) > 0 {
		p("\n### stuck: one open-loop publisher, N subscribers that never read, one healthy subscriber\n\n")
		p("Healthy received: in the publishing window / after the drain; msg/s: in the window.\n\n")
		p("| run | QoS 0: published | healthy received | msg/s | longest gap ms | QoS 1: published / acked | healthy received | msg/s | longest gap ms | peak RSS MiB | stuck closed (first–last s) |\n")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, o := range os {
			p("| %s |", o.run.label)
			s := stuckOf(o)
			for i := range 2 {
				if s == nil || len(s.Phases) <= i {
					p(" — | — | — | — |")
					continue
				}
				ph := s.Phases[i]
				recv := num(float64(ph.InWindow)) + " / " + num(float64(ph.Received))
				if i == 0 {
					p(" %s | %s | %s | %s |", num(float64(ph.Published)), recv, num(ph.Rate), num(ph.MaxGapMs))
				} else {
					p(" %s / %s | %s | %s | %s |", num(float64(ph.Published)), num(float64(ph.Acked)), recv, num(ph.Rate), num(ph.MaxGapMs))
				}
			}
			p(" %s |", mib(peakOf(o)))
			switch {
			case s == nil:
				p(" — |\n")
			case s.Closed == 0:
				p(" 0 of %d |\n", s.Stuck)
			default:
				p(" %d of %d (%.1f–%.1f) |\n", s.Closed, s.Stuck, s.Closes.Min, s.Closes.Max)
			}
		}
		writeStuckRatios(p, os)
	}
	if os := by["retflood"]; len(os) > 0 {
		p("\n### retflood: retained messages, then SUBSCRIBE \"#\" repeated without reading\n\n")
		p("| broker | stored | SUBSCRIBEs written | closed by broker | RSS stored MiB | peak RSS MiB | RSS at leave MiB | RSS after settle MiB |\n|---|---:|---:|---|---:|---:|---:|---:|\n")
		for _, o := range os {
			f := (*bench.RetFloodStats)(nil)
			if o.res != nil {
				f = o.res.RetFlood
			}
			if f == nil {
				p("| %s | — | — | — | — | %s | — | — |\n", o.run.label, mib(peakOf(o)))
				continue
			}
			closed := "no"
			if f.ClosedByBroker {
				closed = fmt.Sprintf("after %.1f s", f.ClosedAfter)
			}
			p("| %s | %d | %d of %d | %s | %s | %s | %s | %s |\n", o.run.label, f.Stored, f.Written, f.Repeat, closed,
				mib(f.StoredRSSKiB), mib(peakOf(o)), mib(f.LeftRSSKiB), mib(f.AfterRSSKiB))
		}
	}
	if os := by["partial"]; len(os) > 0 {
		p("\n### partial: stalled and dripped PUBLISH packets\n\n")
		p("| broker | (a) closed: min / median / max s | (a) open at bound | (b) RSS bytes/conn | (b) peak RSS MiB | (b) closed | (c) drip closed after |\n|---|---|---:|---:|---:|---:|---|\n")
		for _, o := range os {
			var s *bench.PartialStats
			if o.res != nil {
				s = o.res.Partial
			}
			p("| %s |", o.run.label)
			if s == nil {
				p(" — | — | — | %s | — | — |\n", mib(peakOf(o)))
				continue
			}
			if a := s.A; a != nil {
				if a.Closes.Count > 0 {
					p(" %d of %d: %.2f / %.2f / %.2f | %d of %d (%.0f s) |", a.Closes.Count, a.Connected, a.Closes.Min, a.Closes.Median, a.Closes.Max, a.StillOpen, a.Connected, a.BoundSeconds)
				} else {
					p(" none of %d | %d of %d (%.0f s) |", a.Connected, a.StillOpen, a.Connected, a.BoundSeconds)
				}
			} else {
				p(" — | — |")
			}
			if b := s.B; b != nil {
				p(" %s | %s | %d of %d |", num(b.PerConnection), mib(b.PeakRSSKiB), b.Closes.Count, b.Connected)
			} else {
				p(" — | — | — |")
			}
			switch c := s.C; {
			case c == nil:
				p(" — |\n")
			case c.Closed:
				p(" %.1f s (%d bytes) |\n", c.ClosedAfter, c.Dripped)
			default:
				p(" open after %.0f s (%d bytes) |\n", c.BoundSeconds, c.Dripped)
			}
		}
	}
	if os := by["filters"]; len(os) > 0 {
		p("\n### filters: one very deep filter; a million filters\n\n")
		p("| broker | deep: first SUBACK | s | RSS +MiB | more clients' answers | RSS MiB after / after leaving | many: granted / refused | s | RSS bytes/filter | peak RSS MiB | RSS MiB after leaving |\n|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|\n")
		for _, o := range os {
			var f *bench.FiltersStats
			if o.res != nil {
				f = o.res.Filters
			}
			p("| %s |", o.run.label)
			if d := deepOf(f); d != nil {
				var answers []string
				for _, k := range slices.Sorted(maps.Keys(d.Answers)) {
					answers = append(answers, fmt.Sprintf("%s ×%d", k, d.Answers[k]))
				}
				p(" %s | %.2f | %s | %s | %s / %s |", d.First, d.FirstSeconds, mibDelta(d.OneRSSKiB, d.BeforeRSSKiB),
					strings.Join(answers, ", "), mib(d.AllRSSKiB), mib(d.LeftRSSKiB))
			} else {
				p(" — | — | — | — | — |")
			}
			if f != nil && f.Many != nil {
				m := f.Many
				extra := ""
				if m.Error != "" {
					extra = " (" + m.Error + ")"
				}
				p(" %d / %d%s | %.1f | %s | %s | %s |\n", m.Granted, m.Refused, extra, m.Seconds, num(m.PerFilter), mib(m.PeakRSSKiB), mib(m.LeftRSSKiB))
			} else {
				p(" — | — | — | %s | — |\n", mib(peakOf(o)))
			}
		}
	}
	var notes []string
	for _, o := range outs {
		if o.note != "" {
			notes = append(notes, fmt.Sprintf("%s (%s): %s", o.run.label, o.run.scenario, o.note))
		}
		if o.res != nil && o.res.FirstError != "" {
			notes = append(notes, fmt.Sprintf("%s (%s): %d errors, first: %s", o.run.label, o.run.scenario, o.res.Errors, o.res.FirstError))
		}
		if o.res != nil && o.res.BrokerRSS != nil && o.res.BrokerRSS.LimitExceeded {
			notes = append(notes, fmt.Sprintf("%s (%s): the broker passed tern bench's --rss-limit; the load stopped early", o.run.label, o.run.scenario))
		}
	}
	if len(notes) > 0 {
		p("\nNotes:\n\n")
		for _, n := range notes {
			p("- %s\n", n)
		}
	}
	io.WriteString(w, b.String())
}

// writeStuckRatios writes the ratios of the healthy subscriber's
// deliveries within the publishing windows, medians over the rounds: Tern
// with stuck subscribers over each other broker with as many, and each
// broker with them over itself without.
func writeStuckRatios(p func(string, ...any), os []stressOutcome) {
	type key struct {
		broker string
		with   bool
	}
	recv := map[key][2][]float64{}
	labels := map[key]string{}
	var order []string
	for _, o := range os {
		s := stuckOf(o)
		if s == nil || len(s.Phases) < 2 {
			continue
		}
		k := key{o.run.broker, o.run.stuck > 0}
		v := recv[k]
		for i := range 2 {
			v[i] = append(v[i], float64(s.Phases[i].InWindow))
		}
		recv[k], labels[k] = v, o.run.label
		if !slices.Contains(order, o.run.broker) {
			order = append(order, o.run.broker)
		}
	}
	ratio := func(a, b key) string {
		var parts []string
		for i := range 2 {
			x, y := medianOf(recv[a][i]), medianOf(recv[b][i])
			if len(recv[a][i]) == 0 || len(recv[b][i]) == 0 || y == 0 {
				parts = append(parts, "—")
				continue
			}
			parts = append(parts, fmt.Sprintf("%.3g", x/y))
		}
		return strings.Join(parts, ", ")
	}
	p("\nHealthy subscriber's messages received in the publishing window, ratios of medians (QoS 0 phase, QoS 1 phase):\n\n")
	tern := key{"tern", true}
	if _, ok := recv[tern]; ok {
		for _, b := range order {
			if k := (key{b, true}); b != "tern" && len(recv[k][0]) > 0 {
				p("- %s / %s: %s\n", labels[tern], labels[k], ratio(tern, k))
			}
		}
	}
	for _, b := range order {
		a, z := key{b, true}, key{b, false}
		if len(recv[a][0]) > 0 && len(recv[z][0]) > 0 {
			p("- %s / %s: %s\n", labels[a], labels[z], ratio(a, z))
		}
	}
}

// medianOf returns the median of vs, 0 for none.
func medianOf(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	vs = slices.Sorted(slices.Values(vs))
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2
	}
	return vs[len(vs)/2]
}

func stuckOf(o stressOutcome) *bench.StuckStats {
	if o.res == nil {
		return nil
	}
	return o.res.Stuck
}

func deepOf(f *bench.FiltersStats) *bench.DeepFilters {
	if f == nil {
		return nil
	}
	return f.Deep
}

// peakOf returns the broker's peak RSS in KiB: tern bench's sampling when
// it has it, else the watchdog's.
func peakOf(o stressOutcome) int64 {
	if o.res != nil && o.res.BrokerRSS != nil && o.res.BrokerRSS.PeakKiB > 0 {
		return max(o.res.BrokerRSS.PeakKiB, o.peak)
	}
	return o.peak
}

// mibDelta formats the difference of two KiB values in MiB.
func mibDelta(after, before int64) string {
	if after <= 0 || before <= 0 {
		return "—"
	}
	return fmt.Sprintf("%+.1f", float64(after-before)/1024)
}
