package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpgate/mcpgate/tests/backends"
	"github.com/mcpgate/mcpgate/tests/harness"
)

// restartWithin is how soon a killed worker must answer again.
const restartWithin = 10 * time.Second

// TestWorkerKilled SIGKILLs alpha's worker: beta must answer every request
// during the outage, and alpha must come back (a new worker pid) within
// restartWithin.
func TestWorkerKilled(t *testing.T) {
	t.Parallel()
	alpha := backends.NewEcho(t, "alpha")
	beta := backends.NewEcho(t, "beta")
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: alpha.URL},
		{Name: "beta", Hostnames: []string{"beta.test"}, Target: beta.URL},
	}})

	alphaPID := g.WorkerPID(t, "alpha.test")
	betaPID := g.WorkerPID(t, "beta.test")
	if alphaPID == betaPID || alphaPID == g.PID() || betaPID == g.PID() {
		t.Fatalf("want distinct worker processes: alpha %d, beta %d, supervisor %d", alphaPID, betaPID, g.PID())
	}

	// Beta is hammered through two clients: one reusing its connection to
	// beta's worker, one dialing anew each time (through the supervisor's
	// dispatch, which must not stall while alpha is down).
	reuse := g.HTTP2Client()
	fresh := g.Client(harness.ClientConfig{DisableKeepAlives: true})
	getEcho(t, reuse, "https://beta.test/warmup", nil)

	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok       int
		failures []string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(restartWithin + 5*time.Second) // bounded even if stop never comes
		for i := 0; time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := reuse
			if i%2 == 1 {
				c = fresh
			}
			err := betaOnce(c, i)
			mu.Lock()
			if err != nil {
				failures = append(failures, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
			} else {
				ok++
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()

	time.Sleep(100 * time.Millisecond) // some traffic before the kill
	if err := syscall.Kill(alphaPID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill alpha worker %d: %v", alphaPID, err)
	}
	killed := time.Now()

	var newPID int
	for time.Since(killed) < restartWithin {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, status, err := g.Health(ctx, "alpha.test")
		cancel()
		if err == nil && status == http.StatusOK && h.PID != alphaPID {
			newPID = h.PID
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	back := time.Since(killed)
	time.Sleep(300 * time.Millisecond) // beta traffic after alpha's return too
	close(stop)
	wg.Wait()

	if newPID == 0 {
		t.Errorf("alpha did not answer with a new worker within %v of SIGKILL", restartWithin)
	} else {
		t.Logf("alpha back after %v: worker %d -> %d", back.Round(time.Millisecond), alphaPID, newPID)
		if got := harness.ProcessCmdline(newPID); !strings.Contains(got, "alpha") {
			t.Errorf("new alpha worker %d: cmdline %q does not name the proxy", newPID, got)
		}
		_, er := getEcho(t, g.HTTP2Client(), "https://alpha.test/after-restart", nil)
		if er.Backend != "alpha" {
			t.Errorf("after restart alpha.test reached backend %q", er.Backend)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("beta failed %d of %d requests while alpha was down:\n%s", len(failures), ok+len(failures), strings.Join(failures, "\n"))
	}
	if ok < 10 {
		t.Errorf("only %d successful beta requests during the outage; the loop did not run", ok)
	}
	if got := g.WorkerPID(t, "beta.test"); got != betaPID {
		t.Errorf("beta's worker changed from %d to %d; only alpha's was killed", betaPID, got)
	}
}

func betaOnce(c *http.Client, i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://beta.test/loop/%d", i), nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"backend":"beta"`) {
		return fmt.Errorf("status %d, body %.200q", resp.StatusCode, body)
	}
	return nil
}

// TestSupervisorKilled: workers die with their parent. A SIGKILLed
// supervisor cannot clean up, so each worker must notice on its own (the
// parent-death pipe) instead of lingering with the proxy's sockets.
func TestSupervisorKilled(t *testing.T) {
	t.Parallel()
	echo := backends.NewEcho(t, "alpha")
	g := harness.Start(t, harness.Options{Proxies: []harness.Proxy{
		{Name: "alpha", Hostnames: []string{"alpha.test"}, Target: echo.URL},
		{Name: "beta", Hostnames: []string{"beta.test"}, Target: echo.URL},
	}})
	workers := g.Workers()
	for _, host := range []string{"alpha.test", "beta.test"} {
		if pid := g.WorkerPID(t, host); !slices.Contains(workers, pid) {
			t.Fatalf("worker %d of %s not found among the gateway's processes %v", pid, host, workers)
		}
	}

	g.KillSupervisor(t)
	deadline := time.Now().Add(5 * time.Second)
	var left []int
	for {
		left = left[:0]
		for _, pid := range workers {
			if harness.ProcessAlive(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("workers %v still running 5s after their supervisor was SIGKILLed", left)
	}
}
