package config

import (
	"cmp"
	"errors"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in one configuration file. Operators see it as
// "file:line: key.path: message", which editors and journald users can jump to.
type Error struct {
	File string // filepath.Join(dir, name), with dir as passed to Load
	Line int    // 1-based; 0 when the problem has no single line (e.g. a missing key)
	Key  string // key path such as "routes[1].path"; "" for file-level problems
	Msg  string

	err error // underlying cause (I/O), so errors.Is(err, fs.ErrNotExist) works
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying I/O error, if any.
func (e *Error) Unwrap() error { return e.err }

// ioError reports a failed file operation on file. The path is dropped from
// the message because the Error already starts with it.
func ioError(file string, err error) *Error {
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == file {
		msg = pe.Op + ": " + pe.Err.Error()
	}
	return &Error{File: file, Msg: msg, err: err}
}

// ErrorList is every problem found in a configuration directory, so an
// operator can fix them all in one edit instead of one per reload.
type ErrorList []*Error

func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap makes errors.Is and errors.As look at every entry.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// sort orders the list by file, line and key. It is stable so that two
// messages about the same key keep the order in which they were found.
func (l ErrorList) sort() {
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Key, b.Key),
		)
	})
}

// keyPath names a value in a TOML document, e.g. routes[1].path. It is a
// list of elements rather than a string so that keys containing dots or
// brackets stay unambiguous.
type keyPath []pathElem

type pathElem struct {
	key   string
	index int // >= 0 for an array element, -1 for a table key
}

// key returns the path of the table key k below p. It never aliases p.
func (p keyPath) key(k string) keyPath {
	return append(p[:len(p):len(p)], pathElem{key: k, index: -1})
}

// at returns the path of element i of the array at p. It never aliases p.
func (p keyPath) at(i int) keyPath {
	return append(p[:len(p):len(p)], pathElem{index: i})
}

// String renders the path as TOML would spell it: keys that are not bare
// are quoted.
func (p keyPath) String() string {
	var b strings.Builder
	for i, e := range p {
		if e.index >= 0 {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.index))
			b.WriteByte(']')
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		if isBareKey(e.key) {
			b.WriteString(e.key)
		} else {
			b.WriteString(strconv.Quote(e.key))
		}
	}
	return b.String()
}

func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBareKeyChar(s[i]) {
			return false
		}
	}
	return true
}

func isBareKeyChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}
