package supervisor

import (
	"os/exec"
	"strings"
	"testing"
)

// The supervisor is the service's long-lived main process and holds every
// listening socket: it should link only what it runs, small enough to audit. These
// tests pin its dependencies, the way Tailscale's tstest/deptest pins
// tailscaled's.

const supervisorPkg = "github.com/mcpgate/mcpgate/internal/supervisor"

// supervisorMaxDeps bounds the transitive package count, standard library
// included: 217 on Go 1.26.8 when recorded (276 while /metrics used
// client_golang, with protobuf and procfs; 198 before /metrics; 290
// before internal/wire, when the supervisor linked the worker). Raise it
// only with a reason.
const supervisorMaxDeps = 220

// supervisorNonStd is every package outside the standard library the
// supervisor may depend on, transitively (a trailing "/" allows a whole
// module's packages). A new one fails the test: look at what it pulls
// in, then add it here.
var supervisorNonStd = []string{
	"github.com/BurntSushi/toml",
	"github.com/BurntSushi/toml/internal",
	"github.com/coreos/go-systemd/v22/activation",
	"github.com/coreos/go-systemd/v22/daemon",
	"github.com/mcpgate/mcpgate/internal/activation",
	"github.com/mcpgate/mcpgate/internal/buildinfo",
	"github.com/mcpgate/mcpgate/internal/certstatus",
	"github.com/mcpgate/mcpgate/internal/config",
	"github.com/mcpgate/mcpgate/internal/dispatch",
	"github.com/mcpgate/mcpgate/internal/handoff",
	"github.com/mcpgate/mcpgate/internal/peek",
	"github.com/mcpgate/mcpgate/internal/policy/host",
	"github.com/mcpgate/mcpgate/internal/quicroute",
	"github.com/mcpgate/mcpgate/internal/supervisor",
	"github.com/mcpgate/mcpgate/internal/wire",
	"github.com/pires/go-proxyproto",
	"golang.org/x/sys/unix",
}

// forbidden are packages (or prefixes ending in "/") the supervisor must
// never link, and why.
var forbidden = map[string]string{
	"github.com/mcpgate/mcpgate/internal/worker":     "the worker is a sibling process; share types through internal/wire",
	"github.com/mcpgate/mcpgate/internal/authserver": "the authorization server runs in workers only",
	"github.com/mcpgate/mcpgate/internal/store":      "storage (SQLite) runs in workers only",
	"github.com/mcpgate/mcpgate/internal/store/":     "storage (SQLite) runs in workers only",
	"modernc.org/sqlite":                             "storage (SQLite) runs in workers only",
	"github.com/quic-go/quic-go/http3":               "the supervisor routes QUIC datagrams; HTTP/3 is served by workers",
	"github.com/quic-go/quic-go":                     "the supervisor parses Initial packets itself (internal/quicroute)",
}

// allowed: d is listed, or under a listed prefix ending in "/".
func allowed(d string) bool {
	for _, a := range supervisorNonStd {
		if d == a || (strings.HasSuffix(a, "/") && strings.HasPrefix(d, a)) {
			return true
		}
	}
	return false
}

func goListDeps(t *testing.T, pkg string) []string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to list dependencies with")
	}
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, msg)
	}
	return strings.Fields(string(out))
}

// isStd: standard library import paths have no dot in their first
// element; vendored std packages start with "vendor/".
func isStd(pkg string) bool {
	first, _, _ := strings.Cut(pkg, "/")
	return !strings.Contains(first, ".") || first == "vendor"
}

// TestSupervisorDeps: the supervisor links no worker, authorization
// server, store or HTTP/3 server, only the listed non-standard packages,
// and stays below its recorded package count.
func TestSupervisorDeps(t *testing.T) {
	deps := goListDeps(t, supervisorPkg)
	for _, d := range deps {
		for bad, why := range forbidden {
			if d == bad || (strings.HasSuffix(bad, "/") && strings.HasPrefix(d, bad)) {
				t.Errorf("supervisor depends on %s: %s", d, why)
			}
		}
		if !isStd(d) && !allowed(d) {
			t.Errorf("supervisor depends on %s, not in supervisorNonStd: review what it pulls in, then list it", d)
		}
	}
	t.Logf("supervisor: %d packages", len(deps))
	if len(deps) > supervisorMaxDeps {
		t.Errorf("supervisor depends on %d packages, more than the recorded %d: audit the new ones (go list -deps %s)", len(deps), supervisorMaxDeps, supervisorPkg)
	}
}

// TestWorkerDoesNotImportSupervisor: the two processes share only
// internal/wire (and internal/handoff); cmd/mcpgate wires them.
func TestWorkerDoesNotImportSupervisor(t *testing.T) {
	for _, d := range goListDeps(t, "github.com/mcpgate/mcpgate/internal/worker") {
		if d == supervisorPkg {
			t.Fatal("internal/worker depends on internal/supervisor")
		}
	}
}
