package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestPprofSocket: with [server] pprof_dir, each worker serves Go's profiler
// on <dir>/<proxy>-<pid>.sock, reachable only by the service's user.
func TestPprofSocket(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "echo")
	dir := filepath.Join(t.TempDir(), "pprof")
	g := harness.Start(t, harness.Options{
		ServerTOML: fmt.Sprintf("pprof_dir = %q", dir),
		Proxies:    []harness.Proxy{{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL}},
	})
	sock := filepath.Join(dir, fmt.Sprintf("alpha-%d.sock", g.WorkerPID(t, "alpha.test")))
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	res, err := c.Get("http://worker/debug/pprof/allocs")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || len(body) == 0 {
		t.Fatalf("allocs profile: %d, %d bytes", res.StatusCode, len(body))
	}
}
