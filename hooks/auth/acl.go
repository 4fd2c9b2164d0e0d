package auth

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/ternmq/tern"
	"github.com/ternmq/tern/topics"
)

// access bits of an ACL rule.
type access uint8

const (
	accessRead  access = 1
	accessWrite access = 2
	accessDeny  access = 4
)

// accessKeywords are the access words of topic and pattern lines.
var accessKeywords = map[string]access{
	"read":      accessRead,
	"write":     accessWrite,
	"readwrite": accessRead | accessWrite,
	"deny":      accessDeny,
}

// aclRule is one "topic" or "pattern" line.
type aclRule struct {
	access  access
	filter  string
	pattern bool // has %u or %c to substitute
}

// ACLRules is a parsed Mosquitto ACL file. Its zero value allows nothing.
//
// The format, one directive per line ("#" comments and blank lines
// ignored; the rest of the line after the keywords is the name or filter,
// so it may contain spaces):
//
//	topic [read|write|readwrite|deny] <filter>     (default readwrite)
//	user <username>                                 (the topic lines after it are that user's)
//	pattern [read|write|readwrite|deny] <filter>   (for every client; %u is the user name, %c the client id)
//
// topic lines before the first user line apply to anonymous clients (no
// user name). A pattern with %u does not apply to anonymous clients, and
// a pattern does not apply when the value substituted is empty or contains
// '/', '+' or '#' (which would widen the filter).
//
// Decisions: deny rules win over the others; otherwise access is allowed
// when a rule grants it, and denied when none does. As in Mosquitto, read
// access is checked twice: when a client subscribes, and for each message
// delivered to it.
//
//   - Publishing to a topic name (tern.Write) needs a write rule whose
//     filter matches the name, and no deny rule matching it.
//   - Being sent a message (tern.Deliver) needs a read rule whose filter
//     matches its topic name, and no deny rule matching it.
//   - Subscribing to a filter (tern.Read) needs a read rule whose filter
//     overlaps it ([Overlaps]: "a/#" allows subscribing to "a/+/b", and
//     "#"; "#" does not reach "$SYS/#"), and is refused only by a deny rule
//     whose filter covers it entirely ([Covers]). A deny rule that covers
//     part of the subscription ("deny a/secret" against "a/#") leaves it
//     allowed, and is enforced per message by the Deliver check: the
//     subscriber gets "a/x" but not "a/secret". The same Deliver check
//     keeps the topics of a wider subscription ("#") that no read rule
//     matches from the subscriber.
type ACLRules struct {
	anonymous []aclRule
	users     map[string][]aclRule
	patterns  []aclRule
}

// ParseACL parses an ACL file.
func ParseACL(r io.Reader) (*ACLRules, error) {
	rules := &ACLRules{users: make(map[string][]aclRule)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	user, inUser := "", false
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		keyword, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch keyword {
		case "user":
			if rest == "" {
				return nil, fmt.Errorf("line %d: user without a name", n)
			}
			user, inUser = rest, true
		case "topic", "pattern":
			rule, err := parseRule(rest, keyword == "pattern")
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			switch {
			case keyword == "pattern":
				rules.patterns = append(rules.patterns, rule)
			case inUser:
				rules.users[user] = append(rules.users[user], rule)
			default:
				rules.anonymous = append(rules.anonymous, rule)
			}
		default:
			return nil, fmt.Errorf("line %d: unknown directive %q (want topic, user or pattern)", n, keyword)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return rules, nil
}

// parseRule parses "[read|write|readwrite|deny] <filter>".
func parseRule(s string, pattern bool) (aclRule, error) {
	r := aclRule{access: accessRead | accessWrite, filter: s}
	if kw, rest, ok := strings.Cut(s, " "); ok {
		if a, known := accessKeywords[kw]; known {
			r.access, r.filter = a, strings.TrimSpace(rest)
		}
	}
	if r.filter == "" {
		return r, fmt.Errorf("no topic filter")
	}
	check := r.filter
	if pattern {
		check = strings.NewReplacer("%u", "u", "%c", "c").Replace(check)
		r.pattern = check != r.filter
	}
	if err := topics.ValidateFilter(check); err != nil {
		return r, fmt.Errorf("%q: %w", r.filter, err)
	}
	return r, nil
}

// Allowed reports whether the client with the user name ("" for
// anonymous) and client identifier may publish to the topic name (Write),
// be sent a message published to the topic name (Deliver) or subscribe to
// the filter (Read; shared subscriptions are checked by their topic
// filter). Other access values are denied.
func (a *ACLRules) Allowed(username, clientID, topic string, acc tern.Access) bool {
	if acc == tern.Read {
		_, topic, _ = topics.ParseShared(topic)
	}
	var own []aclRule
	if username == "" {
		own = a.anonymous
	} else {
		own = a.users[username]
	}
	allowed := false
	check := func(r aclRule, filter string) bool { // false: denied
		switch {
		case r.access&accessDeny != 0:
			if acc == tern.Read && Covers(filter, topic) || acc != tern.Read && topics.Match(filter, topic) {
				return false
			}
		case acc == tern.Write && r.access&accessWrite != 0,
			acc == tern.Deliver && r.access&accessRead != 0:
			allowed = allowed || topics.Match(filter, topic)
		case acc == tern.Read && r.access&accessRead != 0:
			allowed = allowed || Overlaps(filter, topic)
		}
		return true
	}
	for _, r := range own {
		if !check(r, r.filter) {
			return false
		}
	}
	for _, r := range a.patterns {
		filter, ok := substitute(r, username, clientID)
		if ok && !check(r, filter) {
			return false
		}
	}
	return allowed
}

// substitute replaces %u and %c in a pattern; it reports false when the
// pattern does not apply to the client.
func substitute(r aclRule, username, clientID string) (string, bool) {
	if !r.pattern {
		return r.filter, true
	}
	safe := func(v string) bool { return v != "" && !strings.ContainsAny(v, "/+#") }
	f := r.filter
	if strings.Contains(f, "%u") {
		if !safe(username) {
			return "", false
		}
		f = strings.ReplaceAll(f, "%u", username)
	}
	if strings.Contains(f, "%c") {
		if !safe(clientID) {
			return "", false
		}
		f = strings.ReplaceAll(f, "%c", clientID)
	}
	return f, true
}

// ACL is an Authorizer enforcing a Mosquitto ACL file (see [ACLRules] for
// the format and the decisions). Once configured it denies whatever the
// file does not allow: publishes (tern.Write), subscriptions (tern.Read)
// and each message delivered to a client (tern.Deliver), so a subscription
// a deny rule only partly covers is allowed and its denied topics are
// filtered out message by message. The server's in-process client
// (c.IsInline()) is not subject to it: ACL abstains for it, and for
// connections made in the process (tern.Server.DialInProcess: a bridge's
// local side) without a user name; one with a user name is checked as that
// user (Mosquitto's local_username for bridges).
//
// It is safe for concurrent use; Reload swaps the whole rule set at once.
type ACL struct {
	path  string
	rules atomic.Pointer[ACLRules]
}

var _ tern.Authorizer = (*ACL)(nil)

// NewACL loads the ACL file at path.
func NewACL(path string) (*ACL, error) {
	a := &ACL{path: path}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// NewACLFromRules returns an ACL hook enforcing rules, with no file to
// reload.
func NewACLFromRules(rules *ACLRules) *ACL {
	a := &ACL{}
	a.rules.Store(rules)
	return a
}

// ID implements tern.Hook.
func (a *ACL) ID() string { return "acl-file" }

// Reload re-reads the file. If it cannot be read or parsed, the rules in
// force stay and the error is returned.
func (a *ACL) Reload() error {
	if a.path == "" {
		return nil
	}
	data, err := os.ReadFile(a.path)
	if err != nil {
		return fmt.Errorf("auth: reading ACL file: %w", err)
	}
	rules, err := ParseACL(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("auth: %s: %w", a.path, err)
	}
	a.rules.Store(rules)
	return nil
}

// Rules returns the rules in force.
func (a *ACL) Rules() *ACLRules { return a.rules.Load() }

// Authorize implements tern.Authorizer.
func (a *ACL) Authorize(c *tern.Client, topic string, acc tern.Access) tern.Decision {
	if c.IsInline() || trustedInProcess(c) {
		return tern.Abstain
	}
	if a.rules.Load().Allowed(Username(c), c.ID(), topic, acc) {
		return tern.Allow
	}
	return tern.Deny
}
