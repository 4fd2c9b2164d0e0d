package emqxacl

import (
	"errors"
	"testing"

	"github.com/ternmq/tern"
)

func req(acc tern.Access, topic string, qos byte, retain bool) tern.AccessRequest {
	return tern.AccessRequest{Topic: topic, Access: acc, QoS: qos, Retain: retain}
}

// The example of EMQX's documentation, new form.
func TestNewForm(t *testing.T) {
	rs, err := Parse([]byte(`[
	  {"permission": "allow", "action": "publish", "topic": "t/${clientid}"},
	  {"permission": "allow", "action": "subscribe", "topic": "eq t/1/#", "qos": [1]},
	  {"permission": "deny", "action": "publish", "topic": "t/2", "retain": true},
	  {"permission": "deny", "action": "all", "topic": "t/3"},
	  {"permission": "allow", "action": "subscribe", "topics": ["s/%u/#", "x/+/y"]},
	  {"permission": "deny", "action": "subscribe", "topic": "s/%u/secret"}
	]`), "c1", "u1")
	if err != nil {
		t.Fatal(err)
	}
	const (
		A = tern.Allow
		D = tern.Deny
		N = tern.Abstain
	)
	for _, tc := range []struct {
		r    tern.AccessRequest
		want tern.Decision
	}{
		{req(tern.Write, "t/c1", 0, false), A},
		{req(tern.Write, "t/c2", 0, false), N},
		{req(tern.Read, "t/1/#", 1, false), A},
		{req(tern.Read, "t/1/#", 0, false), N}, // qos [1] only
		{req(tern.Read, "t/1/x", 1, false), N}, // eq: literal only
		{req(tern.Write, "t/2", 1, true), D},
		{req(tern.Write, "t/2", 1, false), N}, // retain: true rules only retained messages
		{req(tern.Write, "t/3", 0, false), D},
		{req(tern.Read, "t/3", 0, false), D},
		{req(tern.Deliver, "t/3", 0, false), D},
		{req(tern.Read, "s/u1/#", 2, false), A},
		{req(tern.Read, "s/u1/+/z", 2, false), A}, // covered by s/u1/#
		{req(tern.Read, "s/#", 2, false), N},      // wider than any rule
		{req(tern.Read, "$share/g/s/u1/a", 0, false), A},
		{req(tern.Deliver, "s/u1/a", 0, false), A},
		{req(tern.Deliver, "s/u1/secret", 0, false), A}, // the allow rule comes first
		{req(tern.Read, "x/a/y", 0, false), A},
		{req(tern.Deliver, "elsewhere", 0, false), N},
	} {
		if got := rs.Check(tc.r); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.r, got, tc.want)
		}
	}
}

// Deny rules placed first reach the deliveries of a wider subscription.
func TestDenyFirstFiltersDeliveries(t *testing.T) {
	rs, err := Parse([]byte(`[{"permission":"deny","action":"subscribe","topic":"a/secret"},{"permission":"allow","action":"subscribe","topic":"a/#"}]`), "c", "u")
	if err != nil {
		t.Fatal(err)
	}
	if rs.Check(req(tern.Read, "a/#", 0, false)) != tern.Allow {
		t.Error("a/# not allowed")
	}
	if rs.Check(req(tern.Deliver, "a/x", 0, false)) != tern.Allow {
		t.Error("a/x not delivered")
	}
	if rs.Check(req(tern.Deliver, "a/secret", 0, false)) != tern.Deny {
		t.Error("a/secret delivered")
	}
}

func TestOldForm(t *testing.T) {
	rs, err := ParseValue(map[string]any{"pub": []any{"up/%c"}, "sub": []any{"down/%u/#"}, "all": []any{"both"}}, "dev1", "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		r    tern.AccessRequest
		want tern.Decision
	}{
		{req(tern.Write, "up/dev1", 1, false), tern.Allow},
		{req(tern.Write, "up/dev2", 1, false), tern.Deny},
		{req(tern.Read, "down/alice/#", 1, false), tern.Allow},
		{req(tern.Read, "down/#", 1, false), tern.Deny},
		{req(tern.Deliver, "down/alice/x", 1, false), tern.Allow},
		{req(tern.Deliver, "other", 1, false), tern.Deny},
		{req(tern.Write, "both", 0, false), tern.Allow},
		{req(tern.Read, "both", 0, false), tern.Allow},
	} {
		if got := rs.Check(tc.r); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.r, got, tc.want)
		}
	}
}

// A placeholder replaced by a value that would widen the filter, or by
// nothing, makes the rule not apply.
func TestUnsafePlaceholders(t *testing.T) {
	for _, tc := range []struct{ id, user string }{{"a/#", "u"}, {"+", "u"}, {"c", ""}} {
		rs, err := Parse([]byte(`[{"permission":"allow","action":"all","topic":"t/${clientid}/${username}"}]`), tc.id, tc.user)
		if err != nil {
			t.Fatal(err)
		}
		if rs.Len() != 0 {
			t.Errorf("id %q user %q: %d rules apply", tc.id, tc.user, rs.Len())
		}
	}
}

func TestBadRules(t *testing.T) {
	for _, bad := range []string{
		`"x"`, `[{"permission":"maybe","action":"publish","topic":"t"}]`,
		`[{"permission":"allow","action":"jump","topic":"t"}]`,
		`[{"permission":"allow","action":"publish"}]`,
		`[{"permission":"allow","action":"publish","topic":"a/#/b"}]`,
		`[{"permission":"allow","action":"publish","topic":"t","qos":[3]}]`,
		`[{"permission":"allow","action":"publish","topic":"t","retain":"yes"}]`,
		`{"pub": "notalist"}`,
	} {
		if _, err := Parse([]byte(bad), "c", "u"); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", bad, err)
		}
	}
	if rs, err := Parse([]byte(" null "), "c", "u"); rs != nil || err != nil {
		t.Errorf("null: %v %v", rs, err)
	}
	var none *Rules
	if none.Check(req(tern.Write, "t", 0, false)) != tern.Abstain {
		t.Error("nil rules decided")
	}
}
