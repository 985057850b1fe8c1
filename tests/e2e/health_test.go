package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestHealth: the gateway answers its health endpoint itself, from the
// proxy's worker, without touching the backend (even a dead one).
func TestHealth(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "alpha")
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL},
		{Name: "deadend", Hostnames: []string{"deadend.test"}, Target: backends.ClosedURL(t)},
	}})

	buildIDs := map[string]string{}
	for _, pc := range protoCases {
		for _, name := range []string{"alpha", "deadend"} {
			t.Run(pc.name+"/"+name, func(t *testing.T) {
				resp, body := get(t, g.Client(pc.cfg), "https://"+name+".test"+harness.HealthPath, nil)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d, body %.300q", resp.StatusCode, body)
				}
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type %q, want application/json", ct)
				}
				var h harness.Health
				if err := json.Unmarshal(body, &h); err != nil {
					t.Fatalf("health JSON %q: %v", body, err)
				}
				if h.Status != "ok" || h.Proxy != name || h.Version == "" || h.BuildID == "" || h.PID <= 0 {
					t.Errorf("health = %+v (%s), want status ok, proxy %s, version, build_id and pid set", h, body, name)
				}
				if h.PID == g.PID() {
					t.Errorf("health pid %d is the supervisor's; want the worker's", h.PID)
				} else if cl := harness.ProcessCmdline(h.PID); !strings.Contains(cl, "worker") || !strings.Contains(cl, name) {
					t.Errorf("health pid %d has cmdline %q, want an mcpgate worker for %s", h.PID, cl, name)
				}
				buildIDs[name] = h.BuildID
			})
		}
	}
	if buildIDs["alpha"] != buildIDs["deadend"] {
		t.Errorf("workers of one binary report different build ids: %v", buildIDs)
	}
	if n := echo.Requests(); n != 0 {
		t.Errorf("health checks reached the backend %d times", n)
	}
}
