package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as Go writes durations ("90s",
// "1h30m"), with days and weeks ("2d", "1w"), or as a whole number of
// seconds ("60"), as Mosquitto's settings are.
type Duration time.Duration

const (
	day  = 24 * time.Hour
	week = 7 * day
)

// ParseDuration parses a Duration.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > int64(time.Duration(1<<63-1)/time.Second) || n < -int64(time.Duration(1<<63-1)/time.Second) {
			return 0, errors.New("out of range")
		}
		return Duration(time.Duration(n) * time.Second), nil
	}
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"d", day}, {"w", week}} {
		suffix, unit := u.suffix, u.unit
		if n, err := strconv.ParseInt(strings.TrimSuffix(s, suffix), 10, 64); err == nil && strings.HasSuffix(s, suffix) {
			if n > int64(time.Duration(1<<63-1)/unit) || n < 0 {
				return 0, errors.New("out of range")
			}
			return Duration(time.Duration(n) * unit), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (like 30s, 5m, 2h, 7d or a number of seconds)", s)
	}
	return Duration(d), nil
}

// String formats the duration in the largest whole unit that fits.
func (d Duration) String() string {
	t := time.Duration(d)
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{week, "w"}, {day, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if t != 0 && t%u.unit == 0 {
			return strconv.FormatInt(int64(t/u.unit), 10) + u.name
		}
	}
	if t == 0 {
		return "0s"
	}
	return t.String()
}

// MarshalYAML writes the duration as its String.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Size is a number of bytes, written as a whole number or with a unit: KB,
// MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024). Keys that
// allow it also take "auto" (SizeAuto): a size the broker derives from the
// memory it may use.
type Size int64

// SizeAuto is the Size written "auto".
const SizeAuto Size = -1

var sizeUnits = []struct {
	name string
	n    int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}

// ParseSize parses a Size.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	if s == "auto" {
		return SizeAuto, nil
	}
	num, mul := s, int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.name) {
			num, mul = strings.TrimSpace(strings.TrimSuffix(s, u.name)), u.n
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size (like 1048576, 256KiB, 1MiB or 2GB)", s)
	}
	if n > (1<<63-1)/mul || n < -(1<<63-1)/mul {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return Size(n * mul), nil
}

// String formats the size in its shortest form: 1MiB, 2GB, 1000.
func (z Size) String() string {
	if z == SizeAuto {
		return "auto"
	}
	plain := strconv.FormatInt(int64(z), 10)
	best := ""
	for _, u := range sizeUnits[:len(sizeUnits)-1] {
		if s := strconv.FormatInt(int64(z)/u.n, 10) + u.name; z != 0 && int64(z)%u.n == 0 && (best == "" || len(s) < len(best)) {
			best = s
		}
	}
	if best == "" || len(plain) < len(best) {
		return plain
	}
	return best
}

// MarshalYAML writes the size as its String.
func (z Size) MarshalYAML() (any, error) {
	if s := z.String(); strings.HasSuffix(s, "B") || z == SizeAuto {
		return s, nil
	}
	return int64(z), nil
}

// parseBool accepts what YAML 1.1 and Mosquitto users write for booleans.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (true or false)", s)
}

// A textSetter is a list element that can also be written as one string,
// as environment variables and flags write it.
type textSetter interface {
	setText(s string) error
	text() string
}

func (l *NetListener) setText(s string) error {
	*l = NetListener{Address: s}
	return nil
}

func (l *NetListener) text() string { return l.Address }

func (l *WSListener) setText(s string) error {
	*l = WSListener{Address: s}
	return nil
}

func (l *WSListener) text() string { return l.Address }

func (l *UnixListener) setText(s string) error {
	*l = UnixListener{Path: s}
	return nil
}

func (l *UnixListener) text() string { return l.Path }

func (k *APIKey) setText(s string) error {
	key, secret, ok := strings.Cut(s, ":")
	if !ok {
		return errors.New("an API key is written key:secret")
	}
	*k = APIKey{Key: key, Secret: secret}
	return nil
}

func (k *APIKey) text() string { return k.Key + ":" + redacted }

// redacted replaces secrets in what is printed.
const redacted = "<redacted>"
