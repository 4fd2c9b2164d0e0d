package main

import "testing"

// TestShouldTrim: memory is returned after a burst (much allocated since
// the last trim, little in the last look), not while the program still
// allocates, and not after a little.
func TestShouldTrim(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		what string
		m    trimStats
		want bool
	}{
		{"burst over", trimStats{live: 10 * mib, sinceTrim: 30 * mib, allocated: 20 << 10}, true},
		{"burst going on", trimStats{live: 10 * mib, sinceTrim: 30 * mib, allocated: 8 * mib}, false},
		{"a little since the last trim", trimStats{live: 2 * mib, sinceTrim: mib / 2}, false},
		{"a little beside a large heap", trimStats{live: 800 * mib, sinceTrim: 50 * mib}, false},
		{"a large heap after a large burst", trimStats{live: 800 * mib, sinceTrim: 200 * mib, allocated: mib}, true},
	} {
		if got := shouldTrim(c.m); got != c.want {
			t.Errorf("%s: shouldTrim = %v, want %v", c.what, got, c.want)
		}
	}
}
