package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/ternmq/tern/internal/bench"
)

// outcome is what one broker did in one round of one case.
type outcome struct {
	res  *bench.Result // nil when the case could not run
	note string        // a crash, a failure to start, a bench failure
}

// results holds every outcome, by case id and broker key.
type results map[string]map[string][]outcome

func (rs results) add(caseID, brokerKey string, o outcome) {
	if rs[caseID] == nil {
		rs[caseID] = map[string][]outcome{}
	}
	rs[caseID][brokerKey] = append(rs[caseID][brokerKey], o)
}

// median returns the median of metric m over the outcomes, and whether any
// outcome had a value.
func median(os []outcome, m metric) (float64, bool) {
	var vs []float64
	for _, o := range os {
		if o.res == nil {
			continue
		}
		if v, ok := m.get(o.res); ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2, true
	}
	return vs[len(vs)/2], true
}

// writeTables writes the markdown tables: medians and ratios, delivery
// accounting, broker memory, and notes.
func writeTables(w io.Writer, cases []*benchCase, brokers []*broker, rs results) {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	var tern *broker
	var others []*broker
	for _, br := range brokers {
		if br.key == "tern" {
			tern = br
		} else {
			others = append(others, br)
		}
	}
	p("| case | metric |")
	for _, br := range brokers {
		p(" %s |", br.name)
	}
	if tern != nil {
		for _, o := range others {
			p(" Tern/%s |", o.name)
		}
	}
	p("\n|---|---|")
	for range brokers {
		p("---:|")
	}
	if tern != nil {
		for range others {
			p("---:|")
		}
	}
	p("\n")
	for _, c := range cases {
		for i, m := range c.metrics {
			title := ""
			if i == 0 {
				title = c.title
			}
			dir := "↑"
			if m.lower {
				dir = "↓"
			}
			p("| %s | %s %s |", title, m.name, dir)
			vals := map[string]float64{}
			for _, br := range brokers {
				v, ok := median(rs[c.id][br.key], m)
				if !ok {
					p(" — |")
					continue
				}
				vals[br.key] = v
				p(" %s |", num(v))
			}
			if tern != nil {
				for _, o := range others {
					t, ok1 := vals["tern"]
					v, ok2 := vals[o.key]
					if !ok1 || !ok2 || v == 0 {
						p(" — |")
						continue
					}
					p(" %.2f |", t/v)
				}
			}
			p("\n")
		}
	}

	p("\nDelivery, summed over rounds: lost / duplicates / errors (connection failures included).\n\n| case |")
	for _, br := range brokers {
		p(" %s |", br.name)
	}
	p("\n|---|")
	for range brokers {
		p("---|")
	}
	p("\n")
	for _, c := range cases {
		p("| %s |", c.title)
		for _, br := range brokers {
			var lost, dups, errs int64
			ran := 0
			for _, o := range rs[c.id][br.key] {
				if o.res == nil {
					continue
				}
				ran++
				lost += o.res.Lost
				dups += o.res.Duplicates
				errs += o.res.Errors + int64(o.res.Connect.Failed)
			}
			if ran == 0 {
				p(" did not run |")
				continue
			}
			p(" %d / %d / %d |", lost, dups, errs)
		}
		p("\n")
	}

	p("\nBroker resident memory (VmRSS, MiB, median) at the end of the window (idle: once all were connected; retained: once all were delivered).\n\n| case |")
	for _, br := range brokers {
		p(" %s |", br.name)
	}
	p("\n|---|")
	for range brokers {
		p("---:|")
	}
	p("\n")
	rss := metric{get: func(r *bench.Result) (float64, bool) {
		if r.BrokerRSS == nil || r.BrokerRSS.AfterKiB <= 0 {
			return 0, false
		}
		return float64(r.BrokerRSS.AfterKiB) / 1024, true
	}}
	for _, c := range cases {
		p("| %s |", c.title)
		for _, br := range brokers {
			if v, ok := median(rs[c.id][br.key], rss); ok {
				p(" %.1f |", v)
			} else {
				p(" — |")
			}
		}
		p("\n")
	}

	var notes []string
	for _, c := range cases {
		for _, br := range brokers {
			for round, o := range rs[c.id][br.key] {
				if o.note != "" {
					notes = append(notes, fmt.Sprintf("%s, %s, round %d: %s", br.name, c.id, round+1, o.note))
				}
				if o.res != nil && o.res.FirstError != "" {
					notes = append(notes, fmt.Sprintf("%s, %s, round %d: first error: %s", br.name, c.id, round+1, o.res.FirstError))
				}
			}
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

// num formats a value with three significant figures and thousands
// separators.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		s := fmt.Sprintf("%.0f", v)
		var out []byte
		for i := range len(s) {
			if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
				out = append(out, ',')
			}
			out = append(out, s[i])
		}
		return string(out)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3g", v)
}
