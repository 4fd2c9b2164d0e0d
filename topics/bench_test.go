package topics

import (
	"fmt"
	"testing"
)

const (
	benchSites   = 100
	benchDevices = 100 // per site: 10,000 topics
)

func benchTopic(i int) string {
	return fmt.Sprintf("sensors/site%d/dev%d/temp", i%benchSites, i/benchSites%benchDevices)
}

// benchIndex returns an index of about 10,000 subscriptions: one literal
// filter per device, a '+' filter and a '#' filter per site, a shared group
// per site and a few global wildcards.
func benchIndex() *Index {
	ix := NewIndex()
	for i := range benchSites * benchDevices {
		ix.Subscribe(Subscription{ClientID: fmt.Sprint("dev", i), Filter: benchTopic(i), QoS: 1})
	}
	for s := range benchSites {
		ix.Subscribe(Subscription{ClientID: fmt.Sprint("site", s), Filter: fmt.Sprintf("sensors/site%d/+/temp", s)})
		ix.Subscribe(Subscription{ClientID: fmt.Sprint("site", s), Filter: fmt.Sprintf("sensors/site%d/#", s)})
		for m := range 3 {
			ix.Subscribe(Subscription{ClientID: fmt.Sprint("worker", m), Group: "workers", Filter: fmt.Sprintf("sensors/site%d/+/+", s)})
		}
	}
	ix.Subscribe(Subscription{ClientID: "audit", Filter: "#"})
	ix.Subscribe(Subscription{ClientID: "temps", Filter: "sensors/+/+/temp"})
	return ix
}

// hotTopics returns 1,000 topics, which fit in the cache, and warms the
// cache with them.
func hotTopics(ix *Index) []string {
	hot := make([]string, 1000)
	for i := range hot {
		hot[i] = benchTopic(i * 7)
		ix.Match(hot[i]) // a miss,
		ix.Match(hot[i]) // and a miss that caches the result
	}
	return hot
}

func BenchmarkMatch(b *testing.B) {
	ix := benchIndex()
	hot := hotTopics(ix)
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			ix.Match(hot[i%len(hot)])
			i++
		}
	})
	// Every topic is new to the cache: the trie walk, building and caching
	// the Result, and evicting old entries.
	unique := make([]string, 1<<16)
	for i := range unique {
		unique[i] = fmt.Sprintf("sensors/site%d/dev%d/temp", i%benchSites, benchDevices+i)
	}
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			ix.Match(unique[i%len(unique)])
			i++
		}
	})
	// Each topic is matched twice in a row: a miss, then a miss that
	// admits the topic into the cache, evicting older ones.
	b.Run("miss-admit", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			ix.Match(unique[i/2%len(unique)])
			i++
		}
	})
	// The trie walk alone, without the cache.
	b.Run("walk", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			ix.mu.RLock()
			ix.root.match(hot[i%len(hot)])
			ix.mu.RUnlock()
			i++
		}
	})
}

func BenchmarkMatchParallel(b *testing.B) {
	ix := benchIndex()
	hot := hotTopics(ix)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			ix.Match(hot[i%len(hot)])
			i++
		}
	})
}

// BenchmarkSubscribe measures a subscribe and unsubscribe pair on the
// 10,000-subscription index with a full result cache, which both invalidate.
func BenchmarkSubscribe(b *testing.B) {
	for _, bc := range []struct{ name, filter string }{
		{"literal", "sensors/site1/dev1/temp"},
		{"wildcard", "sensors/site1/+/temp"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ix := benchIndex()
			for i := range cacheMax {
				ix.Match(benchTopic(i))
			}
			b.ReportAllocs()
			for b.Loop() {
				ix.Subscribe(Subscription{ClientID: "bench", Filter: bc.filter, QoS: 1})
				ix.Unsubscribe("bench", "", bc.filter)
			}
		})
	}
}

func BenchmarkRetainedMatchAll(b *testing.B) {
	r := NewRetained[int]()
	for i := range 100_000 {
		r.Set(fmt.Sprintf("site/%d/device/%d", i%100, i), i)
	}
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		r.Match("#", func(string, int) bool { n++; return true })
		if n != 100_000 {
			b.Fatal(n)
		}
	}
}

func BenchmarkMatchFunc(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Match("sensors/+/dev7/#", "sensors/site1/dev7/temp/celsius")
	}
}

func BenchmarkValidateFilter(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if ValidateFilter("$share/workers/sensors/+/dev7/#") != nil {
			b.Fatal("invalid")
		}
	}
}
