package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts the name of every environment variable of a key.
const EnvPrefix = "TERN_"

// EnvConfigFile is the environment variable naming the configuration file
// when no -c flag does.
const EnvConfigFile = EnvPrefix + "CONFIG"

// Key is one setting, with its names in the three layers that can set it.
type Key struct {
	Name  string // in the file, with dots: "limits.max_qos"
	Env   string // "TERN_LIMITS_MAX_QOS"
	Flag  string // "max-qos", without the dashes
	Short string // one-letter flag, if any
	Usage string

	index []int
	typ   reflect.Type
}

var (
	durationType = reflect.TypeFor[Duration]()
	sizeType     = reflect.TypeFor[Size]()
)

// Keys returns every key, in the order of the file. List keys (the
// listeners, admin.api_keys) are set as a whole by environment variables
// and flags, as comma-separated values or a repeated flag.
func Keys() []Key { return slices.Clone(keys()) }

var keys = sync.OnceValue(func() []Key {
	var out []Key
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			idx := append(slices.Clone(index), i)
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, prefix+name+".", idx)
				continue
			}
			k := Key{Name: prefix + name, Flag: f.Tag.Get("flag"), Short: f.Tag.Get("short"),
				Usage: f.Tag.Get("usage"), index: idx, typ: f.Type}
			k.Env = EnvPrefix + strings.ToUpper(strings.ReplaceAll(k.Name, ".", "_"))
			if k.Flag == "" {
				k.Flag = strings.ReplaceAll(name, "_", "-")
			}
			out = append(out, k)
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return out
})

// yamlName returns the key of a struct field, or "" for fields that are
// not settings.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || inline(f) {
		return ""
	}
	return name
}

func (c *Config) field(k *Key) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(k.index)
}

// Load returns the effective configuration: the defaults, then the YAML
// file at path (none when path is ""), then the TERN_… variables in
// environ (as os.Environ returns them), then the flags of fs that were set
// on the command line (fs may be nil; its flags come from RegisterFlags).
// Unknown keys and variables, values that do not parse and a configuration
// that does not validate are errors naming the key and where it was set.
func Load(path string, environ []string, fs *pflag.FlagSet) (*Config, error) {
	c := Default()
	c.origins = make(map[string]string)
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := c.decodeFile(path, data); err != nil {
			return nil, err
		}
	}
	if err := c.applyEnv(environ); err != nil {
		return nil, err
	}
	if fs != nil {
		if err := c.applyFlags(fs); err != nil {
			return nil, err
		}
	}
	c.defaultPorts()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Where tells where the value of a key came from: "tern.yaml:12",
// "TERN_LIMITS_MAX_QOS", "--max-qos", or "default".
func (c *Config) Where(key string) string {
	for k := key; k != ""; {
		if o, ok := c.origins[k]; ok {
			return o
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return "default"
}

// setRaw records a scalar value as it was written, for YAML to print it
// so.
func (c *Config) setRaw(key, text string) {
	if c.raw == nil {
		c.raw = make(map[string]string)
	}
	c.raw[key] = strings.TrimSpace(text)
}

func (c *Config) setOrigin(key, origin string) {
	if c.origins == nil {
		c.origins = make(map[string]string)
	}
	for k := range c.origins { // a list set anew forgets where its elements were
		if strings.HasPrefix(k, key+"[") || strings.HasPrefix(k, key+".") {
			delete(c.origins, k)
		}
	}
	c.origins[key] = origin
}

// decodeFile merges a YAML document into c.
func (c *Config) decodeFile(name string, data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config: %s: %w", name, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 { // empty file
		return nil
	}
	d := &decoder{file: name, c: c}
	d.value(doc.Content[0], reflect.ValueOf(c).Elem(), "")
	return errors.Join(d.errs...)
}

type decoder struct {
	file string
	c    *Config
	errs []error
}

func (d *decoder) fail(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, fmt.Errorf("config: %s:%d: %s", d.file, n.Line, fmt.Sprintf(format, args...)))
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// value decodes node n into v, the setting at key.
func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch {
	case v.Kind() == reflect.Struct:
		d.mapping(n, v, key)
	case v.Kind() == reflect.Slice:
		d.sequence(n, v, key)
	case v.Kind() == reflect.Map:
		d.stringMap(n, v, key)
	case n.Kind != yaml.ScalarNode:
		d.fail(n, "%s: want a single value, not a list or mapping", key)
	case isNull(n) && v.Kind() != reflect.String:
		d.fail(n, "%s: no value given", key)
	default:
		if err := setScalar(v, n.Value); err != nil {
			d.fail(n, "%s: %v", key, err)
			return
		}
		d.c.setOrigin(key, fmt.Sprintf("%s:%d", d.file, n.Line))
		d.c.setRaw(key, n.Value)
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) {
	if isNull(n) {
		return // "tls:" with nothing under it
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, "%s: want a mapping of keys", orTop(key))
		return
	}
	t := v.Type()
	seen := make(map[string]bool)
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		full := join(key, kn.Value)
		f, ok := fieldByName(t, kn.Value)
		if !ok {
			d.fail(kn, "unknown key %q%s", full, suggest(kn.Value, fieldNames(t), key))
			continue
		}
		if seen[kn.Value] {
			d.fail(kn, "key %q given twice", full)
			continue
		}
		seen[kn.Value] = true
		d.value(vn, v.FieldByIndex(f.Index), full)
	}
}

// stringMap decodes a mapping of names to single values (a StringMap).
func (d *decoder) stringMap(n *yaml.Node, v reflect.Value, key string) {
	d.c.setOrigin(key, fmt.Sprintf("%s:%d", d.file, n.Line))
	if isNull(n) {
		v.Set(reflect.Zero(v.Type()))
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, "%s: want a mapping of names to values", key)
		return
	}
	m := reflect.MakeMap(v.Type())
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if vn.Kind == yaml.AliasNode {
			vn = vn.Alias
		}
		if vn.Kind != yaml.ScalarNode {
			d.fail(vn, "%s.%s: want a single value", key, kn.Value)
			continue
		}
		if m.MapIndex(reflect.ValueOf(kn.Value)).IsValid() {
			d.fail(kn, "%s: %q given twice", key, kn.Value)
			continue
		}
		m.SetMapIndex(reflect.ValueOf(kn.Value), reflect.ValueOf(vn.Value))
	}
	if m.Len() == 0 {
		m = reflect.Zero(v.Type()) // "{}" is the default's nil
	}
	v.Set(m)
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, key string) {
	d.c.setOrigin(key, fmt.Sprintf("%s:%d", d.file, n.Line))
	items := n.Content
	switch {
	case isNull(n):
		items = nil
	case n.Kind == yaml.ScalarNode: // a single element written without "- "
		items = []*yaml.Node{n}
	case n.Kind != yaml.SequenceNode:
		d.fail(n, "%s: want a list", key)
		return
	}
	out := reflect.MakeSlice(v.Type(), 0, len(items))
	for i, en := range items {
		if en.Kind == yaml.AliasNode {
			en = en.Alias
		}
		ev := reflect.New(v.Type().Elem()).Elem()
		if d, ok := ev.Addr().Interface().(defaulter); ok {
			d.setDefaults()
		}
		ek := fmt.Sprintf("%s[%d]", key, i)
		if ts, ok := ev.Addr().Interface().(textSetter); ok && en.Kind == yaml.ScalarNode && !isNull(en) {
			if err := ts.setText(en.Value); err != nil {
				d.fail(en, "%s: %v", ek, err)
			}
			d.c.setOrigin(ek, fmt.Sprintf("%s:%d", d.file, en.Line))
		} else {
			d.value(en, ev, ek)
		}
		out = reflect.Append(out, ev)
	}
	if out.Len() == 0 {
		out = reflect.Zero(v.Type()) // "[]" is the default's nil
	}
	v.Set(out)
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func orTop(key string) string {
	if key == "" {
		return "the file"
	}
	return key
}

// fieldByName returns the field of the key name in struct t, looking into
// the fields marked `yaml:",inline"`; its Index leads to it from t.
func fieldByName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if inline(f) {
			if g, ok := fieldByName(f.Type, name); ok {
				g.Index = append([]int{i}, g.Index...)
				return g, true
			}
			continue
		}
		if yamlName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// inline reports whether f is a struct whose fields are keys of the
// struct that holds it.
func inline(f reflect.StructField) bool {
	_, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return f.Anonymous && f.Type.Kind() == reflect.Struct && opts == "inline"
}

func fieldNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if inline(f) {
			out = append(out, fieldNames(f.Type)...)
		} else if n := yamlName(f); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// suggest returns ` (did you mean "x"?)` for the candidate closest to name,
// if one is close.
func suggest(name string, candidates []string, prefix string) string {
	best := closest(name, candidates)
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", join(prefix, best))
}

// closest returns the candidate closest to name if one is close, else "".
func closest(name string, candidates []string) string {
	best, bestD := "", 4
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// setScalar parses s into v, a setting that is not a list.
func setScalar(v reflect.Value, s string) error {
	if v.Kind() == reflect.Pointer { // an optional setting: nil when not given
		p := reflect.New(v.Type().Elem())
		if err := setScalar(p.Elem(), s); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	switch v.Type() {
	case durationType:
		d, err := ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	case sizeType:
		z, err := ParseSize(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(z))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := parseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%q is not a whole number that fits in %d bits", s, v.Type().Bits())
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%q is not a whole number from 0 to %d", s, uint64(1)<<v.Type().Bits()-1)
		}
		v.SetUint(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a number of 0 or more", s)
		}
		v.SetFloat(n)
	default:
		return fmt.Errorf("config: no parser for %s", v.Type())
	}
	return nil
}

// setString parses the form environment variables and flags use: a single
// value, or for a list comma-separated elements ("" for an empty list).
func setString(v reflect.Value, s string) error {
	if v.Kind() == reflect.Map {
		return setMapString(v, s)
	}
	if v.Kind() != reflect.Slice {
		return setScalar(v, s)
	}
	out := reflect.MakeSlice(v.Type(), 0, 1)
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		ev := reflect.New(v.Type().Elem()).Elem()
		var err error
		if ts, ok := ev.Addr().Interface().(textSetter); ok {
			err = ts.setText(part)
		} else {
			err = setScalar(ev, part)
		}
		if err != nil {
			return err
		}
		out = reflect.Append(out, ev)
	}
	if out.Len() == 0 {
		out = reflect.Zero(v.Type())
	}
	v.Set(out)
	return nil
}

// setMapString parses name=value,name=value into a StringMap.
func setMapString(v reflect.Value, s string) error {
	m := reflect.MakeMap(v.Type())
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("%q is not name=value", part)
		}
		m.SetMapIndex(reflect.ValueOf(strings.TrimSpace(name)), reflect.ValueOf(strings.TrimSpace(val)))
	}
	if m.Len() == 0 {
		m = reflect.Zero(v.Type())
	}
	v.Set(m)
	return nil
}

// formatValue writes a setting the way setString reads it.
func formatValue(v reflect.Value) string {
	if v.Kind() == reflect.Map {
		keys := v.MapKeys()
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k.String() + "=" + v.MapIndex(k).String()
		}
		slices.Sort(parts)
		return strings.Join(parts, ",")
	}
	if v.Kind() == reflect.Slice {
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = formatValue(v.Index(i))
		}
		return strings.Join(parts, ",")
	}
	if ts, ok := v.Addr().Interface().(textSetter); ok {
		return ts.text()
	}
	return fmt.Sprint(v.Interface())
}

func (c *Config) applyEnv(environ []string) error {
	byEnv := make(map[string]*Key)
	fileOnly := make(map[string]string)
	for i, k := range keys() {
		if k.Flag == "-" {
			fileOnly[k.Env] = k.Name
			continue
		}
		byEnv[k.Env] = &keys()[i]
	}
	c.ignoredEnv = nil
	var errs []error
	for _, kv := range environ {
		name, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) || name == EnvConfigFile {
			continue
		}
		if key, ok := fileOnly[name]; ok {
			errs = append(errs, fmt.Errorf("config: %s: %s is set in the configuration file only", name, key))
			continue
		}
		k, ok := byEnv[name]
		if !ok {
			// Not a key: Kubernetes' service links (TERN_PORT=tcp://...,
			// TERN_SERVICE_HOST for a Service named tern), or a variable
			// meant for something else. See IgnoredEnv.
			c.ignoredEnv = append(c.ignoredEnv, name)
			continue
		}
		if err := setString(c.field(k), val); err != nil {
			errs = append(errs, fmt.Errorf("config: %s (from %s): %v", k.Name, name, err))
			continue
		}
		c.setOrigin(k.Name, name)
		c.setRaw(k.Name, val)
	}
	slices.Sort(c.ignoredEnv)
	return errors.Join(errs...)
}

// IgnoredVar is a TERN_ environment variable that is not a key.
type IgnoredVar struct {
	Name string
	// ServiceLink is true for the variables Kubernetes sets for a Service
	// named tern (TERN_PORT, TERN_PORT_1883_TCP_ADDR, TERN_SERVICE_HOST, ...).
	ServiceLink bool
	// Suggest is the variable of a key whose name is close, "" when none
	// is: a likely misspelling.
	Suggest string
}

// IgnoredEnv returns the TERN_ variables Load ignored because no key has
// that name, sorted. The broker logs them: at DEBUG, or as a warning when
// the name is close to a key's.
func (c *Config) IgnoredEnv() []IgnoredVar {
	var names []string
	for _, k := range keys() {
		names = append(names, k.Env)
	}
	out := make([]IgnoredVar, 0, len(c.ignoredEnv))
	for _, n := range c.ignoredEnv {
		v := IgnoredVar{Name: n, ServiceLink: serviceLink.MatchString(n)}
		if !v.ServiceLink {
			v.Suggest = closest(n, names)
		}
		out = append(out, v)
	}
	return out
}

// serviceLink matches the names of Kubernetes' service link variables
// (docker links have the same form): <SERVICE>_PORT,
// <SERVICE>_PORT_<port>_<proto>[_PROTO|_PORT|_ADDR], <SERVICE>_SERVICE_HOST,
// <SERVICE>_SERVICE_PORT[_<name>].
var serviceLink = regexp.MustCompile(`^[A-Z0-9_]+_(PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?|SERVICE_(HOST|PORT(_[A-Z0-9_]+)?))$`)

// flagValue is the pflag.Value of a key's flag. It keeps what was given,
// checked as it is set, for Load to apply over the file and environment.
type flagValue struct {
	key  *Key
	def  string
	vals []string
}

func (f *flagValue) Set(s string) error {
	if err := setString(reflect.New(f.key.typ).Elem(), s); err != nil {
		return err
	}
	if k := f.key.typ.Kind(); k == reflect.Slice || k == reflect.Map {
		f.vals = append(f.vals, s)
	} else {
		f.vals = []string{s}
	}
	return nil
}

func (f *flagValue) String() string { return f.def }

func (f *flagValue) Type() string {
	switch t := f.key.typ; {
	case t == durationType:
		return "duration"
	case t == sizeType:
		return "size"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return "strings"
	case t.Kind() == reflect.Slice && t.Elem() == reflect.TypeFor[UnixListener]():
		return "path"
	case t.Kind() == reflect.Slice && t.Elem() == reflect.TypeFor[APIKey]():
		return "key:secret"
	case t.Kind() == reflect.Slice && t.Elem() == reflect.TypeFor[Webhook]():
		return "url"
	case t.Kind() == reflect.Map:
		return "name=value"
	case t.Kind() == reflect.Slice:
		return "address"
	case t.Kind() == reflect.String && strings.HasSuffix(f.key.Name, "_file"):
		return "file"
	case t.Kind() == reflect.String:
		return "string"
	}
	return f.key.typ.Kind().String()
}

// RegisterFlags defines on fs a flag for every key (see Keys), showing the
// defaults in the help. Load applies those set on the command line.
func RegisterFlags(fs *pflag.FlagSet) {
	def := Default()
	for i := range keys() {
		k := &keys()[i]
		if k.Flag == "-" {
			continue // in the file only
		}
		v := &flagValue{key: k, def: formatValue(def.field(k))}
		if v.def == "0s" {
			v.def = "0" // which the help does not show as a default
		}
		f := fs.VarPF(v, k.Flag, k.Short, k.Usage)
		if k.typ.Kind() == reflect.Bool {
			f.NoOptDefVal = "true"
		}
	}
}

func (c *Config) applyFlags(fs *pflag.FlagSet) error {
	var errs []error
	fs.Visit(func(f *pflag.Flag) {
		v, ok := f.Value.(*flagValue)
		if !ok {
			return
		}
		if err := setString(c.field(v.key), strings.Join(v.vals, ",")); err != nil {
			errs = append(errs, fmt.Errorf("config: %s (from --%s): %v", v.key.Name, f.Name, err))
			return
		}
		c.setOrigin(v.key.Name, "--"+f.Name)
		if len(v.vals) == 1 {
			c.setRaw(v.key.Name, v.vals[0])
		}
	})
	return errors.Join(errs...)
}

// Changed returns the keys whose values differ between a and b.
func Changed(a, b *Config) []string {
	var out []string
	for i := range keys() {
		k := &keys()[i]
		if !reflect.DeepEqual(a.field(k).Interface(), b.field(k).Interface()) {
			out = append(out, k.Name)
		}
	}
	return out
}
