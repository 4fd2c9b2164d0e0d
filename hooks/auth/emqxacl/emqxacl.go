// Package emqxacl reads and checks the access rules that EMQX lets a JWT
// (an "acl" claim) or an HTTP authentication answer (an "acl" property)
// carry, so that tokens and auth services written for EMQX work with Tern
// unchanged. The JWT and HTTP auth hooks keep one [Rules] per client,
// parsed once at CONNECT, and check it before the ACL file.
//
// Two forms are read. The new one (EMQX 5.5 and later) is a list of rules,
// the first that applies deciding, and no rule applying leaving the
// decision to the next authorizer:
//
//	"acl": [
//	  {"permission": "allow", "action": "publish",   "topic": "t/${clientid}"},
//	  {"permission": "allow", "action": "subscribe", "topic": "eq t/1/#", "qos": [1]},
//	  {"permission": "deny",  "action": "publish",   "topic": "t/2", "retain": true},
//	  {"permission": "deny",  "action": "all",       "topic": "t/3"}
//	]
//
// permission is allow or deny; action is publish, subscribe or all; topic
// is a topic filter ("topics", a list, is accepted too) where ${clientid}
// and ${username} (or %c and %u) stand for the client's identifier and
// user name, and an "eq " prefix makes the filter a literal to compare
// with the subscription's filter; qos limits the rule to those QoS levels
// (of the message for publish, asked for subscribe); retain (publish only)
// limits it to retained (true) or not retained (false) messages.
//
// The old form is an object of allow-lists, "pub", "sub" and "all",
// whose topics may use %u and %c; anything they do not list is denied:
//
//	"acl": {"pub": ["devices/%c/up"], "sub": ["devices/%c/down/#"], "all": ["shared/#"]}
//
// A rule whose placeholder would be replaced by an empty value, or by one
// containing '/', '+' or '#' (which would widen it), does not apply.
//
// How the rules meet Tern's accesses: a publish (tern.Write) matches the
// rule's filter against the topic name; a subscription (tern.Read)
// applies a rule whose filter covers the whole of the filter asked for
// ("t/#" covers "t/+/x"; "eq" rules compare literally); and each message
// delivered to the client (tern.Deliver) is checked against the
// subscribe rules with its topic name, so that a deny rule reaches the
// messages of a wider subscription ("deny subscribe t/secret" keeps
// t/secret from a client subscribed to "t/#").
package emqxacl

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/hooks/auth"
	"github.com/ternmq/tern/topics"
)

// action bits of a rule.
const (
	actPublish   = 1
	actSubscribe = 2
)

// rule is one parsed rule, its placeholders replaced.
type rule struct {
	allow   bool
	actions uint8
	filter  string
	eq      bool  // literal comparison with a subscription's filter
	qos     uint8 // bit i set: QoS i applies; 0 = every QoS
	retain  int8  // -1 not retained only, 1 retained only, 0 either
}

// Rules is the access list of one client. A nil *Rules has no rules: every
// check abstains.
type Rules struct {
	rules []rule
	// legacy: the old form, whose lists allow and deny everything else.
	legacy bool
}

// ErrFormat is wrapped by the errors of Parse.
var ErrFormat = errors.New("emqxacl: bad ACL")

// jsonRule is a rule of the new form as written.
type jsonRule struct {
	Permission string          `json:"permission"`
	Action     string          `json:"action"`
	Topic      string          `json:"topic"`
	Topics     []string        `json:"topics"`
	QoS        json.RawMessage `json:"qos"`
	Retain     json.RawMessage `json:"retain"`
}

// Parse reads rules in either form from raw JSON, replacing the
// placeholders with the client's identifier and user name. A JSON null or
// empty input gives nil rules.
func Parse(raw []byte, clientID, username string) (*Rules, error) {
	raw = []byte(strings.TrimSpace(string(raw)))
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	switch raw[0] {
	case '[':
		var list []jsonRule
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrFormat, err)
		}
		return parseNew(list, clientID, username)
	case '{':
		var old struct {
			Pub []string `json:"pub"`
			Sub []string `json:"sub"`
			All []string `json:"all"`
		}
		if err := json.Unmarshal(raw, &old); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrFormat, err)
		}
		return parseOld(old.Pub, old.Sub, old.All, clientID, username)
	}
	return nil, fmt.Errorf("%w: want a list of rules or an object of pub/sub/all lists", ErrFormat)
}

// ParseValue reads rules from a value decoded from JSON (a token's claim).
func ParseValue(v any, clientID, username string) (*Rules, error) {
	if v == nil {
		return nil, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return Parse(raw, clientID, username)
}

func parseNew(list []jsonRule, clientID, username string) (*Rules, error) {
	rs := &Rules{}
	for i, jr := range list {
		var r rule
		switch strings.ToLower(jr.Permission) {
		case "allow":
			r.allow = true
		case "deny":
		default:
			return nil, fmt.Errorf("%w: rule %d: permission %q is not allow or deny", ErrFormat, i, jr.Permission)
		}
		switch strings.ToLower(jr.Action) {
		case "publish", "pub":
			r.actions = actPublish
		case "subscribe", "sub":
			r.actions = actSubscribe
		case "all", "pubsub":
			r.actions = actPublish | actSubscribe
		default:
			return nil, fmt.Errorf("%w: rule %d: action %q is not publish, subscribe or all", ErrFormat, i, jr.Action)
		}
		if len(jr.QoS) > 0 && string(jr.QoS) != "null" {
			var qs []int
			if err := json.Unmarshal(jr.QoS, &qs); err != nil {
				var q int
				if json.Unmarshal(jr.QoS, &q) != nil {
					return nil, fmt.Errorf("%w: rule %d: qos is not a list of 0, 1 and 2", ErrFormat, i)
				}
				qs = []int{q}
			}
			for _, q := range qs {
				if q < 0 || q > 2 {
					return nil, fmt.Errorf("%w: rule %d: qos %d", ErrFormat, i, q)
				}
				r.qos |= 1 << q
			}
		}
		switch s := strings.ToLower(string(jr.Retain)); s {
		case "", "null", `"all"`:
		case "true", "1":
			r.retain = 1
		case "false", "0":
			r.retain = -1
		default:
			return nil, fmt.Errorf("%w: rule %d: retain %s is not true or false", ErrFormat, i, s)
		}
		filters := jr.Topics
		if jr.Topic != "" {
			filters = append([]string{jr.Topic}, filters...)
		}
		if len(filters) == 0 {
			return nil, fmt.Errorf("%w: rule %d: no topic", ErrFormat, i)
		}
		for _, f := range filters {
			rr := r
			if lit, ok := strings.CutPrefix(f, "eq "); ok {
				rr.eq, f = true, strings.TrimSpace(lit)
			}
			f, ok := substitute(f, clientID, username)
			if !ok {
				continue // does not apply to this client
			}
			if err := topics.ValidateFilter(f); err != nil {
				return nil, fmt.Errorf("%w: rule %d: topic %q: %v", ErrFormat, i, f, err)
			}
			rr.filter = f
			rs.rules = append(rs.rules, rr)
		}
	}
	return rs, nil
}

func parseOld(pub, sub, all []string, clientID, username string) (*Rules, error) {
	rs := &Rules{legacy: true}
	for _, g := range []struct {
		list    []string
		actions uint8
	}{{pub, actPublish}, {sub, actSubscribe}, {all, actPublish | actSubscribe}} {
		for _, f := range g.list {
			f, ok := substitute(f, clientID, username)
			if !ok {
				continue
			}
			if err := topics.ValidateFilter(f); err != nil {
				return nil, fmt.Errorf("%w: topic %q: %v", ErrFormat, f, err)
			}
			rs.rules = append(rs.rules, rule{allow: true, actions: g.actions, filter: f})
		}
	}
	return rs, nil
}

// substitute replaces the placeholders of f; it reports false when a value
// is empty or would widen the filter.
func substitute(f, clientID, username string) (string, bool) {
	if !strings.ContainsAny(f, "$%") {
		return f, true
	}
	safe := func(v string) bool { return v != "" && !strings.ContainsAny(v, "/+#") }
	for _, p := range []struct {
		names []string
		value string
	}{
		{[]string{"${clientid}", "%c"}, clientID},
		{[]string{"${username}", "%u"}, username},
	} {
		for _, name := range p.names {
			if !strings.Contains(f, name) {
				continue
			}
			if !safe(p.value) {
				return "", false
			}
			f = strings.ReplaceAll(f, name, p.value)
		}
	}
	return f, true
}

// Len returns the number of rules.
func (rs *Rules) Len() int {
	if rs == nil {
		return 0
	}
	return len(rs.rules)
}

// Check decides an access by the rules: Allow or Deny by the first rule
// that applies, or Abstain when none does (Deny in the old form).
func (rs *Rules) Check(req tern.AccessRequest) tern.Decision {
	if rs == nil {
		return tern.Abstain
	}
	var want uint8
	filter := req.Topic
	switch req.Access {
	case tern.Write:
		want = actPublish
	case tern.Read:
		want = actSubscribe
		_, filter, _ = topics.ParseShared(filter)
	case tern.Deliver:
		want = actSubscribe
	default:
		return tern.Abstain
	}
	for i := range rs.rules {
		r := &rs.rules[i]
		if r.actions&want == 0 {
			continue
		}
		if r.qos != 0 && req.Access != tern.Deliver && r.qos&(1<<req.QoS) == 0 {
			continue
		}
		if r.retain != 0 && req.Access == tern.Write && (r.retain > 0) != req.Retain {
			continue
		}
		if !r.matches(filter, req.Access) {
			continue
		}
		if r.allow {
			return tern.Allow
		}
		return tern.Deny
	}
	if rs.legacy {
		return tern.Deny
	}
	return tern.Abstain
}

func (r *rule) matches(topic string, acc tern.Access) bool {
	switch {
	case r.eq:
		return topic == r.filter
	case acc == tern.Read:
		return auth.Covers(r.filter, topic)
	}
	return topics.Match(r.filter, topic)
}
