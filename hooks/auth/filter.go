package auth

import "strings"

// Covers reports whether every topic name that filter inner matches is
// also matched by filter outer: a "deny" ACL for outer refuses a
// subscription to inner. "a/#" covers "a/+/b" and "a"; "a/+" does not
// cover "a/#"; "#" does not cover "$SYS/#" (a filter starting with a
// wildcard matches no topic starting with '$' [MQTT-4.7.2-1]). A topic
// name is a filter without wildcards, so Covers(filter, name) is
// topics.Match(filter, name). Both arguments are assumed valid.
func Covers(outer, inner string) bool {
	if wildFirst(outer) && strings.HasPrefix(inner, "$") {
		return false
	}
	first := "" // inner's first level
	for k := 0; ; k++ {
		o, orest, omore := strings.Cut(outer, "/")
		i, irest, imore := strings.Cut(inner, "/")
		if k == 0 {
			first = i
		}
		if o == "#" {
			return true
		}
		switch {
		case i == "#":
			// inner matches the levels so far (its parent) and any levels
			// below. "+/#" covers the latter; the former only when it is
			// the empty name, which is no topic.
			return o == "+" && orest == "#" && (k == 0 || k == 1 && first == "")
		case o != "+" && o != i:
			return false // includes i == "+" against a literal level
		}
		switch {
		case !omore && !imore:
			return true
		case !imore:
			return orest == "#" // "a/#" matches "a"
		case !omore:
			return false
		}
		outer, inner = orest, irest
	}
}

// Overlaps reports whether some topic name is matched by both filters: a
// "read" ACL for one of them allows subscribing to the other (the topics
// it does not grant are then filtered out per message). Both arguments
// are assumed valid.
func Overlaps(a, b string) bool {
	if wildFirst(a) && strings.HasPrefix(b, "$") || wildFirst(b) && strings.HasPrefix(a, "$") {
		return false
	}
	for k := 0; ; k++ {
		x, xrest, xmore := strings.Cut(a, "/")
		y, yrest, ymore := strings.Cut(b, "/")
		if x == "#" || y == "#" {
			return true
		}
		if x != "+" && y != "+" && x != y {
			return false
		}
		// A name common to both ending here is empty, which is no topic,
		// when it is this one level and that level must be empty.
		ends := !(k == 0 && (x == "" || y == ""))
		switch {
		case !xmore && !ymore:
			return ends
		case !xmore:
			return yrest == "#" && ends
		case !ymore:
			return xrest == "#" && ends
		}
		a, b = xrest, yrest
	}
}

// wildFirst reports whether a filter's first level is a wildcard.
func wildFirst(f string) bool {
	return f == "#" || f == "+" || strings.HasPrefix(f, "+/")
}
