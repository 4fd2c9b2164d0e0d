package topics

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// treeIndex subscribes c1 and c2 to filters that exercise chains (literal
// runs stored as one step), splits, wildcards, empty levels and a group.
func treeIndex() *Index {
	ix := NewIndex()
	for _, s := range []Subscription{
		{ClientID: "c1", Filter: "a/b/c"},
		{ClientID: "c2", Filter: "a/b/c"},
		{ClientID: "c1", Filter: "a/b/d/e"},
		{ClientID: "c1", Filter: "a/+/x"},
		{ClientID: "c1", Filter: "a/#"},
		{ClientID: "c1", Filter: "/x"},
		{ClientID: "c1", Filter: "/y"},
		{ClientID: "c1", Filter: "ab"},
		{ClientID: "c1", Filter: "s/t", Group: "g"},
		{ClientID: "c2", Filter: "s/t", Group: "g"},
		{ClientID: "c3", Filter: "s/t"},
	} {
		ix.Subscribe(s)
	}
	return ix
}

func TestEachFilter(t *testing.T) {
	ix := treeIndex()
	for _, tc := range []struct {
		under []string
		want  []string // filter:subscribers[:group=members]
	}{
		{nil, []string{"/x:1", "/y:1", "a/#:1", "a/+/x:1", "a/b/c:2", "a/b/d/e:1", "ab:1", "s/t:1:g=2"}},
		{[]string{"a"}, []string{"a/#:1", "a/+/x:1", "a/b/c:2", "a/b/d/e:1"}},
		{[]string{"a", "b"}, []string{"a/b/c:2", "a/b/d/e:1"}},
		{[]string{"a", "b", "d"}, []string{"a/b/d/e:1"}}, // ends inside the chain "d/e"
		{[]string{"a", "b", "d", "e"}, []string{"a/b/d/e:1"}},
		{[]string{"a", "+"}, []string{"a/+/x:1"}},
		{[]string{""}, []string{"/x:1", "/y:1"}},
		{[]string{"a", "z"}, nil},
		{[]string{"a", "b", "d", "f"}, nil}, // leaves the chain
		{[]string{"q"}, nil},
	} {
		t.Run(strings.Join(tc.under, "/"), func(t *testing.T) {
			var got []string
			ix.EachFilter(tc.under, func(f string, subs []*Subscription, groups []*SharedGroup) bool {
				s := fmt.Sprintf("%s:%d", f, len(subs))
				for _, g := range groups {
					s += fmt.Sprintf(":%s=%d", g.Name, len(g.Members))
				}
				got = append(got, s)
				return true
			})
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("EachFilter(%q) = %q, want %q", tc.under, got, tc.want)
			}
		})
	}
}

func TestEachFilterStops(t *testing.T) {
	n := 0
	treeIndex().EachFilter(nil, func(string, []*Subscription, []*SharedGroup) bool { n++; return n < 3 })
	if n != 3 {
		t.Fatalf("fn called %d times after returning false at the third", n)
	}
}

func TestIndexLevels(t *testing.T) {
	ix := treeIndex()
	for _, tc := range []struct {
		parent []string
		want   []Level
	}{
		{nil, []Level{{"", 0, true}, {"a", 0, true}, {"ab", 1, false}, {"s", 0, true}}},
		{[]string{"a"}, []Level{{"#", 1, false}, {"+", 0, true}, {"b", 0, true}}},
		{[]string{"a", "b"}, []Level{{"c", 2, false}, {"d", 0, true}}},
		{[]string{"a", "b", "d"}, []Level{{"e", 1, false}}},
		{[]string{""}, []Level{{"x", 1, false}, {"y", 1, false}}},
		{[]string{"s"}, []Level{{"t", 3, false}}}, // a plain subscriber and two group members
		{[]string{"nope"}, []Level{}},
	} {
		if got := ix.Levels(tc.parent, nil); !slices.Equal(got, tc.want) {
			t.Errorf("Levels(%q) = %v, want %v", tc.parent, got, tc.want)
		}
	}
	notC2 := func(s *Subscription) bool { return s.ClientID != "c2" }
	if got := ix.Levels([]string{"s"}, notC2); !slices.Equal(got, []Level{{"t", 2, false}}) {
		t.Errorf("Levels(s) without c2 = %v", got)
	}
}

func TestRetainedLevels(t *testing.T) {
	r := NewRetained[int]()
	for _, topic := range []string{"a/b", "a/b/c", "a/d", "/x", "$SYS/up", "e"} {
		r.Set(topic, 1)
	}
	for _, tc := range []struct {
		parent []string
		want   []Level
	}{
		{nil, []Level{{"", 0, true}, {"$SYS", 0, true}, {"a", 0, true}, {"e", 1, false}}},
		{[]string{"a"}, []Level{{"b", 1, true}, {"d", 1, false}}},
		{[]string{"a", "b"}, []Level{{"c", 1, false}}},
		{[]string{""}, []Level{{"x", 1, false}}},
		{[]string{"zz"}, []Level{}},
	} {
		if got := r.Levels(tc.parent); !slices.Equal(got, tc.want) {
			t.Errorf("Levels(%q) = %v, want %v", tc.parent, got, tc.want)
		}
	}
}
