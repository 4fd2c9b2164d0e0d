package topics

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// MaxLength is the largest size in bytes of a topic name or filter: the
// length prefix of an MQTT UTF-8 encoded string is 16 bits [MQTT-4.7.3-3].
const MaxLength = 65535

// SharePrefix starts every shared subscription filter [MQTT-4.8.2-1].
const SharePrefix = "$share/"

// Sentinel errors returned, possibly wrapped, by ValidateName and
// ValidateFilter. Test for them with errors.Is.
var (
	// ErrInvalidTopic reports a topic name that may not be published to.
	ErrInvalidTopic = errors.New("topics: invalid topic name")
	// ErrInvalidFilter reports a topic filter that may not be subscribed to.
	ErrInvalidFilter = errors.New("topics: invalid topic filter")
)

// Detailed errors; each wraps one of the sentinels. They are allocated once
// so that rejecting hostile input costs nothing.
var (
	errNameEmpty    = wrap(ErrInvalidTopic, "empty")
	errNameLong     = wrap(ErrInvalidTopic, "longer than 65535 bytes")
	errNameWildcard = wrap(ErrInvalidTopic, "contains a wildcard character")
	errNameNull     = wrap(ErrInvalidTopic, "contains U+0000")
	errNameUTF8     = wrap(ErrInvalidTopic, "not valid UTF-8")

	errFilterEmpty     = wrap(ErrInvalidFilter, "empty")
	errFilterLong      = wrap(ErrInvalidFilter, "longer than 65535 bytes")
	errFilterNull      = wrap(ErrInvalidFilter, "contains U+0000")
	errFilterUTF8      = wrap(ErrInvalidFilter, "not valid UTF-8")
	errFilterHash      = wrap(ErrInvalidFilter, "'#' must be the last level and alone in it")
	errFilterPlus      = wrap(ErrInvalidFilter, "'+' must be alone in its level")
	errShareGroupEmpty = wrap(ErrInvalidFilter, "empty $share group name")
	errShareGroupChar  = wrap(ErrInvalidFilter, "$share group name contains '+' or '#'")
	errShareNoFilter   = wrap(ErrInvalidFilter, "$share group name not followed by '/' and a filter")
)

type detailError struct {
	sentinel error
	msg      string
}

func wrap(sentinel error, detail string) error {
	return &detailError{sentinel, sentinel.Error() + ": " + detail}
}

func (e *detailError) Error() string { return e.msg }
func (e *detailError) Unwrap() error { return e.sentinel }

// ValidateName reports whether name may be used as the topic name of a
// PUBLISH packet: it must be non-empty [MQTT-4.7.3-1], contain no wildcard
// [MQTT-4.7.1-1] [MQTT-3.3.2-2], no U+0000 [MQTT-4.7.3-2], be well-formed
// UTF-8 [MQTT-1.5.4-1] and at most MaxLength bytes long [MQTT-4.7.3-3].
// The returned error wraps ErrInvalidTopic.
func ValidateName(name string) error {
	switch {
	case name == "":
		return errNameEmpty
	case len(name) > MaxLength:
		return errNameLong
	}
	ascii := true
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '+' || c == '#':
			return errNameWildcard
		case c == 0:
			return errNameNull
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(name) {
		return errNameUTF8
	}
	return nil
}

// ValidateFilter reports whether filter may be subscribed to. Besides the
// rules shared with topic names (non-empty, no U+0000, well-formed UTF-8, at
// most MaxLength bytes), '#' must be alone in the last level
// [MQTT-4.7.1-2] and '+' alone in its level [MQTT-4.7.1-3]. A filter
// starting with "$share/" is a shared subscription: the group name that
// follows must be non-empty [MQTT-4.8.2-1], contain no '+' or '#', and be
// followed by '/' and a valid non-empty filter [MQTT-4.8.2-2].
// The returned error wraps ErrInvalidFilter.
func ValidateFilter(filter string) error {
	switch {
	case filter == "":
		return errFilterEmpty
	case len(filter) > MaxLength:
		return errFilterLong
	}
	if strings.HasPrefix(filter, SharePrefix) {
		rest := filter[len(SharePrefix):]
		group, tf, ok := strings.Cut(rest, "/")
		switch {
		case group == "":
			return errShareGroupEmpty
		case strings.ContainsAny(group, "+#"):
			return errShareGroupChar
		case !ok || tf == "":
			return errShareNoFilter
		}
	}
	ascii := true
	for i := 0; i < len(filter); i++ {
		c := filter[i]
		switch {
		case c == '#':
			// Alone in its level and that level is the last one.
			if (i > 0 && filter[i-1] != '/') || i != len(filter)-1 {
				return errFilterHash
			}
		case c == '+':
			if (i > 0 && filter[i-1] != '/') || (i < len(filter)-1 && filter[i+1] != '/') {
				return errFilterPlus
			}
		case c == 0:
			return errFilterNull
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(filter) {
		return errFilterUTF8
	}
	return nil
}

// ParseShared splits a shared subscription filter "$share/{group}/{filter}"
// into its group name and topic filter. For any other filter it returns
// ("", filter, false). It assumes filter passed ValidateFilter.
func ParseShared(filter string) (group, topicFilter string, shared bool) {
	if !strings.HasPrefix(filter, SharePrefix) {
		return "", filter, false
	}
	group, topicFilter, shared = strings.Cut(filter[len(SharePrefix):], "/")
	if !shared {
		return "", filter, false
	}
	return group, topicFilter, true
}

// Match reports whether the topic filter matches the topic name. filter is
// a plain filter (split shared ones with ParseShared first) and both are
// assumed valid. '+' matches exactly one level, which may be empty, so "+/+"
// matches "/"; '#' matches the remaining levels including none, so "a/#"
// matches "a" [MQTT-4.7.1-2]. A filter starting with a wildcard does not
// match a name starting with '$' [MQTT-4.7.2-1]. Matching is byte-wise and
// case-sensitive [MQTT-4.7.3-4]. Match does not allocate.
func Match(filter, name string) bool {
	if name != "" && name[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return !fmore
		}
		n, nrest, nmore := strings.Cut(name, "/")
		if f != n && f != "+" {
			return false
		}
		switch {
		case !fmore && !nmore:
			return true
		case !nmore:
			// Name exhausted: only a trailing "#" can still match the parent.
			return frest == "#"
		case !fmore:
			return false
		}
		filter, name = frest, nrest
	}
}

// Levels returns the number of levels in a topic name or filter: one more
// than the number of '/' separators, so "a/b" and "/" have two and "" one.
func Levels(name string) int {
	return strings.Count(name, "/") + 1
}

// isLiteral reports whether filter contains no wildcard level, in which case
// it matches exactly one topic name: itself.
func isLiteral(filter string) bool {
	return strings.IndexByte(filter, '+') < 0 && strings.IndexByte(filter, '#') < 0
}

// nextLevel returns the level of s that starts at byte offset i and the
// offset of the level after it; that offset is len(s)+1 after the last level.
func nextLevel(s string, i int) (level string, next int) {
	j := strings.IndexByte(s[i:], '/')
	if j < 0 {
		return s[i:], len(s) + 1
	}
	return s[i : i+j], i + j + 1
}
