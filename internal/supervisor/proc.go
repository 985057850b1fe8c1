package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mcpgate/mcpgate/internal/certstatus"
	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// proc is one running worker process, as the supervisor sees it: the
// process, and the hand-off socket it talks over.
type proc struct {
	name    string
	process process
	spec    wire.Spec
	hc      *handoff.Conn
	started time.Time
	log     *slog.Logger

	readyCh chan struct{} // closed when the worker said it is ready
	exited  chan struct{} // closed when the process has been reaped

	// With HTTP/3: the datagram socket to the worker, and what to release
	// when it exits.
	dgram  *net.UnixConn
	onExit func()

	// relay, when set, hears of the worker's revocations and tells it of
	// everyone's, until it exits.
	relay *revocationRelay

	// metrics, when set, receives the worker's last counters when it
	// exits; drainAsked tells an exit that was asked for from a death.
	metrics    *workerMetrics
	drainAsked atomic.Bool
	readDone   chan struct{} // closed when readMessages has returned

	mu      sync.Mutex
	ready   wire.Ready // guarded by mu; set before readyCh closes
	stats   wire.Stats // guarded by mu
	waitErr error      // guarded by mu; set before exited closes
}

// process is an operating-system process: *os.Process for real workers
// (osProcess), a goroutine in tests.
type process interface {
	Pid() int
	// Kill ends the process at once (SIGKILL).
	Kill() error
	// Wait blocks until the process has exited and returns why, nil for
	// exit status 0.
	Wait() error
}

// osProcess is a real process. Process.Wait rather than exec.Cmd.Wait: a
// worker adopted across a supervisor upgrade has no Cmd, only its pid.
type osProcess struct{ p *os.Process }

func (o osProcess) Pid() int    { return o.p.Pid }
func (o osProcess) Kill() error { return o.p.Signal(syscall.SIGKILL) }
func (o osProcess) Wait() error {
	// After awaitExit the child is a zombie and Wait reaps it at once.
	awaitExit(o.p.Pid)
	state, err := o.p.Wait()
	if err == nil && !state.Success() {
		err = errors.New(state.String())
	}
	return err
}

// spawner starts worker processes. Slots start every worker through one,
// so tests drive the whole lifecycle with a fake (as tableflip makes its
// process spawning replaceable).
type spawner interface {
	// start starts a worker for spec.Proxy and delivers spec to it; the
	// worker reports readiness on p.readyCh.
	start(spec wire.Spec) (*proc, error)
}

// execSpawner starts workers by re-executing the binary on disk.
type execSpawner struct {
	exe       string
	configDir string
	logLevel  string // passed on to workers; "" = the spec's
	stderr    *os.File
	log       *slog.Logger
	quic      *quicWorkers
	metrics   *workerMetrics
	relay     *revocationRelay // nil in tests that do not relay
}

var _ spawner = (*execSpawner)(nil)

// quicWorkers are the workers serving HTTP/3, by the worker id their
// connection ids encode, and the shared UDP socket they answer through.
type quicWorkers struct {
	conn *net.UDPConn // nil without HTTP/3

	mu    sync.Mutex
	byWID map[uint16]*proc // guarded by mu; live workers with HTTP/3, by worker id
	next  uint16           // guarded by mu; where the id search starts
}

var errNoWorkerID = errors.New("no free QUIC worker id (more than 65,535 workers with HTTP/3)")

// allocWID reserves a worker id; 0 is never used, so a zero id is "none".
// Ids are 16-bit (quicroute's wide connection ids); ids of a previous
// build's adopted workers, all below 256, are in the same map, so a new
// worker never shares one. The search goes round from the last id given,
// so an id just freed is the last to be given again: packets still in
// flight for an exited worker's connections do not reach its successor.
func (s *quicWorkers) allocWID() (uint16, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byWID == nil {
		s.byWID = map[uint16]*proc{}
	}
	for range 65535 {
		s.next++
		if s.next == 0 {
			s.next = 1
		}
		if _, used := s.byWID[s.next]; !used {
			s.byWID[s.next] = nil
			return s.next, nil
		}
	}
	return 0, errNoWorkerID
}

func (s *quicWorkers) setWID(wid uint16, p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byWID == nil {
		s.byWID = map[uint16]*proc{}
	}
	if p == nil {
		delete(s.byWID, wid)
		return
	}
	s.byWID[wid] = p
}

// byWorkerID returns the live worker with that id, or nil.
func (s *quicWorkers) byWorkerID(wid uint16) *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byWID[wid]
}

// start re-executes the binary on disk as a worker for spec.Proxy.
func (s *execSpawner) start(spec wire.Spec) (*proc, error) {
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
	args := []string{"worker", name, "--config-dir", s.configDir}
	level := s.logLevel // serve's --log-level overrides the configuration
	if level == "" {
		level = spec.LogLevel
	}
	if level != "" {
		args = append(args, "--log-level", level)
	}
	cmd := exec.Command(s.exe, args...)
	cmd.ExtraFiles = []*os.File{specR, child} // fds 3 and 4: wire.FdSpec, wire.FdHandoff
	var dgram *net.UnixConn
	if spec.QUIC != nil {
		wid, err := s.quic.allocWID()
		if err != nil {
			specR.Close()
			specW.Close()
			hc.Close()
			child.Close()
			return nil, err
		}
		q := *spec.QUIC // the slot's spec is shared by its restarts
		q.WorkerID = wid
		q.WideCIDs = true
		spec.QUIC = &q
		var dchild, udp *os.File
		dgram, dchild, err = handoff.DatagramPair()
		if err == nil {
			udp, err = handoff.ChildFile(s.quic.conn, "quic")
		}
		if err != nil {
			s.quic.setWID(wid, nil)
			specR.Close()
			specW.Close()
			hc.Close()
			child.Close()
			if dgram != nil {
				dgram.Close()
				dchild.Close()
			}
			return nil, fmt.Errorf("starting worker %s: quic sockets: %w", name, err)
		}
		defer dchild.Close()
		defer udp.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, dchild, udp) // fds 5 and 6: wire.FdQUICIn, wire.FdQUICConn
	}
	cmd.Env = workerEnv(os.Environ())
	cmd.Stdout = s.stderr
	cmd.Stderr = s.stderr
	err = cmd.Start()
	specR.Close()
	child.Close()
	if err != nil {
		specW.Close()
		hc.Close()
		if dgram != nil {
			dgram.Close()
			s.quic.setWID(spec.QUIC.WorkerID, nil)
		}
		return nil, fmt.Errorf("starting worker %s: %w", name, err)
	}
	p := newProc(name, osProcess{cmd.Process}, spec, hc, time.Now(), s.log)
	if dgram != nil {
		p.dgram = dgram
		p.onExit = func() {
			s.quic.setWID(spec.QUIC.WorkerID, nil)
			dgram.Close()
		}
		s.quic.setWID(spec.QUIC.WorkerID, p)
	}
	p.metrics = s.metrics
	s.metrics.add(p)
	p.follow(s.relay)
	p.watch()
	// The pipe holds the whole spec (fitPipe), so this cannot block on a
	// worker that never reads.
	spec.Protocol = wire.Protocol
	spec.RevocationRelay = s.relay != nil
	b := encodeSpec(spec)
	fitPipe(specW, len(b))
	_, werr := specW.Write(b)
	specW.Close()
	if werr != nil {
		// The read end closes only when the worker dies, so a broken pipe
		// is a worker that exited during start-up: name that one cause,
		// as awaitReady does when it notices the death first.
		select {
		case <-p.exited:
		case <-time.After(time.Second):
			p.kill()
			<-p.exited
		}
		return nil, fmt.Errorf("%s (spec not delivered: %v)", exitedBeforeReady(p), werr)
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

func newProc(name string, process process, spec wire.Spec, hc *handoff.Conn, started time.Time, log *slog.Logger) *proc {
	return &proc{
		name:     name,
		process:  process,
		spec:     spec,
		hc:       hc,
		started:  started,
		log:      log.With("proxy", name, "pid", process.Pid()),
		readyCh:  make(chan struct{}),
		exited:   make(chan struct{}),
		readDone: make(chan struct{}),
	}
}

// follow joins p to relay's broadcasts, before watch; relay may be nil.
func (p *proc) follow(relay *revocationRelay) {
	if relay != nil {
		p.relay = relay
		relay.add(p)
	}
}

// watch follows the process until it exits and reads its messages.
func (p *proc) watch() {
	go p.wait()
	go p.readMessages()
}

func (p *proc) wait() {
	err := p.process.Wait()
	p.mu.Lock()
	p.waitErr = err
	p.mu.Unlock()
	if p.metrics != nil {
		// The worker's last stats (sent after its drain) may still be in
		// the socket: read them before closing it, briefly, so its final
		// counters reach the totals.
		select {
		case <-p.readDone:
		case <-time.After(200 * time.Millisecond):
		}
	}
	if p.relay != nil {
		p.relay.remove(p)
	}
	p.hc.Close()
	if p.metrics != nil {
		<-p.readDone
		p.metrics.retire(p)
	}
	if p.onExit != nil {
		p.onExit()
	}
	close(p.exited)
}

func (p *proc) readMessages() {
	defer close(p.readDone)
	for {
		m, err := p.hc.Recv()
		if err != nil {
			return
		}
		switch m.Kind {
		case wire.KindReady:
			var r wire.Ready
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				p.log.Error("bad ready message from worker", "err", err)
				continue
			}
			if err := wire.CheckProtocol(r.Protocol); err != nil {
				// A worker of a newer build (a downgrade): it still gets
				// connections, whose format has not changed, but say so.
				p.log.Warn("worker speaks another protocol version", "err", err)
			}
			p.mu.Lock()
			already := p.ready.PID != 0
			p.ready = r
			p.mu.Unlock()
			if !already {
				close(p.readyCh)
			}
		case wire.KindRevoked:
			if p.relay != nil {
				p.relay.announce()
			}
		case wire.KindStats:
			var st wire.Stats
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

func (p *proc) info() wire.Ready {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready
}

func (p *proc) connections() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats.Connections
}

func (p *proc) certificates() []certstatus.Cert {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats.Certificates
}

func (p *proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

func (p *proc) pid() int { return p.process.Pid() }

func (p *proc) kill() {
	p.process.Kill()
}

// drain asks the worker to finish its requests and exit, and kills it if it
// has not exited at the schedule's Kill offset (the worker closes
// everything itself at Close, a few seconds earlier).
func (p *proc) drain(sched wire.DrainSchedule) {
	p.drainAsked.Store(true)
	if err := p.hc.Send(wire.KindDrain, nil); err != nil && !handoff.IsClosed(err) {
		p.log.Warn("asking worker to drain", "err", err)
	}
	t := time.NewTimer(sched.Kill)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		p.log.Warn("worker did not exit after draining; killing it")
		p.kill()
		<-p.exited
	}
}
