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

// Parse reads rules in either form from raw JSON, replacing the
// placeholders with the client's identifier and user name. A JSON null or
// empty input gives nil rules.
func Parse(raw []byte, clientID, username string) (*Rules, error) {
	if len(strings.TrimSpace(string(raw))) == 0 {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return ParseValue(v, clientID, username)
}

// ParseValue reads rules from a value decoded from JSON (a token's claim):
// a list of rule objects, or an object of pub/sub/all lists; nil gives nil
// rules.
func ParseValue(v any, clientID, username string) (*Rules, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		return parseNew(x, clientID, username)
	case map[string]any:
		return parseOld(x, clientID, username)
	}
	return nil, fmt.Errorf("%w: want a list of rules or an object of pub/sub/all lists", ErrFormat)
}

func parseNew(list []any, clientID, username string) (*Rules, error) {
	rs := &Rules{rules: make([]rule, 0, len(list))}
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: rule %d is not an object", ErrFormat, i)
		}
		var r rule
		perm, _ := m["permission"].(string)
		switch strings.ToLower(perm) {
		case "allow":
			r.allow = true
		case "deny":
		default:
			return nil, fmt.Errorf("%w: rule %d: permission %v is not allow or deny", ErrFormat, i, m["permission"])
		}
		action, _ := m["action"].(string)
		switch strings.ToLower(action) {
		case "publish", "pub":
			r.actions = actPublish
		case "subscribe", "sub":
			r.actions = actSubscribe
		case "all", "pubsub":
			r.actions = actPublish | actSubscribe
		default:
			return nil, fmt.Errorf("%w: rule %d: action %v is not publish, subscribe or all", ErrFormat, i, m["action"])
		}
		switch q := m["qos"].(type) {
		case nil:
		case float64:
			if err := r.addQoS(q); err != nil {
				return nil, fmt.Errorf("%w: rule %d: %v", ErrFormat, i, err)
			}
		case []any:
			for _, e := range q {
				f, isNum := e.(float64)
				if !isNum {
					f = -1
				}
				if err := r.addQoS(f); err != nil {
					return nil, fmt.Errorf("%w: rule %d: %v", ErrFormat, i, err)
				}
			}
		default:
			return nil, fmt.Errorf("%w: rule %d: qos is not a list of 0, 1 and 2", ErrFormat, i)
		}
		switch ret := m["retain"].(type) {
		case nil:
		case bool:
			r.retain = -1
			if ret {
				r.retain = 1
			}
		case string:
			if ret != "all" {
				return nil, fmt.Errorf("%w: rule %d: retain %q is not true or false", ErrFormat, i, ret)
			}
		default:
			return nil, fmt.Errorf("%w: rule %d: retain %v is not true or false", ErrFormat, i, ret)
		}
		var filters []string
		if t, ok := m["topic"].(string); ok && t != "" {
			filters = append(filters, t)
		}
		if ts, ok := m["topics"].([]any); ok {
			for _, e := range ts {
				t, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("%w: rule %d: topics holds a %T", ErrFormat, i, e)
				}
				filters = append(filters, t)
			}
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

func (r *rule) addQoS(q float64) error {
	if q != 0 && q != 1 && q != 2 {
		return fmt.Errorf("qos %v is not 0, 1 or 2", q)
	}
	r.qos |= 1 << int(q)
	return nil
}

func parseOld(m map[string]any, clientID, username string) (*Rules, error) {
	rs := &Rules{legacy: true}
	for _, g := range []struct {
		key     string
		actions uint8
	}{{"pub", actPublish}, {"sub", actSubscribe}, {"all", actPublish | actSubscribe}} {
		var list []any
		switch l := m[g.key].(type) {
		case nil:
		case []any:
			list = l
		default:
			return nil, fmt.Errorf("%w: %s is not a list of topics", ErrFormat, g.key)
		}
		for _, e := range list {
			f, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: %s holds a %T", ErrFormat, g.key, e)
			}
			f, ok = substitute(f, clientID, username)
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
