package config

import (
	"bytes"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// YAML returns the configuration as a YAML file that Load reads back, with
// secrets (admin.token, the API keys' secrets, bridge passwords, HTTP
// header values) replaced by "<redacted>".
// Sizes, durations and rates are printed as they were written (10000000
// stays 10000000, 168h stays 168h); the defaults in their shortest form
// that parses back.
func (c *Config) YAML() ([]byte, error) {
	cp := *c
	if cp.Admin.Token != "" {
		cp.Admin.Token = redacted
	}
	cp.Admin.APIKeys = slices.Clone(cp.Admin.APIKeys)
	for i := range cp.Admin.APIKeys {
		cp.Admin.APIKeys[i].Secret = redacted
	}
	cp.Bridges = slices.Clone(cp.Bridges)
	for i := range cp.Bridges {
		if cp.Bridges[i].Password != "" {
			cp.Bridges[i].Password = redacted
		}
		if cp.Bridges[i].LocalPassword != "" {
			cp.Bridges[i].LocalPassword = redacted
		}
	}
	// Header values (Authorization: ...) are secrets too.
	cp.Auth.HTTP.Headers = redactValues(cp.Auth.HTTP.Headers)
	cp.Events.Webhooks = slices.Clone(cp.Events.Webhooks)
	for i := range cp.Events.Webhooks {
		cp.Events.Webhooks[i].Headers = redactValues(cp.Events.Webhooks[i].Headers)
	}
	var doc yaml.Node
	if err := doc.Encode(&cp); err != nil {
		return nil, err
	}
	c.asWritten(&doc, reflect.ValueOf(&cp).Elem(), "")
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func redactValues(m StringMap) StringMap {
	if m == nil {
		return nil
	}
	out := make(StringMap, len(m))
	for k := range m {
		out[k] = redacted
	}
	return out
}

// asWritten walks the encoded node n of value v (the setting at key) and
// puts back the text a size, duration or number was written with, when it
// still reads as the same value; numbers that were not written are
// printed in full, never in exponent form.
func (c *Config) asWritten(n *yaml.Node, v reflect.Value, key string) {
	switch n.Kind {
	case yaml.MappingNode:
		if v.Kind() != reflect.Struct {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			name := n.Content[i].Value
			if f, ok := fieldByName(v.Type(), name); ok {
				c.asWritten(n.Content[i+1], v.FieldByIndex(f.Index), join(key, name))
			}
		}
	case yaml.SequenceNode:
		if v.Kind() != reflect.Slice {
			return
		}
		for i, e := range n.Content {
			if i < v.Len() {
				c.asWritten(e, v.Index(i), key+"["+strconv.Itoa(i)+"]")
			}
		}
	case yaml.ScalarNode:
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return
			}
			v = v.Elem()
		}
		if v.Kind() == reflect.String {
			return
		}
		if raw, ok := c.raw[key]; ok && raw != n.Value && plain(raw) {
			back := reflect.New(v.Type()).Elem()
			if setScalar(back, raw) == nil && back.Interface() == v.Interface() {
				n.Value, n.Tag, n.Style = raw, "", 0
				return
			}
		}
		if v.Kind() == reflect.Float64 {
			n.Value = strconv.FormatFloat(v.Float(), 'f', -1, 64)
		}
	}
}

// plain reports whether s can be written as a plain YAML scalar and read
// back as the same text.
func plain(s string) bool {
	return s != "" && !strings.ContainsAny(s, ":#{}[],&*!|>'\"%@`\n") && strings.TrimSpace(s) == s
}
