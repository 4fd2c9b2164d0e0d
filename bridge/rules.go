package bridge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ternmq/tern/topics"
)

// Direction says which way a topic rule forwards messages.
type Direction string

// Directions. The zero value is Out, as Mosquitto's default.
const (
	Out  Direction = "out"  // local to remote
	In   Direction = "in"   // remote to local
	Both Direction = "both" // both ways
)

func (d Direction) out() bool { return d == "" || d == Out || d == Both }
func (d Direction) in() bool  { return d == In || d == Both }

// Topic is one topic rule of a bridge, in one of two forms.
//
// Mosquitto's form (Pattern, with optional prefixes): the local topic is
// LocalPrefix+Pattern and the remote one RemotePrefix+Pattern. Outgoing
// messages are subscribed to locally as LocalPrefix+Pattern; the local
// prefix is removed from their topic and the remote prefix added.
// Incoming ones are subscribed to on the remote as RemotePrefix+Pattern;
// the remote prefix is removed and the local prefix added. An empty
// Pattern with both prefixes set maps the single topic LocalPrefix to
// RemotePrefix. A topic equal to a prefix without its trailing "/" (which
// "prefix/#" matches) maps to the other prefix without its trailing "/":
// with "topic # in 0 RAL/three/ owntracks/jpm/5s/" the remote topic
// owntracks/jpm/5s arrives as RAL/three (Mosquitto keeps it unchanged,
// mosquitto#40).
//
// The capture form (Local and Remote): Local is a topic filter and Remote
// a topic with placeholders {1}, {2}, ... standing for whole levels, the
// N-th being what the N-th wildcard of Local matched ("#" stands for all
// the levels it matched). "modules/+/+/status" with
// "devices/site17/{2}/{1}" sends modules/a/b/status as
// devices/site17/b/a. For In and Both, Remote must use every placeholder
// exactly once, "#"'s last, so that the remote subscription can be
// derived from it; for Out it may use any of them, or none, any number of
// times (to drop or repeat levels).
type Topic struct {
	Pattern      string
	Direction    Direction
	QoS          byte
	LocalPrefix  string
	RemotePrefix string

	Local  string
	Remote string
}

// String writes the rule as a Mosquitto "topic" line (or the capture form
// as "local -> remote direction qos").
func (t Topic) String() string {
	d := t.Direction
	if d == "" {
		d = Out
	}
	if t.Local != "" || t.Remote != "" {
		return fmt.Sprintf("%s -> %s %s %d", t.Local, t.Remote, d, t.QoS)
	}
	q := func(s string) string {
		if s == "" || strings.ContainsAny(s, " \t\"") {
			return strconv.Quote(s)
		}
		return s
	}
	s := fmt.Sprintf("%s %s %d", q(t.Pattern), d, t.QoS)
	if t.LocalPrefix != "" || t.RemotePrefix != "" {
		s += " " + q(t.LocalPrefix) + " " + q(t.RemotePrefix)
	}
	return s
}

// ParseTopic parses the arguments of a Mosquitto "topic" line:
//
//	pattern [[[out | in | both] qos] local-prefix remote-prefix]
//
// "" stands for an empty pattern or prefix, as in mosquitto.conf.
func ParseTopic(line string) (Topic, error) {
	fields, err := splitFields(line)
	if err != nil {
		return Topic{}, err
	}
	var t Topic
	switch len(fields) {
	case 1, 2, 3, 5:
	case 4:
		return t, errors.New("a local prefix needs a remote prefix (write \"\" for an empty one)")
	default:
		return t, fmt.Errorf("%d fields: want pattern [[[out|in|both] qos] local-prefix remote-prefix]", len(fields))
	}
	t.Pattern = fields[0]
	if len(fields) > 1 {
		switch d := Direction(strings.ToLower(fields[1])); d {
		case Out, In, Both:
			t.Direction = d
		default:
			return t, fmt.Errorf("direction %q is not out, in or both", fields[1])
		}
	}
	if len(fields) > 2 {
		q, err := strconv.ParseUint(fields[2], 10, 8)
		if err != nil || q > 2 {
			return t, fmt.Errorf("QoS %q is not 0, 1 or 2", fields[2])
		}
		t.QoS = byte(q)
	}
	if len(fields) == 5 {
		t.LocalPrefix, t.RemotePrefix = fields[3], fields[4]
	}
	return t, t.check()
}

// splitFields splits a line at spaces, keeping "quoted" fields whole ("" is
// an empty field).
func splitFields(line string) ([]string, error) {
	var out []string
	s := strings.TrimSpace(line)
	for s != "" {
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, errors.New("unterminated quote")
			}
			out = append(out, s[1:1+end])
			s = s[2+end:]
			if s != "" && s[0] != ' ' && s[0] != '\t' {
				return nil, errors.New("text after a closing quote")
			}
		} else {
			end := strings.IndexAny(s, " \t")
			if end < 0 {
				end = len(s)
			}
			out = append(out, s[:end])
			s = s[end:]
		}
		s = strings.TrimLeft(s, " \t")
	}
	if len(out) == 0 {
		return nil, errors.New("empty topic rule")
	}
	return out, nil
}

// check validates the rule; compile does the same and more.
func (t Topic) check() error {
	_, err := compileRule(t, 0)
	return err
}

// rule is a compiled Topic.
type rule struct {
	Topic
	index        int    // position in the bridge's rules; subscription identifier index+1
	localFilter  string // what the local session subscribes to (out)
	remoteFilter string // what the bridge subscribes to on the remote (in)

	capture  bool
	template []tmplLevel // capture form: Remote, level by level
	wild     []int       // capture form: level indexes of Local's wildcards, in order
	nlevels  int         // capture form: levels of Local
}

// tmplLevel is one level of a capture template: literal text, or a
// placeholder (arg >= 1).
type tmplLevel struct {
	text string
	arg  int
}

func compileRule(t Topic, index int) (*rule, error) {
	if t.QoS > 2 {
		return nil, fmt.Errorf("QoS %d is not 0, 1 or 2", t.QoS)
	}
	switch t.Direction {
	case "", Out, In, Both:
	default:
		return nil, fmt.Errorf("direction %q is not out, in or both", t.Direction)
	}
	r := &rule{Topic: t, index: index}
	if t.Local != "" || t.Remote != "" {
		if t.Pattern != "" || t.LocalPrefix != "" || t.RemotePrefix != "" {
			return nil, errors.New("a rule has either pattern (and prefixes) or local and remote, not both")
		}
		return r, r.compileCapture()
	}
	noWild := func(what, s string) error {
		if strings.ContainsAny(s, "+#") {
			return fmt.Errorf("%s %q contains a wildcard", what, s)
		}
		return nil
	}
	if err := noWild("local prefix", t.LocalPrefix); err != nil {
		return nil, err
	}
	if err := noWild("remote prefix", t.RemotePrefix); err != nil {
		return nil, err
	}
	if t.Pattern == "" {
		// Mosquitto's table: "" pattern maps one topic, and needs both.
		if t.LocalPrefix == "" || t.RemotePrefix == "" {
			return nil, errors.New(`an empty pattern needs both a local and a remote prefix (the topics it maps)`)
		}
		if err := topics.ValidateName(t.LocalPrefix); err != nil {
			return nil, fmt.Errorf("local topic %q: %w", t.LocalPrefix, err)
		}
		if err := topics.ValidateName(t.RemotePrefix); err != nil {
			return nil, fmt.Errorf("remote topic %q: %w", t.RemotePrefix, err)
		}
		r.localFilter, r.remoteFilter = t.LocalPrefix, t.RemotePrefix
		return r, nil
	}
	r.localFilter = t.LocalPrefix + t.Pattern
	r.remoteFilter = t.RemotePrefix + t.Pattern
	if err := topics.ValidateFilter(r.localFilter); err != nil {
		return nil, fmt.Errorf("local filter %q: %w", r.localFilter, err)
	}
	if err := topics.ValidateFilter(r.remoteFilter); err != nil {
		return nil, fmt.Errorf("remote filter %q: %w", r.remoteFilter, err)
	}
	if _, _, shared := topics.ParseShared(r.localFilter); shared {
		return nil, fmt.Errorf("local filter %q is a shared subscription", r.localFilter)
	}
	if _, _, shared := topics.ParseShared(r.remoteFilter); shared {
		return nil, fmt.Errorf("remote filter %q is a shared subscription", r.remoteFilter)
	}
	return r, nil
}

func (r *rule) compileCapture() error {
	r.capture = true
	if r.Local == "" || r.Remote == "" {
		return errors.New("the capture form needs both local and remote")
	}
	if err := topics.ValidateFilter(r.Local); err != nil {
		return fmt.Errorf("local %q: %w", r.Local, err)
	}
	if _, _, shared := topics.ParseShared(r.Local); shared {
		return fmt.Errorf("local %q is a shared subscription", r.Local)
	}
	r.localFilter = r.Local
	levels := strings.Split(r.Local, "/")
	r.nlevels = len(levels)
	for i, l := range levels {
		if l == "+" || l == "#" {
			r.wild = append(r.wild, i)
		}
	}
	used := make(map[int]int)
	var filter []string
	for _, l := range strings.Split(r.Remote, "/") {
		if strings.ContainsAny(l, "+#") {
			return fmt.Errorf("remote %q: wildcards are written {1}, {2} and so on", r.Remote)
		}
		if strings.HasPrefix(l, "{") && strings.HasSuffix(l, "}") {
			n, err := strconv.Atoi(l[1 : len(l)-1])
			if err != nil || n < 1 || n > len(r.wild) {
				return fmt.Errorf("remote %q: %s is not a placeholder of one of local's %d wildcards", r.Remote, l, len(r.wild))
			}
			used[n]++
			r.template = append(r.template, tmplLevel{arg: n})
			filter = append(filter, levels[r.wild[n-1]])
			continue
		}
		if strings.ContainsAny(l, "{}") {
			return fmt.Errorf("remote %q: a placeholder must be a whole level", r.Remote)
		}
		r.template = append(r.template, tmplLevel{text: l})
		filter = append(filter, l)
	}
	if r.Direction.in() {
		for n := 1; n <= len(r.wild); n++ {
			if used[n] != 1 {
				return fmt.Errorf("remote %q: direction %s needs {%d} exactly once", r.Remote, r.Direction, n)
			}
		}
		r.remoteFilter = strings.Join(filter, "/")
		if err := topics.ValidateFilter(r.remoteFilter); err != nil {
			return fmt.Errorf("remote %q (as a filter, %q): %w", r.Remote, r.remoteFilter, err)
		}
	} else {
		// Out only: the remote topic must at least be a valid topic name
		// once placeholders are filled.
		probe := make([]string, len(r.template))
		for i, l := range r.template {
			probe[i] = l.text
			if l.arg > 0 {
				probe[i] = "x"
			}
		}
		if err := topics.ValidateName(strings.Join(probe, "/")); err != nil {
			return fmt.Errorf("remote %q: %w", r.Remote, err)
		}
	}
	return nil
}

// errUnmappable is returned for a topic a rule cannot map to a valid one.
var errUnmappable = errors.New("bridge: topic cannot be mapped")

// toRemote maps a local topic the rule's local filter matched.
func (r *rule) toRemote(topic string) (string, error) {
	if r.capture {
		return r.fill(topic)
	}
	if r.Pattern == "" {
		return r.RemotePrefix, nil
	}
	return swapPrefix(topic, r.LocalPrefix, r.RemotePrefix)
}

// toLocal maps a remote topic the rule's remote filter matched.
func (r *rule) toLocal(topic string) (string, error) {
	if r.capture {
		return r.unfill(topic)
	}
	if r.Pattern == "" {
		return r.LocalPrefix, nil
	}
	return swapPrefix(topic, r.RemotePrefix, r.LocalPrefix)
}

// swapPrefix replaces the prefix from of topic by to. A topic equal to from
// without its trailing "/" becomes to without its trailing "/".
func swapPrefix(topic, from, to string) (string, error) {
	var out string
	switch {
	case strings.HasPrefix(topic, from):
		out = to + topic[len(from):]
	case strings.HasSuffix(from, "/") && topic == from[:len(from)-1]:
		out = strings.TrimSuffix(to, "/")
	default:
		return "", errUnmappable
	}
	if topics.ValidateName(out) != nil {
		return "", errUnmappable
	}
	return out, nil
}

// fill maps a local topic through the capture template.
func (r *rule) fill(topic string) (string, error) {
	levels := strings.Split(topic, "/")
	caps := make([]string, len(r.wild))
	for n, i := range r.wild {
		switch {
		case i >= len(levels):
			caps[n] = "" // "#" matching no level: "a/#" matched "a"
		case n == len(r.wild)-1 && i == r.nlevels-1 && strings.HasSuffix(r.Local, "#"):
			caps[n] = strings.Join(levels[i:], "/")
		default:
			caps[n] = levels[i]
		}
	}
	return r.render(caps)
}

func (r *rule) render(caps []string) (string, error) {
	parts := make([]string, 0, len(r.template))
	for _, l := range r.template {
		if l.arg == 0 {
			parts = append(parts, l.text)
			continue
		}
		c := caps[l.arg-1]
		if c == "" && strings.HasSuffix(r.Local, "#") && l.arg == len(r.wild) {
			continue // an empty "#" capture takes its level with it
		}
		parts = append(parts, c)
	}
	out := strings.Join(parts, "/")
	if topics.ValidateName(out) != nil {
		return "", errUnmappable
	}
	return out, nil
}

// unfill maps a remote topic matched by the derived remote filter back
// through Local.
func (r *rule) unfill(topic string) (string, error) {
	levels := strings.Split(topic, "/")
	caps := make([]string, len(r.wild))
	for i, l := range r.template {
		if l.arg == 0 {
			continue
		}
		switch {
		case i >= len(levels):
			caps[l.arg-1] = ""
		case i == len(r.template)-1 && r.Local[len(r.Local)-1] == '#' && l.arg == len(r.wild):
			caps[l.arg-1] = strings.Join(levels[i:], "/")
		default:
			caps[l.arg-1] = levels[i]
		}
	}
	local := strings.Split(r.Local, "/")
	parts := make([]string, 0, len(local))
	for i, l := range local {
		n := -1
		for k, w := range r.wild {
			if w == i {
				n = k
			}
		}
		if n < 0 {
			parts = append(parts, l)
			continue
		}
		if l == "#" && caps[n] == "" {
			continue
		}
		parts = append(parts, caps[n])
	}
	out := strings.Join(parts, "/")
	if topics.ValidateName(out) != nil {
		return "", errUnmappable
	}
	return out, nil
}

// rules is a bridge's compiled rule set.
type rules []*rule

func compileRules(ts []Topic) (rules, error) {
	out := make(rules, 0, len(ts))
	for i, t := range ts {
		r, err := compileRule(t, i)
		if err != nil {
			return nil, fmt.Errorf("topics[%d] (%s): %w", i, t, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// outRule returns the rule an outgoing message came through: the one with
// the smallest of its subscription identifiers whose local filter matches
// (identifiers are rule index + 1), else the first out rule that matches.
func (rs rules) outRule(topic string, subIDs []uint32) *rule {
	var best *rule
	for _, id := range subIDs {
		if i := int(id) - 1; i >= 0 && i < len(rs) && rs[i].Direction.out() && (best == nil || i < best.index) &&
			topics.Match(rs[i].localFilter, topic) {
			best = rs[i]
		}
	}
	if best != nil {
		return best
	}
	for _, r := range rs {
		if r.Direction.out() && topics.Match(r.localFilter, topic) {
			return r
		}
	}
	return nil
}

// inRule returns the rule an incoming message came through, as outRule.
func (rs rules) inRule(topic string, subIDs []uint32) *rule {
	var best *rule
	for _, id := range subIDs {
		if i := int(id) - 1; i >= 0 && i < len(rs) && rs[i].Direction.in() && (best == nil || i < best.index) &&
			topics.Match(rs[i].remoteFilter, topic) {
			best = rs[i]
		}
	}
	if best != nil {
		return best
	}
	for _, r := range rs {
		if r.Direction.in() && topics.Match(r.remoteFilter, topic) {
			return r
		}
	}
	return nil
}
