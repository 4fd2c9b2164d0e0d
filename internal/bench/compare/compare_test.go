package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ternmq/tern/internal/bench"
)

func TestLatestMatching(t *testing.T) {
	list := []string{"v2.6.6", "v2.7.0", "v2.7.10", "v2.7.9", "v2.8.0-rc1", "v2.10.1"}
	for prefix, want := range map[string]string{"v2.7": "v2.7.10", "v2": "v2.10.1", "v2.7.9": "v2.7.9", "v3": ""} {
		if got := latestMatching(list, prefix); got != want {
			t.Errorf("latestMatching(%q) = %q, want %q", prefix, got, want)
		}
	}
}

func TestMedianAndTable(t *testing.T) {
	m := metric{name: "received msg/s", get: recvRate}
	os := []outcome{
		{res: &bench.Result{RecvRate: 30, Received: 1}},
		{res: &bench.Result{RecvRate: 10, Received: 1}},
		{note: "crashed"},
		{res: &bench.Result{RecvRate: 20, Received: 1}},
	}
	if v, ok := median(os, m); !ok || v != 20 {
		t.Errorf("median = %v, %v; want 20", v, ok)
	}
	if _, ok := median(os[2:3], m); ok {
		t.Error("median of no results reported a value")
	}
	cases := []*benchCase{{id: "pairs", title: "pairs", metrics: []metric{m}}}
	brokers := []*broker{{key: "tern", name: "Tern"}, {key: "mosquitto", name: "Mosquitto"}}
	rs := results{}
	rs.add("pairs", "tern", outcome{res: &bench.Result{RecvRate: 300_000, Received: 1}})
	rs.add("pairs", "mosquitto", outcome{res: &bench.Result{RecvRate: 100_000, Received: 1, Lost: 3}})
	rs.add("pairs", "mosquitto", outcome{note: "broker exited during the case"})
	var b strings.Builder
	writeTables(&b, cases, brokers, rs)
	for _, want := range []string{"| pairs | received msg/s ↑ | 300,000 | 100,000 | 3.00 |", "| pairs | 0 / 0 / 0 | 3 / 0 / 0 |", "round 2: broker exited"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{1234567: "1,234,567", 999: "999", 12.34: "12.3", 0.1234: "0.123", -4321: "-4,321"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestStressRunsAndTables(t *testing.T) {
	brokers := []*broker{{key: "tern", name: "Tern"}, {key: "mosquitto", name: "Mosquitto"}}
	runs, err := stressRuns(stressOptions{cases: "stuck,partial", stuck: 100, duration: 15 * time.Second, rssLimit: 6144,
		extra: map[string][]string{"partial": {"-c", "50"}}}, brokers)
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, r := range runs {
		labels = append(labels, r.label+"/"+r.scenario)
	}
	want := []string{"Tern, 100 stuck/stuck", "Tern, 0 stuck/stuck", "Mosquitto, 100 stuck/stuck", "Mosquitto, 0 stuck/stuck", "Tern/partial", "Mosquitto/partial"}
	if !slices.Equal(labels, want) {
		t.Errorf("runs %v, want %v", labels, want)
	}
	if a := runs[4].args; !slices.Contains(a, "--rss-limit") || a[len(a)-1] != "50" {
		t.Errorf("partial args %v", a)
	}
	if _, err := stressRuns(stressOptions{cases: "nope"}, brokers); err == nil {
		t.Error("unknown stress case accepted")
	}

	phases := func(recv0, recv1 int64) *bench.Result {
		return &bench.Result{Stuck: &bench.StuckStats{Stuck: 100, Phases: []bench.StuckPhase{
			{QoS: 0, Published: 1000, InWindow: recv0, Received: 1000}, {QoS: 1, Published: 500, Acked: 500, InWindow: recv1, Received: 500}}}}
	}
	outs := []stressOutcome{
		{run: runs[0], res: phases(400, 300)},
		{run: runs[1], res: phases(1000, 500)},
		{run: runs[2], res: phases(800, 600)},
		{run: runs[3], res: phases(1600, 1200)},
		{run: runs[4], note: "broker killed above 8192 MiB"},
	}
	var b strings.Builder
	writeStressTables(&b, outs)
	for _, want := range []string{
		"| Tern, 100 stuck | 1,000 | 400 / 1,000 |",
		"Tern, 100 stuck / Mosquitto, 100 stuck: 0.5, 0.5",
		"Tern, 100 stuck / Tern, 0 stuck: 0.4, 0.6",
		"Mosquitto, 100 stuck / Mosquitto, 0 stuck: 0.5, 0.5",
		"Tern (partial): broker killed above 8192 MiB",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
