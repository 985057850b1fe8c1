package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// Build ids of the two binaries the reload and upgrade tests swap in.
const (
	buildA = "e2e-reload-a"
	buildB = "e2e-reload-b"
)

// soakEnv names an environment variable: MCPGATE_RELOAD_SOAK=long makes
// TestReloadUnderLoad a soak test (more reloads, more load).
const soakEnv = "MCPGATE_RELOAD_SOAK"

// reloadOK is the first line `mcpgate reload` prints on success.
var reloadOK = regexp.MustCompile(`^reload ok in \S+: (\d+) proxies on fresh workers \(build (\S+)\)`)

// TestReloadUnderLoad reloads a gateway under load, swapping the binary on
// disk before every reload (alternating two builds with different build
// ids), and asserts that no request fails, that every SSE stream either
// completes or ends cleanly at the drain deadline and then resumes with the
// next event (Last-Event-ID), and that after each reload new connections
// reach fresh workers of the binary just installed.
//
// The load: per proxy (two of them) and protocol (HTTP/2, HTTP/1.1), two
// request loops alternating GET and a JSON POST to an echo backend, each on
// its own connection, and one SSE stream (an event every 50ms) alternating
// short sessions, which complete, and long ones, which the 2s drain_timeout
// of a replaced worker ends. Between two reloads every request loop
// completes 10 requests. The supervisor runs the default build, the
// workers alternately the builds e2e-reload-a and e2e-reload-b.
//
// By default (make test) it does 10 reloads and takes under 10s. With
// MCPGATE_RELOAD_SOAK=long (make bench) it does 100 reloads under four
// times the load, without pauses between requests (about a minute).
func TestReloadUnderLoad(t *testing.T) {
	// Not parallel: the load is meant for the gateway, not for other tests.
	reloads := 10
	cfg := loadConfig{requesters: 2, streams: 1, pause: 10 * time.Millisecond, sseStep: 10}
	progress := int64(10) // requests per loop between two reloads
	if os.Getenv(soakEnv) == "long" {
		reloads = 100
		cfg = loadConfig{requesters: 8, streams: 4, pause: 0, sseStep: 10}
		progress = 20
	}
	ids := map[string]string{buildA: harness.BuildVariant(t, buildA), buildB: harness.BuildVariant(t, buildB)}
	start := harness.Binary(t) // a third build: the supervisor's own stays different
	bin := harness.PrivateBinary(t, start)

	ticker := backends.NewTicker(t, 50*time.Millisecond)
	events := "[[routes]]\npath = \"/events\"\ntarget = \"" + ticker.URL + "\""
	alpha := backends.NewEcho(t, "alpha")
	beta := backends.NewEcho(t, "beta")
	g := harness.Start(t, harness.Options{Binary: bin, DrainTimeout: "2s", Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: alpha.URL, Tables: events},
		{Name: "beta", Hostnames: []string{"beta.test"}, Target: beta.URL, Tables: events},
	}})
	hosts := []string{"alpha.test", "beta.test"}
	startID := health(t, g, "alpha.test").BuildID
	if startID == buildA || startID == buildB {
		t.Fatalf("the default build has build id %s, one of the swapped ones", startID)
	}
	pids := map[string]int{}
	for _, h := range hosts {
		pids[h] = health(t, g, h).PID
	}

	cfg.targets = []loadTarget{{"alpha.test", "alpha"}, {"beta.test", "beta"}}
	l := startLoad(t, g, cfg)
	l.waitProgress(t, progress, 10*time.Second)
	l.waitStreams(t, 10*time.Second, "all open", func(opened, _, _ int) bool { return opened >= 4*cfg.streams })

	began := time.Now()
	var want string
	var misreported []string // verdicts naming another build than the fresh workers'

	for i := 1; i <= reloads; i++ {
		want = buildA
		if i%2 == 0 {
			want = buildB
		}
		harness.InstallBinary(t, ids[want], bin)
		t0 := time.Now()
		res := g.Reload(t)
		took := time.Since(t0)
		if res.ExitCode != 0 {
			t.Fatalf("reload %d: exit %d\nstdout:\n%s\nstderr:\n%s\nload: %s", i, res.ExitCode, res.Stdout, res.Stderr, l.summary())
		}
		m := reloadOK.FindStringSubmatch(res.Stdout)
		if m == nil || m[1] != "2" {
			t.Fatalf("reload %d: stdout %q, want %q with 2 proxies", i, res.Stdout, reloadOK)
		}
		if m[2] != want {
			misreported = append(misreported, fmt.Sprintf("reload %d: %q", i, strings.TrimSpace(res.Stdout)))
		}
		// Routing switched before the verdict: a new connection now reaches
		// a fresh worker of the binary just installed.
		for _, h := range hosts {
			hl := health(t, g, h)
			if hl.BuildID != want || hl.PID == pids[h] {
				t.Fatalf("reload %d: right after it %s answers from pid %d build %s; want a new worker (not %d) of build %s",
					i, h, hl.PID, hl.BuildID, pids[h], want)
			}
			pids[h] = hl.PID
		}
		if i == 1 || i == reloads || testing.Verbose() {
			t.Logf("reload %d (build %s) took %v: %s", i, want, took.Round(time.Millisecond), strings.TrimSpace(res.Stdout))
		}
		l.waitProgress(t, progress, 20*time.Second)
	}
	// Streams on the last replaced workers end at their drain deadline.
	l.waitStreams(t, 15*time.Second, "ended at a drain deadline", func(_, _, early int) bool { return early > 0 })
	l.halt(t)
	t.Logf("%d reloads in %v", reloads, time.Since(began).Round(time.Millisecond))
	l.check(t)

	// Every worker, once the replaced ones have drained and exited, runs
	// the last build; the supervisor itself was not replaced.
	st := g.WaitStatus(t, 20*time.Second, "drained, every worker ready", allReady(2))
	for _, w := range st.Workers {
		if w.BuildID != want {
			t.Errorf("status: worker %s (pid %d) runs build %q, want %q", w.Proxy, w.PID, w.BuildID, want)
		}
		if w.PID != pids[w.Proxy+".test"] {
			t.Errorf("status: worker %s has pid %d, health said %d", w.Proxy, w.PID, pids[w.Proxy+".test"])
		}
	}
	for _, h := range hosts {
		if hl := health(t, g, h); hl.BuildID != want {
			t.Errorf("health of %s: build %q, want %q", h, hl.BuildID, want)
		}
	}
	if st.BuildID != startID || st.PID != g.PID() {
		t.Errorf("status: supervisor pid %d build %q, want pid %d build %q (a reload does not replace the supervisor)",
			st.PID, st.BuildID, g.PID(), startID)
	}
	if lr := st.LastReload; lr == nil || !lr.OK || len(lr.Started) != 2 || lr.BuildID != want {
		t.Errorf("status: last_reload %+v, want ok with 2 proxies started on build %s", lr, want)
	}
	// The verdict names the build the fresh workers run: after swapping the
	// binary, that is what an operator needs to see.
	if len(misreported) > 0 {
		t.Errorf("%d of %d reload verdicts name a build other than the fresh workers' (builds %s and %s alternating, starting with %s):\n%s",
			len(misreported), reloads, buildA, buildB, buildA, strings.Join(misreported, "\n"))
	}
}

// allReady is a WaitStatus condition: n workers, all ready (none starting
// or draining).
func allReady(n int) func(harness.Status) bool {
	return func(st harness.Status) bool {
		if len(st.Workers) != n {
			return false
		}
		for _, w := range st.Workers {
			if w.State != "ready" {
				return false
			}
		}
		return true
	}
}

func decodeJSON(b []byte, v any) error { return json.Unmarshal(b, v) }

// health fetches host's health over a new connection and requires a 200.
func health(t *testing.T, g *harness.Gateway, host string) harness.Health {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, status, err := g.Health(ctx, host)
	if err != nil || status != http.StatusOK || h.Status != "ok" {
		t.Fatalf("health of %s: status %d, %+v, err %v", host, status, h, err)
	}
	return h
}
