package topics

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// collectRetained returns the sorted "topic=value" pairs r.Match yields.
func collectRetained(r *Retained[int], filter string) []string {
	var got []string
	r.Match(filter, func(topic string, v int) bool {
		got = append(got, fmt.Sprintf("%s=%d", topic, v))
		return true
	})
	slices.Sort(got)
	return got
}

func TestRetainedSetGetDelete(t *testing.T) {
	r := NewRetained[int]()
	if _, ok := r.Get("a"); ok || r.Len() != 0 {
		t.Fatal("new index not empty")
	}
	r.Set("a/b", 1)
	r.Set("a", 2)
	r.Set("a/b/c", 3)
	r.Set("a/b", 4) // replace [MQTT-3.3.1-5]
	if v, ok := r.Get("a/b"); !ok || v != 4 {
		t.Fatalf("Get(a/b) = %d, %v; want 4", v, ok)
	}
	if _, ok := r.Get("a/b/c/d"); ok {
		t.Fatal("Get of an absent topic succeeded")
	}
	if _, ok := r.Get("a/"); ok {
		t.Fatal("Get of an absent sibling succeeded")
	}
	if r.Len() != 3 {
		t.Fatalf("Len = %d, want 3", r.Len())
	}
	if !r.Delete("a/b") || r.Delete("a/b") || r.Delete("zz") {
		t.Fatal("Delete results wrong")
	}
	if _, ok := r.Get("a/b"); ok {
		t.Fatal("deleted topic still present")
	}
	if v, ok := r.Get("a/b/c"); !ok || v != 3 {
		t.Fatal("deleting a parent removed its child")
	}
	r.Delete("a/b/c")
	r.Delete("a")
	if r.Len() != 0 || r.root.children != nil {
		t.Fatalf("Len = %d, root children %v after deleting everything", r.Len(), r.root.children)
	}
	var zero Retained[string] // the zero value is usable
	zero.Set("x", "y")
	if v, _ := zero.Get("x"); v != "y" {
		t.Fatal("zero Retained does not work")
	}
}

func TestRetainedMatch(t *testing.T) {
	r := NewRetained[int]()
	for i, topic := range []string{
		"sport", "sport/tennis", "sport/tennis/player1", "sport/tennis/player2",
		"sport/golf", "/", "/finance", "sport/", "$SYS/uptime", "$SYS", "a/$b",
	} {
		r.Set(topic, i)
	}
	tests := []struct {
		filter string
		want   []string
	}{
		{"sport", []string{"sport=0"}},
		{"sport/#", []string{"sport/=7", "sport/golf=4", "sport/tennis/player1=2", "sport/tennis/player2=3", "sport/tennis=1", "sport=0"}}, // [MQTT-4.7.1-2]
		{"sport/tennis/+", []string{"sport/tennis/player1=2", "sport/tennis/player2=3"}},                                                   // [MQTT-4.7.1-3]
		{"sport/+", []string{"sport/=7", "sport/golf=4", "sport/tennis=1"}},
		{"+", []string{"sport=0"}},
		{"+/+", []string{"/=5", "/finance=6", "a/$b=10", "sport/=7", "sport/golf=4", "sport/tennis=1"}},
		{"/+", []string{"/=5", "/finance=6"}},
		{"#", []string{"/=5", "/finance=6", "a/$b=10", "sport/=7", "sport/golf=4", "sport/tennis/player1=2", "sport/tennis/player2=3", "sport/tennis=1", "sport=0"}}, // [MQTT-4.7.2-1]
		{"$SYS/#", []string{"$SYS/uptime=8", "$SYS=9"}},
		{"+/uptime", nil}, // [MQTT-4.7.2-1]
		{"$SYS", []string{"$SYS=9"}},
		{"Sport", nil}, // [MQTT-4.7.3-4]
		{"nothing/#", nil},
	}
	for _, tt := range tests {
		if got := collectRetained(r, tt.filter); !slices.Equal(got, tt.want) {
			t.Errorf("Match(%q) = %q, want %q", tt.filter, got, tt.want)
		}
	}
	n := 0
	r.Match("#", func(string, int) bool { n++; return n < 3 })
	if n != 3 {
		t.Fatalf("Match went on after fn returned false: %d calls", n)
	}
}

func TestRetainedCallbackMayReenter(t *testing.T) {
	r := NewRetained[int]()
	r.Set("a/1", 1)
	r.Set("a/2", 2)
	r.Match("a/+", func(topic string, v int) bool {
		r.Delete(topic) // would deadlock if Match held the lock
		return true
	})
	r.Range(func(topic string, v int) bool { r.Set(topic+"/x", v); return true })
	if r.Len() != 0 {
		t.Fatalf("Len = %d, want 0", r.Len())
	}
}

func TestRetainedRandomized(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"a", "b", "", "$s", "c d"}
	randTopic := func(levels []string) string {
		parts := make([]string, 1+rng.IntN(4))
		for i := range parts {
			parts[i] = levels[rng.IntN(len(levels))]
		}
		return strings.Join(parts, "/")
	}
	r := NewRetained[int]()
	model := map[string]int{}
	for op := range 4000 {
		topic := randTopic(alphabet)
		switch p := rng.IntN(10); {
		case p < 4:
			r.Set(topic, op)
			model[topic] = op
		case p < 6:
			_, want := model[topic]
			if got := r.Delete(topic); got != want {
				t.Fatalf("op %d: Delete(%q) = %v, want %v", op, topic, got, want)
			}
			delete(model, topic)
		default:
			filter := randTopic(append(alphabet, "+", "#"))
			if ValidateFilter(filter) != nil {
				continue
			}
			var want []string
			for topic, v := range model {
				if refMatch(filter, topic) {
					want = append(want, fmt.Sprintf("%s=%d", topic, v))
				}
			}
			slices.Sort(want)
			if got := collectRetained(r, filter); !slices.Equal(got, want) {
				t.Fatalf("op %d: Match(%q) = %q, want %q", op, filter, got, want)
			}
		}
		if r.Len() != len(model) {
			t.Fatalf("op %d: Len = %d, want %d", op, r.Len(), len(model))
		}
	}
	got := map[string]int{}
	r.Range(func(topic string, v int) bool { got[topic] = v; return true })
	if !maps.Equal(got, model) {
		t.Fatal("Range differs from the model")
	}
	for topic := range model {
		r.Delete(topic)
	}
	if r.Len() != 0 || r.root.children != nil {
		t.Fatal("trie not empty after deleting everything")
	}
}

func TestRetainedMatchAllLarge(t *testing.T) {
	const n = 100_000
	r := NewRetained[int]()
	for i := range n {
		r.Set(fmt.Sprintf("site/%d/device/%d", i%100, i), i)
	}
	r.Set("$SYS/x", -1)
	count, sum := 0, 0
	r.Match("#", func(topic string, v int) bool {
		count++
		sum += v
		return true
	})
	if count != n || sum != n*(n-1)/2 {
		t.Fatalf("'#' matched %d values summing to %d, want %d", count, sum, n)
	}
	count = 0
	r.Match("site/7/device/+", func(string, int) bool { count++; return true })
	if count != n/100 {
		t.Fatalf("site/7/device/+ matched %d, want %d", count, n/100)
	}
}

func TestRetainedConcurrent(t *testing.T) {
	r := NewRetained[int]()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				topic := fmt.Sprintf("w/%d/%d", w, i%10)
				r.Set(topic, i)
				if _, ok := r.Get(topic); !ok {
					t.Errorf("Get(%q) failed after Set", topic)
					return
				}
				r.Match("w/+/#", func(string, int) bool { return true })
				if i%3 == 0 {
					r.Delete(topic)
				}
				_ = r.Len()
			}
		}()
	}
	wg.Wait()
}
