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

	"github.com/mcpgate/mcpgate/internal/policy/host"
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

func malformed(format string, args ...any) error {
	return wrapf(ErrMalformed, format, args...)
}

// wrapf returns sentinel wrapped with a detail message.
func wrapf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

// normalizeHostname validates a host name and returns its canonical form
// (package host: the one definition of it).
func normalizeHostname(b []byte) (string, error) {
	return hostErr(host.Name(b))
}

// normalizeAuthority turns "host", "host:port", "[v6]" or "[v6]:port" into
// the bare canonical host.
func normalizeAuthority(b []byte) (string, error) {
	h, _, err := host.Authority(b)
	return hostErr(h, err)
}

func hostErr(h string, err error) (string, error) {
	var he *host.Error
	if errors.As(err, &he) {
		return "", malformed("%s", he.Detail)
	}
	return h, err
}
