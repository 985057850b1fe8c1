package config

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"
)

// lineIndex maps a rendered key path (keyPath.String) to the 1-based line
// where the document defines it.
//
// BurntSushi/toml knows key positions but keeps them private, so we re-scan
// the file. The scanner only runs on documents the toml package has already
// accepted, which lets it skip most of the grammar: it needs to recognise
// keys, table headers and where values end, not what the values are.
type lineIndex map[string]int

// line returns the line defining p, or the line of its nearest defined
// ancestor (a missing key is reported where its table starts), or 0.
func (ix lineIndex) line(p keyPath) int {
	for ; len(p) > 0; p = p[:len(p)-1] {
		if n, ok := ix[p.String()]; ok {
			return n
		}
	}
	return 0
}

// indexLines scans a valid TOML document and records the line of every
// table, key and array element.
func indexLines(src []byte) lineIndex {
	s := &scanner{src: stripBOM(src), line: 1, ix: lineIndex{}, arrays: map[string]int{}}
	var table keyPath
	for !s.eof() {
		s.skipSpace()
		switch s.peek() {
		case '\n':
			s.next()
			continue
		case '#':
		case '[':
			table = s.header()
		default:
			s.keyValue(table)
		}
		s.skipLine() // trailing comment, or whatever we could not follow
	}
	return s.ix
}

// stripBOM drops the byte order marks the toml package skips too, so that
// the first key is still found.
func stripBOM(b []byte) []byte {
	for _, bom := range []string{"\xef\xbb\xbf", "\xff\xfe", "\xfe\xff"} {
		if bytes.HasPrefix(b, []byte(bom)) {
			return b[len(bom):]
		}
	}
	return b
}

type scanner struct {
	src  []byte
	pos  int
	line int
	ix   lineIndex
	// arrays counts the tables seen so far for each [[array.of.tables]], so
	// that keys below it get the right index.
	arrays map[string]int
}

func (s *scanner) eof() bool { return s.pos >= len(s.src) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.pos]
}

func (s *scanner) hasPrefix(p string) bool {
	return bytes.HasPrefix(s.src[s.pos:], []byte(p))
}

// next consumes one byte, counting lines.
func (s *scanner) next() {
	if s.eof() {
		return
	}
	if s.src[s.pos] == '\n' {
		s.line++
	}
	s.pos++
}

func (s *scanner) skipSpace() {
	for c := s.peek(); c == ' ' || c == '\t' || c == '\r'; c = s.peek() {
		s.next()
	}
}

// skipLine moves to the start of the next line.
func (s *scanner) skipLine() {
	for !s.eof() && s.peek() != '\n' {
		s.next()
	}
	s.next()
}

// skipBlank skips whitespace, newlines and comments, as allowed between
// array elements and (in TOML 1.1) inline table entries.
func (s *scanner) skipBlank() {
	for !s.eof() {
		switch s.peek() {
		case ' ', '\t', '\r', '\n':
			s.next()
		case '#':
			for !s.eof() && s.peek() != '\n' {
				s.next()
			}
		default:
			return
		}
	}
}

// set records the line of p, replacing an earlier one.
func (s *scanner) set(p keyPath, line int) { s.ix[p.String()] = line }

// setOnce records the line of p unless known: a table created implicitly by
// a dotted key or header is reported where it first appeared.
func (s *scanner) setOnce(p keyPath, line int) {
	k := p.String()
	if _, ok := s.ix[k]; !ok {
		s.ix[k] = line
	}
}

// header reads [a.b] or [[a.b]] and returns the table path that following
// keys belong to.
func (s *scanner) header() keyPath {
	line := s.line
	s.next() // '['
	array := s.peek() == '['
	if array {
		s.next()
	}
	keys := s.keys()
	var p keyPath
	for i, k := range keys {
		p = p.key(k)
		last := i == len(keys)-1
		switch {
		case last && array:
			s.setOnce(p, line)
			n := s.arrays[p.String()]
			s.arrays[p.String()] = n + 1
			p = p.at(n)
			s.set(p, line)
		case last:
			s.set(p, line) // an explicit [a] beats an earlier implicit one
		default:
			s.setOnce(p, line)
			// A header below an array of tables extends its last element.
			if n, ok := s.arrays[p.String()]; ok {
				p = p.at(n - 1)
			}
		}
	}
	return p
}

// keyValue reads `a.b = value` relative to table, recording every key,
// including those inside inline tables and arrays.
func (s *scanner) keyValue(table keyPath) {
	line := s.line
	keys := s.keys()
	if len(keys) == 0 {
		return
	}
	p := table
	for i, k := range keys {
		p = p.key(k)
		if i < len(keys)-1 {
			s.setOnce(p, line)
		} else {
			s.set(p, line)
		}
	}
	s.skipSpace()
	if s.peek() != '=' {
		return
	}
	s.next()
	s.skipSpace()
	s.value(p)
}

// keys reads a possibly dotted key. It returns nil if none starts here.
func (s *scanner) keys() []string {
	var keys []string
	for {
		s.skipSpace()
		k, ok := s.key()
		if !ok {
			return keys
		}
		keys = append(keys, k)
		s.skipSpace()
		if s.peek() != '.' {
			return keys
		}
		s.next()
	}
}

// key reads one bare, "basic" or 'literal' key.
func (s *scanner) key() (string, bool) {
	switch s.peek() {
	case '"':
		return unescape(s.quoted('"')), true
	case '\'':
		return s.quoted('\''), true
	}
	start := s.pos
	for !s.eof() && isBareKeyChar(s.peek()) {
		s.next()
	}
	return string(s.src[start:s.pos]), s.pos > start
}

// quoted reads a single-line string delimited by q and returns its raw
// contents. Backslash escapes are skipped only in basic strings.
func (s *scanner) quoted(q byte) string {
	s.next()
	start := s.pos
	for !s.eof() {
		switch c := s.peek(); {
		case c == q:
			raw := string(s.src[start:s.pos])
			s.next()
			return raw
		case c == '\n':
			return string(s.src[start:s.pos])
		case c == '\\' && q == '"':
			s.next()
			if s.peek() != '\n' {
				s.next()
			}
		default:
			s.next()
		}
	}
	return string(s.src[start:s.pos])
}

// value skips one value, recording array elements and inline table keys
// below p.
func (s *scanner) value(p keyPath) {
	switch {
	case s.hasPrefix(`"""`):
		s.multiline('"')
	case s.hasPrefix(`'''`):
		s.multiline('\'')
	case s.peek() == '"' || s.peek() == '\'':
		s.quoted(s.peek())
	case s.peek() == '[':
		s.array(p)
	case s.peek() == '{':
		s.inlineTable(p)
	default: // number, boolean or datetime (which may contain a space)
		for !s.eof() && !strings.ContainsRune(",]}#\n", rune(s.peek())) {
			s.next()
		}
	}
}

// multiline skips a multi-line string delimited by three q quotes. Up to two
// more quotes after the delimiter belong to the contents.
func (s *scanner) multiline(q byte) {
	delim := strings.Repeat(string(q), 3)
	s.pos += 3
	for !s.eof() {
		switch {
		case q == '"' && s.peek() == '\\':
			s.next()
			s.next()
		case s.hasPrefix(delim):
			s.pos += 3
			for i := 0; i < 2 && s.peek() == q; i++ {
				s.next()
			}
			return
		default:
			s.next()
		}
	}
}

func (s *scanner) array(p keyPath) {
	s.next() // '['
	for i := 0; ; {
		s.skipBlank()
		switch s.peek() {
		case 0:
			if s.eof() {
				return
			}
		case ']':
			s.next()
			return
		case ',':
			s.next()
			continue
		}
		start := s.pos
		e := p.at(i)
		s.set(e, s.line)
		s.value(e)
		i++
		if s.pos == start {
			s.next() // not a value we know; make progress anyway
		}
	}
}

func (s *scanner) inlineTable(p keyPath) {
	s.next() // '{'
	for {
		s.skipBlank()
		switch s.peek() {
		case 0:
			if s.eof() {
				return
			}
		case '}':
			s.next()
			return
		case ',':
			s.next()
			continue
		}
		start := s.pos
		s.keyValue(p)
		if s.pos == start {
			s.next()
		}
	}
}

// unescape decodes the escapes of a TOML basic string. The input was
// accepted by the toml package, so on the off chance of a malformed escape
// we simply keep the raw text.
func unescape(raw string) string {
	if !strings.Contains(raw, `\`) {
		return raw
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			b.WriteByte(c)
			continue
		}
		i++
		switch raw[i] {
		case 'b':
			b.WriteByte('\b')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'f':
			b.WriteByte('\f')
		case 'r':
			b.WriteByte('\r')
		case 'e':
			b.WriteByte(0x1b)
		case '"', '\\':
			b.WriteByte(raw[i])
		case 'x', 'u', 'U':
			n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[raw[i]]
			if i+n >= len(raw) {
				return raw
			}
			v, err := strconv.ParseUint(raw[i+1:i+1+n], 16, 32)
			if err != nil || !utf8.ValidRune(rune(v)) {
				return raw
			}
			b.WriteRune(rune(v))
			i += n
		default:
			return raw
		}
	}
	return b.String()
}
