// Package peek reads just enough of a freshly accepted connection to decide
// where it should be routed: the TLS ClientHello on an HTTPS listener, or the
// HTTP/1.x request head on a plain HTTP listener.
//
// Every function returns the exact bytes it consumed from the reader, also on
// error, so the connection can be handed to another process that replays them
// before reading the socket itself. Reads are bounded by a caller-supplied
// limit and never allocate more than what was actually received, whatever
// lengths an attacker declares.
package peek

import (
	"errors"
	"fmt"
	"net/netip"
)

// Default limits used when a non-positive limit is passed.
const (
	DefaultTLSLimit  = 64 << 10
	DefaultHTTPLimit = 16 << 10
)

// Sentinel errors; match with errors.Is. ErrMalformed is usually wrapped
// with a detail message.
var (
	// ErrNotTLS: the stream does not start with a TLS handshake record
	// carrying a ClientHello.
	ErrNotTLS = errors.New("peek: not a TLS ClientHello")
	// ErrMalformed: the message is recognisably TLS/HTTP but invalid.
	ErrMalformed = errors.New("peek: malformed message")
	// ErrTooLarge: the message does not fit in the byte limit.
	ErrTooLarge = errors.New("peek: message exceeds size limit")
	// ErrNoHost: the HTTP request head carries no host at all.
	ErrNoHost = errors.New("peek: HTTP request without host")
	// ErrNotHTTP: the stream does not start with an HTTP/1.x request line.
	ErrNotHTTP = errors.New("peek: not an HTTP/1.x request")
)

// maxHostLen is the longest DNS name in presentation form (without the
// trailing dot).
const maxHostLen = 253

func malformed(format string, args ...any) error {
	return wrapf(ErrMalformed, format, args...)
}

// wrapf returns sentinel wrapped with a detail message.
func wrapf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

// normalizeHostname validates a host name (labels of letters, digits, '-',
// '_' separated by single dots) and returns it lower-cased with one trailing
// dot removed.
func normalizeHostname(b []byte) (string, error) {
	if len(b) > 0 && b[len(b)-1] == '.' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "", malformed("empty host name")
	}
	if len(b) > maxHostLen {
		return "", malformed("host name longer than %d bytes", maxHostLen)
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
				return "", malformed("empty label in host name")
			}
			label = 0
			continue
		default:
			return "", malformed("invalid byte %q in host name", c)
		}
		if label++; label > 63 {
			return "", malformed("host name label longer than 63 bytes")
		}
	}
	if label == 0 {
		// "a.." → "a.": a second trailing dot is an empty last label.
		return "", malformed("empty label in host name")
	}
	if !upper {
		return string(b), nil
	}
	// Lower-case on the stack so the only allocation is the final string.
	var tmp [maxHostLen]byte
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		tmp[i] = c
	}
	return string(tmp[:len(b)]), nil
}

// normalizeAuthority turns "host", "host:port", "[v6]" or "[v6]:port" into
// the bare lower-cased host. IPv6 literals are returned in canonical form
// without brackets.
func normalizeAuthority(b []byte) (string, error) {
	if len(b) > 0 && b[0] == '[' {
		end := -1
		for i, c := range b {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return "", malformed("unterminated IPv6 literal")
		}
		lit, rest := b[1:end], b[end+1:]
		if len(rest) > 0 && (rest[0] != ':' || !validPort(rest[1:])) {
			return "", malformed("invalid port after IPv6 literal")
		}
		// Only hex digits, ':' and '.' (embedded IPv4): rejects zones and
		// IPvFuture before handing the text to netip.
		if len(lit) == 0 || len(lit) > 45 {
			return "", malformed("invalid IPv6 literal")
		}
		for _, c := range lit {
			if !(isHex(c) || c == ':' || c == '.') {
				return "", malformed("invalid byte %q in IPv6 literal", c)
			}
		}
		addr, err := netip.ParseAddr(string(lit))
		if err != nil || !addr.Is6() {
			return "", malformed("invalid IPv6 literal")
		}
		return addr.String(), nil
	}
	host := b
	for i, c := range b {
		if c == ':' {
			host = b[:i]
			if !validPort(b[i+1:]) {
				return "", malformed("invalid port")
			}
			break
		}
	}
	return normalizeHostname(host)
}

// validPort accepts an empty port (RFC 3986 allows "host:") or 1-5 digits
// with a value of at most 65535.
func validPort(p []byte) bool {
	if len(p) > 5 {
		return false
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
