package bridge

import (
	"strings"
	"testing"
)

// The topic mapping table: every "topic" example of Mosquitto's
// documentation (mosquitto.conf(5), "CONFIGURING BRIDGES", and the issues
// users filed about it), empty prefixes, topics equal to a prefix, and the
// capture form. Each case is a Mosquitto topic line, the filters the bridge
// subscribes to (local for out, remote for in), and topics mapped each
// way ("" when the rule's filter does not match, or the topic cannot be
// mapped).
func TestTopicMapping(t *testing.T) {
	t.Parallel()
	type pair struct{ local, remote string }
	tests := []struct {
		line         string
		localFilter  string // subscribed locally (out, both); "" for in
		remoteFilter string // subscribed on the remote (in, both); "" for out
		maps         []pair // local <-> remote, checked in the rule's directions
	}{
		// mosquitto.conf(5), the table of prefixes.
		{`pattern both 0 L/ R/`, "L/pattern", "R/pattern", []pair{{"L/pattern", "R/pattern"}}},
		{`pattern both 0 L/ ""`, "L/pattern", "pattern", []pair{{"L/pattern", "pattern"}}},
		{`pattern both 0 "" R/`, "pattern", "R/pattern", []pair{{"pattern", "R/pattern"}}},
		{`pattern both 0 "" ""`, "pattern", "pattern", []pair{{"pattern", "pattern"}}},
		{`"" both 0 local remote`, "local", "remote", []pair{{"local", "remote"}}},
		// "To remap an entire topic tree".
		{`# both 2 local/topic/ remote/topic/`, "local/topic/#", "remote/topic/#",
			[]pair{{"local/topic/a/b", "remote/topic/a/b"}, {"local/topic/", "remote/topic/"}, {"local/topic", "remote/topic"}}},
		// "Example Bridge Topic Remapping": a $SYS topic of the remote.
		{`clients/total in 0 test/mosquitto/org/ $SYS/broker/`, "", "$SYS/broker/clients/total",
			[]pair{{"test/mosquitto/org/clients/total", "$SYS/broker/clients/total"}}},
		// Defaults: direction out, QoS 0, no prefixes.
		{`sensors/#`, "sensors/#", "", []pair{{"sensors/1/t", "sensors/1/t"}}},
		{`sensors/# in`, "", "sensors/#", []pair{{"sensors/1/t", "sensors/1/t"}}},
		// mosquitto#40: renaming a branch; the last one is equal to the
		// remote prefix without its "/", which Mosquitto leaves unmapped.
		{`# in 0 RAL/ owntracks/`, "", "owntracks/#", []pair{{"RAL/jpm/5s", "owntracks/jpm/5s"}}},
		{`# in 0 RAL/two/ owntracks/jpm/`, "", "owntracks/jpm/#", []pair{{"RAL/two/5s", "owntracks/jpm/5s"}}},
		{`# in 0 RAL/three/ owntracks/jpm/5s/`, "", "owntracks/jpm/5s/#", []pair{{"RAL/three", "owntracks/jpm/5s"}}},
		// mosquitto#67: wildcards in the middle, leading "/".
		{`+/+/+/+/events out 1 /dev/ 15060012/dev/`, "/dev/+/+/+/+/events", "",
			[]pair{{"/dev/serial/123/com_door/2/events", "15060012/dev/serial/123/com_door/2/events"}}},
		// Steve's guide, and emqx-bridge-mqtt#138: "" prefixes.
		{`# in 1 "" from_cloud/`, "", "from_cloud/#", []pair{{"x/y", "from_cloud/x/y"}}},
		{`# out 0 "" from_local/`, "#", "", []pair{{"x/y", "from_local/x/y"}}},
		// mosquitto#3278: a remote prefix stripped from what comes in.
		{`/foo/ID in 0 "" ""`, "", "/foo/ID", []pair{{"/foo/ID", "/foo/ID"}}},
		{`# both 1 site17/ ""`, "site17/#", "#", []pair{{"site17/a", "a"}, {"site17", ""}}},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			top, err := ParseTopic(tc.line)
			if err != nil {
				t.Fatal(err)
			}
			r, err := compileRule(top, 0)
			if err != nil {
				t.Fatal(err)
			}
			if r.Direction.out() && r.localFilter != tc.localFilter || !r.Direction.out() && tc.localFilter != "" {
				t.Errorf("local filter %q, want %q", r.localFilter, tc.localFilter)
			}
			if r.Direction.in() && r.remoteFilter != tc.remoteFilter || !r.Direction.in() && tc.remoteFilter != "" {
				t.Errorf("remote filter %q, want %q", r.remoteFilter, tc.remoteFilter)
			}
			rs := rules{r}
			for _, p := range tc.maps {
				if r.Direction.out() && p.local != "" {
					if rs.outRule(p.local, nil) != r {
						t.Errorf("out: %q does not match %q", p.local, r.localFilter)
					} else if got, err := r.toRemote(p.local); got != p.remote || (err != nil) != (p.remote == "") {
						t.Errorf("out: %q -> %q (%v), want %q", p.local, got, err, p.remote)
					}
				}
				if r.Direction.in() && p.remote != "" {
					if rs.inRule(p.remote, nil) != r {
						t.Errorf("in: %q does not match %q", p.remote, r.remoteFilter)
					} else if got, err := r.toLocal(p.remote); got != p.local || (err != nil) != (p.local == "") {
						t.Errorf("in: %q -> %q (%v), want %q", p.remote, got, err, p.local)
					}
				}
			}
		})
	}
}

// A topic starting with "$" is not matched by a filter starting with a
// wildcard [MQTT-4.7.2-1]: "# both" does not forward $SYS topics; a rule
// naming $SYS does.
func TestDollarTopicsNotMatchedByWildcard(t *testing.T) {
	t.Parallel()
	rs, err := compileRules([]Topic{{Pattern: "#", Direction: Both}, {Pattern: "+/x", Direction: Both}})
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"$SYS/broker/uptime", "$x/x", "$share"} {
		if r := rs.outRule(topic, nil); r != nil {
			t.Errorf("out rule %q matches %q", r.localFilter, topic)
		}
		if r := rs.inRule(topic, nil); r != nil {
			t.Errorf("in rule %q matches %q", r.remoteFilter, topic)
		}
	}
	rs, _ = compileRules([]Topic{{Pattern: "$SYS/broker/#", Direction: In}})
	if rs.inRule("$SYS/broker/uptime", nil) == nil {
		t.Error("$SYS/broker/# does not match $SYS/broker/uptime")
	}
}

// The capture form: {N} stands for what the N-th wildcard of the local
// filter matched (nanomq#2139, rmqtt#318: reorder, drop and repeat levels).
func TestCaptureMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		local, remote string
		dir           Direction
		remoteFilter  string
		maps          [][2]string // local, remote
	}{
		{"modules/+/+/status", "devices/site17/{1}/{2}/status", Both, "devices/site17/+/+/status",
			[][2]string{{"modules/a/b/status", "devices/site17/a/b/status"}}},
		{"modules/+/+/status", "devices/{2}/{1}", Both, "devices/+/+",
			[][2]string{{"modules/a/b/status", "devices/b/a"}}},
		// "#" captures every level it matched, and none.
		{"site/+/data/#", "cloud/{1}/{2}", Both, "cloud/+/#",
			[][2]string{{"site/s1/data/x/y", "cloud/s1/x/y"}, {"site/s1/data", "cloud/s1"}}},
		// Out only: drop the first levels, or repeat one.
		{"tenants/+/+/#", "{3}", Out, "", [][2]string{{"tenants/t1/uuid-9/a/b", "a/b"}}},
		{"+/+", "{1}/{1}/{2}", Out, "", [][2]string{{"a/b", "a/a/b"}}},
		// No wildcard: one topic.
		{"a/b", "c/d", Both, "c/d", [][2]string{{"a/b", "c/d"}}},
	}
	for _, tc := range tests {
		r, err := compileRule(Topic{Local: tc.local, Remote: tc.remote, Direction: tc.dir}, 0)
		if err != nil {
			t.Errorf("%s -> %s: %v", tc.local, tc.remote, err)
			continue
		}
		if r.remoteFilter != tc.remoteFilter {
			t.Errorf("%s -> %s: remote filter %q, want %q", tc.local, tc.remote, r.remoteFilter, tc.remoteFilter)
		}
		for _, m := range tc.maps {
			if got, err := r.toRemote(m[0]); got != m[1] || err != nil {
				t.Errorf("%s -> %s: out %q gives %q (%v), want %q", tc.local, tc.remote, m[0], got, err, m[1])
			}
			if tc.dir.in() {
				if got, err := r.toLocal(m[1]); got != m[0] || err != nil {
					t.Errorf("%s -> %s: in %q gives %q (%v), want %q", tc.local, tc.remote, m[1], got, err, m[0])
				}
			}
		}
	}
}

// Rules that cannot work are refused with a message that says why.
func TestBadRules(t *testing.T) {
	t.Parallel()
	lines := map[string]string{
		`"" out 0 local ""`:     "empty pattern needs both",
		`"" out 0 "" remote`:    "empty pattern needs both",
		`"" out 0 "" ""`:        "empty pattern needs both",
		`# out 0 a/+/ b/`:       "wildcard",
		`# sideways 0`:          "direction",
		`# out 3`:               "QoS",
		`# out 1 onlylocal`:     "remote prefix",
		`a/#/b out 0`:           "local filter",
		`# out 0 "unterminated`: "quote",
		`$share/g/# out 0`:      "shared",
	}
	for line, want := range lines {
		if _, err := ParseTopic(line); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseTopic(%s) = %v, want an error about %q", line, err, want)
		}
	}
	caps := []Topic{
		{Local: "a/+/+", Remote: "b/{1}", Direction: Both},        // {2} missing
		{Local: "a/+", Remote: "b/{1}/{1}", Direction: In},        // twice
		{Local: "a/+", Remote: "b/{2}", Direction: Out},           // no second wildcard
		{Local: "a/#", Remote: "{1}/b", Direction: Both},          // "#" not last
		{Local: "a/+", Remote: "b/x{1}", Direction: Out},          // part of a level
		{Local: "a/+", Remote: "b/+", Direction: Out},             // wildcard in remote
		{Pattern: "#", Local: "a/+", Remote: "b/{1}", QoS: 1},     // both forms
		{Local: "a/+", Direction: Out},                            // remote missing
		{Local: "$share/g/a/+", Remote: "b/{1}", Direction: Both}, // shared
	}
	for _, c := range caps {
		if _, err := compileRule(c, 0); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// String writes a rule back as a Mosquitto line that parses to it.
func TestTopicString(t *testing.T) {
	t.Parallel()
	for _, line := range []string{`# both 2 local/topic/ remote/topic/`, `"" out 0 a b`, `x in 1 "" "r p/"`, `a/b out 0`} {
		top, err := ParseTopic(line)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseTopic(top.String())
		if err != nil || back != top {
			t.Errorf("%s -> %s -> %+v (%v)", line, top.String(), back, err)
		}
	}
}
