package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/worker"
)

// proc is one running worker process.
type proc struct {
	name    string
	process *os.Process
	spec    worker.Spec
	hc      *handoff.Conn
	started time.Time
	log     *slog.Logger

	readyCh chan struct{} // closed when the worker said it is ready
	exited  chan struct{} // closed when the process has been reaped

	mu      sync.Mutex
	ready   worker.Ready // guarded by mu; set before readyCh closes
	stats   worker.Stats // guarded by mu
	waitErr error        // guarded by mu; set before exited closes
}

// spawner starts worker processes; replaceable in tests.
type spawner struct {
	exe       string
	configDir string
	stderr    *os.File
	log       *slog.Logger
}

// start re-executes the binary on disk as a worker for spec.Proxy.
func (s *spawner) start(spec worker.Spec) (*proc, error) {
	hc, child, err := handoff.Pair()
	if err != nil {
		return nil, err
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		hc.Close()
		child.Close()
		return nil, err
	}
	name := spec.Proxy.Name
	cmd := exec.Command(s.exe, "worker", name, "--config-dir", s.configDir)
	cmd.ExtraFiles = []*os.File{specR, child} // fds 3 and 4: worker.FdSpec, worker.FdHandoff
	cmd.Env = workerEnv(os.Environ())
	cmd.Stdout = s.stderr
	cmd.Stderr = s.stderr
	err = cmd.Start()
	specR.Close()
	child.Close()
	if err != nil {
		specW.Close()
		hc.Close()
		return nil, fmt.Errorf("starting worker %s: %w", name, err)
	}
	p := newProc(name, cmd.Process, spec, hc, time.Now(), s.log)
	go p.wait()
	go p.readMessages()
	// The spec is small, far below the pipe buffer, so this cannot block on
	// a worker that never reads.
	b, _ := json.Marshal(spec)
	_, werr := specW.Write(b)
	specW.Close()
	if werr != nil {
		p.kill()
		return nil, fmt.Errorf("sending spec to worker %s: %w", name, werr)
	}
	return p, nil
}

// workerEnv drops what belongs to the supervisor alone: socket activation
// and notification variables would let a worker talk to systemd as if it
// were the service.
func workerEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "LISTEN_"), k == "NOTIFY_SOCKET", strings.HasPrefix(k, "WATCHDOG_"):
			continue
		}
		out = append(out, kv)
	}
	return out
}

func newProc(name string, process *os.Process, spec worker.Spec, hc *handoff.Conn, started time.Time, log *slog.Logger) *proc {
	return &proc{
		name:    name,
		process: process,
		spec:    spec,
		hc:      hc,
		started: started,
		log:     log.With("proxy", name, "pid", process.Pid),
		readyCh: make(chan struct{}),
		exited:  make(chan struct{}),
	}
}

func (p *proc) wait() {
	// Process.Wait rather than Cmd.Wait: a worker adopted across a
	// supervisor upgrade has no Cmd, only its pid.
	state, err := p.process.Wait()
	if err == nil && !state.Success() {
		err = errors.New(state.String())
	}
	p.mu.Lock()
	p.waitErr = err
	p.mu.Unlock()
	p.hc.Close()
	close(p.exited)
}

func (p *proc) readMessages() {
	for {
		m, err := p.hc.Recv()
		if err != nil {
			return
		}
		switch m.Kind {
		case handoff.KindReady:
			var r worker.Ready
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				p.log.Error("bad ready message from worker", "err", err)
				continue
			}
			p.mu.Lock()
			already := p.ready.PID != 0
			p.ready = r
			p.mu.Unlock()
			if !already {
				close(p.readyCh)
			}
		case handoff.KindStats:
			var st worker.Stats
			if json.Unmarshal(m.Payload, &st) == nil {
				p.mu.Lock()
				p.stats = st
				p.mu.Unlock()
			}
		}
		if m.File != nil {
			m.File.Close()
		}
	}
}

func (p *proc) info() worker.Ready {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready
}

func (p *proc) connections() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats.Connections
}

func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

func (p *proc) pid() int { return p.process.Pid }

func (p *proc) kill() {
	p.process.Signal(syscall.SIGKILL)
}

// drain asks the worker to finish its requests and exit, and kills it if it
// has not exited by the deadline.
func (p *proc) drain(timeout time.Duration) {
	if err := p.hc.Send(handoff.KindDrain, nil); err != nil && !handoff.IsClosed(err) {
		p.log.Warn("asking worker to drain", "err", err)
	}
	// The worker bounds its own drain by the same timeout; the margin lets
	// it close streams cleanly before the kill.
	t := time.NewTimer(timeout + 5*time.Second)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		p.log.Warn("worker did not exit after draining; killing it")
		p.kill()
		<-p.exited
	}
}
