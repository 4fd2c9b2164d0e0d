package tern

import (
	"fmt"
	"slices"
	"testing"
)

// Listing sessions by page walks them in client identifier order from the
// cursor, however many there are, and a prefix narrows it.
func TestSessionsPaging(t *testing.T) {
	s, err := New(&Options{SysInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 250 {
		want = append(want, fmt.Sprintf("c%03d", i))
	}
	for i := range 10 {
		want = append(want, fmt.Sprint("d", i))
	}
	for i := len(want) - 1; i >= 0; i-- {
		s.sessions.put(newSession(s, want[i]))
	}
	list := func(o ListOptions) []string {
		var got []string
		for pages := 0; ; pages++ {
			page, next := s.SessionsPage(o)
			for _, si := range page {
				got = append(got, si.ClientID)
			}
			if next == "" {
				return got
			}
			if len(page) != o.limit() {
				t.Fatalf("a page of %d with a next cursor, limit %d", len(page), o.limit())
			}
			o.After = next
		}
	}
	if got := list(ListOptions{Limit: 100}); !slices.Equal(got, want) {
		t.Fatalf("all pages: %d sessions, want %d in order", len(got), len(want))
	}
	if got := list(ListOptions{Prefix: "c1", Limit: 30}); !slices.Equal(got, want[100:200]) {
		t.Fatalf("prefix c1: %v", got)
	}
	if got := list(ListOptions{Prefix: "d1"}); !slices.Equal(got, []string{"d1"}) {
		t.Fatalf("prefix d1: %v", got)
	}
	if got := list(ListOptions{After: "c248", Prefix: "c", Limit: 5}); !slices.Equal(got, want[249:250]) {
		t.Fatalf("after c248, prefix c: %v", got)
	}
	s.sessions.remove(s.sessions.get("c100"))
	if got := list(ListOptions{Prefix: "c10", Limit: 3}); len(got) != 9 || got[0] != "c101" {
		t.Fatalf("after removing c100, prefix c10: %v", got)
	}
}
