package topics_test

import (
	"fmt"

	"github.com/ternmq/tern/topics"
)

func ExampleMatch() {
	fmt.Println(topics.Match("sport/tennis/+", "sport/tennis/player1"))
	fmt.Println(topics.Match("sport/#", "sport"))
	fmt.Println(topics.Match("#", "$SYS/broker/uptime"))
	// Output:
	// true
	// true
	// false
}

func ExampleValidateFilter() {
	for _, f := range []string{"sport/+/player1", "sport/tennis#", "$share/group/sport/#", "$share//sport"} {
		fmt.Println(topics.ValidateFilter(f))
	}
	// Output:
	// <nil>
	// topics: invalid topic filter: '#' must be the last level and alone in it
	// <nil>
	// topics: invalid topic filter: empty $share group name
}

func ExampleIndex() {
	ix := topics.NewIndex()
	for _, f := range []string{"sensors/+/temp", "$share/workers/sensors/#"} {
		if err := topics.ValidateFilter(f); err != nil {
			panic(err)
		}
		group, filter, _ := topics.ParseShared(f)
		ix.Subscribe(topics.Subscription{ClientID: "c1", Group: group, Filter: filter, QoS: 1})
	}
	ix.Subscribe(topics.Subscription{ClientID: "c2", Group: "workers", Filter: "sensors/#"})

	r := ix.Match("sensors/kitchen/temp")
	for _, s := range r.Subscriptions {
		fmt.Println("deliver to", s.ClientID, "for", s.Filter)
	}
	for _, g := range r.Shared {
		for range 3 { // one member per message, round-robin
			m := g.Members[g.Next()%uint32(len(g.Members))]
			fmt.Println("deliver to", m.ClientID, "for", g.Name, g.Filter)
		}
	}
	// Output:
	// deliver to c1 for sensors/+/temp
	// deliver to c1 for workers sensors/#
	// deliver to c2 for workers sensors/#
	// deliver to c1 for workers sensors/#
}

func ExampleRetained() {
	r := topics.NewRetained[string]()
	r.Set("home/kitchen/temp", "21.5")
	r.Set("home/garage/temp", "12.0")
	r.Set("$SYS/broker/uptime", "3600")
	r.Delete("home/garage/temp")

	r.Match("home/+/temp", func(topic, v string) bool {
		fmt.Println(topic, v)
		return true
	})
	n := 0
	r.Match("#", func(string, string) bool { n++; return true })
	fmt.Println(n, "retained message(s) match '#' of", r.Len())
	// Output:
	// home/kitchen/temp 21.5
	// 1 retained message(s) match '#' of 2
}
