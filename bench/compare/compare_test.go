package main

import (
	"strings"
	"testing"

	"github.com/ternmq/tern/bench"
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
