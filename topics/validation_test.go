package topics

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	long := strings.Repeat("a", MaxLength)
	tests := []struct {
		name  string
		topic string
		ok    bool
	}{
		{"single level", "a", true},
		{"several levels", "sport/tennis/player1", true},
		{"leading slash", "/finance", true},          // [MQTT-4.7.1-1] '/' is a separator, allowed anywhere
		{"trailing slash", "finance/", true},         // empty last level
		{"only separator", "/", true},                // two empty levels
		{"empty levels", "a//b", true},               // zero-length levels are allowed
		{"spaces", "sport tennis/player 1", true},    // spaces are ordinary characters
		{"dollar topic", "$SYS/broker/uptime", true}, // '$' topics may be published by the server
		{"share prefix is just a name", "$share/g/a", true},
		{"unicode", "données/température/°C", true},
		{"max length", long, true},                         // [MQTT-4.7.3-3]
		{"empty", "", false},                               // [MQTT-4.7.3-1]
		{"too long", long + "a", false},                    // [MQTT-4.7.3-3]
		{"multi-level wildcard", "sport/#", false},         // [MQTT-4.7.1-1] [MQTT-3.3.2-2]
		{"single-level wildcard", "sport/+/player", false}, // [MQTT-4.7.1-1] [MQTT-3.3.2-2]
		{"wildcard inside level", "sport+", false},         // [MQTT-3.3.2-2]
		{"hash inside level", "a#b", false},                // [MQTT-3.3.2-2]
		{"null character", "a\x00b", false},                // [MQTT-4.7.3-2]
		{"only null", "\x00", false},                       // [MQTT-4.7.3-2]
		{"invalid utf-8", "a/\xff", false},                 // [MQTT-1.5.4-1]
		{"utf-16 surrogate", "a/\xed\xa0\x80", false},      // [MQTT-1.5.4-1] U+D800
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.topic)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateName(%q) = %v, want ok=%v", tt.topic, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidTopic) {
				t.Fatalf("ValidateName(%q) = %v, not ErrInvalidTopic", tt.topic, err)
			}
		})
	}
}

func TestValidateFilter(t *testing.T) {
	long := strings.Repeat("a", MaxLength)
	tests := []struct {
		name   string
		filter string
		ok     bool
	}{
		{"literal", "sport/tennis", true},
		{"multi-level alone", "#", true},                 // [MQTT-4.7.1-2]
		{"multi-level last", "sport/tennis/#", true},     // [MQTT-4.7.1-2]
		{"single-level alone", "+", true},                // [MQTT-4.7.1-3]
		{"single-level middle", "sport/+/player1", true}, // [MQTT-4.7.1-3]
		{"single-level then multi", "+/tennis/#", true},  // [MQTT-4.7.1-3]
		{"single-level twice", "+/+", true},              // [MQTT-4.7.1-3]
		{"leading empty level", "/+", true},              // [MQTT-4.7.1-3]
		{"trailing empty level", "a/+/", true},           // [MQTT-4.7.1-3]
		{"dollar", "$SYS/#", true},                       // [MQTT-4.7.2-1]
		{"spaces", "my topic/+", true},
		{"max length", long, true},                         // [MQTT-4.7.3-3]
		{"empty", "", false},                               // [MQTT-4.7.3-1]
		{"too long", long + "a", false},                    // [MQTT-4.7.3-3]
		{"null", "a/\x00", false},                          // [MQTT-4.7.3-2]
		{"invalid utf-8", "\xc3\x28/#", false},             // [MQTT-1.5.4-1]
		{"multi-level not last", "sport/#/ranking", false}, // [MQTT-4.7.1-2]
		{"multi-level in level", "sport/tennis#", false},   // [MQTT-4.7.1-2]
		{"multi-level before text", "sport/#x", false},     // [MQTT-4.7.1-2]
		{"multi-level twice", "#/#", false},                // [MQTT-4.7.1-2]
		{"single-level suffix", "sport+", false},           // [MQTT-4.7.1-3]
		{"single-level prefix", "+sport", false},           // [MQTT-4.7.1-3]
		{"single-level doubled", "a/++/b", false},          // [MQTT-4.7.1-3]
		{"mixed wildcards", "a/+#", false},                 // [MQTT-4.7.1-2] [MQTT-4.7.1-3]
		{"shared", "$share/group/sport/#", true},           // [MQTT-4.8.2-1]
		{"shared single level", "$share/g/+", true},        // [MQTT-4.8.2-2]
		{"shared dollar topic", "$share/g/$SYS/x", true},   // [MQTT-4.8.2-2]
		{"shared empty level filter", "$share/g//", true},  // [MQTT-4.8.2-2] "/" is a valid filter
		{"share without slash", "$share", true},            // not the shared form: a plain filter
		{"share case differs", "$SHARE/g/a", true},         // not the shared form [MQTT-4.7.3-4]
		{"shared empty group", "$share//a", false},         // [MQTT-4.8.2-1]
		{"shared only prefix", "$share/", false},           // [MQTT-4.8.2-1]
		{"shared no filter", "$share/group", false},        // [MQTT-4.8.2-2]
		{"shared empty filter", "$share/group/", false},    // [MQTT-4.8.2-2]
		{"shared plus in group", "$share/g+/a", false},     // [MQTT-4.8.2-2]
		{"shared hash in group", "$share/#/a", false},      // [MQTT-4.8.2-2]
		{"shared plus group", "$share/+/a", false},         // [MQTT-4.8.2-2]
		{"shared bad filter", "$share/g/a#", false},        // [MQTT-4.7.1-2]
		{"shared null in group", "$share/g\x00/a", false},  // [MQTT-4.7.3-2]
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateFilter(tt.filter)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateFilter(%q) = %v, want ok=%v", tt.filter, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidFilter) {
				t.Fatalf("ValidateFilter(%q) = %v, not ErrInvalidFilter", tt.filter, err)
			}
		})
	}
}

func TestErrorsPrefixed(t *testing.T) {
	for _, err := range []error{ErrInvalidTopic, ErrInvalidFilter, ValidateName(""), ValidateFilter("a#")} {
		if !strings.HasPrefix(err.Error(), "topics: ") {
			t.Errorf("error %q lacks the package prefix", err)
		}
	}
}

func TestParseShared(t *testing.T) {
	tests := []struct {
		filter, group, topicFilter string
		shared                     bool
	}{
		{"$share/g/a/b", "g", "a/b", true}, // [MQTT-4.8.2-1]
		{"$share/consumers/#", "consumers", "#", true},
		{"$share/g//", "g", "/", true},
		{"$share/g/$SYS/+", "g", "$SYS/+", true},
		{"a/b", "", "a/b", false},
		{"$share", "", "$share", false},
		{"$SYS/#", "", "$SYS/#", false},
		{"share/g/a", "", "share/g/a", false},
	}
	for _, tt := range tests {
		group, tf, shared := ParseShared(tt.filter)
		if group != tt.group || tf != tt.topicFilter || shared != tt.shared {
			t.Errorf("ParseShared(%q) = %q, %q, %v; want %q, %q, %v",
				tt.filter, group, tf, shared, tt.group, tt.topicFilter, tt.shared)
		}
	}
}

func TestLevels(t *testing.T) {
	tests := []struct {
		name string
		want int
	}{
		{"", 1}, {"a", 1}, {"a/b", 2}, {"/", 2}, {"/a/", 3}, {"a//b", 3}, {"sport/tennis/#", 3},
	}
	for _, tt := range tests {
		if got := Levels(tt.name); got != tt.want {
			t.Errorf("Levels(%q) = %d, want %d", tt.name, got, tt.want)
		}
	}
}
