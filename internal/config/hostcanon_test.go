package config

import (
	"strings"
	"testing"

	"github.com/mcpgate/mcpgate/internal/policy/host"
)

// Every hostname config accepts is already in package host's canonical
// form, so the supervisor's routing and the workers' policy, which compare
// canonical names, see the same patterns config validated.
func TestAcceptedHostnamesAreCanonical(t *testing.T) {
	for _, in := range []string{"Example.COM", "example.com.", "*.Corp.Test", "a-b.c0.test", "*.x.example.org.", "XN--BCHER-KVA.test"} {
		norm, err := normalizeWildcard(in)
		if err != nil {
			t.Fatalf("normalizeWildcard(%q): %v", in, err)
		}
		name := strings.TrimPrefix(norm, "*.")
		if canon, err := host.Name([]byte(name)); err != nil || canon != name {
			t.Errorf("normalizeWildcard(%q) = %q, not canonical (%q, %v)", in, norm, canon, err)
		}
	}
}
