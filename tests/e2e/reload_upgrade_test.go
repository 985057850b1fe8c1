package e2e

import (
	"errors"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// TestUpgradeUnderLoad replaces the binary on disk and runs `mcpgate
// upgrade` under load: HTTP/2 and HTTP/1.1 request loops that make new
// connections all the time, SSE streams, and a loop that only connects to
// the https listener and closes. No request may fail and no connect be
// refused; the supervisor keeps its pid but runs the new binary, and every
// worker is a fresh one of the new build.
func TestUpgradeUnderLoad(t *testing.T) {
	// Not parallel: the load is meant for the gateway, not for other tests.
	binA := harness.BuildVariant(t, buildA)
	binB := harness.BuildVariant(t, buildB)
	bin := harness.PrivateBinary(t, binA)

	ticker := backends.NewTicker(t, 50*time.Millisecond)
	events := "[[routes]]\npath = \"/events\"\ntarget = \"" + ticker.URL + "\""
	alpha := backends.NewEcho(t, "alpha")
	beta := backends.NewEcho(t, "beta")
	g := harness.Start(t, harness.Options{Binary: bin, DrainTimeout: "2s", Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: alpha.URL, Tables: events},
		{Name: "beta", Hostnames: []string{"beta.test"}, Target: beta.URL, Tables: events},
	}})
	hosts := []string{"alpha.test", "beta.test"}
	before := g.Status(t)
	if before.BuildID != buildA || before.PID != g.PID() {
		t.Fatalf("status before: supervisor pid %d build %s, want pid %d build %s", before.PID, before.BuildID, g.PID(), buildA)
	}
	oldPIDs := map[int]bool{}
	for _, w := range before.Workers {
		oldPIDs[w.PID] = true
	}

	l := startLoad(t, g, loadConfig{
		targets:    []loadTarget{{"alpha.test", "alpha"}, {"beta.test", "beta"}},
		requesters: 2, streams: 1, pause: 10 * time.Millisecond, newConnEvery: 3, sseStep: 20,
	})
	cl := startConnectLoop(t, g.HTTPSAddr)
	l.waitProgress(t, 10, 10*time.Second)
	// Every stream in its second, long session (10s), on the old workers:
	// the upgrade's reload must end them at the drain deadline.
	l.waitStreams(t, 10*time.Second, "in their second session", func(opened, _, _ int) bool { return opened >= 8 })

	harness.InstallBinary(t, binB, bin)
	t0 := time.Now()
	res := g.Upgrade(t)
	took := time.Since(t0)
	if res.ExitCode != 0 {
		t.Fatalf("upgrade: exit %d\nstdout:\n%s\nstderr:\n%s\nload: %s", res.ExitCode, res.Stdout, res.Stderr, l.summary())
	}
	t.Logf("upgrade took %v: %s", took.Round(time.Millisecond), strings.TrimSpace(res.Stdout))
	if !regexp.MustCompile(`(?m)^.*"mcpgate starting".*"build_id":"` + buildB + `".*"upgraded":true.*$`).MatchString(g.Logs()) {
		t.Errorf("the supervisor's log has no start of build %s after an upgrade", buildB)
	}
	if m := reloadOK.FindStringSubmatch(res.Stdout); m == nil || m[1] != "2" || m[2] != buildB {
		t.Errorf("upgrade stdout %q, want %q with 2 proxies and build %s (the verdict of the new binary)", res.Stdout, reloadOK, buildB)
	}
	// The load goes on, on the new supervisor's dispatch, until the old
	// workers have drained (streams on them end at the drain deadline).
	st := g.WaitStatus(t, 20*time.Second, "drained, every worker ready", allReady(2))
	l.waitStreams(t, 10*time.Second, "all ended at the drain deadline", func(_, _, early int) bool { return early >= 4 })
	l.waitProgress(t, 10, 20*time.Second)
	cl.waitProgress(t, 20, 10*time.Second)
	l.halt(t)
	cl.halt()
	l.check(t)
	cl.check(t)

	if st.PID != g.PID() || g.Exited() {
		t.Errorf("supervisor pid %d after the upgrade (exited: %v), want the same process %d", st.PID, g.Exited(), g.PID())
	}
	if st.BuildID != buildB {
		t.Errorf("status: supervisor build %q after the upgrade, want %q", st.BuildID, buildB)
	}
	if !st.Started.Equal(before.Started) {
		t.Errorf("status: supervisor started %v after the upgrade, want %v as before", st.Started, before.Started)
	}
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(g.PID()) + "/exe"); err != nil || exe != bin {
		t.Errorf("supervisor executable %q (%v), want %s as it is on disk now (not deleted)", exe, err, bin)
	}
	if lr := st.LastReload; lr == nil || !lr.OK || lr.Trigger != "upgrade" {
		t.Errorf("status: last_reload %+v, want ok, trigger upgrade", lr)
	}
	for _, w := range st.Workers {
		if w.BuildID != buildB || oldPIDs[w.PID] {
			t.Errorf("status: worker %s pid %d build %q, want a fresh worker of build %s", w.Proxy, w.PID, w.BuildID, buildB)
		}
	}
	for _, h := range hosts {
		if hl := health(t, g, h); hl.BuildID != buildB {
			t.Errorf("health of %s: build %q, want %q", h, hl.BuildID, buildB)
		}
	}
	for pid := range oldPIDs {
		if harness.ProcessAlive(pid) {
			t.Errorf("old worker %d still running after the drain", pid)
		}
	}

	// SIGUSR2 is the same as `mcpgate upgrade`: back to build A, under a
	// lighter load.
	l = startLoad(t, g, loadConfig{
		targets:    []loadTarget{{"alpha.test", "alpha"}, {"beta.test", "beta"}},
		requesters: 1, pause: 10 * time.Millisecond, newConnEvery: 3,
	})
	cl = startConnectLoop(t, g.HTTPSAddr)
	l.waitProgress(t, 5, 10*time.Second)
	harness.InstallBinary(t, binA, bin)
	sent := time.Now()
	g.Signal(t, syscall.SIGUSR2)
	// Polled while the supervisor re-executes itself: its control socket is
	// closed and bound again meanwhile, so a failed status is retried (and
	// reported in the log).
	unreachable := 0
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		st, err = g.TryStatus()
		if err == nil {
			lr := st.LastReload
			if st.BuildID == buildA && lr != nil && !lr.At.Before(sent) && allReady(2)(st) {
				break
			}
		} else {
			unreachable++
			lastErr = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("not upgraded to %s within 30s of SIGUSR2; last status %+v, last error %v", buildA, st, lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if unreachable > 0 {
		t.Logf("status failed %d times during the SIGUSR2 upgrade; last: %v", unreachable, lastErr)
	}
	l.waitProgress(t, 5, 20*time.Second)
	l.halt(t)
	cl.halt()
	l.check(t)
	cl.check(t)
	if st.PID != g.PID() || !st.LastReload.OK || st.LastReload.Trigger != "upgrade" {
		t.Errorf("after SIGUSR2: supervisor pid %d (want %d), last_reload %+v (want ok, trigger upgrade)", st.PID, g.PID(), *st.LastReload)
	}
	for _, w := range st.Workers {
		if w.BuildID != buildA {
			t.Errorf("after SIGUSR2: worker %s pid %d build %q, want %q", w.Proxy, w.PID, w.BuildID, buildA)
		}
	}
}

// connectLoop dials a listener over and over, closing each connection at
// once, and counts refusals: a listening socket closed even briefly shows
// up as ECONNREFUSED.
type connectLoop struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	ok      int
	refused int
	errs    []string
}

func startConnectLoop(t *testing.T, addr string) *connectLoop {
	cl := &connectLoop{stop: make(chan struct{})}
	t.Cleanup(cl.halt) // bounded even if the test fails before stopping it
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		deadline := time.Now().Add(maxLoad)
		for time.Now().Before(deadline) {
			select {
			case <-cl.stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			cl.mu.Lock()
			switch {
			case err == nil:
				cl.ok++
				c.Close()
			case errors.Is(err, syscall.ECONNREFUSED):
				cl.refused++
				cl.errs = append(cl.errs, time.Now().Format("15:04:05.000 ")+err.Error())
			default:
				cl.errs = append(cl.errs, time.Now().Format("15:04:05.000 ")+err.Error())
			}
			cl.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return cl
}

func (cl *connectLoop) waitProgress(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	cl.mu.Lock()
	base := cl.ok
	cl.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for {
		cl.mu.Lock()
		got := cl.ok - base
		cl.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect loop: %d connects within %v, want %d", got, timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (cl *connectLoop) halt() {
	select {
	case <-cl.stop:
	default:
		close(cl.stop)
	}
	cl.wg.Wait()
}

func (cl *connectLoop) check(t *testing.T) {
	t.Helper()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	t.Logf("connect loop: %d connects, %d refused, %d other errors", cl.ok, cl.refused, len(cl.errs)-cl.refused)
	if len(cl.errs) > 0 {
		t.Errorf("connects to the https listener failed (%d refused):\n%s", cl.refused, strings.Join(cl.errs, "\n"))
	}
	if cl.ok == 0 {
		t.Errorf("the connect loop never connected")
	}
}
