package supervisor

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

func startChild(t *testing.T, script string) osProcess {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return osProcess{cmd.Process}
}

// TestOSProcessWait: the exit of a worker as Wait reports it.
func TestOSProcessWait(t *testing.T) {
	if err := startChild(t, "exit 0").Wait(); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	if err := startChild(t, "sleep 0.05; exit 3").Wait(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("exit 3: %v", err)
	}
	p := startChild(t, "sleep 30")
	go func() {
		time.Sleep(50 * time.Millisecond)
		p.Kill()
	}()
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("SIGKILL: %v", err)
	}
}

// TestOSProcessWaitHoldsNoThread: waiting for a worker to exit does not
// hold an OS thread (os.Process.Wait alone blocks one in waitid(2) per
// worker: 500 in a supervisor of 500 proxies).
func TestOSProcessWaitHoldsNoThread(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	const n = 40
	before := threads(t)
	procs := make([]osProcess, n)
	var wg sync.WaitGroup
	for i := range procs {
		procs[i] = startChild(t, "exec sleep 30")
		wg.Add(1)
		go func() {
			defer wg.Done()
			procs[i].Wait()
		}()
	}
	time.Sleep(300 * time.Millisecond) // every waiter is waiting
	during := threads(t)
	for _, p := range procs {
		p.p.Signal(syscall.SIGKILL)
	}
	wg.Wait()
	if during-before >= n/2 {
		t.Errorf("%d waits took %d more OS threads (%d → %d)", n, during-before, before, during)
	}
}
