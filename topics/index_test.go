package topics

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// keys renders a Result as sorted "client:filter" and "group/filter[client,...]"
// strings, so results compare independently of order.
func keys(r *Result) (subs, shared []string) {
	for _, s := range r.Subscriptions {
		subs = append(subs, s.ClientID+":"+s.Filter)
	}
	for _, g := range r.Shared {
		var members []string
		for _, m := range g.Members {
			members = append(members, m.ClientID)
		}
		slices.Sort(members)
		shared = append(shared, g.Name+"/"+g.Filter+"["+strings.Join(members, ",")+"]")
	}
	slices.Sort(subs)
	slices.Sort(shared)
	return subs, shared
}

func wantSubs(t *testing.T, ix *Index, topic string, want ...string) {
	t.Helper()
	got, _ := keys(ix.Match(topic))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Match(%q) subscriptions = %q, want %q", topic, got, want)
	}
}

func wantShared(t *testing.T, ix *Index, topic string, want ...string) {
	t.Helper()
	_, got := keys(ix.Match(topic))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Match(%q) shared = %q, want %q", topic, got, want)
	}
}

func TestIndexSubscribeReplaceUnsubscribe(t *testing.T) {
	ix := NewIndex()
	if ix.Subscribe(Subscription{ClientID: "c1", Filter: "sport/tennis/+", QoS: 1}) {
		t.Fatal("first Subscribe reported an existing subscription")
	}
	wantSubs(t, ix, "sport/tennis/player1", "c1:sport/tennis/+")
	before := ix.Match("sport/tennis/player1")

	// Replacing keeps one entry with the new options [MQTT-3.8.4-3].
	if !ix.Subscribe(Subscription{ClientID: "c1", Filter: "sport/tennis/+", QoS: 2, Identifier: 7}) {
		t.Fatal("second Subscribe did not report the replaced subscription")
	}
	r := ix.Match("sport/tennis/player1")
	if len(r.Subscriptions) != 1 || r.Subscriptions[0].QoS != 2 || r.Subscriptions[0].Identifier != 7 {
		t.Fatalf("after replace: %+v", r.Subscriptions)
	}
	if before.Subscriptions[0].QoS != 1 {
		t.Fatal("replacing a subscription modified an earlier Result")
	}
	if got, ok := ix.Get("c1", "", "sport/tennis/+"); !ok || got.QoS != 2 {
		t.Fatalf("Get = %+v, %v", got, ok)
	}
	if ix.Count() != 1 {
		t.Fatalf("Count = %d, want 1", ix.Count())
	}

	if ix.Unsubscribe("c1", "", "sport/+/+") || ix.Unsubscribe("c2", "", "sport/tennis/+") {
		t.Fatal("Unsubscribe of an unknown key reported success")
	}
	if !ix.Unsubscribe("c1", "", "sport/tennis/+") {
		t.Fatal("Unsubscribe failed")
	}
	if ix.Unsubscribe("c1", "", "sport/tennis/+") {
		t.Fatal("second Unsubscribe reported success")
	}
	wantSubs(t, ix, "sport/tennis/player1")
	if _, ok := ix.Get("c1", "", "sport/tennis/+"); ok || ix.Count() != 0 {
		t.Fatal("subscription still present")
	}
	if n := ix.root.countNodes(); n != 1 {
		t.Fatalf("trie keeps %d nodes after the last unsubscribe, want 1", n)
	}
}

func TestIndexCallerKeepsOwnCopy(t *testing.T) {
	ix := NewIndex()
	sub := Subscription{ClientID: "c1", Filter: "a", QoS: 1}
	ix.Subscribe(sub)
	sub.QoS = 2
	if got, _ := ix.Get("c1", "", "a"); got.QoS != 1 {
		t.Fatal("the index aliases the caller's Subscription")
	}
}

func TestIndexOverlapping(t *testing.T) {
	// A client's overlapping subscriptions are all returned; the broker
	// delivers one copy with every identifier [MQTT-3.3.4-2] [MQTT-3.3.4-3].
	ix := NewIndex()
	for i, f := range []string{"sport/#", "sport/tennis/+", "+/tennis/player1", "sport/tennis/player1", "#"} {
		ix.Subscribe(Subscription{ClientID: "c1", Filter: f, Identifier: uint32(i + 1)})
	}
	ix.Subscribe(Subscription{ClientID: "c2", Filter: "sport/+"})
	wantSubs(t, ix, "sport/tennis/player1",
		"c1:sport/#", "c1:sport/tennis/+", "c1:+/tennis/player1", "c1:sport/tennis/player1", "c1:#")
	wantSubs(t, ix, "sport/tennis", "c1:sport/#", "c1:#", "c2:sport/+")
	wantSubs(t, ix, "sport", "c1:sport/#", "c1:#") // [MQTT-4.7.1-2]
	wantSubs(t, ix, "$SYS/tennis/player1")         // [MQTT-4.7.2-1]
}

func TestIndexDollarTopics(t *testing.T) {
	ix := NewIndex()
	for _, f := range []string{"#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+", "+"} {
		ix.Subscribe(Subscription{ClientID: "c", Filter: f})
	}
	ix.Subscribe(Subscription{ClientID: "s", Group: "g", Filter: "#"})
	wantSubs(t, ix, "$SYS/monitor/Clients", "c:$SYS/#", "c:$SYS/monitor/+") // [MQTT-4.7.2-1]
	wantShared(t, ix, "$SYS/monitor/Clients")                               // [MQTT-4.7.2-1]
	wantSubs(t, ix, "$SYS", "c:$SYS/#")
	wantSubs(t, ix, "a/monitor/Clients", "c:#", "c:+/monitor/Clients")
	wantShared(t, ix, "a/monitor/Clients", "g/#[s]")
}

func TestIndexEmptyLevels(t *testing.T) {
	ix := NewIndex()
	for _, f := range []string{"/", "+/+", "/+", "+", "a//b", "a/+/b", "a/", "#"} {
		ix.Subscribe(Subscription{ClientID: "c", Filter: f})
	}
	wantSubs(t, ix, "/", "c:/", "c:+/+", "c:/+", "c:#")
	wantSubs(t, ix, "a//b", "c:a//b", "c:a/+/b", "c:#")
	wantSubs(t, ix, "a/", "c:a/", "c:+/+", "c:#")
	wantSubs(t, ix, "a", "c:+", "c:#")
}

func TestIndexUnsubscribeAll(t *testing.T) {
	ix := NewIndex()
	for i := range 50 {
		ix.Subscribe(Subscription{ClientID: "gone", Filter: fmt.Sprintf("a/%d/+", i)})
	}
	ix.Subscribe(Subscription{ClientID: "gone", Filter: "#"})
	ix.Subscribe(Subscription{ClientID: "gone", Group: "g", Filter: "a/#"})
	ix.Subscribe(Subscription{ClientID: "stays", Filter: "a/1/+"})
	ix.Subscribe(Subscription{ClientID: "stays", Group: "g", Filter: "a/#"})
	ix.Match("a/1/x") // populate the cache

	if n := ix.UnsubscribeAll("gone"); n != 52 {
		t.Fatalf("UnsubscribeAll = %d, want 52", n)
	}
	if n := ix.UnsubscribeAll("gone"); n != 0 {
		t.Fatalf("second UnsubscribeAll = %d, want 0", n)
	}
	wantSubs(t, ix, "a/1/x", "stays:a/1/+")
	wantShared(t, ix, "a/1/x", "g/a/#[stays]")
	if ix.Count() != 2 {
		t.Fatalf("Count = %d, want 2", ix.Count())
	}
	n := 0
	ix.ClientSubscriptions("gone", func(*Subscription) bool { n++; return true })
	if n != 0 {
		t.Fatalf("ClientSubscriptions of a removed client yields %d", n)
	}
	ix.UnsubscribeAll("stays")
	if n := ix.root.countNodes(); n != 1 {
		t.Fatalf("trie keeps %d nodes, want 1", n)
	}
}

func TestIndexClientSubscriptions(t *testing.T) {
	ix := NewIndex()
	want := []string{"/a", "a/#", "g:a/#", "h:+"}
	for _, k := range want {
		group, filter, _ := strings.Cut(k, ":")
		if filter == "" {
			group, filter = "", k
		}
		ix.Subscribe(Subscription{ClientID: "c", Group: group, Filter: filter})
	}
	ix.Subscribe(Subscription{ClientID: "other", Filter: "x"})
	var got []string
	ix.ClientSubscriptions("c", func(s *Subscription) bool {
		k := s.Filter
		if s.Group != "" {
			k = s.Group + ":" + k
		}
		got = append(got, k)
		// fn runs without the lock: calling back in must not deadlock.
		ix.Subscribe(Subscription{ClientID: "reentrant", Filter: s.Filter})
		return true
	})
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("ClientSubscriptions = %q, want %q", got, want)
	}
	n := 0
	ix.ClientSubscriptions("c", func(*Subscription) bool { n++; return false })
	if n != 1 {
		t.Fatalf("ClientSubscriptions went on after fn returned false (%d calls)", n)
	}
}

func TestIndexShared(t *testing.T) {
	ix := NewIndex()
	// One group is identified by its name and its filter [MQTT-4.8.2-1].
	ix.Subscribe(Subscription{ClientID: "c1", Group: "g", Filter: "sensors/+"})
	ix.Subscribe(Subscription{ClientID: "c2", Group: "g", Filter: "sensors/+"})
	ix.Subscribe(Subscription{ClientID: "c3", Group: "g", Filter: "sensors/+"})
	ix.Subscribe(Subscription{ClientID: "c1", Group: "g", Filter: "sensors/#"})
	ix.Subscribe(Subscription{ClientID: "c4", Group: "h", Filter: "sensors/+"})
	ix.Subscribe(Subscription{ClientID: "c1", Filter: "sensors/+"}) // not shared
	wantShared(t, ix, "sensors/t1", "g/sensors/+[c1,c2,c3]", "g/sensors/#[c1]", "h/sensors/+[c4]")
	wantSubs(t, ix, "sensors/t1", "c1:sensors/+")
	if ix.Count() != 6 {
		t.Fatalf("Count = %d, want 6", ix.Count())
	}

	group := func() *SharedGroup {
		for _, g := range ix.Match("sensors/t1").Shared {
			if g.Name == "g" && g.Filter == "sensors/+" {
				return g
			}
		}
		t.Fatal("group g on sensors/+ not found")
		return nil
	}
	// Round-robin: each member is chosen in turn.
	g := group()
	var picked []string
	for range 6 {
		picked = append(picked, g.Members[g.Next()%uint32(len(g.Members))].ClientID)
	}
	m := g.Members
	if want := []string{m[0].ClientID, m[1].ClientID, m[2].ClientID, m[0].ClientID, m[1].ClientID, m[2].ClientID}; !slices.Equal(picked, want) {
		t.Fatalf("round-robin picked %q, want %q", picked, want)
	}

	// The counter survives membership changes; old snapshots are unchanged.
	if !ix.Unsubscribe("c2", "g", "sensors/+") {
		t.Fatal("Unsubscribe of a shared member failed")
	}
	g2 := group()
	if len(g.Members) != 3 || len(g2.Members) != 2 {
		t.Fatalf("snapshot sizes %d, %d; want 3, 2", len(g.Members), len(g2.Members))
	}
	if n := g2.Next(); n != 6 {
		t.Fatalf("counter after membership change = %d, want 6", n)
	}
	if n := g.Next(); n != 7 {
		t.Fatalf("old snapshot does not share the counter: %d, want 7", n)
	}

	// Replacing a member's options keeps its place.
	ix.Subscribe(Subscription{ClientID: "c3", Group: "g", Filter: "sensors/+", QoS: 2})
	g3 := group()
	if len(g3.Members) != 2 {
		t.Fatalf("replace changed the group size to %d", len(g3.Members))
	}
	for _, s := range g3.Members {
		if s.ClientID == "c3" && s.QoS != 2 {
			t.Fatal("replaced member has old options")
		}
	}

	ix.Unsubscribe("c1", "g", "sensors/+")
	ix.Unsubscribe("c3", "g", "sensors/+")
	wantShared(t, ix, "sensors/t1", "g/sensors/#[c1]", "h/sensors/+[c4]")
	if _, ok := ix.Get("c1", "g", "sensors/#"); !ok {
		t.Fatal("Get of a shared subscription failed")
	}
}

func TestIndexCacheInvalidation(t *testing.T) {
	ix := NewIndex()
	topics := []string{"a", "a/b", "a/b/c", "x/b", "$SYS/b", "/"}
	check := func() {
		t.Helper()
		for _, topic := range topics {
			ix.Match(topic) // the second miss fills the cache, the third hits
			r := ix.Match(topic)
			if !ix.cache.has(topic) || ix.Match(topic) != r {
				t.Fatalf("Match(%q) not cached", topic)
			}
		}
	}
	steps := []func(){
		func() { ix.Subscribe(Subscription{ClientID: "1", Filter: "a/b"}) },
		func() { ix.Subscribe(Subscription{ClientID: "2", Filter: "+/b"}) },
		func() { ix.Subscribe(Subscription{ClientID: "3", Filter: "#"}) },
		func() { ix.Subscribe(Subscription{ClientID: "4", Group: "g", Filter: "a/#"}) },
		func() { ix.Subscribe(Subscription{ClientID: "1", Filter: "a/b", QoS: 1}) },
		func() { ix.Unsubscribe("2", "", "+/b") },
		func() { ix.Subscribe(Subscription{ClientID: "5", Group: "g", Filter: "a/#"}) },
		func() { ix.Unsubscribe("4", "g", "a/#") },
		func() { ix.UnsubscribeAll("3") },
		func() { ix.Subscribe(Subscription{ClientID: "6", Filter: "$SYS/#"}) },
		func() { ix.Subscribe(Subscription{ClientID: "7", Filter: "+/+"}) },
		func() { ix.UnsubscribeAll("1") },
	}
	for i, step := range steps {
		check()
		step()
		for _, topic := range topics {
			assertMatches(t, ix, topic, fmt.Sprintf("after step %d", i))
		}
	}
}

// assertMatches compares ix.Match(topic) with a brute-force scan of every
// subscription in ix.
func assertMatches(t *testing.T, ix *Index, topic, context string) {
	t.Helper()
	var wantSubs, wantShared []string
	members := map[string][]string{}
	ix.mu.RLock()
	for _, c := range ix.clients {
		var all []*Subscription
		c.each(func(s *Subscription) { all = append(all, s) })
		for _, s := range all {
			if !refMatch(s.Filter, topic) {
				continue
			}
			if s.Group == "" {
				wantSubs = append(wantSubs, fmt.Sprintf("%s:%s", s.ClientID, s.Filter))
			} else {
				k := s.Group + "/" + s.Filter
				members[k] = append(members[k], s.ClientID)
			}
		}
	}
	ix.mu.RUnlock()
	for k, m := range members {
		slices.Sort(m)
		wantShared = append(wantShared, k+"["+strings.Join(m, ",")+"]")
	}
	slices.Sort(wantSubs)
	slices.Sort(wantShared)
	r := ix.Match(topic)
	gotSubs, gotShared := keys(r)
	if !slices.Equal(gotSubs, wantSubs) || !slices.Equal(gotShared, wantShared) {
		t.Fatalf("%s: Match(%q) = %q %q, want %q %q", context, topic, gotSubs, gotShared, wantSubs, wantShared)
	}
	// The options returned are the current ones.
	for _, s := range r.Subscriptions {
		if cur, ok := ix.Get(s.ClientID, s.Group, s.Filter); !ok || cur != *s {
			t.Fatalf("%s: Match(%q) returned stale %+v, current %+v", context, topic, *s, cur)
		}
	}
}

// TestIndexRandomized runs a few thousand random operations and checks every
// Match against a brute-force scan, with the cache warm: with short filters
// and few clients, and with deep filters (chains of literal levels that
// later filters split) and many clients per node (indexed by client ID).
func TestIndexRandomized(t *testing.T) {
	for _, tc := range []struct {
		name             string
		maxLevels, users int
	}{{"short", 4, 12}, {"deep", 8, 40}} {
		t.Run(tc.name, func(t *testing.T) { testIndexRandomized(t, tc.maxLevels, tc.users) })
	}
}

func testIndexRandomized(t *testing.T, maxLevels, users int) {
	rng := rand.New(rand.NewPCG(1, 2))
	levels := []string{"a", "b", "", "$s"}
	filterLevels := append(slices.Clone(levels), "+", "#")
	randTopic := func(alphabet []string) string {
		n := 1 + rng.IntN(maxLevels)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return strings.Join(parts, "/")
	}
	var names []string
	for len(names) < 40 {
		if n := randTopic(levels); ValidateName(n) == nil && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	ix := NewIndex()
	for op := range 5000 {
		client := fmt.Sprint("c", rng.IntN(users))
		group := []string{"", "", "g1", "g2"}[rng.IntN(4)]
		switch p := rng.IntN(100); {
		case p < 40:
			f := randTopic(filterLevels)
			if rng.IntN(3) == 0 { // a filter that starts like a topic name
				f = names[rng.IntN(len(names))]
			}
			if ValidateFilter(f) != nil {
				continue
			}
			_, existed := ix.Get(client, group, f)
			if got := ix.Subscribe(Subscription{ClientID: client, Group: group, Filter: f, QoS: byte(rng.IntN(3))}); got != existed {
				t.Fatalf("op %d: Subscribe existed = %v, want %v", op, got, existed)
			}
		case p < 65:
			// Unsubscribe one of the client's filters, or a random one.
			f := randTopic(filterLevels)
			ix.ClientSubscriptions(client, func(s *Subscription) bool {
				if rng.IntN(2) == 0 {
					group, f = s.Group, s.Filter
					return false
				}
				return true
			})
			_, existed := ix.Get(client, group, f)
			if got := ix.Unsubscribe(client, group, f); got != existed {
				t.Fatalf("op %d: Unsubscribe = %v, want %v", op, got, existed)
			}
		case p < 68:
			n := 0
			ix.ClientSubscriptions(client, func(*Subscription) bool { n++; return true })
			if got := ix.UnsubscribeAll(client); got != n {
				t.Fatalf("op %d: UnsubscribeAll = %d, want %d", op, got, n)
			}
		default:
			assertMatches(t, ix, names[rng.IntN(len(names))], fmt.Sprintf("op %d", op))
		}
	}
	for _, n := range names {
		assertMatches(t, ix, n, "final")
	}
	total := 0
	for i := range users {
		total += ix.UnsubscribeAll(fmt.Sprint("c", i))
	}
	if ix.Count() != 0 || total == 0 {
		t.Fatalf("Count = %d after removing %d", ix.Count(), total)
	}
	if n := ix.root.countNodes(); n != 1 {
		t.Fatalf("trie keeps %d nodes after removing everything, want 1", n)
	}
}

// A filter of literal levels is one node however many levels it has, and
// a filter that leaves it halfway splits it; matching sees through both.
func TestIndexChains(t *testing.T) {
	ix := NewIndex()
	deep := strings.Repeat("a/", 65530) + "a" // 65,531 levels, the most a filter can have
	ix.Subscribe(Subscription{ClientID: "deep", Filter: deep})
	if n := ix.root.countNodes(); n != 2 {
		t.Fatalf("a %d-level filter takes %d nodes, want 2 (root and one chain)", Levels(deep), n)
	}
	wantSubs(t, ix, deep, "deep:"+deep)
	wantSubs(t, ix, deep+"/a")
	wantSubs(t, ix, deep[:len(deep)-2])

	ix.Subscribe(Subscription{ClientID: "c", Filter: "x/y/z/w"})
	ix.Subscribe(Subscription{ClientID: "c", Filter: "x/y"})     // ends inside the chain
	ix.Subscribe(Subscription{ClientID: "c", Filter: "x/y/q"})   // leaves it
	ix.Subscribe(Subscription{ClientID: "c", Filter: "x/+/z/w"}) // a wildcard beside it
	ix.Subscribe(Subscription{ClientID: "c", Filter: "x/y/z/#"})
	wantSubs(t, ix, "x/y/z/w", "c:x/+/z/w", "c:x/y/z/#", "c:x/y/z/w")
	wantSubs(t, ix, "x/y", "c:x/y")
	wantSubs(t, ix, "x/y/z", "c:x/y/z/#")
	wantSubs(t, ix, "x/y/q", "c:x/y/q")
	wantSubs(t, ix, "x/y/zz/w")
	wantSubs(t, ix, "x/q/z/w", "c:x/+/z/w")
	wantSubs(t, ix, "x/yy/z/w", "c:x/+/z/w")
	wantSubs(t, ix, "x/y/z/w/v", "c:x/y/z/#")
	ix.UnsubscribeAll("c")
	ix.UnsubscribeAll("deep")
	if n := ix.root.countNodes(); n != 1 {
		t.Fatalf("trie keeps %d nodes after removing everything, want 1", n)
	}
}

func TestIndexMatchCacheHitDoesNotAllocate(t *testing.T) {
	ix := NewIndex()
	ix.Subscribe(Subscription{ClientID: "c", Filter: "sport/+/player1"})
	topic := "sport/tennis/player1"
	ix.Match(topic)
	ix.Match(topic)
	if n := testing.AllocsPerRun(100, func() { ix.Match(topic) }); n != 0 {
		t.Fatalf("Match on a cache hit allocates %v times", n)
	}
}

func TestIndexCacheAdmission(t *testing.T) {
	ix := NewIndex()
	ix.Subscribe(Subscription{ClientID: "c", Filter: "a/+"})
	ix.Match("a/1")
	if ix.cache.has("a/1") {
		t.Fatal("topic cached on its first miss")
	}
	r := ix.Match("a/1")
	if !ix.cache.has("a/1") || ix.Match("a/1") != r {
		t.Fatal("topic not cached on its second miss")
	}
	for i := range 10 * doorReset {
		ix.Match(fmt.Sprint("a/x", i))
	}
	if n := ix.cache.len(); n > cacheMax/2 {
		t.Fatalf("%d topics seen once were cached", n)
	}
}

func TestIndexCacheBounded(t *testing.T) {
	ix := NewIndex()
	ix.Subscribe(Subscription{ClientID: "c", Filter: "t/#"})
	hot := "t/hot"
	for i := range 3 * cacheMax {
		ix.Match(hot)
		ix.Match(fmt.Sprint("t/", i))
		ix.Match(fmt.Sprint("t/", i))
		if n := ix.cache.len(); n > cacheMax+1 {
			t.Fatalf("cache holds %d entries, bound %d", n, cacheMax)
		}
	}
	r := ix.Match(hot)
	if ix.Match(hot) != r || len(r.Subscriptions) != 1 {
		t.Fatal("hot topic lost")
	}
	if !ix.cache.has(hot) {
		t.Fatal("trimming evicted the hot topic")
	}
	ix.Unsubscribe("c", "", "t/#")
	wantSubs(t, ix, "t/5")
	wantSubs(t, ix, hot)
}

// TestIndexConcurrent checks, under the race detector, that each goroutine
// sees its own changes in Match at once despite the cache and other writers.
func TestIndexConcurrent(t *testing.T) {
	ix := NewIndex()
	ix.Subscribe(Subscription{ClientID: "base", Filter: "t/#"})
	const workers, rounds = 8, 300
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprint("w", w)
			filter := fmt.Sprintf("t/%d/+", w)
			topic := fmt.Sprintf("t/%d/x", w)
			has := func() bool {
				for _, s := range ix.Match(topic).Subscriptions {
					if s.ClientID == id {
						return true
					}
				}
				return false
			}
			for i := range rounds {
				ix.Match("t/shared")
				if i%2 == 0 {
					ix.Subscribe(Subscription{ClientID: id, Filter: filter})
					ix.Subscribe(Subscription{ClientID: id, Group: "g", Filter: "t/+/x"})
				} else {
					ix.Subscribe(Subscription{ClientID: id, Filter: "t/#", QoS: 1})
				}
				if !has() {
					errs <- fmt.Errorf("%s: subscription not visible in Match", id)
					return
				}
				for _, g := range ix.Match(topic).Shared {
					_ = g.Members[g.Next()%uint32(len(g.Members))]
				}
				if i%2 == 0 {
					ix.Unsubscribe(id, "", filter)
				} else {
					ix.UnsubscribeAll(id)
				}
				if has() {
					errs <- fmt.Errorf("%s: subscription still visible in Match", id)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ix.UnsubscribeAll("base")
	for w := range workers {
		ix.UnsubscribeAll(fmt.Sprint("w", w))
	}
	if ix.Count() != 0 || ix.root.countNodes() != 1 {
		t.Fatalf("Count = %d, nodes = %d after removing everything", ix.Count(), ix.root.countNodes())
	}
}

// countNodes returns the number of nodes at and below n.
func (n *node) countNodes() int {
	c := 1
	for _, ch := range n.children {
		c += ch.countNodes()
	}
	plus, hash := n.wild()
	if plus != nil {
		c += plus.countNodes()
	}
	if hash != nil {
		c += hash.countNodes()
	}
	return c
}

func (c *resultCache) has(topic string) bool {
	_, ok := c.m.Load(topic)
	return ok
}

// TestClientOneSubscription: a client's only subscription is kept without
// a map, and a second, a replacement and removals go through both forms.
func TestClientOneSubscription(t *testing.T) {
	ix := NewIndex()
	ix.Subscribe(Subscription{ClientID: "c", Filter: "a/b", QoS: 0})
	if c := ix.clients["c"]; c.one == nil || c.subs != nil {
		t.Fatalf("one subscription: one %v, subs %v", c.one, c.subs)
	}
	if !ix.Subscribe(Subscription{ClientID: "c", Filter: "a/b", QoS: 1}) {
		t.Fatal("replacing the only subscription: existed false")
	}
	if s, ok := ix.Get("c", "", "a/b"); !ok || s.QoS != 1 {
		t.Fatalf("replaced: %+v %v", s, ok)
	}
	ix.Subscribe(Subscription{ClientID: "c", Filter: "x/#"})
	ix.Subscribe(Subscription{ClientID: "c", Group: "g", Filter: "a/b"})
	if c := ix.clients["c"]; c.one != nil || len(c.subs) != 2 || c.len() != 3 {
		t.Fatalf("three subscriptions: one %v, subs %d, len %d", c.one, len(c.subs), c.len())
	}
	if !ix.Unsubscribe("c", "", "a/b") || !ix.Unsubscribe("c", "", "x/#") {
		t.Fatal("unsubscribe failed")
	}
	if _, ok := ix.Get("c", "g", "a/b"); !ok || ix.Count() != 1 {
		t.Fatalf("shared one left: count %d", ix.Count())
	}
	ix.Subscribe(Subscription{ClientID: "d", Filter: "q"})
	if !ix.Unsubscribe("d", "", "q") || ix.clients["d"] != nil {
		t.Fatal("the only subscription removed: client kept")
	}
}
