// Package dispatch is the supervisor's data path: it accepts connections on
// the shared listeners, reads just enough to learn the hostname (the TLS
// ClientHello's SNI, or the HTTP Host header), and hands the connection to
// the worker that owns that hostname. After the hand-off it is out of the
// data path.
package dispatch

import (
	"errors"
	"strings"
)

// ErrRetired is returned by a Target that no longer takes connections
// because a reload replaced it; the connection is routed again.
var ErrRetired = errors.New("dispatch: target retired")

// Target receives connections for the hostnames it owns.
type Target interface {
	// Deliver hands over a connection. kind is handoff.KindTLS or KindHTTP;
	// header is the PROXY v2 header; peeked the bytes already read.
	Deliver(kind byte, conn Conn, header, peeked []byte) error
	Name() string
}

// Table maps hostnames to targets. It is immutable once built, so a reload
// swaps a whole table atomically.
type Table struct {
	exact map[string]Target
	wild  map[string]Target // "*.example.com" stored as "example.com"
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{exact: map[string]Target{}, wild: map[string]Target{}}
}

// Add registers a hostname (exact, or "*.suffix") for t. Validation of the
// names (and of duplicates) belongs to config; Add keeps the first owner.
func (t *Table) Add(hostname string, target Target) {
	h := normalize(hostname)
	if suffix, ok := strings.CutPrefix(h, "*."); ok {
		if _, dup := t.wild[suffix]; !dup {
			t.wild[suffix] = target
		}
		return
	}
	if _, dup := t.exact[h]; !dup {
		t.exact[h] = target
	}
}

// Lookup finds the owner of host. A wildcard matches exactly one label.
func (t *Table) Lookup(host string) Target {
	if t == nil || host == "" {
		return nil
	}
	h := normalize(host)
	if tg, ok := t.exact[h]; ok {
		return tg
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		if tg, ok := t.wild[h[i+1:]]; ok {
			return tg
		}
	}
	return nil
}

// Len is the number of hostnames in the table.
func (t *Table) Len() int { return len(t.exact) + len(t.wild) }

func normalize(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}
