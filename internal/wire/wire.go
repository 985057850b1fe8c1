// Package wire is everything that crosses the boundary between the
// supervisor (`mcpgate serve`) and its workers (`mcpgate worker`), and
// between the supervisor and the `mcpgate` commands on its control socket:
// the descriptors a worker inherits, the kinds of hand-off messages, the
// worker's spec, its readiness and stats messages, the control-socket
// requests and answers, and the drain schedule both sides follow.
//
// The supervisor and the worker both import this package and never each
// other. It imports nothing heavier than internal/config, so the
// supervisor's binary path stays small (pinned by the supervisor's deps
// test).
//
// Compatibility: an upgraded supervisor adopts the workers of the previous
// build and answers the previous build's commands, so every JSON message
// carries the protocol version it was written with (Protocol), and a
// message without one is version 0: the format before the field existed,
// which decodes unchanged. testdata holds messages in each older format;
// the tests decode them.
package wire

import "fmt"

// Protocol is the version of the messages this build writes. Raise it when
// a message changes in a way an older peer could misread, and keep
// decoding every version from MinProtocol on.
const Protocol = 1

// MinProtocol is the oldest version this build still understands: 0, the
// unversioned format of the build before this package existed.
const MinProtocol = 0

// CheckProtocol returns an error for a version this build cannot read.
func CheckProtocol(v int) error {
	if v < MinProtocol || v > Protocol {
		return fmt.Errorf("wire: protocol version %d not supported (this build speaks %d to %d)", v, MinProtocol, Protocol)
	}
	return nil
}

// Descriptors a worker inherits from the supervisor (exec.Cmd.ExtraFiles,
// which numbers them from 3 in order).
const (
	FdSpec     = 3 // pipe: the JSON Spec, then EOF
	FdHandoff  = 4 // SOCK_SEQPACKET hand-off socket
	FdQUICIn   = 5 // SOCK_DGRAM: QUIC datagrams from the supervisor (with QUIC only)
	FdQUICConn = 6 // the shared UDP socket, for replies (with QUIC only)
)

// Kind is the first byte of every hand-off message: what it carries.
type Kind byte

// The hand-off message kinds. The byte values are the wire format: never
// change one, only add.
const (
	KindTLS   Kind = 'T' // supervisor → worker: a TLS connection, fd attached
	KindHTTP  Kind = 'H' // supervisor → worker: a plain-HTTP connection, fd attached
	KindDrain Kind = 'D' // supervisor → worker: stop taking connections, finish, exit
	KindReady Kind = 'R' // worker → supervisor: JSON Ready, once serving
	KindStats Kind = 'S' // worker → supervisor: JSON Stats
	KindRenew Kind = 'N' // supervisor → worker: renew the ACME certificate named in the payload now
	// KindRevoked, worker → supervisor: this worker committed a revocation
	// to the SQLite store; supervisor → worker: some process did, read the
	// revocation log now (Spec.RevocationRelay). No payload.
	KindRevoked Kind = 'V'
)

func (k Kind) String() string {
	switch k {
	case KindTLS:
		return "tls"
	case KindHTTP:
		return "http"
	case KindDrain:
		return "drain"
	case KindReady:
		return "ready"
	case KindStats:
		return "stats"
	case KindRenew:
		return "renew"
	case KindRevoked:
		return "revoked"
	}
	return fmt.Sprintf("kind(%#02x)", byte(k))
}

// CarriesConn reports whether messages of this kind come with a
// connection's descriptor.
func (k Kind) CarriesConn() bool { return k == KindTLS || k == KindHTTP }
