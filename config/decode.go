package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decoder fills the raw rows from the YAML node tree itself, rather than through yaml.v3's
// Decode, so that every problem is known by its node: an unknown key is reported with the section
// it appears in ("in mirror \"cdn\""), a wrong type with the key it belongs to, and decoding goes
// on after a problem so that the file's problems are all reported at once. It understands the few
// kinds the rows use: structs, pointers, slices, strings, bools, integers, floats and durations.
type decoder struct {
	file string
	errs []error
}

// maxDepth bounds nesting; the schema is four levels deep, so anything deeper is a mistake (or an
// attempt to make the walk expensive).
const maxDepth = 16

var durationType = reflect.TypeFor[time.Duration]()

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", `\n`)
	d.errs = append(d.errs, fmt.Errorf("%s:%d: %s", d.file, n.Line, msg))
}

// decode stores n into v. key names n in messages ("signing.ttl", `mirror "cdn": weight`); section
// names the mapping n is, for unknown keys; elem says n is an item of a list of mappings.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, key, section string, elem bool, depth int) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if depth > maxDepth {
		d.errorf(n, "%s: nested too deeply", key)
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" or "key: ~" leaves the default
	}
	t := v.Type()
	switch {
	case t.Kind() == reflect.Pointer:
		ptr := reflect.New(t.Elem())
		d.decode(n, ptr.Elem(), key, section, elem, depth)
		v.Set(ptr)
	case t.Kind() == reflect.Struct:
		d.mapping(n, v, key, section, elem, depth)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, "%s must be a list", key)
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			label := elementName(key, item, i)
			d.decode(item, s.Index(i), label, label, true, depth+1)
		}
		v.Set(s)
	default:
		d.scalar(n, v, key)
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key, section string, elem bool, depth int) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s must be a mapping of keys to values", section)
		return
	}
	fields := map[string]int{}
	t := v.Type()
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" && tag != "-" {
			fields[tag] = i
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, "a key in %s is not a plain name", section)
			continue
		}
		name := k.Value
		f, ok := fields[name]
		if !ok {
			d.errorf(k, "unknown key %q in %s", name, section)
			continue
		}
		if seen[name] {
			d.errorf(k, "key %q appears twice in %s", name, section)
			continue
		}
		seen[name] = true
		full := name
		switch {
		case elem:
			full = key + ": " + name
		case key != "":
			full = key + "." + name
		}
		d.decode(val, v.Field(f), full, full, false, depth+1)
	}
}

// elementName names the i-th item of the list under key for messages: `mirror "cdn"` when the
// item has a name, else `mirror #3`.
func elementName(key string, item *yaml.Node, i int) string {
	singular := map[string]string{
		"mirrors": "mirror", "routes": "route", "cloud_ranges": "cloud range", "sync.repositories": "sync repository",
	}[key]
	if singular == "" {
		return key
	}
	if item.Kind == yaml.MappingNode {
		for j := 0; j+1 < len(item.Content); j += 2 {
			if item.Content[j].Value == "name" && item.Content[j+1].Kind == yaml.ScalarNode && item.Content[j+1].Value != "" {
				return fmt.Sprintf("%s %q", singular, item.Content[j+1].Value)
			}
		}
	}
	return fmt.Sprintf("%s #%d", singular, i+1)
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, "%s must be a single value, not a %s", key, kindName(n.Kind))
		return
	}
	s := n.Value
	t := v.Type()
	switch {
	case t == durationType:
		if s == "0" {
			v.SetInt(0)
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.errorf(n, "%s: %q is not a duration like 30s, 15m or 24h", key, s)
			return
		}
		v.SetInt(int64(dur))
	case t.Kind() == reflect.String:
		v.SetString(s)
	case t.Kind() == reflect.Bool:
		var b bool
		if err := n.Decode(&b); err != nil || n.Tag != "!!bool" {
			d.errorf(n, "%s: %q is not true or false", key, s)
			return
		}
		v.SetBool(b)
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n.Tag != "!!int" || v.OverflowInt(i) {
			d.errorf(n, "%s: %q is not a whole number", key, s)
			return
		}
		v.SetInt(i)
	case t.Kind() == reflect.Uint32:
		u, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n.Tag != "!!int" {
			d.errorf(n, "%s: %q is not a whole number from 0 to %d", key, s, uint32(1<<32-1))
			return
		}
		v.SetUint(u)
	case t.Kind() == reflect.Float64:
		var f float64
		if err := n.Decode(&f); err != nil || (n.Tag != "!!float" && n.Tag != "!!int") {
			d.errorf(n, "%s: %q is not a number", key, s)
			return
		}
		v.SetFloat(f)
	default:
		// A row type this decoder does not know: a bug in this package, caught by its tests.
		panic(fmt.Sprintf("config: cannot decode into %s", t))
	}
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}
