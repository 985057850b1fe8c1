package config

import (
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// file is one configuration file being loaded. It collects that file's
// errors and knows where its keys are.
//
// toml.Decode into structs stops at the first type mismatch and reports it
// in Go terms. Instead we let the toml package only parse (into
// map[string]any) and copy the result into the schema structs ourselves
// (bind), so every unknown key and type mismatch is reported, with its line,
// in words an operator understands.
type file struct {
	name  string // as shown in errors
	lines lineIndex
	// bad holds the paths bind rejected, so validation stays quiet about
	// them instead of adding a confusing second error (e.g. "required").
	bad  map[string]bool
	errs *ErrorList
}

// readFile reads and parses name. It returns nil if the file could not be
// read or is not valid TOML; the error has been recorded.
func readFile(name string, errs *ErrorList) (*file, map[string]any) {
	data, err := os.ReadFile(name)
	if err != nil {
		*errs = append(*errs, ioError(name, err))
		return nil, nil
	}
	return parseFile(name, data, errs)
}

func parseFile(name string, data []byte, errs *ErrorList) (*file, map[string]any) {
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		e := &Error{File: name, Msg: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			e.Msg = pe.Message
			// Clamp so a line past the end (an error at EOF) still points
			// into the file.
			e.Line = min(max(pe.Position.Line, 0), countLines(data))
		}
		*errs = append(*errs, e)
		return nil, nil
	}
	return &file{name: name, lines: indexLines(data), bad: map[string]bool{}, errs: errs}, doc
}

// countLines returns the number of lines an editor shows for data.
func countLines(data []byte) int {
	return strings.Count(string(data), "\n") + 1
}

// errorf records a problem with the value at p, unless bind already
// rejected p or one of its parents.
func (f *file) errorf(p keyPath, format string, args ...any) {
	f.errorAt(p, p, format, args...)
}

// errorAt is errorf with the line taken from another path, for problems
// about a whole list that are best shown at one element.
func (f *file) errorAt(p, at keyPath, format string, args ...any) {
	if f.isBad(p) || f.isBad(at) {
		return
	}
	*f.errs = append(*f.errs, &Error{
		File: f.name,
		Line: f.lines.line(at),
		Key:  p.String(),
		Msg:  fmt.Sprintf(format, args...),
	})
}

func (f *file) isBad(p keyPath) bool {
	for ; len(p) > 0; p = p[:len(p)-1] {
		if f.bad[p.String()] {
			return true
		}
	}
	return false
}

// reject records a decoding error at p and marks p bad.
func (f *file) reject(p keyPath, format string, args ...any) {
	*f.errs = append(*f.errs, &Error{
		File: f.name,
		Line: f.lines.line(p),
		Key:  p.String(),
		Msg:  fmt.Sprintf(format, args...),
	})
	f.bad[p.String()] = true
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// bind copies the decoded TOML value v at path p into dst, a schema value.
// Schema structs name their keys with `toml:"..."` tags; a pointer field
// stays nil when the key is omitted, so omitted and empty can differ.
func (f *file) bind(p keyPath, v any, dst reflect.Value) {
	t := dst.Type()
	if t.Kind() == reflect.Pointer {
		n := reflect.New(t.Elem())
		f.bind(p, v, n.Elem())
		dst.Set(n)
		return
	}
	if reflect.PointerTo(t).Implements(textUnmarshalerType) {
		s, ok := v.(string)
		if !ok {
			f.typeError(p, t, v)
			return
		}
		if err := dst.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			f.reject(p, "%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Interface: // any: keep the value as decoded
		dst.Set(reflect.ValueOf(v))
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			f.typeError(p, t, v)
			return
		}
		for _, k := range sortedKeys(m) {
			i := fieldIndex(t, k)
			if i < 0 {
				f.reject(p.key(k), "unknown key")
				continue
			}
			f.bind(p.key(k), m[k], dst.Field(i))
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			f.typeError(p, t, v)
			return
		}
		out := reflect.MakeMapWithSize(t, len(m))
		for _, k := range sortedKeys(m) {
			e := reflect.New(t.Elem()).Elem()
			f.bind(p.key(k), m[k], e)
			out.SetMapIndex(reflect.ValueOf(k), e)
		}
		dst.Set(out)
	case reflect.Slice:
		var elems []any
		switch l := v.(type) {
		case []any:
			elems = l
		case []map[string]any: // [[array.of.tables]]
			for _, e := range l {
				elems = append(elems, e)
			}
		default:
			f.typeError(p, t, v)
			return
		}
		// MakeSlice, not nil, so that an explicit [] is told from omitted.
		out := reflect.MakeSlice(t, len(elems), len(elems))
		for i, e := range elems {
			f.bind(p.at(i), e, out.Index(i))
		}
		dst.Set(out)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			f.typeError(p, t, v)
			return
		}
		dst.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			f.typeError(p, t, v)
			return
		}
		dst.SetBool(b)
	case reflect.Int64:
		n, ok := v.(int64)
		if !ok {
			f.typeError(p, t, v)
			return
		}
		dst.SetInt(n)
	default:
		panic(fmt.Sprintf("config: schema type %s is not supported by bind", t))
	}
}

func (f *file) typeError(p keyPath, want reflect.Type, got any) {
	f.reject(p, "expected %s, got %s", describeType(want), describeValue(got))
}

// fieldIndex returns the index of the field tagged with key, or -1.
func fieldIndex(t reflect.Type, key string) int {
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ","); name == key {
			return i
		}
	}
	return -1
}

// describeType says what a schema type expects, in TOML terms.
func describeType(t reflect.Type) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if d, ok := reflect.New(t).Interface().(interface{ describe() string }); ok {
		return d.describe()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int64:
		return "an integer"
	case reflect.Struct:
		return "a table"
	case reflect.Map:
		return "a table of " + plural(t.Elem())
	case reflect.Slice:
		return "a list of " + plural(t.Elem())
	}
	return t.String()
}

// plural names the elements of a list or table: "strings", "tables".
func plural(t reflect.Type) string {
	return strings.TrimPrefix(strings.TrimPrefix(describeType(t), "a "), "an ") + "s"
}

// describeValue names the TOML type of a value decoded by the toml package.
func describeValue(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case time.Time:
		return "datetime"
	case []any:
		return "list"
	case []map[string]any:
		return "list of tables"
	case map[string]any:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
