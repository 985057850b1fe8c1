// Package host is the one definition of a host name's canonical form and of
// which hostname pattern owns a name. It is a leaf, so that config (which
// validates patterns), peek and dispatch (the supervisor's routing) and
// policy (the workers' decisions) share one rule instead of each keeping a
// copy that drifts: a second copy of these rules once let a wildcard proxy
// lend its policy to an exact one.
//
// Canonical form: ASCII only (names arrive as A-labels: TLS SNI and HTTP
// Host carry punycode, so a U-label is refused rather than mapped, and a
// look-alike never folds onto a configured name), lower case, one trailing
// dot removed, labels of letters, digits, '-' and '_' (seen in SNI in the
// wild), no empty label, at most 253 bytes.
package host

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrInvalid is what every error of this package is (errors.Is).
var ErrInvalid = errors.New("invalid host")

// Error says what is wrong with a host.
type Error struct{ Detail string }

func (e *Error) Error() string        { return ErrInvalid.Error() + ": " + e.Detail }
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// MaxLen is the longest DNS name in presentation form (without the
// trailing dot).
const MaxLen = 253

func invalid(format string, args ...any) error {
	return &Error{fmt.Sprintf(format, args...)}
}

// Name validates a host name and returns its canonical form.
func Name(b []byte) (string, error) {
	if len(b) > 0 && b[len(b)-1] == '.' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "", invalid("empty host name")
	}
	if len(b) > MaxLen {
		return "", invalid("host name longer than %d bytes", MaxLen)
	}
	upper := false
	label := 0 // length of the current label
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case 'A' <= c && c <= 'Z':
			upper = true
		case c == '.':
			// Empty labels ("..", leading dot) would let distinct strings
			// name the same host, or none at all.
			if label == 0 {
				return "", invalid("empty label in host name")
			}
			label = 0
			continue
		default:
			return "", invalid("invalid byte %q in host name", c)
		}
		if label++; label > 63 {
			return "", invalid("host name label longer than 63 bytes")
		}
	}
	if label == 0 {
		// "a.." → "a.": a second trailing dot is an empty last label.
		return "", invalid("empty label in host name")
	}
	if !upper {
		return string(b), nil
	}
	// Lower-case on the stack so the only allocation is the final string.
	var tmp [MaxLen]byte
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		tmp[i] = c
	}
	return string(tmp[:len(b)]), nil
}

// Authority splits "host", "host:port", "[v6]" or "[v6]:port" into the
// canonical host (IPv6 literals in canonical form without brackets) and
// the port (0 when absent or empty, as RFC 3986 allows "host:").
func Authority(b []byte) (host string, port int, err error) {
	if len(b) > 0 && b[0] == '[' {
		end := -1
		for i, c := range b {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return "", 0, invalid("unterminated IPv6 literal")
		}
		lit, rest := b[1:end], b[end+1:]
		if len(rest) > 0 {
			if rest[0] != ':' {
				return "", 0, invalid("invalid port after IPv6 literal")
			}
			if port, err = parsePort(rest[1:]); err != nil {
				return "", 0, invalid("invalid port after IPv6 literal")
			}
		}
		// Only hex digits, ':' and '.' (embedded IPv4): rejects zones and
		// IPvFuture before handing the text to netip.
		if len(lit) == 0 || len(lit) > 45 {
			return "", 0, invalid("invalid IPv6 literal")
		}
		for _, c := range lit {
			if !(isHex(c) || c == ':' || c == '.') {
				return "", 0, invalid("invalid byte %q in IPv6 literal", c)
			}
		}
		addr, err := netip.ParseAddr(string(lit))
		if err != nil || !addr.Is6() {
			return "", 0, invalid("invalid IPv6 literal")
		}
		return addr.String(), port, nil
	}
	name := b
	for i, c := range b {
		if c == ':' {
			name = b[:i]
			if port, err = parsePort(b[i+1:]); err != nil {
				return "", 0, err
			}
			break
		}
	}
	host, err = Name(name)
	return host, port, err
}

// parsePort accepts an empty port or 1-5 digits with a value of at most
// 65535.
func parsePort(p []byte) (int, error) {
	if len(p) > 5 {
		return 0, invalid("invalid port")
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, invalid("invalid port")
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, invalid("invalid port")
	}
	return n, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Index finds the owner of a host name among exact names and "*.suffix"
// wildcards. The most specific pattern wins, whatever the order of Add: an
// exact name over a wildcard, and a wildcard covers exactly one label (as
// in TLS certificates), so at most one wildcard can match a name. The zero
// Index is empty; an Index is not safe for concurrent Add, and is meant to
// be built once and then only read.
type Index[T any] struct {
	exact map[string]T
	wild  map[string]T // "*.example.com" stored as "example.com"
}

// Add registers a pattern (canonical: see config) for v. It reports false,
// and keeps the first owner, when the pattern is taken.
func (ix *Index[T]) Add(pattern string, v T) bool {
	if ix.exact == nil {
		ix.exact, ix.wild = map[string]T{}, map[string]T{}
	}
	m, key := ix.exact, pattern
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		m, key = ix.wild, suffix
	}
	if _, dup := m[key]; dup {
		return false
	}
	m[key] = v
	return true
}

// Lookup finds the owner of name, which must be canonical (Name).
func (ix *Index[T]) Lookup(name string) (v T, ok bool) {
	if name == "" {
		return v, false
	}
	if v, ok = ix.exact[name]; ok {
		return v, true
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		v, ok = ix.wild[name[i+1:]]
	}
	return v, ok
}

// Len is the number of patterns.
func (ix *Index[T]) Len() int { return len(ix.exact) + len(ix.wild) }
