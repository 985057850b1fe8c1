package harness

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// recTB records what the harness reports instead of failing the real test.
type recTB struct {
	testing.TB
	errs []string
}

func (r *recTB) Helper()                   {}
func (r *recTB) Logf(string, ...any)       {}
func (r *recTB) Failed() bool              { return len(r.errs) > 0 }
func (r *recTB) Errorf(f string, a ...any) { r.errs = append(r.errs, fmt.Sprintf(f, a...)) }

// TestListenPIDTrick checks the premise of Start: sh's $$ survives exec, so
// LISTEN_PID names the process that ends up running the binary.
func TestListenPIDTrick(t *testing.T) {
	out, err := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`,
		"/bin/sh", "-c", `echo "$LISTEN_PID $$"`).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 || f[0] != f[1] {
		t.Fatalf("LISTEN_PID and pid after exec: %q, want equal", out)
	}
}

// fakeGateway starts script under sh, with the config dir as $0 so that
// scan finds it, and wires it into a Gateway whose reports go to rec.
func fakeGateway(t *testing.T, script string) (*Gateway, *recTB) {
	dir := filepath.Join(t.TempDir(), "conf")
	cmd := exec.Command("/bin/sh", "-c", script, dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rec := &recTB{TB: t}
	g := &Gateway{Dir: dir, LogFile: filepath.Join(t.TempDir(), "log"), t: rec, cmd: cmd, done: make(chan struct{})}
	go func() {
		g.err = cmd.Wait()
		close(g.done)
	}()
	// Wait (bounded) until the child "worker" exists.
	for i := 0; i < 100 && len(g.Workers()) == 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if len(g.Workers()) == 0 {
		t.Fatal("fake gateway started no child")
	}
	return g, rec
}

// TestStopFindsOrphans: a "supervisor" that exits on SIGTERM leaving its
// child behind must be reported, and the child killed.
func TestStopFindsOrphans(t *testing.T) {
	t.Parallel()
	g, rec := fakeGateway(t, `sleep 60 & wait`)
	workers := g.Workers()
	g.stop()
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "still running") {
		t.Errorf("stop reported %q, want one 'still running' error", rec.errs)
	}
	for _, pid := range workers {
		// SIGKILL is delivered asynchronously: allow a moment.
		for i := 0; i < 100 && ProcessAlive(pid); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if ProcessAlive(pid) {
			t.Errorf("orphan %d not killed", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// TestStopClean: a supervisor that stops its child on SIGTERM passes.
func TestStopClean(t *testing.T) {
	t.Parallel()
	g, rec := fakeGateway(t, `trap 'kill $! 2>/dev/null; wait; exit 0' TERM; sleep 60 & wait`)
	g.stop()
	if len(rec.errs) != 0 {
		t.Errorf("stop reported %q, want nothing", rec.errs)
	}
}
