package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestReloadNewWorkerFails: when the binary on disk cannot start a worker
// (here: a broken "upgrade" that exits at once), the reload reports each
// proxy as failed and exits 1, and the old workers keep serving.
func TestReloadNewWorkerFails(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "echo")
	bin := harness.PrivateBinary(t, harness.Binary(t))
	g := harness.Start(t, harness.Options{Binary: bin, Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL},
	}})
	before := g.WorkerPID(t, "alpha.test")

	broken := filepath.Join(t.TempDir(), "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'broken build' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	harness.InstallBinary(t, broken, bin)
	// The reload command itself runs from the good binary; the supervisor
	// starts workers from the broken one on disk.
	res := harness.RunBinary(t, harness.Binary(t), time.Minute, "reload", "--config-dir", g.Dir)
	if res.ExitCode != 1 || !strings.Contains(res.Stderr, "failed: alpha: worker exited before it was ready") ||
		!strings.Contains(res.Stderr, "previous worker keeps serving") {
		t.Fatalf("reload: exit %d\nstdout: %s\nstderr: %s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if pid := g.WorkerPID(t, "alpha.test"); pid != before {
		t.Fatalf("alpha is served by pid %d after the failed reload, want the old worker %d", pid, before)
	}
	res2, err := g.HTTP2Client().Get("https://alpha.test/still-up")
	if err != nil {
		t.Fatal(err)
	}
	res2.Body.Close()
	if res2.StatusCode != 200 {
		t.Fatalf("request after the failed reload: %d", res2.StatusCode)
	}
	// Fixed binary: the next reload moves alpha to a fresh worker.
	harness.InstallBinary(t, harness.Binary(t), bin)
	if r := g.Reload(t); r.ExitCode != 0 {
		t.Fatalf("reload with the fixed binary: %+v", r)
	}
	if pid := g.WorkerPID(t, "alpha.test"); pid == before {
		t.Fatal("still the old worker after a good reload")
	}
}
