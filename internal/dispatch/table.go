// Package dispatch is the supervisor's data path: it accepts connections on
// the shared listeners, reads just enough to learn the hostname (the TLS
// ClientHello's SNI, or the HTTP Host header), and hands the connection to
// the worker that owns that hostname. After the hand-off it is out of the
// data path.
package dispatch

import (
	"errors"
	"strings"

	"github.com/mcpgate/mcpgate/internal/policy/host"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// ErrRetired is returned by a Target that no longer takes connections
// because a reload replaced it; the connection is routed again.
var ErrRetired = errors.New("dispatch: target retired")

// Target receives connections for the hostnames it owns.
type Target interface {
	// Deliver hands over a connection. kind is wire.KindTLS or KindHTTP;
	// header is the PROXY v2 header; peeked the bytes already read.
	Deliver(kind wire.Kind, conn Conn, header, peeked []byte) error
	Name() string
}

// Table maps hostnames to targets, the most specific pattern winning
// (package host decides which). It is immutable once built, so a reload
// swaps a whole table atomically.
type Table struct {
	ix host.Index[Target]
}

// NewTable returns an empty table.
func NewTable() *Table { return &Table{} }

// Add registers a hostname (exact, or "*.suffix") for t. Validation of the
// names (and of duplicates) belongs to config; Add keeps the first owner.
func (t *Table) Add(hostname string, target Target) {
	rest, wild := strings.CutPrefix(hostname, "*.")
	h, err := host.Name([]byte(rest))
	if err != nil {
		return
	}
	if wild {
		h = "*." + h
	}
	t.ix.Add(h, target)
}

// Lookup finds the owner of a host name.
func (t *Table) Lookup(name string) Target {
	if t == nil || name == "" {
		return nil
	}
	h, err := host.Name([]byte(name))
	if err != nil {
		return nil
	}
	tg, _ := t.ix.Lookup(h)
	return tg
}

// Len is the number of hostnames in the table.
func (t *Table) Len() int { return t.ix.Len() }
