package topics

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, name string
		want         bool
	}{
		// Exact matching.
		{"sport/tennis", "sport/tennis", true},
		{"sport/tennis", "sport/tennis/player1", false},
		{"sport/tennis", "sport", false},
		{"sport", "sport/tennis", false},
		{"a", "b", false},
		// Case sensitivity and no normalization [MQTT-4.7.3-4].
		{"Sport/Tennis", "sport/tennis", false},
		{"ACCOUNTS", "Accounts", false},
		{"café", "cafe\u0301", false},
		// Spaces are ordinary characters.
		{"my topic/+", "my topic/x y", true},
		{"my topic", "my  topic", false},
		// '#' [MQTT-4.7.1-2].
		{"#", "sport", true},
		{"#", "sport/tennis/player1", true},
		{"#", "/", true},
		{"sport/#", "sport/tennis/player1", true},
		{"sport/#", "sport/tennis", true},
		{"sport/#", "sport", true}, // '#' includes the parent level
		{"sport/#", "sport/", true},
		{"sport/#", "sports", false},
		{"sport/tennis/#", "sport", false},
		{"sport/tennis/#", "sport/tennis/player1/ranking", true},
		// '+' [MQTT-4.7.1-3].
		{"+", "sport", true},
		{"+", "sport/", false},
		{"+", "/sport", false},
		{"sport/+", "sport/tennis", true},
		{"sport/+", "sport", false},
		{"sport/+", "sport/", true}, // '+' matches an empty level
		{"sport/+/player1", "sport/tennis/player1", true},
		{"sport/+/player1", "sport/tennis/player2", false},
		{"sport/+/player1", "sport/tennis/x/player1", false},
		{"+/+", "/finance", true},
		{"/+", "/finance", true},
		{"+", "/finance", false},
		{"+/+", "/", true},
		{"+/#", "sport", true},
		{"+/tennis/#", "sport/tennis", true},
		{"+/+/+", "a/b", false},
		// Empty levels and leading or trailing '/'.
		{"/", "/", true},
		{"/", "", false},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
		{"a//b", "a/b", false},
		{"/finance", "finance", false},
		{"finance/", "finance", false},
		{"finance/#", "finance/", true},
		// '$' topics [MQTT-4.7.2-1].
		{"#", "$SYS/broker/uptime", false},
		{"+/broker/uptime", "$SYS/broker/uptime", false},
		{"+", "$SYS", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"$SYS/#", "$SYS", true},
		{"$SYS/+/uptime", "$SYS/broker/uptime", true},
		{"$SYS", "$SYS", true},
		{"a/+", "a/$b", true}, // only the first level is special
		{"a/#", "a/$b/c", true},
		{"+/$b", "a/$b", true},
		{"#", "a$", true},
	}
	for _, tt := range tests {
		if got := Match(tt.filter, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.filter, tt.name, got, tt.want)
		}
		if got := refMatch(tt.filter, tt.name); got != tt.want {
			t.Errorf("refMatch(%q, %q) = %v, want %v (test oracle is wrong)", tt.filter, tt.name, got, tt.want)
		}
	}
}

// refMatch is an obviously correct, slow reference for Match, used as the
// oracle in randomized tests.
func refMatch(filter, name string) bool {
	f, n := strings.Split(filter, "/"), strings.Split(name, "/")
	if strings.HasPrefix(name, "$") && (f[0] == "+" || f[0] == "#") {
		return false // [MQTT-4.7.2-1]
	}
	for i, level := range f {
		if level == "#" {
			return true // the remaining levels, possibly none
		}
		if i >= len(n) || (level != "+" && level != n[i]) {
			return false
		}
	}
	return len(f) == len(n)
}

// TestMatchExhaustive compares Match with refMatch on every valid filter and
// name of up to three levels over a small alphabet.
func TestMatchExhaustive(t *testing.T) {
	filters := combine([]string{"a", "b", "", "$x", "+", "#"}, 3)
	names := combine([]string{"a", "b", "", "$x"}, 3)
	checked := 0
	for _, f := range filters {
		if ValidateFilter(f) != nil {
			continue
		}
		for _, n := range names {
			if ValidateName(n) != nil {
				continue
			}
			checked++
			if got, want := Match(f, n), refMatch(f, n); got != want {
				t.Errorf("Match(%q, %q) = %v, want %v", f, n, got, want)
			}
		}
	}
	if checked < 10000 {
		t.Fatalf("only %d pairs checked", checked)
	}
}

// combine returns every '/'-joined sequence of 1 to max levels.
func combine(levels []string, max int) []string {
	var out []string
	prev := []string{""}
	for depth := 1; depth <= max; depth++ {
		var next []string
		for _, p := range prev {
			for _, l := range levels {
				s := l
				if depth > 1 {
					s = p + "/" + l
				}
				next = append(next, s)
			}
		}
		out = append(out, next...)
		prev = next
	}
	return out
}

func TestMatchDoesNotAllocate(t *testing.T) {
	filter, name := "sport/+/player1/#", "sport/tennis/player1/ranking/x"
	if n := testing.AllocsPerRun(100, func() { Match(filter, name) }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}
