package topics

import "testing"

// FuzzMatch checks that validation never panics, that Match agrees with the
// reference matcher, and that Index and Retained agree with Match.
func FuzzMatch(f *testing.F) {
	for _, seed := range [][2]string{
		{"sport/#", "sport"},
		{"+/+", "/"},
		{"#", "$SYS/uptime"},
		{"$SYS/+", "$SYS/uptime"},
		{"$share/g/a/+", "a/b"},
		{"a//+/#", "a//b/c"},
		{"+", ""},
		{"a/\x00", "a/\xff"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		// Neither may panic, whatever the input.
		filterErr, nameErr := ValidateFilter(filter), ValidateName(topic)
		group, tf, shared := ParseShared(filter)
		Match(filter, topic)
		if Levels(topic) < 1 {
			t.Fatalf("Levels(%q) < 1", topic)
		}
		if filterErr != nil || nameErr != nil {
			return
		}
		if shared && (group == "" || tf == "" || filter != SharePrefix+group+"/"+tf) {
			t.Fatalf("ParseShared(%q) = %q, %q", filter, group, tf)
		}
		want := refMatch(tf, topic)
		if got := Match(tf, topic); got != want {
			t.Fatalf("Match(%q, %q) = %v, want %v", tf, topic, got, want)
		}

		ix := NewIndex()
		ix.Subscribe(Subscription{ClientID: "other", Filter: "#"})
		ix.Subscribe(Subscription{ClientID: "other", Filter: "+/+"})
		ix.Subscribe(Subscription{ClientID: "fuzz", Group: group, Filter: tf})
		for range 3 { // miss, miss and admission, hit
			if got := indexHas(ix.Match(topic), group); got != want {
				t.Fatalf("Index: %q matches %q = %v, want %v", filter, topic, got, want)
			}
		}
		ix.Unsubscribe("fuzz", group, tf)
		if indexHas(ix.Match(topic), group) {
			t.Fatalf("Index: %q still matches %q after Unsubscribe", filter, topic)
		}

		r := NewRetained[int]()
		r.Set("a/b", 0)
		r.Set("$SYS/x", 0)
		r.Set(topic, 1)
		got := false
		r.Match(tf, func(name string, v int) bool {
			got = got || (name == topic && v == 1)
			return true
		})
		if got != want {
			t.Fatalf("Retained: %q matches %q = %v, want %v", tf, topic, got, want)
		}
	})
}

func indexHas(r *Result, group string) bool {
	if group == "" {
		for _, s := range r.Subscriptions {
			if s.ClientID == "fuzz" {
				return true
			}
		}
		return false
	}
	for _, g := range r.Shared {
		if g.Name == group && g.Members[0].ClientID == "fuzz" {
			return true
		}
	}
	return false
}
