package config

import (
	"fmt"
	"time"
)

// This file mirrors the TOML files key for key. The types are only ever
// filled by bind (decode.go) and then turned into the runtime types of
// config.go, which is where defaults are applied.
//
// Conventions understood by bind:
//   - `toml:"name"` names the key; a key without a field is an unknown key.
//   - A pointer is nil when the key is omitted. Use one wherever omitted and
//     explicitly set must differ (an omitted list inherits a default, an
//     explicit [] means none).
//   - Supported: string, bool, int64, slices, map[string]T, structs, and
//     types implementing encoding.TextUnmarshaler from a TOML string.
//
// To add a table to mcpgate.toml (e.g. [oauth]), add a field to globalFile
// and convert it in global.go.

// globalFile is mcpgate.toml.
type globalFile struct {
	Server *serverTable `toml:"server"`
}

type serverTable struct {
	HTTPS        *[]string `toml:"https"`
	HTTP         *[]string `toml:"http"`
	StateDir     *string   `toml:"state_dir"`
	DrainTimeout *duration `toml:"drain_timeout"`
}

// proxyFile is <name>.toml.
type proxyFile struct {
	Enabled      *bool         `toml:"enabled"`
	Hostnames    []string      `toml:"hostnames"`
	Target       *string       `toml:"target"`
	PreserveHost bool          `toml:"preserve_host"`
	TLS          *tlsTable     `toml:"tls"`
	Timeouts     timeoutsTable `toml:"timeouts"`
	Headers      headersTable  `toml:"headers"`
	Routes       []routeTable  `toml:"routes"`
}

type tlsTable struct {
	CertFile   string `toml:"cert_file"`
	KeyFile    string `toml:"key_file"`
	SelfSigned bool   `toml:"self_signed"`
}

type timeoutsTable struct {
	Connect        *duration `toml:"connect"`
	ResponseHeader *duration `toml:"response_header"`
}

type headersTable struct {
	Request        map[string]string `toml:"request"`
	Response       map[string]string `toml:"response"`
	RemoveRequest  []string          `toml:"remove_request"`
	RemoveResponse []string          `toml:"remove_response"`
}

type routeTable struct {
	Path   *string `toml:"path"`
	Target *string `toml:"target"`
}

// duration is a Go duration string such as "30s"; TOML has no duration type
// and a bare number would leave the unit to guesswork.
type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use a number with a unit, such as \"30s\" or \"5m\")", b)
	}
	d.Duration = v
	return nil
}

func (*duration) describe() string { return `a duration string such as "30s"` }
