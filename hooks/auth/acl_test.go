package auth

import (
	"strings"
	"testing"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/topics"
)

const testACL = `# anonymous clients
topic read public/#
topic write public/anon/+

user alice
topic readwrite alice/#
topic read shared/+/status
topic deny shared/secret/status
topic write sensors/+/temp
topic read $SYS/broker/#
topic room 101/lights

user bob
topic deny #
topic read bob/#

user dave smith
topic write spaces in/topic

user eve
topic #

# patterns apply to everyone
pattern read devices/%c/cmd
pattern write devices/%c/state
pattern readwrite users/%u/#
pattern deny users/%u/private/#
`

func TestACLRules(t *testing.T) {
	rules, err := ParseACL(strings.NewReader(testACL))
	if err != nil {
		t.Fatal(err)
	}
	const R, W, D = tern.Read, tern.Write, tern.Deliver
	tests := []struct {
		user, client, topic string
		access              tern.Access
		want                bool
	}{
		// Anonymous: the lines before the first user.
		{"", "c1", "public/news", R, true},
		{"", "c1", "public/#", R, true},
		{"", "c1", "public/news", W, false},
		{"", "c1", "public/anon/x", W, true},
		{"", "c1", "public/anon/x/y", W, false},
		{"", "c1", "alice/inbox", R, false},
		{"", "c1", "#", R, true}, // overlaps public/#: the rest is filtered per message
		{"", "c1", "public/news", D, true},
		{"", "c1", "alice/inbox", D, false},
		{"", "c1", "public/anon/x", D, true},
		// A user gets the user's own lines, not the anonymous ones.
		{"alice", "c2", "public/news", R, false},
		{"alice", "c2", "alice/inbox", W, true},
		{"alice", "c2", "alice/inbox", R, true},
		{"alice", "c2", "alice/#", R, true},
		{"alice", "c2", "alice", R, true},
		{"alice", "c2", "alice/+/x", R, true},
		{"alice", "c2", "#", R, true},
		{"alice", "c2", "+/inbox", R, true},
		{"alice", "c2", "alice/inbox", D, true},
		{"alice", "c2", "bob/inbox", D, false},
		{"alice", "c2", "public/news", D, false},
		// read vs write.
		{"alice", "c2", "sensors/k/temp", W, true},
		{"alice", "c2", "sensors/k/temp", R, false},
		{"alice", "c2", "shared/x/status", R, true},
		{"alice", "c2", "shared/x/status", W, false},
		{"alice", "c2", "shared/x/+", R, true},
		{"alice", "c2", "shared/x/status", D, true},
		{"alice", "c2", "shared/x/other", D, false},
		{"alice", "c2", "sensors/k/temp", D, false}, // write only
		// deny takes precedence: it refuses the subscriptions it covers
		// entirely, and the messages it matches in the others.
		{"alice", "c2", "shared/secret/status", R, false},
		{"alice", "c2", "shared/secret/status", D, false},
		{"alice", "c2", "shared/+/status", R, true}, // only partly denied
		{"alice", "c2", "shared/#", R, true},
		{"bob", "c3", "bob/x", R, false},
		{"bob", "c3", "bob/x", W, false},
		{"bob", "c3", "bob/x", D, false},
		{"bob", "c3", "#", R, false},
		// $ topics: a grant for them is needed explicitly.
		{"alice", "c2", "$SYS/broker/uptime", R, true},
		{"alice", "c2", "$SYS/broker/#", R, true},
		{"alice", "c2", "$SYS/#", R, true}, // overlaps $SYS/broker/#
		{"alice", "c2", "$SYS/broker/uptime", D, true},
		{"alice", "c2", "$SYS/load", D, false},
		{"eve", "c4", "anything/at/all", W, true},
		{"eve", "c4", "anything/at/all", D, true},
		{"eve", "c4", "#", R, true}, // the deny pattern users/eve/private/# covers part of it
		{"eve", "c4", "users/eve/private/x", D, false},
		{"eve", "c4", "users/eve/private/#", R, false},
		{"eve", "c4", "$SYS/broker/uptime", D, false}, // "#" does not match $ topics
		{"eve", "c4", "users/+/public", R, true},
		{"eve", "c4", "$SYS/broker/uptime", R, false},
		{"eve", "c4", "$SYS/#", R, false},
		// Shared subscriptions are checked by their filter.
		{"alice", "c2", "$share/g/alice/#", R, true},
		{"alice", "c2", "$share/g/bob/#", R, false},
		// Names and filters with spaces.
		{"alice", "c2", "room 101/lights", R, true},
		{"dave smith", "c5", "spaces in/topic", W, true},
		{"dave", "c5", "spaces in/topic", W, false},
		// Unknown users get nothing but the patterns.
		{"mallory", "c6", "public/news", R, false},
		// Patterns: %c.
		{"mallory", "dev1", "devices/dev1/cmd", R, true},
		{"mallory", "dev1", "devices/dev1/cmd", W, false},
		{"mallory", "dev1", "devices/dev1/state", W, true},
		{"mallory", "dev1", "devices/dev2/state", W, false},
		{"mallory", "dev1", "devices/+/cmd", R, true},
		{"mallory", "dev1", "devices/dev1/cmd", D, true},
		{"mallory", "dev1", "devices/dev2/cmd", D, false},
		{"", "dev1", "devices/dev1/cmd", R, true},
		// Patterns: %u, with their own deny.
		{"mallory", "c6", "users/mallory/a", W, true},
		{"mallory", "c6", "users/mallory/#", R, true}, // the private deny covers part of it
		{"mallory", "c6", "users/mallory/a", D, true},
		{"mallory", "c6", "users/mallory/private/x", D, false},
		{"mallory", "c6", "users/mallory/private/#", R, false},
		{"mallory", "c6", "users/mallory/private/+", R, false},
		{"mallory", "c6", "users/mallory/public/#", R, true},
		{"mallory", "c6", "users/mallory/private/x", W, false},
		{"mallory", "c6", "users/alice/a", W, false},
		{"", "c6", "users//a", W, false}, // %u never applies to anonymous clients
		// Values that would widen a pattern are not substituted.
		{"a/b", "c7", "users/a/b/x", W, false},
		{"+", "c7", "users/+/x", R, false},
		{"#", "c7", "users/#", R, false},
		{"#", "c7", "users/#", D, false},
		{"mallory", "dev/1", "devices/dev/1/cmd", R, false},
	}
	for _, tt := range tests {
		got := rules.Allowed(tt.user, tt.client, tt.topic, tt.access)
		if got != tt.want {
			a := map[tern.Access]string{R: "read", W: "write", D: "deliver"}[tt.access]
			t.Errorf("user %q client %q %s %q: allowed %v, want %v", tt.user, tt.client, a, tt.topic, got, tt.want)
		}
	}
}

// TestACLPartialDeny checks Mosquitto's split of read access: a
// subscription a deny rule covers only in part is allowed, and the deny is
// enforced per message (Deliver).
func TestACLPartialDeny(t *testing.T) {
	rules, err := ParseACL(strings.NewReader("user carol\ntopic read a/#\ntopic deny a/secret\ntopic deny a/private/#\ntopic write b/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	const R, W, D = tern.Read, tern.Write, tern.Deliver
	tests := []struct {
		topic  string
		access tern.Access
		want   bool
	}{
		{"a/#", R, true},
		{"a/x", D, true},
		{"a", D, true},
		{"a/secret", D, false},
		{"a/private/x", D, false},
		{"a/+", R, true},
		{"$share/g/a/#", R, true},
		{"+/secret", R, true}, // overlaps a/#; a/secret and b/secret are filtered per message
		{"b/secret", D, false},
		{"a/secret", R, false}, // entirely under a deny rule
		{"a/private/#", R, false},
		{"a/private/+/x", R, false},
		{"$share/g/a/secret", R, false},
		{"a/x", W, false},
		{"b/x", D, false}, // write is not read
		{"b/x", W, true},
		{"c/#", R, false},
		{"a/x", tern.Access(0), false},
	}
	for _, tt := range tests {
		if got := rules.Allowed("carol", "c", tt.topic, tt.access); got != tt.want {
			t.Errorf("access %d to %q: allowed %v, want %v", tt.access, tt.topic, got, tt.want)
		}
	}
}

func TestACLZeroValueDeniesEverything(t *testing.T) {
	var rules ACLRules
	if rules.Allowed("", "c", "a", tern.Write) || rules.Allowed("u", "c", "a", tern.Read) {
		t.Error("an empty ACL allowed access")
	}
	empty, err := ParseACL(strings.NewReader("# nothing\n"))
	if err != nil || empty.Allowed("", "c", "a", tern.Read) {
		t.Errorf("an empty file allowed access (err %v)", err)
	}
}

func TestParseACLErrors(t *testing.T) {
	tests := []struct {
		name, acl, want string
	}{
		{name: "unknown directive", acl: "topic a\nallow b\n", want: "line 2"},
		{name: "user without name", acl: "user\n", want: "line 1"},
		{name: "topic without filter", acl: "user a\ntopic read\ntopic\n", want: "line 3"},
		{name: "invalid filter", acl: "topic read a/#/b\n", want: "line 1"},
		{name: "invalid pattern", acl: "pattern write a/%u#\n", want: "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseACL(strings.NewReader(tt.acl))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	// "topic read" alone names the topic "read", as in Mosquitto.
	rules, err := ParseACL(strings.NewReader("topic read\n"))
	if err != nil || !rules.Allowed("", "c", "read", tern.Write) {
		t.Errorf("topic read: err %v", err)
	}
}

func TestACLReloadKeepsOldRules(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "acl", "topic read a/#\n")
	a, err := NewACL(path)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "acl", "topic read a/#\nbogus line\n")
	if err := a.Reload(); err == nil {
		t.Fatal("Reload of a bad file gave no error")
	}
	if !a.Rules().Allowed("", "c", "a/b", tern.Read) {
		t.Fatal("old rules lost after a failed reload")
	}
	writeFile(t, dir, "acl", "topic read b/#\n")
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if a.Rules().Allowed("", "c", "a/b", tern.Read) || !a.Rules().Allowed("", "c", "b/c", tern.Read) {
		t.Error("Reload did not replace the rules")
	}
}

func TestCoversAndOverlaps(t *testing.T) {
	tests := []struct {
		outer, inner     string
		covers, overlaps bool
	}{
		{"a/#", "a/+/b", true, true},
		{"a/#", "a", true, true},
		{"a/#", "#", false, true},
		{"#", "#", true, true},
		{"#", "a/b", true, true},
		{"#", "$SYS/#", false, false},
		{"+/#", "$SYS/x", false, false},
		{"$SYS/#", "$SYS/+/x", true, true},
		{"a/+", "a/#", false, true},
		{"a/+", "a/b", true, true},
		{"a/+", "a", false, false},
		{"a/+", "a/+", true, true},
		{"a/+/c", "a/b/+", false, true},
		{"a/b", "a/+", false, true},
		{"a/b", "a/c", false, false},
		{"+/+", "/", true, true},
		{"a/+/#", "a/b", true, true},
		{"a/+/#", "a/#", false, true},
		{"a/b/c", "a/b", false, false},
		{"a/b/#", "a/b/c/d/#", true, true},
	}
	for _, tt := range tests {
		if got := Covers(tt.outer, tt.inner); got != tt.covers {
			t.Errorf("Covers(%q, %q) = %v, want %v", tt.outer, tt.inner, got, tt.covers)
		}
		if got := Overlaps(tt.outer, tt.inner); got != tt.overlaps {
			t.Errorf("Overlaps(%q, %q) = %v, want %v", tt.outer, tt.inner, got, tt.overlaps)
		}
		if got := Overlaps(tt.inner, tt.outer); got != tt.overlaps {
			t.Errorf("Overlaps(%q, %q) = %v, want %v", tt.inner, tt.outer, got, tt.overlaps)
		}
	}
}

// TestCoversExhaustive checks Covers and Overlaps against their definitions
// over every filter and topic name of up to three levels from a small
// alphabet (names up to four levels), using topics.Match.
func TestCoversExhaustive(t *testing.T) {
	nameLevels := []string{"a", "b", "c", "", "$x"}
	filterLevels := []string{"a", "b", "", "$x", "+", "#"}
	var names, filters []string
	var grow func(prefix []string, levels []string, depth int, out *[]string, filter bool)
	grow = func(prefix []string, levels []string, depth int, out *[]string, filter bool) {
		if len(prefix) > 0 {
			s := strings.Join(prefix, "/")
			if !filter || topics.ValidateFilter(s) == nil {
				if filter || topics.ValidateName(s) == nil {
					*out = append(*out, s)
				}
			}
			if prefix[len(prefix)-1] == "#" {
				return
			}
		}
		if len(prefix) == depth {
			return
		}
		for _, l := range levels {
			if l == "$x" && len(prefix) > 0 {
				l = "x$"
			}
			grow(append(prefix, l), levels, depth, out, filter)
		}
	}
	grow(nil, nameLevels, 4, &names, false)
	grow(nil, filterLevels, 3, &filters, true)
	// The names each filter matches, as a bit set.
	words := (len(names) + 63) / 64
	matches := make(map[string][]uint64, len(filters))
	for _, f := range filters {
		m := make([]uint64, words)
		for i, n := range names {
			if topics.Match(f, n) {
				m[i/64] |= 1 << (i % 64)
			}
		}
		matches[f] = m
	}
	for _, outer := range filters {
		for _, inner := range filters {
			covers, overlaps := true, false
			for w := range words {
				o, in := matches[outer][w], matches[inner][w]
				covers = covers && in&^o == 0
				overlaps = overlaps || in&o != 0
			}
			if got := Covers(outer, inner); got != covers {
				t.Fatalf("Covers(%q, %q) = %v, want %v", outer, inner, got, covers)
			}
			if got := Overlaps(outer, inner); got != overlaps {
				t.Fatalf("Overlaps(%q, %q) = %v, want %v", outer, inner, got, overlaps)
			}
		}
	}
	t.Logf("%d filters x %d filters over %d names", len(filters), len(filters), len(names))
}
