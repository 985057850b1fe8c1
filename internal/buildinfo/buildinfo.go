// Package buildinfo names the code a process runs: a version and a build id.
// Reload promises fresh code, so every process reports the id of the binary
// it was started from, and tests compare ids across a reload.
package buildinfo

import (
	"debug/elf"
	"encoding/hex"
	"runtime/debug"
	"strings"
	"sync"
)

// Set at link time: -ldflags "-X github.com/mcpgate/mcpgate/internal/buildinfo.version=1.2.3
// -X github.com/mcpgate/mcpgate/internal/buildinfo.buildID=abc".
var (
	version string
	buildID string
)

// Version is the release version, or "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

var (
	idOnce sync.Once
	idVal  string
)

// ID identifies the exact binary. Without a link-time value it is derived
// from the Go build id note in the running executable, which changes with
// any change to the code, so two builds of different code never share one.
func ID() string {
	idOnce.Do(func() {
		idVal = buildID
		if idVal == "" {
			idVal = fromELF()
		}
		if idVal == "" {
			idVal = "unknown"
		}
	})
	return idVal
}

func fromELF() string {
	f, err := elf.Open("/proc/self/exe")
	if err != nil {
		return ""
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil {
		return ""
	}
	b, err := s.Data()
	if err != nil || len(b) < 16 {
		return ""
	}
	// Note layout: namesz, descsz, type (4 bytes each), "Go\x00\x00", desc.
	desc := strings.TrimRight(string(b[16:]), "\x00")
	// The Go build id is "actionID/contentID/..."; the last part hashes the
	// content. Keep it short but unique enough for humans and tests.
	parts := strings.Split(desc, "/")
	last := parts[len(parts)-1]
	if last == "" {
		return ""
	}
	if len(last) > 16 {
		last = last[:16]
	}
	return sanitize(last)
}

func sanitize(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return hex.EncodeToString([]byte(s))
		}
	}
	return s
}
